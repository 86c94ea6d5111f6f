"""Event destinations end to end, on both backends: a tenant's SES-shaped events reach its
own SQS queue (LocalStack), its EventBridge bus (LocalStack, through a rule to a queue) and an
HTTPS webhook whose signature the receiver checks. The bounce comes back by mail to the
return path, as a remote MX would send it; a complaint likewise."""

import json
import time

import pytest

from awsnet import AWS_ENV, REGION, client, localstack, unique_name  # noqa: F401  (fixture)
from awsnet import ENDPOINT
from test_aws_backend import start_aws_relay
from test_bounces_by_mail import ARF, DSN, mail_to_relay, return_path_of, return_path_of_message_to, wait_for
from test_pipeline import net, submit  # noqa: F401  (the fixture is used by name)
from test_route_auth import self_signed
from webhook import Receiver, verify


@pytest.fixture
def receiver(tmp_path):
    cert, key = self_signed(tmp_path, "hook")
    # The first call fails: the event must come again, from the events queue, with its id.
    r = Receiver(cert, key, fail_first=1)
    r.cert = cert
    yield r
    r.stop()


class Destinations:
    """A queue, and a bus whose rule forwards our entries to a second queue."""

    def __init__(self):
        name = unique_name()
        self.sqs = client("sqs")
        self.queue = self.sqs.create_queue(QueueName=f"{name}-tenant")["QueueUrl"]
        self.bus_queue = self.sqs.create_queue(QueueName=f"{name}-bus")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.bus_queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events = client("events")
        self.bus = events.create_event_bus(Name=f"{name}-bus")["EventBusArn"]
        events.put_rule(Name="baton", EventBusName=self.bus, EventPattern=json.dumps({"source": ["baton"]}))
        events.put_targets(Rule="baton", EventBusName=self.bus, Targets=[{"Id": "q", "Arn": arn}])
        self.seen = {self.queue: [], self.bus_queue: []}

    def drain(self, url):
        out = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                       MessageAttributeNames=["All"])
        for m in out.get("Messages", []):
            self.seen[url].append(m)
            self.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return self.seen[url]


@pytest.fixture
def destinations(localstack):  # noqa: F811
    return Destinations()


def add_destinations(relay, dest, receiver):
    relay.cli("events", "destination", "add", "acme", "queue", "--sqs", dest.queue)
    relay.cli("events", "destination", "add", "acme", "bus", "--eventbridge", dest.bus)
    out = relay.cli("events", "destination", "add", "acme", "hooks", "--webhook", receiver.url).stdout
    secret = next(w for w in out.split() if w.startswith("whsec_"))
    listed = json.loads(relay.cli("events", "destination", "list", "--json").stdout)
    assert sorted(d["name"] for d in listed) == ["bus", "hooks", "queue"], listed
    assert secret not in relay.cli("events", "destination", "list").stdout
    return secret


def sqs_events(dest, message_id, event_type, timeout=60):
    """(event, SQS message) pairs of `event_type` about `message_id` on the tenant's queue."""
    def found():
        return [(json.loads(m["Body"]), m) for m in dest.drain(dest.queue)
                if json.loads(m["Body"])["mail"]["messageId"] == message_id
                and json.loads(m["Body"])["eventType"] == event_type]
    return wait_for(found, f"{event_type} on the tenant's queue", timeout)


def bus_events(dest, message_id, detail_type, timeout=60):
    def found():
        entries = [json.loads(m["Body"]) for m in dest.drain(dest.bus_queue)]
        return [e for e in entries if e["detail-type"] == detail_type
                and e["detail"]["mail"]["messageId"] == message_id]
    return wait_for(found, f"{detail_type} through the bus", timeout)


def webhook_events(receiver, message_id, event_type, timeout=90):
    def found():
        return [(h, b) for h, b in receiver.calls
                if json.loads(b)["mail"]["messageId"] == message_id and json.loads(b)["eventType"] == event_type]
    return wait_for(found, f"{event_type} at the webhook", timeout)


def check_everywhere(dest, receiver, secret, message_id, event_type, detail_type):
    """The event reached all three destinations, the same everywhere, and is signed."""
    [(event, msg)] = sqs_events(dest, message_id, event_type)
    attrs = msg["MessageAttributes"]
    assert attrs["eventType"]["StringValue"] == event_type, attrs
    event_id = attrs["eventId"]["StringValue"]
    [entry] = bus_events(dest, message_id, detail_type)
    assert entry["source"] == "baton" and entry["detail"] == event, entry
    calls = webhook_events(receiver, message_id, event_type)
    headers, body = calls[-1]
    assert json.loads(body) == event
    assert headers["baton-event-id"] == event_id, headers
    assert verify(secret, headers, body), headers
    # The check means something: another secret or a changed body does not pass.
    assert not verify(secret + "x", headers, body)
    assert not verify(secret, headers, body.replace(b"acme", b"acne"))
    assert not verify(secret, {**headers, "baton-event-id": "0" * 32}, body), "the id is signed"
    return event


