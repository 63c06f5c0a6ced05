"""What every CD-tool source shares: reading a body safely, checking who sent it, walking dotted paths,
and turning what a source found into a DeployEvent with the operator's overrides applied.

Kept in one place so that the sources differ only in what their tools really differ in (headers,
payload shapes, which state starts a watch), and so that a fix to, say, constant-time comparison
lands in every source at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Self, TypeVar

import structlog
from pydantic import BaseModel, ValidationError

from watchdog.config.models import SourceConfig
from watchdog.errors import ConfigError, EventRejected
from watchdog.model import DeployEvent
from watchdog.plugins import AdapterContext
from watchdog.ports import IncomingEvent
from watchdog.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

log = structlog.get_logger("watchdog.sources")
M = TypeVar("M", bound=BaseModel)

MAX_DEPTH: Final = 64
"""Deepest nesting accepted in a body. Real payloads nest under 20 levels (a Spinnaker execution is
the deepest); a body nested far deeper is an attack on whatever walks it later, not a deploy."""
MAX_VALUE: Final = 200
"""Longest service, environment or version kept, as for the generic source."""
MAX_EVENT_ID: Final = 600
"""Longest idempotency key; composite keys (Flagger's name/namespace/checksum/phase) run longer."""


# --- bodies -------------------------------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def decode_json_object(body: bytes) -> dict[str, Any]:
    """Parse a webhook body that must be a JSON object, with a 400 naming what is wrong.

    ``ValueError`` covers more than malformed JSON: Python refuses integers longer than 4300 digits
    with a plain ``ValueError``, which must be a 400 and not a crash.
    """
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError as exc:
        raise EventRejected(400, "invalid_json", "the body is nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too many digits, NaN
        raise EventRejected(400, "invalid_json", f"the body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise EventRejected(400, "invalid_json", "the body must be a JSON object")
    if _depth(data) > MAX_DEPTH:
        raise EventRejected(400, "invalid_json", f"the body is nested deeper than {MAX_DEPTH} levels")
    return data


def _depth(data: Any) -> int:
    """Nesting depth without recursion, so a hostile body cannot exhaust the stack here either."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        if isinstance(node, dict):
            stack.extend((child, level + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, level + 1) for child in node)
    return deepest


def media_type(incoming: IncomingEvent) -> str:
    """The Content-Type without parameters, lower-cased ('' when there is none)."""
    return incoming.headers.get("Content-Type", "").split(";")[0].strip().lower()


def is_json(ctype: str) -> bool:
    return ctype == "application/json" or ctype.endswith("+json")


def require_json(incoming: IncomingEvent) -> None:
    """415 unless the body is declared JSON: a form-encoded body is a misconfigured sender."""
    ctype = media_type(incoming)
    if not is_json(ctype):
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


def validate(model: type[M], data: Any) -> M:
    """Validate a payload against the shape a source relies on; 422 naming every wrong field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise EventRejected(422, "invalid_event", validation_detail(exc)) from exc


# --- authenticity -------------------------------------------------------------------------------


def matches_any(candidate: str, secrets: Iterable[str]) -> bool:
    """Whether ``candidate`` equals one of ``secrets``, comparing with every one in constant time
    (no early exit), so the timing tells neither which secret nor how much of it matched."""
    given = _bytes(candidate)
    found = False
    for secret in secrets:
        found |= hmac.compare_digest(_bytes(secret), given)
    return found


def _bytes(value: str) -> bytes:
    """UTF-8, keeping the undecodable bytes aiohttp hands over as surrogates (a header with invalid
    UTF-8 is a wrong credential, not a crash)."""
    return value.encode("utf-8", "surrogateescape")


def verify_signed(incoming: IncomingEvent) -> None:
    """The generic ``X-Watchdog-Signature`` scheme (:mod:`watchdog.signing`), 401 when it fails.

    Non-ASCII header values are refused first: ``hmac.compare_digest`` raises ``TypeError`` on
    non-ASCII strings, which would surface as a 500.
    """
    for header in (TIMESTAMP_HEADER, SIGNATURE_HEADER):
        if not incoming.headers.get(header, "").isascii():
            raise EventRejected(401, "bad_signature", f"{header} is not a signature (non-ASCII characters)")
    problem = verify(incoming.headers, incoming.body, incoming.secrets, incoming.now)
    if problem is not None:
        raise EventRejected(401, "bad_signature", problem)


def hmac_sha256_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def bearer_token(incoming: IncomingEvent) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or None when the header is absent or another
    scheme."""
    scheme, _, token = incoming.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def needs_credentials(incoming: IncomingEvent, source: str) -> bool:
    """False for a source that may be unsigned (no secret configured and the source is in
    ``server.allow_unsigned``); raises 401 when it has no secret and is not allowed unsigned."""
    if incoming.secrets:
        return True
    if incoming.allow_unsigned:
        return False
    raise EventRejected(
        401,
        "unsigned_source",
        f"no webhook secret is configured for source {source!r} (server.webhook_secrets.{source}) "
        "and it is not in server.allow_unsigned",
    )


def check_bearer(incoming: IncomingEvent, what: str) -> None:
    """401 unless ``Authorization: Bearer`` carries one of the source's secrets."""
    token = bearer_token(incoming)
    if token is None:
        raise EventRejected(401, "missing_token", f"send Authorization: Bearer <token> ({what})")
    if not matches_any(token, incoming.secrets):
        raise EventRejected(401, "bad_token", "the bearer token is not one of this source's secrets")


# --- dotted paths -------------------------------------------------------------------------------


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


def dig(data: Any, path: str) -> Any:
    """The value at ``a.b.0.c`` (objects by key, arrays by index), or ``MISSING``. JSON null counts
    as missing: tools write null for "not set" (Argo CD's toJson of an absent field)."""
    node = data
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return MISSING
    return MISSING if node is None else node


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, float):
        return "a fractional number"
    return type(value).__name__


@dataclass(frozen=True, slots=True)
class Found:
    """A value a source read, and where it read it, so that errors name the exact place."""

    value: str | None
    where: str


def text(data: Any, path: str, where: str | None = None) -> Found:
    """The string (or whole number, written in decimal) at ``path``; None when absent or empty.

    Anything else is refused with 422: a version that is an object would become a version called
    "{...}" and match nothing, silently.
    """
    value = dig(data, path)
    place = where or path
    if value is MISSING:
        return Found(None, place)
    if isinstance(value, str):
        return Found(value or None, place)
    if isinstance(value, int) and not isinstance(value, bool):
        return Found(str(value), place)
    raise EventRejected(422, "invalid_event", f"{place}: must be a string, not {_type_name(value)}")


def given(value: str | None, where: str) -> Found:
    """A value the source computed itself (a header, a composite key)."""
    return Found(value or None, where)


# --- the event ----------------------------------------------------------------------------------


_REQUIRED: Final = ("service", "version", "event_id")


def assemble(
    source: str,
    settings: SourceConfig,
    payload: Mapping[str, Any],
    *,
    service: Found,
    version: Found,
    event_id: Found,
    environment: Found | None = None,
    baseline_version: Found | None = None,
    strategy: str | None = None,
    target: Mapping[str, Any] | None = None,
) -> DeployEvent:
    """The DeployEvent for a source's defaults, each replaced by the configured path when
    ``sources.<source>.<field>`` is set (DESIGN §4); 422 naming the field and where it was looked
    for when a required one is missing or a value is unusable."""
    defaults = {
        "service": service,
        "environment": environment or Found(None, "environment"),
        "version": version,
        "baseline_version": baseline_version or Found(None, "baseline_version"),
        "event_id": event_id,
    }
    values: dict[str, str | None] = {}
    problems: list[str] = []
    for name, default in defaults.items():
        path = getattr(settings, name)
        try:
            found = default if path is None else _configured(payload, source, name, path)
        except EventRejected as exc:
            problems.append(exc.detail)
            continue
        limit = MAX_EVENT_ID if name == "event_id" else MAX_VALUE
        if found.value is None and name in _REQUIRED:
            problems.append(f"{name}: missing (looked for {found.where})")
        elif found.value is not None and len(found.value) > limit:
            problems.append(f"{name}: longer than {limit} characters ({found.where})")
        values[name] = found.value
    labels: dict[str, str] = {}
    for label, path in settings.labels.items():
        try:
            found = _configured(payload, source, f"labels.{label}", path)
        except EventRejected as exc:
            problems.append(exc.detail)
            continue
        if found.value is not None:
            labels[label] = found.value[:MAX_VALUE]
    if problems:
        raise EventRejected(422, "invalid_event", "; ".join(problems))
    return DeployEvent(
        source=source,
        event_id=values["event_id"] or "",
        service=values["service"] or "",
        version=values["version"] or "",
        environment=values["environment"] or "",
        baseline_version=values["baseline_version"],
        strategy=strategy,
        target=dict(target or {}),
        labels=labels,
    )


def _configured(payload: Mapping[str, Any], source: str, name: str, path: str) -> Found:
    where = f"sources.{source}.{name}: {path}"
    found = text(payload, path, where)
    if found.value is None:
        raise EventRejected(422, "invalid_event", f"{where} is not in the payload (or is empty)")
    return found


# --- the adapter base ---------------------------------------------------------------------------


class SourceBase:
    """What the CD-tool sources have in common as adapters: their settings are the
    ``sources.<name>`` section (field overrides and ``start_on``), and one state of the tool's event
    starts a watch.

    Subclasses set ``tool`` (for messages), ``default_start_on`` and ``states`` (every state the
    tool sends, so that a misspelt ``start_on`` is a start-up error rather than a source that never
    starts anything).
    """

    Settings: ClassVar[type[BaseModel]] = SourceConfig
    tool: ClassVar[str] = ""
    default_start_on: ClassVar[str] = ""
    states: ClassVar[Collection[str]] = ()

    def __init__(self, name: str, settings: SourceConfig | None = None) -> None:
        self.name = name
        self.settings = settings or SourceConfig()
        start = self.settings.start_on or self.default_start_on
        known = {s.casefold(): s for s in self.states}
        if known and start.casefold() not in known:
            raise ConfigError(
                [
                    f"sources.{name}.start_on: {start!r} is not a {self.tool} "
                    f"(one of {', '.join(sorted(known.values()))})"
                ]
            )
        self.start_on = known.get(start.casefold(), start)

    @classmethod
    def from_settings(cls, name: str, settings: BaseModel, context: AdapterContext) -> Self:
        if not isinstance(settings, SourceConfig):
            settings = SourceConfig.model_validate(settings.model_dump())
        return cls(name, settings)

    def starts(self, state: str | None) -> bool:
        return state is not None and state.casefold() == self.start_on.casefold()

    def ignore(self, reason: str, **fields: Any) -> DeployEvent | None:
        """Log why a valid event starts nothing; the None it returns makes the server answer 204."""
        log.info("source.ignored", source=self.name, reason=reason, **fields)
        return None
