"""HTTP helpers for the adapters: one way to print an address, read ``Retry-After``, map a failed
call onto the error tree and configure a hook the operator runs.

Several adapters talk HTTP to something the operator runs (the webhook and Slack notifiers, the
rollback hook, the metrics providers). A person reads their failures in logs, the audit trail and
Slack, so the failures must read alike and never show a credential; and the core decides what to
retry from the error's class alone, so a status must map to the same class everywhere.

A library, not an adapter: it imports only the core and third-party packages, so any adapter may
import it and adapters still never import each other (STYLE §9). What only one adapter needs (Slack's
error codes, the rollback hook's success statuses, the metrics retry loop) stays in that adapter.
"""

from __future__ import annotations

import email.utils
import json
import math
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, ClassVar, Final

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from watchdog.config.models import Duration
from watchdog.errors import AdapterError, PermanentError, TemporaryError
from watchdog.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_headers

ELLIPSIS: Final = "…"
BODY_EXCERPT: Final = 200
"""Characters of a response body quoted in an error: enough for an error code or a short JSON error,
short enough for a log line and a Slack message."""


# --- text fit to print ------------------------------------------------------------------------


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis, so a receiver's size limit never
    turns a message into a refused one."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + ELLIPSIS


def excerpt(body: str) -> str:
    """The start of a response body on one line, for an error message."""
    flat = " ".join(body.split())
    return clip(flat, BODY_EXCERPT) if flat else "(empty body)"


def redact_url(url: str, *, hide_last_segment: bool = False) -> str:
    """``url`` fit to print: no userinfo, query values replaced by ``***``, no fragment.

    Hooks often carry a token in the URL, and these addresses end up in logs, the audit trail and
    Slack. ``hide_last_segment`` also hides the end of the path, where Slack puts a webhook's token.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return "<malformed URL>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{port}" if port is not None else "")
    path = parts.path
    if hide_last_segment and "/" in path.rstrip("/"):
        path = path.rstrip("/").rsplit("/", 1)[0] + "/" + ELLIPSIS
    query = "&".join(
        f"{key}=***" for key, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, query, ""))


def check_url(
    url: str, *, hide_last_segment: bool = False, wanted: str = "an http:// or https:// URL"
) -> None:
    """Refuse a URL that is not absolute http(s) at config load, printed redacted (a validation
    error is printed too), rather than at the first call.

    An unset secret reference (``${NAME}``) passes: `validate` warns about it, `serve` refuses to
    start.
    """
    if "${" in url:
        return
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{redact_url(url, hide_last_segment=hide_last_segment)!r} is not {wanted}")


# --- answers ------------------------------------------------------------------------------------


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """The wait a ``Retry-After`` header asks for (seconds or an HTTP date) as written, or None.

    Not clamped: callers differ in what a negative or endless wait means (see :func:`retry_after`).
    """
    if not value:
        return None
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp() - now


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, never negative (a date in the past, a skewed
    clock: retry now); None when unreadable or not finite, so it cannot stall a retry forever."""
    seconds = retry_after_seconds(value, now)
    if seconds is None or not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def is_transient(status: int) -> bool:
    """Whether an HTTP status may be different on the next attempt: a rate limit (429) or a server
    in trouble (5xx, often a deploy of the receiver). Any other status will be the same again."""
    return status == 429 or status >= 500


@dataclass(frozen=True)
class Answer:
    """An answer read within a bound, kept after its connection is released: what an adapter
    decides on, and what an error about it quotes."""

    status: int
    reason: str | None
    body: str
    headers: Mapping[str, str] = field(default_factory=dict)
    truncated: bool = False
    """Whether the body went on beyond what was read."""

    @classmethod
    async def read(cls, response: aiohttp.ClientResponse, limit: int) -> Answer:
        """The answer with at most ``limit`` bytes of its body."""
        body, truncated = await _read_prefix(response, limit)
        return cls(response.status, response.reason, body, response.headers, truncated)


