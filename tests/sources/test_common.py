"""The helpers every source shares: dotted paths, value types, overrides, secrets, and the
registration of the source adapters."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from providers.sources._common import (
    MISSING,
    Found,
    assemble,
    bearer_token,
    dig,
    given,
    matches_any,
    text,
)
from tests.sources.conftest import Build
from tests.support.sources import NOW, SECRET, generic_headers, incoming
from watchdog.config.models import SourceConfig
from watchdog.errors import EventRejected
from watchdog.plugins import PLANNED, PluginRegistry

PAYLOAD = {"a": {"b": [{"c": "x"}, {"c": 7}], "n": None, "t": True, "f": 1.5, "o": {}}}


def test_dig_walks_objects_by_key_and_arrays_by_index() -> None:
    """`a.b.1.c` reaches into arrays; absent keys, out-of-range indexes and JSON null are MISSING."""
    assert dig(PAYLOAD, "a.b.0.c") == "x"
    assert dig(PAYLOAD, "a.b.1.c") == 7
    for path in ("a.b.2.c", "a.x", "a.n", "a.b.c", "a.b.-1.c"):
        assert dig(PAYLOAD, path) is MISSING


def test_text_accepts_strings_and_whole_numbers_and_refuses_the_rest() -> None:
    """A whole number becomes its decimal string (GitLab's deployment_id); booleans, fractions,
    objects and arrays are a 422 naming the path and the type found."""
    assert text(PAYLOAD, "a.b.1.c") == Found("7", "a.b.1.c")
    assert text(PAYLOAD, "a.missing").value is None
    for path, kind in (
        ("a.t", "a boolean"),
        ("a.f", "a fractional number"),
        ("a.o", "an object"),
        ("a.b", "an array"),
    ):
        with pytest.raises(EventRejected) as info:
            text(PAYLOAD, path)
        assert info.value.status == 422 and path in info.value.detail and kind in info.value.detail


def test_assemble_reports_every_problem_at_once() -> None:
    """Missing required fields, a bad override and an over-long value are all named in one 422."""
    with pytest.raises(EventRejected) as info:
        assemble(
            "github",
            SourceConfig(environment="a.nowhere"),
            PAYLOAD,
            service=given(None, "repository.name"),
            version=given("v" * 201, "deployment.sha"),
            event_id=given(None, "the X-GitHub-Delivery header"),
        )
    detail = info.value.detail
    assert "service: missing (looked for repository.name)" in detail
    assert "event_id: missing (looked for the X-GitHub-Delivery header)" in detail
    assert "version: longer than 200 characters" in detail
    assert "sources.github.environment: a.nowhere is not in the payload" in detail


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"service": "a..b"}, "not a dotted path"),
        ({"version": "has space"}, "not a dotted path"),
        ({"labels": {"my-team": "a.b"}}, "must be a word"),
        ({"labels": {"team": ""}}, "not a dotted path"),
        ({"start_on": ""}, "start_on is empty"),
        ({"start_on": ["START", "SUCCESS"]}, "valid string"),
        ({"servce": "a"}, "Extra inputs"),
    ],
)
def test_source_config_refuses_malformed_settings(settings: dict[str, object], error: str) -> None:
    """Malformed paths, label names, an empty or list-valued start_on and unknown keys are config
    errors (reported with file and line by the loader), not surprises at the first webhook."""
    with pytest.raises(ValidationError) as info:
        SourceConfig.model_validate(settings)
    assert error in str(info.value)


def test_secrets_compare_against_every_candidate() -> None:
    """Any secret of a rotation matches; prefixes, extensions and other secrets do not; non-ASCII
    secrets work (compared as bytes)."""
    secrets = ("old-secret", "new-secret", "ünïcode-sécret")
    for secret in secrets:
        assert matches_any(secret, secrets)
    for wrong in ("new-secre", "new-secret ", "", "other"):
        assert not matches_any(wrong, secrets)
    assert not matches_any("anything", ())


def test_bearer_token_parsing() -> None:
    """The scheme is case-insensitive; an empty token or another scheme is no token."""
    assert bearer_token(incoming(b"{}", {"Authorization": "bearer abc"})) == "abc"
    assert bearer_token(incoming(b"{}", {"Authorization": "Bearer   abc  "})) == "abc"
    for header in ("Bearer", "Bearer ", "Basic abc", "abc"):
        assert bearer_token(incoming(b"{}", {"Authorization": header})) is None
    assert bearer_token(incoming(b"{}")) is None


def test_every_source_is_registered_and_none_is_still_planned() -> None:
    """The seven sources load through entry points; none is listed as "not available yet"."""
    registry = PluginRegistry.from_entry_points()
    assert set(registry.types("source")) >= {
        "generic",
        "github",
        "gitlab",
        "flagger",
        "argocd",
        "codedeploy",
        "spinnaker",
    }
    assert not PLANNED["source"] & set(registry.types("source"))


def test_the_generic_source_applies_overrides_and_labels_too(build: Build) -> None:
    """Overrides are uniform: `sources.generic.environment: labels.env` and configured labels work on
    the generic body as on any other."""
    body = json.dumps(
        {"id": "d1", "service": "checkout", "version": "v2", "labels": {"env": "prod", "team": "pay"}}
    ).encode()
    source = build("generic", environment="labels.env", labels={"owner": "labels.team"})
    event = source.parse(incoming(body, generic_headers(SECRET, body, NOW), secrets=(SECRET,)))
    assert event is not None
    assert event.environment == "prod"
    assert event.labels == {"env": "prod", "team": "pay", "owner": "pay"}
