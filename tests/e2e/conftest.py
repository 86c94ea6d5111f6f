"""End-to-end fixtures: the real `baton` binary on free loopback ports, one data dir per test.

`spawn_relay(**overrides)` is the zero-to-production `spawn_app()`: it writes a config,
starts `baton serve`, waits for its listeners and stops it at teardown, printing its log if
the test failed.
"""

import json
import os
import re
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BATON = os.environ.get("E2E_BATON_BIN", str(REPO / "target" / "release" / "baton"))


from ports import free_port  # noqa: E402,F401  (re-exported for tests)
from procs import stop_process  # noqa: E402

# Every time the CLI prints: RFC 3339, milliseconds, UTC.
RFC3339_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


class PortInUse(RuntimeError):
    pass


class Relay:
    def __init__(self, tmp: Path, overrides: dict, env=None):
        self.dir = tmp
        self.env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
        self.env.update(env or {})
        tmp.mkdir(parents=True, exist_ok=True)
        self.data_dir = tmp / "data"
        self.overrides = overrides
        self.log_path = tmp / "baton.log"
        self.proc = None
        self.write_config()

    def write_config(self):
        tmp, overrides = self.dir, self.overrides
        self.ports = {k: free_port() for k in ("submission", "submissions", "relay")}
        sections = {
            "listen": {k: f"127.0.0.1:{p}" for k, p in self.ports.items()},
            "relay": {"accept_domains": [], "allow_networks": []},
            "limits": {"auth_failure_delay": "50ms"},
            "log": {"filter": "info,baton_gateway=debug,baton_pipeline=debug"},
            # Gateway tests look at what was accepted; pipeline tests switch the stages on.
            "pipeline": {"run_stages": False},
        }
        for key, value in overrides.items():
            section, _, name = key.partition(".")
            sections.setdefault(section, {})[name] = value
        lines = ['hostname = "relay.test"', f"data_dir = {toml_value(str(self.data_dir))}"]
        for section, values in sections.items():
            lines.append(f"[{section}]")
            tables = {k: v for k, v in values.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
            lines += [f"{k} = {toml_value(v)}" for k, v in values.items() if k not in tables]
            # Lists of dicts are arrays of tables, e.g. [[delivery.routes]].
            for name, items in tables.items():
                for item in items:
                    lines.append(f"[[{section}.{name}]]")
                    lines += [f"{k} = {toml_value(v)}" for k, v in item.items()]
        self.config = tmp / "baton.toml"
        self.config.write_text("\n".join(lines) + "\n")

    # -- lifecycle ---------------------------------------------------------------------
    def start(self):
        # A port can still be taken between our check and baton's bind; try fresh ones.
        for attempt in range(3):
            try:
                return self.start_once()
            except PortInUse:
                if attempt == 2:
                    raise
                self.write_config()

    def start_once(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [BATON, "--config", str(self.config), "serve"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        deadline = time.time() + 20
        pending = set(self.ports.values())
        while pending and time.time() < deadline:
            if self.proc.poll() is not None:
                text = self.log_text()
                if "Address already in use" in (text.splitlines() or [""])[-1]:
                    raise PortInUse(text)
                raise RuntimeError(f"baton exited early:\n{text}")
            for port in list(pending):
                try:
                    # Listening is enough: the implicit-TLS port sends nothing before a handshake.
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    pending.discard(port)
                except OSError:
                    pass
            time.sleep(0.05)
        if pending:
            raise RuntimeError(f"baton did not listen on {pending}:\n{self.log_text()}")
        return self

    def stop(self, timeout=30):
        return stop_process(self.proc, timeout)

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def pid(self):
        return self.proc.pid

    def peak_rss_kb(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise RuntimeError("no VmHWM")

    # -- CLI ---------------------------------------------------------------------------
    def cli(self, *args, stdin=None, check=True, env_extra=None):
        r = subprocess.run(
            [BATON, "--config", str(self.config), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            env={**self.env, **(env_extra or {})},
        )
        if check and r.returncode != 0:
            raise RuntimeError(f"baton {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r

    def add_user(self, name, tenant, password):
        self.cli("user", "add", name, "--tenant", tenant, "--password-stdin", stdin=password + "\n")

    def add_domain(self, domain, tenant):
        self.cli("domain", "add", domain, "--tenant", tenant)

    def queue_list(self):
        return json.loads(self.cli("queue", "list", "--json").stdout)

    def message(self, queue_id):
        r = subprocess.run(
            [BATON, "--config", str(self.config), "queue", "cat", queue_id],
            capture_output=True,
            timeout=60,
            env=self.env,
        )
        assert r.returncode == 0, r.stderr
        return r.stdout

    # -- addresses ---------------------------------------------------------------------
    def addr(self, kind):
        return ("127.0.0.1", self.ports[kind])


@pytest.fixture
def spawn_relay(tmp_path, request):
    relays = []

    def spawn(env=None, start=True, **overrides):
        # Keys use dots for sections: spawn(**{"limits.max_recipients": 2}). `env` adds
        # environment variables; start=False returns the relay configured but not started.
        relay = Relay(tmp_path / f"relay{len(relays)}", overrides, env)
        relays.append(relay)
        return relay.start() if start else relay

    yield spawn
    failed = getattr(request.node, "rep_call", None)
    for relay in relays:
        relay.stop()
        if failed is not None and failed.failed:
            print(f"--- baton log ({relay.log_path}) ---\n{relay.log_text()[-8000:]}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def tenant_relay(spawn_relay):
    """A relay with tenant acme (user alice, password s3cret, domain acme.test)."""
    relay = spawn_relay()
    relay.add_user("alice", "acme", "s3cret")
    relay.add_domain("acme.test", "acme")
    return relay


def client_tls():
    """TLS for clients: the relay's certificate is self-signed."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class RawClient:
    """A line-level SMTP client over a raw socket, for what smtplib won't send."""

    def __init__(self, addr, timeout=10):
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.buf = b""
        self.greeting = self.reply()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def reply(self):
        """One reply, all lines, as text; '' when the connection is closed."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return "".join(lines)
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            text = line.decode()
            lines.append(text + "\n")
            if len(text) < 4 or text[3] != "-":
                return "".join(lines)

    def cmd(self, line: str):
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def closed(self, timeout=5):
        """True if the server closed the connection (no more data, EOF)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def starttls(self):
        self.sock = client_tls().wrap_socket(self.sock, server_hostname="relay.test")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def open_transaction(relay, rcpts=1, listener="relay"):
    """A RawClient after EHLO, MAIL and `rcpts` accepted RCPTs (from an allow-listed network)."""
    c = RawClient(relay.addr(listener))
    c.cmd("EHLO client.test")
    assert code(c.cmd("MAIL FROM:<a@sender.test>")) == "250 2.1.0"
    for i in range(rcpts):
        assert code(c.cmd(f"RCPT TO:<r{i}@example.org>")) == "250 2.1.5"
    return c


def code(reply: str) -> str:
    """'250 2.1.0' from '250 2.1.0 Ok' (the last line's code and enhanced code)."""
    last = reply.strip().splitlines()[-1]
    parts = last.split(" ")
    return " ".join(parts[:2])


# The session-wide LocalStack + DynamoDB Local fixture, for every AWS-backend test module.
from awsnet import localstack  # noqa: E402,F401
