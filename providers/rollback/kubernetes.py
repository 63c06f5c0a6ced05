"""Rollback on Kubernetes: undo a Deployment the way ``kubectl rollout undo`` does, or abort an Argo
Rollout the way ``kubectl argo rollouts abort`` does, then wait until the cluster shows the result.

The deploy event's ``target`` names the object::

    {"namespace": "shop", "deployment": "checkout"}   a Deployment (apps/v1)
    {"namespace": "shop", "rollout": "checkout"}      an Argo Rollout (argoproj.io/v1alpha1)

Deployment, one write (kubectl's ``pkg/polymorphichelpers/rollback.go``; the rules are in
:mod:`providers.rollback._k8s_undo`):

1. GET the Deployment; LIST the ReplicaSets its selector finds and keep those it controls, each
   with its ``deployment.kubernetes.io/revision``.
2. Pick the revision (:func:`~providers.rollback._k8s_undo.choose`): the newest one running the
   event's ``baseline_version`` when given (refused when images name the bad version but none names
   the baseline: it has left the history); else the newest one not running the event's ``version``
   (image tags); else, when no image names either, kubectl's "the revision before the current one".
3. Refuse a paused Deployment, as kubectl does. Skip the write when the Deployment already runs that
   template (``skipped rollback``, as kubectl does).
4. One JSON Patch: ``/spec/template`` from the ReplicaSet (without ``pod-template-hash``) and
   ``/metadata/annotations`` as kubectl builds them, plus the ``resourceVersion`` as read (the API
   server answers 409 if the Deployment changed meanwhile: nothing newer is overwritten) and a marker
   annotation holding the idempotency key.
5. Verify like ``kubectl rollout status``: poll until the controller has observed the new generation
   and every replica is updated and available, or ``verify_timeout`` passes.

Exactly once: the core calls again with the same idempotency key after a crash or a temporary
failure. The call starts over from a fresh read: a Deployment that carries this key's marker (the
write landed) or already runs the chosen template is not written again, only verified. Because the
choice looks at the bad version rather than at the order of revisions (the Deployment controller
renumbers the restored ReplicaSet as the newest revision), a resend never goes one revision further.

Each call reads the kubeconfig (or the pod's service account) afresh and closes its client at the
end: credentials expire and get rotated, and rollbacks are rare.

Rollout: GET it; unless it is already aborted, merge-patch ``{"status": {"abort": true}}`` on its
``status`` subresource (falling back to the main resource when the subresource is missing, as the
plugin does); then poll until the controller reports the abort. A Rollout whose new version is
already stable is refused: aborting it would not bring the previous version back.

Failures map onto the error tree at this boundary::

    timeout, connection refused or reset, 409, 410, 429, 5xx      → TemporaryError (the core retries)
    401, 403, 404, 400, 422, paused, no history, bad target,
    unreadable kubeconfig, certificate, verification timeout       → PermanentError (what to do)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import structlog
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config import ConfigException, load_incluster_config, load_kube_config
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from providers import _http
from providers.rollback import _k8s_undo as undo
from watchdog.clock import Clock
from watchdog.config.models import Duration, format_duration
from watchdog.errors import AdapterError, PermanentError, TemporaryError
from watchdog.plugins import AdapterContext
from watchdog.ports import RollbackRequest, RollbackResult

log = structlog.get_logger("providers.rollback.kubernetes")

RBAC_FILE: Final = "config/kubernetes/rbac.yaml"
JSON_PATCH: Final = "application/json-patch+json"
MERGE_PATCH: Final = "application/merge-patch+json"
LIST_PAGE: Final = 500
"""ReplicaSets asked for per LIST page; a Deployment keeps revisionHistoryLimit (10) plus a few."""
USER_AGENT: Final = "rollback-watchdog"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
"""A Kubernetes object or namespace name (DNS subdomain): anything else cannot exist, and must not
reach a URL path."""
_TARGET_SHAPE: Final = (
    '{"namespace": "<namespace>", "deployment": "<name>"} '
    'or {"namespace": "<namespace>", "rollout": "<name>"}'
)


class KubernetesRollbackSettings(BaseModel):
    """The keys of a ``rollback.<name>`` section with ``type: kubernetes``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    kubeconfig: str | None = None
    """Path of a kubeconfig file (`~` is expanded when the config is loaded). Unset: in-cluster when
    the watchdog runs in a pod (KUBERNETES_SERVICE_HOST is set), else $KUBECONFIG or ~/.kube/config,
    as kubectl reads them."""
    context: str | None = None
    """Context of the kubeconfig to use; unset: its current-context."""
    in_cluster: bool | None = None
    """Use the pod's service account (its token and CA under /var/run/secrets/kubernetes.io).
    Unset: true when no `kubeconfig` is given and KUBERNETES_SERVICE_HOST is set."""
    url: str | None = None
    """API server address that replaces the one from the kubeconfig or the pod's environment (a
    proxy, a test server); credentials still come from there."""
    timeout: Duration = 10.0
    """Budget for one API request, connect to last byte. 10s by default: the API server answers
    reads and patches in milliseconds; a timeout is retried, and the retry re-reads first."""
    verify_timeout: Duration = 300.0
    """How long to wait for the rolled-back template to be fully rolled out (every replica updated
    and available). 5m by default: the default progressDeadlineSeconds is 10m, but a rollback to
    images the nodes still have is usually done within a minute; longer means act now."""
    poll_interval: Duration = 2.0
    """How often the Deployment or Rollout is read while verifying. 2s, as `kubectl rollout status`
    watches closely without loading the API server."""

    @field_validator("kubeconfig")
    @classmethod
    def _expand_home(cls, value: str | None) -> str | None:
        return os.path.expanduser(value) if value else value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            _http.check_url(value)
        return value

    @model_validator(mode="after")
    def _one_way_in(self) -> KubernetesRollbackSettings:
        if self.in_cluster and (self.kubeconfig or self.context):
            raise ValueError(
                "`in_cluster: true` uses the pod's service account: drop `kubeconfig` and `context`"
            )
        if self.poll_interval > self.verify_timeout:
            raise ValueError("`poll_interval` is longer than `verify_timeout`: verification would never poll")
        return self


