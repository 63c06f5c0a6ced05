"""``watchdog replay``: a policy's Watch loop over recorded numbers, in virtual time (DESIGN §6).

Operators backtest a policy on past deploys before trusting it; benchmarks measure the engine. The
Watch that runs here is the daemon's own (:class:`watchdog.watch.Watch`), unchanged: replay only gives
it a :class:`~watchdog.clock.VirtualClock` and a metrics provider that answers from the recording.

How the Watch's queries reach the recording. Replay runs a copy of the matched policy whose query
templates are replaced by tokens ``"<check>\\x1f<part>\\x1f{version}"`` (parts: ``bad`` and ``total``
for ratio checks, ``query`` for histogram and gauge checks). The Watch renders ``{version}`` with the
canary's or the baseline's version as it would for PromQL, so the rendered token tells the
:class:`RecordingProvider` which check, which part and which arm it is asked for; the time of the
poll tells it which point. The copy's ``bake`` is cut to the last poll the recording covers when
the recording is shorter than the bake, so the Watch ends (and judges its final look) where the
recording ends; everything else in the policy is as configured.

Recording format (DESIGN §6), plus two extensions:

- ``checks.<name>.<arm>`` is a list of ``[seconds since the deploy started, value]``, one point per
  poll; arms are ``canary`` and ``baseline`` (none for ``compare: slo``). A point whose time is not a
  poll time of the policy (within a millisecond) is never asked for; a poll without a point, or a
  point whose value is ``null``, is a poll without data (the check is blind, not failing).
- Every check of the matched policy must be in the recording (with a ``baseline`` arm for
  ``compare: baseline``); checks the policy does not have are ignored.
- Extension: an arm ``before`` holds points at zero or negative times: the window before the deploy
  that the Watch reads before its first poll (``compare: before``, a histogram's edges, a ratio's
  dispersion). A query for a time at or before the deploy's start is answered from ``before`` when
  the check has one, whatever version it names; without one it has no data, as it would have if
  Prometheus had none.
- Extension: ``deployment`` may carry ``labels`` (a mapping of strings), ``source`` (default
  ``replay``) and ``strategy`` (default empty), which policy ``match`` and query templates see as
  they would see a live event's.

Results are plain dicts, one per recording, in the shape ``--json`` prints (DESIGN §6). ``verdict``
is what the policy decided (``rollback`` also under ``dry_run``, which changes only the action);
``decided_at`` is the time of the poll that decided it, so for ``pass`` the end of the bake or of the
recording (or the poll of an early pass). A check's ``decided_at`` is the poll at which it failed, or
the overall one. Each check also carries its report's ``summary`` sentence, which the table shows. A
recording that cannot be replayed (unreadable, malformed, no matching policy) gives
``{"recording", "verdict": "error", "detail"}`` and never stops the others.

Speed: :class:`RecordingProvider` declares ``immediate = True``, so the Watch calls it inline,
without tasks or timeouts (see :func:`watchdog.watch.immediate`); ``bench/replay_throughput.py``
measures the result.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from watchdog.clock import VirtualClock
from watchdog.config.loader import LoadedConfig
from watchdog.config.models import CheckConfig, PolicyConfig, format_duration
from watchdog.errors import ProviderQueryError
from watchdog.model import DeployEvent, Deployment, State, Verdict
from watchdog.ports import Sample
from watchdog.watch import Watch

__all__ = [
    "SEP",
    "RecordingError",
    "RecordingProvider",
    "read_recording",
    "recording_files",
    "replay_paths",
    "replay_recording",
    "samples",
    "to_json_line",
    "token",
]

SEP = "\x1f"
"""Separates check, part and version in a replay token (ASCII unit separator: no check name, part
or sane version contains it)."""

ARMS = ("canary", "baseline", "before")
TOLERANCE = 1e-3
"""How far (seconds) a poll's time may be from a point's time and still be answered by it."""

VERDICTS = {
    Verdict.FAIL: "rollback",
    Verdict.PASS: "pass",
    Verdict.INCONCLUSIVE: "inconclusive",
    Verdict.PENDING: "inconclusive",  # never returned by a finished Watch; kept total on purpose
}

Point = tuple[float, Any]


class RecordingError(ValueError):
    """A recording that cannot be replayed; the message says where and why."""


def token(check: str, part: str) -> str:
    """The query template replay substitutes for one part of a check: the Watch renders
    ``{version}`` in it, which names the arm."""
    return f"{check}{SEP}{part}{SEP}{{version}}"


class RecordingProvider:
    """The MetricsProvider port over one recording's points (see the module docstring).

    ``checks`` is the recording's ``checks`` mapping: per check, per arm, ``[time, value]`` pairs
    (validated by :func:`replay_recording` first; here a value whose shape does not fit the part
    asked for raises ``ProviderQueryError``, which blinds that check for that poll).
    """

    immediate: ClassVar[bool] = True
    """``query`` answers from memory and never waits: the Watch may call it inline, without a task
    or a timeout."""

    def __init__(
        self,
        checks: Mapping[str, Mapping[str, Any]],
        *,
        version: str,
        baseline_version: str | None,
        created_at: float = 0.0,
    ) -> None:
        self.version = version
        self.baseline_version = baseline_version
        self.created_at = created_at
        self._points: dict[tuple[str, str], dict[int, Point]] = {}
        self._before: set[str] = set()
        for check, arms in checks.items():
            for arm, points in arms.items():
                index: dict[int, Point] = {}
                for t, value in points:
                    index[round(float(t) * 1000)] = (float(t), value)
                self._points[(check, arm)] = index
                if arm == "before":
                    self._before.add(check)
        self._plans: dict[str, tuple[dict[int, Point] | None, dict[int, Point] | None, str]] = {}

    def escape(self, value: str) -> str:
        return value

    async def aclose(self) -> None:
        return None

    async def query(self, query: str, *, at: float, interval: float) -> list[Sample]:
        return self.query_now(query, at=at, interval=interval)

    def query_now(self, query: str, *, at: float, interval: float) -> list[Sample]:
        """The answer, synchronously: what the Watch calls for an immediate provider."""
        plan = self._plans.get(query)
        if plan is None:
            plan = self._plans[query] = self._plan(query)
        index, before, part = plan
        t = at - self.created_at
        if t <= TOLERANCE and before is not None:
            index = before
        if index is None:
            return []
        key = round(t * 1000)
        point = index.get(key)
        if point is None or abs(point[0] - t) > TOLERANCE:
            point = index.get(key - 1) or index.get(key + 1)
            if point is None or abs(point[0] - t) > TOLERANCE:
                return []
        value = point[1]
        if type(value) is dict and part in _RATIO_PARTS:  # the common case, inline
            count: Any = value.get(part)
            if type(count) in _NUMBER:
                return [Sample(_NO_LABELS, float(count))]
        return samples(value, part)

    def _plan(self, query: str) -> tuple[dict[int, Point] | None, dict[int, Point] | None, str]:
        """Where a query's answers are: (the named arm's points, the ``before`` points, part)."""
        check, part, arm = self._parse(query)
        index = self._points.get((check, arm)) if arm is not None else None
        before = self._points.get((check, "before")) if check in self._before else None
        return index, before, part

    def _parse(self, query: str) -> tuple[str, str, str | None]:
        """(check, part, arm named by the version: canary, baseline or None)."""
        fields = query.split(SEP, 2)
        if len(fields) != 3:
            raise ProviderQueryError(f"not a replay query: {query!r}")
        check, part, version = fields
        arm = None
        if version == self.version:
            arm = "canary"
        elif version == self.baseline_version:
            arm = "baseline"
        return check, part, arm


_NO_LABELS: Mapping[str, str] = MappingProxyType({})
"""Shared by every label-less sample: read-only, and one object instead of a dict per answer."""


def samples(value: Any, part: str) -> list[Sample]:
    """One point's value as the samples a provider would return for ``part``.

    ratio ``{"bad": 3, "total": 1500}``: part ``bad`` gives ``[Sample({}, 3)]``, ``total``
    ``[Sample({}, 1500)]``; histogram ``{"0.1": 900, "+Inf": 1500}``: one sample per bucket labelled
    ``le``; gauge ``0.41``: ``[Sample({}, 0.41)]``; ``null``: no data.
    """
    if value is None:
        return []
    if part in {"bad", "total"}:
        count: Any = value.get(part) if type(value) is dict else None
        if type(count) not in _NUMBER:
            raise ProviderQueryError(f"a ratio point is {{'bad': n, 'total': n}}, not {value!r}")
        return [Sample(_NO_LABELS, float(count))]
    if part != "query":
        raise ProviderQueryError(f"unknown part {part!r} of a replay query")
    if isinstance(value, dict):  # histogram: cumulative counts by bucket edge
        if not all(_is_number(v) for v in value.values()):
            raise ProviderQueryError(f"a histogram point maps bucket edges to counts, not {value!r}")
        return [Sample({"le": str(le)}, float(count)) for le, count in value.items()]
    if not _is_number(value):
        raise ProviderQueryError(f"a gauge point is a number, not {value!r}")
    return [Sample(_NO_LABELS, float(value))]


_NUMBER = (int, float)  # compared by exact type: JSON numbers, never bool
_RATIO_PARTS = frozenset({"bad", "total"})


def _is_number(value: Any) -> bool:
    return type(value) in _NUMBER


# --- one recording --------------------------------------------------------------------------------


async def replay_recording(loaded: LoadedConfig, recording: Any, name: str) -> dict[str, Any]:
    """Replay one parsed recording with the first matching policy of ``loaded``; never raises."""
    try:
        event = _event(recording, name)
        fields = {  # as the supervisor matches live events: labels cannot outrank the real fields
            **event.labels,
            "service": event.service,
            "environment": event.environment,
            "version": event.version,
            "baseline_version": event.baseline_version or "",
            "source": event.source,
            "strategy": event.strategy or "",
        }
        policy = loaded.config.policy_for(fields)
        if policy is None:
            raise RecordingError(
                f"no policy matches service={event.service!r} environment={event.environment!r}"
            )
        checks = _checks(recording, policy)
        replayed = _replay_policy(policy, _end(checks, policy))
    except RecordingError as exc:
        return _error(name, str(exc))
    provider = RecordingProvider(
        checks, version=event.version, baseline_version=event.baseline_version, created_at=0.0
    )
    deployment = Deployment(
        id=f"replay:{name}",
        event=event,
        policy=policy.name,
        state=State.BAKING,
        verdict=Verdict.PENDING,
        created_at=0.0,
        updated_at=0.0,
    )
    clock = VirtualClock(0.0)
    try:
        watch = Watch(
            deployment=deployment,
            policy=replayed,
            providers=dict.fromkeys({c.provider for c in replayed.checks}, provider),
            clock=clock,
            stop=asyncio.Event(),
        )
        decision = await watch.run()
    except Exception as exc:  # an engine bug must cost one line, not the whole backtest
        return _error(name, f"replay failed: {exc!r}")
    if decision is None:  # pragma: no cover - the stop event is never set
        return _error(name, "the Watch stopped without a verdict")
    decided_at = _seconds(clock.now())
    out_checks = []
    for report in decision.reports:
        check = watch.analysis.checks[report.name]
        failed_at = getattr(check, "failed_at_poll", None)
        at = decided_at
        if report.verdict is Verdict.FAIL and isinstance(failed_at, int):
            at = _seconds(failed_at * replayed.interval)
        stats = dict(report.statistics)
        if isinstance(stats.get("queries"), dict):
            stats["queries"] = {k: _describe(k, v) for k, v in stats["queries"].items()}
        out_checks.append(
            {
                "name": report.name,
                "verdict": report.verdict.value,
                "decided_at": at,
                "statistics": stats,
                "summary": report.summary,
            }
        )
    return {
        "recording": name,
        "verdict": VERDICTS[decision.verdict],
        "decided_at": decided_at,
        "checks": out_checks,
    }


def to_json_line(result: Mapping[str, Any]) -> str:
    """One result as a line of strict JSON: numpy scalars become plain numbers, and NaN or infinity
    (which JSON cannot say) ``null``."""
    return json.dumps(_plain(result), allow_nan=False)


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str | int | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    tolist = getattr(value, "tolist", None)  # numpy scalars (to a number) and arrays (to lists)
    if callable(tolist):
        return _plain(tolist())
    return str(value)


def _error(name: str, detail: str) -> dict[str, Any]:
    return {"recording": name, "verdict": "error", "detail": detail}


def _seconds(t: float) -> float | int:
    """Whole seconds as an int (``90``, not ``90.0``), anything else as it is."""
    return int(t) if float(t).is_integer() else t


def _describe(key: str, query: Any) -> Any:
    """A rendered replay token said in the recording's terms (``recording: checks.errors.canary
    bad``) rather than as the control characters the Watch saw; ``key`` is the Watch's name for the
    query (``canary.bad``, ``before.total``, ``baseline``), which names the arm."""
    if not isinstance(query, str) or query.count(SEP) != 2:
        return query
    check, part, _ = query.split(SEP, 2)
    return f"recording: checks.{check}.{key.partition('.')[0]} {part}"


def _event(recording: Any, name: str) -> DeployEvent:
    if not isinstance(recording, dict):
        raise RecordingError("a recording is a JSON object with `deployment` and `checks`")
    d = recording.get("deployment")
    if not isinstance(d, dict):
        raise RecordingError("`deployment` is missing or not an object")
    for key in ("service", "version"):
        if not isinstance(d.get(key), str) or not d[key]:
            raise RecordingError(f"`deployment.{key}` is missing or not a non-empty string")
    for key in ("environment", "baseline_version", "source", "strategy"):
        if d.get(key) is not None and not isinstance(d[key], str):
            raise RecordingError(f"`deployment.{key}` is not a string")
    labels = d.get("labels") or {}
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise RecordingError("`deployment.labels` is not a mapping of strings to strings")
    return DeployEvent(
        source=d.get("source") or "replay",
        event_id=name,
        service=d["service"],
        version=d["version"],
        environment=d.get("environment") or "",
        baseline_version=d.get("baseline_version") or None,
        strategy=d.get("strategy") or None,
        labels=dict(labels),
    )


def _checks(recording: dict[str, Any], policy: PolicyConfig) -> dict[str, dict[str, list[Point]]]:
    """The recording's points for the policy's checks, validated against each check's type."""
    raw = recording.get("checks")
    if not isinstance(raw, dict):
        raise RecordingError("`checks` is missing or not an object")
    out: dict[str, dict[str, list[Point]]] = {}
    for check in policy.checks:
        arms = raw.get(check.name)
        where = f"checks.{check.name}"
        if arms is None:
            raise RecordingError(
                f"no points for check {check.name!r} of policy {policy.name!r} "
                f"(the recording has: {', '.join(sorted(raw)) or 'none'})"
            )
        if not isinstance(arms, dict):
            raise RecordingError(f"`{where}` is not an object of arms (canary, baseline)")
        unknown = sorted(set(arms) - set(ARMS))
        if unknown:
            raise RecordingError(f"`{where}` has unknown arms {unknown} (canary, baseline, before)")
        needed = ["canary"]
        if check.compare == "baseline":
            needed.append("baseline")
        for arm in needed:
            if arm not in arms:
                raise RecordingError(f"`{where}` has no `{arm}` points, which compare: {check.compare} needs")
        out[check.name] = {arm: _points(points, check, f"{where}.{arm}") for arm, points in arms.items()}
    return out


