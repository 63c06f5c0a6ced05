"""Ratio checks against an objective on bursty errors whose traffic surges: false rollbacks.

    .venv/bin/python bench/slo_surges.py [--runs 1000] [--seed 1] [--rps 10,100] [--shape 1,4]
                                         [--surges 0,0.1]

A check against an SLO has nothing that cancels a surge: more requests bring more errors, and
bursts of errors (gamma noise on the rate, shape ``k``) grow with the traffic they burst on. This
feeds :class:`~watchdog.analysis.checks.RatioCheck` (``compare: slo``, objective 1 %, alone at
alpha 1 %, 30 min bake of 30 s polls, the hour before the deploy as the Watch reads it) healthy
deploys running exactly at the objective and prints per cell the share rolled back, with its
one-sided 95 % Clopper-Pearson upper bound:

- requests per interval ~ Poisson(``rps`` * 30 * S), S = 1, or x3-x10 in a share ``surges`` of
  the intervals (the window before the deploy has them too);
- bad requests ~ Binomial(requests, 1 % * G), G ~ Gamma(k, 1/k) per interval.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench.checkrun import Axis, grid_command, rolled_back
from watchdog.analysis.checks import RatioCheck, RatioCounts
from watchdog.config.models import CheckConfig

POLLS, HISTORY, INTERVAL_S, OBJECTIVE = 60, 120, 30, 0.01
SURGE_RANGE = (3.0, 10.0)
CONFIG = CheckConfig.model_validate(
    {"name": "errors", "type": "ratio", "provider": "p", "bad": "b", "total": "t"}
    | {"compare": "slo", "objective": OBJECTIVE}
)


def intervals(
    rng: np.random.Generator, n: int, rps: float, shape: float, surges: float
) -> list[RatioCounts]:
    """``n`` intervals of the service: traffic surging in a share ``surges`` of them, errors at
    the objective times gamma bursts of shape ``shape``."""
    surge = np.where(rng.random(n) < surges, rng.uniform(*SURGE_RANGE, n), 1.0)
    total = rng.poisson(rps * INTERVAL_S * surge)
    burst = rng.gamma(shape, 1.0 / shape, n)
    bad = rng.binomial(total, np.minimum(1.0, OBJECTIVE * burst))
    return [RatioCounts(float(b), float(t)) for b, t in zip(bad, total, strict=True)]


def run(rng: np.random.Generator, rps: float, shape: float, surges: float) -> bool:
    """One healthy deploy: True when the check rolled it back within the bake (end look included)."""
    check = RatioCheck(CONFIG, 0.01, POLLS)
    check.set_reference(intervals(rng, HISTORY, rps, shape, surges)[::-1])  # newest first
    return rolled_back(check, ((c, None) for c in intervals(rng, POLLS, rps, shape, surges)))


def main(argv: list[str] | None = None) -> int:
    return grid_command(
        argv,
        script="slo_surges.py",
        doc=__doc__,
        runs=1000,
        axes=[
            Axis("rps", "10,100", "requests per second in ordinary intervals", 5),
            Axis("shape", "1,4", "gamma shape of the error bursts (CV 1/sqrt(k))", 7),
            Axis("surges", "0,0.1", "share of intervals with x3-x10 the traffic", 8),
        ],
        describe=f"one ratio check against {OBJECTIVE:.0%}, alpha 0.01, {POLLS} polls of {INTERVAL_S} s, "
        f"{HISTORY} intervals before",
        run=run,
    )

if __name__ == "__main__":
    raise SystemExit(main())
