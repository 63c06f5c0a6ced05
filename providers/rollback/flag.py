"""Rollback by turning a feature flag off: the emergency brake. The deploy stays, the feature it
shipped behind a flag goes dark, in one API call that takes effect within the SDKs' streaming delay.

Two flag services, through their documented REST APIs:

- **Unleash** (self-hosted or Unleash's cloud; `url` is the instance's base URL, with its path prefix
  if any): ``POST {url}/api/admin/projects/{project}/features/{flag}/environments/{environment}/off``
  with ``Authorization: <token>`` (an admin or personal access token: the header holds the token
  itself, no scheme). Answers 200 (recent versions send the feature, older ones nothing), or 400,
  401, 403, 404 (operation ``toggleFeatureEnvironmentOff``).
- **LaunchDarkly**: ``PATCH {url}/api/v2/flags/{project}/{flag}`` with
  ``Content-Type: application/json; domain-model=launchdarkly.semanticpatch`` and
  ``{"environmentKey": ..., "comment": ..., "instructions": [{"kind": "turnFlagOff"}]}``,
  ``Authorization: <access token>`` (again the token itself). Answers 200 with the flag, or the
  documented 400, 401, 403, 404, 405, 409, 422, 429 with ``{"code", "message", "id"}``.

Both are idempotent by nature: turning off a flag that is off changes nothing and succeeds, so a
retry after a timeout or a crash is safe. Failures map onto the error tree::

    timeout, connection refused or reset, 429, 5xx, 409 (LaunchDarkly: "retry your request")
                                                    → TemporaryError (delay from Retry-After, or
                                                      LaunchDarkly's X-Ratelimit-Reset)
    401, 403, 404, 400, 422, other statuses, certificate, bad URL
                                                    → PermanentError (what to check)

A 200 whose body says the flag is still on in that environment (an approval workflow holding the
change, say) is a failure too: the adapter reports what it verified, not what it asked for.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from typing import Any, Final, Literal

import aiohttp
import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from providers import _http
from providers.rollback import _templating
from watchdog.clock import Clock
from watchdog.config.models import Duration
from watchdog.errors import AdapterError, PermanentError, TemporaryError
from watchdog.plugins import AdapterContext
from watchdog.ports import RollbackRequest, RollbackResult

log = structlog.get_logger("providers.rollback.flag")

LAUNCHDARKLY_URL: Final = "https://app.launchdarkly.com"
SEMANTIC_PATCH: Final = "application/json; domain-model=launchdarkly.semanticpatch"
RESPONSE_LIMIT: Final = 64 * 1024
"""Bytes of an answer read: a LaunchDarkly flag with many environments and rules is a few tens of
KiB; beyond that the body is only quoted, not checked."""
COMMENT_LIMIT: Final = 500
"""Characters of the LaunchDarkly change comment (shown in its audit log)."""

Provider = Literal["unleash", "launchdarkly"]
_NAMES: Final[dict[str, str]] = {"unleash": "Unleash", "launchdarkly": "LaunchDarkly"}


class FlagRollbackSettings(BaseModel):
    """The keys of a ``rollback.<name>`` section with ``type: flag``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    provider: Provider
    """The flag service: `unleash` or `launchdarkly`."""
    url: str | None = None
    """API base URL. LaunchDarkly: https://app.launchdarkly.com by default (set it for a relay or a
    federal instance). Unleash: required, the instance's base URL with its path prefix if it has one
    (e.g. https://eu.app.unleash-hosted.com/myinstance)."""
    api_token: SecretStr
    """Unleash: an admin or personal access token allowed to update the feature in that environment.
    LaunchDarkly: a personal or service access token whose role may turn the flag off. Keep it out
    of the file: `${FLAG_API_TOKEN}`."""
    flag: str = Field(min_length=1)
    """The flag's key (template): `{service}`, `{version}`, `{environment}`, `{baseline_version}`,
    target fields and labels, e.g. `{service}-new-checkout`."""
    environment: str | None = None
    """The flag service's environment (template). The event's environment by default, which suits
    when the two use the same names (`prod` here and there); otherwise e.g. `production`."""
    project: str = Field(default="default", min_length=1)
    """Unleash project id or LaunchDarkly project key (template). `default` by default: the name
    both services give the project they create first."""
    timeout: Duration = 10.0
    """Budget for one attempt, connect to last byte. 10s by default: both APIs answer a flag change
    in well under a second; the core retries a timeout, and turning a flag off twice is harmless."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            _http.check_url(value)
        return value

    @model_validator(mode="after")
    def _unleash_needs_url(self) -> FlagRollbackSettings:
        if self.provider == "unleash" and self.url is None:
            raise ValueError(
                "`url` is required with provider: unleash (the instance's base URL, e.g. "
                "https://unleash.example.com)"
            )
        return self

    @property
    def base_url(self) -> str:
        return (self.url or LAUNCHDARKLY_URL).rstrip("/")


@dataclass(frozen=True)
class _Call:
    """One rendered flag change: where it goes and how it reads in messages."""

    provider: Provider
    project: str
    flag: str
    environment: str
    method: str
    url: str

    @property
    def vendor(self) -> str:
        return _NAMES[self.provider]

    @property
    def what(self) -> str:
        return (
            f"{self.vendor} flag {self.flag!r} in environment {self.environment!r} (project {self.project!r})"
        )


class FlagRollback:
    """A :class:`watchdog.ports.RollbackTarget` that turns a feature flag off."""

    Settings = FlagRollbackSettings

    def __init__(self, name: str, settings: FlagRollbackSettings, clock: Clock) -> None:
        self.name = name
        self._settings = settings
        self._clock = clock
        self._session = _http.LazySession.for_hook(settings.timeout)

    @classmethod
    def from_settings(
        cls, name: str, settings: FlagRollbackSettings, context: AdapterContext
    ) -> FlagRollback:
        return cls(name, settings, context.clock)

    async def rollback(self, request: RollbackRequest) -> RollbackResult:
        """Turn the flag off once; a 2xx whose body shows the flag on is a failure."""
        call = self._call(request)
        headers = {
            "Authorization": self._settings.api_token.get_secret_value(),
            "Accept": "application/json",
        }
        data: bytes | None = None
        if call.provider == "launchdarkly":
            headers["Content-Type"] = SEMANTIC_PATCH
            comment = _http.clip(
                f"rollback-watchdog ({request.actor}): {request.reason} "
                f"[deployment {request.deployment.id}, {request.idempotency_key}]",
                COMMENT_LIMIT,
            )
            data = json.dumps(
                {
                    "environmentKey": call.environment,
                    "comment": comment,
                    "instructions": [{"kind": "turnFlagOff"}],
                }
            ).encode()
        answer = await self._send(call, headers, data)
        if 200 <= answer.status < 300:
            self._verify(call, answer)
            log.info(
                "rollback.flag_off", provider=call.provider, flag=call.flag, environment=call.environment
            )
            return RollbackResult(
                detail=f"turned off {call.what}",
                data={
                    "provider": call.provider,
                    "project": call.project,
                    "flag": call.flag,
                    "environment": call.environment,
                    "status": answer.status,
                },
            )
        raise self._status_error(call, answer)

    async def aclose(self) -> None:
        await self._session.aclose()

    # --- the request -------------------------------------------------------------------------

    def _call(self, request: RollbackRequest) -> _Call:
        settings = self._settings
        values = _templating.template_values(request)
        where = f"rollback target {self.name!r}"

        def render(template: str, key: str) -> str:
            text = _templating.render(
                template,
                values,
                str,
                what=f"{where}: `{key}`",
                deployment_id=request.deployment.id,
            ).strip()
            if not text:
                raise PermanentError(f"{where}: `{key}` renders empty for deployment {request.deployment.id}")
            return text

        flag = render(settings.flag, "flag")
        project = render(settings.project, "project")
        if settings.environment is not None:
            environment = render(settings.environment, "environment")
        elif request.deployment.environment:
            environment = request.deployment.environment
        else:
            raise PermanentError(
                f"{where}: deployment {request.deployment.id} has no environment, so there is no flag "
                "environment to turn the flag off in; set `environment`"
            )
        segment = _segment  # each value is one path segment
        if settings.provider == "unleash":
            path = (
                f"/api/admin/projects/{segment(project)}/features/{segment(flag)}"
                f"/environments/{segment(environment)}/off"
            )
            method = "POST"
        else:
            path = f"/api/v2/flags/{segment(project)}/{segment(flag)}"
            method = "PATCH"
        return _Call(settings.provider, project, flag, environment, method, settings.base_url + path)

    async def _send(self, call: _Call, headers: dict[str, str], data: bytes | None) -> _http.Answer:
        where = _http.redact_url(call.url)
        try:
            async with self._session.get().request(
                call.method, call.url, data=data, headers=headers, allow_redirects=False
            ) as response:
                return await _http.Answer.read(response, RESPONSE_LIMIT)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._transport_error(call, where, exc) from exc

    # --- what the answer means ---------------------------------------------------------------

    def _verify(self, call: _Call, answer: _http.Answer) -> None:
        """Check the flag's state in the answer when the answer shows it."""
        if answer.truncated or not answer.body.strip():
            return
        try:
            document = json.loads(answer.body)
        except ValueError:
            return
        on = _state_in(call, document)
        if on:
            raise PermanentError(
                f"rollback target {self.name!r}: {call.vendor} accepted the change ({answer.status}) "
                f"but {call.what} is still on: an approval or change-request workflow may hold it. "
                f"Turn the flag off in {call.vendor} now"
            )

    def _status_error(self, call: _Call, answer: _http.Answer) -> AdapterError:
        status = answer.status
        status_text = f"{status} {answer.reason}" if answer.reason else str(status)
        message = (
            f"rollback target {self.name!r}: {call.method} {_http.redact_url(call.url)} answered "
            f"{status_text}: {_error_text(answer.body)}"
        )
        if _http.is_transient(status) or (call.provider == "launchdarkly" and status == 409):
            return TemporaryError(message, delay=self._delay(answer))
        hint = self._hint(call, status)
        return PermanentError(f"{message}. {hint}" if hint else message)

    def _delay(self, answer: _http.Answer) -> float | None:
        """The wait the service asks for: ``Retry-After`` (seconds or a date), else LaunchDarkly's
        ``X-Ratelimit-Reset`` (the end of the rate-limit window, in epoch milliseconds)."""
        now = self._clock.now()
        delay = _http.retry_after(answer.headers.get("Retry-After"), now)
        if delay is not None:
            return delay
        reset = answer.headers.get("X-Ratelimit-Reset")
        if reset:
            try:
                return max(0.0, float(reset) / 1000.0 - now)
            except ValueError:
                return None
        return None

    def _hint(self, call: _Call, status: int) -> str:
        vendor = call.vendor
        if status == 401:
            kind = (
                "an admin or personal access token, sent as the bare token"
                if call.provider == "unleash"
                else "a personal or service access token"
            )
            return f"{vendor} refused the token: check `api_token` ({kind}); it may be expired or revoked"
        if status == 403:
            return (
                f"The token may not change {call.what}: give it a role that may update this flag in "
                "this environment, or lift the change-request/approval rule for emergencies"
            )
        if status == 404:
            return (
                f"{vendor} knows no {call.what}: check `flag`, `project` and `environment` "
                "(the values above are the rendered ones)"
            )
        if status == 405 and call.provider == "launchdarkly":
            return (
                "LaunchDarkly refused the method: check `url` (the API base, without /api/v2); "
                "if this environment requires approvals, the token cannot turn the flag off directly"
            )
        if 300 <= status < 400:
            return "The API redirects; set `url` to the final address"
        if status in (400, 422):
            return f"{vendor} refused the request; its answer above says why"
        return ""

    def _transport_error(self, call: _Call, where: str, exc: BaseException) -> AdapterError:
        what = f"rollback target {self.name!r}"
        detail = str(exc).replace(call.url, where) or type(exc).__name__
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            return PermanentError(
                f"{what}: the TLS certificate of {where} does not verify ({detail}); fix the "
                "certificate or `url`"
            )
        if isinstance(exc, aiohttp.InvalidURL):
            return PermanentError(f"{what}: {where} is not a usable URL; fix `url`")
        if isinstance(exc, TimeoutError):
            return TemporaryError(
                f"{what}: {call.method} {where} got no answer within {self._settings.timeout:g} s "
                "(the flag may be off already; a retry is harmless)"
            )
        if isinstance(exc, aiohttp.ClientConnectorError):
            return TemporaryError(f"{what}: cannot connect to {where}: {detail}")
        return TemporaryError(f"{what}: {call.method} {where} failed: {type(exc).__name__}: {detail}")