def _points(points: Any, check: CheckConfig, where: str) -> list[Point]:
    if not isinstance(points, list):
        raise RecordingError(f"`{where}` is not a list of [seconds, value] points")
    seen: set[int] = set()
    out: list[Point] = []
    ratio = check.type == "ratio"
    for i, point in enumerate(points):
        if type(point) is not list or len(point) != 2 or type(point[0]) not in _NUMBER:
            raise RecordingError(f"`{where}[{i}]` is not a [seconds, value] pair")
        t, value = float(point[0]), point[1]
        if not math.isfinite(t):
            raise RecordingError(f"`{where}[{i}]`: the time is not a finite number")
        key = round(t * 1000)
        if key in seen:
            raise RecordingError(f"`{where}[{i}]`: a second point at {t:g} s")
        seen.add(key)
        if value is not None:
            if ratio and type(value) is dict:  # the common case, checked inline
                if type(value.get("bad")) not in _NUMBER or type(value.get("total")) not in _NUMBER:
                    raise RecordingError(f"`{where}[{i}]`: {_value_problem(value, 'ratio')}")
            else:
                problem = _value_problem(value, check.type)
                if problem:
                    raise RecordingError(f"`{where}[{i}]`: {problem}")
        out.append((t, value))
    return out


def _value_problem(value: Any, kind: str) -> str | None:
    if kind == "ratio":
        if not (isinstance(value, dict) and _is_number(value.get("bad")) and _is_number(value.get("total"))):
            return f'a ratio point is {{"bad": n, "total": n}}, not {json.dumps(value)}'
    elif kind == "histogram":
        if not (isinstance(value, dict) and value and all(_is_number(v) for v in value.values())):
            return (
                'a histogram point maps bucket edges to counts ({"0.1": n, "+Inf": n}), '
                f"not {json.dumps(value)}"
            )
        for le in value:
            try:
                float(le)
            except ValueError:
                return f"{le!r} is not a bucket edge (a number or +Inf)"
    elif not _is_number(value):
        return f"a gauge point is a number, not {json.dumps(value)}"
    return None


