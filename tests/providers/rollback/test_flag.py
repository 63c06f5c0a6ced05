"""The feature-flag rollback (the emergency brake) against local servers speaking Unleash's admin API
and LaunchDarkly's REST API as documented (:mod:`tests.providers.rollback.flag_servers`)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from importlib.metadata import entry_points
from typing import Any

import pytest
from pydantic import ValidationError

from providers.rollback.flag import FlagRollback
from tests.providers.conftest import NOW
from tests.providers.rollback.flag_servers import SEMANTIC_PATCH, Canned, FakeLaunchDarkly, FakeUnleash
from watchdog.errors import PermanentError, TemporaryError
from watchdog.model import DeployEvent, Deployment
from watchdog.plugins import GROUP
from watchdog.ports import RollbackRequest, RollbackTarget

UNLEASH_TOKEN = "*:production.4a7b0c8e9d1f2a3b5c6d7e8f9a0b1c2d"
LD_TOKEN = "api-0f3d5c2b-6e4a-4f1b-9c8d-7a6b5c4d3e2f"


@pytest.fixture
async def unleash() -> AsyncIterator[FakeUnleash]:
    server = FakeUnleash(UNLEASH_TOKEN)
    server.features = {"default": {"checkout-new-flow": {"prod": True, "staging": True}}}
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def launchdarkly() -> AsyncIterator[FakeLaunchDarkly]:
    server = FakeLaunchDarkly(LD_TOKEN)
    server.flags = {"default": {"checkout-new-flow": {"production": True, "prod": True, "test": True}}}
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def make_flag(make_adapter: Callable[..., Any]) -> Callable[..., FlagRollback]:
    def make(**settings: Any) -> FlagRollback:
        adapter: FlagRollback = make_adapter(
            FlagRollback, "brake", **{"flag": "{service}-new-flow", **settings}
        )
        return adapter

    return make


@pytest.fixture
def request_for(make_deployment: Callable[..., Deployment]) -> Callable[..., RollbackRequest]:
    def make(**event: Any) -> RollbackRequest:
        fields: dict[str, Any] = {
            "source": "generic",
            "event_id": "evt-1",
            "service": "checkout",
            "version": "v2",
            "environment": "prod",
            "baseline_version": "v1",
            **event,
        }
        deployment = make_deployment(event=DeployEvent(**fields))
        return RollbackRequest(deployment, "dep-42:rollback", "errors regressed: 10.2 % vs 0.5 %", "watchdog")

    return make


def test_registered_as_rollback_type_flag() -> None:
    """`type: flag` under `rollback:` names this adapter in the entry-point group."""
    (entry,) = entry_points(group=GROUP, name="rollback.flag")
    assert entry.load() is FlagRollback


# --- Unleash ----------------------------------------------------------------------------------


async def test_unleash_flag_is_turned_off_in_the_events_environment(
    unleash: FakeUnleash, make_flag: Callable[..., FlagRollback], request_for: Callable[..., RollbackRequest]
) -> None:
    """POST .../features/{flag}/environments/{environment}/off with the bare token: the flag is off
    in prod, untouched in staging, and the result says what was turned off."""
    adapter = make_flag(provider="unleash", url=unleash.url, api_token=UNLEASH_TOKEN)
    result = await adapter.rollback(request_for())
    (sent,) = unleash.requests
    assert sent.method == "POST"
    assert sent.raw_path == "/api/admin/projects/default/features/checkout-new-flow/environments/prod/off"
    assert sent.headers["Authorization"] == UNLEASH_TOKEN
    assert unleash.features["default"]["checkout-new-flow"] == {"prod": False, "staging": True}
    assert (
        result.detail
        == "turned off Unleash flag 'checkout-new-flow' in environment 'prod' (project 'default')"
    )
    assert result.data == {
        "provider": "unleash",
        "project": "default",
        "flag": "checkout-new-flow",
        "environment": "prod",
        "status": 200,
    }


async def test_unleash_templates_name_project_flag_and_environment(
    unleash: FakeUnleash, make_flag: Callable[..., FlagRollback], request_for: Callable[..., RollbackRequest]
) -> None:
    """`flag`, `project` and `environment` are templates over the event (labels included), and the
    URL keeps the instance's path prefix."""
    unleash.features = {"payments": {"checkout-kill": {"production": True}}}
    adapter = make_flag(
        provider="unleash",
        url=unleash.url + "/",
        api_token=UNLEASH_TOKEN,
        flag="{service}-kill",
        project="{team}",
        environment="production",
    )
    await adapter.rollback(request_for(labels={"team": "payments"}))
    assert unleash.features["payments"]["checkout-kill"]["production"] is False


