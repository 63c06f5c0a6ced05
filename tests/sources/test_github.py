"""The github source against GitHub's published deliveries and signature test vector."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from providers.sources.github import GitHubSource
from tests.sources.conftest import Build
from tests.support.sources import (
    OLD_SECRET,
    ROTATION,
    SECRET,
    fixture_bytes,
    fixture_json,
    github_headers,
    github_signature,
    github_status,
    incoming,
)
from watchdog.errors import EventRejected

SHA = "f95f852bd8fca8fcc58a9a2d6c842781e32a215e"


def rejected(source: GitHubSource, body: bytes, headers: dict[str, str], **kw: object) -> EventRejected:
    with pytest.raises(EventRejected) as info:
        source.parse(incoming(body, headers, **kw))  # type: ignore[arg-type]
    return info.value


def test_githubs_published_signature_test_vector_verifies(build: Build) -> None:
    """HMAC-SHA256("It's a Secret to Everybody", "Hello, World!") is the value GitHub's docs publish,
    and the source's check accepts exactly that header for that body (it then finds no event header,
    a 400, which proves the signature itself passed)."""
    vector = dict(
        line.split(": ", 1)
        for line in fixture_bytes("signature-test-vector.txt").decode().splitlines()
        if line
    )
    body = vector["payload"].encode()
    assert github_signature(vector["secret"], body) == vector["X-Hub-Signature-256"]
    source = build("github")
    headers = {"X-Hub-Signature-256": vector["X-Hub-Signature-256"]}
    error = rejected(source, body, headers, secrets=(vector["secret"],))
    assert (error.status, error.code) == (400, "missing_header")
    error = rejected(source, body + b" ", headers, secrets=(vector["secret"],))
    assert (error.status, error.code) == (401, "bad_signature")


@pytest.mark.parametrize(
    "name", ["deployment_status.created.json", "deployment_status.created.with-installation.json"]
)
def test_a_successful_deployment_status_maps_by_the_contract(build: Build, name: str) -> None:
    """A signed success status (repository and App deliveries alike) becomes a deploy of the
    repository name to deployment.environment at deployment.sha, keyed by X-GitHub-Delivery."""
    body = fixture_bytes(name)
    event = build("github").parse(incoming(body, github_headers(body, SECRET), secrets=(SECRET,)))
    assert event is not None
    assert (event.source, event.service, event.environment, event.version) == (
        "github",
        "Hello-World",
        "production",
        SHA,
    )
    assert event.event_id == "delivery-1"
    assert event.baseline_version is None


def test_deployment_payload_service_baseline_strategy_and_target_are_read(build: Build) -> None:
    """deployment.payload.service wins over the repository name; the payload's baseline_version,
    strategy and target object come along."""
    body = github_status(
        service="checkout", baseline_version="abc123", strategy="canary", target={"namespace": "shop"}
    )
    event = build("github").parse(incoming(body, github_headers(body, SECRET), secrets=(SECRET,)))
    assert event is not None
    assert (event.service, event.baseline_version, event.strategy) == ("checkout", "abc123", "canary")
    assert event.target == {"namespace": "shop"}


def test_a_deployment_payload_sent_as_a_json_string_is_reachable_by_override_paths(build: Build) -> None:
    """The API accepts a deployment payload as a string; its JSON is decoded so that
    `service: deployment.payload.app` reaches into it."""
    data = fixture_json("deployment_status.created.json")
    data["deployment"]["payload"] = json.dumps({"app": "cart"})
    body = json.dumps(data).encode()
    event = build("github", service="deployment.payload.app").parse(
        incoming(body, github_headers(body, SECRET), secrets=(SECRET,))
    )
    assert event is not None and event.service == "cart"


def test_configured_overrides_replace_the_defaults(build: Build) -> None:
    """`sources.github.*` dotted paths replace each default, labels included."""
    body = github_status(app="cart", env="eu-prod", tag="2.1.0", team="payments")
    source = build(
        "github",
        service="deployment.payload.app",
        environment="deployment.payload.env",
        version="deployment.payload.tag",
        event_id="deployment_status.id",
        labels={"team": "deployment.payload.team"},
    )
    event = source.parse(incoming(body, github_headers(body, SECRET), secrets=(SECRET,)))
    assert event is not None
    assert (event.service, event.environment, event.version, event.event_id) == (
        "cart",
        "eu-prod",
        "2.1.0",
        "209916254",
    )
    assert event.labels == {"team": "payments"}


def test_a_configured_path_missing_from_the_payload_is_a_422_naming_it(build: Build) -> None:
    """An override that points nowhere is refused, never silently replaced by the default."""
    body = github_status()
    error = rejected(
        build("github", service="deployment.payload.app"),
        body,
        github_headers(body, SECRET),
        secrets=(SECRET,),
    )
    assert error.status == 422
    assert "sources.github.service: deployment.payload.app" in error.detail


@pytest.mark.parametrize("state", ["failure", "error", "pending", "in_progress", "queued", "inactive"])
def test_statuses_other_than_success_start_nothing(build: Build, state: str) -> None:
    """A failed, pending or in-progress status is valid but starts nothing (204)."""
    body = github_status(state)
    assert build("github").parse(incoming(body, github_headers(body, SECRET), secrets=(SECRET,))) is None


def test_start_on_picks_another_state(build: Build) -> None:
    """`start_on: in_progress` bakes from the start of the rollout; success then starts nothing, so one
    deploy never starts two watches."""
    source = build("github", start_on="in_progress")
    body = fixture_bytes("deployment_status.created.gh-pages.json")
    event = source.parse(incoming(body, github_headers(body, SECRET), secrets=(SECRET,)))
    assert event is not None and event.environment == "github-pages"
    body = github_status("success")
    assert source.parse(incoming(body, github_headers(body, SECRET), secrets=(SECRET,))) is None


@pytest.mark.parametrize("kind", ["ping", "deployment", "push"])
def test_ping_and_other_events_start_nothing(build: Build, kind: str) -> None:
    """ping (sent when the webhook is created), deployment (created, not yet deployed) and anything
    else: 204."""
    body = fixture_bytes("deployment.created.json") if kind == "deployment" else b'{"zen": "Keep it simple."}'
    headers = github_headers(body, SECRET, event=kind)
    assert build("github").parse(incoming(body, headers, secrets=(SECRET,))) is None


def test_tampered_body_wrong_secret_and_missing_signature_are_401(build: Build) -> None:
    """One changed byte, another secret, no signature, the legacy SHA-1 header alone: each a 401
    with a code and a detail naming the problem."""
    source = build("github")
    body = github_status()
    headers = github_headers(body, SECRET)
    tampered = body.replace(SHA.encode(), b"0" * 40)
    assert rejected(source, tampered, headers, secrets=(SECRET,)).code == "bad_signature"
    assert rejected(source, body, github_headers(body, "wrong"), secrets=(SECRET,)).code == "bad_signature"
    unsigned = github_headers(body, None)
    error = rejected(source, body, unsigned, secrets=(SECRET,))
    assert (error.status, error.code) == (401, "missing_signature")
    assert "X-Hub-Signature-256" in error.detail
    legacy = {**unsigned, "X-Hub-Signature": "sha1=7d38cdd689735b008b3c702edd92eea23791c5f6"}
    assert "SHA-1" in rejected(source, body, legacy, secrets=(SECRET,)).detail


def test_every_secret_of_a_rotation_is_accepted(build: Build) -> None:
    """During a rotation both the old and the new secret verify; a third does not."""
    source = build("github")
    body = github_status()
    for secret in (OLD_SECRET, SECRET):
        assert source.parse(incoming(body, github_headers(body, secret), secrets=ROTATION)) is not None
    assert rejected(source, body, github_headers(body, "third"), secrets=ROTATION).status == 401


def test_unsigned_deliveries_need_allow_unsigned(build: Build) -> None:
    """Without a configured secret a delivery is refused unless the source is in allow_unsigned."""
    source = build("github")
    body = github_status()
    error = rejected(source, body, github_headers(body, None))
    assert (error.status, error.code) == (401, "unsigned_source")
    assert "server.webhook_secrets.github" in error.detail
    assert source.parse(incoming(body, github_headers(body, None), allow_unsigned=True)) is not None


def test_form_encoded_deliveries_are_decoded_and_verified_over_the_raw_form(build: Build) -> None:
    """GitHub's application/x-www-form-urlencoded option: the JSON is in `payload`, the signature
    covers the form bytes."""
    form = urlencode({"payload": github_status().decode()}).encode()
    headers = github_headers(form, SECRET)
    event = build("github").parse(
        incoming(form, headers, secrets=(SECRET,), content_type="application/x-www-form-urlencoded")
    )
    assert event is not None and event.version == SHA
    error = rejected(
        build("github"),
        urlencode({"other": "x"}).encode(),
        github_headers(urlencode({"other": "x"}).encode(), SECRET),
        secrets=(SECRET,),
        content_type="application/x-www-form-urlencoded",
    )
    assert (error.status, error.code) == (400, "invalid_form")


@pytest.mark.parametrize("ctype", ["text/plain", "application/xml", None])
def test_other_content_types_are_415(build: Build, ctype: str | None) -> None:
    """Neither JSON nor a form: 415 naming what was sent."""
    body = github_status()
    error = rejected(
        build("github"), body, github_headers(body, SECRET), secrets=(SECRET,), content_type=ctype
    )
    assert (error.status, error.code) == (415, "unsupported_media_type")
    assert (ctype or "missing") in error.detail


def test_missing_event_or_delivery_header_is_refused(build: Build) -> None:
    """No X-GitHub-Event: 400 (not a GitHub webhook). No X-GitHub-Delivery: 422, since the
    idempotency key is missing."""
    body = github_status()
    headers = github_headers(body, SECRET)
    del headers["X-GitHub-Event"]
    assert rejected(build("github"), body, headers, secrets=(SECRET,)).status == 400
    headers = github_headers(body, SECRET)
    del headers["X-GitHub-Delivery"]
    error = rejected(build("github"), body, headers, secrets=(SECRET,))
    assert error.status == 422 and "X-GitHub-Delivery" in error.detail


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (("deployment", "sha"), 12345678, None),
        (("deployment", "sha"), {"a": 1}, "deployment.sha"),
        (("deployment", "environment"), ["prod"], "deployment.environment"),
        (("deployment_status", "state"), True, "deployment_status.state"),
        (("repository", "name"), None, "repository.name"),
        (("deployment",), "not an object", "deployment"),
    ],
)
def test_wrong_field_types_are_422_naming_the_field(
    build: Build, path: tuple[str, ...], value: object, named: str | None
) -> None:
    """A field of the wrong type is refused with 422 naming it (an integer sha too: GitHub sends
    strings, so a number means the body is not GitHub's)."""
    data = fixture_json("deployment_status.created.json")
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    body = json.dumps(data).encode()
    error = rejected(build("github"), body, github_headers(body, SECRET), secrets=(SECRET,))
    assert (error.status, error.code) == (422, "invalid_event")
    assert (named or ".".join(path)) in error.detail
