"""The HTTP rollback hook against a real server on loopback: what it sends, how answers and
failures map onto the error tree."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from importlib.metadata import entry_points
from typing import Any

import pytest
from pydantic import ValidationError

from providers.rollback.http import HttpRollback
from watchdog.clock import VirtualClock
from watchdog.errors import PermanentError, TemporaryError
from watchdog.model import CheckReport, Deployment, Verdict
from watchdog.plugins import AdapterContext
from watchdog.ports import RollbackRequest, RollbackTarget
from watchdog.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

SECRET = "s3cret-hook-key"


@pytest.fixture
def make_hook(make_adapter: Callable[..., Any]) -> Callable[..., HttpRollback]:
    """Build hooks from raw settings (as the config loader would); closed after the test."""
    return functools.partial(make_adapter, HttpRollback, "hook")


def request_for(deployment: Deployment) -> RollbackRequest:
    return RollbackRequest(
        deployment=deployment,
        idempotency_key=f"{deployment.id}:rollback",
        reason="errors regressed: 10.2 % vs 0.5 %",
        actor="watchdog",
    )


# --- what is sent -----------------------------------------------------------------------------


async def test_posts_the_deployment_with_reason_actor_and_idempotency_key(
    server: Any, make_hook: Callable[..., HttpRollback], make_deployment: Callable[..., Deployment]
) -> None:
    """The receiver gets the deployment as the API shows it, why and by whom, and the key that
    lets it de-duplicate a retried rollback."""
    deployment = make_deployment()
    hook = make_hook(url=server.url("/rollback"))

    await hook.rollback(request_for(deployment))

    (sent,) = server.requests
    assert sent.method == "POST"
    assert sent.path == "/rollback"
    assert sent.headers["Idempotency-Key"] == "dep-42:rollback"
    assert sent.headers["Content-Type"] == "application/json"
    expected = {
        **deployment.to_json(),
        "reason": "errors regressed: 10.2 % vs 0.5 %",
        "actor": "watchdog",
    }
    assert sent.json() == expected


async def test_a_retry_sends_the_same_idempotency_key(
    server: Any, make_hook: Callable[..., HttpRollback], make_deployment: Callable[..., Deployment]
) -> None:
    """Two calls for the same deployment (the core retrying) carry one key, so the receiver
    rolls back once."""
    hook = make_hook(url=server.url())
    request = request_for(make_deployment())

    await hook.rollback(request)
    await hook.rollback(request)

    keys = {r.headers["Idempotency-Key"] for r in server.requests}
    assert keys == {"dep-42:rollback"}


async def test_signs_the_exact_body_with_the_clock_time(
    server: Any,
    make_hook: Callable[..., HttpRollback],
    make_deployment: Callable[..., Deployment],
    clock: VirtualClock,
) -> None:
    """With a secret the request carries the DESIGN §4 signature over the raw body, stamped with
    the injected clock, so the receiver can refuse forged and replayed rollbacks."""
    hook = make_hook(url=server.url(), secret=SECRET)

    await hook.rollback(request_for(make_deployment()))

    (sent,) = server.requests
    assert sent.headers[TIMESTAMP_HEADER] == str(int(clock.now()))
    assert verify(sent.headers, sent.body, [SECRET], now=clock.now()) is None
    assert verify(sent.headers, sent.body, ["another-key"], now=clock.now()) is not None
    assert verify(sent.headers, sent.body + b" ", [SECRET], now=clock.now()) is not None


async def test_sends_no_signature_without_a_secret(
    server: Any, make_hook: Callable[..., HttpRollback], make_deployment: Callable[..., Deployment]
) -> None:
    """Without a secret nothing pretends to be signed."""
    hook = make_hook(url=server.url())

    await hook.rollback(request_for(make_deployment()))

    (sent,) = server.requests
    assert SIGNATURE_HEADER not in sent.headers
    assert TIMESTAMP_HEADER not in sent.headers


async def test_sends_the_configured_headers(
    server: Any, make_hook: Callable[..., HttpRollback], make_deployment: Callable[..., Deployment]
) -> None:
    """Operators authenticate to their hook with extra headers (a bearer token)."""
    hook = make_hook(url=server.url(), headers={"Authorization": "Bearer t0ken"})

    await hook.rollback(request_for(make_deployment()))

    assert server.requests[0].headers["Authorization"] == "Bearer t0ken"


async def test_non_finite_statistics_still_make_valid_json(
    server: Any, make_hook: Callable[..., HttpRollback], make_deployment: Callable[..., Deployment]
) -> None:
    """An e-value that overflowed to infinity must not turn the body into JSON that strict
    receivers refuse (``Infinity`` is not JSON)."""
    check = CheckReport("errors", Verdict.FAIL, "huge", {"e_value": float("inf")})
    hook = make_hook(url=server.url())

    await hook.rollback(request_for(make_deployment(checks=(check,))))

    def refuse(token: str) -> None:
        raise AssertionError(f"non-standard JSON constant {token}")

    body = json.loads(server.requests[0].body, parse_constant=refuse)
    assert body["checks"][0]["statistics"]["e_value"] == "inf"


# --- answers ----------------------------------------------------------------------------------


async def test_a_2xx_is_a_rollback_with_the_json_answer_kept(
    server: Any, make_hook: Callable[..., HttpRollback], make_deployment: Callable[..., Deployment]
) -> None:
    """Success returns the status and the hook's JSON answer (a job id, say) for the audit trail,
    and a sentence for people."""
    server.reply.body = json.dumps({"job": 17, "status": "started"})
    hook = make_hook(url=server.url("/rollback?token=abc"))

    result = await hook.rollback(request_for(make_deployment()))

    assert result.data == {"status": 200, "response": {"job": 17, "status": "started"}}
    assert result.detail.endswith("answered 200")
    assert "abc" not in result.detail


async def test_a_text_answer_is_kept_as_text_up_to_2_kb(
    server: Any, make_hook: Callable[..., HttpRollback], make_deployment: Callable[..., Deployment]
) -> None:
    """A long or non-JSON answer is stored as its first 2 KB of text, never whole."""
    server.reply.body = "x" * 10_000
    server.reply.content_type = "text/plain"
    hook = make_hook(url=server.url())

    result = await hook.rollback(request_for(make_deployment()))

    assert result.data["response"] == "x" * 2048


async def test_500_is_temporary(
    server: Any, make_hook: Callable[..., HttpRollback], make_deployment: Callable[..., Deployment]
) -> None:
    """A 5xx may pass (the hook is deploying, its database blipped): the core should retry."""
    server.reply.status = 500
    server.reply.body = "database unavailable"
    server.reply.content_type = "text/plain"
    hook = make_hook(url=server.url())

    with pytest.raises(TemporaryError) as caught:
        await hook.rollback(request_for(make_deployment()))

    assert "500" in str(caught.value)
    assert "database unavailable" in str(caught.value)
    assert caught.value.delay is None
    assert len(server.requests) == 1  # one attempt; retrying is the core's job


async def test_429_retry_after_seconds_becomes_the_delay(
    server: Any, make_hook: Callable[..., HttpRollback], make_deployment: Callable[..., Deployment]
) -> None:
    """A rate-limited hook says when to come back; the core's retry waits that long."""
    server.reply.status = 429
    server.reply.headers = {"Retry-After": "7"}
    hook = make_hook(url=server.url())

    with pytest.raises(TemporaryError) as caught:
        await hook.rollback(request_for(make_deployment()))

    assert caught.value.delay == 7.0


