"""infra/template.yaml deployed whole to an emulator's CloudFormation (moto, see moto_stack.py).

What is checked: the stack completes with the network, the gateway's ECS service behind the
load balancer, the functions, queues, tables and operations resources the issue lists, wired
as the template says (looked up through the services' own APIs, not just the stack); the
upstream delivery mode deploys too and hands its route to the deliver and fused functions;
every name the code reads (`baton aws names`, run with exactly each function's and the
gateway task's environment) is a resource of the stack; infra/deploy.sh deploys, a second
run changes nothing, and infra/destroy.sh removes the stack (the AWS CLI pinned in
.venv-tests, pointed at moto with AWS_ENDPOINT_URL).

moto does not model CloudWatch alarms, metric filters or Application Auto Scaling (it skips
them and the stack still completes); for those the template itself is checked here, and
cfn-lint (infra/lint.sh) validates their properties.
"""

import ast
import hashlib
import json
import os
import subprocess
import time
import tomllib
from collections import Counter
from pathlib import Path

import pytest
import yaml

from awsnet import unique_name
from conftest import BATON
from moto_stack import CODE_KEYS, GATEWAY_IMAGE, REGION, TEMPLATE, MotoServer, Stack, deploy_stack, dummy_zip, tls_secret

REPO = Path(__file__).resolve().parents[2]
PUBLIC_CIDRS = ["10.40.0.0/24", "10.40.1.0/24"]
PRIVATE_CIDRS = ["10.40.2.0/24", "10.40.3.0/24"]


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(moto):
    prefix = unique_name()
    started = time.monotonic()
    deployed = deploy_stack(moto, f"{prefix}-stack", prefix, f"{prefix}-code")
    print(f"stack {deployed.name}: CREATE_COMPLETE on moto in {time.monotonic() - started:.1f} s")
    return deployed


def template():
    """infra/template.yaml with its short-form tags as the long form ({"Ref": ...})."""

    class Loader(yaml.SafeLoader):
        pass

    def tag(loader, suffix, node):
        name = suffix if suffix == "Ref" else f"Fn::{suffix}"
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            return {name: value.split(".", 1) if suffix == "GetAtt" else value}
        if isinstance(node, yaml.SequenceNode):
            return {name: loader.construct_sequence(node, deep=True)}
        return {name: loader.construct_mapping(node, deep=True)}

    Loader.add_multi_constructor("!", tag)
    return yaml.load(TEMPLATE.read_text(), Loader=Loader)


# ---------------------------------------------------------------------------------------------
# The resources


def test_the_stack_creates_every_kind_of_resource_the_issue_lists(stack):
    assert stack.status == "CREATE_COMPLETE"
    counts = Counter(r["ResourceType"] for r in stack.resources)
    expected = {
        "AWS::EC2::VPC": 1,
        "AWS::EC2::Subnet": 4,
        "AWS::EC2::InternetGateway": 1,
        "AWS::EC2::NatGateway": 2,
        "AWS::EC2::EIP": 2,
        "AWS::EC2::SecurityGroup": 2,
        "AWS::ECS::Cluster": 1,
        "AWS::ECS::TaskDefinition": 1,
        "AWS::ECS::Service": 1,
        "AWS::ElasticLoadBalancingV2::LoadBalancer": 1,
        "AWS::ElasticLoadBalancingV2::TargetGroup": 3,
        # policy, sign, deliver, bounce, events and the API (PipelineMode stages).
        "AWS::Lambda::Function": 6,
        "AWS::Lambda::EventSourceMapping": 5,
        "AWS::Lambda::Url": 1,
        "AWS::SQS::Queue": 10,
        "AWS::DynamoDB::Table": 19,
        "AWS::S3::Bucket": 1,
        "AWS::KMS::Key": 2,
        # One per function and the gateway's.
        "AWS::Logs::LogGroup": 7,
        "AWS::SNS::Topic": 1,
        "AWS::CloudWatch::Dashboard": 1,
    }
    got = {t: counts[t] for t in expected}
    assert got == expected, f"expected these resources, got {got}"
    # LoadBalancerListeners=false: the one thing moto refuses is left out, nothing else.
    assert counts["AWS::ElasticLoadBalancingV2::Listener"] == 0, "expected no listeners with LoadBalancerListeners=false"


