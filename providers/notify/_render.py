"""Wording shared by the notifiers, and the sentences that describe a failed HTTP call.

Slack and the webhook describe a deployment with the same title, so a person who reads one
recognises the other. Failure messages carry what a person needs to repair a broken hook: the status,
the start of the body and the address. The core logs these messages and keeps them in the audit
trail, so the address never shows credentials, query values or (for Slack) the token in the path.

:mod:`providers.rollback.http` keeps its own copy of the HTTP helpers below because providers never
import each other (STYLE §9); a shared home in the core would remove the copy.
"""

from __future__ import annotations

import email.utils
import math
import urllib.parse
from datetime import UTC
from typing import Any, Final

import aiohttp

from watchdog.errors import AdapterError, PermanentError, TemporaryError
from watchdog.model import Deployment
from watchdog.ports import NotificationKind

ELLIPSIS: Final = "…"
BODY_EXCERPT: Final = 200
"""Characters of a response body quoted in an error: enough for an error code or a short JSON error,
short enough for a log line and a Slack message."""

_TITLES: Final[dict[NotificationKind, tuple[str, str]]] = {
    NotificationKind.ROLLED_BACK: (":rewind:", "Rolled back {place}"),
    NotificationKind.ROLLBACK_FAILED: (
        ":rotating_light:",
        "Rollback FAILED for {place}: it may still be serving traffic",
    ),
    # Not "Dry run": a freeze sends this kind too; the action line says which it was.
    NotificationKind.WOULD_ROLL_BACK: (":warning:", "Would have rolled back {place} (not executed)"),
    NotificationKind.PASSED: (":white_check_mark:", "{place} passed its bake"),
    NotificationKind.INCONCLUSIVE: (":grey_question:", "No verdict for {place}: inconclusive"),
    NotificationKind.BLIND: (":see_no_evil:", "Watching {place} blind: no usable metrics"),
}


def place(deployment: Deployment) -> str:
    """``checkout v2 in prod``: the words people use for a deploy."""
    where = f" in {deployment.environment}" if deployment.environment else ""
    return f"{deployment.service} {deployment.version}{where}"


def title(kind: NotificationKind, deployment: Deployment) -> str:
    """One line that says what happened, without markup (plain text for every channel)."""
    return _TITLES[kind][1].format(place=place(deployment))


def emoji(kind: NotificationKind) -> str:
    """A Slack emoji code per kind, so a channel can be scanned by eye."""
    return _TITLES[kind][0]


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis, so a receiver's size limit never
    turns a notification into a refused one."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + ELLIPSIS


def excerpt(body: str) -> str:
    """The start of a response body on one line, for an error message."""
    flat = " ".join(body.split())
    return clip(flat, BODY_EXCERPT) if flat else "(empty body)"


# --- HTTP failures ----------------------------------------------------------------------------


def redact_url(url: str, *, hide_last_segment: bool = False) -> str:
    """``url`` fit to print: no userinfo, query values replaced by ``***``, no fragment.

    ``hide_last_segment`` also hides the end of the path, where Slack puts a webhook's token.
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


def retry_after(value: str | None, now: float) -> float | None:
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


def status_error(
    *,
    what: str,
    where: str,
    status: int,
    reason: str | None,
    body: str,
    retry_after_header: str | None,
    now: float,
    hint: str = "",
) -> AdapterError:
    """The error for an answer that is not a success.

    429 and 5xx may pass (a deploy of the receiver, a rate limit), so they are temporary and carry
    the receiver's ``Retry-After``; any other status will be the same on the next attempt.
    """
    status_text = f"{status} {reason}" if reason else str(status)
    message = f"{what}: POST {where} answered {status_text}: {excerpt(body)}"
    if status == 429 or status >= 500:
        return TemporaryError(message, delay=retry_after(retry_after_header, now))
    return PermanentError(f"{message}. {hint}" if hint else message)


def transport_error(
    exc: BaseException, *, what: str, url: str, where: str, timeout: float
) -> AdapterError:
    """The error for a request that got no answer: a timeout or a connection failure.

    A certificate that does not verify or an address that is not a URL stays wrong until someone
    changes the config, so those are permanent; everything else (refused, reset, timed out) may pass.
    """
    detail = str(exc).replace(url, where) or type(exc).__name__
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return PermanentError(
            f"{what}: the TLS certificate of {where} does not verify ({detail}); fix the "
            "certificate or point the URL at a host whose certificate is trusted"
        )
    if isinstance(exc, aiohttp.InvalidURL):
        return PermanentError(f"{what}: {where} is not a usable URL; fix it in the config")
    if isinstance(exc, TimeoutError):
        return TemporaryError(f"{what}: POST {where} got no answer within {timeout:g} s")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return TemporaryError(f"{what}: cannot connect to {where}: {detail}")
    return TemporaryError(f"{what}: POST {where} failed: {type(exc).__name__}: {detail}")


def hint_for(status: int) -> str:
    """What to check for a refused webhook call, by status."""
    if status in (401, 403):
        return "Check the credentials the receiver expects (`headers`, `secret`)"
    if status in (404, 405, 410):
        return "Check `url`: the receiver does not take POSTs there"
    if 300 <= status < 400:
        return "The receiver redirects; set `url` to the final address"
    if status in (400, 413, 415, 422):
        return "The receiver refused the notification document; check what it expects"
    return ""


def jsonable(value: Any) -> Any:
    """``value`` with non-finite floats as strings, so the JSON sent is valid JSON.

    An e-value can overflow to infinity, and ``json.dumps`` would write ``Infinity``, which strict
    receivers refuse.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def json_fallback(value: Any) -> Any:
    """``json.dumps`` ``default``: numpy values become numbers and lists, anything else its text."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return jsonable(tolist())
    return str(value)


async def read_prefix(response: aiohttp.ClientResponse, limit: int) -> tuple[str, bool]:
    """The first ``limit`` bytes of a body as text, and whether there was more.

    Bounded so that a receiver answering with megabytes of HTML cannot fill memory or a log line.
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
