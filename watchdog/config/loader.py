"""Reading a config file: YAML with line numbers, secret interpolation, and validation that names
file, line and key of every problem (``watchdog.yaml:7: policies[0].bake: 'soon' is not a duration``).

Interpolation happens on parsed scalar values, not on the raw text, so a secret containing YAML
syntax (a colon, a quote) cannot change the file's structure.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from watchdog.clock import SystemClock
from watchdog.config.models import Location, WatchdogConfig, reference_problems
from watchdog.errors import ConfigError
from watchdog.metrics import WatchdogMetrics
from watchdog.plugins import AdapterContext, PluginRegistry

# `$${` is the escape: it stands for a literal `${` and whatever follows stays as written (a shell
# expansion in an ssh command, `$${VAR##* }`). Any other `${` must be a well-formed reference.
_REFERENCE = re.compile(r"\$\$\{|\$\{(file:[^}]+|[A-Za-z_][A-Za-z0-9_]*)\}")
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
    try:
        data = {} if node is None else _to_python(node, (), lines, interpolator)
    except _NodeError as exc:
        raise ConfigError([f"{name}:{exc.line}: {exc}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"{name}:1: the top level must be a mapping of sections"])
    if problems:
        raise ConfigError(problems)

    def where(loc: Location) -> str:
        return f"{name}:{_line_of(loc, lines)}: {_dotted(loc)}"

    config, errors = _validate(WatchdogConfig, data, (), interpolator)
    if config is None:
        raise ConfigError([f"{where(loc)}: {msg}" for loc, msg in errors])

    problems.extend(f"{where(loc)}: {msg}" for loc, msg in reference_problems(config))
    if not config.store.url.startswith("sqlite://"):
        problems.append(
            f"{where(('store', 'url'))}: only sqlite:// stores are available in this version "
            "(postgresql:// is planned)"
        )
    settings: dict[tuple[str, str], BaseModel] = {}
    for section, kind in ADAPTER_SECTIONS.items():
        for adapter_name, entry in getattr(config, section).items():
            adapter = registry.find(kind, entry.type)
            if adapter is None:
                loc: Location = (section, adapter_name, "type")
                problems.append(f"{where(loc)}: {registry.unknown_type_message(kind, entry.type)}")
                continue
            try:  # the adapter's module is imported here, on first use
                model = adapter.settings_model
            except ConfigError as exc:
                problems.extend(f"{where((section, adapter_name, 'type'))}: {p}" for p in exc.problems)
                continue
            built, errors = _validate(model, entry.settings, (section, adapter_name), interpolator)
            if built is None:
                problems.extend(f"{where(loc)}: {msg}" for loc, msg in errors)
            else:
                settings[(section, adapter_name)] = built
    for source, source_settings in config.sources.items():
        found = registry.find("source", source)
        if found is None:
            problems.append(
                f"{where(('sources', source))}: {registry.unknown_type_message('source', source)}"
            )
            continue
        try:  # a source checks its settings against its tool's vocabulary when it is built
            found.build(source, source_settings, AdapterContext(WatchdogMetrics(), SystemClock()))
        except ConfigError as exc:
            at = _line_of(("sources", source), lines)
            problems.extend(f"{name}:{at}: {problem}" for problem in exc.problems)
    if problems:
        raise ConfigError(problems)
    return LoadedConfig(path=name, config=config, adapter_settings=settings, warnings=warnings)


M = TypeVar("M", bound=BaseModel)

# What an unset reference stands in for while `validate` checks the rest of the file: the first
# shape that the key accepts (a port, a URL, a token long enough to be one). Secrets are absent where
# configs are linted, and their absence alone must not fail the lint.
_STAND_INS = ("0", "http://unset.invalid", "unset-placeholder-value-0000")


def _validate(
    model: type[M], data: dict[str, Any], prefix: Location, interpolator: _Interpolator
) -> tuple[M | None, list[tuple[Location, str]]]:
    """Validate ``data``; in lenient mode, retry with stand-ins for unset references whose keys
    failed, so only problems that are not about a missing secret are reported."""
    data = copy.deepcopy(data)
    errors: list[tuple[Location, str]] = []
    for stand_in in (None, *_STAND_INS):
        if stand_in is not None:
            for loc in interpolator.unresolved:
                if loc[: len(prefix)] == prefix and any(_about(loc, e) for e, _ in errors):
                    _assign(data, loc[len(prefix) :], interpolator.fill(loc, stand_in))
        try:
            return model.model_validate(data), []
        except ValidationError as exc:
            errors = [((*prefix, *loc), msg) for loc, msg in _errors(exc)]
        if interpolator.strict or not all(interpolator.covers(loc) for loc, _ in errors):
            break
    return None, errors


def _about(unresolved: Location, error: Location) -> bool:
    """Whether an error at ``error`` concerns the value at ``unresolved``: the value itself, inside
    it, or the list or mapping holding it (a list-level validator reports the list)."""
    if unresolved == error[: len(unresolved)]:
        return True
    return error == unresolved[: len(error)] and len(unresolved) - len(error) == 1


def _assign(data: Any, loc: Location, value: str) -> None:
    for part in loc[:-1]:
        data = data[part]
    data[loc[-1]] = value


class _NodeError(ValueError):
    """A YAML node that cannot become a config value, with its line."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


