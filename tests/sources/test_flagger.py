"""The flagger source against Flagger's published webhook payload (metadata.token included)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from tests.sources.conftest import Build
from tests.support.sources import ROTATION, bearer, fixture_bytes, fixture_json, flagger_event, incoming
from watchdog.errors import EventRejected

TOKEN = "16688eb5e9f289f1991c"  # the token in the published payload
ROOT = Path(__file__).resolve().parents[2]


def rejected(
    source: object, body: bytes, headers: dict[str, str] | None = None, **kw: object
) -> EventRejected:
    with pytest.raises(EventRejected) as info:
        source.parse(incoming(body, headers, **kw))  # type: ignore[attr-defined, arg-type]
    return info.value


def test_the_published_payload_with_its_token_maps_by_the_contract(build: Build) -> None:
    """metadata.token equal to the secret authenticates; service = name, environment = namespace,
    version = checksum, event id = name/namespace/checksum/phase; the token is not kept."""
    event = build("flagger").parse(incoming(fixture_bytes("webhook-payload.rollout.json"), secrets=(TOKEN,)))
    assert event is not None
    assert (event.service, event.environment, event.version, event.strategy) == (
        "podinfo",
        "test",
        "85d557f47b",
        "canary",
    )
    assert event.event_id == "podinfo/test/85d557f47b/Progressing"
    assert event.target == {"kind": "Canary", "name": "podinfo", "namespace": "test"}
    assert TOKEN not in repr(event)


def test_every_progressing_event_of_one_revision_has_the_same_id(build: Build) -> None:
    """Flagger sends an event per analysis step; they differ in message and timestamp but share
    the event id, so only the first starts a watch. A new checksum is a new deploy."""
    source = build("flagger")
    first = source.parse(incoming(flagger_event(token=TOKEN), secrets=(TOKEN,)))
    again = source.parse(
        incoming(
            flagger_event(token=TOKEN, eventMessage="Advance podinfo.test canary weight 20"), secrets=(TOKEN,)
        )
    )
    newer = source.parse(incoming(flagger_event(token=TOKEN, checksum="6b8f9c4d7a"), secrets=(TOKEN,)))
    assert first is not None and again is not None and newer is not None
    assert first.event_id == again.event_id != newer.event_id


@pytest.mark.parametrize(
    "phase", ["Initialized", "Waiting", "Promoting", "Finalising", "Succeeded", "Failed"]
)
def test_other_phases_start_nothing(build: Build, phase: str) -> None:
    """Only Progressing starts a watch; every other phase is a 204."""
    assert build("flagger").parse(incoming(flagger_event(phase, token=TOKEN), secrets=(TOKEN,))) is None


def test_metadata_token_and_bearer_header_authenticate(build: Build) -> None:
    """Missing or wrong metadata.token: 401. A bearer header, when present, decides alone (a wrong
    one is not rescued by a right metadata token). Both secrets of a rotation are accepted."""
    source = build("flagger")
    error = rejected(source, flagger_event(token=None), secrets=(TOKEN,))
    assert (error.status, error.code) == (401, "missing_token")
    assert "metadata.token" in error.detail
    assert rejected(source, flagger_event(token="wrong"), secrets=(TOKEN,)).code == "bad_token"
    assert source.parse(incoming(flagger_event(token=None), bearer(TOKEN), secrets=(TOKEN,))) is not None
    assert rejected(source, flagger_event(token=TOKEN), bearer("wrong"), secrets=(TOKEN,)).status == 401
    for token in ROTATION:
        assert source.parse(incoming(flagger_event(token=token), secrets=ROTATION)) is not None
    assert rejected(source, flagger_event(token=TOKEN)).code == "unsigned_source"


def test_a_token_of_the_wrong_type_is_a_401_not_a_crash(build: Build) -> None:
    """metadata: {"token": 1} carries no usable token."""
    data = fixture_json("webhook-payload.rollout.json")
    data["metadata"]["token"] = 1
    assert rejected(build("flagger"), json.dumps(data).encode(), secrets=(TOKEN,)).status == 401


@pytest.mark.parametrize(
    ("field", "value"), [("name", 7), ("namespace", None), ("phase", ["Progressing"]), ("checksum", 85)]
)
def test_wrong_field_types_are_422_naming_the_field(build: Build, field: str, value: object) -> None:
    """Each field the mapping reads is type-checked."""
    data = fixture_json("webhook-payload.rollout.json")
    data[field] = value
    error = rejected(build("flagger"), json.dumps(data).encode(), secrets=(TOKEN,))
    assert (error.status, field in error.detail) == (422, True)


def test_a_payload_without_checksum_cannot_be_keyed(build: Build) -> None:
    """Old Flagger releases send no checksum: without it revisions are indistinguishable, so 422."""
    data = fixture_json("webhook-payload.rollout.json")
    del data["checksum"]
    error = rejected(build("flagger"), json.dumps(data).encode(), secrets=(TOKEN,))
    assert error.status == 422 and "checksum" in error.detail


def test_version_may_come_from_the_webhook_metadata(build: Build) -> None:
    """`version: metadata.version` uses a version set in the Canary's webhook metadata."""
    event = build("flagger", version="metadata.version").parse(
        incoming(flagger_event(token=TOKEN, version="2.1.0"), secrets=(TOKEN,))
    )
    assert event is not None and event.version == "2.1.0"


def test_the_shipped_canary_wires_events_and_gates_with_a_token(build: Build) -> None:
    """config/flagger/canary.yaml: an event webhook to the flagger source and confirm-promotion and
    rollback webhooks to the gates, each carrying metadata.token; the body Flagger builds from the
    event webhook (its metadata plus the event's) authenticates and starts a watch."""
    canary = yaml.safe_load((ROOT / "config" / "flagger" / "canary.yaml").read_text())
    assert canary["kind"] == "Canary" and canary["apiVersion"] == "flagger.app/v1beta1"
    hooks = {hook["type"]: hook for hook in canary["spec"]["analysis"]["webhooks"]}
    assert urlparse(hooks["event"]["url"]).path == "/v1/events/flagger"
    assert urlparse(hooks["confirm-promotion"]["url"]).path == "/v1/gates/flagger/promotion"
    assert urlparse(hooks["rollback"]["url"]).path == "/v1/gates/flagger/rollback"
    assert all("token" in hook["metadata"] for hook in hooks.values())
    metadata = {
        **hooks["event"]["metadata"],
        "eventMessage": "Starting canary analysis",
        "eventType": "Normal",
    }
    body = {"name": "checkout", "namespace": "shop", "phase": "Progressing", "checksum": "6b8f9c4d7a"}
    secret = metadata["token"]
    event = build("flagger").parse(incoming({**body, "metadata": metadata}, secrets=(secret,)))
    assert event is not None and (event.service, event.environment) == ("checkout", "shop")
