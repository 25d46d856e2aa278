"""What injection adds to a pod: pure (pod JSON in, JSON Patch out), so the webhook only does HTTP.

A pod is injected when its namespace is labelled ``meshctl.dev/inject=enabled`` (the webhook's namespaceSelector
decides that), it does not opt out (annotation or label ``meshctl.dev/inject: disabled``), it is not on the host
network, it is not injected already, and exactly one VirtualNode of its namespace selects it (or the annotation
``meshctl.dev/virtual-node`` names one). Anything else leaves the pod as it is, with a warning saying why: a pod is
never refused for the mesh's sake.

Added: the ``meshctl-capture`` init container (``meshctl capture``: iptables, root with NET_ADMIN and NET_RAW only)
and the ``meshctl-proxy`` Envoy (uid 1337, restricted securityContext), as a native sidecar (an init container
with ``restartPolicy: Always``, Kubernetes >= 1.29) or else as the first container. Envoy's bootstrap is inline in
its arguments: node id ``<namespace>/<virtual node>/<pod>`` from the downward API, the VirtualNode, the xDS
address and the CA that signed the control plane's certificate.

A pod labelled ``meshctl.dev/gateway: <Gateway name>`` (what ``meshctl install --gateway`` deploys) is an edge
gateway's proxy: its one container, ``meshctl-proxy``, gets the gateway Envoy's bootstrap (that Gateway of the pod's
namespace, the xDS address, CA and token); no capture, no VirtualNode.

A pod annotated ``meshctl.dev/proxyless: grpc`` gets neither: its gRPC library is the xDS client (issue 34), and
each container gets the bootstrap in ``GRPC_XDS_BOOTSTRAP_CONFIG`` (and the xDS CA as a file, with TLS).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshctl.inject.capture import CaptureConfig, CaptureError, capture_arguments, parse_ports, split_list
from meshctl.model.gateway import GATEWAY_NAME_LABEL
from meshctl.xds.bootstrap import DRAIN_ARGS, BootstrapOptions, render_bootstrap, render_grpc_bootstrap

__all__ = [
    "ANNOTATION_APP_PORTS",
    "ANNOTATION_IGNORED_CIDRS",
    "ANNOTATION_IGNORED_PORTS",
    "ANNOTATION_INJECTED",
    "ANNOTATION_PROXYLESS",
    "ANNOTATION_VIRTUAL_NODE",
    "ANNOTATION_XDS_CA",
    "CAPTURE_CONTAINER",
    "GATEWAY_LABEL",
    "GRPC_CA_FILE",
    "INJECT_KEY",
    "PROXY_CONTAINER",
    "InjectConfig",
    "Injection",
    "VirtualNodeRef",
    "inject",
]

INJECT_KEY = "meshctl.dev/inject"  # namespace label "enabled"; pod annotation or label "disabled" opts out
ANNOTATION_INJECTED = "meshctl.dev/injected"  # set by injection: the VirtualNode; a pod carrying it is left alone
ANNOTATION_VIRTUAL_NODE = "meshctl.dev/virtual-node"  # choose the VirtualNode (name in the pod's namespace)
ANNOTATION_APP_PORTS = "meshctl.dev/app-ports"  # inbound ports to capture (default: the VirtualNode's listeners)
ANNOTATION_IGNORED_PORTS = "meshctl.dev/egress-ignored-ports"  # added to the configured ones
ANNOTATION_IGNORED_CIDRS = "meshctl.dev/egress-ignored-cidrs"  # added to the configured ones
ANNOTATION_PROXYLESS = "meshctl.dev/proxyless"  # "grpc": no Envoy; the app's gRPC library streams xDS itself
ANNOTATION_XDS_CA = "meshctl.dev/xds-ca"  # set by proxyless injection: the xDS CA (public), mounted as a file
GATEWAY_LABEL = GATEWAY_NAME_LABEL  # an edge gateway's pod: the name of its Gateway (in the pod's namespace)
GRPC_CA_DIR = "/etc/meshctl/grpc"
GRPC_CA_FILE = GRPC_CA_DIR + "/ca.pem"
_GRPC_VOLUME = "meshctl-grpc-xds"
PROXY_CONTAINER = "meshctl-proxy"
CAPTURE_CONTAINER = "meshctl-capture"
STATS_PORT = 15090


@dataclass(frozen=True, slots=True)
class VirtualNodeRef:
    name: str
    pod_selector: Mapping[str, str]
    listener_ports: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class InjectConfig:
    proxy_image: str = "envoyproxy/envoy:v1.40.0"
    capture_image: str = "ghcr.io/meshctl/meshctl:0.1.0"  # the controller's image: it carries `meshctl capture`
    xds_address: str = "meshctl.meshctl-system.svc"
    xds_port: int = 18000
    xds_server_name: str | None = None  # the name the control plane's certificate carries (default xds_address)
    ca_pem: str | None = None  # the CA of the control plane's certificate: xDS over TLS (None: plaintext)
    native_sidecars: bool = True
    proxy_uid: int = 1337
    egress_port: int = 15001
    ingress_port: int = 15000
    # The proxy proves its ServiceAccount on the xDS stream with a projected token (audience meshctl) the kubelet
    # rotates (serve --xds-auth=kubernetes checks it); only with xDS over TLS (ca_pem).
    xds_token: bool = False
    # SPIRE's Workload API socket, mounted by the SPIFFE CSI driver (csi.spiffe.io): VirtualNode ``sds`` certificate
    # and trust sources are fetched from it (App Mesh's SPIRE integration). A CSI volume, not a hostPath: the pod
    # stays within the restricted Pod Security Standard.
    spiffe_csi: bool = False
    # The instance metadata service and the EKS Pod Identity agent: AWS SDKs get credentials there, directly.
    ignored_cidrs: tuple[str, ...] = ("169.254.169.254/32", "169.254.170.23/32")
    ignored_ports: tuple[int, ...] = (22,)
    proxy_resources: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}}
    )


@dataclass(frozen=True, slots=True)
class Injection:
    patch: list[dict[str, Any]]  # empty: the pod is left as it is
    warnings: tuple[str, ...] = ()
    virtual_node: str | None = None


def _skip(reason: str | None = None) -> Injection:
    return Injection([], (reason,) if reason else ())


def inject(
    pod: Mapping[str, Any], namespace: str, virtual_nodes: Iterable[VirtualNodeRef], config: InjectConfig
) -> Injection:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    if "disabled" in (annotations.get(INJECT_KEY), labels.get(INJECT_KEY)):
        return _skip()
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    if (gateway := labels.get(GATEWAY_LABEL)) is not None:  # (its meshctl-proxy container is there to be filled)
        if ANNOTATION_INJECTED in annotations:
            return _skip()
        return _inject_gateway(spec, annotations, namespace, gateway, str(account), config)
    if ANNOTATION_INJECTED in annotations or any(
        c.get("name") in (PROXY_CONTAINER, CAPTURE_CONTAINER)
        for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    ):
        return _skip()
    if spec.get("hostNetwork"):
        return _skip("meshctl: hostNetwork pods are not injected (capture would rewrite the node's iptables)")
    chosen = _virtual_node(annotations, labels, list(virtual_nodes))
    if isinstance(chosen, str):
        return _skip(chosen)
    if (proxyless := annotations.get(ANNOTATION_PROXYLESS)) is not None:
        if proxyless != "grpc":
            return _skip(f"meshctl: not injected: {ANNOTATION_PROXYLESS} must be 'grpc', got {proxyless!r}")
        return _inject_proxyless(spec, annotations, namespace, chosen.name, str(account), config)
    try:
        # Checked here as the init container would check it: a pod that cannot be captured stays as it is.
        rules = CaptureConfig(
            proxy_uid=config.proxy_uid,
            egress_port=config.egress_port,
            ingress_port=config.ingress_port,
            app_ports=(
                parse_ports(annotations[ANNOTATION_APP_PORTS])
                if ANNOTATION_APP_PORTS in annotations
                else chosen.listener_ports
            ),
            ignored_ports=config.ignored_ports + parse_ports(annotations.get(ANNOTATION_IGNORED_PORTS)),
            ignored_cidrs=config.ignored_cidrs + split_list(annotations.get(ANNOTATION_IGNORED_CIDRS)),
        )
    except CaptureError as exc:
        return _skip(f"meshctl: not injected: {exc}")
    capture = _capture_container(config.capture_image, rules)
    token = config.xds_token and config.ca_pem is not None
    proxy = _proxy_container(config, namespace, chosen.name, str(account), token_file=XDS_TOKEN_FILE if token else None)
    volumes = [v for wanted, v in ((token, _TOKEN_VOLUME), (config.spiffe_csi, _SPIFFE_VOLUME)) if wanted]
    patch = _volumes_added(spec, volumes) + _marked_injected(annotations, chosen.name)
    init_first = [capture, proxy] if config.native_sidecars else [capture]
    if spec.get("initContainers"):
        # Ours run before the pod's own init containers, whose traffic is then captured and proxied too.
        patch.extend({"op": "add", "path": f"/spec/initContainers/{i}", "value": c} for i, c in enumerate(init_first))
    else:
        patch.append({"op": "add", "path": "/spec/initContainers", "value": init_first})
    if not config.native_sidecars:
        patch.append({"op": "add", "path": "/spec/containers/0", "value": proxy})
    return Injection(patch, virtual_node=chosen.name)


def _inject_gateway(
    spec: Mapping[str, Any],
    annotations: Mapping[str, str],
    namespace: str,
    gateway: str,
    account: str,
    config: InjectConfig,
) -> Injection:
    """An edge gateway's pod: its ``meshctl-proxy`` container (there must be one) runs Envoy with the gateway's
    bootstrap, as the pod's uid, with the xDS token when the control plane checks tokens. Its Gateway listeners'
    ports below 1024 are bound 10,000 higher, so it needs no privilege."""
    containers = list(spec.get("containers") or [])
    at = next((i for i, c in enumerate(containers) if c.get("name") == PROXY_CONTAINER), None)
    if at is None:
        return _skip(f"meshctl: not injected: a {GATEWAY_LABEL} pod needs a container named {PROXY_CONTAINER}")
    if not _DNS_LABEL_RE.fullmatch(gateway):
        return _skip(f"meshctl: not injected: {GATEWAY_LABEL} {gateway!r} is not a Gateway name")
    token = config.xds_token and config.ca_pem is not None
    bootstrap = render_bootstrap(
        BootstrapOptions(
            node_id=f"{namespace}/{gateway}",  # replaced by --service-node: the pod's name is known at run time
            gateway=f"{namespace}/{gateway}",
            xds_address=config.xds_address,
            xds_port=config.xds_port,
            stats_port=STATS_PORT,
            xds_ca_pem=config.ca_pem,
            xds_server_name=config.xds_server_name,
            service_account=account,
            xds_token_file=XDS_TOKEN_FILE if token else None,
        )
    )
    proxy = dict(containers[at])
    proxy["args"] = [
        "--config-yaml",
        json.dumps(bootstrap, separators=(",", ":")),
        "--service-node",
        f"$(POD_NAMESPACE)/{gateway}/$(POD_NAME)",
        "--log-level",
        "info",
        "--disable-hot-restart",
        *DRAIN_ARGS,
    ]
    proxy["env"] = [
        *(proxy.get("env") or []),
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    if token:
        mount = {"name": "meshctl-xds-token", "mountPath": XDS_TOKEN_DIR, "readOnly": True}
        proxy["volumeMounts"] = [*(proxy.get("volumeMounts") or []), mount]
    patch = _volumes_added(spec, [_TOKEN_VOLUME] if token else []) + _marked_injected(annotations, gateway)
    patch.append({"op": "replace", "path": f"/spec/containers/{at}", "value": proxy})
    return Injection(patch, virtual_node=None)


_DNS_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _inject_proxyless(
    spec: Mapping[str, Any],
    annotations: Mapping[str, str],
    namespace: str,
    virtual_node: str,
    account: str,
    config: InjectConfig,
) -> Injection:
    """A pod whose gRPC library streams xDS itself (``meshctl.dev/proxyless: grpc``): no Envoy, no capture. Each
    container gets ``GRPC_XDS_BOOTSTRAP_CONFIG``, its node id naming the pod (the kubelet expands
    ``$(MESHCTL_POD_NAME)``). gRPC reads the xDS CA only from a file: the CA (public) rides on the pod as an
    annotation, which a downward API volume turns into ``/etc/meshctl/grpc/ca.pem``. Nothing runs as root and no
    image is pulled: the pod stays as restricted as it was."""
    tls = config.ca_pem is not None
    bootstrap = render_grpc_bootstrap(
        BootstrapOptions(
            node_id=f"{namespace}/{virtual_node}/$(MESHCTL_POD_NAME)",
            virtual_node=f"{namespace}/{virtual_node}",
            xds_address=config.xds_address,
            xds_port=config.xds_port,
            service_account=account,
        ),
        ca_file=GRPC_CA_FILE if tls else None,
    )
    env = [
        {"name": "MESHCTL_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "GRPC_XDS_BOOTSTRAP_CONFIG", "value": json.dumps(bootstrap, separators=(",", ":"))},
    ]
    mount = {"name": _GRPC_VOLUME, "mountPath": GRPC_CA_DIR, "readOnly": True}
    patch = _marked_injected(annotations, virtual_node)
    if tls:
        ca_annotation = f"/metadata/annotations/{_escape(ANNOTATION_XDS_CA)}"
        patch.append({"op": "add", "path": ca_annotation, "value": config.ca_pem})
        volume = {
            "name": _GRPC_VOLUME,
            "downwardAPI": {
                "items": [{"path": "ca.pem", "fieldRef": {"fieldPath": f"metadata.annotations['{ANNOTATION_XDS_CA}']"}}]
            },
        }
        patch += _volumes_added(spec, [volume])
    for i, container in enumerate(spec.get("containers") or []):
        at = f"/spec/containers/{i}"
        patch.extend(_appended(f"{at}/env", container.get("env"), env))
        if tls:
            patch.extend(_appended(f"{at}/volumeMounts", container.get("volumeMounts"), [mount]))
    return Injection(patch, virtual_node=virtual_node)


def _appended(path: str, present: list[Any] | None, items: list[Any]) -> list[dict[str, Any]]:
    """JSON Patch operations appending ``items`` to the list at ``path`` (made when absent)."""
    if not present:
        return [{"op": "add", "path": path, "value": items}]
    return [{"op": "add", "path": f"{path}/-", "value": item} for item in items]


def _virtual_node(
    annotations: Mapping[str, str], labels: Mapping[str, str], candidates: list[VirtualNodeRef]
) -> VirtualNodeRef | str:
    """The VirtualNode the pod belongs to, or why there is none."""
    if named := annotations.get(ANNOTATION_VIRTUAL_NODE):
        found = [vn for vn in candidates if vn.name == named]
        return (
            found[0] if found else f"meshctl: not injected: VirtualNode {named!r} ({ANNOTATION_VIRTUAL_NODE}) not found"
        )
    matching = [
        vn for vn in candidates if vn.pod_selector and all(labels.get(k) == v for k, v in vn.pod_selector.items())
    ]
    if len(matching) == 1:
        return matching[0]
    if not matching:
        return "meshctl: not injected: no VirtualNode's podSelector matches this pod's labels"
    names = ", ".join(sorted(vn.name for vn in matching))
    return f"meshctl: not injected: VirtualNodes {names} all select this pod; name one with {ANNOTATION_VIRTUAL_NODE}"


def _volumes_added(spec: Mapping[str, Any], volumes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """JSON Patch ops appending ``volumes`` to the pod's (making the list when it has none)."""
    return [
        {"op": "add", "path": "/spec/volumes/-", "value": volume}
        if spec.get("volumes") or i
        else {"op": "add", "path": "/spec/volumes", "value": [volume]}
        for i, volume in enumerate(volumes)
    ]


