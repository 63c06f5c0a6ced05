"""The argocd source, and the notifications ConfigMap shipped for it: the body its template
renders is exactly what the source reads."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.sources.conftest import Build
from tests.support.sources import SECRET, argocd_body, bearer, fixture_bytes, incoming
from watchdog.errors import EventRejected

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "config" / "argocd-notifications.yaml"
REVISION = "f3937462080c6946ff5ec4b5fa393e7c22388e4c"

# An Application as the notifications controller sees it after a successful sync (the fields the
# template reads, with the values Argo CD writes there).
APPLICATION: dict[str, Any] = {
    "metadata": {"name": "checkout", "namespace": "argocd", "labels": {"team": "payments"}},
    "spec": {
        "project": "shop",
        "destination": {"server": "https://kubernetes.default.svc", "namespace": "shop-prod"},
        "source": {"repoURL": "https://git.example/shop/deploy.git", "path": "checkout"},
    },
    "status": {
        "health": {"status": "Healthy", "lastTransitionTime": "2024-05-01T10:00:30Z"},
        "operationState": {
            "phase": "Succeeded",
            "startedAt": "2024-05-01T10:00:00Z",
            "finishedAt": "2024-05-01T10:00:20Z",
            "syncResult": {"revision": REVISION, "resources": []},
        },
        "summary": {"images": ["registry.example/shop/checkout:2.1.0"]},
        "history": [
            {
                "id": 4,
                "revision": "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567",
                "deployedAt": "2024-04-29T09:00:00Z",
            },
            {"id": 5, "revision": REVISION, "deployedAt": "2024-05-01T10:00:20Z"},
        ],
    },
}


def rejected(
    source: object, body: object, headers: dict[str, str] | None = None, **kw: object
) -> EventRejected:
    with pytest.raises(EventRejected) as info:
        source.parse(incoming(body, headers, **kw))  # type: ignore[attr-defined, arg-type]
    return info.value


def shipped_configmap() -> dict[str, Any]:
    docs = list(yaml.safe_load_all(SHIPPED.read_text()))
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    return dict(cm["data"])


def render(template: str, app: dict[str, Any]) -> str:
    """Argo CD's Go template, for the only construct the shipped body may use: ``{{toJson .app.x}}``
    (sprig's toJson of an absent field is null). Anything else fails the test, so the body cannot
    drift into syntax this stand-in does not check."""

    def value(match: re.Match[str]) -> str:
        node: Any = {"app": app}
        for key in match.group(1).split("."):
            node = node.get(key) if isinstance(node, dict) else None
        return json.dumps(node)

    out = re.sub(r"\{\{\s*toJson\s+\.([A-Za-z0-9_.]+)\s*\}\}", value, template)
    assert "{{" not in out, f"unsupported template syntax left: {out}"
    return out


def test_the_shipped_template_renders_a_body_the_source_maps_by_the_contract(build: Build) -> None:
    """The template in config/argocd-notifications.yaml, rendered for a synced healthy app, is valid
    JSON that the argocd source turns into service = app name, environment = destination namespace,
    version = sync revision, with the previous history entry as baseline."""
    template = yaml.safe_load(shipped_configmap()["template.watchdog-deployed"])
    body = render(template["webhook"]["watchdog"]["body"], APPLICATION)
    event = build("argocd").parse(incoming(body.encode(), bearer(SECRET), secrets=(SECRET,)))
    assert event is not None
    assert (event.service, event.environment, event.version) == ("checkout", "shop-prod", REVISION)
    assert event.event_id == f"argocd/checkout:{REVISION}"
    assert event.baseline_version == "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"
    assert event.target["project"] == "shop"


def test_the_shipped_service_trigger_and_subscription_fit_together() -> None:
    """The service posts JSON with a bearer token from the notifications secret to the argocd
    source; the trigger sends the template once per revision; the annotation in the header comment
    names that trigger and service."""
    data = shipped_configmap()
    service = yaml.safe_load(data["service.webhook.watchdog"])
    assert service["url"].endswith("/v1/events/argocd")
    headers = {h["name"]: h["value"] for h in service["headers"]}
    assert headers == {"Content-Type": "application/json", "Authorization": "Bearer $watchdog-token"}
    (trigger,) = yaml.safe_load(data["trigger.on-deployed-watchdog"])
    assert trigger["send"] == ["watchdog-deployed"]
    assert "syncResult?.revision" in trigger["oncePer"]
    text = SHIPPED.read_text()
    assert "notifications.argoproj.io/subscribe.on-deployed-watchdog.watchdog" in text
    secret = next(d for d in yaml.safe_load_all(text) if d["kind"] == "Secret")
    assert "watchdog-token" in secret["stringData"]


def test_a_multi_source_app_is_versioned_by_all_its_revisions(build: Build) -> None:
    """Multi-source apps have no single revision: the revisions, joined, are the version and key."""
    body = argocd_body(revision="", revisions=["aaa111", "bbb222"], history=None)
    event = build("argocd").parse(incoming(body, bearer(SECRET), secrets=(SECRET,)))
    assert event is not None
    assert (event.version, event.event_id) == ("aaa111,bbb222", "argocd/checkout:aaa111,bbb222")
    assert event.baseline_version is None


def test_a_history_that_does_not_end_with_this_revision_gives_no_baseline(build: Build) -> None:
    """The baseline is taken from the history only when its last entry is this deploy."""
    body = argocd_body(history=[{"revision": "x"}, {"revision": "y"}])
    event = build("argocd").parse(incoming(body, bearer(SECRET), secrets=(SECRET,)))
    assert event is not None and event.baseline_version is None


@pytest.mark.parametrize("phase", ["Running", "Failed", "Error"])
def test_other_phases_start_nothing(build: Build, phase: str) -> None:
    """A template bound to on-sync-failed as well is harmless: phases other than Succeeded are 204."""
    assert (
        build("argocd").parse(incoming(argocd_body(phase=phase), bearer(SECRET), secrets=(SECRET,))) is None
    )


def test_bearer_token_is_required_and_checked(build: Build) -> None:
    """No Authorization, another scheme, a wrong token: 401."""
    source = build("argocd")
    body = argocd_body()
    assert rejected(source, body, secrets=(SECRET,)).code == "missing_token"
    assert (
        rejected(source, body, {"Authorization": f"Basic {SECRET}"}, secrets=(SECRET,)).code
        == "missing_token"
    )
    assert rejected(source, body, bearer("nope"), secrets=(SECRET,)).code == "bad_token"


def test_the_documented_syncresult_body_is_not_ours_and_is_refused(build: Build) -> None:
    """Argo CD's docs example posts `toJson syncResult`: it has no app name, so 422 naming `app`
    (pointing Argo CD at the watchdog with the wrong template fails loudly)."""
    sync_result = {"resources": [], "revision": REVISION}
    error = rejected(build("argocd"), sync_result, bearer(SECRET), secrets=(SECRET,))
    assert error.status == 422 and "app" in error.detail
    assert b"toJson .app.status.operationState.syncResult" in fixture_bytes(
        "argocd.webhook.on-deployed.syncresult.cm.yaml"
    )


@pytest.mark.parametrize(
    ("changes", "named"),
    [({"app": 5}, "app"), ({"revision": None, "revisions": None}, "version"), ({"images": "x"}, "images")],
)
def test_malformed_bodies_are_422_naming_the_field(build: Build, changes: dict[str, Any], named: str) -> None:
    """Wrong types and a body without any revision are refused with the field named."""
    error = rejected(build("argocd"), argocd_body(**changes), bearer(SECRET), secrets=(SECRET,))
    assert error.status == 422 and named in error.detail


def test_overrides_reach_the_template_fields(build: Build) -> None:
    """`version: images.0` for metrics labelled by image tag."""
    event = build("argocd", version="images.0").parse(
        incoming(argocd_body(), bearer(SECRET), secrets=(SECRET,))
    )
    assert event is not None and event.version == "registry.example/shop/checkout:2.1.0"
