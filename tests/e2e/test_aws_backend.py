"""`baton serve --backend aws` end to end on LocalStack (S3, SQS) and DynamoDB Local: the
gateway stores bodies in S3 and queues them on SQS; the stages run as the Lambda functions
would (SqsEvent batches through the local runner); delivery goes to smtp-sink MXs found
through a test DNS server; records land in DynamoDB."""

import json
import re
import smtplib
import subprocess
import time

import pytest

from awsnet import AWS_ENV, aws_settings, client, items, localstack_script, queue_depth, queue_url, unique_name
from conftest import client_tls, code, free_port, open_transaction
from private_postfix import private_postfix
from test_pipeline import dkim_verify, net, submit, wait_for, wait_show  # noqa: F401  (net is a fixture)
from test_postfix_upstream import UPSTREAM_MAIN_CF

PIPELINE = {
    "pipeline.run_stages": True,
    "delivery.retry_initial": "1s",
    "delivery.retry_max": "2s",
    "delivery.delay_notice_after": "1h",
    "delivery.command_timeout": "2s",
    "delivery.data_timeout": "2s",
    "delivery.connect_timeout": "2s",
    "relay.allow_networks": ["127.0.0.0/8"],
    "limits.storage_timeout": "5s",
}


def start_aws_relay(spawn_relay, net, name, **extra):
    """A relay on the AWS backend with resources `name`, provisioned, tenant acme set up and
    its DKIM keys published in the test DNS."""
    dns, port, _ = net
    settings = {**aws_settings(name), **PIPELINE, "delivery.port": port, "delivery.nameservers": [dns.addr], **extra}
    r = spawn_relay(env=AWS_ENV, start=False, **settings)
    r.cli("aws", "provision")
    r.start()
    r.name = name
    r.add_user("alice", "acme", "s3cret")
    out = r.cli("domain", "add", "acme.test", "--tenant", "acme").stdout
    for txt_name, value in re.findall(r'^(\S+)\s+TXT\s+"(.*)"\s*$', out, re.M):
        dns.txt(txt_name, value.replace('" "', ""))
    return r


@pytest.fixture
def aws_relay(spawn_relay, net, localstack):
    return start_aws_relay(spawn_relay, net, unique_name())


def test_submitted_mail_goes_through_s3_sqs_and_dynamodb_and_arrives_signed(aws_relay, net):
    dns, _, sinks = net
    queue_id = submit(aws_relay, "bob@example.org")
    [msg] = sinks["good"].wait_messages(1)
    results, sigs = dkim_verify(msg, dns)
    assert len(sigs) == 2 and results == [True, True], results
    timeline = wait_show(aws_relay, queue_id, "delivered")
    for step in ("accepted", "signed", "delivered"):
        assert step in timeline, timeline

    # Independently of Baton's own reader: the body in S3, the records in DynamoDB.
    body = client("s3").get_object(Bucket=aws_relay.name, Key=f"messages/{queue_id}")["Body"].read()
    assert b"Subject: hello" in body and b"Received: from" in body
    [rcpt] = items(aws_relay.name, "recipients", queue_id)
    state = json.loads(rcpt["v"]["B"])
    assert state["status"] == "delivered" and state["attempts"] == 1
    assert int(rcpt["expires_at"]["N"]) > time.time() + 86400, "recipient state needs a TTL"
    assert len(items(aws_relay.name, "events", queue_id)) >= 3
    wait_for(lambda: all(queue_depth(aws_relay.name, q) == 0 for q in ("intake", "sign", "deliver")),
             what="empty stage queues")

    # SQS cannot list messages: `queue list` shows its counts and says where messages are.
    counts = aws_relay.cli("queue", "list")
    assert counts.stdout.split()[:4] == ["QUEUE", "VISIBLE", "IN-FLIGHT", "DELAYED"], counts.stdout
    assert "`baton message list` lists the messages" in counts.stderr, counts.stderr
    [listed] = [m for m in json.loads(aws_relay.cli("message", "list", "--json").stdout)
                if m["id"] == queue_id]
    assert listed["state"] == "delivered" and listed["subject"] == "hello", listed
    [summary] = items(aws_relay.name, "messages", queue_id)
    assert int(summary["expires_at"]["N"]) > time.time() + 86400, "message summaries need a TTL"