def test_two_zones_each_with_a_public_and_a_private_subnet_and_its_own_nat_gateway(stack, moto):
    ec2 = moto.client("ec2")
    vpc = stack.outputs["VpcId"]
    subnets = {s["SubnetId"]: s for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]}
    public = stack.outputs["PublicSubnetIds"].split(",")
    private = stack.outputs["PrivateSubnetIds"].split(",")
    assert [subnets[s]["CidrBlock"] for s in public] == PUBLIC_CIDRS
    assert [subnets[s]["CidrBlock"] for s in private] == PRIVATE_CIDRS
    zones = [subnets[s]["AvailabilityZone"] for s in public]
    assert len(set(zones)) == 2, f"expected the public subnets in two zones, got {zones}"
    assert [subnets[s]["AvailabilityZone"] for s in private] == zones

    nats = ec2.describe_nat_gateways(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["NatGateways"]
    assert sorted(n["SubnetId"] for n in nats) == sorted(public), "expected one NAT gateway in each public subnet"
    nat_ips = {n["NatGatewayAddresses"][0]["PublicIp"] for n in nats}
    assert nat_ips == set(stack.outputs["SendingIps"].split(",")), "expected SendingIps to be the NAT gateways' addresses"
    for ip in nat_ips:
        assert f"{ip} -> relay.example.com" in stack.outputs["ReverseDnsToRequest"]

    # One route table per NAT gateway, whose default route goes there; one to the IGW.
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"]
    defaults = [r for t in tables for r in t["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
    assert sorted(r["NatGatewayId"] for r in defaults if "NatGatewayId" in r) == sorted(n["NatGatewayId"] for n in nats)
    assert len([r for r in defaults if r.get("GatewayId", "").startswith("igw-")]) == 1
    # Which subnet uses which table: moto keeps associations apart from the tables, so the
    # template is read. Each private subnet leaves through the NAT gateway of its own zone.
    resources = template()["Resources"]
    uses = {a["Properties"]["SubnetId"]["Ref"]: a["Properties"]["RouteTableId"]["Ref"]
            for a in resources.values() if a["Type"] == "AWS::EC2::SubnetRouteTableAssociation"}
    assert uses == {"PublicSubnetA": "PublicRouteTable", "PublicSubnetB": "PublicRouteTable",
                    "PrivateSubnetA": "PrivateRouteTableA", "PrivateSubnetB": "PrivateRouteTableB"}
    for zone in "AB":
        (route,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::EC2::Route"
                    and r["Properties"]["RouteTableId"] == {"Ref": f"PrivateRouteTable{zone}"}]
        nat = resources[route["NatGatewayId"]["Ref"]]["Properties"]
        assert nat["SubnetId"] == {"Ref": f"PublicSubnet{zone}"}
        az = resources[f"PrivateSubnet{zone}"]["Properties"]["AvailabilityZone"]
        assert az == resources[f"PublicSubnet{zone}"]["Properties"]["AvailabilityZone"]


def test_s3_and_dynamodb_are_reached_from_the_private_subnets_without_nat(stack, moto):
    ec2 = moto.client("ec2")
    vpc = stack.outputs["VpcId"]
    endpoints = ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["VpcEndpoints"]
    private_tables = {stack.physical_id("PrivateRouteTableA"), stack.physical_id("PrivateRouteTableB")}
    by_service = {e["ServiceName"].rsplit(".", 1)[1]: e for e in endpoints}
    assert set(by_service) == {"s3", "dynamodb"}, f"expected gateway endpoints for S3 and DynamoDB, got {list(by_service)}"
    for name, e in by_service.items():
        assert e["VpcEndpointType"] == "Gateway", name
        assert set(e["RouteTableIds"]) == private_tables, f"{name}: expected both private route tables"


def test_the_gateway_service_runs_in_the_private_subnets_behind_the_load_balancer(stack, moto):
    """moto keeps the service, its task definition, the balancer and the target groups, but
    not the service's network or balancer settings: those are read from the template."""
    public = stack.outputs["PublicSubnetIds"].split(",")
    ecs = moto.client("ecs")
    (service,) = ecs.describe_services(
        cluster=stack.outputs["GatewayClusterName"], services=[stack.outputs["GatewayServiceName"]]
    )["services"]
    assert service["taskDefinition"] == stack.outputs["GatewayTaskDefinitionArn"]
    assert service["desiredCount"] == 2

    elb = moto.client("elbv2")
    (lb,) = [lb for lb in elb.describe_load_balancers()["LoadBalancers"]
             if lb["DNSName"] == stack.outputs["LoadBalancerDnsName"]]
    assert sorted(z["SubnetId"] for z in lb["AvailabilityZones"]) == sorted(public)
    # moto makes every balancer from a template an application one: the type is read there.
    lb_props = template()["Resources"]["GatewayLoadBalancer"]["Properties"]
    assert (lb_props["Type"], lb_props["Scheme"]) == ("network", "internet-facing")
    groups = [g for g in elb.describe_target_groups()["TargetGroups"] if g["VpcId"] == stack.outputs["VpcId"]]
    got = sorted((g["Protocol"], g["Port"], g["TargetType"], g["HealthCheckProtocol"]) for g in groups)
    assert got == [("TCP", port, "ip", "TCP") for port in (25, 465, 587)]

    props = template()["Resources"]["GatewayService"]["Properties"]
    assert props["LaunchType"] == "FARGATE"
    net = props["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert net == {"AssignPublicIp": "DISABLED", "Subnets": [{"Ref": "PrivateSubnetA"}, {"Ref": "PrivateSubnetB"}],
                   "SecurityGroups": [{"Ref": "GatewaySecurityGroup"}]}
    assert sorted((lb["ContainerPort"], lb["TargetGroupArn"]["Ref"]) for lb in props["LoadBalancers"]) == [
        (25, "TargetGroup25"), (465, "TargetGroup465"), (587, "TargetGroup587")]
    assert props["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    assert stack.gateway_container()["stopTimeout"] == 120

    # SMTP reaches the tasks only from the load balancer's subnets, the networks the gateway
    # reads PROXY headers from.
    ingress = template()["Resources"]["GatewaySecurityGroup"]["Properties"]["SecurityGroupIngress"]
    cidr = {json.dumps({"Fn::Select": [i, {"Fn::Cidr": [{"Ref": "VpcCidr"}, 6, 8]}]}): c for i, c in enumerate(PUBLIC_CIDRS)}
    assert sorted((r["FromPort"], r["ToPort"], cidr[json.dumps(r["CidrIp"])]) for r in ingress) == sorted(
        (port, port, c) for port in (25, 465, 587) for c in PUBLIC_CIDRS)
    assert json.loads(stack.gateway_environment()["BATON_LISTEN__PROXY_PROTOCOL_FROM"]) == PUBLIC_CIDRS


def test_target_groups_send_proxy_headers_and_drain_longer_than_the_gateway_lets_sessions_finish(stack):
    """moto ignores target group attributes: the template is read."""
    doc = template()
    groups = [b["Properties"] for b in doc["Resources"].values() if b["Type"] == "AWS::ElasticLoadBalancingV2::TargetGroup"]
    assert sorted(g["Port"] for g in groups) == [25, 465, 587]
    delay = {"Fn::FindInMap": ["GraceToDelay", {"Ref": "GatewayShutdownGraceSeconds"}, "Delay"]}
    for g in groups:
        attrs = {a["Key"]: a["Value"] for a in g["TargetGroupAttributes"]}
        assert attrs == {
            "proxy_protocol_v2.enabled": "true",
            # Connections come from the balancer's addresses, which the gateway trusts.
            "preserve_client_ip.enabled": "false",
            "deregistration_delay.timeout_seconds": delay,
        }, f"port {g['Port']}"
    # For every grace allowed: delay = grace + 30 s, and grace fits in ECS's StopTimeout.
    grace = doc["Parameters"]["GatewayShutdownGraceSeconds"]["AllowedValues"]
    table = doc["Mappings"]["GraceToDelay"]
    assert sorted(table, key=int) == sorted(grace, key=int)
    assert all(int(table[g]["Delay"]) == int(g) + 30 for g in grace)
    assert max(int(g) for g in grace) <= 90
    env = stack.gateway_environment()
    assert env["BATON_LIMITS__SHUTDOWN_GRACE"] == f"{stack.parameters.get('GatewayShutdownGraceSeconds', '60')}s"


def test_the_gateway_task_is_baton_serve_with_its_tls_pair_from_secrets_manager(stack, moto):
    container = stack.gateway_container()
    assert container["name"] == "gateway"
    assert container["image"] == GATEWAY_IMAGE
    assert container["command"] == ["serve"]
    secrets = {s["name"]: s["valueFrom"] for s in container["secrets"]}
    arn = stack.parameters["TlsSecretArn"]
    assert secrets == {"TLS_CERT_PEM": f"{arn}:cert::", "TLS_KEY_PEM": f"{arn}:key::"}
    env = stack.gateway_environment()
    assert env["TLS_CERT_PEM"].startswith("-----BEGIN CERTIFICATE-----")
    assert (env["BATON_TLS__CERT_PEM_ENV"], env["BATON_TLS__KEY_PEM_ENV"]) == ("TLS_CERT_PEM", "TLS_KEY_PEM")
    assert env["BATON_PIPELINE__RUN_STAGES"] == "false"

    # The execution role may read that one secret; the task role is GatewayPolicy alone.
    # (moto keeps neither role on the task definition: they are found by name.)
    iam = moto.client("iam")
    prefix = stack.parameters["Prefix"]
    (name,) = iam.list_role_policies(RoleName=f"{prefix}-gateway-execution")["PolicyNames"]
    doc = iam.get_role_policy(RoleName=f"{prefix}-gateway-execution", PolicyName=name)["PolicyDocument"]
    # moto returns the document as Python's repr of it.
    doc = ast.literal_eval(doc) if isinstance(doc, str) else doc
    assert [(s["Action"], s["Resource"]) for s in doc["Statement"]] == [("secretsmanager:GetSecretValue", arn)]
    assert iam.list_role_policies(RoleName=f"{prefix}-gateway-task")["PolicyNames"] == []
    # moto records no managed policies of a role made by a template.
    resources = template()["Resources"]
    assert resources["GatewayTaskRole"]["Properties"]["ManagedPolicyArns"] == [{"Ref": "GatewayPolicy"}]
    assert "Policies" not in resources["GatewayTaskRole"]["Properties"]
    props = resources["GatewayTaskDefinition"]["Properties"]
    assert props["ExecutionRoleArn"] == {"Fn::GetAtt": ["GatewayExecutionRole", "Arn"]}
    assert props["TaskRoleArn"] == {"Fn::GetAtt": ["GatewayTaskRole", "Arn"]}
    assert (props["RequiresCompatibilities"], props["NetworkMode"]) == (["FARGATE"], "awsvpc")


def test_deliver_runs_in_the_private_subnets_and_may_only_go_out_to_smtp_https_and_dns(stack, moto):
    lam = moto.client("lambda")
    private = sorted(stack.outputs["PrivateSubnetIds"].split(","))
    for fn in stack.function_ids():
        conf = lam.get_function_configuration(FunctionName=stack.physical_id(fn))
        subnets = sorted(conf.get("VpcConfig", {}).get("SubnetIds", []))
        if fn == "DeliverFunction":
            assert subnets == private, f"expected {fn} in the private subnets, got {subnets}"
            (group,) = conf["VpcConfig"]["SecurityGroupIds"]
        else:
            assert subnets == [], f"expected {fn} outside the VPC, got {subnets}"
    (sg,) = moto.client("ec2").describe_security_groups(GroupIds=[group])["SecurityGroups"]
    assert sg["IpPermissions"] == [], "expected nothing to reach the deliver function"
    # moto applies no egress rules from a template: they are read there.
    props = template()["Resources"]["DeliverSecurityGroup"]["Properties"]
    egress = sorted((r["IpProtocol"], r["FromPort"], r["ToPort"], r["CidrIp"]) for r in props["SecurityGroupEgress"])
    assert egress == [(proto, port, port, "0.0.0.0/0") for proto, port in
                      [("tcp", 25), ("tcp", 53), ("tcp", 443), ("tcp", 465), ("tcp", 587), ("udp", 53)]]
    for role in ("DeliverRole", "FusedRole"):
        managed = json.dumps(template()["Resources"][role]["Properties"]["ManagedPolicyArns"])
        assert "AWSLambdaVPCAccessExecutionRole" in managed, f"expected {role} to manage its network interfaces"


def test_every_log_group_is_kept_for_the_retention_set(stack, moto):
    groups = moto.client("logs").describe_log_groups(logGroupNamePrefix=f"/baton/{stack.parameters['Prefix']}/")["logGroups"]
    names = {g["logGroupName"].rsplit("/", 1)[1]: g.get("retentionInDays") for g in groups}
    assert names == {n: 30 for n in ("policy", "sign", "deliver", "bounce", "events", "api", "gateway")}
    # Each function writes to its group (moto keeps no LoggingConfig: the template is read).
    resources = template()["Resources"]
    for fn, body in resources.items():
        if body["Type"] == "AWS::Lambda::Function":
            group = body["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
            assert resources[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, fn


def test_the_template_alarms_on_every_queue_function_and_target_group(stack):
    """moto skips alarms: the template is checked, so a new queue or function without its
    alarms fails here."""
    resources = template()["Resources"]
    alarms = [b for b in resources.values() if b["Type"] == "AWS::CloudWatch::Alarm"]

    def alarmed(metric, dim, value):
        return [a for a in alarms if a["Properties"].get("MetricName") == metric
                and {"Name": dim, "Value": value} in a["Properties"].get("Dimensions", [])]

    topic = {"Ref": "AlarmTopic"}
    assert all(a["Properties"]["AlarmActions"] == [topic] for a in alarms), "expected every alarm to notify AlarmTopic"
    for name, body in resources.items():
        kind = body["Type"]
        if kind == "AWS::SQS::Queue" and name.endswith("Dlq"):
            (a,) = alarmed("ApproximateNumberOfMessagesVisible", "QueueName", {"Fn::GetAtt": [name, "QueueName"]})
            assert (a["Properties"]["Threshold"], a["Properties"]["ComparisonOperator"]) == (0, "GreaterThanThreshold")
        elif kind == "AWS::SQS::Queue":
            assert alarmed("ApproximateAgeOfOldestMessage", "QueueName", {"Fn::GetAtt": [name, "QueueName"]}), name
        elif kind == "AWS::Lambda::Function":
            for metric in ("Errors", "Throttles"):
                assert alarmed(metric, "FunctionName", {"Ref": name}), f"expected a {metric} alarm on {name}"
        elif kind == "AWS::ElasticLoadBalancingV2::TargetGroup":
            matches = [a for a in alarms if a["Properties"].get("MetricName") == "UnHealthyHostCount"
                       and any(d["Name"] == "TargetGroup" and json.dumps({"Ref": name}) in json.dumps(d["Value"])
                               for d in a["Properties"]["Dimensions"])]
            assert len(matches) == 1, f"expected an UnHealthyHostCount alarm on {name}"
    # Tenants' rates: Metrics Insights over the metrics the log filters make.
    queries = [m["Expression"] for a in alarms for m in a["Properties"].get("Metrics", []) if "Expression" in m]
    queries = [json.dumps(q) for q in queries]
    assert any("AVG(BounceRate)" in q and "GROUP BY Tenant" in q for q in queries)
    assert any("AVG(ComplaintRate)" in q and "GROUP BY Tenant" in q for q in queries)
    filters = [b["Properties"] for b in resources.values() if b["Type"] == "AWS::Logs::MetricFilter"]
    made = {(f["MetricTransformations"][0]["MetricName"], f["MetricTransformations"][0]["MetricValue"]) for f in filters}
    assert made == {("BounceRate", "100"), ("BounceRate", "0"), ("ComplaintRate", "100"), ("ComplaintRate", "0")}
    assert all('$.target = "baton::tenant_event"' in f["FilterPattern"] for f in filters)
    # Autoscaling on CPU and on connections.
    policies = [b["Properties"] for b in resources.values() if b["Type"] == "AWS::ApplicationAutoScaling::ScalingPolicy"]
    specs = [json.dumps(p["TargetTrackingScalingPolicyConfiguration"]) for p in policies]
    assert any("ECSServiceAverageCPUUtilization" in s for s in specs)
    assert any("ActiveFlowCount" in s for s in specs)


def test_the_dashboard_shows_queues_functions_tenants_and_the_gateway(stack, moto):
    body = moto.client("cloudwatch").get_dashboard(DashboardName=stack.outputs["DashboardName"])["DashboardBody"]
    widgets = json.loads(body)["widgets"]
    metrics = [m for w in widgets for m in w["properties"]["metrics"]]
    names = {m[1] for m in metrics if isinstance(m[0], str)}
    assert {"ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage", "Invocations", "Errors",
            "Throttles", "Duration", "ActiveFlowCount", "HealthyHostCount", "UnHealthyHostCount",
            "CPUUtilization"} <= names
    queues = {m[3] for m in metrics if m[:3] == ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName"]}
    assert queues == set(stack_names(stack.outputs)["queues"])
    queries = [m[0]["expression"] for m in metrics if isinstance(m[0], dict)]
    assert any("BounceRate" in q for q in queries) and any("ComplaintRate" in q for q in queries)
    # The balancer's metrics name it by the end of its ARN (what the alarms use too).
    arn = [r["PhysicalResourceId"] for r in stack.resources if r["LogicalResourceId"] == "GatewayLoadBalancer"][0]
    assert {m[3] for m in metrics if m[:3] == ["AWS/NetworkELB", "ActiveFlowCount", "LoadBalancer"]} == {
        arn.split("loadbalancer/", 1)[1]}


def test_without_a_gateway_image_the_stack_has_no_gateway_but_the_network(moto):
    prefix = unique_name()
    bare = deploy_stack(moto, f"{prefix}-stack", prefix, f"{prefix}-code", GatewayImage="", TlsSecretArn="")
    assert bare.status == "CREATE_COMPLETE"
    kinds = bare.resource_types()
    for kind in ("AWS::ECS::Cluster", "AWS::ECS::Service", "AWS::ECS::TaskDefinition",
                 "AWS::ElasticLoadBalancingV2::LoadBalancer", "AWS::ElasticLoadBalancingV2::TargetGroup"):
        assert kind not in kinds, f"expected no {kind} without GatewayImage"
    for kind in ("AWS::EC2::VPC", "AWS::EC2::NatGateway", "AWS::Lambda::Function", "AWS::CloudWatch::Dashboard"):
        assert kind in kinds, f"expected {kind} without GatewayImage too"
    assert "LoadBalancerDnsName" not in bare.outputs and "GatewayTaskDefinitionArn" not in bare.outputs
    assert len(bare.outputs["SendingIps"].split(",")) == 2
    body = moto.client("cloudwatch").get_dashboard(DashboardName=bare.outputs["DashboardName"])["DashboardBody"]
    assert "AWS/NetworkELB" not in body and len(json.loads(body)["widgets"]) == 8


# ---------------------------------------------------------------------------------------------
# Delivery through a smarthost


def test_upstream_delivery_mode_hands_the_route_to_deliver_and_fused(moto):
    prefix = unique_name()
    secret = moto.client("secretsmanager").create_secret(
        Name=f"{prefix}-upstream", SecretString=json.dumps({"username": "relay", "password": "pw"}))["ARN"]
    upstream = deploy_stack(
        moto, f"{prefix}-stack", prefix, f"{prefix}-code",
        DeliveryMode="upstream", UpstreamHost="smtp.example.net:587", UpstreamSecretArn=secret, PipelineMode="fused",
        SendingHostname="out.example.com",
    )
    assert upstream.status == "CREATE_COMPLETE"
    # The sending IPs' own name: greeting, DSNs and the reverse DNS to request.
    for fn in ("DeliverFunction", "FusedFunction", "BounceFunction"):
        assert upstream.function_environment(fn)["BATON_DELIVERY__HELO_NAME"] == "out.example.com", fn
    assert upstream.outputs["ReverseDnsToRequest"].count("-> out.example.com") == 2
    for fn in ("DeliverFunction", "FusedFunction"):
        env = upstream.function_environment(fn)
        (route,) = tomllib.loads("routes = " + env["BATON_DELIVERY__ROUTES"])["routes"]
        assert route["pattern"] == "*"
        assert route["target"] == "smtp.example.net:587"
        assert route["require_tls"] is True
        assert route["password_env"] == "UPSTREAM_PASSWORD"
        # Dynamic references, resolved by CloudFormation (moto leaves them as written).
        assert route["username"] == f"{{{{resolve:secretsmanager:{secret}:SecretString:username}}}}"
        assert env["UPSTREAM_PASSWORD"] == f"{{{{resolve:secretsmanager:{secret}:SecretString:password}}}}"
        # The configuration loads with it (and still names the stack's resources).
        assert names_not_in_stack(names_for(env), upstream.outputs) == []
    for fn in ("PolicyFunction", "SignFunction", "BounceFunction", "EventsFunction", "ApiFunction"):
        assert "BATON_DELIVERY__ROUTES" not in upstream.function_environment(fn), fn


def test_direct_delivery_mode_sets_no_route(stack):
    env = stack.function_environment("DeliverFunction")
    assert "BATON_DELIVERY__ROUTES" not in env and "UPSTREAM_PASSWORD" not in env
    # No SendingHostname: the functions greet with Hostname.
    assert "BATON_DELIVERY__HELO_NAME" not in env


# ---------------------------------------------------------------------------------------------
# Names: from the stack into the configuration, never hard-coded twice


def names_for(env):
    """`baton aws names` with exactly `env` (nothing inherited)."""
    r = subprocess.run([BATON, "aws", "names"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"expected `baton aws names` to run with {sorted(env)}: {r.stderr}"
    return json.loads(r.stdout)


def stack_names(outputs):
    """The stack's names of what the code reads, from its outputs (queue URLs end in the name)."""
    return {
        "bucket": {outputs["BucketName"]},
        "hostname": {outputs["Hostname"]},
        "queues": {v.rsplit("/", 1)[1] for k, v in outputs.items() if k.endswith(("QueueUrl", "DlqUrl"))},
        "tables": {v for k, v in outputs.items() if k.endswith("TableName")},
    }


def names_not_in_stack(names, outputs):
    have = stack_names(outputs)
    missing = [f"{kind} {names[kind]}" for kind in ("bucket", "hostname") if names[kind] not in have[kind]]
    missing += [f"{kind} {n}" for kind in ("queues", "tables") for n in names[kind] if n not in have[kind]]
    return missing


def test_every_name_the_code_reads_comes_from_the_stack_outputs(stack):
    environments = {fn: stack.function_environment(fn) for fn in stack.function_ids()}
    environments["gateway task"] = stack.gateway_environment()
    assert len(environments) == 7
    have = stack_names(stack.outputs)
    for where, env in environments.items():
        names = names_for(env)
        assert names_not_in_stack(names, stack.outputs) == [], f"expected {where}'s names among the stack outputs"
        # ... and the other way round: the code reads every queue and table the stack has.
        assert set(names["queues"]) == have["queues"], where
        assert set(names["tables"]) == have["tables"], where


def test_a_name_the_stack_does_not_have_is_caught(stack):
    env = stack.function_environment("DeliverFunction")
    prefix = env["BATON_AWS__PREFIX"]
    wrong = names_for({**env, "BATON_AWS__PREFIX": prefix + "x", "BATON_AWS__BUCKET": "some-other-bucket"})
    missing = names_not_in_stack(wrong, stack.outputs)
    assert "bucket some-other-bucket" in missing
    assert f"queues {prefix}x-intake" in missing and f"queues {prefix}x-deliver-dlq" in missing
    assert f"tables {prefix}x-users" in missing
    assert len(missing) == 1 + 10 + 19, f"expected every queue and table name to be caught, got {missing}"


def test_the_admin_steps_on_the_stack_turn_return_paths_on_and_make_their_key(stack, moto):
    """README steps 8 and 9 against the deployed stack's tables: `domain add`, then `domain
    verify` once the bounce domain's MX names Hostname. The functions may only read the
    return-path key, so `domain verify` (the admin) must have made it."""
    from mailnet import TestDns

    fn = stack.function_environment("PolicyFunction")
    hostname = stack.outputs["Hostname"]
    dns = TestDns()
    try:
        dns.mx("bounce.acme.test", (10, hostname))
        env = {
            **moto.env(),
            "PATH": os.environ.get("PATH", ""),
            "BATON_STORAGE__BACKEND": "aws",
            "BATON_AWS__ENDPOINT_URL": moto.endpoint,
            "BATON_AWS__REGION": REGION,
            "BATON_AWS__BUCKET": fn["BATON_AWS__BUCKET"],
            "BATON_AWS__PREFIX": fn["BATON_AWS__PREFIX"],
            "BATON_HOSTNAME": hostname,
            "BATON_DELIVERY__NAMESERVERS": f'["{dns.addr}"]',
        }
        env.pop("AWS_ENDPOINT_URL", None)

        def baton(*args):
            r = subprocess.run([BATON, *args], env=env, capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, f"baton {' '.join(args)}: {r.stderr}"
            return r.stdout

        secrets = f"{fn['BATON_AWS__PREFIX']}-secrets"
        dynamodb = moto.client("dynamodb")
        key = {"pk": {"S": "verp"}, "sk": {"S": "verp"}}
        assert "Item" not in dynamodb.get_item(TableName=secrets, Key=key), "the stack made no key"
        baton("domain", "add", "acme.test", "--tenant", "acme")
        assert "Item" not in dynamodb.get_item(TableName=secrets, Key=key), "only verify needs the key"
        assert "return paths on" in baton("domain", "verify", "acme.test")
        assert "Item" in dynamodb.get_item(TableName=secrets, Key=key), f"expected the return-path key in {secrets}"
    finally:
        dns.stop()


# ---------------------------------------------------------------------------------------------
# infra/deploy.sh and infra/destroy.sh


def test_deploy_twice_changes_nothing_the_second_time_and_destroy_removes_the_stack(moto, tmp_path):
    prefix = unique_name()
    name = f"{prefix}-deployed"
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    for stage in CODE_KEYS:
        (artifacts / f"{stage}.zip").write_bytes(dummy_zip())
    env = {**os.environ, **moto.env(), "PATH": f"{REPO / '.venv-tests' / 'bin'}:{os.environ['PATH']}"}

    def run(script, *args):
        return subprocess.run([str(REPO / "infra" / script), "--region", REGION, "--stack-name", name, *args],
                              env=env, capture_output=True, text=True, timeout=600)

    # Prebuilt artifacts and an image that is already pushed: nothing is built or pushed.
    deploy = ("--prefix", prefix, "--hostname", "relay.example.com", "--bucket", f"{prefix}-bodies",
              "--tls-secret-arn", tls_secret(moto, f"{prefix}-tls"), "--artifacts", str(artifacts),
              "--image", GATEWAY_IMAGE, "--parameter", "LoadBalancerListeners=false")
    first = run("deploy.sh", *deploy)
    assert first.returncode == 0, f"expected the first deploy to succeed:\n{first.stdout}\n{first.stderr}"
    stack = Stack(moto, name)
    assert stack.status == "CREATE_COMPLETE"
    assert len(stack.function_ids()) == 6
    assert stack.parameters["GatewayImage"] == GATEWAY_IMAGE
    # Each zip under a key named by its content, in the artifacts bucket, named by the stack.
    code_bucket = stack.parameters["FunctionCodeBucket"]
    stored = {o["Key"] for o in moto.client("s3").list_objects_v2(Bucket=code_bucket, Prefix="functions/")["Contents"]}
    for stage, param in CODE_KEYS.items():
        digest = hashlib.sha256((artifacts / f"{stage}.zip").read_bytes()).hexdigest()[:16]
        assert stack.parameters[param] == f"functions/{stage}-{digest}.zip"
        assert stack.parameters[param] in stored
    cfn = moto.client("cloudformation")
    change_sets = cfn.list_change_sets(StackName=name)["Summaries"]

    second = run("deploy.sh", *deploy)
    assert second.returncode == 0, f"expected the second deploy to succeed:\n{second.stderr}"
    assert "nothing to deploy" in second.stderr, f"expected a no-op:\n{second.stderr}"
    assert "uploading" not in second.stderr and "creating" not in second.stderr
    again = Stack(moto, name)
    assert again.status == "CREATE_COMPLETE"
    assert again.parameters == stack.parameters
    assert {(r["LogicalResourceId"], r["PhysicalResourceId"]) for r in again.resources} == {
        (r["LogicalResourceId"], r["PhysicalResourceId"]) for r in stack.resources}
    assert cfn.list_change_sets(StackName=name)["Summaries"] == change_sets, "expected no new change set"

    # Mail in the bucket: destroy.sh refuses, unless told to delete it.
    moto.client("s3").put_object(Bucket=f"{prefix}-bodies", Key="messages/queued", Body=b"x")
    refused = run("destroy.sh")
    assert refused.returncode != 0 and "not empty" in refused.stderr, refused.stderr
    assert Stack(moto, name).status == "CREATE_COMPLETE"
    gone = run("destroy.sh", "--empty-bucket")
    assert gone.returncode == 0, f"expected destroy to succeed:\n{gone.stderr}"
    remaining = [s for s in cfn.list_stacks()["StackSummaries"]
                 if s["StackName"] == name and s["StackStatus"] != "DELETE_COMPLETE"]
    assert remaining == [], f"expected the stack gone, got {remaining}"
    twice = run("destroy.sh")
    assert twice.returncode == 0 and "nothing to delete" in twice.stderr, twice.stderr


def test_every_function_that_reads_the_return_path_key_may_decrypt_it():
    """The `verp` secret is read through DynamoDB with the secrets key: a role allowed the
    item but missing from the key policy (or the reverse) fails at run time, not at deploy."""
    resources = template()["Resources"]
    (readers,) = [s for s in resources["SecretsKey"]["Properties"]["KeyPolicy"]["Statement"]
                  if isinstance(s, dict) and s.get("Sid") == "SecretReadersThroughDynamoDB"]
    named = json.dumps(readers["Principal"]["AWS"])
    verp_roles = {r["Properties"]["RoleName"]["Ref"] for r in resources.values()
                  if r["Type"] == "AWS::IAM::RolePolicy" and '"verp"' in json.dumps(r["Properties"])}
    # policy and deliver read it, and fused, which runs both.
    assert {"PolicyRole", "DeliverRole", "FusedRole"} <= verp_roles, verp_roles
    for role in verp_roles:
        assert f'"{role}"' in named, f"{role} may read the return-path key but not decrypt it"
