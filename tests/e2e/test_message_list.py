"""`baton message list` (finished messages included, with filters) and the capture route
(`target = "capture"`, listed by `baton capture list`, printed by `baton capture show`)."""

import json
import re
import subprocess
import time

import pytest

from conftest import BATON, RFC3339_MS
from nexthop import NextHop
from test_pipeline import submit


@pytest.fixture
def refusing_hop():
    hop = NextHop(refuse=("@refuse.test",))
    yield hop
    hop.stop()


@pytest.fixture
def relay(spawn_relay, refusing_hop):
    relay = spawn_relay(**{
        "pipeline.run_stages": True,
        "delivery.routes": [
            {"pattern": "*.kept.test", "target": "capture"},
            # Everything else, refuse.test included: a capture that fell through would land here.
            {"pattern": "*", "target": refusing_hop.target},
        ],
    })
    relay.add_user("alice", "acme", "s3cret")
    relay.add_domain("acme.test", "acme")
    return relay


def listed(relay, *args):
    return json.loads(relay.cli("message", "list", "--json", *args).stdout)


def wait_final(relay, ids, timeout=60):
    """The states of these messages (DSNs and others aside) once all are final."""
    deadline = time.monotonic() + timeout
    while True:
        states = {m["id"]: m["state"] for m in listed(relay) if m["id"] in ids}
        if all(states.get(i) in ("delivered", "failed", "partial") for i in ids):
            return states
        assert time.monotonic() < deadline, states
        time.sleep(0.2)


def ids(messages):
    return [m["id"] for m in messages]


def test_message_list_shows_finished_messages_and_filters_them(relay):
    kept = submit(relay, "x@a.kept.test", subject="kept one", sender="alice@acme.test")
    refused = submit(relay, "y@refuse.test", subject="refused", sender="news@acme.test")
    both = submit(relay, "z@b.kept.test,w@refuse.test", subject="half", sender="news@acme.test")
    states = wait_final(relay, [kept, refused, both])
    assert states == {kept: "delivered", refused: "failed", both: "partial"}, states

    # Finished messages are gone from the queue but not from the list, newest last. The DSNs
    # for the failures are listed too, from the null sender.
    assert not {kept, refused, both} & {m["id"] for m in relay.queue_list()}
    deadline = time.monotonic() + 60
    while len([m for m in listed(relay) if m["from"] == "" and m["state"] == "delivered"]) < 2:
        assert time.monotonic() < deadline, listed(relay)
        time.sleep(0.2)
    everything = listed(relay)
    assert ids(m for m in everything if m["from"]) == [kept, refused, both]
    dsns = [m for m in everything if m["from"] == ""]
    assert len(dsns) == 2 and all(m["recipients"][0]["address"] == "news@acme.test" for m in dsns), dsns
    first = everything[0]
    assert RFC3339_MS.fullmatch(first["received_at"]), first
    assert (first["from"], first["subject"], first["tenant"]) == ("alice@acme.test", "kept one", "acme")
    assert first["recipients"] == [{"address": "x@a.kept.test", "status": "delivered", "attempts": 1,
                                    "last_reply": f"250 2.0.0 captured (baton capture show {kept})"}]

    ours = ("--from", "@acme.test")
    assert ids(listed(relay, "--state", "delivered", *ours)) == [kept]
    assert ids(listed(relay, "--state", "failed")) == [refused]
    assert ids(listed(relay, "--to", "@REFUSE.test")) == [refused, both]
    assert ids(listed(relay, "--from", "news@")) == [refused, both]
    assert ids(listed(relay, "--limit", "1", *ours)) == [both]
    assert ids(listed(relay, "--since", "1h", *ours)) == [kept, refused, both]
    assert listed(relay, "--since", "1ms") == []
    assert listed(relay, "--to", "nobody@") == []

    table = relay.cli("message", "list").stdout.splitlines()
    assert re.split(r"\s{2,}", table[0]) == ["ID", "RECEIVED", "STATE", "FROM", "RECIPIENTS", "SUBJECT"]
    row = re.split(r"\s{2,}", next(l for l in table if l.startswith(both)))
    assert row[2:] == ["partial", "news@acme.test", "z@b.kept.test(delivered),w@refuse.test(failed)",
                       "half"], table
    # Columns line up: every row's STATE starts where the header's does.
    at = table[0].index("STATE")
    assert all(l[at - 2:at] == "  " and l[at] != " " for l in table[1:]), table

    r = relay.cli("message", "list", "--state", "done", check=False)
    assert r.returncode == 2 and "queued, deferred, delivered, partial, failed" in r.stderr, r.stderr


def test_the_capture_route_keeps_the_message_as_it_would_have_gone_out(relay, refusing_hop):
    kept = submit(relay, "x@a.kept.test,y@b.kept.test", subject="capture me", sender="alice@acme.test")
    wait_final(relay, [kept])
    # Nothing went out: the next hop never saw a connection.
    assert refusing_hop.commands() == []

    [row] = json.loads(relay.cli("capture", "list", "--json").stdout)
    assert row["id"] == kept and row["subject"] == "capture me", row
    assert sorted(row["recipients"]) == ["x@a.kept.test", "y@b.kept.test"], row
    assert RFC3339_MS.fullmatch(row["at"]), row
    table = relay.cli("capture", "list").stdout.splitlines()
    assert table[0].split() == ["ID", "CAPTURED", "FROM", "RECIPIENTS", "SUBJECT"], table

    raw = subprocess.run([BATON, "--config", str(relay.config), "capture", "show", kept],
                         capture_output=True, timeout=30).stdout
    head, _, body = raw.partition(b"\r\n\r\n")
    # Added headers and signatures first, then the message as received (Received: on top).
    assert head.startswith(b"DKIM-Signature:"), head[:200]
    assert b"d=acme.test;" in head and b"\r\nReceived: " in head and b"\r\nSubject: capture me" in head
    assert body, raw

    # `queue cat` is the message as received: no signature of ours.
    stored = relay.cli("queue", "cat", kept).stdout
    assert stored.startswith("Received: ") and "DKIM-Signature" not in stored, stored[:300]
    missing = relay.cli("capture", "show", "01M8TKBXSX42MBNDKYPXWMDEZ4", check=False)
    assert missing.returncode == 1 and "was not captured" in missing.stderr, missing.stderr

