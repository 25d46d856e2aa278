"""Where ``meshctl shift`` writes a Route's weights: the manifest file it came from (an atomic edit that keeps
comments and layout) or the Kubernetes API (a merge patch carrying the resourceVersion it read, so a concurrent
edit is refused rather than overwritten)."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from meshctl.cli.client import CliError

__all__ = ["GATEWAY_KINDS", "KubernetesWriter", "ManifestWriter", "RouteWriter", "route_targets"]

_ROUTE_KINDS = ("httpRoute", "grpcRoute", "http2Route", "tcpRoute")


# Gateway API routes: their weights are a rule's backendRefs (``rule``: which rule).
GATEWAY_KINDS = {"httproute": "HTTPRoute", "grpcroute": "GRPCRoute"}
_GATEWAY_PLURALS = {"HTTPRoute": "httproutes", "GRPCRoute": "grpcroutes"}


def route_targets(spec: dict[str, Any], rule: int | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The route kind key (httpRoute, ...) and its weightedTargets list; for a Gateway API route (``rule`` given),
    ("rules", that rule's backendRefs)."""
    if rule is not None:
        rules = spec.get("rules")
        if not isinstance(rules, list) or not 0 <= rule < len(rules) or not isinstance(rules[rule], dict):
            raise CliError(f"the route has no rule {rule}")
        refs = rules[rule].get("backendRefs")
        if not isinstance(refs, list) or not refs:
            raise CliError(f"rule {rule} of the route has no backendRefs to shift")
        return "rules", refs
    for kind in _ROUTE_KINDS:
        if isinstance(spec.get(kind), dict):
            targets = spec[kind].get("action", {}).get("weightedTargets")
            if isinstance(targets, list):
                return kind, targets
    raise CliError("the Route has no action.weightedTargets to shift")


class RouteWriter(Protocol):
    def read(self) -> dict[str, Any]:
        """The Route's spec as written."""
        ...

    def write(self, targets: list[dict[str, Any]]) -> str:
        """Replaces its weightedTargets; returns where it was written."""
        ...


class ManifestWriter:
    def __init__(
        self, directory: Path, origin: str, namespace: str, name: str, kind: str = "Route", rule: int | None = None
    ) -> None:
        self.path = directory / origin.split("#", 1)[0]
        self.namespace, self.name, self.kind, self.rule = namespace, name, kind, rule
        from ruamel.yaml import YAML

        self.yaml = YAML()  # round-trip: comments, order and quoting survive
        self.yaml.preserve_quotes = True

    def _load(self) -> tuple[list[Any], Any]:
        try:
            text = self.path.read_text()
            mapping, sequence, offset = _guess_indent(text)
            self.yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
            docs = list(self.yaml.load_all(text))
        except OSError as exc:
            raise CliError(f"cannot read {self.path}: {exc}") from None
        for doc in docs:
            meta = (doc or {}).get("metadata") or {}
            if (
                (doc or {}).get("kind") == self.kind
                and meta.get("name") == self.name
                and (meta.get("namespace") or "default") == self.namespace
            ):
                return docs, doc
        raise CliError(f"{self.kind} {self.namespace}/{self.name} is no longer in {self.path}")

    def read(self) -> dict[str, Any]:
        _, doc = self._load()
        return dict(doc.get("spec") or {})

    def write(self, targets: list[dict[str, Any]]) -> str:
        docs, doc = self._load()
        _, current = route_targets(doc["spec"], self.rule)
        # Edit the weights in place where the target is already listed, so its comments stay beside it.
        by_name = {_target_key(t): t for t in current}
        kept = []
        for t in targets:
            existing = by_name.get(_target_key(t))
            if existing is not None:
                existing["weight"] = t["weight"]
                kept.append(existing)
            else:
                kept.append(t)
        current[:] = kept
        out = io.StringIO()
        self.yaml.dump_all(docs, out)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(out.getvalue())
        os.chmod(tmp, self.path.stat().st_mode & 0o7777)
        os.replace(tmp, self.path)  # atomic: the control plane never reads half a file
        return str(self.path)