async def test_503_retry_after_date_is_measured_from_the_clock(
    server: Any,
    make_hook: Callable[..., HttpRollback],
    make_deployment: Callable[..., Deployment],
    clock: VirtualClock,
) -> None:
    """Retry-After may be an HTTP date; the delay counts from the injected clock, not the host's."""
    server.reply.status = 503
    when = datetime.fromtimestamp(clock.now() + 120, UTC)
    server.reply.headers = {"Retry-After": format_datetime(when, usegmt=True)}
    hook = make_hook(url=server.url())

    with pytest.raises(TemporaryError) as caught:
        await hook.rollback(request_for(make_deployment()))

    assert caught.value.delay == pytest.approx(120.0)


async def test_404_is_permanent_and_readable_without_leaking_credentials(
    server: Any, make_hook: Callable[..., HttpRollback], make_deployment: Callable[..., Deployment]
) -> None:
    """A wrong path will not fix itself; the message names the status, the start of the body and
    the URL, but not the password or token the URL carries."""
    server.reply.status = 404
    server.reply.body = "no such job: rollback-checkout"
    server.reply.content_type = "text/plain"
    url = server.url("/jobs/rollback?token=hunter2&env=prod").replace(
        "http://", "http://ops:pa55word@"
    )
    hook = make_hook(url=url)

    with pytest.raises(PermanentError) as caught:
        await hook.rollback(request_for(make_deployment()))

    message = str(caught.value)
    assert "404" in message
    assert "no such job: rollback-checkout" in message
    assert "/jobs/rollback?token=***&env=***" in message
    assert "Check `url`" in message
    for secret in ("hunter2", "pa55word", "ops:"):
        assert secret not in message


