"""The README's Quick Start, replayed line by line on a fresh data dir: it must end with the
message visible (delivered via the capture route, listed, and printable with its signature).

Only two things differ from a person at a shell: `target/release/baton` is the binary under
test, and `cargo build --release` is not run again (the suite already built it)."""

import json
import os
import re
import socket
import subprocess
import time

import pytest

from conftest import BATON, REPO
from procs import stop_process

QUICKSTART_PORTS = (2587, 2465, 2525)


def quickstart_commands():
    """The first indented block under '## Quick start', continuation lines joined."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start", 1)[1]
    block = []
    for line in section.splitlines()[1:]:
        if line.startswith("    "):
            block.append(line[4:])
        elif block:
            break
    commands, pending = [], ""
    for line in block:
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        commands.append((pending + line).strip())
        pending = ""
    return commands


def listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_listening(proc, port, timeout=30):
    deadline = time.monotonic() + timeout
    while not listening(port):
        assert proc.poll() is None, "baton serve exited during the Quick Start"
        assert time.monotonic() < deadline, f"nothing listens on {port}"
        time.sleep(0.1)


@pytest.fixture
def shell_env(tmp_path):
    busy = [p for p in QUICKSTART_PORTS if listening(p)]
    assert not busy, f"the Quick Start's default ports are taken: {busy}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_") and k != "RUST_LOG"}
    # A fresh machine: nothing in the default data dir.
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    return env


def test_readme_quick_start_ends_with_the_message_visible(shell_env, tmp_path):
    commands = quickstart_commands()
    assert commands[0] == "cargo build --release", commands
    assert any(c.endswith("&") for c in commands), "the Quick Start starts serve in the background"
    background = []
    outputs = []
    try:
        for command in commands[1:]:
            line = command.replace("target/release/baton", BATON)
            if line.endswith("&"):
                log = open(tmp_path / "serve.log", "w")
                proc = subprocess.Popen(
                    ["bash", "-c", "exec " + line[:-1]], cwd=REPO, env=shell_env,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                background.append((proc, log))
                # A person reads the log before typing on: the listeners are up by then.
                for port in QUICKSTART_PORTS:
                    wait_listening(proc, port)
                continue
            r = run(line, shell_env)
            assert r.returncode == 0, f"{command}\n{r.stdout}\n{r.stderr}"
            outputs.append((command, r.stdout))

        swaks = next(out for cmd, out in outputs if cmd.startswith("swaks"))
        [queue_id] = re.findall(r"250 2\.0\.0 Ok: queued as (\w+)", swaks)

        # The last two lines show the message; delivery is asynchronous, so a person (and this
        # test) may have to run them again after a moment.
        last_two = commands[-2:]
        assert [c.split()[1:3] for c in last_two] == [["message", "list"], ["capture", "list"]]
        deadline = time.monotonic() + 60
        while True:
            listed = run(last_two[0].replace("target/release/baton", BATON), shell_env).stdout
            row = next((l for l in listed.splitlines() if l.startswith(queue_id)), "")
            if re.search(r" (delivered|failed|partial) ", row) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        header = listed.splitlines()[0].split()
        assert header[:4] == ["ID", "RECEIVED", "STATE", "FROM"], listed
        assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z  delivered  news@acme\.example"
                         r"  someone@example\.org\(delivered\)", row), listed

        captured = run(last_two[1].replace("target/release/baton", BATON), shell_env).stdout
        assert any(l.startswith(queue_id) and "someone@example.org" in l
                   for l in captured.splitlines()), captured

        # What the prose after the block promises: the message as it would have gone out.
        shown = run(f"{BATON} capture show {queue_id}", shell_env)
        assert shown.returncode == 0, shown.stderr
        head = shown.stdout.split("\r\n\r\n", 1)[0]
        assert re.search(r"^DKIM-Signature:.*\bd=acme\.example;", head, re.M), head
        assert "From: news@acme.example" in head, head
        details = json.loads(run(f"{BATON} message show {queue_id} --json", shell_env).stdout)
        assert details["state"] == "delivered", details
        assert [e["what"] for e in details["timeline"]][-1] == "delivered", details
    finally:
        for proc, log in background:
            stop_process(proc, group=True)
            log.close()


def run(line, env):
    return subprocess.run(["bash", "-c", line], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
