"""The codedeploy source against the published EventBridge CodeDeploy events."""

from __future__ import annotations

import json

import pytest

from tests.sources.conftest import Build
from tests.support.sources import (
    NOW,
    ROTATION,
    SECRET,
    bearer,
    codedeploy_event,
    fixture_bytes,
    generic_headers,
    incoming,
)
from watchdog.errors import EventRejected


def rejected(
    source: object, body: bytes, headers: dict[str, str] | None = None, **kw: object
) -> EventRejected:
    with pytest.raises(EventRejected) as info:
        source.parse(incoming(body, headers, **kw))  # type: ignore[attr-defined, arg-type]
    return info.value


def test_a_success_state_change_maps_by_the_contract(build: Build) -> None:
    """The published SUCCESS event with a bearer token: service = detail.application, environment =
    detail.deploymentGroup, version = detail.deploymentId, event id = EventBridge id."""
    body = fixture_bytes("eventbridge.deployment-state-change.json")
    event = build("codedeploy").parse(incoming(body, bearer(SECRET), secrets=(SECRET,)))
    assert event is not None
    assert (event.service, event.environment, event.version, event.event_id) == (
        "myApplication",
        "myDeploymentGroup",
        "d-123456789",
        "c071bfbf-83c4-49ca-a6ff-3df053957145",
    )
    assert event.target == {
        "application": "myApplication",
        "deployment_group": "myDeploymentGroup",
        "deployment_id": "d-123456789",
        "region": "us-east-1",
        "account": "123456789012",
    }


def test_the_generic_hmac_scheme_authenticates_too(build: Build) -> None:
    """A signing relay may use X-Watchdog-Signature instead of a bearer token; a stale or forged
    signature is refused even when a valid bearer token comes along."""
    body = fixture_bytes("eventbridge.deployment-state-change.json")
    source = build("codedeploy")
    assert source.parse(incoming(body, generic_headers(SECRET, body, NOW), secrets=(SECRET,))) is not None
    stale = generic_headers(SECRET, body, NOW - 301)
    assert rejected(source, body, stale, secrets=(SECRET,)).code == "bad_signature"
    forged = {**generic_headers("wrong", body, NOW), **bearer(SECRET)}
    assert rejected(source, body, forged, secrets=(SECRET,)).code == "bad_signature"


def test_bearer_token_is_required_and_checked(build: Build) -> None:
    """No credentials, a wrong token: 401; both secrets of a rotation work."""
    body = codedeploy_event()
    source = build("codedeploy")
    assert rejected(source, body, secrets=(SECRET,)).code == "missing_token"
    assert rejected(source, body, bearer("wrong"), secrets=(SECRET,)).code == "bad_token"
    for token in ROTATION:
        assert source.parse(incoming(body, bearer(token), secrets=ROTATION)) is not None


@pytest.mark.parametrize("state", ["START", "FAILURE", "STOP", "READY"])
def test_states_other_than_success_start_nothing(build: Build, state: str) -> None:
    """By default only SUCCESS starts a watch."""
    assert (
        build("codedeploy").parse(incoming(codedeploy_event(state), bearer(SECRET), secrets=(SECRET,)))
        is None
    )


def test_start_on_start_bakes_during_the_rollout_and_success_then_starts_nothing(build: Build) -> None:
    """`start_on: START` (the policy choice for canary deployment configs): START starts the watch,
    SUCCESS of the same deployment does not start a second one."""
    source = build("codedeploy", start_on="START")
    event = source.parse(incoming(codedeploy_event("START"), bearer(SECRET), secrets=(SECRET,)))
    assert event is not None and event.version == "d-123456789"
    assert source.parse(incoming(codedeploy_event("SUCCESS"), bearer(SECRET), secrets=(SECRET,))) is None


def test_instance_state_changes_start_nothing(build: Build) -> None:
    """The published instance state-change event is valid and a 204."""
    body = fixture_bytes("eventbridge.instance-state-change.json")
    assert build("codedeploy").parse(incoming(body, bearer(SECRET), secrets=(SECRET,))) is None


def test_events_from_other_services_are_422(build: Build) -> None:
    """A rule that forwards another service's events is misconfigured: 422 naming the source."""
    data = json.loads(codedeploy_event())
    data["source"] = "aws.ecs"
    error = rejected(build("codedeploy"), json.dumps(data).encode(), bearer(SECRET), secrets=(SECRET,))
    assert error.status == 422 and "aws.ecs" in error.detail


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("application", None, "detail.application"),
        ("deploymentId", 123456789, "detail.deploymentId"),
        ("state", ["SUCCESS"], "detail.state"),
    ],
)
def test_wrong_detail_fields_are_422_naming_the_field(
    build: Build, field: str, value: object, named: str
) -> None:
    """The 422 names the detail field that is missing or of the wrong type."""
    data = json.loads(codedeploy_event())
    data["detail"][field] = value
    error = rejected(build("codedeploy"), json.dumps(data).encode(), bearer(SECRET), secrets=(SECRET,))
    assert error.status == 422
    assert named.split(".")[1] in error.detail and "detail" in error.detail


def test_a_misspelt_start_on_is_a_config_error_naming_the_states(build: Build) -> None:
    """`start_on: SUCESS` would never start anything: refused when the source is built."""
    from watchdog.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        build("codedeploy", start_on="SUCESS")
    assert "sources.codedeploy.start_on" in str(info.value) and "SUCCESS" in str(info.value)
