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

from typing import Any, Final

from providers import _http
from providers.notify import _render
from watchdog.clock import Clock
from watchdog.config.models import Duration
from watchdog.plugins import AdapterContext
from watchdog.ports import Notification

ERROR_BODY_LIMIT: Final = 1024
"""Bytes of a refusal read for the error message; only its start is quoted."""


class WebhookSettings(_http.HookSettings):
    """The keys of a ``notify.<name>`` section with ``type: webhook``."""

    timeout: Duration = 10.0
    """Budget for one attempt, connect to last byte. 10s by default: a receiver should queue the
    document and answer; the core retries a timeout."""


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
        self._endpoint = _http.Endpoint(f"notifier {name!r}", settings.url, settings.timeout)
        self._session = _http.LazySession.for_hook(settings.timeout)

    @classmethod
    def from_settings(
        cls, name: str, settings: WebhookSettings, context: AdapterContext
    ) -> WebhookNotifier:
        return cls(name, settings, context.clock)

    async def send(self, notification: Notification) -> None:
        """POST the document once; any 2xx is delivered."""
        now = self._clock.now()
        data = _http.json_body(build_document(notification, now))
        headers = self._settings.request_headers(data, now)
        async with self._endpoint.post(self._session.get(), data, headers) as response:
            if 200 <= response.status < 300:
                return
            answer = await _http.Answer.read(response, ERROR_BODY_LIMIT)
        raise self._endpoint.status_error(answer, self._clock.now(), _hint(answer.status))

    async def aclose(self) -> None:
        await self._session.aclose()


def _hint(status: int) -> str:
    """What to check for a refused call, by status."""
    if status in (401, 403):
        return "Check the credentials the receiver expects (`headers`, `secret`)"
    if status in (404, 405, 410):
        return "Check `url`: the receiver does not take POSTs there"
    if 300 <= status < 400:
        return "The receiver redirects; set `url` to the final address"
    if status in (400, 413, 415, 422):
        return "The receiver refused the notification document; check what it expects"
    return ""
