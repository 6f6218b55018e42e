"""The CloudFormation template of the fleet, packaging/aws/s3gate-fleet.yaml,
checked without AWS: it parses (CloudFormation's short-form tags included),
every name it refers to is one it defines, the load balancer and the security
groups are set up as the README's "Operations behind an NLB" says, the S3 and
S3 Express gateway endpoints, the scaling policy and the drain on scale-in,
the access log's way to CloudWatch Logs and the instance role are what the
template's comments promise, and the s3gate.yaml its UserData writes, with
sample parameter values substituted, passes `s3gate --check` and decides as
intended ($S3GATE_BIN; skipped without). `cfn-lint` checks it against the
resource specifications when it is installed (skipped, with the reason,
without it).

Needs PyYAML (Debian: python3-yaml); skipped, with the reason, without it."""

import http.server
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import unittest

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the machine
    yaml = None

SOURCE = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TEMPLATE = os.path.join(SOURCE, "packaging", "aws", "s3gate-fleet.yaml")
BIN = os.environ.get("S3GATE_BIN")

# Sample values for the parameters without a default, and a few overrides.
SAMPLE = {
    "VpcId": "vpc-0123456789abcdef0",
    "SubnetIds": ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"],
    "SubnetCidrs": ["10.0.0.0/24", "10.0.1.0/24"],
    "RouteTableIds": ["rtb-0aaaaaaaaaaaaaaaa", "rtb-0bbbbbbbbbbbbbbbb"],
    "StudioCidrs": ["10.20.0.0/16", "192.168.50.0/24"],
    "AllowedBuckets": ["studio-media", "studio-archive-*"],
    "PackageS3Bucket": "studio-artifacts",
    "S3PrefixListId": "pl-68a54001",
    "MonitoringCidr": "10.0.9.0/24",
    "AmiSsmParameter": "ami-0123456789abcdef0",
}
PSEUDO = {
    "AWS::Region": "us-west-2",
    "AWS::Partition": "aws",
    "AWS::AccountId": "123456789012",
    "AWS::StackName": "s3gate",
    "AWS::StackId": "arn:aws:cloudformation:us-west-2:123456789012:stack/s3gate/x",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::NotificationARNs": [],
    "AWS::NoValue": None,
}
EXPRESS = {"S3ExpressBuckets": ["scratch--usw2-az1--x-s3", "cache--*--x-s3"],
           "S3ExpressPrefixListId": "pl-0e5f1a2b"}
NO_VALUE = object()
FOR_EACH = "Fn::ForEach::"


# ------------------------------------------------------------------- parsing

