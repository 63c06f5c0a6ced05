"""Rollback through an HTTP hook: POST the deployment to an endpoint the operator runs (a CI job, a
runbook service) and let it put the previous version back.

One attempt per call. The core retries ``TemporaryError`` with backoff and sends the same
``Idempotency-Key`` every time, so the receiver can tell a retry (after a timeout, after a crash) from
a second rollback. Failures are mapped at this boundary::

    timeout, connection refused or reset, 429, 5xx      → TemporaryError (delay from Retry-After)
    3xx, other 4xx, unverifiable certificate, bad URL   → PermanentError (status, body, what to check)

Redirects are not followed: a redirected POST may turn into a GET, or carry a signed body to a host
nobody configured; an operator should point ``url`` at the final address instead.

Addresses in messages never show userinfo, query values or fragments: the core logs these messages,
stores them in the audit trail and sends them to Slack, and hooks often carry a token in the URL.
The failures read like the webhook notifier's (:mod:`providers._http`); what is the rollback's own is
the idempotency key, the success statuses and the advice for each refusal.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Final

from pydantic import Field, field_validator

from providers import _http
from watchdog.clock import Clock
from watchdog.config.models import Duration
from watchdog.plugins import AdapterContext
from watchdog.ports import RollbackRequest, RollbackResult

RESPONSE_LIMIT: Final = 2048
"""Bytes of the hook's answer kept in the rollback result (and the audit trail): enough for a job id
or a short JSON status, never a whole HTML error page."""


class HttpRollbackSettings(_http.HookSettings):
    """The keys of a ``rollback.<name>`` section with ``type: http``."""

    RESERVED_HEADERS: ClassVar[frozenset[str]] = _http.HookSettings.RESERVED_HEADERS | {"idempotency-key"}

    timeout: Duration = 10.0
    """Budget for one attempt, connect to last byte. 10s by default: a hook should start the
    rollback and answer at once. A timeout is retried, and the idempotency key makes that safe."""
    success_status: list[int] | None = Field(default=None, min_length=1)
    """Statuses that mean "rolled back". Any 2xx by default; narrow it (e.g. [200]) when the hook
    answers 202 for work it has only queued and that should not count as done."""

    @field_validator("success_status")
    @classmethod
    def _statuses(cls, value: list[int] | None) -> list[int] | None:
        if value is not None:
            wrong = [s for s in value if not 100 <= s <= 599]
            if wrong:
                raise ValueError(f"{wrong} are not HTTP statuses (100-599)")
        return value


class HttpRollback:
    """A :class:`watchdog.ports.RollbackTarget` that calls an HTTP hook."""

    Settings = HttpRollbackSettings

    def __init__(self, name: str, settings: HttpRollbackSettings, clock: Clock) -> None:
        self.name = name
        self._settings = settings
        self._clock = clock
        self._endpoint = _http.Endpoint(
            f"rollback target {name!r}",
            settings.url,
            settings.timeout,
            fix_url="fix `url`",
            other_host="use a host whose certificate is trusted",
            timeout_note="(the hook may still be rolling back; a retry sends the same Idempotency-Key)",
        )
        self._session = _http.LazySession.for_hook(settings.timeout)

    @classmethod
    def from_settings(
        cls, name: str, settings: HttpRollbackSettings, context: AdapterContext
    ) -> HttpRollback:
        return cls(name, settings, context.clock)

    async def rollback(self, request: RollbackRequest) -> RollbackResult:
        """POST the deployment once; the answer's status decides, the body is kept for people."""
        payload = {
            **request.deployment.to_json(),
            "reason": request.reason,
            "actor": request.actor,
        }
        data = _http.json_body(payload)
        headers = self._settings.request_headers(
            data, self._clock.now(), {"Idempotency-Key": request.idempotency_key}
        )
        async with self._endpoint.post(self._session.get(), data, headers) as response:
            answer = await _http.Answer.read(response, RESPONSE_LIMIT)

        if self._succeeded(answer.status):
            return RollbackResult(
                detail=f"POST {self._endpoint.where} answered {answer.status}",
                data={"status": answer.status, "response": _parse(answer.body, answer.truncated)},
            )
        raise self._endpoint.status_error(answer, self._clock.now(), self._hint(answer))

    async def aclose(self) -> None:
        await self._session.aclose()

    def _succeeded(self, status: int) -> bool:
        if self._settings.success_status is not None:
            return status in self._settings.success_status
        return 200 <= status < 300

    def _hint(self, answer: _http.Answer) -> str:
        """What to check for a refused rollback, by status."""
        status, location = answer.status, answer.headers.get("Location")
        if 200 <= status < 300:
            expected = ", ".join(str(s) for s in self._settings.success_status or ())
            return (
                f"`success_status` is {expected}: the hook may have only queued the rollback; "
                "check it and the receiver"
            )
        if 300 <= status < 400:
            to = f" to {_http.redact_url(location)}" if location else ""
            return f"The hook redirects{to}; set `url` to the final address"
        if status in (401, 403):
            return "Check the credentials the hook expects (`headers`, `secret`)"
        if status in (404, 405, 410):
            return "Check `url`: nothing takes rollback POSTs there"
        if status in (400, 409, 413, 415, 422):
            return "The hook refused the request; its answer above says why"
        return ""


def _parse(text: str, truncated: bool) -> Any:
    """The hook's answer for the result: JSON when it is complete JSON, else the text."""
    if not truncated and text.strip():
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text
