"""DKIM records as `baton domain add` prints them, published the way DNS would carry them, and
our signatures checked by two independent verifiers: OpenDKIM (`opendkim -t` with the records
in a `TestPublicKeys` file) and dkimpy."""

import base64
import re
import shutil
import subprocess
from types import SimpleNamespace

import dkim
import pytest

from mailnet import Sink, TestDns, free_port_for

MX_IP = "127.0.0.30"
# SubjectPublicKeyInfo of an RSA-2048 key up to the PKCS#1 key it wraps: SEQUENCE,
# rsaEncryption + NULL, BIT STRING with no unused bits.
SPKI_RSA_2048_PREFIX = bytes.fromhex("30820122300d06092a864886f70d01010105000382010f00")
OPENDKIM = shutil.which("opendkim") or "/usr/sbin/opendkim"


def printed_records(out):
    """{name: [character-strings]} from the zone-file lines `name  TXT  "a" "b"`."""
    records = {}
    for name, rest in re.findall(r"^(\S+)\s+TXT\s+(\".*\")\s*$", out, re.M):
        records[name] = re.findall(r'"((?:[^"\\]|\\.)*)"', rest)
    return records


def dns_value(strings):
    """What a resolver hands a verifier: the character-strings concatenated (RFC 6376 3.6.2.2)."""
    return "".join(strings)


def dkim_records(records):
    return {n: dns_value(s) for n, s in records.items() if "._domainkey." in n}


def tag(value, name):
    return dict(t.strip().split("=", 1) for t in value.split(";") if "=" in t)[name]


def check_records(out, domain, expect_dkim):
    records = printed_records(out)
    for name, strings in records.items():
        for s in strings:
            assert len(s.encode()) <= 255, f"{name}: a {len(s)}-octet string"
    keys = dkim_records(records)
    assert len(keys) == expect_dkim, out
    for name, value in keys.items():
        assert name.endswith(f"._domainkey.{domain}")
        der = base64.b64decode(tag(value, "p"))
        if tag(value, "k") == "rsa":
            assert len(records[name]) >= 2, "an RSA-2048 record is longer than one string"
            # What opendkim-genkey prints (p=MIIBIj...), not a bare PKCS#1 key (p=MIIBCg...).
            assert der.startswith(SPKI_RSA_2048_PREFIX), value
        else:
            assert tag(value, "k") == "ed25519" and len(der) == 32, value
    return keys


def test_domain_add_and_rotate_print_usable_records(spawn_relay):
    relay = spawn_relay(start=False)
    out = relay.cli("domain", "add", "acme.test", "--tenant", "acme").stdout
    first = check_records(out, "acme.test", 2)
    # Running it again prints the stored keys' records, the same ones.
    assert check_records(relay.cli("domain", "add", "acme.test", "--tenant", "acme").stdout, "acme.test", 2) == first
    out = relay.cli("domain", "rotate-dkim", "acme.test").stdout
    rotated = check_records(out, "acme.test", 4)
    assert set(first) < set(rotated)


def test_the_relays_own_keys_can_be_rotated_without_a_tenant(spawn_relay):
    relay = spawn_relay()  # the first start makes the hostname's pair (DSNs are signed with it)
    relay.stop()
    out = relay.cli("domain", "rotate-dkim", "relay.test").stdout
    check_records(out, "relay.test", 4)
    refused = relay.cli("domain", "rotate-dkim", "other.test", check=False)
    assert refused.returncode == 1 and "not registered" in refused.stderr, refused.stderr