@dataclass(frozen=True, slots=True)
class Target:
    """The object a deploy event names."""

    kind: str  # "Deployment" or "Rollout"
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    @classmethod
    def of(cls, target: Mapping[str, Any]) -> Target:
        """Read ``target`` from a deploy event, or refuse it naming the expected shape."""
        if not isinstance(target, Mapping):
            raise PermanentError(f"the deploy event's target is not an object; expected {_TARGET_SHAPE}")
        namespace = target.get("namespace")
        deployment, rollout = target.get("deployment"), target.get("rollout")
        if deployment is not None and rollout is not None:
            raise PermanentError(
                f"the deploy event's target names both a deployment and a rollout; expected {_TARGET_SHAPE}"
            )
        name = deployment if deployment is not None else rollout
        if not namespace or not name:
            raise PermanentError(
                f"the deploy event's target {json.dumps(dict(target), default=str)} is not one the "
                f"kubernetes rollback understands; expected {_TARGET_SHAPE}"
            )
        for key, value in (("namespace", namespace), ("deployment" if deployment else "rollout", name)):
            if not isinstance(value, str) or not _NAME.fullmatch(value):
                raise PermanentError(
                    f"the deploy event's target.{key} {value!r} is not a Kubernetes name "
                    "(lower-case letters, digits, '-' and '.')"
                )
        return cls("Deployment" if deployment is not None else "Rollout", str(namespace), str(name))


@dataclass(frozen=True, slots=True)
class _Call:
    """One API request and the words its errors use."""

    verb: str  # the RBAC verb: get, list, patch
    resource: str  # the RBAC resource: deployments, replicasets, rollouts, rollouts/status
    target: Target
    method: str
    path: str


