"""The admin CLI and configuration errors."""

import subprocess

from conftest import BATON


def test_user_domain_and_queue_commands(spawn_relay):
    relay = spawn_relay()
    relay.add_user("alice", "acme", "s3cret")
    relay.add_domain("Acme.Test", "acme")
    assert relay.queue_list() == []
    r = relay.cli("user", "add", "bob", "--tenant", "acme", "--password-stdin", stdin="\n", check=False)
    assert r.returncode != 0 and "empty password" in r.stderr
    r = relay.cli("domain", "add", "[127.0.0.1]", "--tenant", "acme", check=False)
    assert r.returncode != 0
    r = relay.cli("user", "add", "carol", "--tenant", "acme", check=False)
    assert r.returncode != 0 and "--password-stdin" in r.stderr
    r = relay.cli("queue", "cat", "../../etc/passwd", check=False)
    assert r.returncode != 0 and "invalid queue id" in r.stderr


def test_unknown_config_key_is_a_clear_error(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[limits]\nmax_recipents = 5\n')
    r = subprocess.run([BATON, "--config", str(cfg), "serve"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "max_recipents" in r.stderr


def test_bad_environment_override_is_a_clear_error(tmp_path):
    r = subprocess.run(
        [BATON, "--data-dir", str(tmp_path), "serve"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "BATON_LIMITS__MAX_RECIPIENTS": "lots"},
    )
    assert r.returncode != 0
    assert "max_recipients" in r.stderr
