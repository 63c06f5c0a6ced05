"""Decision quality: false rollbacks, power and detection delay of the engine against four baselines.

    .venv/bin/python bench/decisions.py [--quick] [--seed N] [--families a,b] [--markdown] [--workers 2]

For every scenario family of :mod:`bench.scenarios` it generates seeded healthy and regressed deploys
as DESIGN §6 recordings, replays each through the daemon's own Watch loop in virtual time
(:func:`watchdog.replay.replay_recording`, method ``engine``), runs the baselines of
:mod:`bench.baselines` on the same recordings (``oracle``, ``kayenta``, ``threshold``, ``naive``), and
prints per family and method:

- false rollbacks: the share of healthy deploys rolled back during the bake, with the one-sided 95 %
  Clopper-Pearson upper bound;
- power: the share of regressed deploys rolled back before the bake ended;
- median and p90 detection delay in minutes, over the regressed deploys that were rolled back: the
  recording time of the decision minus the regression's onset (0 when it was decided before the
  onset, which only late-onset families allow);
- the method's median delay over the oracle's.

Targets (measured here, not asserted in unit tests): false rollbacks <= alpha on healthy deploys;
power >= 0.9 wherever the oracle reaches 0.9; the engine's median delay within 1.3x the oracle's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from scipy.stats import beta

from bench.baselines import METHODS, applies
from bench.scenarios import FAMILIES, Family, generate

ALPHA = 0.01
ENGINE = "engine"
ALL_METHODS: tuple[str, ...] = (ENGINE, *METHODS)
QUICK_RUNS = (300, 100)
FULL_RUNS = (2000, 500)
CHUNK = 25

_RATIO = """\
      - name: errors
        type: ratio
        provider: bench
        bad: 'sum(increase(http_requests_total{service="{service}",version="{version}",code=~"5.."}[{interval}]))'
        total: 'sum(increase(http_requests_total{service="{service}",version="{version}"}[{interval}]))'
        critical: true
"""  # noqa: E501 - PromQL as an operator writes it
_HISTOGRAM = """\
      - name: latency
        type: histogram
        provider: bench
        query: 'sum by (le) (increase(http_request_duration_seconds_bucket{service="{service}",version="{version}"}[{interval}]))'
        compare: baseline
        critical: true
"""  # noqa: E501


def engine_config(f: Family, alpha: float = ALPHA) -> str:
    """The YAML the engine replays family ``f`` with: one policy, ``alpha`` for the whole bake.

    Ratio families: one ``errors`` ratio check against the baseline; latency families add a
    ``latency`` histogram check against the baseline; slo families test ``errors`` against the
    objective. The provider is never contacted (replay answers from the recording)."""
    errors = _RATIO + (
        f"        compare: slo\n        objective: {f.objective}\n"
        if f.kind == "slo"
        else "        compare: baseline\n"
    )
    checks = errors + (_HISTOGRAM if f.kind == "latency" else "")
    return (
        "providers:\n"
        '  bench: {type: prometheus, url: "http://127.0.0.1:9"}\n'
        "policies:\n"
        f"  - name: bench-{f.name}\n"
        "    match: {service: bench}\n"
        f"    bake: {f.bake_min}m\n"
        f"    interval: {f.interval_s}s\n"
        f"    alpha: {alpha}\n"
        "    checks:\n"
        f"{checks}"
    )


# --- one worker's share ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    family: str
    regressed: bool
    start: int
    stop: int
    seed: int
    alpha: float
    before: bool


@dataclass
class Run:
    """One replayed deploy: each method's decision time (None: passed) and the engine's verdict."""

    family: str
    regressed: bool
    index: int
    onset: float
    decided: dict[str, float | None]
    engine_verdict: str
    engine_detail: str = ""
    engine_by: str = ""
    """Which rule of the failing check decided a rollback: sequential, late-onset detector, end."""


_loaded: dict[tuple[str, float], Any] = {}


def _init_worker() -> None:
    """Quiet the Watch's per-poll log lines (thousands of replays); errors still reach stderr."""
    import structlog

    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.dev.ConsoleRenderer(colors=False)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )


def _config(f: Family, alpha: float) -> Any:
    """The family's loaded config, or the problem text when the engine refuses it."""
    key = (f.name, alpha)
    if key not in _loaded:
        from watchdog.config.loader import load_config_text
        from watchdog.errors import ConfigError
        from watchdog.plugins import PluginRegistry

        try:
            _loaded[key] = load_config_text(
                engine_config(f, alpha),
                f"bench-{f.name}.yaml",
                PluginRegistry.from_entry_points(),
                strict_secrets=False,
            )
        except ConfigError as exc:
            _loaded[key] = "config refused: " + "; ".join(exc.problems)
    return _loaded[key]