def cfn_loader():
    """A SafeLoader that reads !Ref, !GetAtt, !Sub, ... as the long forms."""

    class Loader(yaml.SafeLoader):
        pass

    def construct(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        if suffix == "Ref":
            return {"Ref": value}
        if suffix == "Condition":
            return {"Condition": value}
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
        return {"Fn::" + suffix: value}

    Loader.add_multi_constructor("!", construct)
    return Loader


def load_template():
    with open(TEMPLATE, encoding="utf-8") as f:
        return yaml.load(f, Loader=cfn_loader())  # noqa: S506 - a SafeLoader subclass


def resources(template):
    """(logical id, resource, loop identifiers in scope), Fn::ForEach expanded one level."""
    for name, body in template.get("Resources", {}).items():
        if name.startswith(FOR_EACH):
            identifier, _collection, fragment = body
            for inner_name, inner in fragment.items():
                yield inner_name, inner, {identifier}
        else:
            yield name, body, set()


def sub_names(text):
    """Names inside ${...} of a Fn::Sub string, without ${!Literal}."""
    return [m.group(1) for m in re.finditer(r"\$\{(?!!)([^}]*)\}", text)]


# ---------------------------------------------------------------- evaluating

class Evaluator:
    """Enough of CloudFormation's intrinsic functions to render UserData."""

    def __init__(self, template, params):
        self.template = template
        self.params = params
        self.conditions = {}

    def condition(self, name):
        if name not in self.conditions:
            self.conditions[name] = bool(self.eval(self.template["Conditions"][name]))
        return self.conditions[name]

    def ref(self, name, local):
        if name in local:
            return local[name]
        if name in PSEUDO:
            return NO_VALUE if name == "AWS::NoValue" else PSEUDO[name]
        if name in self.params:
            return self.params[name]
        return f"<{name}>"  # a resource: its id is unknown here

    def sub(self, text, local):
        def one(m):
            if m.group(1).startswith("!"):
                return "${" + m.group(1)[1:] + "}"
            name = m.group(1)
            if "." in name and name not in local and not name.startswith("AWS::"):
                return f"<{name}>"
            value = self.ref(name, local)
            return ",".join(value) if isinstance(value, list) else str(value)

        return re.sub(r"\$\{([^}]*)\}", one, text)

    def eval(self, node, local=None):
        local = local or {}
        if isinstance(node, list):
            out = [self.eval(v, local) for v in node]
            return [v for v in out if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(arg, local)
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::Sub":
                if isinstance(arg, str):
                    return self.sub(arg, local)
                text, variables = arg
                scope = dict(local)
                scope.update({k: self.eval(v, local) for k, v in variables.items()})
                return self.sub(text, scope)
            if key == "Fn::Join":
                return arg[0].join(str(v) for v in self.eval(arg[1], local))
            if key == "Fn::Split":
                return self.eval(arg[1], local).split(arg[0])
            if key == "Fn::Select":
                return self.eval(arg[1], local)[int(self.eval(arg[0], local))]
            if key == "Fn::If":
                return self.eval(arg[1] if self.condition(arg[0]) else arg[2], local)
            if key == "Fn::Equals":
                a, b = (self.eval(v, local) for v in arg)
                return str(a) == str(b)
            if key == "Fn::Not":
                return not self.eval(arg[0], local)
            if key == "Fn::And":
                return all(self.eval(v, local) for v in arg)
            if key == "Fn::Or":
                return any(self.eval(v, local) for v in arg)
            if key == "Fn::Base64":
                return self.eval(arg, local)  # left readable
            if key == "Fn::GetAtt":
                return "<" + ".".join(arg) + ">"
        out = {k: self.eval(v, local) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not NO_VALUE}


def sample_params(template):
    params = {}
    for name, spec in template["Parameters"].items():
        if name in SAMPLE:
            value = SAMPLE[name]
        elif "Default" in spec:
            value = str(spec["Default"])
            if spec["Type"] in ("CommaDelimitedList",) or spec["Type"].startswith("List<"):
                value = value.split(",")
        else:
            raise AssertionError(f"parameter {name} has no default and no sample value in this test")
        params[name] = value
    return params


def attributes(resource, key):
    return {a["Key"]: a["Value"] for a in resource["Properties"].get(key, [])}


@unittest.skipIf(yaml is None, "PyYAML not installed (Debian: apt-get install python3-yaml)")
class FleetTemplateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.t = load_template()
        cls.res = {name: (body, scope) for name, body, scope in resources(cls.t)}

    def of_type(self, type_):
        found = [(n, b) for n, (b, _) in self.res.items() if b.get("Type") == type_]
        self.assertTrue(found, f"no {type_} in the template")
        return found

    def one(self, type_):
        found = self.of_type(type_)
        self.assertEqual(len(found), 1, f"one {type_} expected, found {[n for n, _ in found]}")
        return found[0][1]

    # ------------------------------------------------------------ structure

    def test_sections(self):
        self.assertEqual(self.t["AWSTemplateFormatVersion"], "2010-09-09")
        self.assertLessEqual(set(self.t), {"AWSTemplateFormatVersion", "Description", "Transform", "Metadata",
                                           "Parameters", "Rules", "Mappings", "Conditions", "Resources",
                                           "Outputs"})
        for name, spec in self.t["Parameters"].items():
            self.assertIn("Type", spec, name)
            self.assertIn("Description", spec, name)
        uses_for_each = any(n.startswith(FOR_EACH) for n in self.t["Resources"])
        if uses_for_each:
            self.assertEqual(self.t.get("Transform"), "AWS::LanguageExtensions",
                             "Fn::ForEach needs the AWS::LanguageExtensions transform")

    def test_resource_types(self):
        for name, (body, _) in self.res.items():
            self.assertRegex(body.get("Type", ""), r"^AWS::[A-Za-z0-9]+::[A-Za-z0-9]+$", name)
            self.assertLessEqual(set(body), {"Type", "Properties", "Condition", "DependsOn", "Metadata",
                                             "CreationPolicy", "UpdatePolicy", "DeletionPolicy",
                                             "UpdateReplacePolicy"}, name)

    def test_every_name_is_defined(self):
        params = set(self.t["Parameters"])
        conditions = set(self.t.get("Conditions", {}))
        names = set(self.res)
        problems = []

        def check(node, where, scope, sub_locals=frozenset()):
            if isinstance(node, list):
                for i, v in enumerate(node):
                    check(v, f"{where}[{i}]", scope, sub_locals)
                return
            if not isinstance(node, dict):
                return
            for key, arg in node.items():
                here = f"{where}.{key}"
                if key == "Ref":
                    if not (arg in params or arg in names or arg in scope or arg in PSEUDO):
                        problems.append(f"{here}: Ref to undefined {arg!r}")
                elif key == "Fn::GetAtt":
                    if not (isinstance(arg, list) and len(arg) == 2 and arg[0] in names):
                        problems.append(f"{here}: GetAtt of undefined {arg!r}")
                elif key == "Fn::Sub":
                    text, variables = (arg, {}) if isinstance(arg, str) else arg
                    for v in variables.values():
                        check(v, here, scope)
                    for name in sub_names(text):
                        if name.startswith("AWS::"):
                            if name not in PSEUDO:
                                problems.append(f"{here}: unknown pseudo parameter ${{{name}}}")
                            continue
                        base = name.split(".", 1)[0]
                        if "." in name:
                            if base not in names:
                                problems.append(f"{here}: ${{{name}}} names no resource")
                        elif not (name in variables or name in params or name in names or name in scope):
                            problems.append(f"{here}: ${{{name}}} is undefined")
                elif key == "Fn::If":
                    if arg[0] not in conditions:
                        problems.append(f"{here}: undefined condition {arg[0]!r}")
                    check(arg[1:], here, scope)
                elif key == "Condition" and isinstance(arg, str):
                    if arg not in conditions:
                        problems.append(f"{here}: undefined condition {arg!r}")
                else:
                    check(arg, here, scope)

        for name, spec in self.t.get("Conditions", {}).items():
            check(spec, f"Conditions.{name}", set())
        for name, body in self.t["Resources"].items():
            if name.startswith(FOR_EACH):
                identifier, collection, fragment = body
                self.assertNotIn(identifier, params | names, f"{name}: the loop identifier shadows a name")
                check(collection, f"Resources.{name}", set())
                for inner_name, inner in fragment.items():
                    self.assertRegex(inner_name, r"[&$]\{" + re.escape(identifier) + r"\}",
                                     f"{name}: logical ids must differ per element")
                    check(inner, f"Resources.{name}.{inner_name}", {identifier})
            else:
                if "Condition" in body and body["Condition"] not in conditions:
                    problems.append(f"Resources.{name}.Condition: undefined {body['Condition']!r}")
                depends = body.get("DependsOn", [])
                for d in [depends] if isinstance(depends, str) else depends:
                    if d not in names:
                        problems.append(f"Resources.{name}.DependsOn: undefined {d!r}")
                check({k: v for k, v in body.items() if k != "Condition"}, f"Resources.{name}", set())
        for name, out in self.t.get("Outputs", {}).items():
            check(out, f"Outputs.{name}", set())
        self.assertEqual(problems, [])

    def test_every_parameter_and_condition_is_used(self):
        with open(TEMPLATE, encoding="utf-8") as f:
            text = f.read()
        # Conditions, Rules, Resources and Outputs may use a parameter.
        body = text.split("\nConditions:", 1)[1]
        for name in self.t["Parameters"]:
            self.assertTrue(re.search(rf"(Ref |\$\{{){re.escape(name)}\b", body), f"parameter {name} is never used")
        conditions_text = text.split("\nConditions:", 1)[1]
        for name in self.t.get("Conditions", {}):
            self.assertTrue(re.search(rf"(Condition: |!If\s*\[?\s*-?\s*|!Condition ){name}\b", conditions_text),
                            f"condition {name} is never used")

    def test_outputs(self):
        outputs = self.t["Outputs"]
        values = [o["Value"] for o in outputs.values()]
        self.assertIn({"Fn::GetAtt": ["LoadBalancer", "DNSName"]}, values)
        self.assertIn({"Ref": "S3GatewayEndpoint"}, values)
        self.assertEqual(outputs["S3ExpressGatewayEndpointId"]["Value"], {"Ref": "S3ExpressGatewayEndpoint"})
        self.assertEqual(outputs["S3ExpressGatewayEndpointId"]["Condition"], "HasS3Express")
        self.assertEqual(outputs["AccessLogGroupName"]["Value"], {"Ref": "AccessLogGroup"})

    # ------------------------------------------------------ the deployment

    def endpoints(self):
        return dict(self.of_type("AWS::EC2::VPCEndpoint"))

    def test_gateway_endpoint(self):
        gateways = {n: b for n, b in self.endpoints().items() if b["Properties"]["VpcEndpointType"] == "Gateway"}
        self.assertEqual(sorted(gateways), ["S3ExpressGatewayEndpoint", "S3GatewayEndpoint"])
        props = gateways["S3GatewayEndpoint"]["Properties"]
        self.assertEqual(props["VpcEndpointType"], "Gateway")
        self.assertEqual(props["ServiceName"], {"Fn::Sub": "com.amazonaws.${AWS::Region}.s3"})
        self.assertEqual(props["RouteTableIds"], {"Ref": "RouteTableIds"})
        ev = Evaluator(self.t, sample_params(self.t))
        policy = ev.eval(props["PolicyDocument"])
        allowed = set()
        for statement in policy["Statement"]:
            self.assertEqual(statement["Effect"], "Allow")
            allowed.update([statement["Resource"]] if isinstance(statement["Resource"], str)
                           else statement["Resource"])
        self.assertTrue({"arn:aws:s3:::studio-media", "arn:aws:s3:::studio-media/*",
                         "arn:aws:s3:::studio-archive-*", "arn:aws:s3:::studio-archive-*/*"} <= allowed, allowed)
        self.assertIn("arn:aws:s3:::studio-artifacts/s3gate/s3gate-0.1.0-1.x86_64.rpm", allowed)
        self.assertNotIn("*", allowed)
        self.assertFalse([a for a in allowed if a.startswith("arn:aws:s3:::studio-artifacts") and
                          not a.endswith(".rpm")], "the package bucket beyond the package")
        # Every partition's branch makes ARNs of that partition.
        for partition in ("aws-cn", "aws-us-gov"):
            PSEUDO["AWS::Partition"] = partition
            try:
                policy = Evaluator(self.t, sample_params(self.t)).eval(props["PolicyDocument"])
            finally:
                PSEUDO["AWS::Partition"] = "aws"
            for statement in policy["Statement"]:
                for arn in [statement["Resource"]] if isinstance(statement["Resource"], str) \
                        else statement["Resource"]:
                    self.assertTrue(arn.startswith(f"arn:{partition}:s3:::"), arn)

    def test_target_group(self):
        tg = self.one("AWS::ElasticLoadBalancingV2::TargetGroup")["Properties"]
        self.assertEqual((tg["Protocol"], tg["Port"], tg["TargetType"]), ("TCP", 3128, "instance"))
        self.assertEqual(tg["HealthCheckProtocol"], "HTTP")
        self.assertEqual(tg["HealthCheckPath"], "/ping")
        self.assertEqual(tg.get("HealthCheckPort", "traffic-port"), "traffic-port")
        attrs = attributes({"Properties": tg}, "TargetGroupAttributes")
        self.assertEqual(attrs["proxy_protocol_v2.enabled"], "true")
        self.assertEqual(attrs["preserve_client_ip.enabled"], "false",
                         "with preservation on, the TCP peer is the client, not a trusted proxy")
        self.assertEqual(attrs["deregistration_delay.connection_termination.enabled"], "false")
        self.assertEqual(attrs["deregistration_delay.timeout_seconds"], {"Ref": "DeregistrationDelaySeconds"})
        # /ping fails on purpose while draining: the NLB must not reset the open tunnels.
        self.assertEqual(attrs["target_health_state.unhealthy.connection_termination.enabled"], "false")
        self.assertEqual(attrs["target_health_state.unhealthy.draining_interval_seconds"],
                         {"Ref": "DeregistrationDelaySeconds"})
        # The defaults add up, and the NLB notices the 503 within shutdown_delay.
        p = {k: int(v["Default"]) for k, v in self.t["Parameters"].items()
             if k in ("ShutdownDelaySeconds", "DrainTimeoutSeconds", "DeregistrationDelaySeconds")}
        self.assertGreaterEqual(p["DeregistrationDelaySeconds"],
                                p["ShutdownDelaySeconds"] + p["DrainTimeoutSeconds"])
        self.assertGreater(p["ShutdownDelaySeconds"],
                           tg["HealthCheckIntervalSeconds"] * tg["UnhealthyThresholdCount"])

    def test_load_balancer_and_listener(self):
        lb = self.one("AWS::ElasticLoadBalancingV2::LoadBalancer")["Properties"]
        self.assertEqual((lb["Type"], lb["Scheme"]), ("network", "internal"))
        listener = self.one("AWS::ElasticLoadBalancingV2::Listener")["Properties"]
        self.assertEqual((listener["Protocol"], listener["Port"]), ("TCP", 3128))
        idle = int(attributes({"Properties": listener}, "ListenerAttributes")["tcp.idle_timeout.seconds"])
        self.assertTrue(60 <= idle <= 6000)
        self.assertGreater(idle, 300, "s3gate's idle_timeout (300 s) must close idle tunnels first")

    def test_security_groups(self):
        groups = dict(self.of_type("AWS::EC2::SecurityGroup"))
        instance = groups["InstanceSecurityGroup"]["Properties"]
        # Inline egress replaces the default allow-all: HTTPS to the S3 prefix list, to the
        # S3 Express prefix list (with S3ExpressBuckets) and to the interface endpoints.
        def egress(**overrides):
            params = dict(sample_params(self.t), **overrides)
            rules = Evaluator(self.t, params).eval(instance["SecurityGroupEgress"])
            return [(e["IpProtocol"], e["FromPort"], e["ToPort"],
                     e.get("DestinationPrefixListId") or e.get("DestinationSecurityGroupId")) for e in rules]

        self.assertEqual(egress(), [("tcp", 443, 443, "pl-68a54001"),
                                    ("tcp", 443, 443, "<EndpointSecurityGroup.GroupId>")])
        self.assertEqual(egress(S3ExpressBuckets=["scratch--usw2-az1--x-s3"], S3ExpressPrefixListId="pl-0e5f1a2b"),
                         [("tcp", 443, 443, "pl-68a54001"), ("tcp", 443, 443, "pl-0e5f1a2b"),
                          ("tcp", 443, 443, "<EndpointSecurityGroup.GroupId>")])
        # The endpoints' group: HTTPS from the instances only, and no egress at all.
        endpoint_group = groups["EndpointSecurityGroup"]["Properties"]
        self.assertNotIn("SecurityGroupIngress", endpoint_group)
        self.assertEqual([(e["IpProtocol"], e["FromPort"], e["ToPort"], e["CidrIp"])
                          for e in endpoint_group["SecurityGroupEgress"]], [("icmp", 252, 86, "127.0.0.1/32")])
        self.assertEqual([(i["FromPort"], i.get("CidrIp")) for i in instance["SecurityGroupIngress"]],
                         [(9464, {"Ref": "MonitoringCidr"})])
        self.assertEqual([n for n, (b, _) in self.res.items() if b["Type"] == "AWS::EC2::SecurityGroupEgress"],
                         [], "a separate egress rule would sit next to the default allow-all")
        ingress = [b["Properties"] for _, b in self.of_type("AWS::EC2::SecurityGroupIngress")]
        to_endpoints = [i for i in ingress
                        if i["GroupId"] == {"Fn::GetAtt": ["EndpointSecurityGroup", "GroupId"]}]
        self.assertEqual([(i["IpProtocol"], i["FromPort"], i["ToPort"], i.get("SourceSecurityGroupId"))
                          for i in to_endpoints],
                         [("tcp", 443, 443, {"Fn::GetAtt": ["InstanceSecurityGroup", "GroupId"]})])
        to_instances = [i for i in ingress if i["GroupId"] == {"Fn::GetAtt": ["InstanceSecurityGroup", "GroupId"]}]
        self.assertEqual([(i["FromPort"], i["ToPort"], i.get("SourceSecurityGroupId")) for i in to_instances],
                         [(3128, 3128, {"Fn::GetAtt": ["LoadBalancerSecurityGroup", "GroupId"]})])
        to_nlb = [i for i in ingress if i["GroupId"] == {"Fn::GetAtt": ["LoadBalancerSecurityGroup", "GroupId"]}]
        self.assertEqual([(i["FromPort"], i["ToPort"], i.get("CidrIp")) for i in to_nlb],
                         [(3128, 3128, {"Ref": "StudioCidr"})])
        self.assertEqual(self.t["Resources"]["Fn::ForEach::StudioIngress"][1], {"Ref": "StudioCidrs"})

    def test_bucket_policy(self):
        body = self.one("AWS::S3::BucketPolicy")
        self.assertIn("Condition", body, "the example bucket policy must be optional")
        ev = Evaluator(self.t, sample_params(self.t))
        self.assertFalse(ev.condition(body["Condition"]), "off by default")
        params = dict(sample_params(self.t), ProtectedBucketName="studio-media")
        statement, = Evaluator(self.t, params).eval(body["Properties"])["PolicyDocument"]["Statement"]
        self.assertEqual(statement["Effect"], "Deny")
        self.assertEqual(statement["Condition"], {"StringNotEquals": {"aws:SourceVpce": "<S3GatewayEndpoint>"}})
        self.assertEqual(statement["Resource"], ["arn:aws:s3:::studio-media", "arn:aws:s3:::studio-media/*"])

    # --------------------------------------------------- S3 Express One Zone

    def test_s3express_gateway_endpoint(self):
        body = self.endpoints()["S3ExpressGatewayEndpoint"]
        self.assertEqual(body["Condition"], "HasS3Express")
        self.assertFalse(Evaluator(self.t, sample_params(self.t)).condition("HasS3Express"), "off by default")
        self.assertTrue(Evaluator(self.t, dict(sample_params(self.t), **EXPRESS)).condition("HasS3Express"))
        props = body["Properties"]
        self.assertEqual(props["VpcEndpointType"], "Gateway")
        self.assertEqual(props["ServiceName"], {"Fn::Sub": "com.amazonaws.${AWS::Region}.s3express"})
        self.assertEqual(props["RouteTableIds"], {"Ref": "RouteTableIds"})
        for partition in ("aws", "aws-cn", "aws-us-gov"):
            PSEUDO["AWS::Partition"] = partition
            try:
                policy = Evaluator(self.t, dict(sample_params(self.t), **EXPRESS)).eval(props["PolicyDocument"])
            finally:
                PSEUDO["AWS::Partition"] = "aws"
            statement, = policy["Statement"]
            self.assertEqual((statement["Effect"], statement["Principal"], statement["Action"]),
                             ("Allow", "*", "s3express:CreateSession"))
            self.assertEqual(statement["Resource"],
                             [f"arn:{partition}:s3express:*:*:bucket/scratch--usw2-az1--x-s3",
                              f"arn:{partition}:s3express:*:*:bucket/cache--*--x-s3"])

    def test_s3express_rules(self):
        rules = self.t["Rules"]
        needs_list = rules["S3ExpressNeedsItsPrefixList"]
        self.assertEqual(needs_list["RuleCondition"],
                         {"Fn::Not": [{"Fn::EachMemberEquals": [{"Ref": "S3ExpressBuckets"}, ""]}]})
        self.assertEqual(needs_list["Assertions"][0]["Assert"],
                         {"Fn::Not": [{"Fn::Equals": [{"Ref": "S3ExpressPrefixListId"}, ""]}]})
        needs_networks = rules["S3ExpressNeedsItsNetworks"]
        self.assertEqual(needs_networks["Assertions"][0]["Assert"],
                         {"Fn::Not": [{"Fn::EachMemberEquals": [{"Ref": "S3ExpressPrefixListCidrs"}, ""]}]})
        self.assertIn({"Fn::Not": [{"Fn::EachMemberEquals": [{"Ref": "S3PrefixListCidrs"}, ""]}]},
                      needs_networks["RuleCondition"]["Fn::And"])

    # ------------------------------------------------- scaling and scale-in

    def test_scaling_policy(self):
        policy = self.one("AWS::AutoScaling::ScalingPolicy")["Properties"]
        self.assertEqual(policy["AutoScalingGroupName"], {"Ref": "AutoScalingGroup"})
        self.assertEqual(policy["PolicyType"], "TargetTrackingScaling")
        self.assertEqual(policy["EstimatedInstanceWarmup"], {"Ref": "ScalingWarmupSeconds"})
        self.assertEqual(self.t["Parameters"]["ScalingMetric"]["AllowedValues"], ["NetworkOut", "CPU"])
        self.assertEqual(self.t["Parameters"]["ScalingMetric"]["Default"], "NetworkOut")
        for metric, expected in (("NetworkOut", ("ASGAverageNetworkOut", "12000000000")),
                                 ("CPU", ("ASGAverageCPUUtilization", "60"))):
            params = dict(sample_params(self.t), ScalingMetric=metric)
            tracking = Evaluator(self.t, params).eval(policy["TargetTrackingConfiguration"])
            self.assertEqual((tracking["PredefinedMetricSpecification"]["PredefinedMetricType"],
                              str(tracking["TargetValue"])), expected, metric)
            self.assertFalse(tracking.get("DisableScaleIn", False), "scale-in is the point of the drain")
        # Per-minute metrics, so that the NetworkOut target is per minute.
        lt = self.one("AWS::EC2::LaunchTemplate")["Properties"]["LaunchTemplateData"]
        self.assertEqual(lt["Monitoring"], {"Enabled": True})
        self.assertIn("per minute", self.t["Parameters"]["ScalingTargetNetworkOutBytes"]["Description"])

    def test_scale_in_drains_whole(self):
        asg = self.one("AWS::AutoScaling::AutoScalingGroup")
        hook, = asg["Properties"]["LifecycleHookSpecificationList"]
        self.assertEqual(hook["LifecycleTransition"], "autoscaling:EC2_INSTANCE_TERMINATING")
        self.assertEqual(hook["HeartbeatTimeout"], {"Ref": "TerminationHookSeconds"})
        self.assertEqual(hook["DefaultResult"], "CONTINUE")
        self.assertEqual(asg["Properties"]["TargetGroupARNs"], [{"Ref": "TargetGroup"}])
        params = self.t["Parameters"]
        p = {k: int(params[k]["Default"]) for k in ("ShutdownDelaySeconds", "DrainTimeoutSeconds",
                                                    "DeregistrationDelaySeconds", "TerminationHookSeconds")}
        drain = p["ShutdownDelaySeconds"] + p["DrainTimeoutSeconds"]
        self.assertGreaterEqual(p["DeregistrationDelaySeconds"], drain)
        self.assertGreaterEqual(p["TerminationHookSeconds"], drain + 30)
        # The relation is written where the operator sets the values.
        for name in ("DeregistrationDelaySeconds", "TerminationHookSeconds"):
            self.assertIn("ShutdownDelaySeconds + DrainTimeoutSeconds", " ".join(params[name]["Description"].split()),
                          name)
        for name in ("ShutdownDelaySeconds", "DrainTimeoutSeconds"):
            text = " ".join(params[name]["Description"].split())
            self.assertIn("DeregistrationDelaySeconds", text, name)
            self.assertIn("TerminationHookSeconds", text, name)
        # The instance stops s3gate itself when it is leaving, and says so when the values do not add up.
        script = self.user_data()
        self.assertRegex(script, r"(?m)^systemctl enable --now s3gate\.service s3gate-lifecycle\.service$")
        self.assertIn("TerminationHookSeconds (360) is below", script)

    def test_lifecycle_watcher_stops_s3gate_on_terminated(self):
        """The watcher the UserData installs, run against a fake instance metadata
        service on loopback and a fake systemctl: it asks for an IMDSv2 token,
        ignores InService, and on Terminated runs `systemctl stop s3gate.service` once."""
        if not shutil.which("bash") or not shutil.which("curl"):
            self.skipTest("bash and curl are needed to run the lifecycle watcher")
        m = re.search(r"<<'S3GATE_LIFECYCLE'\n(.*?)\nS3GATE_LIFECYCLE\n", self.user_data(), re.S)
        self.assertIsNotNone(m, "no s3gate-lifecycle script in UserData")
        watcher = m.group(1)
        self.assertIn("imds=http://169.254.169.254/latest\n", watcher)
        self.assertIn("while sleep 5; do", watcher)

        state = {"value": "InService", "gets": 0, "tokens": 0}

        class Imds(http.server.BaseHTTPRequestHandler):
            def do_PUT(self):  # noqa: N802
                ok = self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
                state["tokens"] += 1
                self.send_response(200 if ok else 400)
                self.end_headers()
                self.wfile.write(b"TOKEN")

            def do_GET(self):  # noqa: N802
                if (self.path != "/latest/meta-data/autoscaling/target-lifecycle-state"
                        or self.headers.get("X-aws-ec2-metadata-token") != "TOKEN"):
                    self.send_response(401)
                    self.end_headers()
                    return
                state["gets"] += 1
                self.send_response(200)
                self.end_headers()
                self.wfile.write(state["value"].encode())

            def log_message(self, *args):
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Imds)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        with tempfile.TemporaryDirectory(prefix="s3gate-lifecycle-") as tmp:
            calls = os.path.join(tmp, "systemctl.calls")
            fake = os.path.join(tmp, "systemctl")
            with open(fake, "w") as f:
                f.write(f'#!/bin/sh\necho "$*" >> {calls}\n')
            os.chmod(fake, 0o755)
            script = (watcher.replace("imds=http://169.254.169.254/latest",
                                      f"imds=http://127.0.0.1:{server.server_port}/latest")
                      .replace("while sleep 5; do", "while sleep 0.05; do"))
            env = dict(os.environ, PATH=f"{tmp}:{os.environ.get('PATH', '')}")
            env.pop("http_proxy", None)
            env.pop("HTTP_PROXY", None)
            proc = subprocess.Popen(["bash", "-c", script], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            try:
                deadline = time.monotonic() + 10
                while state["gets"] < 3 and time.monotonic() < deadline:
                    time.sleep(0.02)
                self.assertGreaterEqual(state["gets"], 3, "the watcher does not poll the metadata")
                self.assertIsNone(proc.poll(), "the watcher stopped while InService")
                self.assertFalse(os.path.exists(calls), "systemctl ran while InService")
                state["value"] = "Terminated"
                out, err = proc.communicate(timeout=10)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
            self.assertEqual(proc.returncode, 0, err)
            with open(calls) as f:
                self.assertEqual(f.read(), "stop s3gate.service\n")
            self.assertIn("draining s3gate", out)
            self.assertGreaterEqual(state["tokens"], 3, "no IMDSv2 token per poll")

    # -------------------------------------------------- logs and the role

    def test_access_log_to_cloudwatch_logs(self):
        group = self.res["AccessLogGroup"][0]
        self.assertEqual(group["Type"], "AWS::Logs::LogGroup")
        self.assertEqual(group["Properties"]["RetentionInDays"], {"Ref": "AccessLogRetentionDays"})
        retention = self.t["Parameters"]["AccessLogRetentionDays"]
        self.assertIn(retention["Default"], retention["AllowedValues"])
        self.assertLessEqual({1, 7, 30, 90, 365, 3653}, set(retention["AllowedValues"]))
        ev = Evaluator(self.t, sample_params(self.t))
        group_name = ev.eval(group["Properties"]["LogGroupName"])
        self.assertEqual(group_name, "/s3gate/s3gate/access")
        # The agent's configuration in UserData ships the file s3gate writes to that group.
        script = self.user_data()
        m = re.search(r"<<'CWAGENT_JSON'\n(.*?)\nCWAGENT_JSON\n", script, re.S)
        self.assertIsNotNone(m, "no CloudWatch agent configuration in UserData")
        agent = json.loads(m.group(1))
        collected, = agent["logs"]["logs_collected"]["files"]["collect_list"]
        config = yaml.safe_load(self.config_from(script))
        self.assertEqual(collected["file_path"], config["access_log"])
        self.assertEqual(collected["log_group_name"], group_name)
        self.assertEqual(collected["log_stream_name"], "{instance_id}")
        self.assertNotIn("retention_in_days", collected, "retention is the log group's (no PutRetentionPolicy)")
        self.assertIn("cwagent=/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl\n", script)
        self.assertIn('"$cwagent" -a fetch-config -m ec2 -s', script)
        self.assertIn("dnf install -y \"$pkg\" amazon-cloudwatch-agent", script)
        # The logs interface endpoint, private DNS on, admits writes to that group only.
        logs = self.endpoints()["LogsEndpoint"]["Properties"]
        self.assertEqual(logs["ServiceName"], {"Fn::Sub": "com.amazonaws.${AWS::Region}.logs"})
        self.assertEqual((logs["VpcEndpointType"], logs["PrivateDnsEnabled"]), ("Interface", True))
        self.assertEqual(logs["SubnetIds"], {"Ref": "SubnetIds"})
        self.assertEqual(logs["SecurityGroupIds"], [{"Fn::GetAtt": ["EndpointSecurityGroup", "GroupId"]}])
        statement, = logs["PolicyDocument"]["Statement"]
        self.assertEqual(statement["Resource"], {"Fn::GetAtt": ["AccessLogGroup", "Arn"]})
        self.assertEqual(sorted(statement["Action"]),
                         ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"])
        # user_agent across the fleet: a Logs Insights query (metrics carry no user_agent).
        query = self.one("AWS::Logs::QueryDefinition")["Properties"]
        self.assertEqual(query["LogGroupNames"], [{"Ref": "AccessLogGroup"}])
        self.assertIn("by user_agent", query["QueryString"])
        self.assertEqual(self.one("AWS::AutoScaling::AutoScalingGroup")["DependsOn"],
                         ["S3GatewayEndpoint", "LogsEndpoint"])

    def test_session_manager_endpoints(self):
        fragment = self.t["Resources"]["Fn::ForEach::SessionManagerEndpoints"]
        self.assertEqual(fragment[1], ["ssm", "ssmmessages", "ec2messages"])
        (name, body), = fragment[2].items()
        self.assertEqual(body["Condition"], "HasSessionManager")
        self.assertEqual(body["Properties"]["ServiceName"],
                         {"Fn::Sub": "com.amazonaws.${AWS::Region}.${SessionService}"})
        self.assertEqual((body["Properties"]["VpcEndpointType"], body["Properties"]["PrivateDnsEnabled"]),
                         ("Interface", True))

    def role_statements(self, **overrides):
        role = self.one("AWS::IAM::Role")["Properties"]
        self.assertNotIn("ManagedPolicyArns", role, "managed policies grant more than the instances need")
        params = dict(sample_params(self.t), **overrides)
        policies = Evaluator(self.t, params).eval(role["Policies"])
        return {p["PolicyName"]: p["PolicyDocument"]["Statement"] for p in policies}

    def test_instance_role_is_least_privileged(self):
        role = self.one("AWS::IAM::Role")["Properties"]
        trust, = role["AssumeRolePolicyDocument"]["Statement"]
        self.assertEqual(trust["Action"], "sts:AssumeRole")
        with_ssm = self.role_statements()
        without_ssm = self.role_statements(EnableSessionManager="false")
        self.assertEqual(sorted(with_ssm), ["s3gate-access-log", "s3gate-package", "s3gate-session-manager"])
        self.assertEqual(sorted(without_ssm), ["s3gate-access-log", "s3gate-package"])
        for policy, statements in with_ssm.items():
            for st in statements:
                self.assertEqual(st["Effect"], "Allow", policy)
                actions = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
                for action in actions:
                    self.assertRegex(action, r"^[a-z0-9]+:[A-Za-z]+$", f"{policy}: a wildcard action {action!r}")
        package, = with_ssm["s3gate-package"]
        self.assertEqual((package["Action"], package["Resource"]),
                         ("s3:GetObject", "arn:aws:s3:::studio-artifacts/s3gate/s3gate-0.1.0-1.x86_64.rpm"))
        log, = with_ssm["s3gate-access-log"]
        self.assertEqual(sorted(log["Action"]), ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"])
        self.assertEqual(log["Resource"], "<AccessLogGroup.Arn>", "scoped to the access log group")
        update, channels = with_ssm["s3gate-session-manager"]
        self.assertEqual(update["Action"], "ssm:UpdateInstanceInformation")
        self.assertEqual(update["Resource"], "arn:aws:ec2:us-west-2:123456789012:instance/*")
        # "*" only for the actions that have no resource-level permissions.
        self.assertEqual(channels["Resource"], "*")
        self.assertEqual({a.split(":")[0] for a in channels["Action"]}, {"ssmmessages", "ec2messages"})

    # ------------------------------------------------------------ cfn-lint

    def test_cfn_lint(self):
        lint = shutil.which("cfn-lint")
        if lint is None:
            self.skipTest("cfn-lint is not installed (pip install cfn-lint); the structural checks above still ran")
        out = subprocess.run([lint, TEMPLATE], capture_output=True, text=True, timeout=300,
                             stdin=subprocess.DEVNULL)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)

    # ----------------------------------------------------------- UserData

    def user_data(self, **overrides):
        lt = self.one("AWS::EC2::LaunchTemplate")
        params = dict(sample_params(self.t), **overrides)
        script = Evaluator(self.t, params).eval(lt["Properties"]["LaunchTemplateData"]["UserData"])
        self.assertIsInstance(script, str)
        self.assertNotRegex(script, r"<[A-Za-z]", "UserData refers to a resource attribute")
        return script

    def config_from(self, script):
        m = re.search(r"<<'S3GATE_YAML'\n(.*?)\nS3GATE_YAML\n", script, re.S)
        self.assertIsNotNone(m, "no quoted S3GATE_YAML here-document in UserData")
        return m.group(1)

    def test_user_data_script(self):
        script = self.user_data()
        self.assertTrue(script.startswith("#!/bin/bash\n"))
        self.assertIn("s3://studio-artifacts/s3gate/s3gate-0.1.0-1.x86_64.rpm", script)
        self.assertRegex(script, r"(?m)^/usr/sbin/s3gate -c /etc/s3gate/s3gate.yaml --check$")
        self.assertRegex(script, r"(?m)^systemctl enable --now s3gate\.service( |$)")
        self.assertNotIn("${", script.replace("${!", ""), "an unsubstituted ${...}")
        if shutil.which("bash"):
            out = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True, timeout=10)
            self.assertEqual(out.returncode, 0, out.stderr)

    def test_user_data_config(self):
        config = yaml.safe_load(self.config_from(self.user_data()))
        self.assertEqual(config["listeners"], [{"address": "0.0.0.0:3128", "mode": "forward",
                                                "proxy_protocol": True}])
        self.assertEqual(config["clients"], SAMPLE["StudioCidrs"])
        self.assertEqual(config["trusted_proxies"], SAMPLE["SubnetCidrs"])
        self.assertEqual(config["buckets"], [{"name": b, "access": "read-write"} for b in SAMPLE["AllowedBuckets"]])
        self.assertEqual(config["s3"]["regions"], ["us-west-2"])
        self.assertNotIn("allowed_networks", config["dns"])
        self.assertEqual(config["limits"]["shutdown_delay"], "25s")
        self.assertEqual(config["limits"]["drain_timeout"], "300s")
        with_networks = yaml.safe_load(self.config_from(
            self.user_data(S3PrefixListCidrs=["52.218.128.0/17", "3.5.76.0/22"])))
        self.assertEqual(with_networks["dns"]["allowed_networks"], ["52.218.128.0/17", "3.5.76.0/22"])
        # S3 Express: its directory buckets follow AllowedBuckets, its prefix list's
        # entries follow the S3 one's in allowed_networks.
        express = yaml.safe_load(self.config_from(self.user_data(**EXPRESS)))
        self.assertEqual(express["buckets"], [{"name": b, "access": "read-write"}
                                              for b in SAMPLE["AllowedBuckets"] + EXPRESS["S3ExpressBuckets"]])
        self.assertNotIn("allowed_networks", express["dns"])
        for s3, s3express in ((["52.218.128.0/17"], ["3.5.0.0/19", "18.0.0.0/20"]),
                              ([""], ["3.5.0.0/19"]),
                              (["52.218.128.0/17", "3.5.76.0/22"], [""])):
            networks = yaml.safe_load(self.config_from(self.user_data(
                S3PrefixListCidrs=s3, S3ExpressPrefixListCidrs=s3express, **EXPRESS)))["dns"]["allowed_networks"]
            self.assertEqual(networks, [n for n in s3 + s3express if n])

    def test_user_data_config_passes_check(self):
        if not BIN:
            self.skipTest("S3GATE_BIN not set: the s3gate binary checks the generated s3gate.yaml")
        with tempfile.TemporaryDirectory(prefix="s3gate-cfn-") as tmp:
            for label, overrides in (("default", {}),
                                     ("allowed_networks", {"S3PrefixListCidrs": ["52.218.128.0/17", "3.5.76.0/22"]}),
                                     ("one of each", {"StudioCidrs": ["10.20.0.0/16"], "SubnetCidrs": ["10.0.0.0/24"],
                                                      "AllowedBuckets": ["studio-media"]}),
                                     ("express", dict(EXPRESS, S3PrefixListCidrs=["52.218.128.0/17"],
                                                      S3ExpressPrefixListCidrs=["3.5.0.0/19"]))):
                path = os.path.join(tmp, f"{label.replace(' ', '-')}.yaml")
                with open(path, "w", encoding="utf-8") as f:
                    f.write(self.config_from(self.user_data(**overrides)))
                out = subprocess.run([BIN, "-c", path, "--check"], capture_output=True, text=True, timeout=10)
                self.assertEqual((out.returncode, out.stdout.strip()), (0, "configuration OK"),
                                 f"{label}: {out.stdout}{out.stderr}")
            path = os.path.join(tmp, "default.yaml")

            def explain(client, target):
                return subprocess.run([BIN, "-c", path, "explain", client, "CONNECT", target],
                                      capture_output=True, text=True, timeout=10)

            out = explain("10.20.1.5", "studio-media.s3.us-west-2.amazonaws.com:443")
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
            out = explain("192.168.50.7", "studio-archive-2019.s3.us-west-2.amazonaws.com:443")
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
            for client, target, reason in (
                    ("10.20.1.5", "other-bucket.s3.us-west-2.amazonaws.com:443", "bucket_not_allowed"),
                    ("10.0.0.9", "studio-media.s3.us-west-2.amazonaws.com:443", "client_not_allowed"),
                    ("10.20.1.5", "studio-media.s3.eu-west-1.amazonaws.com:443", "region_not_allowed")):
                out = explain(client, target)
                self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
                self.assertIn(reason, out.stdout)

            # Directory buckets through the S3 Express names
            path = os.path.join(tmp, "express.yaml")
            for target in ("scratch--usw2-az1--x-s3.s3express-usw2-az1.us-west-2.amazonaws.com:443",
                           "cache--usw2-az3--x-s3.s3express-usw2-az3.us-west-2.amazonaws.com:443"):
                out = explain("10.20.1.5", target)
                self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
                self.assertIn("kind=express", out.stdout)
            out = explain("10.20.1.5", "other--usw2-az1--x-s3.s3express-usw2-az1.us-west-2.amazonaws.com:443")
            self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
            self.assertIn("bucket_not_allowed", out.stdout)


if __name__ == "__main__":
    unittest.main()
