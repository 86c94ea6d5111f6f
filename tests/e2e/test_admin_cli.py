"""The admin CLI and configuration errors."""

import os
import socket
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
    # The relay's hostname (relay.test here) signs its DSNs: no tenant may own it.
    r = relay.cli("domain", "add", "Relay.Test.", "--tenant", "acme", check=False)
    assert r.returncode == 1 and "this relay's hostname" in r.stderr, r.stderr
    r = relay.cli("user", "add", "carol", "--tenant", "acme", check=False)
    assert r.returncode != 0 and "--password-stdin" in r.stderr
    r = relay.cli("queue", "cat", "../../etc/passwd", check=False)
    assert r.returncode != 0 and "invalid queue id" in r.stderr


def test_tenant_names_that_could_reach_into_another_tenants_records_are_refused(spawn_relay):
    """Records are keyed `<tenant>/...` and listed by that prefix: `acme/x` would read and
    change acme's. Every command that makes a tenant refuses such names."""
    relay = spawn_relay()
    for args in (["key", "create", "--tenant", "acme/x"],
                 ["domain", "add", "x.test", "--tenant", "acme/x"],
                 ["user", "add", "eve", "--tenant", "acme/x", "--password-stdin"],
                 ["tenant", "quota", "acme/x", "--per-day", "5"],
                 ["events", "destination", "add", "acme/x", "hook", "--webhook", "https://example.org/"]):
        r = relay.cli(*args, stdin="pw\n", check=False)
        assert r.returncode == 2 and "tenant \"acme/x\"" in r.stderr, (args, r.stderr)
    assert relay.cli("key", "create", "--tenant", "acme-eu.2").returncode == 0


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