async def _replay_all(task: Task) -> list[Run]:
    from watchdog.replay import replay_recording

    f = FAMILIES[task.family]
    loaded = _config(f, task.alpha)
    runs = []
    for i in range(task.start, task.stop):
        s = generate(f, regressed=task.regressed, index=i, seed=task.seed, before=task.before)
        decided: dict[str, float | None] = {
            name: method(s, task.alpha) for name, method in METHODS.items() if applies(name, f.kind)
        }
        name = f"{f.name}-{'regressed' if task.regressed else 'healthy'}-{i}"
        if isinstance(loaded, str):
            verdict, detail, at, by = "error", loaded, None, ""
        else:
            result = await replay_recording(loaded, s.recording, name)
            verdict, detail = str(result["verdict"]), str(result.get("detail", ""))
            at = float(result["decided_at"]) if verdict == "rollback" else None
            by = ", ".join(
                str(c.get("statistics", {}).get("failed_by") or "?")
                for c in result.get("checks", [])
                if c.get("verdict") == "fail"
            )
        decided[ENGINE] = at
        runs.append(Run(f.name, task.regressed, i, s.onset, decided, verdict, detail, by))
    return runs


def run_task(task: Task) -> list[Run]:
    """Generate, replay and judge runs ``start..stop`` of one family (in a worker process)."""
    return asyncio.run(_replay_all(task))


# --- the figures ----------------------------------------------------------------------------------


def clopper_pearson_upper(k: int, n: int, level: float = 0.95) -> float:
    """One-sided upper confidence bound for a binomial proportion (exact, Clopper-Pearson)."""
    if n == 0:
        return math.nan
    if k >= n:
        return 1.0
    return float(beta.ppf(level, k + 1, n - k))


@dataclass
class Row:
    family: str
    method: str
    healthy: int = 0
    false_rollbacks: int = 0
    regressed: int = 0
    detected: int = 0
    delays: list[float] = field(default_factory=list)
    verdicts: dict[str, int] = field(default_factory=dict)
    details: dict[str, int] = field(default_factory=dict)
    by: dict[tuple[bool, str], int] = field(default_factory=dict)
    """Engine rollbacks per (regressed, deciding rule)."""

    @property
    def fp(self) -> float:
        return self.false_rollbacks / self.healthy if self.healthy else math.nan

    @property
    def fp_upper(self) -> float:
        return clopper_pearson_upper(self.false_rollbacks, self.healthy)

    @property
    def power(self) -> float:
        return self.detected / self.regressed if self.regressed else math.nan

    def delay(self, q: float) -> float:
        """The q-quantile of the detection delay in minutes (NaN when nothing was detected)."""
        return float(np.quantile(self.delays, q)) / 60 if self.delays else math.nan


def aggregate(runs: Sequence[Run], families: Sequence[Family]) -> dict[tuple[str, str], Row]:
    rows = {
        (f.name, m): Row(f.name, m) for f in families for m in ALL_METHODS if applies(m, f.kind)
    }
    for r in runs:
        for method, at in r.decided.items():
            row = rows[(r.family, method)]
            if method == ENGINE:
                row.verdicts[r.engine_verdict] = row.verdicts.get(r.engine_verdict, 0) + 1
                if r.engine_detail:
                    row.details[r.engine_detail] = row.details.get(r.engine_detail, 0) + 1
                if at is not None:
                    key = (r.regressed, r.engine_by)
                    row.by[key] = row.by.get(key, 0) + 1
            if r.regressed:
                row.regressed += 1
                if at is not None:
                    row.detected += 1
                    row.delays.append(max(0.0, at - r.onset))
            else:
                row.healthy += 1
                row.false_rollbacks += at is not None
    return rows


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.2f} %"


def _minutes(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1f}"


def _cells(row: Row, oracle: Row | None) -> list[str]:
    ratio = math.nan
    if oracle is not None and oracle.delays and row.delays:
        ratio = row.delay(0.5) / oracle.delay(0.5) if oracle.delay(0.5) > 0 else math.nan
    return [
        f"{_pct(row.fp)} ({row.false_rollbacks}/{row.healthy})",
        _pct(row.fp_upper),
        f"{row.power:.3f} ({row.detected}/{row.regressed})" if row.regressed else "n/a",
        _minutes(row.delay(0.5)),
        _minutes(row.delay(0.9)),
        "-" if math.isnan(ratio) else f"{ratio:.2f}",
    ]


HEADER = ["family", "method", "false rollbacks", "95 % upper", "power", "median min", "p90 min", "/ oracle"]


