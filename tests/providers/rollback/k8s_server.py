"""A fake Kubernetes API server on loopback, for the kubernetes rollback adapter's tests.

It speaks as much of the REST API as ``kubectl rollout undo`` and ``kubectl argo rollouts abort``
use, with the API server's own answer shapes (``Status`` bodies, RBAC and conflict messages):

    GET   /apis/apps/v1/namespaces/{ns}/deployments/{name}
    PATCH /apis/apps/v1/namespaces/{ns}/deployments/{name}        application/json-patch+json only
    GET   /apis/apps/v1/namespaces/{ns}/replicasets?labelSelector=&limit=&continue=
    GET   /apis/argoproj.io/v1alpha1/namespaces/{ns}/rollouts/{name}
    PATCH /apis/argoproj.io/v1alpha1/namespaces/{ns}/rollouts/{name}[/status]   merge patch

Objects start from the published captures in ``kubernetes_fixtures/`` (see its README). A JSON Patch
is applied as RFC 6902 says (``replace`` needs the member to exist, ``test`` compares), and a patched
``metadata.resourceVersion`` that is not the stored one is a 409, as on a real server. A PATCH that
changes the pod template starts a simulated Deployment controller that moves one step each time the
Deployment is read: observe the generation (and re-use or create the template's ReplicaSet, giving it
the next revision, as the real controller does), then update every replica, then make them available.

Every request is recorded (``requests``; ``writes`` for PATCHes). Switches for failures: ``faults``
(answer a status for the next matching requests), ``forbidden`` (RBAC 403 for a verb and resource),
``delay`` (slow answers), ``stuck`` (replicas never become available), ``deadline_exceeded`` (the
rollout reports ProgressDeadlineExceeded), ``status_subresource`` and ``rollout_controller`` for
Rollouts, ``page_size`` (LIST pages), ``token`` (401 for any other bearer token).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from tests.support.daemon import free_port

FIXTURES = Path(__file__).parent / "kubernetes_fixtures"
TOKEN = "fake-service-account-token-0123456789"
HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
SERVICE_ACCOUNT = "system:serviceaccount:ops:rollback-watchdog"
_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


class _YamlAsJson(yaml.SafeLoader):
    """YAML as the API server would serve it as JSON: timestamps stay strings."""


_YamlAsJson.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def fixture(name: str) -> Any:
    """A published capture from ``kubernetes_fixtures/``, parsed (JSON or YAML)."""
    text = (FIXTURES / name).read_text()
    return json.loads(text) if name.endswith(".json") else yaml.load(text, Loader=_YamlAsJson)


def template_hash(template: dict[str, Any]) -> str:
    """A stable ``pod-template-hash`` for a template (the real controller uses FNV; any stable hash
    does here, the adapter never reads it)."""
    digest = hashlib.sha256(json.dumps(without_hash(template), sort_keys=True).encode()).digest()
    return "".join(_HASH_ALPHABET[b % len(_HASH_ALPHABET)] for b in digest[:10])


def without_hash(template: dict[str, Any]) -> dict[str, Any]:
    copied = copy.deepcopy(template)
    copied.get("metadata", {}).get("labels", {}).pop(HASH_LABEL, None)
    return copied


@dataclass
class Seen:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    authorization: str
    user_agent: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Fault:
    """Answer ``status`` to the next ``times`` requests with this method and resource
    (``deployments``, ``replicasets``, ``rollouts``, ``rollouts/status``); the request is not
    applied."""

    method: str
    resource: str
    status: int
    times: int = 1
    retry_after: str | None = None
    applied: bool = False
    """Apply the PATCH first, then answer ``status``: a write that landed whose answer was lost."""


_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


def status_body(code: int, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``Status`` object, as the API server answers any failure."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": _REASONS.get(code, "Unknown"),
        "details": details or {},
        "code": code,
    }


class PatchError(Exception):
    pass


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise PatchError(f"path {path!r} does not start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def apply_json_patch(document: Any, operations: list[dict[str, Any]]) -> Any:
    """RFC 6902 ``add``, ``replace``, ``remove`` and ``test`` on a copy of ``document`` (objects and
    list indexes; enough for what the adapter sends, and strict where the RFC is)."""
    doc = copy.deepcopy(document)
    for op in operations:
        kind, parts = op.get("op"), _pointer(str(op.get("path")))
        parent: Any = doc
        for part in parts[:-1]:
            if isinstance(parent, dict) and part in parent:
                parent = parent[part]
            elif isinstance(parent, list) and part.isdigit() and int(part) < len(parent):
                parent = parent[int(part)]
            else:
                raise PatchError(f"{kind} operation does not apply: doc is missing path: {op['path']}")
        last = parts[-1]
        exists = (isinstance(parent, dict) and last in parent) or (
            isinstance(parent, list) and last.isdigit() and int(last) < len(parent)
        )
        if kind == "test":
            if not exists or (parent[last if isinstance(parent, dict) else int(last)] != op.get("value")):
                raise PatchError(f"testing value {op['path']} failed")
        elif kind == "replace":
            if not exists:
                raise PatchError(f"replace operation does not apply: doc is missing key: {op['path']}")
            parent[last if isinstance(parent, dict) else int(last)] = copy.deepcopy(op["value"])
        elif kind == "add":
            if isinstance(parent, dict):
                parent[last] = copy.deepcopy(op["value"])
            elif last == "-":
                parent.append(copy.deepcopy(op["value"]))
            else:
                parent.insert(int(last), copy.deepcopy(op["value"]))
        elif kind == "remove":
            if not exists:
                raise PatchError(f"remove operation does not apply: doc is missing path: {op['path']}")
            del parent[last if isinstance(parent, dict) else int(last)]
        else:
            raise PatchError(f"Unexpected kind: {kind}")
    return doc


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON Merge Patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _split_selector(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        depth += char == "("
        depth -= char == ")"
        current += char
    if current.strip():
        parts.append(current.strip())
    return parts


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """A ``labelSelector`` query (equality, set-based, exists) against an object's labels."""
    for requirement in _split_selector(selector):
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", requirement):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if (op == "in") != (labels.get(key) in values and key in labels):
                return False
        elif m := re.fullmatch(r"([^!=\s]+)\s*(==|=|!=)\s*(\S*)", requirement):
            key, op, value = m.groups()
            if (op == "!=") == (labels.get(key) == value):
                return False
        elif requirement.startswith("!"):
            if requirement[1:] in labels:
                return False
        elif requirement not in labels:
            return False
    return True


