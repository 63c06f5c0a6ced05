"""Notifications as a signed JSON document POSTed to any URL: the way into tools that are not Slack
(a chat bridge, an incident tool, a team's own automation).

The document::

    {"kind": "rolled_back", "title": "Rolled back checkout v2 in prod",
     "headline": "...", "action": "...", "sent_at": 1700000000.0,
     "deployment": {<GET /v1/deployments/{id}>}, "checks": [{"name", "verdict", "summary",
     "statistics"}, ...]}

``checks`` are the checks behind this notification (they may be fewer than the deployment's).
When ``secret`` is set the request is signed like every other watchdog hook (DESIGN §4), so the
receiver can refuse forgeries and replays. One attempt per call; the core retries
``TemporaryError`` (timeouts, connection errors, 429, 5xx).
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any, Final

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from providers.notify import _render
from watchdog.clock import Clock
from watchdog.config.models import Duration
from watchdog.plugins import AdapterContext
from watchdog.ports import Notification
from watchdog.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_headers

ERROR_BODY_LIMIT: Final = 1024
"""Bytes of a refusal read for the error message; only its start is quoted."""
_RESERVED_HEADERS: Final = frozenset(
    h.lower() for h in ("Content-Type", TIMESTAMP_HEADER, SIGNATURE_HEADER)
)


class WebhookSettings(BaseModel):
    """The keys of a ``notify.<name>`` section with ``type: webhook``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    url: str
    """Where the document is POSTed, http:// or https://. Query values are hidden in messages."""
    secret: SecretStr | None = None
    """HMAC-SHA256 key: when set, requests carry `X-Watchdog-Timestamp` and
    `X-Watchdog-Signature` (DESIGN §4). Keep it out of the file: `${NOTIFY_HOOK_SECRET}`."""
    timeout: Duration = 10.0
    """Budget for one attempt, connect to last byte. 10s by default: a receiver should queue the
    document and answer; the core retries a timeout."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra request headers, e.g. `Authorization: Bearer ${TOKEN}`. Content-Type and the
    signature headers are the adapter's own and cannot be set here."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if "${" in value:  # an unset secret reference: `validate` warns, `serve` refuses to start
            return value
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{_render.redact_url(value)!r} is not an http:// or https:// URL")
        return value

    @field_validator("headers")
    @classmethod
    def _not_reserved(cls, value: dict[str, str]) -> dict[str, str]:
        taken = sorted(k for k in value if k.lower() in _RESERVED_HEADERS)
        if taken:
            raise ValueError(f"the adapter sets {', '.join(taken)} itself; remove it from `headers`")
        return value


def build_document(notification: Notification, sent_at: float) -> dict[str, Any]:
    """The JSON document for ``notification``; pure, so receivers' tests can build one."""
    return {
        "kind": notification.kind.value,
        "title": _render.title(notification.kind, notification.deployment),
        "headline": notification.headline,
        "action": notification.action,
        "sent_at": sent_at,
        "deployment": notification.deployment.to_json(),
        "checks": [check.to_json() for check in notification.checks],
    }


class WebhookNotifier:
    """A :class:`watchdog.ports.Notifier` that POSTs a JSON document."""

    Settings = WebhookSettings

    def __init__(self, name: str, settings: WebhookSettings, clock: Clock) -> None:
        self.name = name
        self._settings = settings
        self._clock = clock
        self._where = _render.redact_url(settings.url)
        self._what = f"notifier {name!r}"
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(
        cls, name: str, settings: WebhookSettings, context: AdapterContext
    ) -> WebhookNotifier:
        return cls(name, settings, context.clock)

    async def send(self, notification: Notification) -> None:
        """POST the document once; any 2xx is delivered."""
        now = self._clock.now()
        document = _render.jsonable(build_document(notification, now))
        data = json.dumps(document, separators=(",", ":"), default=_render.json_fallback).encode()
        headers = {**self._settings.headers, "Content-Type": "application/json"}
        if self._settings.secret is not None:
            headers.update(sign_headers(self._settings.secret.get_secret_value(), data, now))
        try:
            async with self._client().post(
                self._settings.url, data=data, headers=headers, allow_redirects=False
            ) as response:
                if 200 <= response.status < 300:
                    return
                body, _ = await _render.read_prefix(response, ERROR_BODY_LIMIT)
                status, reason = response.status, response.reason
                retry_after_header = response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _render.transport_error(
                exc,
                what=self._what,
                url=self._settings.url,
                where=self._where,
                timeout=self._settings.timeout,
            ) from exc
        raise _render.status_error(
            what=self._what,
            where=self._where,
            status=status,
            reason=reason,
            body=body,
            retry_after_header=retry_after_header,
            now=self._clock.now(),
            hint=_render.hint_for(status),
        )

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
