"""The soak kit (issue 11): a fast test MX that defers and fails recipients by their local
part, the load that goes with it, and the exact checks of the MX, the ledger and the queues.

The plan: message i (0-based) has one recipient, or two when i % 5 == 4, numbered across the
whole run (k = 0, 1, ...; message i starts at k = i + i // 5):

    f<k>@soak.test   when k % 50 == 1   refused, 550 5.1.1, every time
    d<k>@soak.test   when k % 20 == 0   deferred, 450 4.2.0, the first time the MX sees it
    r<k>@soak.test   otherwise          accepted

So 1 in 50 recipients fails and 1 in 20 is deferred once (exactly, when the number of
recipients is a multiple of 100, e.g. 1,000 or 100,000 messages), and some messages mix a
delivered, a deferred and a failed recipient. Mail comes from soak@sender.test (a tenant's
domain), so every failure is bounced back to it as a DSN: route everything to this MX and it
counts the DSNs too (MAIL FROM:<>, one Final-Recipient per failed recipient).

The MX (asyncio, PIPELINING, the whole DATA read in one go) keeps counts and, per address,
how often it was accepted, deferred, refused and named in a DSN; nothing else. `XSTATS` on
its port answers `250 <json counts>`, `XDUMP` `250 <json with the per-address tables>` (the
relay never sends either).

    python3 soak_mx.py mx --port P                    # the MX, until SIGTERM/SIGINT
    python3 soak_mx.py drive --relay-port R --mx-port P --messages N --baton BIN \
        --config CFG --data-dir DIR [--pid PID] [--json OUT]

`drive` sends the plan to the relay (a few pipelined connections, a bounded backlog), samples
VmRSS of PID every second, waits until the MX has seen every recipient's final answer and
every DSN and the relay's queues are empty, then checks everything exactly (`checks`) and
prints one line per check; exit status 1 if any failed.
"""

import argparse
import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

DOMAIN = "soak.test"
SENDER = "soak@sender.test"
SENDER_DOMAIN = "sender.test"
FAIL_EVERY, FAIL_AT = 50, 1
DEFER_EVERY = 20
TWO_EVERY = 5  # message i has two recipients when i % 5 == 4


# ------------------------------------------------------------------------------ the plan
def rcpt_name(k):
    if k % FAIL_EVERY == FAIL_AT:
        return f"f{k}"
    if k % DEFER_EVERY == 0:
        return f"d{k}"
    return f"r{k}"


def recipients(i):
    """The recipients of message i."""
    k = i + i // TWO_EVERY
    n = 2 if i % TWO_EVERY == TWO_EVERY - 1 else 1
    return [f"{rcpt_name(k + j)}@{DOMAIN}" for j in range(n)]


def plan(messages):
    """Every recipient of the run by class: {"ok": [...], "deferred": [...], "failed": [...]}."""
    out = {"ok": [], "deferred": [], "failed": []}
    for i in range(messages):
        for a in recipients(i):
            out[{"f": "failed", "d": "deferred", "r": "ok"}[a[0]]].append(a)
    return out


def kind(address):
    """ok / deferred / failed for a plan address, None for anything else."""
    local, _, domain = address.partition("@")
    if domain != DOMAIN or not re.fullmatch(r"[rdf]\d+", local):
        return None
    return {"f": "failed", "d": "deferred", "r": "ok"}[local[0]]


