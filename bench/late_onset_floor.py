"""How fast any rule that does not know *when* a regression starts can be: the floor under the
engine's delay on a late-onset family, against the oracle that knows the onset.

    .venv/bin/python bench/late_onset_floor.py [--family late-x1.5] [--healthy 4000] [--regressed 500]

bench/decisions' oracle is Wald's SPRT of the true effect *from the true onset*: before the onset
its log-likelihood ratio is zero by construction. A rule that must watch the whole bake for a change
that may start at any poll pays for not knowing that poll, however well it knows the rest. This
command measures the price on the family's own recordings with two change detectors that know the
effect, both arms' traffic and the dispersion exactly as the oracle does, and only not the onset:

- Shiryaev-Roberts, R_t = (1 + R_{t-1}) * LR_t, at its anytime-valid threshold N / alpha (the
  engine's late-onset detector has the same form, mixed over effects and at a share of alpha);
- Shiryaev-Roberts and CUSUM (max(0, C_{t-1}) + log LR_t) at thresholds *calibrated* on simulated
  healthy deploys of the family so that exactly alpha of them alarm within the bake: no valid rule
  can set its bar lower without knowing the truth, so this is as fast as an onset-blind rule gets.

It prints each rule's median delay and its ratio to the onset-knowing oracle's.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from numpy.typing import NDArray

from bench.baselines import _binom_llr, dispersion_factor, oracle, ratio_series
from bench.scenarios import FAMILIES, Scenario, generate

Array = NDArray[np.float64]


def known_effect_llr(s: Scenario) -> tuple[Array, Array]:
    """Poll times and per-poll log-likelihood ratios of the family's nominal effect against none,
    from the first poll (the oracle's, without its knowledge of the onset)."""
    times, bad_c, _, bad_b, _ = ratio_series(s)
    assert bad_b is not None, "two-sample ratio families only"
    lam_c, lam_b, rho = s.truth.lam_c, s.truth.lam_b, s.family.effect
    theta0 = lam_c / (lam_c + lam_b)
    theta1 = rho * lam_c / (rho * lam_c + lam_b)
    return times, _binom_llr(bad_c, bad_c + bad_b, theta1, theta0) / dispersion_factor(s, lam_b)


def detectors(llr: Array) -> tuple[Array, Array]:
    """Log Shiryaev-Roberts and CUSUM statistics after each poll."""
    log_sr, cusum = np.empty_like(llr), np.empty_like(llr)
    sr, c = -math.inf, 0.0
    for i, x in enumerate(llr):
        sr = float(np.logaddexp(sr, 0.0)) + x  # log((1 + R) * LR)
        c = max(0.0, c) + x
        log_sr[i], cusum[i] = sr, c
    return log_sr, cusum


def _delay(times: Array, statistic: Array, bar: float, onset: float) -> float | None:
    hit = np.flatnonzero(statistic >= bar)
    return max(0.0, float(times[hit[0]]) - onset) / 60 if hit.size else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="late-x1.5")
    parser.add_argument("--healthy", type=int, default=4000, help="healthy runs to calibrate on")
    parser.add_argument("--regressed", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--alpha", type=float, default=0.01)
    args = parser.parse_args(argv)
    f = FAMILIES[args.family]
    if f.kind != "ratio":
        parser.error(f"{f.name} is not a two-sample ratio family")

    highest_sr, highest_cusum = [], []
    for i in range(args.healthy):
        s = generate(f, regressed=False, index=i, seed=args.seed + 1000, before=False)
        log_sr, cusum = detectors(known_effect_llr(s)[1])
        highest_sr.append(log_sr.max())
        highest_cusum.append(cusum.max())
    valid_bar = math.log(f.polls / args.alpha)
    sr_bar = float(np.quantile(highest_sr, 1 - args.alpha))
    cusum_bar = float(np.quantile(highest_cusum, 1 - args.alpha))

    rules = ("oracle", "sr-valid", "sr-calibrated", "cusum-calibrated")
    delays: dict[str, list[float]] = {name: [] for name in rules}
    for i in range(args.regressed):
        s = generate(f, regressed=True, index=i, seed=args.seed, before=False)
        times, llr = known_effect_llr(s)
        log_sr, cusum = detectors(llr)
        onset = s.truth.onset
        decided = oracle(s, args.alpha)
        found = {
            "oracle": None if decided is None else max(0.0, decided - onset) / 60,
            "sr-valid": _delay(times, log_sr, valid_bar, onset),
            "sr-calibrated": _delay(times, log_sr, sr_bar, onset),
            "cusum-calibrated": _delay(times, cusum, cusum_bar, onset),
        }
        for name, d in found.items():
            if d is not None:
                delays[name].append(d)

    print(
        f"bench/late_onset_floor.py --family {f.name}: seed {args.seed}, {args.healthy} healthy runs to "
        f"calibrate, {args.regressed} regressed, alpha {args.alpha:g}"
    )
    bars = {"oracle": math.log(1 / args.alpha), "sr-valid": valid_bar, "sr-calibrated": sr_bar}
    bars["cusum-calibrated"] = cusum_bar
    base = float(np.median(delays["oracle"]))
    print(f"{'rule':<18}{'bar (nats)':>11}{'power':>8}{'median min':>12}{'/ oracle':>10}")
    for name, got in delays.items():
        median = float(np.median(got)) if got else math.nan
        power = len(got) / args.regressed
        print(f"{name:<18}{bars[name]:>11.2f}{power:>8.3f}{median:>12.2f}{median / base:>10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
