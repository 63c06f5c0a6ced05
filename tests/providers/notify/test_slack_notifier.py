"""The Slack notifier: the Block Kit message it builds, and how Slack's answers (from a local
server that answers as Slack does, per fixtures/slack) map onto the error tree."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

import pytest
from pydantic import ValidationError
from slack_sdk.models.blocks import Block

from providers.notify.slack import SlackNotifier, build_message, clip
from watchdog.errors import PermanentError, TemporaryError
from watchdog.model import CheckReport, DeployEvent, Deployment, Verdict
from watchdog.plugins import AdapterContext
from watchdog.ports import Notification, NotificationKind, Notifier

TOKEN = "t0ken-secret"
KNOWN_BLOCKS = {"header", "section", "divider", "context"}


def assert_valid_block_kit(message: dict[str, Any]) -> None:
    """Structure and limits as Slack enforces them (slack_sdk's own models check the limits)."""
    assert isinstance(message["text"], str) and message["text"].strip()
    blocks = message["blocks"]
    assert 1 <= len(blocks) <= 50
    for raw in blocks:
        assert raw["type"] in KNOWN_BLOCKS
        block = Block.parse(raw)
        assert block is not None, raw
        block.validate_json()  # raises SlackObjectFormationError beyond a limit
        texts = [raw["text"]] if "text" in raw else []
        texts += raw.get("fields", []) + raw.get("elements", [])
        for text in texts:
            assert text["text"].strip(), f"empty text in {raw}"
        for field in raw.get("fields", []):
            assert len(field["text"]) <= 2000
        if raw["type"] == "header":
            assert len(raw["text"]["text"]) <= 150
        if raw["type"] == "section" and "text" in raw:
            assert len(raw["text"]["text"]) <= 3000
    json.dumps(message)  # sendable as is


def mrkdwn_texts(message: dict[str, Any]) -> list[str]:
    out = [message["text"]]
    for block in message["blocks"]:
        for item in [block.get("text"), *block.get("fields", []), *block.get("elements", [])]:
            if item and item.get("type") == "mrkdwn":
                out.append(item["text"])
    return out


def header_of(message: dict[str, Any]) -> str:
    (header,) = [b for b in message["blocks"] if b["type"] == "header"]
    text: str = header["text"]["text"]
    return text


@pytest.fixture
def make_notifier(make_adapter: Callable[..., Any]) -> Callable[..., SlackNotifier]:
    """Build notifiers from raw settings (as the config loader would); closed after the test."""
    return functools.partial(make_adapter, SlackNotifier, "slack")


# --- the message ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (NotificationKind.ROLLED_BACK, ":rewind: Rolled back checkout v2 in prod"),
        (
            NotificationKind.ROLLBACK_FAILED,
            ":rotating_light: Rollback FAILED for checkout v2 in prod",
        ),
        (NotificationKind.WOULD_ROLL_BACK, ":warning: Would have rolled back checkout v2 in prod"),
        (NotificationKind.PASSED, ":white_check_mark: checkout v2 in prod passed"),
        (NotificationKind.INCONCLUSIVE, ":grey_question: No verdict for checkout v2 in prod"),
        (NotificationKind.BLIND, ":see_no_evil: Watching checkout v2 in prod blind"),
    ],
)
def test_each_kind_has_its_own_header(
    kind: NotificationKind, expected: str, make_notification: Callable[..., Notification]
) -> None:
    """A channel can be scanned by eye: every kind starts with its own emoji and words, and a
    failed rollback is the loudest."""
    message = build_message(make_notification(kind=kind))

    assert header_of(message).startswith(expected)
    assert_valid_block_kit(message)


def test_headers_differ_between_all_kinds(
    make_notification: Callable[..., Notification],
) -> None:
    """No two kinds can be mistaken for each other."""
    headers = {header_of(build_message(make_notification(kind=k))) for k in NotificationKind}
    assert len(headers) == len(NotificationKind)


