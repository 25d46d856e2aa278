"""App Mesh VirtualNodes -> our VirtualNodes (and the Services their discovery implies)."""

from __future__ import annotations

import json
import re
from typing import Any

from meshctl.appmesh.fields import Report, dns_label
from meshctl.appmesh.objects import CLUSTER_DNS, LISTENER_FIELDS, AppMeshObject

__all__ = ["NodeConversion"]


class NodeConversion:
    """The node half of the conversion; ``convert._Converter`` holds the state it reads and writes."""

    report: Report
    by_kind: dict[str, dict[tuple[str, str], AppMeshObject]]
    input_services: dict[tuple[str, str], dict[str, Any]]
    service_ports: dict[tuple[str, str], set[tuple[int, str]]]
    vs_service: dict[tuple[str, str], tuple[str, str]]
    node_selector: dict[tuple[str, str], dict[str, str]]

    def _all(self, kind: str) -> list[AppMeshObject]:
        return [self.by_kind[kind][k] for k in sorted(self.by_kind[kind])]

    def _emit(self, kind: str, namespace: str, name: str, spec: dict[str, Any], source: AppMeshObject | None) -> None:
        raise NotImplementedError

    # --- VirtualNodes and gateways ------------------------------------------------------------------------

    def _virtual_node(self, node: AppMeshObject) -> None:
        s, subject = node.spec, node.subject
        dropped = {
            "serviceDiscovery": "endpoints come from the Services that select the node's pods",
            "meshRef": "not needed",
            "awsName": "the VirtualNode's own name is used",
        }
        known = ("podSelector", "listeners", "backends", "backendGroups", "backendDefaults", "logging")
        handled = ("serviceDiscovery", "meshRef", "awsName")  # converted by _discovery, or not needed
        src = self.report.copy_known({k: v for k, v in s.items() if k not in handled}, known, subject, "spec", dropped)
        spec: dict[str, Any] = {}
        external = self._external_dns(node)
        if external is not None:
            spec["serviceDiscovery"] = {"dns": external}
        elif src.get("podSelector") is None and (cloud_map := self._cloud_map_only(node)) is not None:
            external = cloud_map
            spec["serviceDiscovery"] = {"awsCloudMap": cloud_map}
        if src.get("podSelector") is not None or external is None:
            spec["podSelector"] = self._selector(src.get("podSelector"), subject)
        listeners = []
        for i, listener in enumerate(src.get("listeners") or []):
            converted = self.report.copy_known(listener, (*LISTENER_FIELDS, "tls"), subject, f"spec.listeners[{i}]")
            if "tls" in converted:
                tls = self._listener_tls(converted.pop("tls"), subject, f"spec.listeners[{i}].tls")
                if tls:
                    converted["tls"] = tls
            listeners.append(converted)
        if listeners:
            spec["listeners"] = listeners
        defaults = self.report.copy_known(
            src.get("backendDefaults"), ("clientPolicy",), subject, "spec.backendDefaults"
        )
        if "clientPolicy" in defaults:
            policy = self._client_policy(defaults["clientPolicy"], subject, "spec.backendDefaults.clientPolicy")
            if policy:
                spec["backendDefaults"] = {"clientPolicy": policy}
        backends = self._backends(node, src)
        if backends:
            spec["backends"] = backends
        if src.get("logging") is not None:
            spec["logging"] = src["logging"]
        self._discovery(node, spec)
        self._emit("VirtualNode", node.namespace, node.name, spec, node)

    def _listener_tls(self, tls: Any, subject: str, path: str) -> dict[str, Any]:
        """App Mesh listener TLS: the mode, file and SDS (SPIRE) sources and SANs carry over; an ACM source
        becomes the mesh CA's (said per field)."""
        src = self.report.copy_known(tls, ("mode", "certificate", "validation"), subject, path)
        return {"mode": src.get("mode", "STRICT")} | self._tls_sources(src, subject, path)

    def _client_policy(self, policy: Any, subject: str, path: str) -> dict[str, Any] | None:
        """App Mesh ``clientPolicy.tls``: enforce, ports and the same sources as a listener's."""
        src = self.report.copy_known(policy, ("tls",), subject, path)
        tls = self.report.copy_known(
            src.get("tls"), ("enforce", "ports", "certificate", "validation"), subject, f"{path}.tls"
        )
        if not tls:
            return None
        out = {k: tls[k] for k in ("enforce", "ports") if k in tls}
        return {"tls": out | self._tls_sources(tls, subject, f"{path}.tls")}

    def _tls_sources(self, src: dict[str, Any], subject: str, path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        certificate = self.report.copy_known(
            src.get("certificate"),
            ("file", "sds"),
            subject,
            f"{path}.certificate",
            {
                "acm": "the mesh CA issues the workload certificate (serve --acm-pca-arn makes AWS Private CA "
                "its issuer)",
            },
        )
        if certificate:
            out["certificate"] = certificate
        validation = self.report.copy_known(
            src.get("validation"), ("trust", "subjectAlternativeNames"), subject, f"{path}.validation"
        )
        trust = self.report.copy_known(
            validation.get("trust"),
            ("file", "sds"),
            subject,
            f"{path}.validation.trust",
            {"acm": "the mesh CA's roots are trusted"},
        )
        converted: dict[str, Any] = {}
        if trust:
            converted["trust"] = trust
        if validation.get("subjectAlternativeNames"):
            converted["subjectAlternativeNames"] = validation["subjectAlternativeNames"]
        if converted:
            out["validation"] = converted
        if "sds" in certificate or "sds" in trust:
            self.report.note(
                subject,
                path,
                "sds sources are read from the node's SDS agent (SPIRE): give each proxy its socket "
                "(meshctl bootstrap --sds-socket)",
            )
        return out

    def _selector(self, selector: Any, subject: str) -> dict[str, Any]:
        sel = self.report.copy_known(
            selector,
            ("matchLabels",),
            subject,
            "spec.podSelector",
            {"matchExpressions": "only matchLabels select pods in meshctl"},
        )
        return {"matchLabels": dict(sel.get("matchLabels") or {})}

    def _backends(self, node: AppMeshObject, src: dict[str, Any]) -> list[dict[str, Any]]:
        refs: list[tuple[str, str, str]] = []  # (namespace, name, field path)
        policies: dict[str, dict[str, Any]] = {}  # by field path: a backend's own client policy
        for i, backend in enumerate(src.get("backends") or []):
            path = f"spec.backends[{i}].virtualService"
            vs = self.report.copy_known(
                (backend or {}).get("virtualService"),
                ("virtualServiceRef", "clientPolicy"),
                node.subject,
                path,
                {"virtualServiceARN": "cannot be resolved; backend dropped"},
            )
            ref = vs.get("virtualServiceRef") or {}
            if ref.get("name"):
                refs.append((ref.get("namespace") or node.namespace, ref["name"], f"spec.backends[{i}]"))
                if "clientPolicy" in vs and (
                    policy := self._client_policy(vs["clientPolicy"], node.subject, f"{path}.clientPolicy")
                ):
                    policies[f"spec.backends[{i}]"] = policy
        for i, group in enumerate(src.get("backendGroups") or []):
            key = ((group or {}).get("namespace") or node.namespace, str((group or {}).get("name")))
            bg = self.by_kind["BackendGroup"].get(key)
            if bg is None:
                self.report.error(
                    node.subject,
                    f"spec.backendGroups[{i}]",
                    f"BackendGroup {key[0]}/{key[1]} not in the input",
                    "ignored",
                )
                continue
            members = bg.spec.get("virtualservices") or bg.spec.get("virtualServices") or []
            refs.extend(
                (str(m.get("namespace") or bg.namespace), str(m.get("name")), f"spec.backendGroups[{i}]")
                for m in members
                if isinstance(m, dict)
            )
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for ns, name, path in refs:
            svc = self.vs_service.get((ns, name))
            if svc is None:
                self.report.error(node.subject, path, f"VirtualService {ns}/{name} not in the input", "backend dropped")
                continue
            ref_out = {"name": svc[1]} | ({"namespace": svc[0]} if svc[0] != node.namespace else {})
            virtual_service: dict[str, Any] = {"virtualServiceRef": ref_out}
            if path in policies:
                virtual_service["clientPolicy"] = policies[path]
            elif svc in out and "clientPolicy" in out[svc]["virtualService"]:
                continue  # the same Service twice (a backend and a group member): its policy stays
            out[svc] = {"virtualService": virtual_service}
        return [out[k] for k in sorted(out)]

    def _in_cluster(self, hostname: str) -> re.Match[str] | None:
        """The Service a DNS hostname names, when it is one of the cluster's: ``svc``, ``svc.ns``,
        ``svc.ns.svc[.cluster.local]``, ``ns`` being a namespace of the imported objects (``github.com`` is not)."""
        m = CLUSTER_DNS.fullmatch(hostname.lower().rstrip("."))
        if m is None:
            return None
        namespace = m.group(2)
        suffixed = hostname.lower().rstrip(".").endswith((".svc", ".svc.cluster.local"))
        known = {ns for objects in self.by_kind.values() for ns, _ in objects}
        return m if namespace is None or suffixed or namespace in known else None

    def _external_dns(self, node: AppMeshObject) -> dict[str, Any] | None:
        """``serviceDiscovery.dns`` of a host outside the cluster, as meshctl's VirtualNode takes it (the control
        plane resolves ENDPOINTS names; each Envoy LOADBALANCER ones)."""
        sd = node.spec.get("serviceDiscovery") or {}
        dns = sd.get("dns") if isinstance(sd, dict) else None
        if not isinstance(dns, dict) or not isinstance(dns.get("hostname"), str):
            return None
        if self._in_cluster(dns["hostname"]) is not None:
            return None
        out: dict[str, Any] = {"hostname": dns["hostname"]}
        for key in ("responseType", "ipPreference"):
            if isinstance(dns.get(key), str):
                out[key] = dns[key]
        how = (
            "each caller's Envoy resolves it"
            if out.get("responseType", "LOADBALANCER") == "LOADBALANCER"
            else ("the control plane resolves it and serves every address")
        )
        self.report.note(node.subject, "spec.serviceDiscovery.dns", f"DNS discovery of {dns['hostname']}: {how}")
        return out

    def _cloud_map_only(self, node: AppMeshObject) -> dict[str, Any] | None:
        """``serviceDiscovery.awsCloudMap`` of a node with no pods (ECS tasks, EC2 instances): meshctl discovers its
        instances in Cloud Map as App Mesh did. (A node with pods keeps finding them by their Services: nobody
        registers pods in Cloud Map once App Mesh's controller is gone.)"""
        sd = node.spec.get("serviceDiscovery") or {}
        cm = sd.get("awsCloudMap") if isinstance(sd, dict) else None
        if not isinstance(cm, dict) or not all(isinstance(cm.get(k), str) for k in ("namespaceName", "serviceName")):
            return None
        out: dict[str, Any] = {"namespaceName": cm["namespaceName"], "serviceName": cm["serviceName"]}
        attributes = [a for a in cm.get("attributes") or [] if isinstance(a, dict)]
        if attributes:
            out["attributes"] = [{"key": str(a.get("key")), "value": str(a.get("value"))} for a in attributes]
        if isinstance(cm.get("ipPreference"), str):
            out["ipPreference"] = cm["ipPreference"]
        self.report.note(
            node.subject,
            "spec.serviceDiscovery.awsCloudMap",
            f"Cloud Map discovery of {cm['namespaceName']}/{cm['serviceName']}: the control plane lists its instances "
            "(IAM: deploy/iam/discovery-policy.json)",
        )
        return out

    def _discovery(self, node: AppMeshObject, spec: dict[str, Any]) -> None:
        """A Service selecting the node's pods, named as App Mesh found it, when the input has none."""
        sd = node.spec.get("serviceDiscovery") or {}
        name = None
        if "serviceDiscovery" in spec:
            return  # found by DNS outside the cluster: no Service to write
        if isinstance(sd.get("dns"), dict) and isinstance(sd["dns"].get("hostname"), str):
            m = self._in_cluster(sd["dns"]["hostname"])
            name = m.group(1) if m else None
        elif isinstance(sd.get("awsCloudMap"), dict):
            cm = sd["awsCloudMap"]
            name = dns_label(str(cm.get("serviceName", node.name)))
            if cm.get("attributes"):
                self.report.lossy(
                    node.subject,
                    "spec.serviceDiscovery.awsCloudMap.attributes",
                    "Cloud Map attributes select instances",
                    f"Service {node.namespace}/{name} selects the pods of spec.podSelector instead",
                )
            self.report.note(
                node.subject,
                "spec.serviceDiscovery.awsCloudMap",
                f"Cloud Map discovery: Service {node.namespace}/{name} is written to select the node's pods",
            )
        if name and not self._selects(node.namespace, spec["podSelector"]["matchLabels"]):
            ports = {
                (li["portMapping"]["port"], str(li["portMapping"].get("protocol", "http")))
                for li in spec.get("listeners", [])
                if isinstance((li.get("portMapping") or {}).get("port"), int)
            }
            self.service_ports.setdefault((node.namespace, name), set()).update(ports)
            self.node_selector[(node.namespace, name)] = spec["podSelector"]["matchLabels"]

    def _selects(self, namespace: str, labels: dict[str, str]) -> bool:
        """Whether an input Service selects pods with these labels (so their endpoints exist)."""
        for (ns, _), svc in self.input_services.items():
            selector = (svc.get("spec") or {}).get("selector") or {}
            if ns == namespace and selector and all(labels.get(k) == v for k, v in selector.items()):
                return True
        return False


def _describe_match(match: dict[str, Any]) -> str:
    parts = [f"{k}={json.dumps(v, sort_keys=True)}" for k, v in sorted(match.items())]
    return " ".join(parts) or "(any)"
