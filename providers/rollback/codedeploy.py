"""Rollback of an AWS CodeDeploy deployment, through CodeDeploy's documented API (aiobotocore).

The target names the deployment: ``{"application", "deployment_group", "deployment_id"}`` (what the
``codedeploy`` source puts in every event; only ``deployment_id`` is required, the others are checked
against it when given). What happens depends on where that deployment is:

- **still in flight** (Created, Queued, InProgress, Baking, Ready): ``StopDeployment`` with
  ``autoRollbackEnabled``; CodeDeploy then stops it and starts a rollback deployment of its own
  (named in the stopped deployment's ``rollbackInfo``), which the adapter waits for;
- **already finished** (Succeeded, the usual case after a bake, or Failed/Stopped without a rollback
  of CodeDeploy's): the last successful earlier deployment of the same group whose revision differs
  is found, and its revision deployed again as a new deployment, as CodeDeploy's own automatic
  rollback does; the adapter waits for that deployment to succeed;
- **already being rolled back by CodeDeploy** (``rollbackInfo.rollbackDeploymentId`` set): the
  adapter waits for that rollback deployment.

Exactly once: the new deployment's ``description`` starts with ``[rollback-watchdog <idempotency
key>]``. Before creating one the adapter looks for a deployment of the group carrying that marker,
created since the bad one, and waits on it instead; so a retry after a timeout or a crash (the core
sends the same key) never deploys twice. Stopping is idempotent by itself: the deployment's status is
read again first.

Waiting polls ``GetDeployment`` every ``poll_interval`` up to ``timeout``; a poll that fails
transiently is skipped, not fatal. Failures map onto the error tree::

    throttling, 5xx, connection errors and timeouts of one call   → TemporaryError (the core retries,
                                                                     and the retry re-checks first)
    no credentials, invalid or expired credentials, AccessDenied → PermanentError saying what to grant
    unknown application, group or deployment, nothing earlier to roll back to,
    a rollback deployment that fails or is stopped, one still running after `timeout`
                                                                  → PermanentError with what to check
                                                                     and the console link

Credentials come from the usual AWS chain (environment, shared config and credentials files with
`profile`, container and instance roles); `url` overrides the endpoint (a VPC endpoint, a test server).
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore import exceptions as boto
from botocore.loaders import Loader, create_loader
from pydantic import BaseModel, ConfigDict, Field, field_validator

from providers import _http
from watchdog.clock import Clock
from watchdog.config.models import Duration
from watchdog.errors import AdapterError, PermanentError, TemporaryError
from watchdog.plugins import AdapterContext
from watchdog.ports import RollbackRequest, RollbackResult

log = structlog.get_logger("providers.rollback.codedeploy")

IN_FLIGHT: Final = frozenset({"Created", "Queued", "InProgress", "Baking", "Ready"})
"""Statuses of a deployment that ``StopDeployment`` can still stop."""
BATCH: Final = 25
"""Deployment ids per ``BatchGetDeployments`` call: the API's documented maximum."""
DESCRIPTION_LIMIT: Final = 256
"""Characters of the description given to a rollback deployment; the marker comes first, so
cutting the rest never hides it."""
STOP_GRACE_POLLS: Final = 3
"""Polls to wait, after a stop, for CodeDeploy to name its rollback deployment before deploying the
last good revision ourselves."""

DENIED: Final = frozenset(
    {"AccessDeniedException", "AccessDenied", "UnauthorizedOperation", "UnauthorizedException"}
)
BAD_CREDENTIALS: Final = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "IncompleteSignature",
        "MissingAuthenticationToken",
    }
)
THROTTLED: Final = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalServerError",
        "DeploymentLimitExceededException",  # the group already has an active deployment
    }
)
NOT_FOUND: Final = frozenset(
    {
        "DeploymentDoesNotExistException",
        "ApplicationDoesNotExistException",
        "DeploymentGroupDoesNotExistException",
        "InvalidDeploymentIdException",
        "RevisionDoesNotExistException",
    }
)