def hook_relay_settings(receiver):
    return {
        "bounces.return_path": True,
        "events.webhook_ca_file": receiver.cert,
        # The receiver is on loopback, which webhooks may not reach by default.
        "events.webhook_allow_private": True,
        "aws.region": REGION,
        "aws.endpoint_url": ENDPOINT,
    }


def test_events_reach_a_queue_a_bus_and_a_signed_webhook(spawn_relay, net, destinations, receiver):  # noqa: F811
    dns, port, sinks = net
    relay = spawn_relay(env=AWS_ENV, **{
        "pipeline.run_stages": True,
        "delivery.port": port,
        "delivery.nameservers": [dns.addr],
        **hook_relay_settings(receiver),
    })
    relay.add_user("alice", "acme", "s3cret")
    relay.cli("domain", "add", "acme.test", "--tenant", "acme")
    secret = add_destinations(relay, destinations, receiver)

    first = submit(relay, "bob@example.org")
    path = return_path_of(sinks["good"], "bob@example.org")
    check_everywhere(destinations, receiver, secret, first, "Delivery", "Email Delivered")
    # The webhook's first call failed (500): that event came again, with the same id. Events of
    # one message are not ordered (the fused path publishes Send and Delivery together, and the
    # events workers run side by side), so the first call is either of them.
    failed_headers, failed_body = receiver.calls[0]
    failed_event = json.loads(failed_body)
    assert failed_event["mail"]["messageId"] == first, receiver.calls
    assert failed_event["eventType"] in ("Send", "Delivery"), receiver.calls
    webhook_events(receiver, first, "Send")
    wait_for(lambda: [h for h, b in receiver.calls[1:] if h["baton-event-id"] == failed_headers["baton-event-id"]
                      and b == failed_body], "the failed call again (backoff 10 s)", 60)

    # The remote MX mails a DSN to the return path later: a Bounce event, everywhere.
    assert mail_to_relay(relay, path, DSN.format(path=path, rcpt="bob@example.org"))[0] == 250
    bounce = check_everywhere(destinations, receiver, secret, first, "Bounce", "Email Bounced")["bounce"]
    assert (bounce["bounceType"], bounce["bounceSubType"]) == ("Permanent", "NoEmail"), bounce
    assert bounce["bouncedRecipients"][0]["emailAddress"] == "bob@example.org"

    # A complaint about another message.
    second = submit(relay, "carol@example.org", subject="news")
    wait_for(lambda: len(sinks["good"].messages()) == 2, "the message to carol")
    path = return_path_of_message_to(sinks["good"], "carol@example.org")
    assert mail_to_relay(relay, path, ARF.format(path=path, rcpt="carol@example.org"))[0] == 250
    complaint = check_everywhere(destinations, receiver, secret, second, "Complaint",
                                 "Email Complaint Received")["complaint"]
    assert complaint["complainedRecipients"][0]["emailAddress"] == "carol@example.org", complaint

    # Removed: later events no longer go there.
    relay.cli("events", "destination", "remove", "acme", "hooks")
    calls = len(receiver.calls)
    third = submit(relay, "dave@example.org", subject="later")
    sqs_events(destinations, third, "Delivery")
    time.sleep(1)
    assert len(receiver.calls) == calls, receiver.calls[calls:]


def test_events_reach_the_destinations_on_aws(spawn_relay, net, destinations, receiver):  # noqa: F811
    _, _, sinks = net
    relay = start_aws_relay(spawn_relay, net, unique_name(), **{
        **hook_relay_settings(receiver),
        "relay.allow_networks": [],
    })
    secret = add_destinations(relay, destinations, receiver)
    first = submit(relay, "erin@example.org")
    path = return_path_of(sinks["good"], "erin@example.org")
    assert mail_to_relay(relay, path.replace("-0-", "-1-", 1), "x")[0] == 550, "a forged token"
    assert mail_to_relay(relay, path, DSN.format(path=path, rcpt="erin@example.org"))[0] == 250
    check_everywhere(destinations, receiver, secret, first, "Bounce", "Email Bounced")
    # Suppressed: the next message to erin is not sent, and says why.
    second = submit(relay, "erin@example.org", subject="again")
    wait_for(lambda: "suppress" in relay.cli("message", "show", second, check=False).stdout, "the suppression")
    assert len(sinks["good"].messages()) == 1, "the second message must not go out"

    # A complaint about a message to frank, through S3, SQS and DynamoDB likewise.
    third = submit(relay, "frank@example.org", subject="news")
    wait_for(lambda: len(sinks["good"].messages()) == 2, "the message to frank")
    path = return_path_of_message_to(sinks["good"], "frank@example.org")
    assert mail_to_relay(relay, path, ARF.format(path=path, rcpt="frank@example.org"))[0] == 250
    check_everywhere(destinations, receiver, secret, third, "Complaint", "Email Complaint Received")
