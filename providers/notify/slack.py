"""Slack notifications through an incoming webhook, as Block Kit: what happened, to which deploy,
and the numbers behind the decision, so the person on call can act from the message alone.

:func:`build_message` is pure (the demo prints it, tests inspect it); :class:`SlackNotifier` sends it
with slack_sdk's async webhook client, one attempt per call (the SDK's own retry handlers are off:
the core retries). Slack answers a plain-text ``ok`` with 200, and a plain-text error code otherwise
(fixtures/slack, SOURCES.md), mapped here::

    429, 5xx (rollup_error)                   → TemporaryError (delay from Retry-After)
    400 invalid_payload, 404 channel_not_found,
    410 channel_is_archived, 403, no_team ... → PermanentError naming the code and what to do

The webhook URL is a credential (its path ends with a token), so it is never printed whole, and
slack_sdk's debug logging, which prints it, is kept off.
"""

from __future__ import annotations

import logging
import math
import re
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp
import structlog
from pydantic import BaseModel, ConfigDict, SecretStr, field_validator
from slack_sdk.webhook.async_client import AsyncWebhookClient

from providers import _http
from providers.notify import _render
from watchdog.clock import Clock
from watchdog.config.models import Duration
from watchdog.errors import AdapterError
from watchdog.model import CheckReport, Deployment, Verdict
from watchdog.plugins import AdapterContext
from watchdog.ports import Notification

# Block Kit limits (api.slack.com/reference/block-kit): beyond them Slack refuses the whole message.
MAX_BLOCKS: Final = 50
HEADER_LIMIT: Final = 150
SECTION_LIMIT: Final = 3000
FIELD_LIMIT: Final = 2000
CONTEXT_LIMIT: Final = 3000
FALLBACK_LIMIT: Final = 3000
"""Top-level ``text``: Slack truncates long texts; notifications and screen readers need only the
gist."""
VALUE_LIMIT: Final = 200
"""A single value (service, version, id) shown in a field or the context line."""

_VERDICTS: Final[dict[Verdict, tuple[str, str]]] = {
    Verdict.FAIL: (":x:", "failing"),
    Verdict.INCONCLUSIVE: (":grey_question:", "inconclusive"),
    Verdict.PENDING: (":hourglass_flowing_sand:", "pending"),
    Verdict.PASS: (":white_check_mark:", "passing"),
}
# Failing checks first: they are why the message exists, and they must survive folding.
_SEVERITY: Final = {Verdict.FAIL: 0, Verdict.INCONCLUSIVE: 1, Verdict.PENDING: 2, Verdict.PASS: 3}

_FORMAT_BUG = (
    "Slack could not read the message rollback-watchdog built; please report this as a bug "
    "with this log line"
)
_GONE = "The webhook no longer works; create a new incoming webhook and update `webhook_url`"
_SLACK_HINTS: Final[dict[str, str]] = {
    "invalid_payload": _FORMAT_BUG,
    "invalid_blocks": _FORMAT_BUG,
    "invalid_blocks_format": _FORMAT_BUG,
    "missing_text_or_fallback_or_attachments": _FORMAT_BUG,
    "no_text": _FORMAT_BUG,
    "channel_not_found": "The webhook's channel no longer exists. " + _GONE,
    "channel_is_archived": (
        "The webhook's channel is archived; unarchive it or create a webhook for another channel "
        "and update `webhook_url`"
    ),
    "no_team": "The webhook's workspace is gone or the app was removed. " + _GONE,
    "team_disabled": "The webhook's workspace is disabled. " + _GONE,
    "no_service": "The webhook was revoked or its app removed. " + _GONE,
    "no_service_id": "The webhook was revoked or its app removed. " + _GONE,
    "invalid_token": "The webhook was revoked or its app removed. " + _GONE,
    "action_prohibited": "A workspace admin restricts posting through this webhook; ask them",
    "posting_to_general_channel_denied": (
        "Only admins may post to this channel; create a webhook for another channel"
    ),
    "user_not_found": "The webhook posts as a user who no longer exists. " + _GONE,
}
_SLACK_CODE = re.compile(r"^[a-z0-9_]{2,64}$")
_ICON = re.compile(r"^:[a-z0-9_+\-']+:$")

_log = structlog.get_logger(__name__)