def table(rows: dict[tuple[str, str], Row], families: Sequence[Family], *, markdown: bool) -> str:
    lines: list[list[str]] = []
    for f in families:
        oracle = rows.get((f.name, "oracle"))
        for i, m in enumerate(ALL_METHODS):
            if (f.name, m) not in rows:
                continue
            name = (f"**{f.name}**" if markdown else f.name) if i == 0 else ""
            lines.append([name, m, *_cells(rows[(f.name, m)], oracle)])
    if markdown:
        out = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * 6) + "|"]
        out += ["| " + " | ".join(cells) + " |" for cells in lines]
        return "\n".join(out)
    widths = [max(len(c[i]) for c in [HEADER, *lines]) for i in range(len(HEADER))]

    def line(cells: list[str]) -> str:  # names left-aligned, numbers right-aligned
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in pairs)

    out = [line(HEADER)]
    for cells in lines:
        if cells[0] and len(out) > 1:
            out.append("")
        out.append(line(cells))
    return "\n".join(out)


def _what(f: Family) -> tuple[str, str]:
    """The family's check and regression, in words."""
    if f.kind == "latency":
        shift = f"latency x{f.shift:g}"
        tail = f"{100 * f.tail:g} % of requests x{f.tail_factor:g}"
        return "histogram (+ errors) vs baseline", shift if f.shift != 1 else tail
    check = f"ratio vs SLO {100 * (f.objective or 0):g} %" if f.kind == "slo" else "ratio vs baseline"
    return check, f"errors x{f.effect:g}"


def legend(families: Sequence[Family], *, markdown: bool) -> str:
    """The families: what each simulates."""
    rows = []
    for f in families:
        check, what = _what(f)
        traffic, errors = f"{f.rps:g} req/s", f"{100 * f.p:g} %"
        rows.append([f.name, check, traffic, errors, what, f"{f.bake_min} min", f.note])
    head = ["family", "check", "traffic per arm", "errors", "regression", "bake", "notes"]
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows])
    return "\n".join(lines)


def decided_by(rows: dict[tuple[str, str], Row], families: Sequence[Family]) -> list[str]:
    """Per family, which rule of the engine made its rollbacks (healthy ones are false rollbacks)."""
    out = []
    for f in families:
        row = rows.get((f.name, ENGINE))
        if row is None or not row.by:
            continue
        parts = []
        for regressed, label in ((False, "healthy"), (True, "regressed")):
            counts = {by: n for (reg, by), n in sorted(row.by.items()) if reg == regressed}
            if counts:
                parts.append(f"{label}: " + ", ".join(f"{by or '?'} {n}" for by, n in counts.items()))
        out.append(f"{f.name}: " + "; ".join(parts))
    return out


def target_report(rows: dict[tuple[str, str], Row], families: Sequence[Family], alpha: float) -> list[str]:
    """Where the engine misses a target, and by how much."""
    misses = []
    for f in families:
        eng, ora = rows.get((f.name, ENGINE)), rows.get((f.name, "oracle"))
        if eng is None or ora is None:
            continue
        if eng.healthy and eng.fp > alpha:
            misses.append(
                f"{f.name}: false rollbacks {_pct(eng.fp)} > {_pct(alpha)} (upper bound {_pct(eng.fp_upper)})"
            )
        elif eng.healthy and eng.fp_upper > alpha:
            misses.append(
                f"{f.name}: false rollbacks {_pct(eng.fp)} <= alpha but the 95 % upper bound "
                f"{_pct(eng.fp_upper)} does not confirm it with {eng.healthy} runs"
            )
        if ora.regressed and ora.power >= 0.9 and eng.power < 0.9:
            misses.append(f"{f.name}: power {eng.power:.3f} < 0.9 where the oracle has {ora.power:.3f}")
        if eng.delays and ora.delays and ora.delay(0.5) > 0 and eng.delay(0.5) > 1.3 * ora.delay(0.5):
            misses.append(
                f"{f.name}: median delay {eng.delay(0.5):.1f} min = {eng.delay(0.5) / ora.delay(0.5):.2f}x "
                f"the oracle's {ora.delay(0.5):.1f} min (target 1.3x)"
            )
        odd = {v: n for v, n in eng.verdicts.items() if v not in ("rollback", "pass")}
        if odd:
            detail = "; ".join(f"{d} ({n})" for d, n in list(eng.details.items())[:3])
            misses.append(f"{f.name}: engine verdicts {odd}" + (f": {detail}" if detail else ""))
    return misses


# --- the command ----------------------------------------------------------------------------------