def bare_env(home):
    """The environment without any BATON_* setting, with HOME at `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_") and k != "XDG_STATE_HOME"}
    env["HOME"] = str(home)
    return env


def test_default_data_dir_is_the_same_whatever_the_current_directory(tmp_path):
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    env = bare_env(home)
    r = subprocess.run([BATON, "user", "add", "alice", "--tenant", "acme", "--password-stdin"],
                       input="s3cret\n", capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    state = home / ".local" / "state" / "baton"
    assert (state / "baton.db").exists(), list(home.rglob("*"))
    assert not (tmp_path / "baton-data").exists()
    # Another directory, same data: a read-only command finds it.
    r = subprocess.run([BATON, "queue", "list", "--json"], capture_output=True, text=True,
                       env=env, cwd=elsewhere, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr
    assert not (elsewhere / "baton-data").exists()


def test_read_only_commands_never_create_a_data_dir(tmp_path):
    missing = tmp_path / "nowhere"
    for args in (["queue", "list"], ["bounce", "list"], ["suppression", "list"],
                 ["message", "show", "01M8TCDWG78K8RNZHB15YGGKT3"]):
        r = subprocess.run([BATON, "--data-dir", str(missing), *args], capture_output=True,
                           text=True, env=bare_env(tmp_path), timeout=60)
        assert r.returncode != 0, args
        assert f"no Baton data in {missing}" in r.stderr, r.stderr
        assert not missing.exists(), args


def test_errors_are_one_line_each_cause_once_with_what_to_do(tmp_path):
    # AWS unreachable: no SDK Debug dump, and a hint.
    env = bare_env(tmp_path)
    env.update({"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "us-east-1",
                "BATON_AWS__ENDPOINT_URL": "http://127.0.0.1:9", "BATON_AWS__REQUEST_TIMEOUT": "2s"})
    r = subprocess.run([BATON, "--backend", "aws", "user", "add", "a", "--tenant", "t", "--password-stdin"],
                       input="pw\n", capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0
    [err] = [line for line in r.stderr.splitlines() if line.startswith("baton:")]
    assert "{" not in err and "DispatchFailure" not in err, err
    assert "localstack/start.sh" in err, err


def test_a_taken_port_is_said_once_and_leaves_no_certificate(spawn_relay, tmp_path):
    blocker = socket.create_server(("127.0.0.1", 0))
    try:
        relay = spawn_relay(start=False)
        port = blocker.getsockname()[1]
        config = relay.config.read_text()
        config = config.replace(f'relay = "127.0.0.1:{relay.ports["relay"]}"', f'relay = "127.0.0.1:{port}"')
        relay.config.write_text(config)
        r = subprocess.run([BATON, "--config", str(relay.config), "serve"], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode != 0
        last = r.stderr.strip().splitlines()[-1]
        assert last.count("Address already in use") == 1, last
        assert not (relay.data_dir / "tls" / "cert.pem").exists(), "certificate made before the bind"
    finally:
        blocker.close()


def test_version_names_the_git_revision():
    r = subprocess.run([BATON, "--version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                         text=True, cwd=os.path.dirname(__file__)).stdout.strip()
    out = r.stdout.strip()
    assert out.startswith("baton ") and out.endswith(f" ({rev})"), (out, rev)


def test_bash_completion_completes_commands_and_options(tmp_path):
    script = subprocess.run([BATON, "completions", "bash"], capture_output=True, text=True,
                            timeout=30, env=bare_env(tmp_path), cwd=tmp_path)
    assert script.returncode == 0, script.stderr
    (tmp_path / "baton.bash").write_text(script.stdout)

    def complete(*words):
        probe = (f"source {tmp_path / 'baton.bash'}; COMP_WORDS=({' '.join(words)}); "
                 f"COMP_CWORD={len(words) - 1}; COMP_LINE='{' '.join(words)}'; "
                 f"COMP_POINT=${{#COMP_LINE}}; _baton baton '{words[-1]}' '{words[-2]}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
        r = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    assert complete("baton", "mes") == ["message"]
    assert set(complete("baton", "message", "")) >= {"list", "show"}
    assert set(complete("baton", "message", "list", "--s")) == {"--since", "--state"}
    assert "fish" in complete("baton", "completions", "")
    # Completions need no configuration and create nothing.
    assert not (tmp_path / "state").exists()


def test_man_pages_cover_every_command(tmp_path):
    pages = tmp_path / "man"
    r = subprocess.run([BATON, "man", "--out-dir", str(pages)], capture_output=True, text=True,
                       timeout=30, env=bare_env(tmp_path))
    assert r.returncode == 0, r.stderr
    assert oct(pages.stat().st_mode & 0o777) == "0o755"
    # Into a directory that holds other pages: ours are made readable, theirs left alone.
    other = pages / "other.1"
    other.write_text(".TH other 1\n")
    other.chmod(0o600)
    r = subprocess.run([BATON, "man", "--out-dir", str(pages)], capture_output=True, text=True,
                       timeout=30, env=bare_env(tmp_path))
    assert r.returncode == 0, r.stderr
    assert oct(other.stat().st_mode & 0o777) == "0o600"
    other.unlink()
    names = {p.name for p in pages.iterdir()}
    assert {"baton.1", "baton-serve.1", "baton-message-list.1", "baton-capture-show.1",
            "baton-completions.1"} <= names, names
    page = (pages / "baton-message-list.1").read_text()
    assert page.startswith(".ie") and ".TH baton-message-list 1" in page and "\\-\\-since" in page
    assert all(oct((pages / n).stat().st_mode & 0o777) == "0o644" for n in names)
    top = subprocess.run([BATON, "man"], capture_output=True, text=True, timeout=30, env=bare_env(tmp_path))
    assert top.stdout == (pages / "baton.1").read_text()


def readme_commands():
    """Every `baton ...` the README names, as its words up to the first placeholder."""
    import re
    from conftest import REPO
    text = (REPO / "README.md").read_text()
    found = set()
    for snippet in re.findall(r"`(baton [^`]+)`", text) + re.findall(r"target/release/baton ([^\n&|]+)", text):
        words = snippet.split()
        if words[0] == "baton":
            words = words[1:]
        found.add(tuple(words))
    return found


def test_the_readme_and_help_agree(tmp_path):
    """Each command the README shows exists, and each option it shows is in that command's --help."""
    checked = 0
    for words in sorted(readme_commands()):
        # The command is the leading words until an option or a placeholder.
        path = []
        for w in words:
            if w.startswith("-") or not (w.replace("-", "").isalpha() and w.islower()):
                break
            path.append(w)
        helped = subprocess.run([BATON, *path, "--help"], capture_output=True, text=True, timeout=30,
                                env=bare_env(tmp_path))
        assert helped.returncode == 0, (words, helped.stderr)
        for option in [w.strip("[]").split("=")[0] for w in words if w.strip("[").startswith("--")]:
            assert option in helped.stdout, (words, option)
        checked += 1
    assert checked >= 15, checked
