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
(The small HTTP helpers here have a twin in ``providers.notify._render``: providers never import each
other.)
"""

from __future__ import annotations

import email.utils
import json
import math
import urllib.parse
from datetime import UTC
from typing import Any, Final

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from watchdog.clock import Clock
from watchdog.config.models import Duration
from watchdog.errors import AdapterError, PermanentError, TemporaryError
from watchdog.plugins import AdapterContext
from watchdog.ports import RollbackRequest, RollbackResult
from watchdog.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_headers

RESPONSE_LIMIT: Final = 2048
"""Bytes of the hook's answer kept in the rollback result (and the audit trail): enough for a job id
or a short JSON status, never a whole HTML error page."""
BODY_EXCERPT: Final = 200
_RESERVED_HEADERS: Final = frozenset(
    h.lower() for h in ("Content-Type", "Idempotency-Key", TIMESTAMP_HEADER, SIGNATURE_HEADER)
)


class HttpRollbackSettings(BaseModel):
    """The keys of a ``rollback.<name>`` section with ``type: http``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    url: str
    """The hook's address, http:// or https://. A token in its query string is fine: messages show
    the URL with query values hidden."""
    secret: SecretStr | None = None
    """HMAC-SHA256 key. When set, each request carries `X-Watchdog-Timestamp` and
    `X-Watchdog-Signature` (DESIGN §4) so the receiver can refuse forged or replayed rollbacks.
    Keep it out of the file: `${ROLLBACK_HOOK_SECRET}`."""
    timeout: Duration = 10.0
    """Budget for one attempt, connect to last byte. 10s by default: a hook should start the
    rollback and answer at once. A timeout is retried, and the idempotency key makes that safe."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra request headers, e.g. `Authorization: Bearer ${TOKEN}`. Content-Type, Idempotency-Key
    and the signature headers are the adapter's own and cannot be set here."""
    success_status: list[int] | None = Field(default=None, min_length=1)
    """Statuses that mean "rolled back". Any 2xx by default; narrow it (e.g. [200]) when the hook
    answers 202 for work it has only queued and that should not count as done."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if "${" in value:  # an unset secret reference: `validate` warns, `serve` refuses to start
            return value
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{_redact_url(value)!r} is not an http:// or https:// URL")
        return value

    @field_validator("headers")
    @classmethod
    def _not_reserved(cls, value: dict[str, str]) -> dict[str, str]:
        taken = sorted(k for k in value if k.lower() in _RESERVED_HEADERS)
        if taken:
            raise ValueError(f"the adapter sets {', '.join(taken)} itself; remove it from `headers`")
        return value

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
        self._where = _redact_url(settings.url)
        self._what = f"rollback target {name!r}"
        self._session: aiohttp.ClientSession | None = None

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
        body = json.dumps(_jsonable(payload), separators=(",", ":"), default=_json_fallback)
        data = body.encode()
        headers = {
            **self._settings.headers,
            "Content-Type": "application/json",
            "Idempotency-Key": request.idempotency_key,
        }
        if self._settings.secret is not None:
            secret = self._settings.secret.get_secret_value()
            headers.update(sign_headers(secret, data, self._clock.now()))
        try:
            async with self._client().post(
                self._settings.url, data=data, headers=headers, allow_redirects=False
            ) as response:
                text, truncated = await _read_prefix(response, RESPONSE_LIMIT)
                status, reason = response.status, response.reason
                retry_after_header = response.headers.get("Retry-After")
                location = response.headers.get("Location")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._transport_error(exc) from exc

        if self._succeeded(status):
            return RollbackResult(
                detail=f"POST {self._where} answered {status}",
                data={"status": status, "response": _parse(text, truncated)},
            )
        raise self._status_error(status, reason, text, retry_after_header, location)

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running loop, never in the constructor.
        if self._session is None or self._session.closed:
            # trust_env: HTTPS_PROXY and NO_PROXY apply, as for every other tool on the host.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._settings.timeout), trust_env=True
            )
        return self._session

    def _succeeded(self, status: int) -> bool:
        if self._settings.success_status is not None:
            return status in self._settings.success_status
        return 200 <= status < 300

    def _status_error(
        self,
        status: int,
        reason: str | None,
        body: str,
        retry_after_header: str | None,
        location: str | None,
    ) -> AdapterError:
        status_text = f"{status} {reason}" if reason else str(status)
        message = f"{self._what}: POST {self._where} answered {status_text}: {_excerpt(body)}"
        if status == 429 or status >= 500:
            delay = _retry_after(retry_after_header, self._clock.now())
            return TemporaryError(message, delay=delay)
        if 200 <= status < 300:
            expected = ", ".join(str(s) for s in self._settings.success_status or ())
            hint = (
                f"`success_status` is {expected}: the hook may have only queued the rollback; "
                "check it and the receiver"
            )
        elif 300 <= status < 400:
            to = f" to {_redact_url(location)}" if location else ""
            hint = f"The hook redirects{to}; set `url` to the final address"
        elif status in (401, 403):
            hint = "Check the credentials the hook expects (`headers`, `secret`)"
        elif status in (404, 405, 410):
            hint = "Check `url`: nothing takes rollback POSTs there"
        elif status in (400, 409, 413, 415, 422):
            hint = "The hook refused the request; its answer above says why"
        else:
            hint = ""
        return PermanentError(f"{message}. {hint}" if hint else message)

    def _transport_error(self, exc: BaseException) -> AdapterError:
        detail = str(exc).replace(self._settings.url, self._where) or type(exc).__name__
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            return PermanentError(
                f"{self._what}: the TLS certificate of {self._where} does not verify ({detail}); "
                "fix the certificate or use a host whose certificate is trusted"
            )
        if isinstance(exc, aiohttp.InvalidURL):
            return PermanentError(f"{self._what}: {self._where} is not a usable URL; fix `url`")
        if isinstance(exc, TimeoutError):
            return TemporaryError(
                f"{self._what}: POST {self._where} got no answer within "
                f"{self._settings.timeout:g} s (the hook may still be rolling back; a retry "
                "sends the same Idempotency-Key)"
            )
        if isinstance(exc, aiohttp.ClientConnectorError):
            return TemporaryError(f"{self._what}: cannot connect to {self._where}: {detail}")
        return TemporaryError(
            f"{self._what}: POST {self._where} failed: {type(exc).__name__}: {detail}"
        )


def _parse(text: str, truncated: bool) -> Any:
    """The hook's answer for the result: JSON when it is complete JSON, else the text."""
    if not truncated and text.strip():
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


