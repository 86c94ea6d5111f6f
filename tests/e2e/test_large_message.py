"""A 50 MB message streams through: it is stored whole while the relay's memory stays flat."""

import smtplib

from conftest import client_tls


def test_fifty_megabyte_message_is_streamed_not_buffered(tenant_relay):
    line = ("0123456789" * 9 + "abcdefgh") + "\r\n"  # 100 octets per line
    body_lines = (50 * 1000 * 1000 - 1000) // len(line)
    message = "From: news@acme.test\r\nSubject: big\r\n\r\n" + line * body_lines
    rss_before = tenant_relay.peak_rss_kb()
    with smtplib.SMTP(*tenant_relay.addr("submission"), timeout=120) as s:
        s.starttls(context=client_tls())
        s.ehlo()
        s.login("alice", "s3cret")
        assert s.sendmail("news@acme.test", ["bob@example.org"], message) == {}
    [m] = tenant_relay.queue_list()
    assert m["size"] > len(message) > 49_000_000
    stored = tenant_relay.message(m["id"])
    assert stored.endswith(message.encode())
    peak_growth_mb = (tenant_relay.peak_rss_kb() - rss_before) / 1024
    # Buffers are bounded (64 KiB reads, 256 KiB file writes): a whole-message buffer
    # would add 50 MB or more.
    assert peak_growth_mb < 16, f"peak RSS grew by {peak_growth_mb:.1f} MB for a 50 MB message"
    print(f"peak RSS growth for a 50 MB message: {peak_growth_mb:.1f} MB")
