"""What bench/gauge_noise and bench/latency_noise share: one check fed a deploy's polls as the Watch
feeds it, and a false-rollback cell as the tables print it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

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
