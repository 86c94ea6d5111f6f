"""The soak in CI (issue 11): bench/soak.sh's run with 1,000 messages instead of 100,000.

1,200 recipients (every fifth message has two) through `baton serve` to the soak MX
(soak_mx.py): 60 are deferred once and delivered when retried, 24 are refused with 550, the
other 1,116 are accepted. The relay signs as tenant soak and bounces each failure to the
sender, whose DSN comes back to the same MX. Once the relay is idle, the MX's per-address
tables, the ledger (message, bounce and suppression lists) and the queues must match the
plan exactly. No timing assertion: the wait for idleness has a generous limit only.
"""

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soak_mx
from conftest import BATON
from ports import free_port
from procs import stop_process

MESSAGES = 1000


@pytest.fixture
def soak_mx_server():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(Path(soak_mx.__file__)), "mx", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"soak MX did not listen: {proc.stderr.read() if proc.poll() is not None else ''}")
                time.sleep(0.05)
        yield ("127.0.0.1", port)
    finally:
        stop_process(proc, timeout=10)


def test_soak_ledger_mx_and_bounces_add_up(spawn_relay, soak_mx_server):
    mx = soak_mx_server
    relay = spawn_relay(
        **{
            "pipeline.run_stages": True,
            "log.filter": "warn",
            "relay.tenant_networks": [{"network": "127.0.0.0/8", "tenant": "soak"}],
            "delivery.retry_initial": "1s",
            "delivery.retry_max": "2s",
            "delivery.routes": [{"pattern": "*", "target": f"{mx[0]}:{mx[1]}"}],
        }
    )
    relay.add_domain(soak_mx.SENDER_DOMAIN, "soak")

    run = asyncio.run(
        soak_mx.soak(relay.addr("relay"), mx, MESSAGES, relay.data_dir, pid=relay.pid(), timeout=600)
    )
    assert not run["timed_out"], f"relay not idle: MX {run['mx']}, queues {run['queues_at_end']}"
    dump = asyncio.run(soak_mx.mx_command(*mx, "XDUMP"))

    # The plan's numbers, spelled out: 1,200 recipients, 1 in 50 fails, 1 in 20 deferred once.
    assert run["sent"] == MESSAGES
    assert dump["accepted"] == 1200 - 24
    assert dump["refused"] == 24
    assert dump["deferred"] == 60
    assert dump["dsn_messages"] == 24 and dump["dsn_named"] == 24
    assert dump["unexpected"] == 0, dump["unexpected_first"]

    # And every address, ledger record and queue against the plan.
    results = soak_mx.checks(MESSAGES, dump, BATON, relay.config, relay.data_dir, run["sent"])
    for name, good, detail in results:
        print(f"{'PASS' if good else 'FAIL'}  {name}: {detail}")
    failed = [f"{name}: {detail}" for name, good, detail in results if not good]
    assert not failed, "\n".join(failed)
    rss = soak_mx.rss_figures(run["samples"], 1200)
    print(f"relayed {MESSAGES} messages in {run['seconds_to_mx']:.1f} s; VmRSS {rss}")