def _marked_injected(annotations: Mapping[str, str], value: str) -> list[dict[str, Any]]:
    """JSON Patch ops setting ANNOTATION_INJECTED (making the annotations when the pod has none)."""
    made = [] if annotations else [{"op": "add", "path": "/metadata/annotations", "value": {}}]
    return [*made, {"op": "add", "path": f"/metadata/annotations/{_escape(ANNOTATION_INJECTED)}", "value": value}]


def _escape(key: str) -> str:
    """A JSON Pointer token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


_RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _capture_container(image: str, rules: CaptureConfig) -> dict[str, Any]:
    command = ["meshctl", "capture", *capture_arguments(rules)]
    return {
        "name": CAPTURE_CONTAINER,
        "image": image,
        "command": command,
        "securityContext": {
            # iptables needs root and these two capabilities, nothing else; the pod's namespace must allow them
            # (Pod Security "privileged"), as for App Mesh's proxyinit and istio-init.
            "runAsUser": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
    }


XDS_TOKEN_DIR = "/var/run/secrets/meshctl/xds"
XDS_TOKEN_FILE = XDS_TOKEN_DIR + "/token"
_TOKEN_VOLUME = {
    "name": "meshctl-xds-token",
    "projected": {
        # Readable by the proxy's uid (the kubelet writes it as root); only the proxy container mounts it.
        "defaultMode": 0o444,
        "sources": [{"serviceAccountToken": {"audience": "meshctl", "expirationSeconds": 3600, "path": "token"}}],
    },
}


SPIFFE_SOCKET_DIR = "/spiffe-workload-api"
SPIFFE_SOCKET = SPIFFE_SOCKET_DIR + "/spire-agent.sock"  # the SPIFFE CSI driver's socket name
_SPIFFE_VOLUME = {"name": "meshctl-spiffe", "csi": {"driver": "csi.spiffe.io", "readOnly": True}}


def _proxy_container(
    config: InjectConfig, namespace: str, virtual_node: str, service_account: str, *, token_file: str | None = None
) -> dict[str, Any]:
    """``service_account``: the pod's, its workload identity (mTLS): spiffe://<td>/ns/<namespace>/sa/<it>.
    ``token_file``: where the projected token it sends on the xDS stream is mounted."""
    bootstrap = render_bootstrap(
        BootstrapOptions(
            node_id=f"{namespace}/{virtual_node}",  # replaced by --service-node: the pod's name is known at run time
            virtual_node=f"{namespace}/{virtual_node}",
            xds_address=config.xds_address,
            xds_port=config.xds_port,
            egress_port=config.egress_port,
            ingress_port=config.ingress_port,
            stats_port=STATS_PORT,
            capture=True,
            xds_ca_pem=config.ca_pem,
            xds_server_name=config.xds_server_name,
            service_account=service_account,
            xds_token_file=token_file,
            sds_socket=SPIFFE_SOCKET if config.spiffe_csi else None,
        )
    )
    ready = {"httpGet": {"path": "/ready", "port": STATS_PORT}}
    container: dict[str, Any] = {
        "name": PROXY_CONTAINER,
        "image": config.proxy_image,
        "args": [
            "--config-yaml",
            json.dumps(bootstrap, separators=(",", ":")),
            "--service-node",
            "$(POD_NAMESPACE)/" + virtual_node + "/$(POD_NAME)",
            "--log-level",
            "info",
            "--disable-hot-restart",  # one Envoy per container: no shared memory to set up
            *DRAIN_ARGS,
        ],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ],
        "ports": [{"name": "meshctl-stats", "containerPort": STATS_PORT, "protocol": "TCP"}],
        "readinessProbe": {**ready, "periodSeconds": 5, "failureThreshold": 3},
        "securityContext": {
            "runAsUser": config.proxy_uid,
            "runAsGroup": config.proxy_uid,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            **_RESTRICTED,
        },
        "resources": {k: dict(v) for k, v in config.proxy_resources.items()},
    }
    mounts = []
    if token_file is not None:
        mounts.append({"name": "meshctl-xds-token", "mountPath": XDS_TOKEN_DIR, "readOnly": True})
    if config.spiffe_csi:
        mounts.append({"name": "meshctl-spiffe", "mountPath": SPIFFE_SOCKET_DIR, "readOnly": True})
    if mounts:
        container["volumeMounts"] = mounts
    if config.native_sidecars:
        # Starts before the app and stops after it; the app starts once Envoy has its config (startupProbe).
        container["restartPolicy"] = "Always"
        container["startupProbe"] = {**ready, "periodSeconds": 1, "failureThreshold": 120}
    return container