def test_message_carries_the_facts_and_the_numbers(
    make_notification: Callable[..., Notification],
) -> None:
    """Someone on call acts from the message alone: which deploy, against what, under which
    policy, what was done, and each check's verdict with its numbers."""
    message = build_message(make_notification())
    assert_valid_block_kit(message)
    text = "\n".join(mrkdwn_texts(message))

    fields = next(b for b in message["blocks"] if "fields" in b)["fields"]
    labels = [f["text"].split("\n")[0] for f in fields]
    assert labels == [
        "*Service*",
        "*Environment*",
        "*Version*",
        "*Baseline version*",
        "*Policy*",
        "*State*",
    ]
    values = [f["text"].split("\n")[1] for f in fields]
    assert values == ["checkout", "prod", "v2", "v1", "checkout-prod", "rolled_back"]
    assert "errors regressed: 10.2 % vs 0.5 % for the baseline" in text
    assert "Rolled back through hook" in text
    assert ":x: *errors*: failing" in text
    assert (
        "errors 10.2 % vs 0.5 % on 2,400 requests; evidence 4,512 against a threshold of 200"
    ) in text
    context = message["blocks"][-1]
    assert context["type"] == "context"
    assert "`dep-42`" in context["elements"][0]["text"]
    date = r"<!date\^1699999995\^[^|]+\|2023-11-14 22:13 UTC>"
    assert re.search(date, context["elements"][0]["text"])
    assert message["text"].startswith("Rolled back checkout v2 in prod: errors regressed")


def test_failing_checks_come_first(
    make_notification: Callable[..., Notification],
) -> None:
    """The checks that caused the decision are read first."""
    checks = (
        CheckReport("latency", Verdict.PASS, "p99 212 ms vs 209 ms"),
        CheckReport("cpu", Verdict.PENDING, "not enough polls yet"),
        CheckReport("errors", Verdict.FAIL, "errors 10.2 % vs 0.5 %"),
    )
    message = build_message(make_notification(checks=checks))

    order = [b["text"]["text"].split("*")[1] for b in message["blocks"][4:-1]]
    assert order == ["errors", "cpu", "latency"]


def test_user_strings_cannot_ping_link_or_break_markup(
    make_notification: Callable[..., Notification],
    make_deployment: Callable[..., Deployment],
) -> None:
    """Service names, versions, headlines and summaries come from webhooks and metrics; in mrkdwn
    they are escaped so a deploy called ``<!channel>`` pings nobody and ``<http://x|y>`` links
    nowhere."""
    hostile = "<!channel> & <https://evil.example|click>"
    deployment = make_deployment(
        checks=(CheckReport("err<or>s", Verdict.FAIL, f"summary {hostile}"),)
    )
    message = build_message(
        make_notification(deployment=deployment, headline=hostile, action=hostile)
    )
    assert_valid_block_kit(message)

    for text in mrkdwn_texts(message):
        assert "<!channel>" not in text
        assert "<https://evil" not in text
    joined = "\n".join(mrkdwn_texts(message))
    assert "&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;" in joined
    assert "err&lt;or&gt;s" in joined


def test_limits_hold_for_huge_input(
    make_notification: Callable[..., Notification],
    make_deployment: Callable[..., Deployment],
) -> None:
    """Whatever the input, Slack never refuses the message: long texts are cut with an ellipsis,
    and checks beyond 50 blocks are folded into one line that keeps failing checks in view."""
    checks = tuple(
        CheckReport(f"check-{i:02d}", Verdict.PASS if i % 3 else Verdict.FAIL, "z" * 5000)
        for i in range(80)
    )
    event = DeployEvent(source="generic", event_id="e" * 500, service="s" * 300, version="v" * 3000)
    deployment = make_deployment(checks=checks, event=event)
    message = build_message(
        make_notification(deployment=deployment, headline="h" * 5000, action="a" * 5000)
    )
    assert_valid_block_kit(message)

    blocks = message["blocks"]
    assert len(blocks) == 50
    assert header_of(message).endswith("…")
    folded = blocks[-2]["text"]["text"]
    assert folded.startswith("*")
    assert "more checks:*" in folded
    shown = [b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b]
    failing = sum(1 for c in checks if c.verdict is Verdict.FAIL)
    assert sum(":x:" in t for t in shown) == failing  # every failing check kept its own block
    assert all(t.endswith("…") for t in shown if "z" * 100 in t)
    summary = blocks[2]["text"]["text"]
    assert summary.startswith("*hhh") and "…*\naaa" in summary  # the action survives a huge headline


