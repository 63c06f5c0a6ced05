"""Histogram checks on latencies that wobble per version and surge on both: false rollbacks.

    .venv/bin/python bench/latency_noise.py [--runs 1000] [--seed 1] [--rps 50,200]
                                            [--wobble 0,0.1,0.2] [--surges 0,0.1] [--spikes 0]

bench/decisions draws every request's latency independently, so a version's latency distribution
is the same in every interval. Real versions wobble: a noisy neighbour or a GC pause makes every
request of one version a little slower for an interval, and a slow dependency makes both versions
slower at once. This feeds :class:`~watchdog.analysis.checks.HistogramCheck` (one check alone at
alpha 1 %, 30 min bake of 30 s polls, the hour before the deploy as the Watch reads it) healthy
deploys of such a service and prints per cell the share rolled back, with its one-sided 95 %
Clopper-Pearson upper bound:

- requests per interval ~ Poisson(``rps`` * 30) per version, lognormal latencies (median 80 ms,
  log-sd 0.7) in Prometheus buckets up to 2.5 s;
- ``wobble``: each version's latencies x exp(N(0, wobble)) per interval, independently;
- ``surges``: the share of intervals whose latencies are x2-x4 on both versions (the window before
  the deploy has them too);
- ``spikes``: the share of each version's intervals whose latencies alone are x2-x4 (a pod's GC
  pause or cold cache; drawn for each version on its own, in the window before too).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from scipy.stats import norm

from bench.checkrun import Axis, grid_command, rolled_back
from watchdog.analysis.checks import HistogramCheck
from watchdog.config.models import CheckConfig

POLLS, HISTORY, INTERVAL_S, MEDIAN, SIGMA = 60, 120, 30, 0.08, 0.7
BOUNDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SURGE_RANGE = (2.0, 4.0)
CONFIG = CheckConfig.model_validate({"name": "latency", "type": "histogram", "provider": "p", "query": "q"})


def bucket_probs(median: float) -> np.ndarray:
    """Non-cumulative bucket probabilities (+Inf last) of a lognormal latency."""
    cdf = norm.cdf((np.log(BOUNDS) - math.log(median)) / SIGMA)
    return np.diff(np.concatenate([[0.0], cdf, [1.0]]))


def intervals(
    rng: np.random.Generator, n: int, rps: float, wobble: float, surge: np.ndarray
) -> list[dict[float, float]]:
    """``n`` intervals of one version, cumulative by bucket bound (+Inf as ``math.inf``), each
    interval's median scaled by its ``surge`` and by this version's own wobble."""
    out = []
    for k in range(n):
        median = MEDIAN * surge[k] * math.exp(rng.normal(0.0, wobble)) if wobble > 0 else MEDIAN * surge[k]
        cum = np.cumsum(rng.multinomial(rng.poisson(rps * INTERVAL_S), bucket_probs(median)))
        row = {b: float(v) for b, v in zip(BOUNDS, cum[:-1], strict=True)}
        row[math.inf] = float(cum[-1])
        out.append(row)
    return out


def surges(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    return np.where(rng.random(n) < share, rng.uniform(*SURGE_RANGE, n), 1.0)


def spikes(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    """One version's own spikes, drawn only when there are any, so that the cells without them
    draw the same numbers as before the axis existed."""
    return surges(rng, n, share) if share > 0 else np.ones(n)


def run(rng: np.random.Generator, rps: float, wobble: float, surge_share: float, spike_share: float) -> bool:
    """One healthy deploy: True when the check rolled it back within the bake (end look included)."""
    check = HistogramCheck(CONFIG, 0.01, POLLS)
    window = surges(rng, HISTORY, surge_share) * spikes(rng, HISTORY, spike_share)
    history = intervals(rng, HISTORY, rps, wobble, window)
    check.set_reference(history[::-1])  # newest first, as the Watch hands it over
    shared = surges(rng, POLLS, surge_share)
    canary = intervals(rng, POLLS, rps, wobble, shared * spikes(rng, POLLS, spike_share))
    baseline = intervals(rng, POLLS, rps, wobble, shared * spikes(rng, POLLS, spike_share))
    return rolled_back(check, zip(canary, baseline, strict=True))


def main(argv: list[str] | None = None) -> int:
    return grid_command(
        argv,
        script="latency_noise.py",
        doc=__doc__,
        runs=1000,
        axes=[
            Axis("rps", "50,200", "requests per second per version", 5),
            Axis("wobble", "0,0.1,0.2", "per-version log-sd of the latency scale", 8),
            Axis("surges", "0,0.1", "share of intervals with a shared x2-x4 surge", 8),
            Axis("spikes", "0", "share of each version's intervals with an x2-x4 spike of its own", 8),
        ],
        describe=f"one histogram check, alpha 0.01, {POLLS} polls of {INTERVAL_S} s, {HISTORY} intervals "
        "before the deploy",
        run=run,
    )

if __name__ == "__main__":
    raise SystemExit(main())
