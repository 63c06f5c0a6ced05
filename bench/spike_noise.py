"""Ratio checks against a concurrent baseline when each version's errors spike on their own: false
rollbacks.

    .venv/bin/python bench/spike_noise.py [--runs 2000] [--seed 1] [--rps 10,100]
                                          [--spikes 0.03,0.05] [--top 6,10] [--shocks 0]

A pod of one version restarting, or a cold cache, multiplies that version's errors alone for an
interval. The conditional test cancels what hits both versions, not this; and the window before the
deploy shows only the baseline's spikes, as many as an hour happened to hold. This feeds
:class:`~watchdog.analysis.checks.RatioCheck` (``compare: baseline``, alone at alpha 1 %, 30 min
bake of 30 s polls, the hour before the deploy as the Watch reads it) healthy deploys and prints per
cell the share rolled back, with its one-sided 95 % Clopper-Pearson upper bound:

- requests per interval and version ~ Poisson(``rps`` * 30);
- bad requests ~ Binomial(requests, 1 % * S), S uniform in x2-x6 (``top`` 6) or x3-x10 (``top``
  10) in a share ``spikes`` of each version's intervals, drawn for each version apart, else 1;
- ``shocks``: besides, both versions' error rate x3-x10 at once in that share of intervals (a
  shared dependency failing; bench/decisions' shock-x1.5 has 10 %), the hour before included.

bench/decisions' spike-x2 family is the cell at 100 req/s, 5 %, x2-x6 (there through the Watch).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench.checkrun import Axis, grid_command, rolled_back
from watchdog.analysis.checks import RatioCheck, RatioCounts
from watchdog.config.models import CheckConfig

POLLS, HISTORY, INTERVAL_S, RATE = 60, 120, 30, 0.01
CONFIG = CheckConfig.model_validate(
    {"name": "errors", "type": "ratio", "provider": "p", "bad": "b", "total": "t", "compare": "baseline"}
)
SIZES = {6.0: (2.0, 6.0), 10.0: (3.0, 10.0)}
"""The spikes' multipliers of the error rate, by their top."""
SHOCK = (3.0, 10.0)
"""A shared shock's multiplier of both versions' error rate."""


def intervals(
    rng: np.random.Generator,
    n: int,
    rps: float,
    spikes: float,
    size: tuple[float, float],
    shock: np.ndarray | None = None,
) -> list[RatioCounts]:
    """``n`` intervals of one version: its errors times uniform(``size``) in a share ``spikes``, and
    times ``shock`` (per interval, shared with the other version) when given."""
    spike = np.where(rng.random(n) < spikes, rng.uniform(*size, n), 1.0)
    if shock is not None:
        spike = spike * shock
    total = rng.poisson(rps * INTERVAL_S, n)
    bad = rng.binomial(total, np.minimum(1.0, RATE * spike))
    return [RatioCounts(float(b), float(t)) for b, t in zip(bad, total, strict=True)]


def shocks(rng: np.random.Generator, n: int, share: float) -> np.ndarray | None:
    """Shared shocks x3-x10 in a share of ``n`` intervals; None (and nothing drawn, so cells without
    shocks draw what they drew before the axis existed) when the share is 0."""
    if share <= 0:
        return None
    return np.where(rng.random(n) < share, rng.uniform(*SHOCK, n), 1.0)


def run(rng: np.random.Generator, rps: float, spikes: float, top: float, shock: float = 0.0) -> bool:
    """One healthy deploy: True when the check rolled it back within the bake (end look included)."""
    sizes = SIZES[top]
    check = RatioCheck(CONFIG, 0.01, POLLS)
    window = intervals(rng, HISTORY, rps, spikes, sizes, shocks(rng, HISTORY, shock))
    check.set_reference(window[::-1])  # newest first
    shared = shocks(rng, POLLS, shock)
    canary = intervals(rng, POLLS, rps, spikes, sizes, shared)
    baseline = intervals(rng, POLLS, rps, spikes, sizes, shared)
    return rolled_back(check, zip(canary, baseline, strict=True))


def main(argv: list[str] | None = None) -> int:
    def unknown_top(args: argparse.Namespace) -> str | None:
        bad = any(float(top) not in SIZES for top in args.top.split(","))
        return "--top: 6 (spikes x2-x6) or 10 (x3-x10)" if bad else None

    return grid_command(
        argv,
        script="spike_noise.py",
        doc=__doc__,
        runs=2000,
        axes=[
            Axis("rps", "10,100", "requests per second and version", 5),
            Axis("spikes", "0.03,0.05", "share of each version's intervals that spike", 8),
            Axis("top", "6,10", "largest spike: 6 for x2-x6, 10 for x3-x10", 5),
            Axis("shocks", "0", "share of intervals with a shock x3-x10 on both versions", 8),
        ],
        describe=f"one ratio check against the baseline, errors {RATE:.0%}, alpha 0.01, {POLLS} polls of "
        f"{INTERVAL_S} s, {HISTORY} intervals before",
        run=run,
        check=unknown_top,
    )

if __name__ == "__main__":
    raise SystemExit(main())
