"""A raw next-hop SMTP server for e2e tests: it logs every line it receives (commands and
message lines alike, as bytes, decrypted after STARTTLS), offers PIPELINING and DSN, and is
the witness that nothing we did not mean to send ever reaches the next hop.

Options: `refuse` recipients whose line contains one of these strings (550 5.1.1); `cert`
(crt, key) offers STARTTLS; `auth` (user, password) offers AUTH PLAIN LOGIN and refuses MAIL
before a successful AUTH PLAIN."""

import base64
import socket
import ssl
import threading
import time

from ports import free_port


class NextHop:
    def __init__(self, ip="127.0.0.1", refuse=(), cert=None, auth=None):
        self.ip = ip
        self.port = free_port((ip,))
        self.refuse = tuple(refuse)
        self.auth = auth
        self.tls = None
        if cert:
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(*cert)
        self.lines = []  # every line received, CRLF stripped
        self.tls_lines = []  # (over TLS?, line) for the same lines
        self.messages = []  # (MAIL line, [accepted RCPT lines], data bytes)
        self.lock = threading.Lock()
        self.sock = socket.create_server((ip, self.port))
        self.sock.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def target(self):
        return f"{self.ip}:{self.port}"

    def _serve(self):
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _log(self, tls, line):
        with self.lock:
            self.lines.append(line)
            self.tls_lines.append((tls, line))

    def _ehlo(self, tls):
        lines = ["nexthop.test", "PIPELINING", "8BITMIME", "DSN"]
        if self.tls and not tls:
            lines.append("STARTTLS")
        if self.auth:
            lines.append("AUTH PLAIN LOGIN")
        return "\r\n".join(f"250-{l}" for l in lines[:-1]) + f"\r\n250 {lines[-1]}"

    def _session(self, conn):
        conn.settimeout(30)
        f = conn.makefile("rb")
        tls = authed = False

        def send(text):
            conn.sendall(text.encode() + b"\r\n")

        try:
            send("220 nexthop.test ESMTP")
            mail, rcpts = None, []
            while True:
                raw = f.readline(100000)
                if not raw:
                    return
                line = raw.rstrip(b"\r\n")
                self._log(tls, line)
                verb = line.split(b" ")[0].upper()
                if verb in (b"EHLO", b"HELO"):
                    send(self._ehlo(tls))
                elif verb == b"STARTTLS" and self.tls and not tls:
                    send("220 2.0.0 go ahead")
                    conn = self.tls.wrap_socket(conn, server_side=True)
                    f, tls = conn.makefile("rb"), True
                elif verb == b"AUTH" and self.auth:
                    words = line.split(b" ")
                    token = words[2] if len(words) > 2 else b""
                    user, password = self.auth
                    authed = base64.b64decode(token) == f"\0{user}\0{password}".encode()
                    send("235 2.7.0 ok" if authed else "535 5.7.8 no")
                elif verb == b"MAIL":
                    if self.auth and not authed:
                        send("530 5.7.0 Authentication required")
                        continue
                    mail, rcpts = line, []
                    send("250 2.1.0 Ok")
                elif verb == b"RCPT":
                    if any(r.encode() in line for r in self.refuse):
                        send("550 5.1.1 No such user")
                    else:
                        rcpts.append(line)
                        send("250 2.1.5 Ok")
                elif verb == b"DATA":
                    if not rcpts:
                        send("554 5.5.1 No valid recipients")
                        continue
                    send("354 go ahead")
                    data = []
                    while True:
                        raw = f.readline(100000)
                        if not raw:
                            return
                        self._log(tls, raw.rstrip(b"\r\n"))
                        if raw == b".\r\n":
                            break
                        data.append(raw)
                    with self.lock:
                        self.messages.append((mail, rcpts, b"".join(data)))
                    send("250 2.0.0 Ok: queued")
                elif verb == b"RSET":
                    mail, rcpts = None, []
                    send("250 2.0.0 Ok")
                elif verb == b"QUIT":
                    send("221 2.0.0 Bye")
                    return
                else:
                    send("502 5.5.1 Not implemented")
        except (OSError, ssl.SSLError):
            return
        finally:
            conn.close()

    def commands(self):
        """The command lines received (outside DATA), in order."""
        with self.lock:
            lines = list(self.lines)
        out, in_data = [], False
        for line in lines:
            if in_data:
                in_data = line != b"."
                continue
            out.append(line)
            in_data = line.upper() == b"DATA"
        return out

    def auth_lines(self):
        """(over TLS?, line) for every AUTH command received."""
        with self.lock:
            return [(tls, l) for tls, l in self.tls_lines if l.upper().startswith(b"AUTH")]

    def wait_messages(self, n, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if len(self.messages) >= n:
                    return list(self.messages)
            time.sleep(0.1)
        raise AssertionError(f"expected {n} message(s) at the next hop:\n{self.commands()}")

    def stop(self):
        self.running = False
        self.sock.close()
        self.thread.join(timeout=5)
