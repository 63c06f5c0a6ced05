"""The generic source: anything that can POST signed JSON (a CI job, a script, Spinnaker's webhook
stage). Signature and body are DESIGN §4's contract."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from watchdog.errors import EventRejected
from watchdog.model import DeployEvent
from watchdog.plugins import AdapterContext
from watchdog.ports import IncomingEvent
from watchdog.signing import verify

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


def decode_json_object(body: bytes) -> dict[str, Any]:
    """Parse a webhook body that must be a JSON object, with a 400 naming what is wrong."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventRejected(400, "invalid_json", f"the body is not JSON: {exc}") from exc
    except RecursionError as exc:
        raise EventRejected(400, "invalid_json", "the body is nested too deeply") from exc
    if not isinstance(data, dict):
        raise EventRejected(400, "invalid_json", "the body must be a JSON object")
    return data


def require_json(incoming: IncomingEvent) -> None:
    """415 unless the body is declared JSON: a form-encoded body is a misconfigured sender."""
    ctype = incoming.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise EventRejected(
            415,
            "unsupported_media_type",
            f"Content-Type must be application/json, not {ctype or 'missing'}",
        )


def validation_detail(exc: ValidationError) -> str:
    """``service: Field required; labels.team: Input should be a valid string``."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "body"
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


class GenericSource:
    """``POST /v1/events/generic``."""

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def from_settings(cls, name: str, settings: BaseModel, context: AdapterContext) -> GenericSource:
        return cls(name)

    def parse(self, incoming: IncomingEvent) -> DeployEvent | None:
        if incoming.secrets:
            problem = verify(incoming.headers, incoming.body, incoming.secrets, incoming.now)
            if problem is not None:
                raise EventRejected(401, "bad_signature", problem)
        elif not incoming.allow_unsigned:
            raise EventRejected(
                401,
                "unsigned_source",
                f"no webhook secret is configured for source {self.name!r} and it is not in "
                "server.allow_unsigned",
            )
        require_json(incoming)
        data = decode_json_object(incoming.body)
        try:
            event = GenericEvent.model_validate(data)
        except ValidationError as exc:
            raise EventRejected(422, "invalid_event", validation_detail(exc)) from exc
        return DeployEvent(
            source=self.name,
            event_id=event.id,
            service=event.service,
            version=event.version,
            environment=event.environment,
            baseline_version=event.baseline_version,
            strategy=event.strategy,
            target=event.target,
            labels=event.labels,
        )
