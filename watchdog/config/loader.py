"""Reading a config file: YAML with line numbers, secret interpolation, and validation that names
file, line and key of every problem (``watchdog.yaml:7: policies[0].bake: 'soon' is not a duration``).

Interpolation happens on parsed scalar values, not on the raw text, so a secret containing YAML
syntax (a colon, a quote) cannot change the file's structure.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from watchdog.analysis.policy import unsupported
from watchdog.config.models import Location, WatchdogConfig, reference_problems
from watchdog.errors import ConfigError
from watchdog.plugins import PluginRegistry

_REFERENCE = re.compile(r"\$(\$)?\{(file:[^}]+|[A-Za-z_][A-Za-z0-9_]*)\}")
ADAPTER_SECTIONS = {"providers": "metrics", "rollback": "rollback", "notify": "notify"}


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config, the validated settings of each named adapter, and the warnings."""

    path: str
    config: WatchdogConfig
    adapter_settings: dict[tuple[str, str], BaseModel] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def load_config(
    path: str | os.PathLike[str],
    registry: PluginRegistry,
    *,
    strict_secrets: bool = True,
    environ: Mapping[str, str] | None = None,
) -> LoadedConfig:
    """Load and validate ``path``.

    ``strict_secrets=False`` (``watchdog validate``) turns an unset ``${NAME}`` or a missing
    ``${file:...}`` into a warning, since configs are linted where secrets are absent; ``serve``
    keeps them errors.
    """
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{name}: cannot read: {exc.strerror or exc}"]) from exc
    return load_config_text(text, name, registry, strict_secrets=strict_secrets, environ=environ)


def load_config_text(
    text: str,
    name: str,
    registry: PluginRegistry,
    *,
    strict_secrets: bool = True,
    environ: Mapping[str, str] | None = None,
) -> LoadedConfig:
    env = os.environ if environ is None else environ
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"{mark.line + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{name}:{line} not valid YAML: {problem}"]) from exc
    lines: dict[Location, int] = {}
    problems: list[str] = []
    warnings: list[str] = []
    interpolator = _Interpolator(name, env, strict_secrets, problems, warnings)
    data = {} if node is None else _to_python(node, (), lines, interpolator)
    if not isinstance(data, dict):
        raise ConfigError([f"{name}:1: the top level must be a mapping of sections"])
    if problems:
        raise ConfigError(problems)

    def where(loc: Location) -> str:
        return f"{name}:{_line_of(loc, lines)}: {_dotted(loc)}"

    try:
        config = WatchdogConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([f"{where(loc)}: {msg}" for loc, msg in _errors(exc)]) from exc

    problems.extend(f"{where(loc)}: {msg}" for loc, msg in reference_problems(config))
    for i, policy in enumerate(config.policies):
        for j, check in enumerate(policy.checks):
            why = unsupported(check)
            if why:
                problems.append(f"{where(('policies', i, 'checks', j, 'type'))}: {why}")
    settings: dict[tuple[str, str], BaseModel] = {}
    for section, kind in ADAPTER_SECTIONS.items():
        for adapter_name, entry in getattr(config, section).items():
            adapter = registry.find(kind, entry.type)
            if adapter is None:
                loc: Location = (section, adapter_name, "type")
                problems.append(f"{where(loc)}: {registry.unknown_type_message(kind, entry.type)}")
                continue
            try:
                settings[(section, adapter_name)] = adapter.settings_model.model_validate(entry.settings)
            except ValidationError as exc:
                problems.extend(f"{where((section, adapter_name, *loc))}: {msg}" for loc, msg in _errors(exc))
    for source in config.sources:
        if registry.find("source", source) is None:
            problems.append(
                f"{where(('sources', source))}: {registry.unknown_type_message('source', source)}"
            )
    if problems:
        raise ConfigError(problems)
    return LoadedConfig(path=name, config=config, adapter_settings=settings, warnings=warnings)


class _Interpolator:
    """Replaces ``${NAME}`` and ``${file:/path}`` in scalar strings; ``$${...}`` stays literal."""

    def __init__(
        self,
        name: str,
        env: Mapping[str, str],
        strict: bool,
        problems: list[str],
        warnings: list[str],
    ) -> None:
        self.name, self.env, self.strict = name, env, strict
        self.problems, self.warnings = problems, warnings

    def __call__(self, value: str, loc: Location, line: int) -> str:
        def replace(m: re.Match[str]) -> str:
            if m.group(1):  # escaped: $${X} -> ${X}
                return m.group(0)[1:]
            ref = m.group(2)
            where = f"{self.name}:{line}: {_dotted(loc)}"
            if ref.startswith("file:"):
                path = os.path.expanduser(ref[5:])
                try:
                    return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
                except OSError as exc:
                    self._missing(f"{where}: cannot read secret file {path}: {exc.strerror or exc}")
                    return m.group(0)
            if ref not in self.env:
                self._missing(f"{where}: environment variable {ref} is not set")
                return m.group(0)
            return self.env[ref]

        return _REFERENCE.sub(replace, value)

    def _missing(self, message: str) -> None:
        (self.problems if self.strict else self.warnings).append(message)


def _to_python(node: yaml.Node, loc: Location, lines: dict[Location, int], interpolate: _Interpolator) -> Any:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = str(_scalar(key_node))
            child = (*loc, key)
            lines[child] = key_node.start_mark.line + 1
            out[key] = _to_python(value_node, child, lines, interpolate)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, (*loc, i), lines, interpolate) for i, item in enumerate(node.value)]
    assert isinstance(node, yaml.ScalarNode)
    value = _scalar(node)
    if isinstance(value, str):
        return interpolate(value, loc, node.start_mark.line + 1)
    return value


def _scalar(node: yaml.Node) -> Any:
    """A scalar node's value with YAML's usual typing (``true``, ``3``, ``0.01``)."""
    return yaml.SafeLoader("").construct_object(node, deep=True)


def _line_of(loc: Location, lines: dict[Location, int]) -> int:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def _dotted(loc: Location) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _errors(exc: ValidationError) -> list[tuple[Location, str]]:
    out = []
    for err in exc.errors(include_url=False):
        # pydantic appends the tag of a failing function-validator to the location; drop it
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        kind, msg = err["type"], err["msg"]
        if kind == "extra_forbidden":
            msg = "unknown key"
        elif kind == "missing":
            msg = "required key is missing"
        elif msg.startswith(("Value error, ", "Assertion failed, ")):
            msg = msg.split(", ", 1)[1]
        out.append((loc, msg))
    return out
