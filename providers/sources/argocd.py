"""Argo CD: ``POST /v1/events/argocd`` from Argo CD Notifications, with the service, trigger and
template shipped in ``config/argocd-notifications.yaml``.

Argo CD has no deploy webhook of its own: notifications post whatever body a template renders. The
body this source reads is therefore ours, and this is its contract (every value rendered with
``toJson``, so an absent field arrives as null)::

    {"app": "checkout",              .app.metadata.name
     "app_namespace": "argocd",      .app.metadata.namespace
     "project": "default",           .app.spec.project
     "namespace": "shop",            .app.spec.destination.namespace
     "cluster": "https://...",       .app.spec.destination.server
     "phase": "Succeeded",           .app.status.operationState.phase
     "health": "Healthy",            .app.status.health.status
     "revision": "f3937462...",      .app.status.operationState.syncResult.revision
     "revisions": null,              .app.status.operationState.syncResult.revisions (multi-source apps)
     "finished_at": "2024-...Z",     .app.status.operationState.finishedAt
     "images": ["shop/checkout:2.1"],.app.status.summary.images
     "history": [{"revision": ...}]} .app.status.history (oldest first)

- Authenticity: ``Authorization: Bearer <secret>`` (the notifications service sets the header from
  ``argocd-notifications-secret``), compared in constant time with every secret in
  ``server.webhook_secrets.argocd``.
- Starts a watch when ``phase`` is ``Succeeded`` (``sources.argocd.start_on``); the shipped trigger
  sends only then, once per revision and after the app turned healthy. Any other phase gets 204, so
  binding the template to ``on-sync-failed`` as well is harmless.
- Maps (DESIGN §4): service = app name; environment = destination namespace; version = sync
  revision (for a multi-source app, its revisions joined with commas); event id =
  ``[<app namespace>/]<app>:<version>``, the app namespace keeping apps of the same name in
  different namespaces apart. Baseline: the revision of the history entry before the one being
  deployed, when the history ends with it. Target: app, app namespace, project, namespace, cluster.
  Override paths reach every key, e.g. ``version: images.0``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from providers.sources._common import (
    SourceBase,
    assemble,
    check_bearer,
    decode_json_object,
    given,
    needs_credentials,
    require_json,
    text,
    validate,
)
from watchdog.model import DeployEvent
from watchdog.ports import IncomingEvent


class DeployedBody(BaseModel):
    """The body of the shipped template; extra keys are allowed so that a site can add its own
    fields to the template and point override paths at them."""

    model_config = ConfigDict(extra="allow", strict=True)
    app: str = Field(min_length=1)
    app_namespace: str | None = None
    project: str | None = None
    namespace: str | None = None
    cluster: str | None = None
    phase: str = Field(min_length=1)
    health: str | None = None
    revision: str | None = None
    revisions: list[str] | None = None
    images: list[str] | None = None
    history: list[dict[str, Any]] | None = None


class ArgoCDSource(SourceBase):
    """``POST /v1/events/argocd``."""

    tool = "Argo CD operation phase"
    default_start_on = "Succeeded"
    states: ClassVar = ("Running", "Terminating", "Failed", "Error", "Succeeded")

    def parse(self, incoming: IncomingEvent) -> DeployEvent | None:
        if needs_credentials(incoming, self.name):
            check_bearer(
                incoming, "set the header in the notifications service, see config/argocd-notifications.yaml"
            )
        require_json(incoming)
        data = decode_json_object(incoming.body)
        body = validate(DeployedBody, data)
        if not self.starts(body.phase):
            return self.ignore(
                f"sync phase {body.phase} is not {self.start_on}", app=body.app, phase=body.phase
            )
        version = _revision(body.revision, body.revisions)
        app_key = f"{body.app_namespace}/{body.app}" if body.app_namespace else body.app
        return assemble(
            self.name,
            self.settings,
            data,
            service=text(data, "app"),
            environment=text(data, "namespace"),
            version=given(version, "revision (or revisions)"),
            baseline_version=given(_previous(body.history, version), "history"),
            event_id=given(f"{app_key}:{version}" if version else None, "app and revision"),
            target={
                "app": body.app,
                "app_namespace": body.app_namespace,
                "project": body.project,
                "namespace": body.namespace,
                "cluster": body.cluster,
            },
        )


def _revision(revision: str | None, revisions: list[str] | None) -> str | None:
    if revision:
        return revision
    if revisions:
        return ",".join(revisions)
    return None


def _previous(history: list[dict[str, Any]] | None, version: str | None) -> str | None:
    """The revision deployed before ``version``: Argo CD appends a history entry when a sync
    finishes, so when the last entry is this deploy, the one before it is what ran until now. When
    the last entry is something else the history says nothing reliable, and the supervisor falls
    back to the last version that passed."""
    if not history or len(history) < 2 or not version:
        return None
    revisions = [_revision(_str(entry.get("revision")), _strs(entry.get("revisions"))) for entry in history]
    if revisions[-1] != version:
        return None
    return revisions[-2]


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _strs(value: Any) -> list[str] | None:
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None