class KubernetesRollback:
    """A :class:`watchdog.ports.RollbackTarget` for Kubernetes Deployments and Argo Rollouts."""

    Settings = KubernetesRollbackSettings

    def __init__(self, name: str, settings: KubernetesRollbackSettings, clock: Clock) -> None:
        self.name = name
        self._settings = settings
        self._clock = clock

    @classmethod
    def from_settings(
        cls, name: str, settings: KubernetesRollbackSettings, context: AdapterContext
    ) -> KubernetesRollback:
        return cls(name, settings, context.clock)

    @property
    def _what(self) -> str:
        return f"rollback target {self.name!r}"

    async def rollback(self, request: RollbackRequest) -> RollbackResult:
        """Roll the event's target back and wait until the cluster shows it (see the module doc)."""
        target = Target.of(request.deployment.event.target)
        log.info("k8s.rollback.started", target=str(target), idempotency_key=request.idempotency_key)
        api = await self._api()
        try:
            if target.kind == "Rollout":
                return await self._abort_rollout(api, target)
            return await self._undo_deployment(api, target, request)
        finally:
            await api.close()

    async def aclose(self) -> None:
        """Nothing to close between rollbacks: each call opens and closes its own client."""

    # --- Deployment -----------------------------------------------------------------------------

    async def _undo_deployment(
        self, api: ApiClient, target: Target, request: RollbackRequest
    ) -> RollbackResult:
        event = request.deployment.event
        deployment = await self._get_deployment(api, target)
        replicasets = await self._list_replicasets(api, target, deployment)
        revisions = undo.history(deployment, replicasets)
        current = undo.template_of(deployment)
        marks = undo.annotations_of(deployment)

        if marks.get(undo.KEY_ANNOTATION) == request.idempotency_key:
            # This key's write landed before (a crash or a lost answer): only verify it.
            restored = next((r for r in revisions if r.name == marks.get(undo.TARGET_ANNOTATION)), None)
            if restored is not None and not undo.same_template(restored.template, current):
                raise PermanentError(
                    f"{self._what}: {target} was rolled back by this watchdog to {restored.describe()} "
                    "(the same idempotency key), and has been changed since: someone deployed again. "
                    "Not rolling back a second time; check what runs now"
                )
            choice = undo.Choice(
                restored or _as_revision(deployment),
                "the revision this rollback restored before (its marker is on the Deployment)",
            )
            return await self._finish(api, target, choice, patched=False, earlier=True)

        try:
            choice = undo.choose(str(target), revisions, current, event.version, event.baseline_version)
        except undo.NoTarget as exc:
            raise PermanentError(f"{self._what}: {exc}") from exc
        if undo.spec_of(deployment).get("paused") is True:
            raise PermanentError(
                f"{self._what}: {target} is paused (spec.paused: true), and a paused Deployment cannot be "
                f"rolled back (kubectl refuses too): the controller would not roll the change out. Resume "
                f"it (kubectl -n {target.namespace} rollout resume deployment/{target.name}) and roll "
                f"back to {choice.revision.describe()} by hand (kubectl -n {target.namespace} rollout undo "
                f"deployment/{target.name} --to-revision={choice.revision.number})"
            )
        if undo.same_template(choice.revision.template, current):
            log.info("k8s.rollback.skipped", target=str(target), revision=choice.revision.number)
            return await self._finish(api, target, choice, patched=False, earlier=False)

        patch = undo.rollback_patch(deployment, choice.revision, request.idempotency_key)
        call = _Call("patch", "deployments", target, "PATCH", _deployment_path(target))
        await self._request(api, call, body=patch, content_type=JSON_PATCH)
        log.info(
            "k8s.rollback.patched", target=str(target), revision=choice.revision.number, rule=choice.rule
        )
        return await self._finish(api, target, choice, patched=True, earlier=False)

    async def _finish(
        self, api: ApiClient, target: Target, choice: undo.Choice, *, patched: bool, earlier: bool
    ) -> RollbackResult:
        rolled_out = await self._verify_deployment(api, target, choice.revision)
        revision = choice.revision
        if patched:
            how = f"rolled back to {revision.describe()} in one patch"
        elif earlier:
            how = f"was already rolled back to {revision.describe()} by this rollback's earlier attempt"
        else:
            how = (
                f"already ran the template of {revision.describe()}; patch skipped "
                f"(current template already matches revision {revision.number}, as kubectl says)"
            )
        st = undo.status_of(rolled_out)
        return RollbackResult(
            detail=(
                f"{target} {how}, chosen as {choice.rule}; rolled out: {st.get('updatedReplicas', 0)} "
                f"replicas updated, {st.get('availableReplicas', 0)} available"
            ),
            data={
                "kind": target.kind,
                "namespace": target.namespace,
                "name": target.name,
                "revision": revision.number,
                "replicaset": revision.name,
                "images": list(revision.images),
                "rule": choice.rule,
                "patched": patched,
                "new_revision": undo.annotations_of(rolled_out).get(undo.REVISION),
            },
        )

    async def _verify_deployment(
        self, api: ApiClient, target: Target, revision: undo.Revision
    ) -> dict[str, Any]:
        """Poll until the Deployment runs ``revision``'s template fully rolled out; the last read.

        A read that fails for a passing reason is tried again at the next poll: it says nothing
        about the rollout, and failing the rollback for it would page someone for nothing.
        """
        timeout = self._settings.verify_timeout
        deadline = self._clock.now() + timeout
        last_error = ""
        progress: undo.Progress | None = None
        while True:
            try:
                deployment = await self._get_deployment(api, target)
            except TemporaryError as exc:
                last_error = f"; the last read failed: {exc}"
            else:
                last_error = ""
                if not undo.same_template(undo.template_of(deployment), revision.template):
                    raise PermanentError(
                        f"{self._what}: {target} no longer runs the template of {revision.describe()}: it "
                        "was changed while the rollback rolled out (someone deployed again?); check what "
                        "runs now"
                    )
                if undo.spec_of(deployment).get("paused") is True:
                    raise PermanentError(
                        f"{self._what}: {target} was paused while rolling back to {revision.describe()}; "
                        f"resume it: kubectl -n {target.namespace} rollout resume deployment/{target.name}"
                    )
                progress = undo.deployment_progress(deployment)
                if progress.done:
                    return deployment
                if progress.failed:
                    raise PermanentError(
                        f"{self._what}: {target} did not roll back to {revision.describe()}: "
                        f"{progress.waiting} ({progress.numbers}). Check its pods: kubectl -n "
                        f"{target.namespace} describe deployment/{target.name}"
                    )
                log.info("k8s.verify.waiting", target=str(target), waiting=progress.waiting)
            now = self._clock.now()
            if now >= deadline:
                seen = f"last seen: {progress.waiting}; {progress.numbers}" if progress else "never read it"
                raise PermanentError(
                    f"{self._what}: {target} was not fully rolled back to {revision.describe()} within "
                    f"{format_duration(timeout)} ({seen}{last_error}). The template is restored; check "
                    f"why its pods do not become available: kubectl -n {target.namespace} rollout status "
                    f"deployment/{target.name}"
                )
            await self._clock.sleep_until(min(deadline, now + self._settings.poll_interval))

    async def _get_deployment(self, api: ApiClient, target: Target) -> dict[str, Any]:
        call = _Call("get", "deployments", target, "GET", _deployment_path(target))
        return await self._request(api, call)

    async def _list_replicasets(
        self, api: ApiClient, target: Target, deployment: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        selector = undo.spec_of(deployment).get("selector")
        try:
            selector_text = undo.label_selector(selector if isinstance(selector, dict) else {})
        except undo.NoTarget as exc:
            raise PermanentError(f"{self._what}: cannot list the ReplicaSets of {target}: {exc}") from exc
        call = _Call(
            "list", "replicasets", target, "GET", f"/apis/apps/v1/namespaces/{target.namespace}/replicasets"
        )
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            query: list[tuple[str, Any]] = [("labelSelector", selector_text), ("limit", LIST_PAGE)]
            if token:
                query.append(("continue", token))
            page = await self._request(api, call, query=query)
            items.extend(i for i in page.get("items") or [] if isinstance(i, dict))
            token = str(undo.metadata_of(page).get("continue") or "")
            if not token:
                return items

    # --- Argo Rollout ---------------------------------------------------------------------------

    async def _abort_rollout(self, api: ApiClient, target: Target) -> RollbackResult:
        path = _rollout_path(target)
        rollout = await self._request(api, _Call("get", "rollouts", target, "GET", path))
        patched = False
        if undo.status_of(rollout).get("abort") is not True:
            if undo.rollout_fully_promoted(rollout):
                raise PermanentError(
                    f"{self._what}: {target} is fully promoted (its stable ReplicaSet is the current "
                    "one), so aborting it would not bring the previous version back; roll back by hand: "
                    f"kubectl argo rollouts undo {target.name} -n {target.namespace}"
                )
            body = {"status": {"abort": True}}
            try:
                await self._request(
                    api,
                    _Call("patch", "rollouts/status", target, "PATCH", f"{path}/status"),
                    body=body,
                    content_type=MERGE_PATCH,
                )
            except _NotFound:
                # No status subresource (an old CRD): the plugin then patches the object itself.
                await self._request(
                    api,
                    _Call("patch", "rollouts", target, "PATCH", path),
                    body=body,
                    content_type=MERGE_PATCH,
                )
            patched = True
            log.info("k8s.rollback.aborted", target=str(target))
        rollout = await self._verify_rollout(api, target)
        st = undo.status_of(rollout)
        phase, message = st.get("phase") or "unknown", st.get("message") or ""
        return RollbackResult(
            detail=(
                f"{target} {'aborted' if patched else 'was already aborted'}: traffic is back on the stable "
                f"version (phase {phase}{': ' + message if message else ''})"
            ),
            data={
                "kind": target.kind,
                "namespace": target.namespace,
                "name": target.name,
                "patched": patched,
                "phase": phase,
                "message": message,
                "stable": st.get("stableRS"),
            },
        )

    async def _verify_rollout(self, api: ApiClient, target: Target) -> dict[str, Any]:
        """Poll until the Argo Rollouts controller reports the abort; the last read."""
        timeout = self._settings.verify_timeout
        deadline = self._clock.now() + timeout
        call = _Call("get", "rollouts", target, "GET", _rollout_path(target))
        seen = "never read it"
        while True:
            try:
                rollout = await self._request(api, call)
            except TemporaryError as exc:
                seen = f"the last read failed: {exc}"
            else:
                if undo.rollout_aborted(rollout):
                    return rollout
                st = undo.status_of(rollout)
                seen = (
                    f"status.abort {st.get('abort')}, phase {st.get('phase')}, message {st.get('message')!r}"
                )
            now = self._clock.now()
            if now >= deadline:
                raise PermanentError(
                    f"{self._what}: the Argo Rollouts controller did not report {target} aborted within "
                    f"{format_duration(timeout)} ({seen}); is the controller running? kubectl argo rollouts "
                    f"get rollout {target.name} -n {target.namespace}"
                )
            await self._clock.sleep_until(min(deadline, now + self._settings.poll_interval))

    # --- talking to the API server --------------------------------------------------------------

    async def _api(self) -> ApiClient:
        """An API client for one rollback, from the kubeconfig or service account as they are now.

        Made per call, not kept: rollbacks are rare and a daemon lives for months, while the
        credentials a kubeconfig yields expire (an exec plugin's token lasts minutes to hours) and
        get rotated on disk. Reading them afresh costs milliseconds, and a failure is reported at
        the rollback that hit it and never cached.
        """
        client = ApiClient(await self._configuration())
        client.user_agent = USER_AGENT
        return client

    async def _configuration(self) -> Configuration:
        settings = self._settings
        configuration = Configuration()
        in_cluster = settings.in_cluster
        if in_cluster is None:
            in_cluster = settings.kubeconfig is None and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        try:
            if in_cluster:
                load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            else:
                await load_kube_config(
                    config_file=settings.kubeconfig,
                    context=settings.context,
                    client_configuration=configuration,
                    persist_config=False,
                )
        except (ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
            raise PermanentError(self._config_problem(in_cluster, exc)) from exc
        if settings.url:
            configuration.host = settings.url.rstrip("/")
        return configuration

    def _config_problem(self, in_cluster: bool, exc: BaseException) -> str:
        detail = str(exc) or type(exc).__name__
        if in_cluster:
            return (
                f"{self._what}: cannot use the pod's service account ({detail}); run the watchdog in a pod "
                "whose service account token is mounted, or set `kubeconfig`"
            )
        where = self._settings.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        context = f", context {self._settings.context!r}" if self._settings.context else ""
        return (
            f"{self._what}: cannot load the kubeconfig {where}{context}: {detail}; "
            "fix `kubeconfig` or `context`"
        )

    async def _request(
        self,
        api: ApiClient,
        call: _Call,
        *,
        body: Any = None,
        content_type: str | None = None,
        query: list[tuple[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """One API request; its JSON answer as a dict, or the failure mapped onto the error tree."""
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            answer = await api.call_api(
                call.path,
                call.method,
                query_params=query or [],
                header_params=headers,
                body=body,
                response_types_map={200: "object", 201: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _request_timeout=self._settings.timeout,
            )
        except ApiException as exc:
            raise self._status_error(call, exc) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self._transport_error(call, exc, api) from exc
        if not isinstance(answer, dict):
            raise TemporaryError(
                f"{self._what}: {call.method} {call.path} answered something that is not a JSON object"
            )
        return answer

    def _status_error(self, call: _Call, exc: ApiException) -> AdapterError:
        status = int(exc.status or 0)
        message = _server_message(exc)
        target, what = call.target, self._what
        obj = f"{target.kind} {target.namespace}/{target.name}"
        if call.resource == "replicasets":
            obj = f"the ReplicaSets of {obj}"
        said = f" (API server: {message})" if message else ""
        if status == 401:
            return PermanentError(
                f"{what}: the API server refused the watchdog's credentials (401) to {call.verb} "
                f"{obj}{said}; the token in the kubeconfig or the service account has expired or is wrong"
            )
        if status == 403:
            return PermanentError(
                f"{what}: the watchdog's service account may not {call.verb} {call.resource} in namespace "
                f"{target.namespace}{said}: add the RBAC in {RBAC_FILE}"
            )
        if status == 404:
            hint = "; is Argo Rollouts installed in the cluster?" if target.kind == "Rollout" else ""
            return _NotFound(f"{what}: {obj} not found{said}: check the deploy event's target{hint}")
        if status == 410:
            return TemporaryError(f"{what}: the listing of {obj} expired (410 Gone){said}; listing again")
        if status == 409:
            return TemporaryError(
                f"{what}: {obj} changed between reading and writing it (409 Conflict){said}; reading it again"
            )
        text = f"{what}: {call.method} {obj} answered {status} {exc.reason or ''}".rstrip() + said
        if _http.is_transient(status):
            delay = _http.retry_after(_header(exc, "Retry-After"), self._clock.now())
            return TemporaryError(text, delay=delay)
        if status in (400, 415, 422):
            return PermanentError(f"{text}: the API server refused the request")
        return PermanentError(text)

    def _transport_error(self, call: _Call, exc: BaseException, client: ApiClient) -> AdapterError:
        host = _http.redact_url(str(client.configuration.host))
        detail = str(exc) or type(exc).__name__
        if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
            return PermanentError(
                f"{self._what}: the TLS certificate of the API server {host} does not verify ({detail}); fix "
                "the certificate authority in the kubeconfig"
            )
        if isinstance(exc, TimeoutError):
            return TemporaryError(
                f"{self._what}: {call.method} {call.target} at {host} got no answer within "
                f"{format_duration(self._settings.timeout)}"
            )
        return TemporaryError(
            f"{self._what}: cannot reach the API server {host}: {type(exc).__name__}: {detail}"
        )


class _NotFound(PermanentError):
    """A 404: permanent, but the Rollout abort tries the main resource after the status one."""


def _deployment_path(target: Target) -> str:
    return f"/apis/apps/v1/namespaces/{target.namespace}/deployments/{target.name}"


def _rollout_path(target: Target) -> str:
    return f"/apis/argoproj.io/v1alpha1/namespaces/{target.namespace}/rollouts/{target.name}"


def _as_revision(deployment: Mapping[str, Any]) -> undo.Revision:
    """The Deployment's own template as a revision, when its ReplicaSet is gone from the history."""
    try:
        number = int(undo.annotations_of(deployment).get(undo.REVISION, "0"))
    except ValueError:
        number = 0
    pod_template = undo.template_of(deployment)
    name = str(undo.metadata_of(deployment).get("name", ""))
    return undo.Revision(number, name, pod_template, {}, undo.images(pod_template))


def _header(exc: ApiException, name: str) -> str | None:
    headers = exc.headers
    if headers is None:
        return None
    value = headers.get(name)
    return None if value is None else str(value)


def _server_message(exc: ApiException) -> str:
    """The ``message`` of the API server's Status body, or the start of the body, on one line."""
    raw = exc.body
    body = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")
    if not body:
        return ""
    try:
        document = json.loads(body)
    except ValueError:
        return _http.excerpt(str(body))
    if isinstance(document, dict) and document.get("message"):
        return _http.excerpt(str(document["message"]))
    return _http.excerpt(str(body))
