"""Spinnaker: ``POST /v1/events/spinnaker``, in either of two forms.

1. **A webhook stage** (a plain Webhook stage, or a preconfigured one in ``orca-local.yml``) placed
   after the deploy stage, posting this body (SpEL fills it in; keys other than these are refused so
   that a misspelt one is an error, not a silently missing field)::

       {"application": "${execution.application}",        required; the service unless `service` is set
        "execution_id": "${execution.id}",                 required
        "version": "${trigger.parameters.version}",        required
        "environment": "${trigger.parameters.environment}",
        "service": "...", "baseline_version": "...", "pipeline": "${execution.name}",
        "strategy": "canary", "target": {...}, "labels": {"team": "..."}}

   Event id: ``<execution_id>:<service>:<environment>``: one pipeline run deploys a service to an
   environment once, while one run that deploys to staging and then to prod (two webhook stages)
   starts two watches. A value still holding ``${...}`` is refused (422): SpEL leaves an expression
   it could not evaluate in place, and a version called ``${...}`` would be watched in earnest.

2. **Echo's event envelope**, as echo's REST listener forwards every event (``rest.endpoints`` in
   ``echo-local.yml``; ``wrap: true`` and ``flatten: true`` are both understood, with echo's default
   ``eventName``/``payload`` names): ``{"details": {"type", "application", ...}, "content": {...}}``.
   A watch starts on ``details.type`` ``orca:pipeline:complete`` (a pipeline that succeeded), or
   ``orca:stage:complete`` with ``sources.spinnaker.start_on: orca:stage:complete``. Every other event
   gets 204, and so does a completion that carries no version: echo forwards all events, most of
   them not deploys. Defaults: service = ``details.application``; version and environment =
   ``content.execution.trigger.parameters.version`` / ``.environment`` (pipeline parameters; point
   ``sources.spinnaker.version`` elsewhere, e.g. ``content.execution.trigger.buildInfo.number``);
   baseline = ``...parameters.baseline_version``; event id = ``content.executionId`` for a pipeline,
   ``<executionId>:<stageId>`` for a stage. Override paths are relative to the unwrapped envelope.
   A full execution can be large: echo events above 1 MiB are refused (413); use the webhook stage.

Authenticity (both forms): ``Authorization: Bearer <secret>`` (the webhook stage's
``customHeaders``, or the echo endpoint's ``headers``), compared in constant time with every secret
in ``server.webhook_secrets.spinnaker``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from providers.sources._common import (
    MAX_VALUE,
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
from watchdog.errors import EventRejected
from watchdog.model import DeployEvent
from watchdog.ports import IncomingEvent

PIPELINE_COMPLETE = "orca:pipeline:complete"
STAGE_COMPLETE = "orca:stage:complete"
_PARAMETERS = "content.execution.trigger.parameters"

_Name = Field(min_length=1, max_length=MAX_VALUE)


class WebhookStageBody(BaseModel):
    """What the webhook stage posts (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    application: str = _Name
    execution_id: str = _Name
    version: str = _Name
    environment: str = Field(default="", max_length=MAX_VALUE)
    service: str | None = Field(default=None, min_length=1, max_length=MAX_VALUE)
    baseline_version: str | None = Field(default=None, max_length=MAX_VALUE)
    pipeline: str | None = None
    strategy: str | None = Field(default=None, max_length=50)
    target: dict[str, Any] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)


class _Details(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    type: str = Field(min_length=1)
    application: str | None = None


class SpinnakerSource(SourceBase):
    """``POST /v1/events/spinnaker``."""

    tool = "Spinnaker echo event type"
    default_start_on = PIPELINE_COMPLETE
    states: ClassVar = (PIPELINE_COMPLETE, STAGE_COMPLETE)

    def parse(self, incoming: IncomingEvent) -> DeployEvent | None:
        if needs_credentials(incoming, self.name):
            check_bearer(
                incoming, "set it in the webhook stage's customHeaders or the echo endpoint's headers"
            )
        require_json(incoming)
        data = decode_json_object(incoming.body)
        if "eventName" in data and "payload" in data and "details" not in data:
            data = _object(data["payload"], "payload")
        if "details" in data or "content" in data:
            return self._echo(data)
        return self._webhook_stage(data)

    def _webhook_stage(self, data: dict[str, Any]) -> DeployEvent:
        body = validate(WebhookStageBody, data)
        unevaluated = _spel_left(data)
        if unevaluated:
            raise EventRejected(
                422,
                "invalid_event",
                f"{unevaluated[0]}: holds an unevaluated SpEL expression ({unevaluated[1][:80]}); "
                "check the expression in the webhook stage",
            )
        service = body.service or body.application
        event = assemble(
            self.name,
            self.settings,
            data,
            service=given(service, "service or application"),
            environment=given(body.environment, "environment"),
            version=given(body.version, "version"),
            baseline_version=given(body.baseline_version, "baseline_version"),
            event_id=given(f"{body.execution_id}:{service}:{body.environment}", "execution_id"),
            strategy=body.strategy,
            target=body.target or {"application": body.application, "pipeline": body.pipeline},
        )
        return dataclasses.replace(event, labels={**body.labels, **event.labels})

    def _echo(self, data: dict[str, Any]) -> DeployEvent | None:
        envelope = {
            "details": _object(data.get("details"), "details"),
            "content": _object(data.get("content"), "content"),
        }
        details = validate(_Details, envelope["details"])
        if not self.starts(details.type):
            return self.ignore(f"{details.type} events start nothing", type=details.type)
        path = self.settings.version or f"{_PARAMETERS}.version"
        if text(envelope, path).value is None:
            return self.ignore(
                f"{details.type} carries no version at {path}: not a deploy", type=details.type
            )
        execution = text(envelope, "content.executionId")
        if execution.value is None:
            execution = text(envelope, "content.execution.id", "content.executionId or content.execution.id")
        event_id = execution
        if details.type == STAGE_COMPLETE and execution.value is not None:
            stage = text(envelope, "content.stageId").value or text(envelope, "content.name").value
            event_id = given(f"{execution.value}:{stage}" if stage else None, "content.stageId")
        service = text(envelope, "details.application")
        if service.value is None:
            service = text(envelope, "content.execution.application", "details.application")
        return assemble(
            self.name,
            self.settings,
            envelope,
            service=service,
            environment=text(envelope, f"{_PARAMETERS}.environment"),
            version=text(envelope, f"{_PARAMETERS}.version"),
            baseline_version=text(envelope, f"{_PARAMETERS}.baseline_version"),
            event_id=event_id,
            target={
                "application": service.value,
                "pipeline": text(envelope, "content.execution.name").value,
                "execution_id": execution.value,
            },
        )


def _object(value: Any, where: str) -> dict[str, Any]:
    """An envelope part: an object, or (echo's ``flatten: true``) an object serialised as a string."""
    if isinstance(value, str):
        return decode_json_object(value.encode())
    if isinstance(value, dict):
        return value
    raise EventRejected(422, "invalid_event", f"{where}: must be an object")


def _spel_left(data: dict[str, Any]) -> tuple[str, str] | None:
    """The first string value (top level, target and labels) that still holds ``${``."""
    for key, value in data.items():
        if isinstance(value, str) and "${" in value:
            return key, value
        if isinstance(value, dict):
            for inner, item in value.items():
                if isinstance(item, str) and "${" in item:
                    return f"{key}.{inner}", item
    return None