def body(i, size):
    rcpts = recipients(i)
    head = (
        f"From: Soak <{SENDER}>\r\n"
        f"To: {', '.join(rcpts)}\r\n"
        f"Subject: soak {i}\r\n"
        f"Message-ID: <soak-{i}@{SENDER_DOMAIN}>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
    )
    line = f"soak message {i} " + "x" * 60 + "\r\n"
    lines = max(1, (size - len(head)) // len(line))
    return (head + line * lines).encode()


# ------------------------------------------------------------------------------ the MX
def _path(line):
    """The address between < and > of a MAIL/RCPT line, lower case."""
    start, end = line.find(b"<"), line.find(b">")
    if start < 0 or end < start:
        return None
    return line[start + 1 : end].decode("ascii", "replace").lower()


FINAL_RCPT = re.compile(rb"^Final-Recipient:\s*rfc822;\s*(\S+)\s*$", re.M | re.I)


class SoakMX:
    """Decides per recipient from its local part and counts; see the module's text."""

    def __init__(self):
        self.accepted = Counter()  # address -> transactions that took it (DATA 250)
        self.deferred = Counter()  # address -> 450s
        self.refused = Counter()  # address -> 550s
        self.dsn_named = Counter()  # address -> DSNs naming it as Final-Recipient
        self.dsn_to = Counter()  # address -> DSNs delivered to it
        self.counts = Counter()
        self.unexpected = []  # the first few things no plan explains

    def _odd(self, what):
        self.counts["unexpected"] += 1
        if len(self.unexpected) < 20:
            self.unexpected.append(what)

    def stats(self):
        return {
            "connections": self.counts["connections"],
            "transactions": self.counts["transactions"],
            "accepted": sum(self.accepted.values()),
            "deferred": sum(self.deferred.values()),
            "refused": sum(self.refused.values()),
            "dsn_messages": self.counts["dsn_messages"],
            "dsn_named": sum(self.dsn_named.values()),
            "unexpected": self.counts["unexpected"],
        }

    def dump(self):
        return {
            **self.stats(),
            "accepted_by": dict(self.accepted),
            "deferred_by": dict(self.deferred),
            "refused_by": dict(self.refused),
            "dsn_named_by": dict(self.dsn_named),
            "dsn_to_by": dict(self.dsn_to),
            "unexpected_first": self.unexpected,
        }

    async def serve(self, host, port):
        return await asyncio.start_server(self.session, host, port, limit=64 << 20, backlog=512)

    async def session(self, reader, writer):
        self.counts["connections"] += 1
        write = writer.write
        write(b"220 soak-mx.test ESMTP\r\n")
        mail, rcpts = None, []
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                verb = line[:4].upper()
                if verb == b"EHLO":
                    write(b"250-soak-mx.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 104857600\r\n")
                elif verb == b"HELO":
                    write(b"250 soak-mx.test\r\n")
                elif verb == b"MAIL":
                    mail, rcpts = _path(line), []
                    write(b"250 2.1.0 Ok\r\n")
                elif verb == b"RCPT":
                    write(self.rcpt(mail, _path(line), rcpts))
                elif verb == b"DATA":
                    if mail is None or not rcpts:
                        write(b"554 5.5.1 No valid recipients\r\n")
                        continue
                    write(b"354 go ahead\r\n")
                    data = await reader.readuntil(b"\r\n.\r\n")
                    self.message(mail, rcpts, data)
                    mail, rcpts = None, []
                    write(b"250 2.0.0 Ok: queued\r\n")
                elif verb == b"RSET":
                    mail, rcpts = None, []
                    write(b"250 2.0.0 Ok\r\n")
                elif verb == b"NOOP":
                    write(b"250 2.0.0 Ok\r\n")
                elif verb == b"QUIT":
                    write(b"221 2.0.0 Bye\r\n")
                    break
                elif line.upper().startswith(b"XSTATS"):
                    write(b"250 " + json.dumps(self.stats()).encode() + b"\r\n")
                elif line.upper().startswith(b"XDUMP"):
                    write(b"250 " + json.dumps(self.dump()).encode() + b"\r\n")
                else:
                    self._odd(f"command {line[:40]!r}")
                    write(b"502 5.5.1 Not implemented\r\n")
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def rcpt(self, mail, address, rcpts):
        if mail is None or address is None:
            self._odd(f"RCPT {address!r} outside a transaction")
            return b"503 5.5.1 MAIL first\r\n"
        k = kind(address)
        if k == "failed":
            self.refused[address] += 1
            return b"550 5.1.1 No such user (soak)\r\n"
        if k == "deferred" and address not in self.deferred:
            self.deferred[address] += 1
            return b"450 4.2.0 Try again later (soak)\r\n"
        if k is None and not (mail == "" and address == SENDER):
            self._odd(f"RCPT {address} from {mail!r}")
        rcpts.append(address)
        return b"250 2.1.5 Ok\r\n"

    def message(self, mail, rcpts, data):
        self.counts["transactions"] += 1
        if mail == "":
            self.counts["dsn_messages"] += 1
            for a in rcpts:
                self.dsn_to[a] += 1
            for m in FINAL_RCPT.finditer(data):
                self.dsn_named[m.group(1).decode("ascii", "replace").lower()] += 1
            return
        if mail != SENDER:
            self._odd(f"MAIL FROM {mail!r}")
        for a in rcpts:
            self.accepted[a] += 1


async def run_mx(host, port):
    mx = SoakMX()
    server = await mx.serve(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"soak-mx listening on {host}:{server.sockets[0].getsockname()[1]}", flush=True)
    await stop.wait()
    server.close()


# ------------------------------------------------------------------------------ the client side
class SoakError(Exception):
    pass


async def read_reply(reader):
    lines = []
    while True:
        line = await reader.readline()
        if not line:
            raise SoakError(f"connection closed; got {lines}")
        lines.append(line.decode("ascii", "replace").rstrip("\r\n"))
        if len(line) < 4 or line[3:4] != b"-":
            return int(lines[-1][:3]), "\n".join(lines)


async def mx_command(host, port, command):
    """XSTATS or XDUMP: the MX's answer as a dict."""
    reader, writer = await asyncio.open_connection(host, port, limit=256 << 20)
    try:
        await read_reply(reader)
        writer.write(command.encode() + b"\r\n")
        code, text = await read_reply(reader)
        if code != 250:
            raise SoakError(f"{command}: {text}")
        writer.write(b"QUIT\r\n")
        return json.loads(text[4:])
    finally:
        writer.close()


class Load:
    """Sends messages 0..n-1 over `connections` pipelined sessions, at most `backlog`
    recipients ahead of what the MX has answered finally (`done` is updated from outside)."""

    def __init__(self, host, port, messages, connections=8, size=1024, per_connection=1000, backlog=4000):
        self.host, self.port = host, port
        self.messages, self.connections, self.size = messages, connections, size
        self.per_connection, self.backlog = per_connection, backlog
        self.next = 0
        self.sent = 0  # messages answered 250 after DATA
        self.sent_rcpts = 0
        self.done = 0  # recipients the MX answered finally (accepted or refused)
        self.queue_ids = []

    def claim(self):
        if self.next >= self.messages:
            return None
        i, self.next = self.next, self.next + 1
        return i

    async def run(self):
        await asyncio.gather(*(self.worker() for _ in range(self.connections)))

    async def worker(self):
        while self.next < self.messages:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            try:
                code, text = await read_reply(reader)
                if code != 220:
                    raise SoakError(f"greeting: {text}")
                writer.write(b"EHLO soak-client.test\r\n")
                code, text = await read_reply(reader)
                if code != 250 or "PIPELINING" not in text:
                    raise SoakError(f"EHLO: {text}")
                for _ in range(self.per_connection):
                    while self.sent_rcpts - self.done > self.backlog:
                        await asyncio.sleep(0.05)
                    i = self.claim()
                    if i is None:
                        break
                    await self.one(reader, writer, i)
                writer.write(b"QUIT\r\n")
                await read_reply(reader)
            finally:
                writer.close()

    async def one(self, reader, writer, i):
        rcpts = recipients(i)
        cmds = [f"MAIL FROM:<{SENDER}>"] + [f"RCPT TO:<{a}>" for a in rcpts] + ["DATA"]
        writer.write("".join(c + "\r\n" for c in cmds).encode())
        for c in cmds:
            code, text = await read_reply(reader)
            want = 354 if c == "DATA" else 250
            if code != want:
                raise SoakError(f"message {i}: {c} -> {text}")
        writer.write(body(i, self.size) + b".\r\n")
        code, text = await read_reply(reader)
        if code != 250:
            raise SoakError(f"message {i}: end of data -> {text}")
        m = re.search(r"queued as (\S+)", text)
        self.queue_ids.append(m.group(1) if m else text)
        self.sent += 1
        self.sent_rcpts += len(rcpts)


def vm_rss_kb(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid):
    """User + system CPU time of PID so far (its threads included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def queue_rows(data_dir):
    """{queue: rows} of every queue of the embedded backend, dead-letter queues included
    (read-only; fine while the relay runs: SQLite in WAL mode)."""
    db = sqlite3.connect(f"file:{Path(data_dir) / 'baton.db'}?mode=ro", uri=True, timeout=30)
    try:
        return dict(db.execute("SELECT queue, COUNT(*) FROM queue_messages GROUP BY queue").fetchall())
    finally:
        db.close()


async def soak(relay, mx, messages, data_dir, pid=None, connections=8, size=1024, backlog=4000,
               timeout=3600, progress=None):
    """Sends the plan, samples RSS every second and waits until the MX has every final answer
    and every DSN, and the relay's queues are empty. Returns the run's figures."""
    want = plan(messages)
    finals = len(want["ok"]) + len(want["deferred"]) + len(want["failed"])
    load = Load(*relay, messages, connections=connections, size=size, backlog=backlog)
    samples = []  # (seconds since start, VmRSS kB, recipients finished at the MX)
    t0 = time.monotonic()
    cpu0 = cpu_seconds(pid) if pid else None
    sender = asyncio.ensure_future(load.run())
    t_mx = t_idle = cpu_mx = None
    queues = {}
    last_print = 0.0
    stats = {}
    while True:
        await asyncio.sleep(1.0 if sender.done() else 0.5)
        if sender.done() and sender.exception():
            raise sender.exception()
        stats = await mx_command(*mx, "XSTATS")
        load.done = stats["accepted"] + stats["refused"]
        now = time.monotonic() - t0
        if pid:
            samples.append((now, vm_rss_kb(pid), load.done))
        if progress and now - last_print >= 10:
            last_print = now
            progress(f"{now:6.0f} s: sent {load.sent}/{messages} msgs, MX final {load.done}/{finals} rcpts, "
                     f"deferred {stats['deferred']}, DSNs {stats['dsn_messages']}"
                     + (f", VmRSS {samples[-1][1] / 1024:.1f} MB" if pid and samples[-1][1] else ""))
        if t_mx is None and sender.done() and load.done >= finals and stats["dsn_named"] >= len(want["failed"]):
            t_mx = now
            cpu_mx = cpu_seconds(pid) if pid else None
        if t_mx is not None:
            queues = queue_rows(data_dir)
            if sum(queues.values()) == 0:
                t_idle = now
                break
        if now > timeout:
            break
    await asyncio.sleep(0)
    return {
        "messages": messages,
        "sent": load.sent,
        "queue_ids": load.queue_ids,
        "seconds_to_mx": t_mx,
        "seconds_to_idle": t_idle,
        "cpu_seconds": cpu_mx - cpu0 if cpu_mx is not None and cpu0 is not None else None,
        "timed_out": t_idle is None,
        "queues_at_end": queues if t_idle is None else queue_rows(data_dir),
        "samples": samples,
        "mx": stats,
    }


# ------------------------------------------------------------------------------ the checks
def baton_json(baton, config, *args):
    r = subprocess.run([baton, "--config", str(config), *args, "--json"], capture_output=True, text=True,
                       timeout=1800)
    if r.returncode != 0:
        raise SoakError(f"baton {' '.join(args)}: {r.stderr}")
    return json.loads(r.stdout)


# `baton message list` reads each message's recipients with a ledger scan that SQLite bounds
# below only (`key >= prefix`, the upper bound is behind an OR), i.e. to the end of the
# table: quadratic, about 0.17 s per message at 100,000. Above this many messages the checks
# read the same two ledger tables (`messages`, `recipients`) in one pass instead.
CLI_LIST_MAX = 20000


def ledger_messages(data_dir):
    """What `baton message list --json` shows (id, from, state, recipients with status and
    attempts), read from the embedded backend's ledger tables in one pass (read-only)."""
    db = sqlite3.connect(f"file:{Path(data_dir) / 'baton.db'}?mode=ro", uri=True, timeout=30)
    try:
        rcpts = {}
        for key, value in db.execute("SELECT key, value FROM ledger WHERE tbl = 'recipients'"):
            qid, _, address = key.partition("/")
            v = json.loads(value)
            rcpts.setdefault(qid, []).append({"address": address, "status": v["status"], "attempts": v["attempts"]})
        out = []
        for qid, value in db.execute("SELECT key, value FROM ledger WHERE tbl = 'messages'"):
            summary = json.loads(value)
            rs = rcpts.get(qid, [])
            st = [r["status"] for r in rs]
            final = bool(st) and all(x in ("delivered", "failed", "suppressed") for x in st)
            state = ("delivered" if all(x == "delivered" for x in st) else "partial" if "delivered" in st
                     else "failed") if final else ("deferred" if "deferred" in st else "queued")
            out.append({"id": qid, "from": summary.get("from", ""), "state": state, "recipients": rs})
        return out
    finally:
        db.close()


def checks(messages, dump, baton, config, data_dir, sent):
    """[(name, ok, detail)]: the MX's per-address tables, the ledger's messages, bounce and
    suppression records, and the queues, each against the plan exactly."""
    want = plan(messages)
    ok_set, d_set, f_set = set(want["ok"]), set(want["deferred"]), set(want["failed"])
    n_rcpts = len(ok_set) + len(d_set) + len(f_set)
    out = []

    def check(name, good, detail):
        out.append((name, bool(good), detail))

    accepted, deferred, refused = dump["accepted_by"], dump["deferred_by"], dump["refused_by"]
    named, dsn_to = dump["dsn_named_by"], dump["dsn_to_by"]
    check("sender: every message accepted (250 after DATA)", sent == messages, f"{sent} of {messages}")
    check("plan: 1 in 50 recipients fails, 1 in 20 is deferred once",
          n_rcpts % 100 != 0 or (len(f_set) * 50 == n_rcpts and len(d_set) * 20 == n_rcpts),
          f"{n_rcpts} recipients: {len(f_set)} to fail, {len(d_set)} to defer, {len(ok_set)} plain")
    check("MX accepted == sent - failed (recipients, each exactly once)",
          set(accepted) == ok_set | d_set and all(v == 1 for v in accepted.values()),
          f"{sum(accepted.values())} accepted, {len(accepted)} distinct, want {n_rcpts - len(f_set)}; "
          f"twice: {sum(1 for v in accepted.values() if v > 1)}")
    check("MX refused == failed (550 once each, never retried)",
          set(refused) == f_set and all(v == 1 for v in refused.values()),
          f"{sum(refused.values())} refusals of {len(refused)} addresses, want {len(f_set)}")
    check("deferred once, then delivered == 1 in 20",
          set(deferred) == d_set and all(v == 1 for v in deferred.values()) and d_set <= set(accepted),
          f"{sum(deferred.values())} deferrals of {len(deferred)} addresses, "
          f"{len(d_set & set(accepted))} later delivered, want {len(d_set)}")
    check("DSNs: one per failed recipient, to the sender",
          set(named) == f_set and all(v == 1 for v in named.values()) and set(dsn_to) == {SENDER}
          and dump["dsn_messages"] == len(f_set),
          f"{dump['dsn_messages']} DSN messages naming {sum(named.values())} recipients "
          f"({len(named)} distinct), to {sorted(dsn_to)}, want {len(f_set)}")
    check("MX saw nothing outside the plan", dump["unexpected"] == 0,
          f"{dump['unexpected']}: {dump['unexpected_first'][:5]}")

    if messages <= CLI_LIST_MAX:
        listed, source = baton_json(baton, config, "message", "list", "--limit", str(10 * messages + 1000)), "message list"
    else:
        listed, source = ledger_messages(data_dir), "ledger tables"
    ours = [m for m in listed if m.get("from", "").lower() == SENDER]
    others = [m for m in listed if m.get("from", "").lower() != SENDER]
    states = {}
    for m in ours:
        for r in m["recipients"]:
            a = r["address"].lower()
            states[a] = (r["status"], r["attempts"])
    wrong = [a for a in ok_set if states.get(a) != ("delivered", 1)]
    wrong += [a for a in d_set if states.get(a) != ("delivered", 2)]
    wrong += [a for a in f_set if states.get(a) != ("failed", 1)]
    check(f"ledger ({source}): every message listed once",
          len(ours) == messages and len({m["id"] for m in ours}) == messages,
          f"{len(ours)} listed ({len({m['id'] for m in ours})} ids), want {messages}")
    check(f"ledger ({source}): every recipient final as planned (delivered, delivered after 2 attempts, failed)",
          not wrong and len(states) == n_rcpts,
          f"{len(states)} recipients, {len(wrong)} not as planned: "
          + ", ".join(f"{a}={states.get(a)}" for a in sorted(wrong)[:5]))
    msg_states = Counter(m["state"] for m in ours)
    want_states = Counter()
    for i in range(messages):
        ks = [kind(a) for a in recipients(i)]
        want_states["failed" if all(k == "failed" for k in ks) else "partial" if "failed" in ks else "delivered"] += 1
    check(f"ledger ({source}): message states", msg_states == want_states,
          f"{dict(msg_states)}, want {dict(want_states)}")
    dsns = [m for m in others if [r["address"].lower() for r in m["recipients"]] == [SENDER]]
    check(f"ledger ({source}): the DSNs, delivered to the sender",
          len(dsns) == len(others) == len(f_set) and all(m["state"] == "delivered" for m in dsns),
          f"{len(others)} other messages, {len(dsns)} to {SENDER}, "
          f"{sum(m['state'] == 'delivered' for m in dsns)} delivered, want {len(f_set)}")

    bounces = baton_json(baton, config, "bounce", "list")
    b_set = Counter(b["recipient"].lower() for b in bounces)
    check("bounce records == failed",
          set(b_set) == f_set and all(v == 1 for v in b_set.values())
          and all(b.get("hard") and b.get("code") == 550 for b in bounces),
          f"{len(bounces)} records ({len(b_set)} recipients), want {len(f_set)} hard 550s")
    supp = baton_json(baton, config, "suppression", "list")
    s_set = {s["key"].split("/", 1)[-1].lower() for s in supp}
    check("suppression list == failed (hard bounces)", s_set == f_set and len(supp) == len(f_set),
          f"{len(supp)} entries, want {len(f_set)}")
    rows = queue_rows(data_dir)
    check("queues empty, dead-letter queues included", sum(rows.values()) == 0, f"{rows or 'none'}")
    return out


def rss_figures(samples, finals):
    """VmRSS (MB) after warm-up (the first sample once 10 % of the recipients are final at
    the MX), the largest after it, and at the end (the relay idle)."""
    rss = [(t, kb, done) for t, kb, done in samples if kb]
    if not rss:
        return None
    warm = next(((t, kb) for t, kb, done in rss if done >= finals / 10), rss[0][:2])
    after = [kb for t, kb, _ in rss if t >= warm[0]]
    return {
        "warm_mb": warm[1] / 1024,
        "warm_at_s": warm[0],
        "max_after_warm_mb": max(after) / 1024,
        "end_mb": rss[-1][1] / 1024,
        "growth_mb": (rss[-1][1] - warm[1]) / 1024,
        "peak_growth_mb": (max(after) - warm[1]) / 1024,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mx")
    m.add_argument("--host", default="127.0.0.1")
    m.add_argument("--port", type=int, required=True)
    d = sub.add_parser("drive")
    d.add_argument("--relay-port", type=int, required=True)
    d.add_argument("--mx-port", type=int, required=True)
    d.add_argument("--messages", type=int, default=1000)
    d.add_argument("--connections", type=int, default=8)
    d.add_argument("--size", type=int, default=1024)
    d.add_argument("--backlog", type=int, default=4000)
    d.add_argument("--timeout", type=float, default=3600)
    d.add_argument("--baton", required=True)
    d.add_argument("--config", required=True)
    d.add_argument("--data-dir", required=True)
    d.add_argument("--pid", type=int)
    d.add_argument("--json", help="write the figures and checks here")
    a = p.parse_args()
    if a.cmd == "mx":
        asyncio.run(run_mx(a.host, a.port))
        return 0

    def say(text):
        print(text, flush=True)

    run = asyncio.run(soak(("127.0.0.1", a.relay_port), ("127.0.0.1", a.mx_port), a.messages, a.data_dir,
                           pid=a.pid, connections=a.connections, size=a.size, backlog=a.backlog,
                           timeout=a.timeout, progress=say))
    dump = asyncio.run(mx_command("127.0.0.1", a.mx_port, "XDUMP"))
    results = checks(a.messages, dump, a.baton, a.config, a.data_dir, run["sent"])
    want = plan(a.messages)
    finals = sum(len(v) for v in want.values())
    rss = rss_figures(run["samples"], finals)
    if run["seconds_to_mx"]:
        say(f"relayed: {a.messages} messages ({finals} recipients) in {run['seconds_to_mx']:.1f} s: "
            f"{a.messages / run['seconds_to_mx']:.0f} msgs/s; relay idle after {run['seconds_to_idle'] or 0:.1f} s")
        if run["cpu_seconds"] is not None:
            say(f"relay CPU: {run['cpu_seconds']:.1f} s, {1000 * run['cpu_seconds'] / a.messages:.2f} ms per message")
    else:
        say(f"TIMED OUT after {a.timeout:.0f} s; MX: {run['mx']}; queues: {run['queues_at_end']}")
    if rss:
        say(f"VmRSS: {rss['warm_mb']:.1f} MB after warm-up (at {rss['warm_at_s']:.0f} s), "
            f"max after it {rss['max_after_warm_mb']:.1f} MB, at the end {rss['end_mb']:.1f} MB: "
            f"growth {rss['growth_mb']:+.1f} MB (peak {rss['peak_growth_mb']:+.1f} MB)")
    for name, good, detail in results:
        say(f"{'PASS' if good else 'FAIL'}  {name}: {detail}")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "messages": a.messages, "recipients": finals, "seconds_to_mx": run["seconds_to_mx"],
            "seconds_to_idle": run["seconds_to_idle"], "cpu_seconds": run["cpu_seconds"], "rss": rss, "mx": run["mx"],
            "checks": [{"name": n, "ok": g, "detail": t} for n, g, t in results],
            "samples": run["samples"],
        }))
    return 0 if all(g for _, g, _ in results) and not run["timed_out"] else 1


if __name__ == "__main__":
    sys.exit(main())
