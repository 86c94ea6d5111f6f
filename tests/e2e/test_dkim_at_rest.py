"""DKIM private keys are encrypted at rest on the embedded backend: the ledger holds them
sealed under the data directory's master key, signing still works, and a wrong master key is
a clear error."""

import base64
import re
import sqlite3

from test_dkim_records import signed, split_signatures  # noqa: F401  (fixture)

SEALED = b"baton-sealed:v1:"


def stored_dkim_values(data_dir):
    with sqlite3.connect(f"file:{data_dir / 'baton.db'}?mode=ro", uri=True) as db:
        return dict(db.execute("SELECT key, value FROM ledger WHERE tbl = 'dkim_keys'").fetchall())


def looks_like_a_private_key(value: bytes):
    """PEM, or DER in base64 (RSA PKCS#1 `MII...`, Ed25519 PKCS#8 `MC4CAQAw...`), or raw DER."""
    return (
        b"-----BEGIN" in value
        or b"PRIVATE KEY" in value
        or b"private_key" in value
        # A base64 block starts at the value's start or after a non-base64 byte: "MII" inside
        # base64 of random (sealed) bytes is chance, about 1 in 160 per kilobyte.
        or re.search(rb"(?:^|[^A-Za-z0-9+/])MII[A-Za-z0-9+/]{40}", value) is not None
        or b"MC4CAQAwBQYDK2Vw" in value
        or value.startswith(b"\x30\x82")
        or b"\x02\x01\x00\x02\x82\x01\x01\x00" in value  # RSA-2048 PKCS#1: version 0, modulus
    )


def test_ledger_holds_dkim_keys_sealed_and_signing_works(signed):
    relay = signed.relay
    stored = stored_dkim_values(relay.data_dir)
    # acme's pair and the pair the relay made for its hostname (relay.test) at first start.
    domains = sorted(k.split("/")[0] for k in stored)
    assert domains == ["acme.test"] * 2 + ["relay.test"] * 2, stored.keys()
    for key, value in stored.items():
        assert value.startswith(SEALED), (key, value[:40])
        assert not looks_like_a_private_key(value), key
        assert not looks_like_a_private_key(base64.b64encode(value)), key
    key_file = relay.data_dir / "master.key"
    assert key_file.stat().st_size == 32 and key_file.stat().st_mode & 0o077 == 0
    # The message the MX received carries both signatures (verified in test_dkim_records).
    assert set(split_signatures(signed.msg)) == {"rsa-sha256", "ed25519-sha256"}


def test_wrong_master_key_fails_clearly(signed):
    relay = signed.relay
    relay.stop()
    key_file = relay.data_dir / "master.key"
    key_file.write_bytes(bytes(32))
    r = relay.cli("domain", "rotate-dkim", "acme.test", check=False)
    assert r.returncode != 0
    assert "master key" in r.stderr and str(key_file) in r.stderr and "dkim_keys/acme.test/" in r.stderr, r.stderr
    # A file that is not a key at all.
    key_file.write_bytes(b"short")
    r = relay.cli("domain", "add", "acme.test", "--tenant", "acme", check=False)
    assert r.returncode != 0 and "master key is 32 bytes" in r.stderr, r.stderr


def test_missing_master_key_is_not_silently_replaced(signed):
    relay = signed.relay
    relay.stop()
    (relay.data_dir / "master.key").unlink()
    r = relay.cli("domain", "add", "acme.test", "--tenant", "acme", check=False)
    assert r.returncode != 0 and "master key is missing" in r.stderr, r.stderr
    assert not (relay.data_dir / "master.key").exists()
    assert all(v.startswith(SEALED) for v in stored_dkim_values(relay.data_dir).values())
