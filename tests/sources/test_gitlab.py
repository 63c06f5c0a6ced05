"""The gitlab source against GitLab's published Deployment Hook payload."""

from __future__ import annotations

import json

import pytest

from tests.sources.conftest import Build
from tests.support.sources import ROTATION, SECRET, fixture_bytes, gitlab_headers, gitlab_hook, incoming
from watchdog.errors import EventRejected


def rejected(source: object, body: bytes, headers: dict[str, str], **kw: object) -> EventRejected:
    with pytest.raises(EventRejected) as info:
        source.parse(incoming(body, headers, **kw))  # type: ignore[attr-defined, arg-type]
    return info.value


def test_a_successful_deployment_maps_by_the_contract(build: Build) -> None:
    """The published success payload with the right X-Gitlab-Token: service = project.name,
    environment = environment, version = short_sha, event id = deployment_id:status."""
    body = fixture_bytes("deployment_hook.success.json")
    event = build("gitlab").parse(incoming(body, gitlab_headers(SECRET), secrets=(SECRET,)))
    assert event is not None
    assert (event.source, event.service, event.environment, event.version, event.event_id) == (
        "gitlab",
        "test-deployment-webhooks",
        "staging",
        "279484c0",
        "15:success",
    )
    assert event.target == {
        "project_id": 30,
        "project": "root/test-deployment-webhooks",
        "environment": "staging",
    }


@pytest.mark.parametrize("status", ["running", "failed", "canceled"])
def test_other_statuses_start_nothing(build: Build, status: str) -> None:
    """running, failed and canceled are valid and start nothing (204)."""
    assert (
        build("gitlab").parse(incoming(gitlab_hook(status), gitlab_headers(SECRET), secrets=(SECRET,)))
        is None
    )


def test_start_on_running_bakes_from_the_start_with_its_own_event_id(build: Build) -> None:
    """`start_on: running`: the running event starts the watch, keyed deployment_id:running."""
    event = build("gitlab", start_on="running").parse(
        incoming(gitlab_hook("running"), gitlab_headers(SECRET), secrets=(SECRET,))
    )
    assert event is not None and event.event_id == "15:running"


def test_other_hook_types_start_nothing(build: Build) -> None:
    """A Push Hook sent to this endpoint is valid GitLab traffic that starts nothing."""
    body = json.dumps({"object_kind": "push"}).encode()
    assert (
        build("gitlab").parse(incoming(body, gitlab_headers(SECRET, "Push Hook"), secrets=(SECRET,))) is None
    )


def test_token_must_match_one_of_the_secrets(build: Build) -> None:
    """Missing or wrong X-Gitlab-Token: 401; each secret of a rotation is accepted."""
    body = gitlab_hook()
    source = build("gitlab")
    error = rejected(source, body, gitlab_headers(None), secrets=(SECRET,))
    assert (error.status, error.code) == (401, "missing_token")
    error = rejected(source, body, gitlab_headers("wrong"), secrets=(SECRET,))
    assert (error.status, error.code) == (401, "bad_token")
    assert rejected(source, body, gitlab_headers(SECRET[:-1]), secrets=(SECRET,)).status == 401
    for token in ROTATION:
        assert source.parse(incoming(body, gitlab_headers(token), secrets=ROTATION)) is not None
    assert rejected(source, body, gitlab_headers(None)).code == "unsigned_source"


def test_missing_event_header_and_wrong_kind_are_refused(build: Build) -> None:
    """No X-Gitlab-Event: 400. A Deployment Hook whose object_kind is not deployment: 422."""
    headers = gitlab_headers(SECRET)
    del headers["X-Gitlab-Event"]
    assert rejected(build("gitlab"), gitlab_hook(), headers, secrets=(SECRET,)).status == 400
    error = rejected(
        build("gitlab"), gitlab_hook(object_kind="build"), gitlab_headers(SECRET), secrets=(SECRET,)
    )
    assert error.status == 422 and "object_kind" in error.detail


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("deployment_id", "15"),
        ("short_sha", 279484),
        ("environment", None),
        ("project", "name"),
        ("status", 1),
    ],
)
def test_wrong_field_types_are_422_naming_the_field(build: Build, field: str, value: object) -> None:
    """Every field the mapping reads is type-checked; the 422 names it."""
    error = rejected(
        build("gitlab"), gitlab_hook(**{field: value}), gitlab_headers(SECRET), secrets=(SECRET,)
    )
    assert (error.status, error.code) == (422, "invalid_event")
    assert field in error.detail


def test_overrides_reach_into_the_payload(build: Build) -> None:
    """`service: project.path_with_namespace` and `environment: environment_tier` replace the defaults."""
    event = build("gitlab", service="project.path_with_namespace", environment="environment_tier").parse(
        incoming(gitlab_hook(), gitlab_headers(SECRET), secrets=(SECRET,))
    )
    assert event is not None
    assert (event.service, event.environment) == ("root/test-deployment-webhooks", "staging")
