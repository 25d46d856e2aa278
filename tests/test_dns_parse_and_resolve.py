"""DNS discovery without Envoy: the VirtualNode fields as App Mesh wrote them, the clusters they become, and the
control plane's resolver against a DNS server on loopback (answers, NXDOMAIN, no server, address preference)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshctl.model import DnsAnswer, DnsResponseType, IpPreference, ObjectKey
from meshctl.parse.virtualnode import parse_virtual_node_spec
from meshctl.sources import load_manifests
from meshctl.sources.dns import DnsError, DnsResolver, system_resolvers
from meshctl.translate import translate_mesh
from tests.dns_server import LoopbackDns
from tests.manifests import API, route, service, virtual_node, write


def spec(**discovery: object) -> dict:
    return {"serviceDiscovery": discovery, "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}


def test_dns_fields_as_app_mesh_wrote_them() -> None:
    parsed, errors = parse_virtual_node_spec(spec(dns={"hostname": "API.Example.com."}), "demo")
    assert errors == [] and parsed is not None and parsed.dns is not None
    assert parsed.dns.hostname == "api.example.com" and parsed.pod_selector == {}
    assert parsed.dns.response_type is DnsResponseType.LOADBALANCER  # App Mesh's default
    both, _ = parse_virtual_node_spec(
        spec(dns={"hostname": "a.test", "responseType": "ENDPOINTS", "ipPreference": "IPv4_ONLY"}), "demo"
    )
    assert both is not None and both.dns is not None
    assert (both.dns.response_type, both.dns.ip_preference) == (DnsResponseType.ENDPOINTS, IpPreference.IPV4_ONLY)


@pytest.mark.parametrize(
    ("discovery", "path", "message"),
    [
        ({"dns": {"hostname": "bad_name.test"}}, "spec.serviceDiscovery.dns.hostname", "must be a DNS name"),
        ({"dns": {}}, "spec.serviceDiscovery.dns.hostname", "required"),
        ({"dns": {"hostname": "a.test", "responseType": "ALL"}}, "spec.serviceDiscovery.dns.responseType", ""),
        ({"dns": {"hostname": "a.test", "ipPreference": "IPv5"}}, "spec.serviceDiscovery.dns.ipPreference", ""),
        ({}, "spec.podSelector", "required"),  # no DNS: the node must select pods
    ],
)
def test_bad_dns_fields_name_the_field(discovery: dict, path: str, message: str) -> None:
    parsed, errors = parse_virtual_node_spec(spec(**discovery), "demo")
    assert parsed is None and any(e.path == path and message in e.message for e in errors), errors


def test_cloud_map_fields_as_app_mesh_wrote_them() -> None:
    document = spec(
        awsCloudMap={
            "namespaceName": "shop.local",
            "serviceName": "backend",
            "attributes": [{"key": "stage", "value": "prod"}, {"key": "az", "value": "a"}],
            "ipPreference": "IPv6_PREFERRED",
        }
    )
    parsed, errors = parse_virtual_node_spec(document, "demo")
    assert errors == [] and parsed is not None and parsed.cloud_map is not None and parsed.pod_selector == {}
    assert parsed.cloud_map.attributes == (("az", "a"), ("stage", "prod"))  # sorted: one key per discovery
    assert parsed.cloud_map.key == "shop.local/backend?az=a&stage=prod"
    both, errors = parse_virtual_node_spec(
        spec(dns={"hostname": "a.test"}, awsCloudMap={"namespaceName": "n", "serviceName": "s"}), "demo"
    )
    assert both is None and any("set one of dns, awsCloudMap" in e.message for e in errors), errors
    twice, errors = parse_virtual_node_spec(
        spec(awsCloudMap={"namespaceName": "n", "serviceName": "s", "attributes": [{"key": "a", "value": "1"}] * 2}),
        "demo",
    )
    assert twice is None and any("'a' is given twice" in e.message for e in errors), errors


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=30),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
        max_leaves=12,
    ),
    st.sampled_from(["dns", "awsCloudMap", "serviceDiscovery"]),
)
def test_malformed_discovery_never_raises(value: object, where: str) -> None:
    document = spec(dns=value) if where == "dns" else spec(awsCloudMap=value)
    if where == "serviceDiscovery":
        document = {**spec(), "serviceDiscovery": value}
    parsed, errors = parse_virtual_node_spec(document, "demo")
    assert parsed is not None or errors


def test_endpoints_nodes_are_eds_from_the_answers_and_loadbalancer_nodes_are_envoys_logical_dns(tmp_path) -> None:
    def node(name: str, response_type: str) -> dict:
        return {
            "apiVersion": API,
            "kind": "VirtualNode",
            "metadata": {"name": name, "namespace": "demo"},
            "spec": {
                "serviceDiscovery": {"dns": {"hostname": f"{name}.test", "responseType": response_type}},
                "listeners": [{"portMapping": {"port": 443, "protocol": "http"}}],
            },
        }

    write(
        tmp_path / "m.yaml",
        service("ext"),
        node("many", "ENDPOINTS"),
        node("one", "LOADBALANCER"),
        route("ext", "ext", {"many": 50, "one": 50}),
        virtual_node("client", backends=["ext"]),
    )
    from dataclasses import replace

    model = load_manifests(tmp_path)
    answered = replace(model, dns={"many.test": DnsAnswer(addresses=("10.0.0.1", "10.0.0.2"))})
    mesh = translate_mesh(answered)
    many, one = mesh.clusters["demo/many/443"], mesh.clusters["demo/one/443"]
    assert many.eds and [e.address for e in mesh.endpoints["demo/many/443"]] == ["10.0.0.1", "10.0.0.2"]
    assert not one.eds and one.dns is not None and one.dns.logical and one.dns.hostname == "one.test"
    conditions = {c.type: c for c in mesh.status_by_key[ObjectKey("VirtualNode", "demo", "many")].conditions}
    assert conditions["Resolved"].status == "True" and "10.0.0.1, 10.0.0.2" in conditions["Resolved"].message
    pending = {c.type for c in mesh.status_by_key[ObjectKey("VirtualNode", "demo", "one")].conditions}
    assert "Resolved" not in pending  # not looked up: nothing said
    failed = translate_mesh(
        replace(model, dns={"many.test": DnsAnswer(addresses=("10.0.0.1",), error="many.test: NXDOMAIN")})
    )
    resolved = {c.type: c for c in failed.status_by_key[ObjectKey("VirtualNode", "demo", "many")].conditions}[
        "Resolved"
    ]
    assert resolved.status == "False" and resolved.reason == "ResolutionFailed"
    assert resolved.message == "many.test: NXDOMAIN; serving the last addresses 10.0.0.1"
    assert [e.address for e in failed.endpoints["demo/many/443"]] == ["10.0.0.1"]


async def test_the_resolver_answers_fails_clearly_and_follows_the_preference() -> None:
    dns = LoopbackDns({"two.test": ["10.0.0.2", "10.0.0.1"]}, ttl=7)
    dns.start()
    try:
        resolver = DnsResolver([dns.address])
        assert await resolver.resolve("two.test", IpPreference.IPV4_ONLY) == (("10.0.0.1", "10.0.0.2"), 7.0)
        # IPv6 first (App Mesh's default), then IPv4 when there is no AAAA record.
        assert (await resolver.resolve("two.test", None))[0] == ("10.0.0.1", "10.0.0.2")
        with pytest.raises(DnsError, match="no address"):
            await resolver.resolve("two.test", IpPreference.IPV6_ONLY)
        with pytest.raises(DnsError, match="NXDOMAIN"):
            await resolver.resolve("none.test", IpPreference.IPV4_ONLY)
    finally:
        dns.stop()
    from meshctl.devtools.envoy_process import free_port

    silent = DnsResolver([f"127.0.0.1:{free_port()}"])  # nobody answers there
    with pytest.raises(DnsError, match="no answer"):
        await asyncio.wait_for(silent.resolve("two.test", IpPreference.IPV4_ONLY), 10)


def test_system_resolvers_read_resolv_conf(tmp_path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("search svc.cluster.local\nnameserver 10.96.0.10\nnameserver fd00::a\noptions ndots:5\n")
    assert system_resolvers(conf) == ("10.96.0.10:53", "[fd00::a]:53")
    assert system_resolvers(tmp_path / "missing") == ("127.0.0.1:53",)


def test_the_egress_filter_label_is_read_and_a_bad_one_named(tmp_path) -> None:
    from meshctl.model import EgressFilter

    write(
        tmp_path / "ns.yaml",
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": "shop", "labels": {"mesh.meshctl.dev/egress-filter": "DROP_ALL"}}},
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": "bad", "labels": {"mesh.meshctl.dev/egress-filter": "drop"}}},
    )  # fmt: skip
    model = load_manifests(tmp_path)
    assert model.namespaces[ObjectKey("Namespace", "", "shop")].egress_filter is EgressFilter.DROP_ALL
    mesh = translate_mesh(model)
    assert mesh.egress_filters == {"shop": EgressFilter.DROP_ALL}
    assert any("mesh.meshctl.dev/egress-filter" in e and "ALLOW_ALL, DROP_ALL" in e for e in model.load_errors), (
        model.load_errors
    )