async def test_unleash_older_server_answering_200_without_a_body_is_success(
    unleash: FakeUnleash, make_flag: Callable[..., FlagRollback], request_for: Callable[..., RollbackRequest]
) -> None:
    """Older Unleash answers the toggle with an empty 200: success, nothing to verify."""
    unleash.legacy = True
    result = await make_flag(provider="unleash", url=unleash.url, api_token=UNLEASH_TOKEN).rollback(
        request_for()
    )
    assert result.data["status"] == 200
    assert unleash.features["default"]["checkout-new-flow"]["prod"] is False


async def test_turning_off_twice_is_harmless(
    unleash: FakeUnleash, make_flag: Callable[..., FlagRollback], request_for: Callable[..., RollbackRequest]
) -> None:
    """The core's retry after a crash repeats the call: the flag stays off and both calls succeed."""
    adapter = make_flag(provider="unleash", url=unleash.url, api_token=UNLEASH_TOKEN)
    await adapter.rollback(request_for())
    await adapter.rollback(request_for())
    assert len(unleash.requests) == 2
    assert unleash.features["default"]["checkout-new-flow"]["prod"] is False


async def test_a_flag_key_is_one_path_segment(
    unleash: FakeUnleash, make_flag: Callable[..., FlagRollback], request_for: Callable[..., RollbackRequest]
) -> None:
    """A service name with `/` or `..` cannot steer the request to another route: it is encoded
    within its segment, and the unknown flag is a 404."""
    adapter = make_flag(provider="unleash", url=unleash.url, api_token=UNLEASH_TOKEN, flag="{service}")
    with pytest.raises(PermanentError, match="404"):
        await adapter.rollback(request_for(service="../../x/off?"))
    (sent,) = unleash.requests
    assert sent.raw_path == "/api/admin/projects/default/features/..%2F..%2Fx%2Foff%3F/environments/prod/off"


# --- LaunchDarkly -------------------------------------------------------------------------------


