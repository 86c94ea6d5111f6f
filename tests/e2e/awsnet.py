"""LocalStack (S3, SQS) and DynamoDB Local for the AWS-backend tests, started through the
project's own `localstack/` scripts, plus boto3 clients to look inside independently."""

import subprocess
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

REPO = Path(__file__).resolve().parents[2]
LOCALSTACK = REPO / "localstack"
ENDPOINT = "http://127.0.0.1:4566"
DYNAMODB = "http://127.0.0.1:8000"
REGION = "us-east-1"
# LocalStack accepts any credentials; set them so the SDK never asks instance metadata.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def localstack_script(name, *args):
    r = subprocess.run([str(LOCALSTACK / name), *args], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, f"localstack/{name} failed:\n{r.stdout}\n{r.stderr}"


@pytest.fixture(scope="session")
def localstack():
    """LocalStack and DynamoDB Local on their default ports (start.sh is idempotent)."""
    localstack_script("start.sh")
    return ENDPOINT


def unique_name():
    return "e2e-" + uuid.uuid4().hex[:12]


def aws_settings(name):
    """Relay overrides for the AWS backend with resources named `name`."""
    return {
        "storage.backend": "aws",
        "aws.region": REGION,
        "aws.endpoint_url": ENDPOINT,
        "aws.dynamodb_endpoint_url": DYNAMODB,
        "aws.force_path_style": True,
        "aws.bucket": name,
        "aws.prefix": name,
    }


def aws_env_vars(name):
    """The same settings as the environment a Lambda function gets (BATON_SECTION__KEY)."""
    return {
        **AWS_ENV,
        # The stack passes its Hostname parameter; the functions refuse a placeholder.
        "BATON_HOSTNAME": "relay.test",
        **{
            "BATON_" + k.replace(".", "__").upper(): (str(v).lower() if isinstance(v, bool) else str(v))
            for k, v in aws_settings(name).items()
        },
    }


_config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2})


def client(service):
    endpoint = DYNAMODB if service == "dynamodb" else ENDPOINT
    return boto3.client(
        service, endpoint_url=endpoint, region_name=REGION, aws_access_key_id="test",
        aws_secret_access_key="test", config=_config,
    )


def queue_url(name, stage):
    return client("sqs").get_queue_url(QueueName=f"{name}-{stage}")["QueueUrl"]


def queue_depth(name, stage):
    attrs = client("sqs").get_queue_attributes(QueueUrl=queue_url(name, stage), AttributeNames=["All"])["Attributes"]
    return sum(int(attrs[k]) for k in ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"))


def items(name, table, pk):
    """DynamoDB items of one partition of a ledger table."""
    out = client("dynamodb").query(
        TableName=f"{name}-{table}", KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": pk}}, ConsistentRead=True,
    )
    return out["Items"]


def sqs_event(messages, arn):
    """The event Lambda's SQS event source mapping would send for boto3-received messages."""
    records = []
    for m in messages:
        records.append({
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": m.get("Attributes", {}),
            "messageAttributes": {
                k: {"stringValue": v.get("StringValue"), "dataType": v["DataType"], "stringListValues": [], "binaryListValues": []}
                for k, v in m.get("MessageAttributes", {}).items()
            },
            "md5OfBody": m.get("MD5OfBody"),
            "eventSource": "aws:sqs",
            "eventSourceARN": arn,
            "awsRegion": REGION,
        })
    return {"Records": records}


def receive(name, stage, n=1, timeout=20):
    """Receives `n` messages from a stage queue (leaving them in flight for 120 s)."""
    sqs = client("sqs")
    url = queue_url(name, stage)
    got = []
    import time
    deadline = time.time() + timeout
    while len(got) < n and time.time() < deadline:
        out = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=120,
            MessageAttributeNames=["All"], MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        got += out.get("Messages", [])
    assert len(got) >= n, f"expected {n} messages on {name}-{stage}, got {len(got)}"
    return got


def queue_arn(name, stage):
    return client("sqs").get_queue_attributes(QueueUrl=queue_url(name, stage), AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