def test_clip_never_splits_an_entity() -> None:
    """Cutting escaped text inside ``&amp;`` would show a broken entity."""
    assert clip("ab&amp;cd", 5) == "ab…"
    assert clip("ab&amp;cd", 8) == "ab&amp;…"
    assert clip("short", 10) == "short"


def test_empty_headline_and_summary_leave_no_empty_text(
    make_notification: Callable[..., Notification],
    make_deployment: Callable[..., Deployment],
) -> None:
    """Slack refuses a section with empty text (invalid_blocks), so empty parts are left out."""
    deployment = make_deployment(
        event=DeployEvent(source="generic", event_id="1", service="checkout", version="v2"),
        policy=None,
        checks=(CheckReport("errors", Verdict.PENDING, ""),),
    )
    message = build_message(make_notification(deployment=deployment, headline="", action=" "))

    assert_valid_block_kit(message)
    assert header_of(message) == ":rewind: Rolled back checkout v2"


def test_build_message_is_pure(make_notification: Callable[..., Notification]) -> None:
    """The demo prints it and tests inspect it: same notification, same message."""
    notification = make_notification()
    assert build_message(notification) == build_message(notification)


# --- sending ----------------------------------------------------------------------------------


async def test_ok_is_delivered_with_the_built_message(
    server: Any,
    make_notifier: Callable[..., SlackNotifier],
    make_notification: Callable[..., Notification],
) -> None:
    """Slack's 200 ``ok`` is success; the POST carries the Block Kit message as JSON, plus the
    optional username and icon."""
    notification = make_notification()
    notifier = make_notifier(
        webhook_url=server.url(), username="watchdog", icon_emoji=":rewind:"
    )

    await notifier.send(notification)

    (sent,) = server.requests
    assert sent.method == "POST"
    assert sent.path == f"/services/T0001/B0002/{TOKEN}"
    assert sent.headers["Content-Type"].startswith("application/json")
    body = sent.json()
    assert body == {**build_message(notification), "username": "watchdog", "icon_emoji": ":rewind:"}


async def test_other_2xx_answers_count_as_delivered(
    server: Any,
    make_notifier: Callable[..., SlackNotifier],
    make_notification: Callable[..., Notification],
) -> None:
    """A Slack-compatible receiver that answers 200 with something else did take the message;
    failing the notification would make the core send it again."""
    server.reply.body = '{"success": true}'
    notifier = make_notifier(webhook_url=server.url())

    await notifier.send(make_notification())


@pytest.mark.parametrize(
    ("status", "code", "advice"),
    [
        (400, "invalid_payload", "bug"),
        (400, "missing_text_or_fallback_or_attachments", "bug"),
        (403, "action_prohibited", "admin"),
        (404, "channel_not_found", "webhook_url"),
        (404, "no_team", "webhook_url"),
        (410, "channel_is_archived", "archived"),
    ],
)
async def test_refusals_are_permanent_and_name_slacks_code(
    status: int,
    code: str,
    advice: str,
    server: Any,
    make_notifier: Callable[..., SlackNotifier],
    make_notification: Callable[..., Notification],
) -> None:
    """Slack's plain-text error code reaches the operator with what to do about it, and the
    webhook's token (a credential) does not."""
    server.reply.status = status
    server.reply.body = code
    notifier = make_notifier(webhook_url=server.url())

    with pytest.raises(PermanentError) as caught:
        await notifier.send(make_notification())

    message = str(caught.value)
    assert str(status) in message
    assert code in message
    assert advice in message
    assert TOKEN not in message
    assert "/services/T0001/B0002/…" in message
    assert len(server.requests) == 1


async def test_rate_limit_is_temporary_with_retry_after(
    server: Any,
    make_notifier: Callable[..., SlackNotifier],
    make_notification: Callable[..., Notification],
) -> None:
    """Slack's 429 says when to come back; that is the retry's delay, and the SDK does not retry
    on its own (the core does)."""
    server.reply.status = 429
    server.reply.body = "rate_limited"
    server.reply.headers = {"Retry-After": "30"}
    notifier = make_notifier(webhook_url=server.url())

    with pytest.raises(TemporaryError) as caught:
        await notifier.send(make_notification())

    assert caught.value.delay == 30.0
    assert "rate_limited" in str(caught.value)
    assert len(server.requests) == 1


