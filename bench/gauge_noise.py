"""Gauge checks on noise that drifts: false rollbacks and power against poll-to-poll autocorrelation.

    .venv/bin/python bench/gauge_noise.py [--runs 2000] [--seed 1] [--correlations 0,0.5,0.7,0.8,0.9]
                                          [--block 2m]

A gauge (CPU, memory, queue depth) is rarely independent from one 30 s poll to the next. This feeds
:class:`~watchdog.analysis.checks.GaugeCheck` (the default policy: 30 min bake, 30 s polls, 2 min
blocks unless ``--block``, alpha 1 %) healthy and shifted series of stationary AR(1) noise with
correlation ``r`` between polls, and prints per ``r`` and setting the share of healthy deploys
rolled back (with its one-sided 95 % Clopper-Pearson upper bound) and the power against a shift of
one noise standard deviation. Settings:

- ``baseline``: canary against a concurrent baseline, each with its own noise;
- ``slo``: canary against an objective, with the hour before the deploy (120 polls of the same
  process) as the Watch reads it;
- ``slo, no history``: the same without that hour (a provider that cannot answer for the past).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench.checkrun import rate_cells, rolled_back
from watchdog.analysis.checks import GaugeCheck
from watchdog.config.models import CheckConfig

POLLS, INTERVAL, HISTORY, LEVEL, SD = 60, 30.0, 120, 0.4, 0.05
SETTINGS = ("baseline", "slo", "slo, no history")


def ar1(rng: np.random.Generator, r: float, n: int) -> np.ndarray:
    """n values of stationary AR(1) noise with standard deviation SD and lag-1 correlation r."""
    out = np.empty(n)
    value = rng.normal(0, SD)
    for i in range(n):
        value = r * value + rng.normal(0, SD) * math.sqrt(1 - r * r)
        out[i] = value
    return out


def run(rng: np.random.Generator, setting: str, r: float, shift: float, block: str = "2m") -> bool:
    """One deploy: True when the check rolled it back within the bake (end-of-bake look included)."""
    fields: dict[str, object] = {"name": "g", "type": "gauge", "provider": "p", "query": "q", "block": block}
    if setting != "baseline":
        fields |= {"compare": "slo", "objective": LEVEL}
    config = CheckConfig.model_validate(fields)
    check = GaugeCheck(config, 0.01, POLLS, INTERVAL)
    if check.needs_reference:
        history = setting == "slo"
        check.set_reference(list(LEVEL + ar1(rng, r, HISTORY))[::-1] if history else None)
    canary = LEVEL + shift + ar1(rng, r, POLLS)
    baseline = LEVEL + ar1(rng, r, POLLS) if setting == "baseline" else [None] * POLLS
    polls = ((float(c), None if b is None else float(b)) for c, b in zip(canary, baseline, strict=True))
    return rolled_back(check, polls)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000, help="healthy runs per cell (power: a fifth)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--correlations", default="0,0.5,0.7,0.8,0.9")
    parser.add_argument("--block", default="2m", help="the checks' block (default 2m, the config's)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    print(
        f"bench/gauge_noise.py --runs {args.runs} --seed {args.seed} --block {args.block}: {POLLS} polls "
        f"of {INTERVAL:g} s, alpha 0.01, noise sd {SD} around {LEVEL}, shift for power {SD}"
    )
    print(f"{'r':>4}  {'setting':<16}{'false rollbacks':>18}{'95 % upper':>12}{'power':>8}")
    for r in (float(x) for x in args.correlations.split(",")):
        for setting in SETTINGS:
            alarms = sum(run(rng, setting, r, 0.0, args.block) for _ in range(args.runs))
            rate, upper = rate_cells(alarms, args.runs)
            power_runs = max(1, args.runs // 5)
            power = sum(run(rng, setting, r, SD, args.block) for _ in range(power_runs)) / power_runs
            print(f"{r:>4g}  {setting:<16}{rate:>18}{upper:>12}{power:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