class _Interpolator:
    """Replaces ``${NAME}`` and ``${file:/path}`` in scalar strings; ``$${...}`` stays literal.

    Remembers where a reference could not be resolved (lenient mode) so validation can stand in for
    it, and refuses anything that looks like a reference but is not one: a typo such as
    ``${WEBHOOK-SECRET}`` must not silently become the secret's value.
    """

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
        self.unresolved: dict[Location, str] = {}

    def covers(self, loc: Location) -> bool:
        """Whether an error at ``loc`` is about a value holding an unset reference."""
        return any(_about(u, loc) for u in self.unresolved)

    def fill(self, loc: Location, stand_in: str) -> str:
        """The value at ``loc`` with its unset references replaced by ``stand_in``."""
        raw = self.unresolved[loc]
        return _REFERENCE.sub(
            lambda m: "${" if m.group(1) is None else self._resolve(m.group(1)) or stand_in, raw
        )

    def _resolve(self, ref: str) -> str | None:
        if ref.startswith("file:"):
            try:
                return Path(os.path.expanduser(ref[5:])).read_text(encoding="utf-8").rstrip("\r\n")
            except OSError:
                return None
        return self.env.get(ref)

    def __call__(self, value: str, loc: Location, line: int) -> str:
        if "${" in _REFERENCE.sub("", value):
            self.problems.append(
                f"{self.name}:{line}: {_dotted(loc)}: malformed reference in {value!r} (write ${{NAME}} "
                "with letters, digits and _, ${file:/path}, or $${ for a literal ${)"
            )
            return value

        def replace(m: re.Match[str]) -> str:
            ref = m.group(1)
            if ref is None:  # the escape
                return "${"
            where = f"{self.name}:{line}: {_dotted(loc)}"
            if ref.startswith("file:"):
                path = os.path.expanduser(ref[5:])
                try:
                    return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
                except OSError as exc:
                    self._missing(
                        f"{where}: cannot read secret file {path}: {exc.strerror or exc}", loc, value
                    )
                    return m.group(0)
            if ref not in self.env:
                self._missing(f"{where}: environment variable {ref} is not set", loc, value)
                return m.group(0)
            return self.env[ref]

        return _REFERENCE.sub(replace, value)

    def _missing(self, message: str, loc: Location, raw: str) -> None:
        if self.strict:
            self.problems.append(message)
        else:
            self.warnings.append(message)
            self.unresolved[loc] = raw


def _to_python(node: yaml.Node, loc: Location, lines: dict[Location, int], interpolate: _Interpolator) -> Any:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        try:
            yaml.SafeLoader("").flatten_mapping(node)  # resolve `<<: *anchor` merge keys
        except yaml.YAMLError as exc:
            raise _NodeError(node.start_mark.line + 1, f"{_dotted(loc)}: bad merge key: {exc}") from exc
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = str(_scalar(key_node))
            child = (*loc, key)
            if key in out:
                raise _NodeError(key_node.start_mark.line + 1, f"{_dotted(child)}: key appears twice")
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
    try:
        return yaml.SafeLoader("").construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError) as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise _NodeError(node.start_mark.line + 1, f"cannot read {node.value!r}: {problem}") from exc


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
