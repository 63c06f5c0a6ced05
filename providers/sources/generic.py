"""The generic source: anything that can POST signed JSON (a CI job, a script; ``config/ci/`` has
GitHub Actions and GitLab CI steps that sign with openssl). Signature and body are DESIGN §4's
contract. Spinnaker has a source of its own, since its webhook stage cannot compute an HMAC."""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from providers.sources._common import (
    assemble,
    decode_json_object,
    given,
    needs_credentials,
    require_json,
    validate,
    validation_detail,
    verify_signed,
)
from watchdog.config.models import SourceConfig
from watchdog.model import DeployEvent
from watchdog.plugins import AdapterContext
from watchdog.ports import IncomingEvent

__all__ = ["GenericEvent", "GenericSource", "decode_json_object", "require_json", "validation_detail"]

_Name = Field(min_length=1, max_length=200)


class GenericEvent(BaseModel):
    """The body. Unknown keys are refused: a misspelt ``baseline_versoin`` must not silently mean
    "no baseline"."""

    model_config = ConfigDict(extra="forbid", strict=True)
    id: str = _Name
    service: str = _Name
    version: str = _Name
    environment: str = Field(default="", max_length=200)
    baseline_version: str | None = Field(default=None, max_length=200)
    strategy: str | None = Field(default=None, max_length=50)
    target: dict[str, Any] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)


class GenericSource:
    """``POST /v1/events/generic``."""

    Settings = SourceConfig

    def __init__(self, name: str, settings: SourceConfig | None = None) -> None:
        self.name = name
        self.settings = settings or SourceConfig()

    @classmethod
    def from_settings(cls, name: str, settings: BaseModel, context: AdapterContext) -> GenericSource:
        return cls(name, settings if isinstance(settings, SourceConfig) else None)

    def parse(self, incoming: IncomingEvent) -> DeployEvent | None:
        if needs_credentials(incoming, self.name):
            verify_signed(incoming)
        require_json(incoming)
        data = decode_json_object(incoming.body)
        event = validate(GenericEvent, data)
        mapped = assemble(
            self.name,
            self.settings,
            data,
            service=given(event.service, "service"),
            version=given(event.version, "version"),
            event_id=given(event.id, "id"),
            environment=given(event.environment, "environment"),
            baseline_version=given(event.baseline_version, "baseline_version"),
            strategy=event.strategy,
            target=event.target,
        )
        return dataclasses.replace(mapped, labels={**event.labels, **mapped.labels})
