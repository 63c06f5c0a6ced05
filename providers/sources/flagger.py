"""Flagger canaries: ``POST /v1/events/flagger`` from a Canary's ``type: event`` webhook
(``config/flagger/`` has the snippet).

- Authenticity: Flagger cannot set request headers, but it copies a webhook's ``metadata`` into the
  body of event webhooks, so the secret travels as ``metadata.token`` and is compared in constant
  time with every secret in ``server.webhook_secrets.flagger``. A proxy in front that can add
  headers may send ``Authorization: Bearer <secret>`` instead; when that header is present it
  decides alone. Flagger's global ``-event-webhook`` flag carries no metadata, so it can only be
  used with ``server.allow_unsigned``.
- Starts a watch on an event whose ``phase`` is ``Progressing`` (``sources.flagger.start_on``): a
  new revision under analysis. Flagger sends an event at every analysis step, all ``Progressing``
  with the same checksum, so they share one event id: the first starts the watch, the rest are
  duplicates (200). Other phases (Initialized, Succeeded, Failed, ...) get 204.
- Maps (DESIGN §4): service = ``name``; environment = ``namespace``; version = ``checksum`` (the
  canary's revision); event id = ``<name>/<namespace>/<checksum>/<phase>``; strategy ``canary``;
  target the Canary (kind, name, namespace). The token never reaches the stored event.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from providers.sources._common import (
    SourceBase,
    assemble,
    bearer_token,
    check_bearer,
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
from watchdog.ports import CanaryKey, IncomingEvent


class CanaryWebhookPayload(BaseModel):
    """Flagger's ``CanaryWebhookPayload`` (its metadata values are all strings)."""

    model_config = ConfigDict(extra="ignore", strict=True)
    name: str = Field(min_length=1)
    namespace: str = Field(min_length=1)
    phase: str = Field(min_length=1)
    checksum: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class FlaggerSource(SourceBase):
    """``POST /v1/events/flagger``."""

    tool = "Flagger canary phase"
    default_start_on = "Progressing"
    states: ClassVar = (
        "Initializing",
        "Initialized",
        "Waiting",
        "Progressing",
        "WaitingPromotion",
        "Promoting",
        "Finalising",
        "Succeeded",
        "Failed",
        "Terminating",
        "Terminated",
    )

    def identify(self, incoming: IncomingEvent) -> CanaryKey:
        """The canary a ``confirm-promotion`` or ``rollback`` gate asks about, authenticated like
        an event; whatever its phase."""
        _, payload = self._authenticated(incoming)
        if not payload.checksum:
            raise EventRejected(422, "invalid_event", "checksum: required to tell canary revisions apart")
        return CanaryKey(service=payload.name, environment=payload.namespace, version=payload.checksum)

    def _authenticated(self, incoming: IncomingEvent) -> tuple[dict[str, Any], CanaryWebhookPayload]:
        signed = needs_credentials(incoming, self.name)
        if signed and bearer_token(incoming) is not None:
            check_bearer(incoming, "or metadata.token in the body")
            signed = False
        require_json(incoming)
        data = decode_json_object(incoming.body)
        if signed:
            self._check_metadata_token(incoming, data)
        return data, validate(CanaryWebhookPayload, data)

    def parse(self, incoming: IncomingEvent) -> DeployEvent | None:
        data, payload = self._authenticated(incoming)
        if not self.starts(payload.phase):
            return self.ignore(
                f"canary phase {payload.phase} is not {self.start_on}",
                canary=payload.name,
                phase=payload.phase,
            )
        key = None
        if payload.checksum:
            key = f"{payload.name}/{payload.namespace}/{payload.checksum}/{payload.phase}"
        return assemble(
            self.name,
            self.settings,
            data,
            service=text(data, "name"),
            environment=text(data, "namespace"),
            version=text(data, "checksum"),
            event_id=given(key, "name/namespace/checksum/phase (checksum is missing)"),
            strategy="canary",
            target={"kind": "Canary", "name": payload.name, "namespace": payload.namespace},
        )

    @staticmethod
    def _check_metadata_token(incoming: IncomingEvent, data: dict[str, Any]) -> None:
        metadata = data.get("metadata")
        token = metadata.get("token") if isinstance(metadata, dict) else None
        if not isinstance(token, str) or not token:
            raise EventRejected(
                401,
                "missing_token",
                "missing metadata.token in the body (set it in the Canary's event webhook metadata) "
                "or an Authorization: Bearer header",
            )
        if not matches_any(token, incoming.secrets):
            raise EventRejected(401, "bad_token", "metadata.token is not one of this source's secrets")