async def _read_prefix(response: aiohttp.ClientResponse, limit: int) -> tuple[str, bool]:
    """The first ``limit`` bytes of a body as text, and whether there was more.

    Bounded so that a receiver answering with megabytes of HTML cannot fill memory, a log line or
    the audit trail.
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


# --- JSON documents -----------------------------------------------------------------------------


def json_body(document: Any) -> bytes:
    """``document`` as compact, strictly valid JSON.

    An e-value can overflow to infinity, and ``json.dumps`` would write ``Infinity``, which strict
    receivers refuse: non-finite floats become strings. Numpy values become numbers and lists, and
    anything else unknown its text, so a statistic of an odd type never fails a rollback or a
    notification.
    """
    return json.dumps(_jsonable(document), separators=(",", ":"), default=_json_fallback).encode()


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _json_fallback(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return _jsonable(tolist())
    return str(value)


# --- hooks: a JSON document POSTed to a URL the operator runs -----------------------------------


class HookSettings(BaseModel):
    """Keys every adapter that POSTs a signed JSON document to the operator's URL takes.

    Subclasses add their own keys, restate ``timeout`` with the reason for its default, and extend
    ``RESERVED_HEADERS`` with the headers they set themselves.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    RESERVED_HEADERS: ClassVar[frozenset[str]] = frozenset(
        h.lower() for h in ("Content-Type", TIMESTAMP_HEADER, SIGNATURE_HEADER)
    )
    """Headers the adapter sets itself (lower case): one set by hand would break signing."""

    url: str
    """Where the adapter POSTs, http:// or https://. A token in its query string is fine: messages
    show the URL with query values hidden."""
    secret: SecretStr | None = None
    """HMAC-SHA256 key. When set, each request carries `X-Watchdog-Timestamp` and
    `X-Watchdog-Signature` (DESIGN §4) so the receiver can refuse forged or replayed requests.
    Keep it out of the file: `${HOOK_SECRET}`."""
    timeout: Duration = 10.0
    """Budget for one attempt, connect to last byte. 10s by default; the core retries a timeout."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra request headers, e.g. `Authorization: Bearer ${TOKEN}`. Content-Type, the signature
    headers and any the adapter sets itself (a rollback hook's Idempotency-Key) cannot be set here."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        check_url(value)
        return value

    @field_validator("headers")
    @classmethod
    def _not_reserved(cls, value: dict[str, str]) -> dict[str, str]:
        taken = sorted(k for k in value if k.lower() in cls.RESERVED_HEADERS)
        if taken:
            raise ValueError(f"the adapter sets {', '.join(taken)} itself; remove it from `headers`")
        return value

    def request_headers(
        self, data: bytes, now: float, own: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """The headers for POSTing ``data``: the operator's, the adapter's ``own`` and, with a
        secret, the signature at ``now`` (DESIGN §4)."""
        headers = {**self.headers, "Content-Type": "application/json", **(own or {})}
        if self.secret is not None:
            headers.update(sign_headers(self.secret.get_secret_value(), data, now))
        return headers


class LazySession:
    """An aiohttp session made on first use and again after ``aclose``.

    Adapters are built while the config loads, before any event loop runs, and a session belongs to
    the loop it was made in: so never in a constructor.
    """

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def for_hook(cls, timeout: float) -> LazySession:
        """A session for one-attempt calls to a hook: ``timeout`` covers connect to last byte, and
        HTTPS_PROXY and NO_PROXY apply, as for every other tool on the host."""
        return cls(timeout=aiohttp.ClientTimeout(total=timeout), trust_env=True)

    @property
    def closed(self) -> bool:
        return self._session is None or self._session.closed

    def get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(**self._options)
        return self._session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


@dataclass(frozen=True)
class Endpoint:
    """A configured address and the words an adapter's errors use for it.

    Every message names who called (``what``, e.g. ``notifier 'ops'``) and where (``where``: the URL
    redacted), so a person can repair a broken hook from the message alone.
    """

    what: str
    url: str
    timeout: float
    hide_last_segment: bool = False
    """Hide the end of the path in messages too (a Slack webhook's token)."""
    fix_url: str = "fix it in the config"
    """The advice for a URL aiohttp cannot use."""
    other_host: str = "point the URL at a host whose certificate is trusted"
    """The advice, besides fixing it, for a certificate that does not verify."""
    timeout_note: str = ""
    """Added to a timeout's message: what the other side may still be doing."""

    @property
    def where(self) -> str:
        return redact_url(self.url, hide_last_segment=self.hide_last_segment)

    @asynccontextmanager
    async def post(
        self, session: aiohttp.ClientSession, data: bytes, headers: Mapping[str, str]
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST ``data`` once, without following redirects, with aiohttp's errors (also those
        raised while the body is read) mapped by :meth:`transport_error`.

        A redirected POST may turn into a GET, or carry a signed body to a host nobody configured;
        the operator should point the URL at the final address instead.
        """
        try:
            async with session.post(
                self.url, data=data, headers=headers, allow_redirects=False
            ) as response:
                yield response
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self.transport_error(exc) from exc

    def status_error(self, answer: Answer, now: float, hint: str = "") -> AdapterError:
        """The error for an answer that is not a success: temporary with the receiver's
        ``Retry-After`` when the status may pass (:func:`is_transient`), else permanent with
        ``hint``, what to check."""
        status_text = f"{answer.status} {answer.reason}" if answer.reason else str(answer.status)
        message = f"{self.what}: POST {self.where} answered {status_text}: {excerpt(answer.body)}"
        if is_transient(answer.status):
            return TemporaryError(message, delay=retry_after(answer.headers.get("Retry-After"), now))
        return PermanentError(f"{message}. {hint}" if hint else message)

    def transport_error(self, exc: BaseException) -> AdapterError:
        """The error for a request that got no answer: a timeout or a connection failure.

        A certificate that does not verify or an address that is not a URL stays wrong until someone
        changes the config, so those are permanent; everything else (refused, reset, timed out) may
        pass.
        """
        what, where = self.what, self.where
        detail = str(exc).replace(self.url, where) or type(exc).__name__
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            return PermanentError(
                f"{what}: the TLS certificate of {where} does not verify ({detail}); fix the "
                f"certificate or {self.other_host}"
            )
        if isinstance(exc, aiohttp.InvalidURL):
            return PermanentError(f"{what}: {where} is not a usable URL; {self.fix_url}")
        if isinstance(exc, TimeoutError):
            note = f" {self.timeout_note}" if self.timeout_note else ""
            return TemporaryError(f"{what}: POST {where} got no answer within {self.timeout:g} s{note}")
        if isinstance(exc, aiohttp.ClientConnectorError):
            return TemporaryError(f"{what}: cannot connect to {where}: {detail}")
        return TemporaryError(f"{what}: POST {where} failed: {type(exc).__name__}: {detail}")