async def test_403_is_permanent_and_points_at_credentials(
    server: Any, make_hook: Callable[..., HttpRollback], make_deployment: Callable[..., Deployment]
) -> None:
    """A refused token needs a person, not a retry; the message says what to check."""
    server.reply.status = 403
    server.reply.body = json.dumps({"error": "forbidden", "detail": "token expired"})
    hook = make_hook(url=server.url())

    with pytest.raises(PermanentError) as caught:
        await hook.rollback(request_for(make_deployment()))

    assert "403" in str(caught.value)
    assert "token expired" in str(caught.value)
    assert "credentials" in str(caught.value)


async def test_the_quoted_body_is_cut_to_200_characters(
    server: Any, make_hook: Callable[..., HttpRollback], make_deployment: Callable[..., Deployment]
) -> None:
    """An HTML error page must not flood the log line and the Slack message that quote it."""
    server.reply.status = 400
    server.reply.body = "<html>" + "y" * 5000 + "</html>"
    server.reply.content_type = "text/html"
    hook = make_hook(url=server.url())

    with pytest.raises(PermanentError) as caught:
        await hook.rollback(request_for(make_deployment()))

    assert "<html>" + "y" * 190 in str(caught.value)
    assert "y" * 200 not in str(caught.value)


async def test_a_redirect_is_not_followed(
    server: Any, make_hook: Callable[..., HttpRollback], make_deployment: Callable[..., Deployment]
) -> None:
    """A redirected POST can turn into a GET or carry the signed body elsewhere; the operator is
    told to configure the final address instead."""
    server.reply.status = 302
    server.reply.headers = {"Location": server.url("/elsewhere?key=zzz")}
    hook = make_hook(url=server.url())

    with pytest.raises(PermanentError) as caught:
        await hook.rollback(request_for(make_deployment()))

    assert [r.path for r in server.requests] == ["/hook"]
    assert "redirects to" in str(caught.value)
    assert "zzz" not in str(caught.value)


async def test_a_2xx_outside_success_status_is_not_a_rollback(
    server: Any, make_hook: Callable[..., HttpRollback], make_deployment: Callable[..., Deployment]
) -> None:
    """With success_status narrowed, a 202 ("queued") does not count as rolled back."""
    server.reply.status = 202
    hook = make_hook(url=server.url(), success_status=[200])

    with pytest.raises(PermanentError) as caught:
        await hook.rollback(request_for(make_deployment()))

    assert "202" in str(caught.value)
    assert "success_status" in str(caught.value)


async def test_success_status_may_allow_a_non_2xx(
    server: Any, make_hook: Callable[..., HttpRollback], make_deployment: Callable[..., Deployment]
) -> None:
    """A hook that answers 409 for "already rolled back" can be declared successful."""
    server.reply.status = 409
    hook = make_hook(url=server.url(), success_status=[200, 409])

    result = await hook.rollback(request_for(make_deployment()))

    assert result.data["status"] == 409


