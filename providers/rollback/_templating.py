"""Templates in rollback targets' settings: a flag key, a remote command.

Like the query templates (DESIGN §3), only ``{name}`` with a known name is replaced and every value is
escaped for where it lands (a shell word, a URL path segment). Two differences, because these
templates act instead of merely asking:

- ``{name}`` right after a ``$`` is left alone, so ``${HOME}`` in a command stays the shell's;
- a ``{name}`` that this deployment does not provide is an error naming it, never passed on as
  written: a typo must not turn into a command with a literal ``{verison}`` in it.

Shared by the rollback adapters of this package only (STYLE §9: adapters never import each other).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Final

from watchdog.errors import PermanentError
from watchdog.ports import RollbackRequest

_PLACEHOLDER: Final = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")

CORE_NAMES: Final = (
    "service",
    "version",
    "baseline_version",
    "environment",
    "idempotency_key",
)
"""Names every deployment provides (``baseline_version`` only when the event carries one).
``idempotency_key`` is ``<deployment id>:rollback``, the same on a retry after a crash, so a script can
tell a repeated rollback from a new one."""


def template_values(request: RollbackRequest) -> dict[str, str]:
    """The values a rollback template may use: the event's labels and scalar target fields, then the
    core names (which win over a label or target field of the same name)."""
    deployment = request.deployment
    event = deployment.event
    values: dict[str, str] = {str(k): str(v) for k, v in event.labels.items()}
    for key, value in event.target.items():
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            values[str(key)] = str(value)
    values.update(
        {
            "service": event.service,
            "version": event.version,
            "environment": event.environment,
            "idempotency_key": request.idempotency_key,
        }
    )
    if event.baseline_version is not None:
        values["baseline_version"] = event.baseline_version
    else:
        values.pop("baseline_version", None)
    return values


def placeholders(template: str) -> list[str]:
    """The names a template uses, in order of first use."""
    seen: dict[str, None] = {}
    for match in _PLACEHOLDER.finditer(template):
        seen.setdefault(match.group(1))
    return list(seen)


def render(
    template: str,
    values: Mapping[str, str],
    escape: Callable[[str], str],
    *,
    what: str,
    deployment_id: str,
) -> str:
    """``template`` with every ``{name}`` replaced by ``escape(value)``.

    Raises ``PermanentError`` naming ``what`` (e.g. "rollback target 'fleet': `command`") when a name
    has no value for this deployment; retrying cannot supply it.
    """
    missing = [name for name in placeholders(template) if name not in values]
    if missing:
        names = ", ".join(f"{{{name}}}" for name in missing)
        hint = " (the event carries no baseline_version)" if "baseline_version" in missing else ""
        available = ", ".join(f"{{{name}}}" for name in sorted(values))
        raise PermanentError(
            f"{what} uses {names}, which deployment {deployment_id} does not provide{hint}; "
            f"available: {available}"
        )

    def replace(match: re.Match[str]) -> str:
        return escape(values[match.group(1)])

    return _PLACEHOLDER.sub(replace, template)
