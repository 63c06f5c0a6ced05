"""The spinnaker source: the documented webhook-stage body and echo's event envelope."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.sources.conftest import Build
from tests.support.sources import (
    SECRET,
    bearer,
    echo_pipeline_complete,
    fixture_bytes,
    incoming,
    spinnaker_stage_body,
)
from watchdog.errors import EventRejected

EXECUTION = "01HX3Y8Q6W8J3ZKX0V9T5B7N2C"


def rejected(
    source: object, body: object, headers: dict[str, str] | None = None, **kw: object
) -> EventRejected:
    with pytest.raises(EventRejected) as info:
        source.parse(incoming(body, headers, **kw))  # type: ignore[attr-defined, arg-type]
    return info.value


def parse(source: Any, body: object) -> Any:
    return source.parse(incoming(body, bearer(SECRET), secrets=(SECRET,)))  # type: ignore[arg-type]


def test_the_webhook_stage_body_maps_and_is_keyed_per_service_and_environment(build: Build) -> None:
    """service = application (or service), environment, version; event id = execution id, service
    and environment, so one run deploying staging then prod starts two watches."""
    source = build("spinnaker")
    event = parse(source, spinnaker_stage_body(labels={"team": "payments"}))
    assert (event.service, event.environment, event.version) == ("checkout", "prod", "2.1.0")
    assert event.event_id == f"{EXECUTION}:checkout:prod"
    assert event.labels == {"team": "payments"}
    staging = parse(source, spinnaker_stage_body(environment="staging"))
    assert staging.event_id != event.event_id
    named = parse(source, spinnaker_stage_body(service="checkout-api", baseline_version="2.0.9"))
    assert (named.service, named.baseline_version) == ("checkout-api", "2.0.9")


def test_unevaluated_spel_and_unknown_keys_are_422(build: Build) -> None:
    """A `${...}` left by a SpEL expression that failed, or a misspelt key: 422 naming the field."""
    error = rejected(
        build("spinnaker"),
        spinnaker_stage_body(version="${trigger.parameters.vesion}"),
        bearer(SECRET),
        secrets=(SECRET,),
    )
    assert error.status == 422 and "version" in error.detail and "SpEL" in error.detail
    error = rejected(build("spinnaker"), spinnaker_stage_body(verison="2"), bearer(SECRET), secrets=(SECRET,))
    assert error.status == 422 and "verison: unknown field" in error.detail
    error = rejected(build("spinnaker"), spinnaker_stage_body(version=2), bearer(SECRET), secrets=(SECRET,))
    assert error.status == 422 and "version" in error.detail


def test_an_echo_pipeline_completion_maps_from_the_pipeline_parameters(build: Build) -> None:
    """orca:pipeline:complete: service = details.application, version and environment from the
    trigger's parameters, event id = the execution id."""
    event = parse(build("spinnaker"), echo_pipeline_complete(environment="prod"))
    assert (event.service, event.environment, event.version, event.event_id) == (
        "checkout",
        "prod",
        "2.1.0",
        EXECUTION,
    )
    assert event.target["pipeline"] == "deploy-prod"


def test_wrapped_and_flattened_echo_events_are_understood(build: Build) -> None:
    """echo's `wrap: true` ({eventName, payload}) and `flatten: true` (details and content as JSON
    strings) give the same deploy."""
    envelope = echo_pipeline_complete(environment="prod")
    flat = {"details": json.dumps(envelope["details"]), "content": json.dumps(envelope["content"])}
    for body in ({"eventName": "spinnaker_events", "payload": envelope}, flat):
        event = parse(build("spinnaker"), body)
        assert (event.service, event.version, event.event_id) == ("checkout", "2.1.0", EXECUTION)


def test_echo_events_that_are_not_deploys_start_nothing(build: Build) -> None:
    """The published echo event (an igor build), other orca events, and a completed pipeline that
    carries no version are all 204: echo forwards everything."""
    source = build("spinnaker")
    assert parse(source, json.loads(fixture_bytes("echo-event.igor-build.first-of-events-json.json"))) is None
    failed = echo_pipeline_complete()
    failed["details"]["type"] = "orca:pipeline:failed"
    assert parse(source, failed) is None
    unversioned = echo_pipeline_complete()
    del unversioned["content"]["execution"]["trigger"]["parameters"]["version"]
    assert parse(source, unversioned) is None


def test_stage_completions_start_watches_when_configured(build: Build) -> None:
    """`start_on: orca:stage:complete` with a version path in the stage context: keyed per stage."""
    source = build("spinnaker", start_on="orca:stage:complete", version="content.context.version")
    event = echo_pipeline_complete()
    event["details"]["type"] = "orca:stage:complete"
    event["content"].update(stageId="stage-7", context={"version": "2.1.1"})
    mapped = parse(source, event)
    assert (mapped.version, mapped.event_id) == ("2.1.1", f"{EXECUTION}:stage-7")
    assert parse(source, echo_pipeline_complete()) is None


def test_bearer_token_is_required(build: Build) -> None:
    """Both forms need the bearer token (customHeaders or echo's endpoint headers)."""
    assert rejected(build("spinnaker"), spinnaker_stage_body(), secrets=(SECRET,)).code == "missing_token"
    assert (
        rejected(build("spinnaker"), echo_pipeline_complete(), bearer("x"), secrets=(SECRET,)).code
        == "bad_token"
    )


def test_malformed_envelopes_are_refused(build: Build) -> None:
    """An envelope whose parts are not objects, or whose flattened part is not JSON, is a 4xx."""
    assert (
        rejected(build("spinnaker"), {"details": 5, "content": {}}, bearer(SECRET), secrets=(SECRET,)).status
        == 422
    )
    flat = {"details": "{not json", "content": "{}"}
    assert rejected(build("spinnaker"), flat, bearer(SECRET), secrets=(SECRET,)).status == 400
