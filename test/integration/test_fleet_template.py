"""The CloudFormation template of the fleet, packaging/aws/s3gate-fleet.yaml,
checked without AWS: it parses (CloudFormation's short-form tags included),
every name it refers to is one it defines, the load balancer and the security
groups are set up as the README's "Operations behind an NLB" says, and the
s3gate.yaml its UserData writes, with sample parameter values substituted,
passes `s3gate --check` and decides as intended ($S3GATE_BIN; skipped without).

Needs PyYAML (Debian: python3-yaml); skipped, with the reason, without it."""

import os
import re
import shutil
import subprocess
import tempfile
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
        body = text.split("\nResources:", 1)[1]
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
        endpoint = self.one("AWS::EC2::VPCEndpoint")
        endpoint_name = next(n for n, (b, _) in self.res.items() if b is endpoint)
        self.assertIn({"Ref": endpoint_name}, values)

    # ------------------------------------------------------ the deployment

    def test_gateway_endpoint(self):
        props = self.one("AWS::EC2::VPCEndpoint")["Properties"]
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
        # Inline egress replaces the default allow-all: HTTPS to the S3 prefix list, nothing else.
        self.assertEqual([(e["IpProtocol"], e["FromPort"], e["ToPort"], e.get("DestinationPrefixListId"))
                          for e in instance["SecurityGroupEgress"]],
                         [("tcp", 443, 443, {"Ref": "S3PrefixListId"})])
        self.assertEqual([(i["FromPort"], i.get("CidrIp")) for i in instance["SecurityGroupIngress"]],
                         [(9464, {"Ref": "MonitoringCidr"})])
        self.assertEqual([n for n, (b, _) in self.res.items() if b["Type"] == "AWS::EC2::SecurityGroupEgress"],
                         [], "a separate egress rule would sit next to the default allow-all")
        ingress = [b["Properties"] for _, b in self.of_type("AWS::EC2::SecurityGroupIngress")]
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
        self.assertRegex(script, r"(?m)^systemctl enable --now s3gate\.service$")
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

    def test_user_data_config_passes_check(self):
        if not BIN:
            self.skipTest("S3GATE_BIN not set: the s3gate binary checks the generated s3gate.yaml")
        with tempfile.TemporaryDirectory(prefix="s3gate-cfn-") as tmp:
            for label, overrides in (("default", {}),
                                     ("allowed_networks", {"S3PrefixListCidrs": ["52.218.128.0/17", "3.5.76.0/22"]}),
                                     ("one of each", {"StudioCidrs": ["10.20.0.0/16"], "SubnetCidrs": ["10.0.0.0/24"],
                                                      "AllowedBuckets": ["studio-media"]})):
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


if __name__ == "__main__":
    unittest.main()