@pytest.fixture
def signed(spawn_relay, tmp_path):
    """A message signed by the relay as the MX received it (`msg`), the DKIM records as
    `domain add` printed them (`records`: name -> value), the test DNS and the relay."""
    dns = TestDns()
    port = free_port_for([MX_IP])
    sink = Sink(MX_IP, port).start()
    dns.mx("example.org", (10, "mx.example.org"))
    dns.a("mx.example.org", MX_IP)
    try:
        relay = spawn_relay(
            **{
                "pipeline.run_stages": True,
                "delivery.port": port,
                "delivery.nameservers": [dns.addr],
                "delivery.connect_timeout": "2s",
            }
        )
        relay.add_user("alice", "acme", "s3cret")
        out = relay.cli("domain", "add", "acme.test", "--tenant", "acme").stdout
        records = dkim_records(printed_records(out))
        for name, value in records.items():
            dns.txt(name, value)
        r = subprocess.run(
            [
                "swaks", "--server", "%s:%d" % relay.addr("submission"), "--tls", "--auth", "PLAIN",
                "--auth-user", "alice", "--auth-password", "s3cret", "--from", "news@acme.test",
                "--to", "bob@example.org", "--h-From", "news@acme.test", "--h-Subject", "two verifiers",
                "--body", "Checked by OpenDKIM and dkimpy.\n",
            ],
            capture_output=True, text=True, timeout=60,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        [msg] = sink.wait_messages(1)
        yield SimpleNamespace(msg=msg, records=records, dns=dns, relay=relay)
    finally:
        sink.cleanup()
        dns.stop()


def split_signatures(msg):
    """One copy of `msg` per DKIM-Signature field, keeping only that one, keyed by a=."""
    nl = b"\r\n" if b"\r\n" in msg else b"\n"  # smtp-sink stores LF lines
    head, sep, body = msg.partition(nl + nl)
    fields = re.split(nl + rb"(?=[^ \t])", head)
    sigs = [f for f in fields if f.lower().startswith(b"dkim-signature:")]
    copies = {}
    for sig in sigs:
        algo = re.search(rb"\ba=([\w-]+)", sig).group(1).decode()
        kept = [f for f in fields if f is sig or f not in sigs]
        copies[algo] = nl.join(kept) + sep + body
    return copies


def opendkim_verify(tmp_path, message, records):
    """OpenDKIM's verdict on `message` with `records` as its DNS: the line it logs (to
    standard output in test mode without syslog)."""
    keys = tmp_path / "test-public-keys"
    keys.write_text("".join(f"{name} {value}\n" for name, value in records.items()))
    conf = tmp_path / "opendkim.conf"
    conf.write_text(f"Mode v\nSyslog no\nTestPublicKeys {keys}\n")
    path = tmp_path / "message.eml"
    path.write_bytes(message)
    r = subprocess.run([OPENDKIM, "-x", str(conf), "-t", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    return (r.stdout + r.stderr).strip()


def test_opendkim_and_dkimpy_verify_rsa_and_ed25519(signed, tmp_path):
    msg, records, dns = signed.msg, signed.records, signed.dns
    copies = split_signatures(msg)
    assert set(copies) == {"rsa-sha256", "ed25519-sha256"}, msg[:2000]
    for algo, message in copies.items():
        selector = re.search(rb"\bs=([\w.-]+)", message.partition(b"DKIM-Signature:")[2]).group(1).decode()
        verdict = opendkim_verify(tmp_path, message, records)
        assert f"(s={selector}, d=acme.test" in verdict and verdict.endswith("succeeded"), (algo, verdict)

        def dnsfunc(name, timeout=5):
            answers = dns.lookup_txt(name.decode() if isinstance(name, bytes) else name)
            return answers[0] if answers else None

        assert dkim.DKIM(message).verify(dnsfunc=dnsfunc), f"dkimpy: {algo}"


def test_opendkim_rejects_the_old_pkcs1_rsa_record(signed, tmp_path):
    """The control: the record form printed before (bare PKCS#1) fails in OpenDKIM, so the
    test above would catch a return to it."""
    msg, records = signed.msg, signed.records
    [rsa_name] = [n for n, v in records.items() if tag(v, "k") == "rsa"]
    spki = base64.b64decode(tag(records[rsa_name], "p"))
    pkcs1 = base64.b64encode(spki[len(SPKI_RSA_2048_PREFIX) :]).decode()
    assert pkcs1.startswith("MIIBCg")
    old = {rsa_name: f"v=DKIM1; k=rsa; p={pkcs1}"}
    verdict = opendkim_verify(tmp_path, split_signatures(msg)["rsa-sha256"], old)
    assert "unable to apply public key" in verdict, verdict

