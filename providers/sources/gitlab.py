"""GitLab deployments: ``POST /v1/events/gitlab`` from a project or group webhook with "Deployment
events" ticked.

- Authenticity: GitLab sends the webhook's secret token as-is in ``X-Gitlab-Token`` (it is not an
  HMAC), compared in constant time with every secret in ``server.webhook_secrets.gitlab``.
- Starts a watch on ``X-Gitlab-Event: Deployment Hook`` whose ``status`` is ``success``
  (``sources.gitlab.start_on``; ``running`` bakes from the start of the job instead). Other hook
  types and other statuses (running, failed, canceled) get 204.
- Maps (DESIGN §4): service = ``project.name``; environment = ``environment``; version =
  ``short_sha``; event id = ``<deployment_id>:<status>``, so the running and success events of one
  deployment are told apart while a redelivery of either is a duplicate. The target names the
  GitLab environment (``project_id``, ``project``, ``environment``) for a rollback adapter.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from providers.sources._common import (
    SourceBase,
    assemble,
    decode_json_object,
    given,
    matches_any,
    needs_credentials,
    require_json,
    text,
    validate,
)
from watchdog.errors import EventRejected
from watchdog.model import DeployEvent
from watchdog.ports import IncomingEvent

TOKEN_HEADER = "X-Gitlab-Token"
EVENT_HEADER = "X-Gitlab-Event"
DEPLOYMENT_HOOK = "Deployment Hook"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class _Project(_Strict):
    id: int | None = None
    name: str = Field(min_length=1)
    path_with_namespace: str | None = None


class DeploymentHook(_Strict):
    """The fields of a Deployment Hook the mapping relies on; the rest is ignored."""

    object_kind: str
    status: str = Field(min_length=1)
    deployment_id: int
    environment: str
    short_sha: str = Field(min_length=1)
    project: _Project


class GitLabSource(SourceBase):
    """``POST /v1/events/gitlab``."""

    tool = "GitLab deployment status"
    default_start_on = "success"
    states: ClassVar = ("created", "running", "success", "failed", "canceled", "skipped", "blocked")

    def parse(self, incoming: IncomingEvent) -> DeployEvent | None:
        if needs_credentials(incoming, self.name):
            token = incoming.headers.get(TOKEN_HEADER)
            if not token:
                raise EventRejected(
                    401, "missing_token", f"missing {TOKEN_HEADER} header: set a secret token on the webhook"
                )
            if not matches_any(token, incoming.secrets):
                raise EventRejected(401, "bad_token", f"{TOKEN_HEADER} is not one of this source's secrets")
        kind = incoming.headers.get(EVENT_HEADER, "").strip()
        if not kind:
            raise EventRejected(400, "missing_header", f"missing {EVENT_HEADER} header: not a GitLab webhook")
        require_json(incoming)
        data = decode_json_object(incoming.body)
        if kind != DEPLOYMENT_HOOK:
            return self.ignore(f"{kind} events start nothing", gitlab_event=kind)
        hook = validate(DeploymentHook, data)
        if hook.object_kind != "deployment":
            raise EventRejected(
                422,
                "invalid_event",
                f"object_kind: {hook.object_kind!r} in a {DEPLOYMENT_HOOK} (expected deployment)",
            )
        if not self.starts(hook.status):
            return self.ignore(f"deployment status {hook.status} is not {self.start_on}", state=hook.status)
        project = hook.project
        return assemble(
            self.name,
            self.settings,
            data,
            service=text(data, "project.name"),
            environment=text(data, "environment"),
            version=text(data, "short_sha"),
            event_id=given(f"{hook.deployment_id}:{hook.status}", "deployment_id and status"),
            target={
                "project_id": project.id,
                "project": project.path_with_namespace or project.name,
                "environment": hook.environment,
            },
        )