def _end(checks: dict[str, dict[str, list[Point]]], policy: PolicyConfig) -> float:
    """The time of the last poll of the policy that the recording's points cover."""
    last = max(
        (t for arms in checks.values() for arm, points in arms.items() if arm != "before" for t, _ in points),
        default=0.0,
    )
    polls = math.floor(last / policy.interval + TOLERANCE / policy.interval)
    if polls < 1:
        raise RecordingError(
            f"the recording ends at {last:g} s, before the first poll of policy {policy.name!r} "
            f"(every {format_duration(policy.interval)})"
        )
    return polls * policy.interval


def _replay_policy(policy: PolicyConfig, end: float) -> PolicyConfig:
    """The policy with its queries replaced by replay tokens and its bake cut to ``end`` if the
    recording ends first. ``model_copy`` skips validation: the original passed it, and the copy
    differs only in query strings and a shorter bake that is a whole number of intervals."""
    checks = []
    for check in policy.checks:
        parts = ("bad", "total") if check.type == "ratio" else ("query",)
        checks.append(check.model_copy(update={p: token(check.name, p) for p in parts}))
    update: dict[str, Any] = {"checks": checks}
    if end < policy.bake:
        update["bake"] = end
    return policy.model_copy(update=update)


# --- files and folders ----------------------------------------------------------------------------


def recording_files(path: Path) -> list[Path]:
    """A file as itself; a folder's ``*.json`` files in name order."""
    if path.is_dir():
        return sorted((p for p in path.glob("*.json") if p.is_file()), key=lambda p: p.name)
    return [path]


def read_recording(path: Path) -> Any:
    """The parsed JSON of one recording file; RecordingError when it cannot be read or parsed."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise RecordingError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise RecordingError(f"not valid JSON: {exc}") from exc


async def replay_paths(loaded: LoadedConfig, path: Path) -> AsyncIterator[dict[str, Any]]:
    """One result per recording of ``path`` (a file, or a folder's ``*.json`` in name order), in
    input order, each replayed independently."""
    for file in recording_files(path):
        try:
            recording = read_recording(file)
        except RecordingError as exc:
            yield _error(file.name, str(exc))
            continue
        yield await replay_recording(loaded, recording, file.name)