async def test_launchdarkly_flag_is_turned_off_with_a_semantic_patch(
    launchdarkly: FakeLaunchDarkly,
    make_flag: Callable[..., FlagRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """PATCH /api/v2/flags/{project}/{flag}, semantic-patch content type, `turnFlagOff` in the
    environment, a comment for LaunchDarkly's audit log; the answer shows the flag off."""
    adapter = make_flag(
        provider="launchdarkly", url=launchdarkly.url, api_token=LD_TOKEN, environment="production"
    )
    result = await adapter.rollback(request_for())
    (sent,) = launchdarkly.requests
    assert sent.method == "PATCH"
    assert sent.raw_path == "/api/v2/flags/default/checkout-new-flow"
    assert sent.headers["Authorization"] == LD_TOKEN
    assert sent.headers["Content-Type"] == SEMANTIC_PATCH
    body = sent.json()
    assert body["environmentKey"] == "production"
    assert body["instructions"] == [{"kind": "turnFlagOff"}]
    assert "errors regressed" in body["comment"] and "dep-42:rollback" in body["comment"]
    assert launchdarkly.flags["default"]["checkout-new-flow"] == {
        "production": False,
        "prod": True,
        "test": True,
    }
    assert "LaunchDarkly flag 'checkout-new-flow' in environment 'production'" in result.detail


async def test_launchdarkly_url_defaults_to_the_public_api(make_flag: Callable[..., FlagRollback]) -> None:
    """Without `url` the adapter talks to app.launchdarkly.com; Unleash has no public default."""
    adapter = make_flag(provider="launchdarkly", api_token=LD_TOKEN)
    assert adapter._settings.base_url == "https://app.launchdarkly.com"
    with pytest.raises(ValidationError, match="`url` is required with provider: unleash"):
        FlagRollback.Settings.model_validate({"provider": "unleash", "api_token": "t", "flag": "f"})


async def test_launchdarkly_200_with_the_flag_still_on_is_a_failure(
    launchdarkly: FakeLaunchDarkly,
    make_flag: Callable[..., FlagRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """An approval workflow holds the change: 200, but the answer shows the flag on. That is
    rollback_failed with what to do, not a rollback that did not happen."""
    launchdarkly.approval_required.add("prod")
    adapter = make_flag(provider="launchdarkly", url=launchdarkly.url, api_token=LD_TOKEN)
    with pytest.raises(PermanentError, match="is still on: an approval or change-request workflow"):
        await adapter.rollback(request_for())


# --- refusals and failures ---------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["unleash", "launchdarkly"])
async def test_a_wrong_token_is_permanent_and_never_shown(
    provider: str,
    unleash: FakeUnleash,
    launchdarkly: FakeLaunchDarkly,
    make_flag: Callable[..., FlagRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """401: not retried, the message says to check `api_token`, and the token is not in it."""
    server = unleash if provider == "unleash" else launchdarkly
    adapter = make_flag(provider=provider, url=server.url, api_token="wrong-token-123")
    with pytest.raises(PermanentError, match=r"answered 401 Unauthorized") as caught:
        await adapter.rollback(request_for())
    assert "check `api_token`" in str(caught.value)
    assert "wrong-token-123" not in str(caught.value)


@pytest.mark.parametrize("provider", ["unleash", "launchdarkly"])
async def test_a_token_without_the_permission_is_permanent(
    provider: str,
    unleash: FakeUnleash,
    launchdarkly: FakeLaunchDarkly,
    make_flag: Callable[..., FlagRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """403: the service's own reason and which permission to give the token."""
    server = unleash if provider == "unleash" else launchdarkly
    server.read_only_tokens.add("read-only")
    adapter = make_flag(provider=provider, url=server.url, api_token="read-only")
    with pytest.raises(PermanentError, match="403 Forbidden") as caught:
        await adapter.rollback(request_for())
    message = str(caught.value)
    assert "give it a role that may update this flag in this environment" in message
    expected = "NoAccessError: You don't have" if provider == "unleash" else "forbidden: Access to"
    assert expected in message


@pytest.mark.parametrize("provider", ["unleash", "launchdarkly"])
async def test_an_unknown_flag_is_permanent_naming_what_was_rendered(
    provider: str,
    unleash: FakeUnleash,
    launchdarkly: FakeLaunchDarkly,
    make_flag: Callable[..., FlagRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """404: the message names the rendered flag, environment and project to check."""
    server = unleash if provider == "unleash" else launchdarkly
    token = UNLEASH_TOKEN if provider == "unleash" else LD_TOKEN
    adapter = make_flag(provider=provider, url=server.url, api_token=token, flag="{service}-typo")
    with pytest.raises(PermanentError, match="404 Not Found") as caught:
        await adapter.rollback(request_for())
    assert "flag 'checkout-typo' in environment 'prod' (project 'default'): check `flag`" in str(caught.value)


async def test_an_unknown_launchdarkly_environment_is_permanent(
    launchdarkly: FakeLaunchDarkly,
    make_flag: Callable[..., FlagRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """LaunchDarkly refuses a semantic patch for an unknown environment key (400): permanent, with
    its message."""
    adapter = make_flag(provider="launchdarkly", url=launchdarkly.url, api_token=LD_TOKEN)
    with pytest.raises(PermanentError, match="invalid_request: Environment 'staging' not found"):
        await adapter.rollback(request_for(environment="staging"))


@pytest.mark.parametrize(
    ("canned", "delay"),
    [
        (Canned(429, '{"code":"rate_limited","message":"Slow down"}', {"Retry-After": "7"}), 7.0),
        (
            Canned(
                429,
                '{"code":"rate_limited","message":"Slow down"}',
                {"X-Ratelimit-Reset": str(int((NOW + 3) * 1000))},
            ),
            3.0,
        ),
        (Canned(503, "<html>upstream unavailable</html>"), None),
        (Canned(409, '{"code":"conflict","message":"A concurrent update happened"}'), None),
    ],
)
async def test_rate_limits_server_errors_and_conflicts_are_temporary(
    canned: Canned,
    delay: float | None,
    launchdarkly: FakeLaunchDarkly,
    make_flag: Callable[..., FlagRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """429 (with Retry-After or LaunchDarkly's X-Ratelimit-Reset in epoch ms), 5xx and LaunchDarkly's
    409 ("retry your request"): TemporaryError carrying the wait the service asked for."""
    launchdarkly.replies.append(canned)
    adapter = make_flag(provider="launchdarkly", url=launchdarkly.url, api_token=LD_TOKEN)
    with pytest.raises(TemporaryError, match=str(canned.status)) as caught:
        await adapter.rollback(request_for())
    assert caught.value.delay == delay


async def test_no_answer_within_timeout_is_temporary(
    unleash: FakeUnleash, make_flag: Callable[..., FlagRollback], request_for: Callable[..., RollbackRequest]
) -> None:
    """A hanging API: TemporaryError after `timeout`, noting that a retry is harmless."""
    unleash.replies.append(Canned(hang=True))
    adapter = make_flag(provider="unleash", url=unleash.url, api_token=UNLEASH_TOKEN, timeout="0.3s")
    with pytest.raises(
        TemporaryError, match=re.escape("got no answer within 0.3 s (the flag may be off already")
    ):
        await adapter.rollback(request_for())


async def test_a_refused_connection_is_temporary(
    closed_port: int, make_flag: Callable[..., FlagRollback], request_for: Callable[..., RollbackRequest]
) -> None:
    """Nothing listening: TemporaryError naming the address."""
    adapter = make_flag(provider="unleash", url=f"http://127.0.0.1:{closed_port}", api_token=UNLEASH_TOKEN)
    with pytest.raises(TemporaryError, match=f"cannot connect to http://127.0.0.1:{closed_port}"):
        await adapter.rollback(request_for())


async def test_an_event_without_environment_needs_the_environment_setting(
    unleash: FakeUnleash, make_flag: Callable[..., FlagRollback], request_for: Callable[..., RollbackRequest]
) -> None:
    """No environment in the event and none configured: permanent, asking for `environment`; no call."""
    adapter = make_flag(provider="unleash", url=unleash.url, api_token=UNLEASH_TOKEN)
    with pytest.raises(PermanentError, match="set `environment`"):
        await adapter.rollback(request_for(environment=""))
    assert unleash.requests == []


def test_settings_refuse_unknown_keys_providers_and_urls() -> None:
    """A misspelt key, an unsupported service or a non-http URL is a config error naming it."""
    base = {"provider": "launchdarkly", "api_token": "t", "flag": "f"}
    with pytest.raises(ValidationError, match="enviroment"):
        FlagRollback.Settings.model_validate({**base, "enviroment": "prod"})
    with pytest.raises(ValidationError, match="provider"):
        FlagRollback.Settings.model_validate({**base, "provider": "flagsmith"})
    with pytest.raises(ValidationError, match="not an http"):
        FlagRollback.Settings.model_validate({**base, "url": "app.launchdarkly.com"})


def test_is_a_rollback_target(make_flag: Callable[..., FlagRollback]) -> None:
    """The adapter satisfies the core's RollbackTarget port."""
    assert isinstance(make_flag(provider="launchdarkly", api_token=LD_TOKEN), RollbackTarget)