class CodeDeployRollbackSettings(BaseModel):
    """The keys of a ``rollback.<name>`` section with ``type: codedeploy``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    region: str = Field(min_length=1)
    """The AWS region of the deployments, e.g. `eu-west-1`. An event whose target names another
    region is refused rather than looked for in the wrong place."""
    url: str | None = None
    """Endpoint override (a VPC endpoint, a proxy, a test server); the regional endpoint by default."""
    profile: str | None = None
    """A profile of the shared AWS config files. By default the usual chain: environment variables,
    `AWS_PROFILE`, the shared files' default profile, the container or instance role."""
    timeout: Duration = 3600.0
    """How long to wait for the rollback deployment to succeed. 1h by default: an in-place
    deployment one instance at a time over a few dozen instances takes that long. A deployment still
    running after it is reported (it keeps running; it is never started twice)."""
    poll_interval: Duration = 15.0
    """How often the rollback deployment's status is read. 15s by default: instance lifecycle events
    take tens of seconds, and GetDeployment calls stay far below the API's rate limits."""
    request_timeout: Duration = 30.0
    """Budget for one API call, connect and read each. 30s by default; a call that times out is
    retried by the core, which re-checks before acting."""
    file_exists_behavior: Literal["DISALLOW", "OVERWRITE", "RETAIN"] | None = None
    """`fileExistsBehavior` of the rollback deployment (EC2/on-premises): what to do with files in
    the target location that CodeDeploy did not put there. CodeDeploy's default (DISALLOW, the
    deployment fails) unless set."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            _http.check_url(value)
        return value


@dataclass(frozen=True)
class _Target:
    deployment_id: str
    application: str | None
    group: str | None


@dataclass(frozen=True)
class _Outcome:
    """How the rollback was done, for the result and the log."""

    method: Literal["redeploy", "stop"]
    rollback_id: str
    detail: str
    data: dict[str, Any]


class CodeDeployRollback:
    """A :class:`watchdog.ports.RollbackTarget` for AWS CodeDeploy deployments."""

    Settings = CodeDeployRollbackSettings

    def __init__(self, name: str, settings: CodeDeployRollbackSettings, clock: Clock) -> None:
        self.name = name
        self._settings = settings
        self._clock = clock
        self._session: AioSession | None = None

    @classmethod
    def from_settings(
        cls, name: str, settings: CodeDeployRollbackSettings, context: AdapterContext
    ) -> CodeDeployRollback:
        return cls(name, settings, context.clock)

    async def rollback(self, request: RollbackRequest) -> RollbackResult:
        """Stop the deployment or redeploy the last good revision, then wait for success."""
        target = self._target(request)
        async with self._client() as client:
            api = _Api(client, self)
            bad = await api.deployment(target.deployment_id)
            self._check_target(target, bad)
            outcome = await self._dispatch(api, bad, request)
        log.info("rollback.codedeploy_done", method=outcome.method, rollback_deployment=outcome.rollback_id)
        return RollbackResult(detail=outcome.detail, data=outcome.data)

    async def aclose(self) -> None:
        self._session = None

    # --- deciding ----------------------------------------------------------------------------

    async def _dispatch(self, api: _Api, bad: dict[str, Any], request: RollbackRequest) -> _Outcome:
        status = str(bad.get("status"))
        codedeploy_rollback = _rollback_id(bad)
        if codedeploy_rollback:
            return await self._follow(api, bad, codedeploy_rollback, stopped_now=False)
        if status in IN_FLIGHT:
            return await self._stop(api, bad, request)
        return await self._redeploy(api, bad, request)

    async def _stop(self, api: _Api, bad: dict[str, Any], request: RollbackRequest) -> _Outcome:
        """Stop an in-flight deployment with CodeDeploy's automatic rollback, then follow it."""
        deployment_id = bad["deploymentId"]
        answer = await api.stop(deployment_id)
        log.info(
            "rollback.codedeploy_stop",
            deployment=deployment_id,
            status=(answer or {}).get("status"),
            message=(answer or {}).get("statusMessage"),
        )
        deadline = self._clock.now() + self._settings.timeout
        grace: float | None = None
        while True:
            current = await api.poll(deployment_id) or bad
            rollback_id = _rollback_id(current)
            status = str(current.get("status"))
            if rollback_id:
                return await self._follow(api, current, rollback_id, stopped_now=True)
            if status not in IN_FLIGHT:
                if status == "Succeeded":  # it finished before the stop took effect
                    return await self._redeploy(api, current, request)
                now = self._clock.now()
                grace = grace if grace is not None else now + STOP_GRACE_POLLS * self._settings.poll_interval
                if now >= grace:
                    why = (current.get("rollbackInfo") or {}).get("rollbackMessage") or "no reason given"
                    log.warning("rollback.codedeploy_no_auto_rollback", deployment=deployment_id, why=why)
                    note = f"CodeDeploy did not roll back: {why}"
                    return await self._redeploy(api, current, request, note=note)
            if self._clock.now() >= deadline:
                raise PermanentError(
                    f"{self._what}: deployment {deployment_id} is still {status} "
                    f"{self._settings.timeout:g} s after StopDeployment; look at it in the console: "
                    f"{self._console(deployment_id)}"
                )
            await self._sleep()

    async def _redeploy(
        self, api: _Api, bad: dict[str, Any], request: RollbackRequest, note: str = ""
    ) -> _Outcome:
        """Deploy the last good revision again, or wait on the deployment an earlier attempt made."""
        application, group = bad["applicationName"], bad["deploymentGroupName"]
        marker = _marker(request.idempotency_key)
        ours = await self._earlier_attempt(api, bad, marker)
        if ours is not None:
            log.info("rollback.codedeploy_resume", deployment=ours["deploymentId"])
            good_id = _restored_from(str(ours.get("description") or ""))
            return await self._finish_redeploy(
                api, bad, ours["deploymentId"], good_id, ours.get("revision"), note
            )
        good = await self._last_good(api, bad)
        if good is None:
            raise PermanentError(
                f"{self._what}: deployment group {group!r} of application {application!r} has no "
                f"successful deployment before {bad['deploymentId']} with another revision, so there "
                f"is nothing to roll back to{'; ' + note if note else ''}. Deploy a good revision "
                "by hand"
            )
        description = _http.clip(
            f"{marker} roll back {bad['deploymentId']} to the revision of {good['deploymentId']}: "
            f"{request.reason}",
            DESCRIPTION_LIMIT,
        )
        created = await api.create(application, group, good["revision"], description, self._settings)
        log.info("rollback.codedeploy_created", deployment=created, restores=good["deploymentId"])
        return await self._finish_redeploy(api, bad, created, good["deploymentId"], good["revision"], note)

    async def _finish_redeploy(
        self,
        api: _Api,
        bad: dict[str, Any],
        rollback_id: str,
        good_id: str | None,
        revision: Any,
        note: str,
    ) -> _Outcome:
        await self._wait(api, rollback_id)
        source = f"the revision of {good_id}" if good_id else "the last good revision"
        detail = (
            f"redeployed {source} as CodeDeploy deployment {rollback_id} "
            f"(replacing {bad['deploymentId']}): Succeeded"
        )
        return _Outcome(
            "redeploy",
            rollback_id,
            f"{detail}; {note}" if note else detail,
            {
                "method": "redeploy",
                "rolled_back_deployment_id": bad["deploymentId"],
                "rollback_deployment_id": rollback_id,
                "restored_deployment_id": good_id,
                "revision": _jsonable(revision),
                "console_url": self._console(rollback_id),
            },
        )

    async def _follow(
        self, api: _Api, bad: dict[str, Any], rollback_id: str, *, stopped_now: bool
    ) -> _Outcome:
        """Wait for the rollback deployment CodeDeploy started itself."""
        await self._wait(api, rollback_id)
        how = "stopped it" if stopped_now else "it was stopped or failed"
        return _Outcome(
            "stop",
            rollback_id,
            f"{how}; CodeDeploy's rollback deployment {rollback_id} of {bad['deploymentId']} Succeeded",
            {
                "method": "stop",
                "rolled_back_deployment_id": bad["deploymentId"],
                "rollback_deployment_id": rollback_id,
                "stopped_by_watchdog": stopped_now,
                "console_url": self._console(rollback_id),
            },
        )

    # --- looking things up -------------------------------------------------------------------

    async def _earlier_attempt(self, api: _Api, bad: dict[str, Any], marker: str) -> dict[str, Any] | None:
        """The newest deployment of the group, created since the bad one, that carries ``marker``."""
        application, group = bad["applicationName"], bad["deploymentGroupName"]
        ids = await api.list_ids(application, group, start=bad.get("createTime"))
        mine = [
            d
            for d in await api.batch(i for i in ids if i != bad["deploymentId"])
            if str(d.get("description") or "").startswith(marker)
        ]
        return max(mine, key=_created, default=None)

    async def _last_good(self, api: _Api, bad: dict[str, Any]) -> dict[str, Any] | None:
        """The newest successful deployment of the group created before the bad one, whose revision
        differs from the bad one's."""
        ids = await api.list_ids(
            bad["applicationName"],
            bad["deploymentGroupName"],
            end=bad.get("createTime"),
            statuses=["Succeeded"],
        )
        bad_revision = _canonical(bad.get("revision"))
        bad_created = _created(bad)
        candidates = [
            d
            for d in await api.batch(i for i in ids if i != bad["deploymentId"])
            if d.get("status") == "Succeeded"
            and d.get("revision")
            and _canonical(d.get("revision")) != bad_revision
            and _created(d) < bad_created
        ]
        return max(candidates, key=_created, default=None)

    async def _wait(self, api: _Api, deployment_id: str) -> dict[str, Any]:
        """Poll until ``deployment_id`` succeeds; its failure, stop or a timeout is permanent."""
        deadline = self._clock.now() + self._settings.timeout
        status = "unknown"
        while True:
            info = await api.poll(deployment_id)
            if info is not None:
                status = str(info.get("status"))
                if status == "Succeeded":
                    return info
                if status in ("Failed", "Stopped"):
                    error = info.get("errorInformation") or {}
                    why = ": ".join(str(v) for v in (error.get("code"), error.get("message")) if v)
                    raise PermanentError(
                        f"{self._what}: the rollback deployment {deployment_id} {status}"
                        f"{' (' + why + ')' if why else ''}. The bad revision may still run: look at "
                        f"{self._console(deployment_id)} and deploy a good revision by hand"
                    )
            if self._clock.now() >= deadline:
                raise PermanentError(
                    f"{self._what}: the rollback deployment {deployment_id} is still {status} after "
                    f"{self._settings.timeout:g} s (`timeout`); it keeps running and will not be "
                    f"started again. Watch it at {self._console(deployment_id)}"
                )
            await self._sleep()

    # --- plumbing ------------------------------------------------------------------------------

    @property
    def _what(self) -> str:
        return f"rollback target {self.name!r}"

    def _console(self, deployment_id: str) -> str:
        region = self._settings.region
        return (
            f"https://{region}.console.aws.amazon.com/codesuite/codedeploy/deployments/"
            f"{deployment_id}?region={region}"
        )

    async def _sleep(self) -> None:
        await self._clock.sleep_until(self._clock.now() + self._settings.poll_interval)

    def _target(self, request: RollbackRequest) -> _Target:
        target = request.deployment.event.target
        deployment_id = target.get("deployment_id")
        if not isinstance(deployment_id, str) or not deployment_id:
            raise PermanentError(
                f"{self._what}: the event's target has no `deployment_id` (it has: "
                f"{', '.join(sorted(target)) or 'nothing'}). The codedeploy source sets it; other "
                'sources must send a target like {"application", "deployment_group", "deployment_id"}'
            )
        region = target.get("region")
        if isinstance(region, str) and region and region != self._settings.region:
            raise PermanentError(
                f"{self._what}: deployment {deployment_id} is in region {region}, this target works "
                f"in {self._settings.region}; configure a codedeploy rollback target per region and "
                "match policies to them"
            )
        application, group = target.get("application"), target.get("deployment_group")
        return _Target(
            deployment_id,
            application if isinstance(application, str) and application else None,
            group if isinstance(group, str) and group else None,
        )

    def _check_target(self, target: _Target, info: Mapping[str, Any]) -> None:
        for key, given, actual in (
            ("application", target.application, info.get("applicationName")),
            ("deployment_group", target.group, info.get("deploymentGroupName")),
        ):
            if given is not None and given != actual:
                raise PermanentError(
                    f"{self._what}: deployment {target.deployment_id} belongs to {key} {actual!r}, "
                    f"but the event's target says {given!r}; nothing was changed. Check the event"
                )

    @asynccontextmanager
    async def _client(self) -> AsyncIterator[Any]:
        if self._session is None:
            self._session = _session(self._settings.profile)
        config = AioConfig(
            connect_timeout=self._settings.request_timeout,
            read_timeout=self._settings.request_timeout,
            retries={"mode": "standard", "total_max_attempts": 1},
            user_agent_extra="rollback-watchdog",
        )
        try:
            context = self._session.create_client(
                "codedeploy",
                region_name=self._settings.region,
                endpoint_url=self._settings.url,
                config=config,
            )
            client = await context.__aenter__()
        except (boto.BotoCoreError, boto.ClientError) as exc:
            raise self.error(exc, "client setup") from exc
        try:
            yield client
        finally:
            await context.__aexit__(None, None, None)

    def error(self, exc: Exception, operation: str) -> AdapterError:
        """An SDK error as the error tree has it, with what a person should do about it."""
        what = f"{self._what}: CodeDeploy {operation}"
        if isinstance(exc, boto.NoCredentialsError | boto.PartialCredentialsError):
            return PermanentError(
                f"{what}: no usable AWS credentials ({exc}). Give the watchdog credentials through "
                "the usual chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or `profile`, "
                "or a container or instance role"
            )
        if isinstance(exc, boto.ProfileNotFound):
            return PermanentError(f"{what}: {exc}; fix `profile` or the shared AWS config files")
        if isinstance(exc, boto.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "")) or "error"
            message = str(error.get("Message", "")) or str(exc)
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            text = f"{what} failed: {code}: {message}"
            if code in BAD_CREDENTIALS:
                return PermanentError(
                    f"{text}. AWS refused the credentials (invalid, expired or for another "
                    "partition): renew the credentials the watchdog runs with"
                )
            if code in DENIED or status == 403:
                return PermanentError(
                    f"{text}. Grant the watchdog's IAM principal codedeploy:{operation} on this "
                    "application and deployment group (see the README for the full list)"
                )
            if code in NOT_FOUND:
                return PermanentError(
                    f"{text}. Check the event's target (application, deployment_group, "
                    f"deployment_id) and `region` ({self._settings.region})"
                )
            if code in THROTTLED or status == 429 or status >= 500:
                return TemporaryError(text)
            return PermanentError(text)
        if isinstance(exc, boto.ConnectionError | boto.HTTPClientError):
            return TemporaryError(f"{what}: no answer from CodeDeploy: {exc}")
        if isinstance(exc, boto.ParamValidationError | boto.NoRegionError):
            return PermanentError(f"{what}: {exc}")
        return TemporaryError(f"{what}: {type(exc).__name__}: {exc}")


