"""A small, stateful Kubernetes API server for tests: the real wire protocol, none of the cluster.

Speaks what the `kubernetes` client and `kubectl` use: discovery (/api, /apis, CRD-defined resources appear
when their CRD is created), list with resourceVersion, chunked watch streams with bookmarks, 410 Gone when a
watch asks for history that was compacted, create/get/replace/merge-patch/delete, the status subresource
(status writes never touch spec; spec changes bump metadata.generation) and 409 Conflict on a stale
resourceVersion. One global resourceVersion counter, as etcd gives. Runs in its own thread, so synchronous
clients can call it from the test.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import copy
import itertools
import json
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from kubernetes import client

from meshctl.version import CONTROLLER_USER_AGENT

__all__ = ["ApiCall", "ApiServer", "Kind", "kubeconfig_for"]


@dataclass(frozen=True)
class Kind:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status_subresource: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


BUILT_IN = [
    Kind("", "v1", "namespaces", "Namespace", namespaced=False, status_subresource=True),
    Kind("", "v1", "services", "Service", status_subresource=True),
    Kind("", "v1", "pods", "Pod", status_subresource=True),
    Kind("", "v1", "events", "Event"),
    Kind("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
    Kind("networking.k8s.io", "v1", "ingresses", "Ingress", status_subresource=True),
    Kind("networking.k8s.io", "v1", "ingressclasses", "IngressClass", namespaced=False),
    Kind("", "v1", "nodes", "Node", namespaced=False, status_subresource=True),
    Kind("coordination.k8s.io", "v1", "leases", "Lease"),
    Kind("", "v1", "secrets", "Secret"),
    Kind(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        namespaced=False,
    ),
    Kind(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        status_subresource=True,
    ),
]


@dataclass(frozen=True)
class ApiCall:
    """One request as RBAC authorizes it: a resource request (verb on group/resource[/subresource], in a namespace,
    for a name) or a non-resource one (``path`` set, verb the lower-case HTTP method)."""

    verb: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""
    user_agent: str = ""

    def __str__(self) -> str:
        if self.path:
            return f"{self.verb} {self.path}"
        what = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        group = f".{self.group}" if self.group else ""
        where = f" -n {self.namespace}" if self.namespace else ""
        return f"{self.verb} {what}{group}{' ' + self.name if self.name else ''}{where}"


_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass
class _Event:
    revision: int
    type: str  # ADDED, MODIFIED, DELETED
    kind: Kind
    object: dict


@dataclass
class _State:
    kinds: dict[tuple[str, str, str], Kind] = field(default_factory=dict)  # (group, version, plural)
    objects: dict[tuple[str, str, str], dict[tuple[str, str], dict]] = field(default_factory=dict)
    revision: int = 1
    history: list[_Event] = field(default_factory=list)
    oldest: int = 1  # watches from before this revision get 410 Gone
    sorted_keys: dict[tuple[str, str, str], list[tuple[str, str]]] = field(default_factory=dict)  # list order, cached


def kubeconfig_for(url: str) -> str:
    """A kubeconfig (JSON is YAML) whose one context reaches the server at ``url``."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": url}}],
            "users": [{"name": "test", "user": {}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        }
    )


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.json_response(body, status=code)