class _GuessOnly:
    """``load_yaml_guess_indent`` loads one document with the YAML object it is given; a manifest may hold several
    (read by ``load_all`` after), so only its guess is taken."""

    def load(self, _stream: str) -> None:
        return None


def _guess_indent(text: str) -> tuple[int, int, int]:
    """The file's own style, from ruamel.yaml's guess, so an edit changes only the weights: (mapping indent,
    sequence indent, dash offset). ruamel guesses the mapping indent only where there is no sequence; with one, it
    is the sequence's content indent less the dash offset (2 in the usual styles)."""
    from ruamel.yaml.util import load_yaml_guess_indent

    _, sequence, offset = load_yaml_guess_indent(text, yaml=_GuessOnly())
    if sequence is None:
        return 2, 2, 0
    if offset is None:  # no sequence: the guess is the mapping indent
        return sequence, sequence, 0
    return max(sequence - offset, 1), sequence, offset


def _target_key(t: dict[str, Any]) -> tuple[str, str | None, Any]:
    if "virtualNodeRef" not in t:  # a backendRef
        return t.get("name", ""), t.get("namespace"), t.get("port")
    ref = t.get("virtualNodeRef") or {}
    return ref.get("name", ""), ref.get("namespace"), t.get("port")


class KubernetesWriter:
    GROUP, VERSION, PLURAL = "mesh.meshctl.dev", "v1alpha1", "routes"

    def __init__(
        self, kubeconfig: str | None, namespace: str, name: str, kind: str = "Route", rule: int | None = None
    ) -> None:
        from kubernetes import client

        from meshctl.kube.config import api_client

        try:
            api = api_client(kubeconfig)
        except Exception as exc:  # the client raises several kinds for a missing or broken kubeconfig
            raise CliError(f"cannot load a kubeconfig: {exc}") from None
        self.api = client.CustomObjectsApi(api)
        self.namespace, self.name, self.kind, self.rule = namespace, name, kind, rule
        if kind in _GATEWAY_PLURALS:
            self.GROUP, self.VERSION, self.PLURAL = "gateway.networking.k8s.io", "v1", _GATEWAY_PLURALS[kind]
        self.resource_version: str | None = None

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(self.GROUP, self.VERSION, self.namespace, self.PLURAL, self.name, *args, **kwargs)
        except ApiException as exc:
            if exc.status == 409:  # for the caller to decide (write)
                raise
            raise CliError(f"Kubernetes API: {exc.status} {exc.reason}") from None
        except OSError as exc:
            raise CliError(f"cannot reach the Kubernetes API: {exc}") from None

    def read(self) -> dict[str, Any]:
        obj = self._call(self.api.get_namespaced_custom_object)
        self.resource_version = obj["metadata"]["resourceVersion"]
        self._spec: dict[str, Any] = dict(obj.get("spec") or {})
        return self._spec

    def write(self, targets: list[dict[str, Any]]) -> str:
        """Patches the version read last (``read`` first if nothing was read)."""
        spec = self._spec if self.resource_version is not None else self.read()
        kind, _ = route_targets(spec, self.rule)
        changed: dict[str, Any] = {kind: {"action": {"weightedTargets": targets}}}
        if self.rule is not None:  # a merge patch replaces lists whole: every rule, this one's backendRefs new
            rules = [dict(r) for r in spec["rules"]]
            rules[self.rule]["backendRefs"] = targets
            changed = {"rules": rules}
        body = {"metadata": {"resourceVersion": self.resource_version}, "spec": changed}
        from meshctl.kube.conflicts import unless_conflict

        # A conflict is not retried: the change shown was computed from what was read, and someone changed it since.
        if not unless_conflict(lambda: self._call(self.api.patch_namespaced_custom_object, body)):
            raise CliError(
                f"{self.kind} {self.namespace}/{self.name} changed since it was read (resourceVersion "
                f"{self.resource_version}); nothing was written, run the command again"
            )
        self.resource_version = None  # the next write reads again
        return f"routes.{self.GROUP}/{self.name} in namespace {self.namespace}"