# --- no answer --------------------------------------------------------------------------------


async def test_a_timeout_is_temporary(
    server: Any, make_hook: Callable[..., HttpRollback], make_deployment: Callable[..., Deployment]
) -> None:
    """A hook that does not answer in time may still be working; the core retries with the same
    key."""
    server.reply.hang = True
    hook = make_hook(url=server.url(), timeout="100ms")

    with pytest.raises(TemporaryError) as caught:
        await hook.rollback(request_for(make_deployment()))

    assert "0.1 s" in str(caught.value)


async def test_connection_refused_is_temporary(
    closed_port: int,
    make_hook: Callable[..., HttpRollback],
    make_deployment: Callable[..., Deployment],
) -> None:
    """A hook that is down (restarting) may come back; the message names the address."""
    hook = make_hook(url=f"http://127.0.0.1:{closed_port}/rollback?token=hunter2")

    with pytest.raises(TemporaryError) as caught:
        await hook.rollback(request_for(make_deployment()))

    assert f"127.0.0.1:{closed_port}" in str(caught.value)
    assert "hunter2" not in str(caught.value)


# --- settings and lifecycle -------------------------------------------------------------------


def test_settings_refuse_unknown_keys_and_non_http_urls() -> None:
    """A misspelt key or a URL that is not http(s) fails `watchdog validate`, not a rollback."""
    with pytest.raises(ValidationError):
        HttpRollback.Settings.model_validate({"url": "https://ci.example/rb", "secrt": "x"})
    with pytest.raises(ValidationError):
        HttpRollback.Settings.model_validate({"url": "ftp://ci.example/rb"})
    with pytest.raises(ValidationError):
        HttpRollback.Settings.model_validate({"url": "https://ci.example", "success_status": [42]})


def test_settings_refuse_headers_the_adapter_owns() -> None:
    """An Idempotency-Key or signature set by hand would break de-duplication or signing."""
    with pytest.raises(ValidationError, match="idempotency-key"):
        HttpRollback.Settings.model_validate(
            {"url": "https://ci.example/rb", "headers": {"idempotency-key": "x"}}
        )


def test_settings_accept_an_unset_secret_reference_and_parse_durations() -> None:
    """`watchdog validate` runs where secrets are unset and leaves ``${NAME}`` in place; that must
    not be reported as a bad URL. Durations are the config's strings."""
    settings = HttpRollback.Settings.model_validate(
        {"url": "${ROLLBACK_HOOK_URL}", "timeout": "2m", "secret": "hidden-value"}
    )
    assert settings.timeout == 120.0
    assert HttpRollback.Settings.model_validate({"url": "https://x.example"}).timeout == 10.0
    assert "hidden-value" not in repr(settings)


def test_building_needs_no_event_loop(context: AdapterContext) -> None:
    """Adapters are built while the config loads, before any loop runs: no session yet."""
    hook = HttpRollback.from_settings(
        "hook", HttpRollback.Settings(url="https://ci.example/rb"), context
    )
    assert isinstance(hook, RollbackTarget)


async def test_aclose_closes_and_a_later_call_reopens(
    server: Any, make_hook: Callable[..., HttpRollback], make_deployment: Callable[..., Deployment]
) -> None:
    """aclose() is safe before first use and twice; after it, the adapter still works."""
    hook = make_hook(url=server.url())
    await hook.aclose()
    await hook.rollback(request_for(make_deployment()))
    await hook.aclose()
    await hook.aclose()
    await hook.rollback(request_for(make_deployment()))
    assert len(server.requests) == 2


def test_registered_as_the_http_rollback_entry_point() -> None:
    """`type: http` under `rollback` finds this class through the entry point."""
    (ep,) = [
        e for e in entry_points(group="rollback_watchdog.providers") if e.name == "rollback.http"
    ]
    assert ep.load() is HttpRollback
