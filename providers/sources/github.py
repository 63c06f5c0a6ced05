"""GitHub deployments: ``POST /v1/events/github`` from a repository, organisation or App webhook
subscribed to "Deployment statuses".

- Authenticity: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, raw body)>``, checked against
  every secret in ``server.webhook_secrets.github`` (rotation) in constant time, before the body is
  read. The legacy SHA-1 ``X-Hub-Signature`` is not accepted. GitHub signs no timestamp: a replayed
  delivery keeps its ``X-GitHub-Delivery`` and so is a duplicate (200, same deployment), never a
  second watch.
- Starts a watch on ``X-GitHub-Event: deployment_status`` whose ``deployment_status.state`` is
  ``success`` (``sources.github.start_on``). ``ping``, other events and other states get 204.
- Maps (DESIGN §4): service = ``deployment.payload.service``, else ``repository.name``; environment =
  ``deployment.environment``; version = ``deployment.sha``; event id = ``X-GitHub-Delivery``. Also
  read when present: ``deployment.payload.baseline_version``, ``deployment.payload.strategy`` and
  ``deployment.payload.target`` (an object for the rollback adapter). ``deployment.payload`` may be
  a JSON string (the API accepts both); it is decoded so that override paths reach into it.
- Content types: ``application/json`` and GitHub's other choice, ``application/x-www-form-urlencoded``
  with the JSON in the ``payload`` field. The signature covers the form-encoded bytes as sent.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field

from providers.sources._common import (
    SourceBase,
    assemble,
    decode_json_object,
    given,
    hmac_sha256_hex,
    is_json,
    matches_any,
    media_type,
    needs_credentials,
    text,
    validate,
)
from watchdog.errors import EventRejected
from watchdog.model import DeployEvent
from watchdog.ports import IncomingEvent

SIGNATURE_HEADER = "X-Hub-Signature-256"
EVENT_HEADER = "X-GitHub-Event"
DELIVERY_HEADER = "X-GitHub-Delivery"
FORM = "application/x-www-form-urlencoded"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class _Status(_Strict):
    state: str = Field(min_length=1)


class _Deployment(_Strict):
    sha: str = Field(min_length=1)
    environment: str
    payload: dict[str, Any] | str | None = None


class _Repository(_Strict):
    name: str = Field(min_length=1)


class DeploymentStatusEvent(_Strict):
    """The fields of a ``deployment_status`` delivery the mapping relies on; the rest is ignored."""

    deployment_status: _Status
    deployment: _Deployment
    repository: _Repository


class GitHubSource(SourceBase):
    """``POST /v1/events/github``."""

    tool = "GitHub deployment_status state"
    default_start_on = "success"
    states: ClassVar = ("error", "failure", "inactive", "in_progress", "queued", "pending", "success")

    def parse(self, incoming: IncomingEvent) -> DeployEvent | None:
        if needs_credentials(incoming, self.name):
            self._verify(incoming)
        kind = incoming.headers.get(EVENT_HEADER, "").strip()
        if not kind:
            raise EventRejected(400, "missing_header", f"missing {EVENT_HEADER} header: not a GitHub webhook")
        data = self._decode(incoming)
        if kind != "deployment_status":
            return self.ignore(f"{kind} events start nothing", github_event=kind)
        event = validate(DeploymentStatusEvent, data)
        state = event.deployment_status.state
        if not self.starts(state):
            return self.ignore(f"deployment status {state} is not {self.start_on}", state=state)
        payload = event.deployment.payload
        if isinstance(payload, str):
            data["deployment"]["payload"] = _object_or_none(payload)
        service = text(data, "deployment.payload.service")
        if service.value is None:
            service = text(data, "repository.name", "deployment.payload.service or repository.name")
        target = data["deployment"].get("payload")
        target = target.get("target") if isinstance(target, dict) else None
        strategy = text(data, "deployment.payload.strategy").value
        return assemble(
            self.name,
            self.settings,
            data,
            service=service,
            environment=text(data, "deployment.environment"),
            version=text(data, "deployment.sha"),
            baseline_version=text(data, "deployment.payload.baseline_version"),
            event_id=given(
                incoming.headers.get(DELIVERY_HEADER, "").strip(), f"the {DELIVERY_HEADER} header"
            ),
            strategy=strategy[:50] if strategy else None,
            target=target if isinstance(target, dict) else None,
        )

    def _verify(self, incoming: IncomingEvent) -> None:
        signature = incoming.headers.get(SIGNATURE_HEADER, "").strip()
        if not signature:
            legacy = (
                " (the SHA-1 X-Hub-Signature is not accepted)"
                if "X-Hub-Signature" in incoming.headers
                else ""
            )
            raise EventRejected(
                401,
                "missing_signature",
                f"missing {SIGNATURE_HEADER} header{legacy}: set a secret on the webhook",
            )
        expected = (f"sha256={hmac_sha256_hex(secret, incoming.body)}" for secret in incoming.secrets)
        if not matches_any(signature, expected):
            raise EventRejected(401, "bad_signature", f"{SIGNATURE_HEADER} does not match the body")

    def _decode(self, incoming: IncomingEvent) -> dict[str, Any]:
        ctype = media_type(incoming)
        if is_json(ctype):
            return decode_json_object(incoming.body)
        if ctype == FORM:
            try:
                fields = dict(
                    parse_qsl(incoming.body.decode("utf-8"), strict_parsing=True, max_num_fields=20)
                )
            except ValueError as exc:  # UnicodeDecodeError is one too
                raise EventRejected(
                    400, "invalid_form", f"the form-encoded body is malformed: {exc}"
                ) from exc
            if "payload" not in fields:
                raise EventRejected(400, "invalid_form", "the form-encoded body has no payload field")
            return decode_json_object(fields["payload"].encode())
        raise EventRejected(
            415,
            "unsupported_media_type",
            f"Content-Type must be application/json or {FORM}, not {ctype or 'missing'}",
        )


def _object_or_none(raw: str) -> dict[str, Any] | None:
    """A deployment payload given as a JSON string, decoded when it holds an object."""
    try:
        return decode_json_object(raw.encode())
    except EventRejected:
        return None
