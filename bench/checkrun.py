"""What the noise benches share (gauge_noise, latency_noise, slo_surges, spike_noise): one check fed
a deploy's polls as the Watch feeds it, a false-rollback cell as the tables print it, and the
command line of a false-rollback grid."""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.decisions import clopper_pearson_upper
from watchdog.analysis.checks import Check
from watchdog.model import Verdict


def rolled_back(check: Check, polls: Iterable[tuple[Any, Any]]) -> bool:
    """True when ``check`` fails on one of ``polls`` (canary, baseline) as they come, or at its
    end-of-bake look."""
    for canary, baseline in polls:
        check.observe(canary, baseline)
        if check.verdict(final=False) is Verdict.FAIL:
            return True
    check.finish()
    return check.verdict(final=True) is Verdict.FAIL


def rate_cells(alarms: int, runs: int) -> tuple[str, str]:
    """The share rolled back with its count, and its one-sided 95 % Clopper-Pearson upper bound."""
    upper = clopper_pearson_upper(alarms, runs)
    return f"{100 * alarms / runs:.2f} % ({alarms}/{runs})", f"{100 * upper:.2f} %"


def false_rollback_grid(
    rng: np.random.Generator,
    runs: int,
    axes: Sequence[tuple[str, str, int]],
    run: Callable[..., bool],
) -> None:
    """Print one row per cell of ``axes`` (label, comma-separated values, column width): the
    share of ``runs`` healthy deploys that ``run(rng, *cell)`` rolled back, with its bound."""
    header = "".join(f"{label:>{width}}" for label, _, width in axes)
    print(f"{header}{'false rollbacks':>20}{'95 % upper':>12}")
    values = [[float(v) for v in raw.split(",")] for _, raw, _ in axes]
    for cell in itertools.product(*values):
        alarms = sum(run(rng, *cell) for _ in range(runs))
        rate, upper = rate_cells(alarms, runs)
        row = "".join(f"{v:>{width}g}" for v, (_, _, width) in zip(cell, axes, strict=True))
        print(f"{row}{rate:>20}{upper:>12}", flush=True)


@dataclass(frozen=True)
class Axis:
    """One dimension of a false-rollback grid: its option (``--name``) and column label, the
    comma-separated values it takes by default, its help, and the column's width."""

    name: str
    default: str
    help: str
    width: int


def grid_command(
    argv: list[str] | None,
    *,
    script: str,
    doc: str,
    runs: int,
    axes: Sequence[Axis],
    describe: str,
    run: Callable[..., bool],
    check: Callable[[argparse.Namespace], str | None] | None = None,
) -> int:
    """A noise bench's command: ``--runs`` (default ``runs``), ``--seed`` and one option per axis;
    ``check`` may refuse the values (its message goes to the parser). Prints ``bench/<script>
    --runs N --seed S: <describe>`` and then the grid (:func:`false_rollback_grid`)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--runs", type=int, default=runs, help="healthy runs per cell")
    parser.add_argument("--seed", type=int, default=1)
    for axis in axes:
        parser.add_argument(f"--{axis.name}", default=axis.default, help=axis.help)
    args = parser.parse_args(argv)
    problem = check(args) if check is not None else None
    if problem:
        parser.error(problem)
    print(f"bench/{script} --runs {args.runs} --seed {args.seed}: {describe}")
    cells = [(axis.name, getattr(args, axis.name), axis.width) for axis in axes]
    false_rollback_grid(np.random.default_rng(args.seed), args.runs, cells, run)
    return 0