def _owned_by(rs: dict[str, Any], uid: str) -> bool:
    return any(o.get("controller") and o.get("uid") == uid for o in rs["metadata"].get("ownerReferences", []))


@dataclass
class _Rollout:
    """Where the simulated Deployment controller is with one Deployment: steps still to do."""

    steps: list[str] = field(default_factory=list)


class FakeKubernetes:
    """The fake API server (see the module doc). ``start()``, then ``url``; ``stop()`` at the end."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.replicasets: dict[tuple[str, str], dict[str, Any]] = {}
        self.rollouts: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[Seen] = []
        self.faults: list[Fault] = []
        self.forbidden: set[tuple[str, str]] = set()
        self.delay = 0.0
        self.stuck = False
        self.deadline_exceeded = False
        self.status_subresource = True
        self.rollout_controller = True
        self.page_size: int | None = None
        self.on_request: Callable[[Seen], None] | None = None
        """Called with each request once it is recorded, before it is answered: a test's way to
        change the world between two calls (a status update, a new fault)."""
        self._controller: dict[tuple[str, str], _Rollout] = {}
        self._resource_version = 4000
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        apps = "/apis/apps/v1/namespaces/{ns}"
        argo = "/apis/argoproj.io/v1alpha1/namespaces/{ns}/rollouts/{name}"
        app.router.add_get(apps + "/deployments/{name}", self._get_deployment)
        app.router.add_patch(apps + "/deployments/{name}", self._patch_deployment)
        app.router.add_get(apps + "/replicasets", self._list_replicasets)
        app.router.add_get(argo, self._get_rollout)
        app.router.add_patch(argo, self._patch_rollout)
        app.router.add_patch(argo + "/status", self._patch_rollout_status)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def writes(self) -> list[Seen]:
        return [r for r in self.requests if r.method in ("PATCH", "PUT", "POST", "DELETE")]

    def kubeconfig(self, path: Path, *, server: str | None = None, token: str | None = None) -> Path:
        """Write a real kubeconfig for this server (context ``fake``, current) plus a context
        ``elsewhere`` pointing at a closed port; the file's path."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "fake", "cluster": {"server": server or self.url}},
                {"name": "elsewhere", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}},
            ],
            "users": [{"name": "watchdog", "user": {"token": token or self.token}}],
            "contexts": [
                {"name": "fake", "context": {"cluster": "fake", "user": "watchdog"}},
                {"name": "elsewhere", "context": {"cluster": "elsewhere", "user": "watchdog"}},
            ],
            "current-context": "fake",
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # --- objects ----------------------------------------------------------------------------

    def _next_rv(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    def add_deployment(self, deployment: dict[str, Any]) -> dict[str, Any]:
        meta = deployment["metadata"]
        self.deployments[(meta["namespace"], meta["name"])] = deployment
        return deployment

    def add_replicaset(self, replicaset: dict[str, Any]) -> dict[str, Any]:
        meta = replicaset["metadata"]
        self.replicasets[(meta["namespace"], meta["name"])] = replicaset
        return replicaset

    def deployment(self, namespace: str, name: str) -> dict[str, Any]:
        return self.deployments[(namespace, name)]

    def owned_replicasets(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The Deployment's ReplicaSets, newest revision first."""
        uid = self.deployment(namespace, name)["metadata"]["uid"]
        owned = [rs for rs in self.replicasets.values() if _owned_by(rs, uid)]
        return sorted(owned, key=lambda rs: int(rs["metadata"]["annotations"][REVISION]), reverse=True)

    def revision(self, namespace: str, name: str, number: int) -> dict[str, Any]:
        """The Deployment's ReplicaSet that has revision ``number`` now."""
        for rs in self.owned_replicasets(namespace, name):
            if rs["metadata"]["annotations"][REVISION] == str(number):
                return rs
        raise KeyError(number)

    def history(
        self,
        *,
        namespace: str = "shop",
        name: str = "checkout",
        images: tuple[str, ...] = (
            "registry.example.com/shop/checkout:v0",
            "registry.example.com/shop/checkout:v1",
            "registry.example.com/shop/checkout:v2",
        ),
        replicas: int = 3,
    ) -> dict[str, Any]:
        """A Deployment with one ReplicaSet per image (revisions 1, 2, ...), running the last,
        fully rolled out; built from the published icx-db Deployment and ReplicaSet."""
        deployment = fixture("deployment.apps-v1.icx-db.json")
        rs_shape = fixture("replicaset.extensions-v1beta1.icx-db.json")
        uid = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()
        uid = f"{uid[:8]}-{uid[8:12]}-{uid[12:16]}-{uid[16:20]}-{uid[20:32]}"
        meta = deployment["metadata"]
        meta.update(name=name, namespace=namespace, uid=uid, labels={"app": name}, generation=len(images))
        meta["selfLink"] = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
        meta["resourceVersion"] = self._next_rv()
        meta["annotations"][REVISION] = str(len(images))
        spec = deployment["spec"]
        spec["replicas"] = replicas
        spec["selector"] = {"matchLabels": {"app": name}}
        base = spec["template"]
        base["metadata"]["labels"] = {"app": name}
        base["spec"]["containers"][0]["name"] = name
        for number, image in enumerate(images, start=1):
            pod_template = copy.deepcopy(base)
            pod_template["spec"]["containers"][0]["image"] = image
            rs = self._replicaset(rs_shape, deployment, pod_template, number)
            rs["spec"]["replicas"] = replicas if number == len(images) else 0
            rs["status"] = (
                {
                    **rs["status"],
                    "replicas": replicas,
                    "readyReplicas": replicas,
                    "availableReplicas": replicas,
                }
                if number == len(images)
                else {"replicas": 0, "observedGeneration": 1}
            )
            self.add_replicaset(rs)
        self.add_deployment(deployment)
        spec["template"] = without_hash(self.owned_replicasets(namespace, name)[0]["spec"]["template"])
        deployment["status"].update(
            observedGeneration=meta["generation"],
            replicas=replicas,
            updatedReplicas=replicas,
            readyReplicas=replicas,
            availableReplicas=replicas,
        )
        return deployment

    def _replicaset(
        self, shape: dict[str, Any], deployment: dict[str, Any], pod_template: dict[str, Any], number: int
    ) -> dict[str, Any]:
        """A ReplicaSet of ``deployment`` for ``pod_template`` at revision ``number``, in the
        published ReplicaSet's shape."""
        rs = copy.deepcopy(shape)
        rs["apiVersion"] = "apps/v1"
        dmeta = deployment["metadata"]
        digest = template_hash(pod_template)
        labels = {**pod_template["metadata"].get("labels", {}), HASH_LABEL: digest}
        name = f"{dmeta['name']}-{digest}"
        meta = rs["metadata"]
        meta.update(
            name=name,
            namespace=dmeta["namespace"],
            labels=labels,
            uid=hashlib.sha256(name.encode()).hexdigest()[:36],
            resourceVersion=self._next_rv(),
        )
        meta["selfLink"] = f"/apis/apps/v1/namespaces/{dmeta['namespace']}/replicasets/{name}"
        meta["annotations"][REVISION] = str(number)
        meta["ownerReferences"][0].update(name=dmeta["name"], uid=dmeta["uid"])
        rs["spec"]["selector"] = {"matchLabels": dict(labels)}
        rs["spec"]["template"] = copy.deepcopy(pod_template)
        rs["spec"]["template"]["metadata"]["labels"] = dict(labels)
        return rs

    def add_rollout(
        self, *, namespace: str = "shop", name: str = "checkout", promoted: bool = False
    ) -> dict[str, Any]:
        """An Argo Rollout in the middle of a canary (or, ``promoted``, with its new version stable)."""
        rollout = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "generation": 2,
                "resourceVersion": self._next_rv(),
                "uid": hashlib.sha256(f"rollout/{namespace}/{name}".encode()).hexdigest()[:36],
            },
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": name}},
                "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}},
            },
            "status": {
                "observedGeneration": "2",
                "phase": "Paused",
                "message": "CanaryPauseStep",
                "currentPodHash": "6c5b8d4f9b",
                "stableRS": "6c5b8d4f9b" if promoted else "7d4b578979",
                "currentStepIndex": 1,
                "replicas": 4,
                "updatedReplicas": 1,
                "availableReplicas": 4,
                "conditions": [
                    {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
                ],
            },
        }
        self.rollouts[(namespace, name)] = rollout
        return rollout

    # --- the simulated Deployment controller --------------------------------------------------

    def _advance(self, key: tuple[str, str]) -> None:
        state = self._controller.get(key)
        if state is None or not state.steps:
            return
        deployment = self.deployments[key]
        status, replicas = deployment["status"], deployment["spec"].get("replicas", 1)
        step = state.steps[0]
        if step == "observe":
            self._observe(deployment)
            status.update(updatedReplicas=0, replicas=replicas + 1)
            self._progressing(deployment, "True", "ReplicaSetUpdated", "is progressing.")
        elif step == "update":
            if self.deadline_exceeded:
                degraded = fixture("deployment.apps-v1.degraded-progress-deadline.yaml")
                status["conditions"] = degraded["status"]["conditions"]
                state.steps.clear()
                return
            status.update(updatedReplicas=replicas, replicas=replicas, availableReplicas=0, readyReplicas=0)
        elif step == "available":
            if self.stuck:
                return  # the new pods never become ready
            status.update(availableReplicas=replicas, readyReplicas=replicas)
            self._progressing(deployment, "True", "NewReplicaSetAvailable", "has successfully progressed.")
        state.steps.pop(0)
        deployment["metadata"]["resourceVersion"] = self._next_rv()

    def _progressing(self, deployment: dict[str, Any], status: str, reason: str, message: str) -> None:
        name = f"{deployment['metadata']['name']}-{template_hash(deployment['spec']['template'])}"
        conditions = [c for c in deployment["status"].get("conditions", []) if c.get("type") != "Progressing"]
        conditions.append(
            {
                "type": "Progressing",
                "status": status,
                "reason": reason,
                "message": f'ReplicaSet "{name}" {message}',
            }
        )
        deployment["status"]["conditions"] = conditions

    def _observe(self, deployment: dict[str, Any]) -> None:
        """What the controller does on seeing a new template: re-use the ReplicaSet with that
        template (giving it the next revision and remembering the old one) or create one."""
        meta = deployment["metadata"]
        wanted = without_hash(deployment["spec"]["template"])
        owned = self.owned_replicasets(meta["namespace"], meta["name"])
        newest = max((int(rs["metadata"]["annotations"][REVISION]) for rs in owned), default=0)
        match = next((rs for rs in owned if without_hash(rs["spec"]["template"]) == wanted), None)
        if match is None:
            shape = fixture("replicaset.extensions-v1beta1.icx-db.json")
            match = self.add_replicaset(self._replicaset(shape, deployment, wanted, newest + 1))
            number = newest + 1
        else:
            annotations = match["metadata"]["annotations"]
            number = int(annotations[REVISION])
            if number != newest:
                history = [
                    h
                    for h in annotations.get("deployment.kubernetes.io/revision-history", "").split(",")
                    if h
                ]
                annotations["deployment.kubernetes.io/revision-history"] = ",".join([*history, str(number)])
                number = newest + 1
                annotations[REVISION] = str(number)
        for rs in owned:
            rs["spec"]["replicas"] = 0
        match["spec"]["replicas"] = deployment["spec"].get("replicas", 1)
        meta["annotations"][REVISION] = str(number)
        deployment["status"]["observedGeneration"] = meta["generation"]

    # --- HTTP ---------------------------------------------------------------------------------

    async def _admit(self, request: web.Request, verb: str, resource: str, name: str) -> web.Response | None:
        """Record the request, then answer for the switches (delay, 401, 403, faults) or None."""
        seen = Seen(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            content_type=request.headers.get("Content-Type", ""),
            authorization=request.headers.get("Authorization", ""),
            user_agent=request.headers.get("User-Agent", ""),
            body=await request.read(),
        )
        self.requests.append(seen)
        if self.on_request is not None:
            self.on_request(seen)
        if self.delay:
            await asyncio.sleep(self.delay)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response(status_body(401, "Unauthorized"), status=401)
        namespace = request.match_info.get("ns", "")
        if (verb, resource) in self.forbidden:
            group = "argoproj.io" if resource.startswith("rollouts") else "apps"
            base = resource.split("/", maxsplit=1)[0]
            subject = f'{base}.{group} "{name}"' if name else f"{base}.{group}"
            message = (
                f'{subject} is forbidden: User "{SERVICE_ACCOUNT}" cannot {verb} resource "{base}" '
                f'in API group "{group}" in the namespace "{namespace}"'
            )
            return web.json_response(
                status_body(403, message, {"name": name, "group": group, "kind": base}), status=403
            )
        return self._fault(request.method, resource, applied=False)

    def _fault(self, method: str, resource: str, *, applied: bool) -> web.Response | None:
        for fault in self.faults:
            if fault.times > 0 and (fault.method, fault.resource, fault.applied) == (
                method,
                resource,
                applied,
            ):
                fault.times -= 1
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                message = (
                    "Operation cannot be fulfilled: the object has been modified; please apply your changes "
                    "to the latest version and try again"
                    if fault.status == 409
                    else f"injected failure {fault.status}"
                )
                return web.json_response(
                    status_body(fault.status, message), status=fault.status, headers=headers
                )
        return None

    @staticmethod
    def _not_found(resource: str, group: str, name: str) -> web.Response:
        return web.json_response(
            status_body(
                404,
                f'{resource}.{group} "{name}" not found',
                {"name": name, "group": group, "kind": resource},
            ),
            status=404,
        )

    async def _get_deployment(self, request: web.Request) -> web.Response:
        key = (request.match_info["ns"], request.match_info["name"])
        if (refused := await self._admit(request, "get", "deployments", key[1])) is not None:
            return refused
        if key not in self.deployments:
            return self._not_found("deployments", "apps", key[1])
        self._advance(key)
        return web.json_response(self.deployments[key])

    async def _patch_deployment(self, request: web.Request) -> web.Response:
        key = (request.match_info["ns"], request.match_info["name"])
        if (refused := await self._admit(request, "patch", "deployments", key[1])) is not None:
            return refused
        if key not in self.deployments:
            return self._not_found("deployments", "apps", key[1])
        if request.content_type != "application/json-patch+json":
            message = (
                f"the body of the request was in an unknown format - accepted media types include: "
                f"application/json-patch+json (got {request.content_type})"
            )
            return web.json_response(status_body(415, message), status=415)
        current = self.deployments[key]
        try:
            patched = apply_json_patch(current, json.loads(await request.read()))
        except (PatchError, ValueError, TypeError, KeyError) as exc:
            return web.json_response(status_body(422, str(exc)), status=422)
        if patched["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            message = (
                f'Operation cannot be fulfilled on deployments.apps "{key[1]}": the object has been '
                "modified; please apply your changes to the latest version and try again"
            )
            return web.json_response(status_body(409, message), status=409)
        patched["status"] = current["status"]  # the main resource ignores status changes
        if patched["spec"] != current["spec"]:
            patched["metadata"]["generation"] = current["metadata"]["generation"] + 1
        if without_hash(patched["spec"]["template"]) != without_hash(current["spec"]["template"]):
            self._controller[key] = _Rollout(["observe", "update", "available"])
        patched["metadata"]["resourceVersion"] = self._next_rv()
        self.deployments[key] = patched
        if (lost := self._fault("PATCH", "deployments", applied=True)) is not None:
            return lost
        return web.json_response(patched)

    async def _list_replicasets(self, request: web.Request) -> web.Response:
        namespace = request.match_info["ns"]
        if (refused := await self._admit(request, "list", "replicasets", "")) is not None:
            return refused
        selector = request.query.get("labelSelector", "")
        items = [
            rs
            for (ns, _), rs in sorted(self.replicasets.items())
            if ns == namespace and selector_matches(selector, rs["metadata"].get("labels", {}))
        ]
        start = int(request.query.get("continue") or 0)
        limits = [int(x) for x in (request.query.get("limit"), self.page_size) if x]
        end = start + min(limits) if limits else len(items)
        meta: dict[str, Any] = {"resourceVersion": str(self._resource_version)}
        if end < len(items):
            meta["continue"] = str(end)
        return web.json_response(
            {"kind": "ReplicaSetList", "apiVersion": "apps/v1", "metadata": meta, "items": items[start:end]}
        )

    async def _get_rollout(self, request: web.Request) -> web.Response:
        key = (request.match_info["ns"], request.match_info["name"])
        if (refused := await self._admit(request, "get", "rollouts", key[1])) is not None:
            return refused
        if key not in self.rollouts:
            return self._not_found("rollouts", "argoproj.io", key[1])
        rollout = self.rollouts[key]
        status = rollout["status"]
        if self.rollout_controller and status.get("abort") and not status.get("abortedAt"):
            status.update(
                abortedAt="2026-11-26T12:00:00Z",
                phase="Degraded",
                message="RolloutAborted: Rollout aborted update to revision 2",
                currentStepIndex=0,
                conditions=[
                    {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "RolloutAborted",
                        "message": "Rollout aborted update to revision 2",
                    }
                ],
            )
        return web.json_response(rollout)

    async def _patch_rollout(self, request: web.Request) -> web.Response:
        return await self._merge_rollout(request, "rollouts", status_only=False)

    async def _patch_rollout_status(self, request: web.Request) -> web.Response:
        return await self._merge_rollout(request, "rollouts/status", status_only=True)

    async def _merge_rollout(self, request: web.Request, resource: str, *, status_only: bool) -> web.Response:
        key = (request.match_info["ns"], request.match_info["name"])
        if (refused := await self._admit(request, "patch", resource, key[1])) is not None:
            return refused
        if key not in self.rollouts or (status_only and not self.status_subresource):
            if status_only and key in self.rollouts:
                return web.json_response(
                    status_body(404, "the server could not find the requested resource"), status=404
                )
            return self._not_found("rollouts", "argoproj.io", key[1])
        if request.content_type != "application/merge-patch+json":
            return web.json_response(
                status_body(415, f"unsupported patch type {request.content_type}"), status=415
            )
        current = self.rollouts[key]
        patched = merge_patch(current, json.loads(await request.read()))
        if status_only:
            patched = {**current, "status": patched["status"]}
        elif self.status_subresource:
            patched["status"] = current["status"]  # with the subresource, the main resource ignores status
        patched["metadata"]["resourceVersion"] = self._next_rv()
        self.rollouts[key] = patched
        return web.json_response(patched)

    async def _unknown(self, request: web.Request) -> web.Response:
        await self._admit(request, "unknown", "unknown", "")
        return web.json_response(
            status_body(404, "the server could not find the requested resource"), status=404
        )