async def test_rollup_error_is_temporary(
    server: Any,
    make_notifier: Callable[..., SlackNotifier],
    make_notification: Callable[..., Notification],
) -> None:
    """Slack's 500 ``rollup_error`` is "likely not your fault": worth a retry."""
    server.reply.status = 500
    server.reply.body = "rollup_error"
    notifier = make_notifier(webhook_url=server.url())

    with pytest.raises(TemporaryError) as caught:
        await notifier.send(make_notification())

    assert "rollup_error" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert len(server.requests) == 1


async def test_a_timeout_is_temporary(
    server: Any,
    make_notifier: Callable[..., SlackNotifier],
    make_notification: Callable[..., Notification],
) -> None:
    """A Slack that does not answer in time is retried later."""
    server.reply.hang = True
    notifier = make_notifier(webhook_url=server.url(), timeout="100ms")

    with pytest.raises(TemporaryError) as caught:
        await notifier.send(make_notification())

    assert "0.1 s" in str(caught.value)
    assert TOKEN not in str(caught.value)


async def test_connection_refused_is_temporary(
    closed_port: int,
    make_notifier: Callable[..., SlackNotifier],
    make_notification: Callable[..., Notification],
) -> None:
    """A network that is down may come back; the SDK's own connection retry stays off."""
    notifier = make_notifier(webhook_url=f"http://127.0.0.1:{closed_port}/services/T/B/{TOKEN}")

    with pytest.raises(TemporaryError) as caught:
        await notifier.send(make_notification())

    assert TOKEN not in str(caught.value)


async def test_no_proxy_is_honoured(
    server: Any,
    closed_port: int,
    make_notifier: Callable[..., SlackNotifier],
    make_notification: Callable[..., Notification],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """slack_sdk takes HTTPS_PROXY from the environment but ignores NO_PROXY; a host listed there
    is reached directly, as with every other tool on the machine."""
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    notifier = make_notifier(webhook_url=server.url())

    await notifier.send(make_notification())

    assert len(server.requests) == 1


# --- settings and lifecycle -------------------------------------------------------------------


def test_settings_keep_the_webhook_url_secret_and_check_it() -> None:
    """The URL is a credential: it never shows in a repr, and a malformed one fails validation
    without being printed whole; an unset ``${...}`` reference passes `watchdog validate`."""
    settings = SlackNotifier.Settings.model_validate(
        {"webhook_url": f"https://hooks.slack.com/services/T/B/{TOKEN}"}
    )
    assert TOKEN not in repr(settings)
    assert settings.timeout == 10.0
    SlackNotifier.Settings.model_validate({"webhook_url": "${SLACK_WEBHOOK_URL}"})
    with pytest.raises(ValidationError) as caught:
        SlackNotifier.Settings.model_validate({"webhook_url": f"hooks.slack.com/x/{TOKEN}"})
    assert TOKEN not in str(caught.value).split("input_value")[0]
    with pytest.raises(ValidationError):
        SlackNotifier.Settings.model_validate({"webhook_url": "https://x.example", "channel": "#a"})
    with pytest.raises(ValidationError):
        SlackNotifier.Settings.model_validate(
            {"webhook_url": "https://x.example", "icon_emoji": "rewind"}
        )


def test_building_needs_no_event_loop(context: AdapterContext) -> None:
    """Adapters are built while the config loads, before any loop runs."""
    notifier = SlackNotifier.from_settings(
        "slack",
        SlackNotifier.Settings.model_validate({"webhook_url": "https://hooks.slack.com/s/T/B/x"}),
        context,
    )
    assert isinstance(notifier, Notifier)


async def test_aclose_is_safe_before_use_twice_and_before_reuse(
    server: Any,
    make_notifier: Callable[..., SlackNotifier],
    make_notification: Callable[..., Notification],
) -> None:
    """Shutdown may close a notifier that never sent; a closed one opens a new session."""
    notifier = make_notifier(webhook_url=server.url())
    await notifier.aclose()
    await notifier.send(make_notification())
    await notifier.aclose()
    await notifier.aclose()
    await notifier.send(make_notification())
    assert len(server.requests) == 2


def test_registered_as_the_slack_notify_entry_point() -> None:
    """`type: slack` under `notify` finds this class through the entry point."""
    (ep,) = [
        e for e in entry_points(group="rollback_watchdog.providers") if e.name == "notify.slack"
    ]
    assert ep.load() is SlackNotifier
