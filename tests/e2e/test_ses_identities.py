"""SES v2 identities must be proven by DNS before they send, driven by boto3's `sesv2` client
against `baton serve`: a created identity is PENDING and cannot send; once the test DNS
server publishes its DKIM records, GetEmailIdentity says SUCCESS and its mail arrives signed.
Another tenant cannot claim a name under a domain someone holds, an IDN's twin or a pending
claim, and a name deleted and claimed again never comes with the old owner's selectors."""

import json
import time

from test_pipeline import dkim_verify, net, wait_show  # noqa: F401  (net is a fixture)
from test_ses_api import api_relay, error_code, new_key, sesv2, signed_call, simple  # noqa: F401


def dkim_records(relay, key, name):
    """The TXT records to publish for identity `name`: Baton adds them to GetEmailIdentity's
    answer (DkimRecords), which boto3 does not show, so this reads the raw answer."""
    status, _, body = signed_call(relay, *key, "GET", f"/v2/email/identities/{name}", b"")
    assert status == 200, (status, body)
    records = json.loads(body)["DkimRecords"]
    assert len(records) == 2 and all("._domainkey." in r["Name"] for r in records), records
    return [(r["Name"], r["Value"]) for r in records]


def publish(relay, key, name, dns):
    for record, value in dkim_records(relay, key, name):
        dns.txt(record, value)


def status(ses, name):
    got = ses.get_email_identity(EmailIdentity=name)
    return got["VerifiedForSendingStatus"], got["VerificationStatus"], got["DkimAttributes"]["Status"]


def test_an_identity_sends_only_once_dns_shows_its_dkim_records(api_relay, net):  # noqa: F811
    dns, _, sinks = net
    key = new_key(api_relay, "acme")
    acme = sesv2(api_relay, *key)
    made = acme.create_email_identity(EmailIdentity="News.Test.")
    assert made["VerifiedForSendingStatus"] is False, made
    assert made["DkimAttributes"]["Status"] == "PENDING" and len(made["DkimAttributes"]["Tokens"]) == 2, made
    assert status(acme, "news.test") == (False, "PENDING", "PENDING")
    listed = {i["IdentityName"]: i for i in acme.list_email_identities()["EmailIdentities"]}
    assert listed["news.test"]["VerificationStatus"] == "PENDING", listed
    assert listed["news.test"]["SendingEnabled"] is False, listed
    assert listed["acme.test"]["VerificationStatus"] == "SUCCESS", listed

    # Pending: refused as SES refuses an unverified identity, and nothing is queued.
    assert error_code(lambda: acme.send_email(**simple(sender="hello@news.test"))) == "MessageRejected"
    assert api_relay.queue_list() == []

    publish(api_relay, key, "news.test", dns)
    assert status(acme, "news.test") == (True, "SUCCESS", "SUCCESS")
    queue_id = acme.send_email(**simple(sender="hello@news.test"))["MessageId"]
    [msg] = sinks["good"].wait_messages(1)
    assert "delivered" in wait_show(api_relay, queue_id, "delivered")
    results, sigs = dkim_verify(msg, dns)
    assert sigs and all(results), (results, msg[:800])
    assert all(b"d=news.test" in value for _, value in sigs), sigs
    assert sinks["good"].messages() == [msg]


def test_names_held_by_another_tenant_or_under_them_cannot_be_claimed(api_relay, net):  # noqa: F811
    dns, _, _ = net
    acme = sesv2(api_relay, *new_key(api_relay, "acme"))
    other = sesv2(api_relay, *new_key(api_relay, "other"))
    acme.create_email_identity(EmailIdentity="brand.test")
    acme.create_email_identity(EmailIdentity="acmé.test")
    names = sorted(i["IdentityName"] for i in acme.list_email_identities()["EmailIdentities"])
    assert names == ["acme.test", "brand.test", "xn--acm-dma.test"], names
    # One identity whichever form names it.
    assert acme.get_email_identity(EmailIdentity="xn--acm-dma.test")["DkimAttributes"]["Tokens"] == \
        acme.get_email_identity(EmailIdentity="acmé.test")["DkimAttributes"]["Tokens"]
    assert error_code(lambda: acme.create_email_identity(EmailIdentity="XN--ACM-DMA.test")) == "AlreadyExistsException"
    for name in ("mail.acme.test", "xn--acm-dma.test", "acmé.test", "brand.test", "sub.brand.test",
                 "relay.test", "bounce.other.test", "test"):
        assert error_code(lambda: other.create_email_identity(EmailIdentity=name)) == "BadRequestException", name
    # A pending claim of acme's is absent to other, as verified ones are.
    assert error_code(lambda: other.get_email_identity(EmailIdentity="brand.test")) == "NotFoundException"
    assert error_code(lambda: other.delete_email_identity(EmailIdentity="brand.test")) == "NotFoundException"
    assert error_code(lambda: other.send_email(**simple(sender="x@brand.test"))) == "MessageRejected"

    # Squatting is the operator's to end: `domain add` replaces the pending claim.
    out = api_relay.cli("domain", "add", "brand.test", "--tenant", "other").stdout
    assert "claimed through the API by tenant acme" in out and "replaced" in out, out
    assert status(other, "brand.test") == (True, "SUCCESS", "SUCCESS")
    assert error_code(lambda: acme.get_email_identity(EmailIdentity="brand.test")) == "NotFoundException"


def test_a_name_deleted_and_claimed_by_another_tenant_gets_new_selectors(api_relay, net):  # noqa: F811
    dns, _, sinks = net
    acme_key = new_key(api_relay, "acme")
    acme = sesv2(api_relay, *acme_key)
    other = sesv2(api_relay, *new_key(api_relay, "other"))
    first = acme.create_email_identity(EmailIdentity="shared.test")["DkimAttributes"]["Tokens"]
    publish(api_relay, acme_key, "shared.test", dns)
    assert status(acme, "shared.test") == (True, "SUCCESS", "SUCCESS")
    acme.delete_email_identity(EmailIdentity="shared.test")
    # Within the same second too: selectors are never reused.
    second = other.create_email_identity(EmailIdentity="shared.test")["DkimAttributes"]["Tokens"]
    assert set(first).isdisjoint(second), (first, second)
    # acme's records are still published: they prove nothing for other.
    assert status(other, "shared.test") == (False, "PENDING", "PENDING")
    assert error_code(lambda: other.send_email(**simple(sender="x@shared.test"))) == "MessageRejected"
    assert error_code(lambda: acme.send_email(**simple(sender="x@shared.test"))) == "MessageRejected"
    time.sleep(1)
    assert sinks["good"].messages() == []
    assert api_relay.queue_list() == []
