"""infra/template.yaml deployed to moto's CloudFormation (an emulator in its own venv,
infra/.venv-moto), for tests/e2e/test_infra_stack.py.

`MotoServer` runs `moto_server` on a free loopback port as a subprocess (this file, run by
the moto venv's Python: see `serve` at the bottom) and stops it at teardown. `deploy_stack`
uploads dummy function zips, makes the TLS secret, creates the stack and waits for
CREATE_COMPLETE; the returned `Stack` gives its outputs, resources, the gateway task
definition's container and each function's environment.

moto 5.2.5 lacks three things the template needs: the intrinsic function Fn::Cidr, the
resource type AWS::Lambda::Url (it has the function URL API, not the CloudFormation type)
and, when a stack is deleted, deleting its route tables and NAT gateways (it then refuses to
delete the VPC). `extend_moto`, run in the server process before it starts, adds them with
CloudFormation's semantics, through moto's own API; nothing else of moto is changed. What moto still does not model it skips or
simplifies, and the stack completes anyway: no CloudWatch alarms, metric filters, Application
Auto Scaling, SNS subscriptions, IAM::RolePolicy or S3 bucket policies; no target group
attributes, service network/balancer settings, task definition roles or security group egress
rules; a change set's stack has no outputs. tests/e2e/test_infra_stack.py reads those from
the template, and cfn-lint (infra/lint.sh) validates them.
"""

import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from procs import stop_process

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "infra" / "template.yaml"
MOTO_PYTHON = REPO / "infra" / ".venv-moto" / "bin" / "python"
REGION = "us-east-1"
# moto accepts any credentials; fixed ones keep the SDKs from looking for real ones.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}
# Stage -> template parameter holding its zip's key.
CODE_KEYS = {
    "policy": "PolicyCodeKey",
    "sign": "SignCodeKey",
    "deliver": "DeliverCodeKey",
    "bounce": "BounceCodeKey",
    "events": "EventsCodeKey",
    "api": "ApiCodeKey",
    "fused": "FusedCodeKey",
}
GATEWAY_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/baton-gateway:e2e"


def dummy_zip():
    """A function zip as infra/package-functions.sh makes them: one file, `bootstrap`."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        z.writestr(info, "#!/bin/sh\nexit 1\n")
    return buf.getvalue()


class MotoServer:
    """moto_server on a free loopback port; `stop` ends it (and only it)."""

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.proc = None
        self.port = None

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        from ports import free_port

        assert MOTO_PYTHON.exists(), f"expected {MOTO_PYTHON} (scripts/install-test-deps.sh installs it)"
        self.port = free_port()
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(MOTO_PYTHON), __file__, "serve", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **AWS_ENV},
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            assert self.proc.poll() is None, f"expected moto_server to run:\n{self.log_text()}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"expected moto_server to listen on {self.port}:\n{self.log_text()}")

    def stop(self):
        stop_process(self.proc, timeout=20)
        if self.proc:
            self.log.close()

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def client(self, service):
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        )

    def env(self):
        """Environment for the AWS CLI and scripts that should talk to this server. The host
        is `localhost`: that is how moto recognises its own S3 in a stack's TemplateURL."""
        return {**AWS_ENV, "AWS_ENDPOINT_URL": f"http://localhost:{self.port}"}


def prepare_artifacts(moto, bucket, prefix="code/"):
    """The function-code bucket with one dummy zip per stage; their keys as parameters."""
    s3 = moto.client("s3")
    s3.create_bucket(Bucket=bucket)
    body = dummy_zip()
    params = {}
    for stage, param in CODE_KEYS.items():
        key = f"{prefix}{stage}.zip"
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        params[param] = key
    return params


def self_signed(host):
    """A certificate chain and key (PEM) for `host`, as the TLS secret holds them."""
    with tempfile.TemporaryDirectory() as tmp:
        key, cert = Path(tmp) / "key.pem", Path(tmp) / "cert.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-days", "2", "-subj", f"/CN={host}", "-addext", f"subjectAltName=DNS:{host}",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )
        return cert.read_text(), key.read_text()


