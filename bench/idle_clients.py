#!/usr/bin/env python3
"""Open N idle plaintext SMTP sessions to 127.0.0.1:PORT and hold them.

Each session connects, reads the 220 greeting and (unless --no-ehlo) sends
EHLO and reads the full 250 reply, then stays idle. When all sessions are
established the script writes "READY <n>" to --ready-file (and stdout), then
holds the connections until SIGTERM/SIGINT or --hold seconds pass. Sessions
that fail are reported; the script exits non-zero if any did.
"""
import argparse
import asyncio
import signal
import sys


async def read_reply(reader, timeout):
    """Read one (possibly multi-line) SMTP reply; return its lines."""
    lines = []
    while True:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if not line:
            raise ConnectionError("connection closed by server")
        lines.append(line.decode("latin-1").rstrip("\r\n"))
        if len(line) < 4 or line[3:4] != b"-":
            return lines


async def open_session(port, ehlo, timeout):
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    greeting = await read_reply(reader, timeout)
    if not greeting[0].startswith("220"):
        raise ConnectionError(f"greeting: {greeting}")
    if ehlo:
        writer.write(b"EHLO idle.bench.localhost\r\n")
        await writer.drain()
        reply = await read_reply(reader, timeout)
        if not reply[-1].startswith("250"):
            raise ConnectionError(f"EHLO: {reply}")
    return reader, writer


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("-n", "--sessions", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=100, help="connections opened concurrently")
    ap.add_argument("--no-ehlo", action="store_true")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--hold", type=float, default=600.0, help="give up holding after this many seconds")
    ap.add_argument("--ready-file")
    args = ap.parse_args()

    sessions, errors = [], []
    for start in range(0, args.sessions, args.batch):
        n = min(args.batch, args.sessions - start)
        results = await asyncio.gather(
            *(open_session(args.port, not args.no_ehlo, args.timeout) for _ in range(n)),
            return_exceptions=True,
        )
        for r in results:
            (errors if isinstance(r, BaseException) else sessions).append(r)

    msg = f"READY {len(sessions)} failed {len(errors)}"
    print(msg, flush=True)
    for e in errors[:5]:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    if args.ready_file:
        with open(args.ready_file, "w") as f:
            f.write(msg + "\n")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    # Watch for sessions the server closes while we hold them.
    async def watch(reader):
        data = await reader.read(4096)
        return data

    watchers = [asyncio.ensure_future(watch(r)) for r, _ in sessions]
    try:
        await asyncio.wait_for(stop.wait(), args.hold)
    except asyncio.TimeoutError:
        pass
    closed = sum(1 for w in watchers if w.done())
    if closed:
        sample = next((w.result() for w in watchers if w.done() and not w.exception()), b"")
        print(f"warning: server closed {closed} idle sessions (e.g. {sample[:80]!r})", file=sys.stderr)
    for w in watchers:
        w.cancel()
    for _, writer in sessions:
        writer.close()
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
