"""AWS CodeDeploy: ``POST /v1/events/codedeploy`` from an EventBridge rule whose target is an API
destination, posting the event unchanged (no input transformer).

- Authenticity, either of:
  - ``Authorization: Bearer <secret>``: an EventBridge connection with API key authorization, key
    name ``Authorization``, value ``Bearer <secret>``;
  - the generic source's ``X-Watchdog-Timestamp`` / ``X-Watchdog-Signature`` HMAC (DESIGN §4), for a
    relay (a Lambda, a queue consumer) that can sign; requests more than 300 s off are refused.
  Either is checked in constant time against every secret in ``server.webhook_secrets.codedeploy``.
  When signature headers are present they decide, so a bad signature is never rescued by a token.
- Starts a watch on ``detail-type: CodeDeploy Deployment State-change Notification`` whose
  ``detail.state`` is ``SUCCESS`` (``sources.codedeploy.start_on``: ``START`` bakes from the start of
  the rollout instead, which suits canary and linear deployment configs). Other states and other
  detail types (instance state changes) get 204. One state, not both: a deployment's START and
  SUCCESS are separate events with separate ids and would otherwise start two watches.
- Maps (DESIGN §4): service = ``detail.application``; environment = ``detail.deploymentGroup``;
  version = ``detail.deploymentId``; event id = the EventBridge ``id`` (kept across EventBridge's
  retries). Target: application, deployment group, deployment id, region and account, what a
  CodeDeploy rollback needs.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from providers.sources._common import (
    SourceBase,
    assemble,
    check_bearer,
    decode_json_object,
    needs_credentials,
    require_json,
    text,
    validate,
    verify_signed,
)
from watchdog.errors import EventRejected
from watchdog.model import DeployEvent
from watchdog.ports import IncomingEvent
from watchdog.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER

DEPLOYMENT_STATE_CHANGE = "CodeDeploy Deployment State-change Notification"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)


class _Detail(_Strict):
    application: str = Field(min_length=1)
    deployment_group: str = Field(alias="deploymentGroup", min_length=1)
    deployment_id: str = Field(alias="deploymentId", min_length=1)
    state: str = Field(min_length=1)
    region: str | None = None


class EventBridgeEvent(_Strict):
    """The EventBridge envelope; ``detail`` is read only for deployment state changes."""

    id: str = Field(min_length=1)
    detail_type: str = Field(alias="detail-type")
    source: str
    account: str | None = None
    region: str | None = None


class DeploymentStateChange(EventBridgeEvent):
    detail: _Detail


class CodeDeploySource(SourceBase):
    """``POST /v1/events/codedeploy``."""

    tool = "CodeDeploy deployment state"
    default_start_on = "SUCCESS"
    states: ClassVar = ("START", "SUCCESS", "FAILURE", "STOP", "READY")

    def parse(self, incoming: IncomingEvent) -> DeployEvent | None:
        if needs_credentials(incoming, self.name):
            self._authenticate(incoming)
        require_json(incoming)
        data = decode_json_object(incoming.body)
        envelope = validate(EventBridgeEvent, data)
        if envelope.source != "aws.codedeploy":
            raise EventRejected(
                422, "invalid_event", f"source: {envelope.source!r} is not aws.codedeploy (check the rule)"
            )
        if envelope.detail_type != DEPLOYMENT_STATE_CHANGE:
            return self.ignore(
                f"{envelope.detail_type} events start nothing", detail_type=envelope.detail_type
            )
        event = validate(DeploymentStateChange, data)
        detail = event.detail
        if not self.starts(detail.state):
            return self.ignore(
                f"deployment state {detail.state} is not {self.start_on}",
                state=detail.state,
                deployment=detail.deployment_id,
            )
        return assemble(
            self.name,
            self.settings,
            data,
            service=text(data, "detail.application"),
            environment=text(data, "detail.deploymentGroup"),
            version=text(data, "detail.deploymentId"),
            event_id=text(data, "id"),
            target={
                "application": detail.application,
                "deployment_group": detail.deployment_group,
                "deployment_id": detail.deployment_id,
                "region": detail.region or event.region,
                "account": event.account,
            },
        )

    @staticmethod
    def _authenticate(incoming: IncomingEvent) -> None:
        if SIGNATURE_HEADER in incoming.headers or TIMESTAMP_HEADER in incoming.headers:
            verify_signed(incoming)
            return
        check_bearer(
            incoming, f"an EventBridge connection with API key auth, or sign with {SIGNATURE_HEADER}"
        )