class SlackSettings(BaseModel):
    """The keys of a ``notify.<name>`` section with ``type: slack``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    webhook_url: SecretStr
    """The incoming webhook's URL (https://hooks.slack.com/services/...). It is a credential: keep
    it out of the file with `${SLACK_WEBHOOK_URL}`; messages show it with the token hidden."""
    timeout: Duration = 10.0
    """Budget for one attempt, connect to last byte. 10s by default: Slack answers in well under a
    second when healthy; the core retries a timeout."""
    username: str | None = None
    """Overrides the poster's name. Only legacy webhooks honour it; app webhooks ignore it."""
    icon_emoji: str | None = None
    """Overrides the poster's icon, e.g. `:rewind:`. Legacy webhooks only, like `username`."""

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: SecretStr) -> SecretStr:
        _http.check_url(value.get_secret_value(), hide_last_segment=True, wanted="an https:// URL")
        return value

    @field_validator("icon_emoji")
    @classmethod
    def _emoji_code(cls, value: str | None) -> str | None:
        if value is not None and not _ICON.match(value):
            raise ValueError(f"{value!r} is not an emoji code like :rewind:")
        return value


# --- the message ------------------------------------------------------------------------------


def escape(text: str) -> str:
    """Text from outside (service names, summaries) made inert in mrkdwn: no links, no
    ``<!channel>`` pings, no broken entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """Escaped mrkdwn cut to ``limit`` with an ellipsis, never inside an ``&amp;`` entity."""
    if len(text) <= limit:
        return text
    cut = text[: max(0, limit - 1)]
    amp = cut.rfind("&")
    if amp >= 0 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + _http.ELLIPSIS


def _code(value: str) -> str:
    """A value as inline code, so ``*`` or ``_`` in a version or id is shown, not formatting."""
    inner = escape(_http.clip(value, VALUE_LIMIT)).replace("`", "ˋ")
    return f"`{inner}`" if inner else "–"


def _mrkdwn(text: str, limit: int = SECTION_LIMIT) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": clip(text, limit)}


def _field(label: str, value: str | None) -> dict[str, Any]:
    shown = escape(_http.clip(value, VALUE_LIMIT)) if value else "–"
    return _mrkdwn(f"*{label}*\n{shown}", FIELD_LIMIT)


def _date(ts: float) -> str:
    """Slack's date token: shown in each reader's time zone, with a UTC text fallback."""
    if not math.isfinite(ts):
        return "at an unknown time"
    fallback = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(ts)}^{{date_short_pretty}} at {{time}}|{fallback}>"


def _check_text(check: CheckReport) -> str:
    icon = _VERDICTS[check.verdict][0] if check.verdict in _VERDICTS else ":grey_question:"
    first = f"{icon} *{escape(_http.clip(check.name, VALUE_LIMIT))}*: {_word(check.verdict)}"
    if not check.summary.strip():
        return first
    return f"{first}\n{clip(escape(check.summary.strip()), SECTION_LIMIT - len(first) - 1)}"


def _fold(checks: list[CheckReport]) -> str:
    names = ", ".join(
        f"{escape(_http.clip(c.name, VALUE_LIMIT))} ({_word(c.verdict)})" for c in checks
    )
    return f"*{len(checks)} more checks:* {names}"


def _word(verdict: Verdict) -> str:
    return _VERDICTS[verdict][1] if verdict in _VERDICTS else verdict.value


def _context(deployment: Deployment) -> str:
    event = deployment.event
    if deployment.decided_at is not None:
        when = f"decided {_date(deployment.decided_at)}"
    else:
        when = f"updated {_date(deployment.updated_at)}"
    source = f" · {escape(_http.clip(event.source, VALUE_LIMIT))} event {_code(event.event_id)}"
    return f"Deployment {_code(deployment.id)}{source if event.source else ''} · {when}"


def build_message(notification: Notification) -> dict[str, Any]:
    """The incoming-webhook body (``text`` and ``blocks``) for ``notification``.

    Within Block Kit's limits whatever the input: long texts are cut with an ellipsis and checks
    beyond the block budget are folded into one line, failing checks kept in view.
    """
    d = notification.deployment
    title = _render.title(notification.kind, d)
    icon = _render.emoji(notification.kind)

    # Each part is cut on its own, so a huge headline cannot push out the action or the closing *.
    headline = notification.headline.strip()
    action = notification.action.strip()
    lines = [
        f"*{clip(escape(headline), SECTION_LIMIT // 2 - 2)}*" if headline else "",
        clip(escape(action), SECTION_LIMIT // 2 - 1),
    ]
    summary = "\n".join(line for line in lines if line)

    head: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _http.clip(f"{icon} {title}", HEADER_LIMIT),
                "emoji": True,
            },
        },
        {
            "type": "section",
            "fields": [
                _field("Service", d.service),
                _field("Environment", d.environment),
                _field("Version", d.version),
                _field("Baseline version", d.event.baseline_version),
                _field("Policy", d.policy),
                _field("State", d.state.value),
            ],
        },
    ]
    if summary:
        head.append({"type": "section", "text": _mrkdwn(summary)})
    tail: list[dict[str, Any]] = [
        {"type": "context", "elements": [_mrkdwn(_context(d), CONTEXT_LIMIT)]}
    ]

    checks = sorted(notification.checks, key=lambda c: _SEVERITY.get(c.verdict, 1))
    body: list[dict[str, Any]] = []
    if checks:
        body.append({"type": "divider"})
        room = MAX_BLOCKS - len(head) - len(tail) - 1
        shown = checks if len(checks) <= room else checks[: room - 1]
        body.extend({"type": "section", "text": _mrkdwn(_check_text(c))} for c in shown)
        if len(shown) < len(checks):
            body.append({"type": "section", "text": _mrkdwn(_fold(checks[len(shown) :]))})

    fallback = f"{title}: {headline}" if headline else title
    return {"text": clip(escape(fallback), FALLBACK_LIMIT), "blocks": [*head, *body, *tail]}


# --- the notifier -----------------------------------------------------------------------------


class SlackNotifier:
    """A :class:`watchdog.ports.Notifier` posting to a Slack incoming webhook."""

    Settings = SlackSettings

    def __init__(self, name: str, settings: SlackSettings, clock: Clock) -> None:
        self.name = name
        self._settings = settings
        self._clock = clock
        self._url = settings.webhook_url.get_secret_value()
        self._endpoint = _http.Endpoint(
            f"notifier {name!r} (Slack)", self._url, settings.timeout, hide_last_segment=True
        )
        self._session = _http.LazySession.for_hook(settings.timeout)
        self._webhook: AsyncWebhookClient | None = None

    @classmethod
    def from_settings(
        cls, name: str, settings: SlackSettings, context: AdapterContext
    ) -> SlackNotifier:
        return cls(name, settings, context.clock)

    async def send(self, notification: Notification) -> None:
        """Post the message once; a 2xx is delivered, anything else raises."""
        body = build_message(notification)
        if self._settings.username:
            body["username"] = self._settings.username
        if self._settings.icon_emoji:
            body["icon_emoji"] = self._settings.icon_emoji
        try:
            response = await self._client().send_dict(body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._endpoint.transport_error(exc) from exc
        answer = _http.Answer(int(response.status_code), None, str(response.body or ""), response.headers)
        if 200 <= answer.status < 300:
            if answer.body.strip() != "ok":
                # Delivered as far as HTTP goes; a proxy or a Slack-compatible server may say more.
                _log.warning(
                    "notify.unexpected_answer",
                    notifier=self.name,
                    status=answer.status,
                    body=_http.excerpt(answer.body),
                )
            return
        raise self._status_error(answer)

    async def aclose(self) -> None:
        self._webhook = None
        await self._session.aclose()

    def _client(self) -> AsyncWebhookClient:
        # Made on first use, inside the running loop, never in the constructor.
        if self._webhook is None or self._session.closed:
            # slack_sdk prints the URL (a credential) when its logger's own level allows DEBUG.
            sdk_log = logging.getLogger(f"{__name__}.sdk")
            sdk_log.setLevel(logging.INFO)
            webhook = AsyncWebhookClient(
                self._url,
                timeout=max(1, math.ceil(self._settings.timeout)),
                session=self._session.get(),
                logger=sdk_log,
                retry_handlers=[],  # one attempt: the core retries
            )
            # slack_sdk takes HTTPS_PROXY from the environment but ignores NO_PROXY.
            host = urllib.parse.urlsplit(self._url).hostname
            if webhook.proxy and host and urllib.request.proxy_bypass(host):
                webhook.proxy = None
            self._webhook = webhook
        return self._webhook

    def _status_error(self, answer: _http.Answer) -> AdapterError:
        code = answer.body.strip()
        hint = _SLACK_HINTS.get(code, "") if _SLACK_CODE.match(code) else ""
        if not hint and answer.status in (403, 404, 410):
            hint = _GONE
        return self._endpoint.status_error(answer, self._clock.now(), hint)