def tls_secret(moto, name, host="relay.example.com"):
    """The gateway's TLS secret (JSON cert and key) in moto's Secrets Manager; its ARN."""
    cert, key = self_signed(host)
    sm = moto.client("secretsmanager")
    return sm.create_secret(Name=name, SecretString=json.dumps({"cert": cert, "key": key}))["ARN"]


def ecs_secret_value(moto, value_from):
    """What ECS puts in a variable from `arn:...:secret:NAME:JSON_KEY:STAGE:VERSION`."""
    parts = value_from.split(":")
    arn, json_key = ":".join(parts[:7]), parts[7] if len(parts) > 7 else ""
    secret = moto.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
    return json.loads(secret)[json_key] if json_key else secret


class Stack:
    """A deployed stack as the tests look at it."""

    def __init__(self, moto, name):
        self.moto = moto
        self.name = name
        cfn = moto.client("cloudformation")
        desc = cfn.describe_stacks(StackName=name)["Stacks"][0]
        self.status = desc["StackStatus"]
        self.parameters = {p["ParameterKey"]: p["ParameterValue"] for p in desc.get("Parameters", [])}
        self.outputs = {o["OutputKey"]: o["OutputValue"] for o in desc.get("Outputs", [])}
        self.resources = []
        token = None
        while True:
            page = cfn.list_stack_resources(StackName=name, **({"NextToken": token} if token else {}))
            self.resources += page["StackResourceSummaries"]
            token = page.get("NextToken")
            if not token:
                break

    def physical_id(self, logical_id):
        for r in self.resources:
            if r["LogicalResourceId"] == logical_id:
                return r["PhysicalResourceId"]
        raise AssertionError(f"expected resource {logical_id} in stack {self.name}")

    def resource_types(self):
        return {r["ResourceType"] for r in self.resources}

    def gateway_container(self):
        """The gateway task definition's one container (command, environment, secrets)."""
        ecs = self.moto.client("ecs")
        arn = self.outputs["GatewayTaskDefinitionArn"]
        td = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        (container,) = td["containerDefinitions"]
        return container

    def gateway_environment(self):
        """The task's environment as ECS starts it: the plain variables and the secrets."""
        container = self.gateway_container()
        env = {e["name"]: e["value"] for e in container.get("environment", [])}
        secrets = {s["name"]: ecs_secret_value(self.moto, s["valueFrom"]) for s in container.get("secrets", [])}
        assert not set(env) & set(secrets), f"expected no variable both plain and secret: {set(env) & set(secrets)}"
        return {**env, **secrets}

    def function_environment(self, logical_id):
        lam = self.moto.client("lambda")
        conf = lam.get_function_configuration(FunctionName=self.physical_id(logical_id))
        return conf.get("Environment", {}).get("Variables", {})

    def function_ids(self):
        return [r["LogicalResourceId"] for r in self.resources if r["ResourceType"] == "AWS::Lambda::Function"]