def tasks(families: Sequence[Family], healthy: int, regressed: int, seed: int, before: bool) -> list[Task]:
    out = []
    for f in families:
        for is_regressed, count in ((False, healthy), (True, regressed)):
            for start in range(0, count, CHUNK):
                out.append(Task(f.name, is_regressed, start, min(count, start + CHUNK), seed, ALPHA, before))
    # the longest bakes first, so that two workers finish together
    out.sort(key=lambda t: -FAMILIES[t.family].polls * (1 + (FAMILIES[t.family].kind == "latency")))
    return out


def execute(todo: list[Task], workers: int) -> Iterator[list[Run]]:
    if workers <= 1:
        _init_worker()
        for t in todo:
            yield run_task(t)
        return
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(workers, initializer=_init_worker) as pool:
        yield from pool.imap_unordered(run_task, todo)


def engine_fingerprint() -> str:
    """A short hash of the engine's sources (analysis, Watch, replay), so that a table can be tied
    to the code it measured even between commits."""
    import hashlib

    import watchdog

    root = Path(watchdog.__file__).parent
    digest = hashlib.sha256()
    for path in sorted([*root.glob("analysis/*.py"), root / "watch.py", root / "replay.py"]):
        digest.update(path.read_bytes())
    fingerprint = digest.hexdigest()[:12]
    try:
        import subprocess

        head = subprocess.run(
            ["git", "-C", str(root.parent), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return fingerprint
    return f"{fingerprint} (repository at {head})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_RUNS[0]} healthy + {QUICK_RUNS[1]} regressed runs per family "
        f"instead of {FULL_RUNS[0]} + {FULL_RUNS[1]}",
    )
    parser.add_argument("--seed", type=int, default=1, help="scenario seed (default 1)")
    parser.add_argument("--families", default="", help="comma-separated family names (default: all)")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables (for the README)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--healthy", type=int, help="healthy runs per family (overrides --quick)")
    parser.add_argument("--regressed", type=int, help="regressed runs per family (overrides --quick)")
    parser.add_argument(
        "--no-before",
        action="store_true",
        help="leave out the window before the deploy (the engine then has no dispersion or edge reference)",
    )
    parser.add_argument("--list", action="store_true", help="list the families and exit")
    args = parser.parse_args(argv)

    if args.list:
        print(legend(list(FAMILIES.values()), markdown=args.markdown))
        return 0
    names = [n.strip() for n in args.families.split(",") if n.strip()] or list(FAMILIES)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        parser.error(f"unknown families {', '.join(unknown)} (known: {', '.join(FAMILIES)})")
    families = [FAMILIES[n] for n in names]
    healthy, regressed = QUICK_RUNS if args.quick else FULL_RUNS
    healthy = args.healthy if args.healthy is not None else healthy
    regressed = args.regressed if args.regressed is not None else regressed

    todo = tasks(families, healthy, regressed, args.seed, not args.no_before)
    import watchdog.replay  # noqa: F401 - before the workers fork: every worker runs the same engine code

    started = time.monotonic()
    runs: list[Run] = []
    total = sum(t.stop - t.start for t in todo)
    shown, tty = 0.0, sys.stderr.isatty()
    for batch in execute(todo, args.workers):
        runs.extend(batch)
        if len(runs) / total >= shown + (0.02 if tty else 0.1) or len(runs) == total:
            shown = len(runs) / total
            took = time.monotonic() - started
            print(f"{len(runs)}/{total} replays, {took:.0f} s", end="\r" if tty else "\n", file=sys.stderr)
    if tty:
        print(file=sys.stderr)
    elapsed = time.monotonic() - started

    rows = aggregate(runs, families)
    cpus = os.cpu_count()
    command = "bench/decisions.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(
        f"{command.strip()}: seed {args.seed}, {healthy} healthy + {regressed} regressed runs per family, "
        f"alpha {ALPHA}, {len(runs)} replays in {elapsed / 60:.1f} min on {args.workers} workers "
        f"({cpus} CPUs, {platform.python_implementation()} {platform.python_version()}); "
        f"engine sources {engine_fingerprint()}"
        + ("" if not args.no_before else "; recordings without the window before the deploy")
    )
    print()
    print(legend(families, markdown=args.markdown))
    print()
    print(table(rows, families, markdown=args.markdown))
    print()
    print("Engine rollbacks by deciding rule (sequential e-process, late-onset detector, end-of-bake test):")
    for line in decided_by(rows, families):
        print(f"- {line}")
    misses = target_report(rows, families, ALPHA)
    print()
    print("Engine against the targets:" if misses else "Engine: every target met.")
    for m in misses:
        print(f"- {m}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
