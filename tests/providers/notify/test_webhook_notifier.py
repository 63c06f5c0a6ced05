"""The generic webhook notifier against a real server on loopback: the document it sends, its
signature, and how answers and failures map onto the error tree."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

import pytest
from pydantic import ValidationError

from providers.notify.webhook import WebhookNotifier
from watchdog.clock import VirtualClock
from watchdog.errors import PermanentError, TemporaryError
from watchdog.model import CheckReport, Deployment, Verdict
from watchdog.ports import Notification, NotificationKind
from watchdog.signing import SIGNATURE_HEADER, verify

SECRET = "notify-hook-key"


@pytest.fixture
def make_notifier(make_adapter: Callable[..., Any]) -> Callable[..., WebhookNotifier]:
    """Build notifiers from raw settings (as the config loader would); closed after the test."""
    return functools.partial(make_adapter, WebhookNotifier, "hook")


async def test_posts_the_notification_document(
    server: Any,
    make_notifier: Callable[..., WebhookNotifier],
    make_notification: Callable[..., Notification],
    clock: VirtualClock,
) -> None:
    """The receiver gets what happened (kind, title, headline, action), the deployment as the API
    shows it and the checks behind this notification."""
    only = CheckReport("errors", Verdict.FAIL, "errors 10.2 % vs 0.5 %", {"e_value": 4512.0})
    notification = make_notification(kind=NotificationKind.WOULD_ROLL_BACK, checks=(only,))
    notifier = make_notifier(url=server.url("/notify"), headers={"X-Team": "payments"})

    await notifier.send(notification)

    (sent,) = server.requests
    assert sent.path == "/notify"
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["X-Team"] == "payments"
    assert SIGNATURE_HEADER not in sent.headers
    assert sent.json() == {
        "kind": "would_roll_back",
        "title": "Would have rolled back checkout v2 in prod (not executed)",
        "headline": notification.headline,
        "action": notification.action,
        "sent_at": clock.now(),
        "deployment": notification.deployment.to_json(),
        "checks": [only.to_json()],
    }


async def test_signs_the_exact_body(
    server: Any,
    make_notifier: Callable[..., WebhookNotifier],
    make_notification: Callable[..., Notification],
    clock: VirtualClock,
) -> None:
    """With a secret the receiver can check the document came from this watchdog, recently."""
    notifier = make_notifier(url=server.url(), secret=SECRET)

    await notifier.send(make_notification())

    (sent,) = server.requests
    assert verify(sent.headers, sent.body, [SECRET], now=clock.now()) is None
    assert verify(sent.headers, sent.body, ["wrong"], now=clock.now()) is not None


async def test_non_finite_statistics_still_make_valid_json(
    server: Any,
    make_notifier: Callable[..., WebhookNotifier],
    make_notification: Callable[..., Notification],
    make_deployment: Callable[..., Deployment],
) -> None:
    """An infinite e-value must not make the document invalid JSON."""
    check = CheckReport("errors", Verdict.FAIL, "huge", {"e_value": float("inf")})
    deployment = make_deployment(checks=(check,))
    notifier = make_notifier(url=server.url())

    await notifier.send(make_notification(deployment=deployment))

    def refuse(token: str) -> None:
        raise AssertionError(f"non-standard JSON constant {token}")

    document = json.loads(server.requests[0].body, parse_constant=refuse)
    assert document["checks"][0]["statistics"]["e_value"] == "inf"


async def test_5xx_is_temporary(
    server: Any,
    make_notifier: Callable[..., WebhookNotifier],
    make_notification: Callable[..., Notification],
) -> None:
    """A receiver's 5xx may pass: the core retries, this adapter tries once."""
    server.reply.status = 502
    server.reply.body = "bad gateway"
    notifier = make_notifier(url=server.url())

    with pytest.raises(TemporaryError) as caught:
        await notifier.send(make_notification())

    assert "502" in str(caught.value)
    assert len(server.requests) == 1


async def test_4xx_is_permanent_with_status_body_and_redacted_url(
    server: Any,
    make_notifier: Callable[..., WebhookNotifier],
    make_notification: Callable[..., Notification],
) -> None:
    """A refusal names the status, the start of the answer and the URL without its token."""
    server.reply.status = 401
    server.reply.body = "bad token"
    notifier = make_notifier(url=server.url("/notify?api_key=hunter2"))

    with pytest.raises(PermanentError) as caught:
        await notifier.send(make_notification())

    message = str(caught.value)
    assert "401" in message
    assert "bad token" in message
    assert "/notify?api_key=***" in message
    assert "hunter2" not in message
    assert "credentials" in message


async def test_a_timeout_is_temporary(
    server: Any,
    make_notifier: Callable[..., WebhookNotifier],
    make_notification: Callable[..., Notification],
) -> None:
    """A receiver that does not answer in time is retried later."""
    server.reply.hang = True
    notifier = make_notifier(url=server.url(), timeout="100ms")

    with pytest.raises(TemporaryError):
        await notifier.send(make_notification())


async def test_connection_refused_is_temporary(
    closed_port: int,
    make_notifier: Callable[..., WebhookNotifier],
    make_notification: Callable[..., Notification],
) -> None:
    """A receiver that is down may come back."""
    notifier = make_notifier(url=f"http://127.0.0.1:{closed_port}/notify")

    with pytest.raises(TemporaryError) as caught:
        await notifier.send(make_notification())

    assert f"127.0.0.1:{closed_port}" in str(caught.value)


def test_settings_are_checked_at_load() -> None:
    """Unknown keys, non-http URLs and headers the adapter owns fail `watchdog validate`."""
    WebhookNotifier.Settings.model_validate({"url": "${NOTIFY_URL}", "timeout": "5s"})
    for bad in (
        {"url": "https://x.example", "method": "PUT"},
        {"url": "mailto:ops@example.com"},
        {"url": "https://x.example", "headers": {"X-Watchdog-Signature": "forged"}},
    ):
        with pytest.raises(ValidationError):
            WebhookNotifier.Settings.model_validate(bad)


def test_registered_as_the_webhook_notify_entry_point() -> None:
    """`type: webhook` under `notify` finds this class through the entry point."""
    (ep,) = [
        e for e in entry_points(group="rollback_watchdog.providers") if e.name == "notify.webhook"
    ]
    assert ep.load() is WebhookNotifier
