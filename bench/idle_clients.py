#!/usr/bin/env python3
"""Open N idle SMTP sessions to 127.0.0.1 and hold them.

Each session connects, reads the 220 greeting and (unless --no-ehlo) sends
EHLO and reads the full 250 reply, then stays idle. With --tls the sessions
complete a TLS handshake first (any certificate is accepted: the bench uses a
self-signed one): "starttls" on --port (greeting, EHLO, STARTTLS, handshake,
EHLO again), "implicit" on --tls-port (handshake, greeting, EHLO), "both"
alternates the two (even sessions STARTTLS, odd implicit). When all sessions are
established the script writes "READY <n>" to --ready-file (and stdout), then
holds the connections until SIGTERM/SIGINT or --hold seconds pass. Sessions
that fail are reported; the script exits non-zero if any did.
"""
import argparse
import asyncio
import signal
import ssl
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


def client_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def command(reader, writer, line, expect, timeout):
    writer.write(line + b"\r\n")
    await writer.drain()
    reply = await read_reply(reader, timeout)
    if not reply[-1].startswith(expect):
        raise ConnectionError(f"{line.decode()}: {reply}")
    return reply


async def open_session(port, ehlo, timeout, tls=None, ctx=None):
    """tls: None (plaintext), "starttls" or "implicit" (port is then the implicit-TLS port)."""
    conn = asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx if tls == "implicit" else None,
        server_hostname="baton.bench.localhost" if tls == "implicit" else None)
    reader, writer = await asyncio.wait_for(conn, timeout)
    greeting = await read_reply(reader, timeout)
    if not greeting[0].startswith("220"):
        raise ConnectionError(f"greeting: {greeting}")
    if tls == "starttls":
        reply = await command(reader, writer, b"EHLO idle.bench.localhost", "250", timeout)
        if not any("STARTTLS" in line.upper() for line in reply):
            raise ConnectionError(f"no STARTTLS in EHLO reply: {reply}")
        await command(reader, writer, b"STARTTLS", "220", timeout)
        await asyncio.wait_for(
            writer.start_tls(ctx, server_hostname="baton.bench.localhost"), timeout)
    if ehlo:
        await command(reader, writer, b"EHLO idle.bench.localhost", "250", timeout)
    if tls and writer.get_extra_info("ssl_object") is None:
        raise ConnectionError("no TLS after the handshake")
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
    ap.add_argument("--tls", choices=["none", "starttls", "implicit", "both"], default="none")
    ap.add_argument("--tls-port", type=int, help="implicit-TLS port (--tls implicit or both)")
    args = ap.parse_args()
    if args.tls in ("implicit", "both") and not args.tls_port:
        ap.error("--tls implicit/both needs --tls-port")
    ctx = client_context() if args.tls != "none" else None

    def session(i):
        mode = {"none": None, "starttls": "starttls", "implicit": "implicit"}.get(args.tls)
        if args.tls == "both":
            mode = "starttls" if i % 2 == 0 else "implicit"
        port = args.tls_port if mode == "implicit" else args.port
        return open_session(port, not args.no_ehlo, args.timeout, mode, ctx)

    sessions, errors = [], []
    for start in range(0, args.sessions, args.batch):
        n = min(args.batch, args.sessions - start)
        results = await asyncio.gather(
            *(session(start + i) for i in range(n)),
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