def _segment(value: str) -> str:
    """``value`` as one URL path segment: a `/` or `?` in a flag key cannot reach another route."""
    return urllib.parse.quote(value, safe="")


def _state_in(call: _Call, document: Any) -> bool | None:
    """Whether the answer shows the flag on in the environment (None: it does not say).

    LaunchDarkly answers with the flag, whose ``environments`` maps keys to ``{"on": bool, ...}``;
    recent Unleash answers with the feature, whose ``environments`` lists ``{"name", "enabled"}``.
    """
    if not isinstance(document, dict):
        return None
    environments = document.get("environments")
    if call.provider == "launchdarkly" and isinstance(environments, dict):
        state = environments.get(call.environment)
        if isinstance(state, dict) and isinstance(state.get("on"), bool):
            return bool(state["on"])
    if call.provider == "unleash" and isinstance(environments, list):
        for state in environments:
            if (
                isinstance(state, dict)
                and state.get("name") == call.environment
                and isinstance(state.get("enabled"), bool)
            ):
                return bool(state["enabled"])
    return None


def _error_text(body: str) -> str:
    """The service's own explanation: ``message`` of a JSON error (with LaunchDarkly's ``code``,
    Unleash's ``name`` or its first ``details`` message), else the start of the body."""
    try:
        document = json.loads(body)
    except ValueError:
        return _http.excerpt(body)
    if not isinstance(document, dict):
        return _http.excerpt(body)
    message = document.get("message")
    details = document.get("details")
    if not message and isinstance(details, list) and details and isinstance(details[0], dict):
        message = details[0].get("message")
    if not isinstance(message, str) or not message:
        return _http.excerpt(body)
    code = document.get("code") or document.get("name")
    return _http.clip(f"{code}: {message}" if isinstance(code, str) and code else message, 300)
