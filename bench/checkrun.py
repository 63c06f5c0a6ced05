"""What bench/gauge_noise and bench/latency_noise share: one check fed a deploy's polls as the Watch
feeds it, and a false-rollback cell as the tables print it."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
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
