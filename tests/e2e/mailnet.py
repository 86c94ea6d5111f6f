"""A small mail network for pipeline tests: an in-process DNS server (dnslib) answering MX, A
and TXT from a dict, and Postfix smtp-sink processes as receiving MXs on 127.0.0.x."""

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from dnslib import AAAA, MX, QTYPE, RR, TXT, A, DNSRecord
from dnslib.server import BaseResolver, DNSServer
from ports import free_port
from procs import stop_process


class ZoneResolver(BaseResolver):
    def __init__(self):
        self.records = {}  # (name, qtype) -> [rdata]
        self.lock = threading.Lock()

    def add(self, name, qtype, rdata):
        key = (name.rstrip(".").lower() + ".", qtype)
        with self.lock:
            self.records.setdefault(key, []).append(rdata)

    def resolve(self, request, handler):
        reply = request.reply()
        qname = str(request.q.qname).lower()
        qtype = QTYPE[request.q.qtype]
        with self.lock:
            answers = list(self.records.get((qname, qtype), []))
            exists = any(name == qname for name, _ in self.records)
        for rdata in answers:
            reply.add_answer(RR(qname, getattr(QTYPE, qtype), rdata=rdata, ttl=1))
        if not answers and not exists:
            reply.header.rcode = 3  # NXDOMAIN
        return reply


class TestDns:
    __test__ = False  # a fixture class, not a test
    """DNS on 127.0.0.1:<free port>, UDP and TCP."""

    def __init__(self):
        self.zone = ZoneResolver()
        self.port = free_port(udp=True)
        self.udp = DNSServer(self.zone, port=self.port, address="127.0.0.1")
        self.tcp = DNSServer(self.zone, port=self.port, address="127.0.0.1", tcp=True)
        self.udp.start_thread()
        self.tcp.start_thread()

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def mx(self, domain, *hosts):
        """hosts: (preference, name) pairs; (0, '.') is a null MX."""
        for pref, host in hosts:
            self.zone.add(domain, "MX", MX(host if host != "." else ".", pref))

    def a(self, name, ip):
        self.zone.add(name, "A", A(ip))

    def txt(self, name, value):
        # Long TXT values go out as several 255-octet strings, as real zones publish them.
        chunks = [value[i : i + 255] for i in range(0, len(value), 255)]
        self.zone.add(name, "TXT", TXT(chunks))

    def lookup_txt(self, name):
        q = DNSRecord.question(name, "TXT")
        answer = DNSRecord.parse(q.send("127.0.0.1", self.port, timeout=2))
        return [b"".join(rr.rdata.data) for rr in answer.rr]

    def stop(self):
        self.udp.stop()
        self.tcp.stop()


class Sink:
    """Postfix's smtp-sink on ip:port, dumping each message to a file; `flags` script failures
    (e.g. ["-r", "rcpt"] soft-rejects RCPT, ["-f", "rcpt"] hard-rejects it)."""

    def __init__(self, ip, port, flags=()):
        self.ip, self.port, self.flags = ip, port, list(flags)
        self.dir = Path(tempfile.mkdtemp(prefix="baton-sink-"))
        self.dir.chmod(0o777)
        self.proc = None

    def start(self):
        exe = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
        self.proc = subprocess.Popen(
            [exe, "-u", "postfix", "-d", str(self.dir) + "/%M.", *self.flags, f"{self.ip}:{self.port}", "100"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection((self.ip, self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"smtp-sink did not listen on {self.ip}:{self.port}")

    def restart(self, flags=()):
        self.stop()
        self.flags = list(flags)
        return self.start()

    def _being_written(self):
        """The files smtp-sink has open: it writes a message's file as DATA arrives and closes
        it at the end, so an open file is a message not yet whole (or even empty)."""
        fds = Path(f"/proc/{self.proc.pid}/fd") if self.proc else None
        try:
            return {os.readlink(fds / fd) for fd in os.listdir(fds)} if fds else set()
        except OSError:  # the sink has exited: nothing is being written
            return set()

    def messages(self):
        """The messages received whole, in the order of their files' names."""
        files = [p for p in sorted(self.dir.iterdir()) if p.is_file()]
        open_now = self._being_written()
        return [p.read_bytes() for p in files if str(p) not in open_now]

    def wait_messages(self, n, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = self.messages()
            if len(got) >= n:
                return got
            time.sleep(0.2)
        return self.messages()

    def stop(self):
        stop_process(self.proc, timeout=10)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def free_port_for(ips):
    """A TCP port free on every one of `ips`."""
    return free_port(ips=tuple(ips))