class ApiServer:
    def __init__(self, bookmark_interval: float = 1.0) -> None:
        self.state = _State()
        for kind in BUILT_IN:
            self._register(kind)
        self.bookmark_interval = bookmark_interval
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._changed: asyncio.Condition | None = None
        self._drops = 0  # bumped by drop_watches(); a watch ends when it changes
        self._wakers: set[asyncio.Task] = set()
        self.open_watches: Counter[str] = Counter()  # by resource plural, for tests to wait on
        self.version = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-meshctl-test"}  # /version (partial)
        self.calls: list[ApiCall] = []  # every request, as RBAC would see it (tests/least_privilege.py checks them)
        self._lock = threading.Lock()
        # TokenReview and SubjectAccessReview, as the API server answers them: tokens it issued, and what each
        # user is allowed (verb, group, resource), set by the test.
        self._tokens: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {}
        self.permissions: set[tuple[str, str, str, str]] = set()  # (user, verb, group, resource)
        self._token_pods: dict[str, str] = {}

    def issue_token(
        self, username: str, groups: tuple[str, ...] = (), audiences: tuple[str, ...] = (), pod: str | None = None
    ) -> str:
        """A bearer token the TokenReview API authenticates as ``username`` (and its audiences, if any); ``pod``:
        bound to that pod, as a projected ServiceAccount token is (the review's user.extra names it)."""
        token = secrets.token_urlsafe(32)
        self._tokens[token] = (username, groups, audiences)
        if pod is not None:
            self._token_pods[token] = pod
        return token

    def revoke_token(self, token: str) -> None:
        """TokenReview stops accepting it (an expired projected token, a deleted pod)."""
        self._tokens.pop(token, None)

    def _token_review(self, body: dict) -> web.Response:
        spec = body.get("spec") or {}
        found = self._tokens.get(str(spec.get("token", "")))
        wanted = tuple(spec.get("audiences") or ())
        status: dict = {"authenticated": False, "error": "invalid bearer token"}
        if found is not None:
            username, groups, audiences = found
            if wanted and audiences and not set(wanted) & set(audiences):
                status = {"authenticated": False, "error": "token audiences do not match"}
            else:
                user: dict = {"username": username, "groups": list(groups)}
                if (pod := self._token_pods.get(str(spec.get("token", "")))) is not None:
                    user["extra"] = {"authentication.kubernetes.io/pod-name": [pod]}
                status = {"authenticated": True, "user": user, "audiences": list(wanted or audiences)}
        return web.json_response({**body, "status": status}, status=201)

    def _access_review(self, body: dict) -> web.Response:
        spec = body.get("spec") or {}
        attrs = spec.get("resourceAttributes") or {}
        key = (spec.get("user", ""), attrs.get("verb", ""), attrs.get("group", ""), attrs.get("resource", ""))
        allowed = key in self.permissions
        return web.json_response({**body, "status": {"allowed": allowed}}, status=201)

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> str:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._changed = asyncio.Condition()
            app = web.Application()
            app.router.add_route("*", "/{path:.*}", self._dispatch)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}"
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="test-apiserver", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self.url

    def stop(self) -> None:
        if self._loop is None:
            return
        self.drop_watches()  # open watch streams end, so shutdown need not wait for their timeouts
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)  # type: ignore[union-attr]
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)  # type: ignore[union-attr]
        self._loop = None  # (stopping twice is a no-op: a test may stop it before its fixture does)

    def restart(self, downtime: float = 0.3) -> None:
        """Stop serving (every connection breaks, requests are refused) and come back on the same port with the
        same state, as an API server restart with etcd intact looks to clients."""
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._restart(downtime), self._loop).result(15)

    async def _restart(self, downtime: float) -> None:
        self._drops += 1
        self._wake()
        await self._runner.cleanup()  # type: ignore[union-attr]
        await asyncio.sleep(downtime)
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        port = int(self.url.rsplit(":", 1)[1])
        await web.TCPSite(self._runner, "127.0.0.1", port).start()

    def client(self, **settings) -> client.ApiClient:
        """A `kubernetes` client for this server; ``settings`` override Configuration attributes."""
        configuration = client.Configuration()
        configuration.host = self.url
        for name, value in settings.items():
            setattr(configuration, name, value)
        return client.ApiClient(configuration)

    def controller_client(self, **settings) -> client.ApiClient:
        """A client that says it is the controller (its user agent), for the controller's parts a test runs in
        process: the tests' conftest checks those calls against the shipped RBAC."""
        api = self.client(**settings)
        api.user_agent = CONTROLLER_USER_AGENT
        return api

    def kubeconfig(self) -> str:
        return kubeconfig_for(self.url)

    # --- chaos, for tests --------------------------------------------------------------------------

    def compact(self) -> None:
        """Forget the event history: any watch resuming from an older resourceVersion gets 410 Gone."""
        with self._lock:
            self.state.history.clear()
            self.state.oldest = self.state.revision

    def drop_watches(self) -> None:
        """Close every open watch stream (clients must re-watch from their last resourceVersion)."""
        assert self._loop is not None

        def drop() -> None:
            self._drops += 1
            self._wake()

        self._loop.call_soon_threadsafe(drop)

    # --- store -------------------------------------------------------------------------------------

    def _register(self, kind: Kind) -> None:
        key = (kind.group, kind.version, kind.plural)
        self.state.kinds[key] = kind
        self.state.objects.setdefault(key, {})

    def _commit(self, kind: Kind, event_type: str, obj: dict) -> dict:
        """Assigns the next resourceVersion, records the event and wakes the watches. Caller holds the lock."""
        self.state.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.state.revision)
        store = self.state.objects[(kind.group, kind.version, kind.plural)]
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        if event_type == "DELETED" or key not in store:
            self.state.sorted_keys.pop((kind.group, kind.version, kind.plural), None)
        if event_type == "DELETED":
            store.pop(key, None)
        else:
            store[key] = obj
        self.state.history.append(_Event(self.state.revision, event_type, kind, copy.deepcopy(obj)))
        if kind.kind == "CustomResourceDefinition" and event_type != "DELETED":
            spec = obj["spec"]
            for version in spec["versions"]:
                self._register(
                    Kind(
                        spec["group"],
                        version["name"],
                        spec["names"]["plural"],
                        spec["names"]["kind"],
                        spec.get("scope", "Namespaced") == "Namespaced",
                        "status" in (version.get("subresources") or {}),
                    )
                )
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake)
        return obj

    def _wake(self) -> None:
        """On the server's loop: wake every watch to look at the history again."""

        async def notify() -> None:
            assert self._changed is not None
            async with self._changed:
                self._changed.notify_all()

        task = asyncio.ensure_future(notify())
        self._wakers.add(task)
        task.add_done_callback(self._wakers.discard)

    # --- HTTP --------------------------------------------------------------------------------------

    def _route(self, path: str) -> tuple[str, ...]:
        return tuple(p for p in path.split("/") if p)

    def _record(self, request: web.Request, group: str | None, namespace: str | None, rest: tuple[str, ...]) -> None:
        """``group`` None: a non-resource URL; else ``rest`` is PLURAL[/NAME[/SUBRESOURCE]]."""
        agent = request.headers.get("User-Agent", "")
        if group is None or not rest:
            call = ApiCall(request.method.lower(), path=request.path, user_agent=agent)
        else:
            name = rest[1] if len(rest) > 1 else ""
            verb = _VERBS.get(request.method, "get")
            if request.method == "GET" and not name:
                verb = "watch" if request.query.get("watch") in ("1", "true") else "list"
            subresource = rest[2] if len(rest) > 2 else ""
            call = ApiCall(verb, group, rest[0], subresource, namespace or "", name, user_agent=agent)
        with self._lock:
            self.calls.append(call)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = self._route(request.path)
        if not parts or parts[0] not in ("api", "apis") or len(parts) <= 3 - (parts[0] == "api"):
            self._record(request, None, None, ())  # discovery, /version, /openapi: non-resource URLs
        if parts in ((), ("version",)):
            return web.json_response(self.version)
        if parts == ("api",):
            return web.json_response({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        if parts == ("apis",):
            return web.json_response(self._groups())
        if parts == ("api", "v1"):
            return web.json_response(self._resources("", "v1"))
        if len(parts) == 3 and parts[0] == "apis":
            return web.json_response(self._resources(parts[1], parts[2]))
        if parts and parts[0] in ("openapi", "swagger.json"):
            return _status(404, "NotFound", "no OpenAPI here; use --validate=false")
        group, version, rest = ("", parts[1], parts[2:]) if parts[0] == "api" else (parts[1], parts[2], parts[3:])
        namespace = None
        # namespaces/NS/PLURAL[/NAME[/SUB]] is namespaced; namespaces[/NAME[/status]] is the Namespace kind itself.
        if len(rest) >= 3 and rest[0] == "namespaces" and (group or rest[2] not in ("status", "finalize")):
            namespace, rest = rest[1], rest[2:]
        self._record(request, group, namespace, rest)  # authorized before it is found, as RBAC does
        if request.method == "POST" and (group, rest) == ("authentication.k8s.io", ("tokenreviews",)):
            return self._token_review(await request.json())
        if request.method == "POST" and (group, rest) == ("authorization.k8s.io", ("subjectaccessreviews",)):
            return self._access_review(await request.json())
        kind = self.state.kinds.get((group, version, rest[0])) if rest else None
        if kind is None:
            return _status(404, "NotFound", f"the server could not find the requested resource ({request.path})")
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        if name is None:
            if request.method == "GET":
                if request.query.get("watch") in ("1", "true"):
                    return await self._watch(request, kind, namespace)
                return self._list(request, kind, namespace)
            if request.method == "POST":
                return self._create(kind, namespace, await request.json())
            return _status(405, "MethodNotAllowed", request.method)
        return await self._item(request, kind, namespace or "", name, subresource)

    def _groups(self) -> dict:
        groups: dict[str, list[str]] = {}
        for kind in self.state.kinds.values():
            if kind.group:
                groups.setdefault(kind.group, [])
                if kind.version not in groups[kind.group]:
                    groups[kind.group].append(kind.version)
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": g,
                    "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                    "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                }
                for g, vs in sorted(groups.items())
            ],
        }

    def _resources(self, group: str, version: str) -> dict:
        resources = []
        for kind in self.state.kinds.values():
            if (kind.group, kind.version) != (group, version):
                continue
            verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
            resources.append(
                {
                    "name": kind.plural,
                    "singularName": kind.kind.lower(),
                    "namespaced": kind.namespaced,
                    "kind": kind.kind,
                    "verbs": verbs,
                }
            )
            if kind.status_subresource:
                resources.append(
                    {
                        "name": f"{kind.plural}/status",
                        "singularName": "",
                        "namespaced": kind.namespaced,
                        "kind": kind.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}

    def _items(self, kind: Kind, namespace: str | None) -> Iterator[dict]:
        for _, obj in self._keyed_items(kind, namespace):
            yield obj

    def _keyed_items(
        self, kind: Kind, namespace: str | None, after: tuple[str, str] = ("", "")
    ) -> Iterator[tuple[tuple[str, str], dict]]:
        """Objects in list order (namespace, name), starting after ``after``. Caller holds the lock."""
        plural = (kind.group, kind.version, kind.plural)
        store = self.state.objects[plural]
        keys = self.state.sorted_keys.get(plural)
        if keys is None:
            keys = self.state.sorted_keys[plural] = sorted(store)
        for key in keys[bisect.bisect_right(keys, after) :]:
            if namespace is None or key[0] == namespace:
                yield key, store[key]

    def _list(self, request: web.Request, kind: Kind, namespace: str | None) -> web.Response:
        """``limit``/``continue`` paginate as a real API server does: each page continues after the previous
        page's last key, and a token from a compacted revision gets 410 Gone, as etcd's would."""
        with self._lock:
            rv = request.query.get("resourceVersion")
            if (
                rv
                and rv != "0"
                and int(rv) < self.state.oldest
                and request.query.get("resourceVersionMatch") == "Exact"
            ):
                return _status(410, "Expired", f"too old resource version: {rv} ({self.state.oldest})")
            selector = _selector(request.query.get("labelSelector", ""))
            fields = _selector(request.query.get("fieldSelector", ""))
            limit = int(request.query.get("limit") or 0)
            revision, after = self.state.revision, ("", "")
            if token := request.query.get("continue"):
                at, namespace_after, name_after = token.split(":")
                revision, after = int(at), (namespace_after, name_after)
                if revision < self.state.oldest:
                    return _status(410, "Expired", "the continue token has expired; list again")
            # Our store keeps no old revisions: later pages show objects as they are now. The watch from the first
            # page's revision delivers those changes again, so a client still ends up consistent.
            matching = (
                (key, o)
                for key, o in self._keyed_items(kind, namespace, after)
                if _matches(o, selector) and _fields_match(o, fields)
            )
            page = list(itertools.islice(matching, limit)) if limit else list(matching)
            items = [copy.deepcopy(o) for _, o in page]
            metadata: dict = {"resourceVersion": str(revision)}
            if limit and len(page) == limit and next(matching, None) is not None:
                last_namespace, last_name = page[-1][0]
                metadata["continue"] = f"{revision}:{last_namespace}:{last_name}"
            body = {"kind": f"{kind.kind}List", "apiVersion": kind.api_version, "metadata": metadata, "items": items}
        return web.json_response(body)

    async def _watch(self, request: web.Request, kind: Kind, namespace: str | None) -> web.StreamResponse:
        assert self._changed is not None
        rv = int(request.query.get("resourceVersion") or 0)
        bookmarks = request.query.get("allowWatchBookmarks") in ("1", "true")
        timeout = float(request.query.get("timeoutSeconds") or 300)
        selector = _selector(request.query.get("labelSelector", ""))
        fields = _selector(request.query.get("fieldSelector", ""))
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        self.open_watches[kind.plural] += 1
        try:
            return await self._stream_events(response, kind, namespace, rv, bookmarks, timeout, selector, fields)
        finally:
            self.open_watches[kind.plural] -= 1

    async def _stream_events(
        self, response, kind: Kind, namespace, rv: int, bookmarks: bool, timeout: float, selector, fields=None
    ):
        assert self._changed is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        drops = self._drops

        async def send(event: dict) -> None:
            await response.write(json.dumps(event).encode() + b"\n")

        with self._lock:
            if rv == 0:  # no resourceVersion: start with the current state as ADDED events
                pending = [
                    {"type": "ADDED", "object": copy.deepcopy(o)}
                    for o in self._items(kind, namespace)
                    if _matches(o, selector) and _fields_match(o, fields or {})
                ]
                rv = self.state.revision
            else:
                pending = []
        for event in pending:
            await send(event)
        while loop.time() < deadline and self._drops == drops:
            with self._lock:
                # Events after rv were compacted away, before this watch started or while it was open: 410 Gone,
                # as a real API server answers, so the client relists instead of silently missing them.
                expired = 0 < rv < self.state.oldest
                events = [e for e in self.state.history if e.revision > rv and e.kind == kind]
                current = self.state.revision
            if expired:
                gone = {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "reason": "Expired",
                    "code": 410,
                    "message": f"too old resource version: {rv} ({current})",
                }
                await send({"type": "ERROR", "object": gone})
                return response
            for e in events:
                meta = e.object["metadata"]
                if (
                    (namespace is None or meta.get("namespace") == namespace)
                    and _matches(e.object, selector)
                    and _fields_match(e.object, fields or {})
                ):
                    await send({"type": e.type, "object": e.object})
                rv = e.revision
            if bookmarks and not events and current > rv:
                rv = current
            if bookmarks:
                await send(
                    {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": kind.kind,
                            "apiVersion": kind.api_version,
                            "metadata": {"resourceVersion": str(rv)},
                        },
                    }
                )
            async with self._changed:
                # Wait for a revision past the one already read (no lost wake-up), or the next bookmark.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda seen=current: self.state.revision > seen or self._drops != drops),
                        min(self.bookmark_interval, max(0.0, deadline - loop.time())),
                    )
        return response

    def seed(self, docs: Iterable[dict]) -> int:
        """Creates objects without HTTP (benchmarks load 100,000+ of them), then forgets the history: watches start
        from now, as on a long-running cluster. Returns the number created."""
        count = 0
        for doc in docs:
            group, _, version = doc["apiVersion"].rpartition("/")
            kind = next(
                k for k in self.state.kinds.values() if (k.group, k.version, k.kind) == (group, version, doc["kind"])
            )
            response = self._create(kind, doc["metadata"].get("namespace"), doc)
            if response.status != 201:
                raise ValueError(f"cannot seed {doc['kind']} {doc['metadata'].get('name')}: {response.text}")
            count += 1
        self.compact()
        return count

    def _create(self, kind: Kind, namespace: str | None, obj: dict) -> web.Response:
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if kind.namespaced:
            meta["namespace"] = namespace or meta.get("namespace") or "default"
        with self._lock:
            store = self.state.objects[(kind.group, kind.version, kind.plural)]
            if (meta.get("namespace", ""), meta.get("name")) in store:
                return _status(409, "AlreadyExists", f'{kind.plural} "{meta.get("name")}" already exists')
            meta.update(
                uid=str(uuid.uuid4()), generation=1, creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            )
            obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
            if kind.status_subresource:
                obj.pop("status", None)
            created = self._commit(kind, "ADDED", obj)
            return web.json_response(copy.deepcopy(created), status=201)

    async def _item(self, request: web.Request, kind: Kind, namespace: str, name: str, sub: str | None):
        store = self.state.objects[(kind.group, kind.version, kind.plural)]
        key = (namespace if kind.namespaced else "", name)
        if request.method == "GET":
            with self._lock:
                obj = store.get(key)
            if obj is None:
                return _status(404, "NotFound", f'{kind.plural} "{name}" not found')
            return web.json_response(copy.deepcopy(obj))
        body = await request.json() if request.can_read_body else {}
        apply = request.method == "PATCH" and request.content_type == "application/apply-patch+yaml"
        if apply:
            # Server-side apply, simplified: create when absent, merge when present; the manager is recorded.
            manager = request.query.get("fieldManager", "")
            if not manager:
                return _status(422, "Invalid", "fieldManager is required for apply patch")
            body.setdefault("metadata", {})["managedFields"] = [{"manager": manager, "operation": "Apply"}]
            if request.query.get("dryRun") == "All":
                return web.json_response(body)
            with self._lock:
                exists = key in store
            if not exists:
                body["metadata"].update(name=name, namespace=namespace)
                return self._create(kind, namespace, body)
        with self._lock:
            current = store.get(key)
            if current is None:
                return _status(404, "NotFound", f'{kind.plural} "{name}" not found')
            if request.method == "DELETE":
                if current["metadata"].get("finalizers"):
                    # Finalizers hold the object: it is only marked; the last finalizer's removal deletes it.
                    if current["metadata"].get("deletionTimestamp"):
                        return web.json_response(copy.deepcopy(current))
                    marked = copy.deepcopy(current)
                    marked["metadata"]["deletionTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                    return web.json_response(copy.deepcopy(self._commit(kind, "MODIFIED", marked)))
                return web.json_response(self._commit(kind, "DELETED", copy.deepcopy(current)))
            if request.method in ("PUT", "PATCH"):
                # A resourceVersion in a replace, or in a patch's metadata, is a precondition (optimistic locking).
                sent_rv = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
                if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
                    return _status(
                        409,
                        "Conflict",
                        f'Operation cannot be fulfilled on {kind.plural} "{name}": '
                        "the object has been modified; please apply your changes to the latest version",
                    )
            if request.method == "PUT":
                new = body
            elif request.method == "PATCH":
                new = _merge(copy.deepcopy(current), body)
            else:
                return _status(405, "MethodNotAllowed", request.method)
            updated = self._apply_update(kind, current, new, status_only=sub == "status")
            if updated is current:
                return web.json_response(copy.deepcopy(current))
            if updated["metadata"].get("deletionTimestamp") and not updated["metadata"].get("finalizers"):
                return web.json_response(copy.deepcopy(self._commit(kind, "DELETED", updated)))
            return web.json_response(copy.deepcopy(self._commit(kind, "MODIFIED", updated)))

    @staticmethod
    def _apply_update(kind: Kind, current: dict, new: dict, *, status_only: bool) -> dict:
        """Status writes change only status; other writes leave status alone (with the subresource) and bump
        metadata.generation when the spec (anything but metadata and status) changed."""
        result = copy.deepcopy(current)
        if status_only:
            result["status"] = new.get("status")
        else:
            keep = {"status": current.get("status")} if kind.status_subresource else {}
            meta = {
                **current["metadata"],
                **{
                    k: v
                    for k, v in (new.get("metadata") or {}).items()
                    if k in ("labels", "annotations", "finalizers", "ownerReferences", "managedFields")
                },
            }
            result = {**{k: v for k, v in new.items() if k not in ("metadata", "status")}, "metadata": meta}
            if not kind.status_subresource and "status" in new:
                result["status"] = new["status"]
            elif keep.get("status") is not None:
                result["status"] = keep["status"]
            result["apiVersion"], result["kind"] = kind.api_version, kind.kind
            spec_before = {k: v for k, v in current.items() if k not in ("metadata", "status")}
            spec_after = {k: v for k, v in result.items() if k not in ("metadata", "status")}
            if spec_before != spec_after:
                meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
        if result == current:
            return current
        return result


def _merge(target: dict, patch: dict) -> dict:
    """JSON merge patch (RFC 7386); also used for strategic merge patches, which agree on the cases tests use."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            target[key] = _merge(target[key], value)
        else:
            target[key] = value
    return target


def _selector(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split(",") if "=" in part)


def _fields_match(obj: dict, fields: dict[str, str]) -> bool:
    """A field selector of equalities (``type=kubernetes.io/tls``, ``metadata.name=x``), as the API server applies
    it to the fields it indexes."""
    for path, value in fields.items():
        found: Any = obj
        for part in path.split("."):
            found = found.get(part) if isinstance(found, dict) else None
        if found != value:
            return False
    return True


def _matches(obj: dict, selector: dict[str, str]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())