def test_temporary_failure_is_retried_then_delivered(aws_relay, net):
    _, _, sinks = net
    queue_id = submit(aws_relay, "dave@tempfail.test")
    wait_show(aws_relay, queue_id, "deferred")
    sinks["tempfail"].restart([])
    [msg] = sinks["tempfail"].wait_messages(1)
    assert b"X-Rcpt-Args: <dave@tempfail.test>" in msg
    wait_show(aws_relay, queue_id, "delivered", timeout=40)


def test_permanent_failure_bounces_records_and_suppresses(aws_relay, net):
    _, _, sinks = net
    queue_id = submit(aws_relay, "erin@hardfail.test")
    [dsn] = sinks["sender"].wait_messages(1)
    assert b"X-Mail-Args: <>" in dsn and b"Action: failed" in dsn
    bounces = json.loads(aws_relay.cli("bounce", "list", "--json").stdout)
    assert [b for b in bounces if b["queue_id"] == queue_id and b["hard"]], bounces
    suppressed = json.loads(aws_relay.cli("suppression", "list", "--json").stdout)
    assert any("erin@hardfail.test" in json.dumps(s) for s in suppressed), suppressed
    second = submit(aws_relay, "erin@hardfail.test", subject="again")
    assert "suppression list" in wait_show(aws_relay, second, "suppress")


def test_duplicate_sqs_delivery_of_one_message_delivers_once(spawn_relay, net, localstack):
    _, _, sinks = net
    name = unique_name()
    # Accept only: the message waits on the intake queue.
    gateway = start_aws_relay(spawn_relay, net, name, **{"pipeline.run_stages": False})
    queue_id = submit(gateway, "olga@example.org")
    sqs = client("sqs")
    url = queue_url(name, "intake")
    [m] = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"], WaitTimeSeconds=5, VisibilityTimeout=0)["Messages"]
    # SQS is at-least-once: the same record twice more, as a redelivery would bring it.
    for _ in range(2):
        sqs.send_message(QueueUrl=url, MessageBody=m["Body"], MessageAttributes=m["MessageAttributes"])
    assert queue_depth(name, "intake") == 3
    gateway.stop()

    # Now the stages run, with several workers per stage taking the copies concurrently.
    relay = spawn_relay(env=AWS_ENV, **{**aws_settings(name), **PIPELINE,
                                          "delivery.port": net[1], "delivery.nameservers": [net[0].addr]})
    wait_show(relay, queue_id, "delivered")
    # Every copy settled, down to the last deliver job: only then can "sent once" be judged.
    wait_for(lambda: all(queue_depth(name, q) == 0 for q in ("intake", "sign", "deliver")),
             timeout=60, what="every copy settled")
    got = [x for x in sinks["good"].messages() if b"olga@example.org" in x]
    assert len(got) == 1, f"delivered {len(got)} times"
    [rcpt] = items(name, "recipients", queue_id)
    assert json.loads(rcpt["v"]["B"])["attempts"] == 1


UPSTREAM_RETRY_CF = UPSTREAM_MAIN_CF + """\
minimal_backoff_time = 1s
maximal_backoff_time = 2s
queue_run_delay = 1s
"""