class _Api:
    """The CodeDeploy calls the adapter makes, each with its errors mapped."""

    def __init__(self, client: Any, adapter: CodeDeployRollback) -> None:
        self._client = client
        self._adapter = adapter

    async def _call(self, operation: str, method: str, **params: Any) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = await getattr(self._client, method)(**params)
        except (boto.BotoCoreError, boto.ClientError) as exc:
            raise self._adapter.error(exc, operation) from exc
        return answer

    async def deployment(self, deployment_id: str) -> dict[str, Any]:
        """``GetDeployment``'s ``deploymentInfo``."""
        answer = await self._call("GetDeployment", "get_deployment", deploymentId=deployment_id)
        info: dict[str, Any] = answer["deploymentInfo"]
        return info

    async def poll(self, deployment_id: str) -> dict[str, Any] | None:
        """:meth:`deployment`, or None after a transient failure: a poll is simply repeated."""
        try:
            return await self.deployment(deployment_id)
        except TemporaryError as exc:
            log.warning("rollback.codedeploy_poll_failed", deployment=deployment_id, error=str(exc))
            return None

    async def stop(self, deployment_id: str) -> dict[str, Any] | None:
        """``StopDeployment`` with ``autoRollbackEnabled``; None when it completed meanwhile."""
        try:
            return await self._client.stop_deployment(  # type: ignore[no-any-return]
                deploymentId=deployment_id, autoRollbackEnabled=True
            )
        except boto.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "DeploymentAlreadyCompletedException":
                return None
            raise self._adapter.error(exc, "StopDeployment") from exc
        except boto.BotoCoreError as exc:
            raise self._adapter.error(exc, "StopDeployment") from exc

    async def list_ids(
        self,
        application: str,
        group: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        statuses: list[str] | None = None,
    ) -> list[str]:
        """Every page of ``ListDeployments`` for the group, filtered as given."""
        params: dict[str, Any] = {"applicationName": application, "deploymentGroupName": group}
        window = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
        if window:
            params["createTimeRange"] = window
        if statuses:
            params["includeOnlyStatuses"] = statuses
        ids: list[str] = []
        token: str | None = None
        while True:
            page = await self._call(
                "ListDeployments", "list_deployments", **params, **({"nextToken": token} if token else {})
            )
            ids.extend(page.get("deployments") or [])
            token = page.get("nextToken")
            if not token:
                return ids

    async def batch(self, ids: Any) -> list[dict[str, Any]]:
        """``BatchGetDeployments`` for any number of ids, 25 at a time."""
        wanted = list(dict.fromkeys(ids))
        found: list[dict[str, Any]] = []
        for i in range(0, len(wanted), BATCH):
            page = await self._call(
                "BatchGetDeployments", "batch_get_deployments", deploymentIds=wanted[i : i + BATCH]
            )
            found.extend(page.get("deploymentsInfo") or [])
        return found

    async def create(
        self,
        application: str,
        group: str,
        revision: Any,
        description: str,
        settings: CodeDeployRollbackSettings,
    ) -> str:
        params: dict[str, Any] = {
            "applicationName": application,
            "deploymentGroupName": group,
            "revision": revision,
            "description": description,
        }
        if settings.file_exists_behavior is not None:
            params["fileExistsBehavior"] = settings.file_exists_behavior
        answer = await self._call("CreateDeployment", "create_deployment", **params)
        return str(answer["deploymentId"])


@functools.cache
def _loader() -> Loader:
    return create_loader()


def _session(profile: str | None) -> AioSession:
    """A session whose data files (endpoints, the CodeDeploy API model) are read once per process,
    not once per rollback target: reading them takes a tenth of a second each time."""
    session = AioSession(profile=profile)
    session.register_component("data_loader", _loader())
    return session


def _marker(idempotency_key: str) -> str:
    return f"[rollback-watchdog {idempotency_key}]"


def _restored_from(description: str) -> str | None:
    """The good deployment's id, read back from a description this adapter wrote."""
    _, found, rest = description.partition(" to the revision of ")
    return rest.split(":", 1)[0].strip() or None if found else None


def _rollback_id(info: Mapping[str, Any]) -> str | None:
    value = (info.get("rollbackInfo") or {}).get("rollbackDeploymentId")
    return str(value) if value else None


def _created(info: Mapping[str, Any]) -> float:
    value = info.get("createTime")
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    return 0.0


def _canonical(revision: Any) -> str:
    return json.dumps(_jsonable(revision), sort_keys=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.timestamp()
    return value