def deploy_stack(moto, name, prefix, code_bucket, **overrides):
    """Creates stack `name` from infra/template.yaml and waits for CREATE_COMPLETE.

    Defaults: the gateway (GatewayImage, a fresh TlsSecretArn), no TCP listeners (moto
    refuses them), DeliveryMode direct. `overrides` sets or replaces parameters.
    """
    cfn = moto.client("cloudformation")
    params = {
        "Prefix": prefix,
        "Hostname": "relay.example.com",
        "BucketName": f"{prefix}-bodies",
        "FunctionCodeBucket": code_bucket,
        **prepare_artifacts(moto, code_bucket),
        "GatewayImage": GATEWAY_IMAGE,
        "TlsSecretArn": tls_secret(moto, f"{prefix}-tls"),
        "LoadBalancerListeners": "false",
        "DeliveryMode": "direct",
        **overrides,
    }
    cfn.create_stack(
        StackName=name,
        TemplateBody=TEMPLATE.read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": str(v)} for k, v in params.items()],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    return wait_for(moto, name, "CREATE_COMPLETE")


def wait_for(moto, name, status, timeout=300):
    cfn = moto.client("cloudformation")
    deadline = time.time() + timeout
    while True:
        stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
        if stack["StackStatus"] == status:
            return Stack(moto, name)
        failed = stack["StackStatus"].endswith(("FAILED", "ROLLBACK_COMPLETE")) or time.time() > deadline
        if failed:
            events = cfn.describe_stack_events(StackName=name)["StackEvents"]
            reasons = [f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason')}" for e in events
                       if e.get("ResourceStatusReason")]
            raise AssertionError(f"expected {name} to reach {status}, got {stack['StackStatus']}: {reasons[:10]}")
        time.sleep(0.5)


# ---------------------------------------------------------------------------------------
# Run by the moto venv's Python: `python moto_stack.py serve PORT`.


def cidr(block, count, host_bits):
    """CloudFormation's Fn::Cidr: the first `count` subnets of `block`, `host_bits` each."""
    import ipaddress
    import itertools

    net = ipaddress.ip_network(block, strict=False)
    subnets = net.subnets(new_prefix=net.max_prefixlen - int(host_bits))
    return [str(s) for s in itertools.islice(subnets, int(count))]


def extend_moto():
    """Adds to moto's CloudFormation what the template uses and moto 5.2.5 lacks."""
    from moto.awslambda.models import lambda_backends
    from moto.cloudformation import parsing
    from moto.core.common_models import CloudFormationModel

    clean_json = parsing.clean_json

    # clean_json resolves intrinsic functions recursively, through the module's global name.
    def with_cidr(resource_json, resources_map):
        if isinstance(resource_json, dict) and list(resource_json) == ["Fn::Cidr"]:
            block, count, bits = clean_json(resource_json["Fn::Cidr"], resources_map)
            return cidr(block, count, bits)
        return clean_json(resource_json, resources_map)

    parsing.clean_json = with_cidr

    # moto has the function URL API but no CloudFormation type for it: this one calls the
    # API (CreateFunctionUrlConfig), as CloudFormation does.
    class FunctionUrl(CloudFormationModel):
        # moto files its models by service, the second part of their module's name.
        __module__ = "moto.awslambda.function_url"

        def __init__(self, config):
            self.config = config

        @staticmethod
        def cloudformation_type():
            return "AWS::Lambda::Url"

        @staticmethod
        def cloudformation_name_type():
            return ""

        @classmethod
        def has_cfn_attr(cls, attr):
            return attr in ("FunctionUrl", "FunctionArn")

        @classmethod
        def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
            props = cloudformation_json["Properties"]
            backend = lambda_backends[account_id][region_name]
            config = {k: props[k] for k in ("AuthType", "InvokeMode", "Cors") if k in props}
            return cls(backend.create_function_url_config(props["TargetFunctionArn"], config))

        @property
        def physical_resource_id(self):
            return self.config.function.function_arn

        def get_cfn_attribute(self, attribute_name):
            return self.config.to_dict()[attribute_name]

    assert "AWS::Lambda::Url" in parsing.get_model_map()

    # Deleting a stack: moto removes neither route tables nor NAT gateways made by a
    # template, and then refuses to delete the VPC. These call the API as CloudFormation does.
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.nat_gateways import NatGateway
    from moto.ec2.models.route_tables import RouteTable

    def delete_route_table(cls, resource_name, cloudformation_json, account_id, region_name):
        ec2_backends[account_id][region_name].delete_route_table(resource_name)

    def delete_nat_gateway(cls, resource_name, cloudformation_json, account_id, region_name):
        ec2_backends[account_id][region_name].delete_nat_gateway(resource_name)

    RouteTable.delete_from_cloudformation_json = classmethod(delete_route_table)
    NatGateway.delete_from_cloudformation_json = classmethod(delete_nat_gateway)


def serve(port):
    from moto.server import main

    extend_moto()
    main(["-H", "127.0.0.1", "-p", str(port)])

if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    serve(int(sys.argv[2]))
