"""moto in server mode on loopback, and the AWS world our ingress tests start from.

One ``moto_server`` process per test session (starting it takes ~1.5 s); each test resets its state. boto3 reaches
it through the standard ``AWS_ENDPOINT_URL`` setting, exactly as the controller would reach AWS."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import boto3

from meshctl.devtools.envoy_process import free_port

REGION = "us-east-1"
_BIN = Path(sys.executable).parent / "moto_server"


class Moto:
    def __init__(self, recording: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.recording = recording  # where moto records every request it serves (tests/least_privilege.py)

    def start(self) -> None:
        env = dict(os.environ)
        if self.recording is not None:
            env.update(MOTO_ENABLE_RECORDING="true", MOTO_RECORDER_FILEPATH=str(self.recording))
        self.process = subprocess.Popen(
            [str(_BIN), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).read()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.05)

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=10).read()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def session(self) -> boto3.session.Session:
        return boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)

    def client(self, service: str):
        return self.session().client(service, endpoint_url=self.url)


@dataclass
class Network:
    vpc_id: str
    public: list[str]
    private: list[str]


def seed_network(moto: Moto) -> Network:
    """A VPC with two public and two private subnets, tagged the way LBC discovers them."""
    ec2 = moto.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    public, private = [], []
    for i, zone in enumerate(("us-east-1a", "us-east-1b")):
        for role, bucket, offset in (
            ("kubernetes.io/role/elb", public, 0),
            ("kubernetes.io/role/internal-elb", private, 10),
        ):
            subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{offset + i}.0/24", AvailabilityZone=zone)["Subnet"]
            ec2.create_tags(Resources=[subnet["SubnetId"]], Tags=[{"Key": role, "Value": "1"}])
            bucket.append(subnet["SubnetId"])
    return Network(vpc_id=vpc, public=public, private=private)


class RuleTransforms:
    """ALB rule transforms (host-header and URL rewrites, 2025) beside moto, which keeps none: CreateRule and
    ModifyRule take them, DescribeRules returns them, DeleteRule drops them, through the same boto3 calls (botocore
    event hooks on each client given to ``attach``). The one fake where moto cannot behave like AWS."""

    _EVENT = "elastic-load-balancing-v2"

    def __init__(self) -> None:
        self.by_rule: dict[str, list[dict]] = {}

    def attach(self, *clients) -> None:
        for client in clients:
            events = client.meta.events
            for operation in ("CreateRule", "ModifyRule"):
                events.register(f"before-parameter-build.{self._EVENT}.{operation}", self._take)
                events.register(f"after-call.{self._EVENT}.{operation}", self._keep)
            events.register(f"after-call.{self._EVENT}.DescribeRules", self._describe)
            events.register(f"before-parameter-build.{self._EVENT}.DeleteRule", self._drop)

    @staticmethod
    def _take(params, context, **_) -> None:
        if "Transforms" in params:
            context["transforms"] = params.pop("Transforms")
        if params.pop("ResetTransforms", False):
            context["transforms"] = []

    def _keep(self, parsed, context, **_) -> None:
        if "transforms" in context:
            for rule in parsed.get("Rules", []):
                self.by_rule[rule["RuleArn"]] = context["transforms"]

    def _describe(self, parsed, **_) -> None:
        for rule in parsed.get("Rules", []):
            if self.by_rule.get(rule["RuleArn"]):
                rule["Transforms"] = self.by_rule[rule["RuleArn"]]

    def _drop(self, params, **_) -> None:
        self.by_rule.pop(params.get("RuleArn", ""), None)