def test_localstack_down_gives_451_and_the_queued_mail_arrives_after_restart(spawn_relay, net, localstack):
    _, _, sinks = net
    relay = start_aws_relay(spawn_relay, net, unique_name())
    port = free_port()
    main_cf = UPSTREAM_RETRY_CF.replace("{baton_port}", str(relay.ports["submission"]))
    with private_postfix(f"127.0.0.1:{port}", main_cf) as base:
        try:
            localstack_script("stop.sh", "localstack")
            # A session in progress: the body cannot be stored, so no 250, nothing queued.
            c = open_transaction(relay)
            assert c.cmd("DATA").startswith("354")
            reply = c.cmd("From: a@sender.test\r\nSubject: lost?\r\n\r\nnot stored\r\n.")
            assert code(reply) == "451 4.3.0", reply
            c.close()
            # Mail from an upstream Postfix: deferred there on our 451, kept in its queue.
            s = smtplib.SMTP("127.0.0.1", port, timeout=10)
            s.sendmail("news@acme.test", ["pia@example.org"],
                       "From: news@acme.test\r\nTo: pia@example.org\r\nSubject: during outage\r\n\r\nkeep me\r\n")
            s.quit()
            log = base / "maillog"
            wait_for(lambda: log.exists() and "status=deferred" in log.read_text(errors="replace"),
                     timeout=60, what="Postfix deferring on 451")
            assert "451 4.3.0" in log.read_text(errors="replace")
        finally:
            localstack_script("start.sh", "localstack")
        # LocalStack community keeps no state across restarts: recreate the resources.
        relay.cli("aws", "provision")

        def retried_and_delivered():
            # Ask Postfix to retry now rather than wait out its backoff.
            subprocess.run(["postqueue", "-c", str(base / "etc"), "-f"], capture_output=True)
            return sinks["good"].wait_messages(1, timeout=3)

        [msg] = wait_for(retried_and_delivered, timeout=90, what="the deferred mail delivered")
        assert b"X-Rcpt-Args: <pia@example.org>" in msg and b"Subject: during outage" in msg
        assert not any(b"not stored" in m for m in sinks["good"].messages()), "a 451 message was delivered"


def test_fifty_megabyte_message_goes_up_in_parts_with_bounded_memory(spawn_relay, net, localstack):
    name = unique_name()
    # Accept only: this test is about the gateway's memory, not delivery.
    part = 5 * 1024 * 1024
    relay = start_aws_relay(spawn_relay, net, name, **{"pipeline.run_stages": False, "aws.part_size": part})
    line = ("0123456789" * 9 + "abcdefgh") + "\r\n"
    message = "From: news@acme.test\r\nSubject: big\r\n\r\n" + line * ((50 * 1000 * 1000 - 1000) // len(line))
    # The first message warms the SDK's clients and connection pool; measure after it.
    submit(relay, "warm@example.org")
    rss_before = relay.peak_rss_kb()
    with smtplib.SMTP(*relay.addr("submission"), timeout=300) as s:
        s.starttls(context=client_tls())
        s.ehlo()
        s.login("alice", "s3cret")
        assert s.sendmail("news@acme.test", ["bob@example.org"], message) == {}
    objects = client("s3").list_objects_v2(Bucket=name, Prefix="messages/")["Contents"]
    [big] = [o["Key"] for o in objects if o["Size"] > 49_000_000]
    stored = client("s3").get_object(Bucket=name, Key=big)["Body"].read()
    assert stored.endswith(message.encode())
    assert queue_depth(name, "intake") == 2
    growth_mb = (relay.peak_rss_kb() - rss_before) / 1024
    # Bounded by the part size, not the message: one part being filled, one in flight and
    # allocator slack. A buffered message would add 50 MB or more.
    assert growth_mb < 4 * part / 2**20, f"peak RSS grew by {growth_mb:.1f} MB for a 50 MB message"
    print(f"AWS backend: peak RSS growth for a 50 MB message: {growth_mb:.1f} MB")


def test_sweeper_deletes_bodies_never_queued_and_keeps_the_rest(aws_relay, net):
    _, _, sinks = net
    s3 = client("s3")
    lifecycle = s3.get_bucket_lifecycle_configuration(Bucket=aws_relay.name)["Rules"]
    assert any(r.get("Expiration", {}).get("Days") == 14 and "AbortIncompleteMultipartUpload" in r for r in lifecycle)
    delivered = submit(aws_relay, "ron@example.org")
    wait_show(aws_relay, delivered, "delivered")
    # What a crash between PutObject and SendMessage leaves behind.
    orphan = "01M8ZZZZZZZZZZZZZZZZZZZZZZ"
    s3.put_object(Bucket=aws_relay.name, Key=f"messages/{orphan}", Body=b"Subject: orphan\r\n\r\nx\r\n")
    out = aws_relay.cli("aws", "sweep", env_extra={"BATON_AWS__ORPHAN_AFTER": "1ms"}).stdout
    assert orphan in out, out
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=aws_relay.name, Prefix="messages/")["Contents"]}
    assert f"messages/{orphan}" not in keys
    assert f"messages/{delivered}" in keys, "a body a stage has seen must stay"
