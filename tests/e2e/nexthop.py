"""A raw next-hop SMTP server for e2e tests: it logs every line it receives (commands and
message lines alike, as bytes), offers PIPELINING and DSN, and refuses recipients whose
address contains one of `refuse` with 550 5.1.1. It is the witness that nothing we did
not mean to send ever reaches the next hop."""

import socket
import threading
import time

from ports import free_port


class NextHop:
    def __init__(self, ip="127.0.0.1", refuse=()):
        self.ip = ip
        self.port = free_port((ip,))
        self.refuse = tuple(refuse)
        self.lines = []  # every line received, CRLF stripped
        self.messages = []  # (mail_from_line, [rcpt lines], data bytes)
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

    def _session(self, conn):
        conn.settimeout(30)
        f = conn.makefile("rb")
        send = lambda s: conn.sendall(s.encode() + b"\r\n")
        try:
            send("220 nexthop.test ESMTP")
            mail, rcpts = None, []
            while True:
                raw = f.readline(100000)
                if not raw:
                    return
                line = raw.rstrip(b"\r\n")
                with self.lock:
                    self.lines.append(line)
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    send("250-nexthop.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 DSN")
                elif verb == b"MAIL":
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
                        with self.lock:
                            self.lines.append(raw.rstrip(b"\r\n"))
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
        except OSError:
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
            if line.upper() == b"DATA":
                in_data = True
        return out

    def wait_messages(self, n, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if len(self.messages) >= n:
                    return list(self.messages)
            time.sleep(0.1)
        raise AssertionError(f"expected {n} messages at the next hop, got {len(self.messages)}")

    def stop(self):
        self.running = False
        self.sock.close()
        self.thread.join(timeout=5)
