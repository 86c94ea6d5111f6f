"""The data directory (DKIM private keys, password hashes, message bodies, the database, the
spool, the TLS key) is readable by its owner only, whatever the umask baton starts with; a
data directory that others can write is refused."""

import os
import stat
import subprocess
import time

from conftest import BATON
from mailnet import Sink, TestDns, free_port_for

GOOD, TEMPFAIL = "127.0.0.31", "127.0.0.32"


def loose_entries(root):
    """Everything under `root` (itself included) that group or others may access."""
    loose = []
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & 0o077:
            loose.append(f"{path.relative_to(root.parent)} {stat.filemode(mode)}")
    return loose


def submit(relay, rcpt):
    r = subprocess.run(
        [
            "swaks", "--server", "%s:%d" % relay.addr("submission"), "--tls", "--auth", "PLAIN",
            "--auth-user", "alice", "--auth-password", "s3cret", "--from", "news@acme.test",
            "--to", rcpt, "--h-From", "news@acme.test",
        ],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_nothing_in_the_data_dir_is_readable_by_others(spawn_relay):
    dns = TestDns()
    port = free_port_for([GOOD, TEMPFAIL])
    good, tempfail = Sink(GOOD, port).start(), Sink(TEMPFAIL, port, ["-r", "rcpt"]).start()
    for domain, ip in (("example.org", GOOD), ("tempfail.test", TEMPFAIL)):
        dns.mx(domain, (10, f"mx.{domain}"))
        dns.a(f"mx.{domain}", ip)
    # What a permissive shell hands baton: it must not matter.
    old_umask = os.umask(0o002)
    try:
        relay = spawn_relay(
            **{
                "pipeline.run_stages": True,
                "delivery.port": port,
                "delivery.nameservers": [dns.addr],
                "delivery.retry_initial": "30s",
                "delivery.connect_timeout": "2s",
            }
        )
        relay.add_user("alice", "acme", "s3cret")
        relay.add_domain("acme.test", "acme")
        submit(relay, "bob@example.org")
        assert good.wait_messages(1), "the message was not delivered"
        # Deferred: its body stays in the spool.
        submit(relay, "carol@tempfail.test")
        data = relay.data_dir
        deadline = time.time() + 20
        while not [m for m in relay.queue_list() if m["state"] == "deferred"]:
            assert time.time() < deadline, relay.queue_list()
            time.sleep(0.3)
        names = {p.name for p in data.rglob("*")}
        assert {"baton.db", "spool", "tls"} <= names, names
        assert any(n.startswith("seg-") for n in names), names
        assert loose_entries(data) == []
        relay.stop()
        assert loose_entries(data) == []
    finally:
        os.umask(old_umask)
        good.cleanup()
        tempfail.cleanup()
        dns.stop()


def run_baton(data_dir, *args, stdin=None):
    return subprocess.run(
        [BATON, "--data-dir", str(data_dir), *args],
        input=stdin, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("BATON_")},
    )


def test_data_dir_others_can_write_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)
    for args, stdin in ((["user", "add", "alice", "--tenant", "acme", "--password-stdin"], "pw\n"), (["serve"], None)):
        r = run_baton(data, *args, stdin=stdin)
        assert r.returncode != 0, r.stdout
        assert str(data) in r.stderr and f"chmod 700 {data}" in r.stderr, r.stderr
    assert list(data.iterdir()) == [], "nothing may be written into it"
    data.chmod(0o770)
    r = run_baton(data, "queue", "list")
    assert r.returncode != 0 and "chmod 700" in r.stderr, r.stderr


def test_readable_data_dir_from_an_older_version_is_tightened(tmp_path):
    data = tmp_path / "data"
    old_umask = os.umask(0o022)
    try:
        r = run_baton(data, "user", "add", "alice", "--tenant", "acme", "--password-stdin", stdin="pw\n")
        assert r.returncode == 0, r.stderr
        # As an older version left it: 0755 directories, 0644 files.
        for path in [data, *data.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        (data / "notes.txt").write_text("left by hand\n")
        assert loose_entries(data)
        r = run_baton(data, "queue", "list")
        assert r.returncode == 0, r.stderr
        assert loose_entries(data) == []
    finally:
        os.umask(old_umask)