# --- HTTP helpers (twin of providers.notify._render) ------------------------------------------


def _redact_url(url: str) -> str:
    """``url`` fit to print: no userinfo, query values replaced by ``***``, no fragment."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return "<malformed URL>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{port}" if port is not None else "")
    query = "&".join(
        f"{key}=***" for key, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), or None."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _excerpt(body: str) -> str:
    flat = " ".join(body.split())
    if not flat:
        return "(empty body)"
    return flat if len(flat) <= BODY_EXCERPT else flat[: BODY_EXCERPT - 1] + "…"


async def _read_prefix(response: aiohttp.ClientResponse, limit: int) -> tuple[str, bool]:
    """The first ``limit`` bytes of a body as text, and whether there was more.

    Bounded so that a hook answering with megabytes cannot fill memory or the audit trail.
    """
    data = bytearray()
    while len(data) <= limit:
        chunk = await response.content.read(limit + 1 - len(data))
        if not chunk:
            break
        data += chunk
    charset = response.charset or "utf-8"
    try:
        text = bytes(data[:limit]).decode(charset, errors="replace")
    except LookupError:  # a charset Python does not know
        text = bytes(data[:limit]).decode("utf-8", errors="replace")
    return text, len(data) > limit


def _jsonable(value: Any) -> Any:
    """``value`` with non-finite floats as strings: an e-value can overflow to infinity, and
    ``json.dumps`` would write ``Infinity``, which strict receivers refuse."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _json_fallback(value: Any) -> Any:
    """``json.dumps`` ``default``: numpy values become numbers and lists, anything else its text."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return _jsonable(tolist())
    return str(value)
