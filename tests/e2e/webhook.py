"""An HTTPS webhook receiver for event destinations: records every call (headers and body),
answers 500 to the first `fail_first` calls, and checks Baton-Signature independently of
Baton (Python's hmac, not ring)."""

import hashlib
import hmac
import http.server
import ssl
import threading
import time


def verify(secret, headers, body, tolerance_s=300):
    """True when Baton-Signature is HMAC-SHA256(secret, "<t>.<event id>.<body>") with a recent t."""
    parts = dict(p.split("=", 1) for p in headers.get("baton-signature", "").split(","))
    t, given = parts.get("t", ""), parts.get("v1", "")
    if not t.isdigit() or abs(time.time() - int(t)) > tolerance_s:
        return False
    event_id = headers.get("baton-event-id", "")
    want = hmac.new(secret.encode(), f"{t}.{event_id}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, given)


class Receiver:
    def __init__(self, cert, key, fail_first=0):
        self.calls = []
        self.fail_first = fail_first
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                # Header names are case-insensitive: kept lower-case.
                receiver.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                failing = len(receiver.calls) <= receiver.fail_first
                self.send_response(500 if failing else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/hooks/baton?token=t0k"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
