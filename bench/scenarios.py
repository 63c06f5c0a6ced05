"""Seeded scenario families for ``bench/decisions.py``: synthetic deploys as DESIGN §6 recordings.

A *family* is one kind of service and one kind of regression (traffic, error rate, burstiness, shared
shocks, when the regression starts, which check it shows in). Each family yields *healthy* runs (the
canary behaves exactly like the baseline) and *regressed* runs (its nominal effect); run ``i`` of a
family is a pure function of ``(seed, family name, healthy|regressed, i)``, so any subset of runs can
be regenerated on any worker in any order.

The model, per poll interval of ``interval_s`` seconds and per arm:

- requests ``n ~ Poisson(rps * interval_s)`` (with ``split``, the canary gets a changing share of
  twice ``rps``, as in a canary whose traffic weight steps up);
- bad requests ``Binomial(n, p * G * S * rho)``: ``G ~ Gamma(k, 1/k)`` an independent burst per arm
  and interval (overdispersion, ``dispersion = k``; none when 0), ``S`` a shock shared by both arms
  in the same interval (with probability ``shock_prob``, uniform in ``shock_range``), ``rho`` the
  regression's error-rate ratio on the canary (1 before ``onset``, ``effect`` after; the interval
  that contains the onset gets the time-weighted mix);
- latency (``kind == "latency"``): per-request lognormal latencies (median ``latency_median``,
  log-sd ``latency_sigma``) binned into Prometheus buckets :data:`BUCKETS`; a regression multiplies
  every latency by ``shift`` and/or makes a share ``tail`` of requests ``tail_factor`` times slower.
  The recording carries cumulative counts keyed by ``le``, as ``increase(..._bucket[30s])`` returns.

``compare: slo`` families (``kind == "slo"``) have no baseline arm; a healthy canary runs exactly at
the objective (the boundary of the null, the hardest case for false rollbacks) and a regressed one
at ``effect`` times it.

Recordings also carry replay's ``before`` arm (its documented extension of DESIGN §6: the window
before the deploy), unless ``generate(..., before=False)``; see :func:`_add_before`.

Alongside each recording, :class:`Truth` keeps what only the simulator knows (expected traffic per
interval and the nominal alternative), for the oracle in :mod:`bench.baselines`.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy.stats import norm

Kind = Literal["ratio", "slo", "latency"]

BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Finite bucket edges in seconds (Prometheus-style); ``+Inf`` follows."""
BUCKET_KEYS: tuple[str, ...] = ("0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf")
"""The ``le`` labels of :data:`BUCKETS` and ``+Inf``, as Prometheus writes them."""

DEPLOYMENT: dict[str, str] = {
    "service": "bench",
    "environment": "sim",
    "version": "v2",
    "baseline_version": "v1",
}
"""The recordings' ``deployment``; the engine configs match ``service: bench``."""


@dataclass(frozen=True)
class Family:
    """One scenario family. ``effect``/``shift``/``tail`` describe the regressed runs; healthy runs
    of the family use the same settings with no regression."""

    name: str
    kind: Kind
    rps: float
    """Requests per second per arm."""
    p: float
    """Base error rate of both arms (slo: the canary's healthy rate, equal to ``objective``)."""
    effect: float = 1.0
    """Error-rate ratio of a regressed canary (ratio and slo families)."""
    shift: float = 1.0
    """Latency multiplier of a regressed canary, whole distribution (latency families)."""
    tail: float = 0.0
    """Share of a regressed canary's requests made ``tail_factor`` times slower (latency families)."""
    tail_factor: float = 8.0
    bake_min: int = 30
    interval_s: int = 30
    dispersion: float = 0.0
    """Gamma shape k of the independent per-arm, per-interval error bursts (CV = 1/sqrt(k)); 0: none."""
    shock_prob: float = 0.0
    """Chance per interval of a shock that multiplies both arms' error rates alike."""
    shock_range: tuple[float, float] = (3.0, 10.0)
    spike_prob: float = 0.0
    """Chance per interval and arm of a spike that multiplies that arm's error rate alone (one
    version's pod restarting, a cold cache): independent between the arms."""
    spike_range: tuple[float, float] = (2.0, 6.0)
    onset_min: tuple[float, float] = (0.0, 0.0)
    """The regression starts at a uniform time in this range (minutes since the deploy)."""
    split: tuple[float, ...] = ()
    """Canary share of ``2 * rps`` requests, in equal steps over the bake (empty: equal arms)."""
    objective: float | None = None
    """slo families: the highest acceptable error ratio."""
    latency_median: float = 0.08
    latency_sigma: float = 0.7
    slow_edge: float = 0.25
    """The bucket edge an operator would watch with a plain test (the naive baseline)."""
    note: str = ""

    @property
    def polls(self) -> int:
        return round(self.bake_min * 60 / self.interval_s)

    @property
    def bake_s(self) -> float:
        return float(self.polls * self.interval_s)

    @property
    def checks(self) -> tuple[str, ...]:
        return ("errors", "latency") if self.kind == "latency" else ("errors",)

    @property
    def two_sample(self) -> bool:
        return self.kind != "slo"


@dataclass
class Truth:
    """What the simulator knows and a recording does not: per-interval expected requests of each
    arm, and the family's nominal alternative (also for healthy runs, which do not follow it)."""

    onset: float
    """Seconds since the deploy at which the (nominal) regression starts."""
    lam_c: NDArray[np.float64]
    lam_b: NDArray[np.float64]
    rho: NDArray[np.float64]
    """Nominal error-rate ratio of the canary per interval (1 before the onset)."""
    q_b: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    """latency: baseline bucket probabilities (non-cumulative, ``len(BUCKET_KEYS)``)."""
    q_c: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 0)))
    """latency: nominal canary bucket probabilities per interval."""
    shock: NDArray[np.float64] = field(default_factory=lambda: np.ones(0))
    """The shared shock's multiplier of both arms' error rates per interval (1 without one)."""
    spike_c: NDArray[np.float64] = field(default_factory=lambda: np.ones(0))
    spike_b: NDArray[np.float64] = field(default_factory=lambda: np.ones(0))
    """Each arm's own spike multiplier of its error rate per interval (1 without one)."""


@dataclass
class Scenario:
    family: Family
    regressed: bool
    index: int
    recording: dict[str, Any]
    truth: Truth

    @property
    def onset(self) -> float:
        return self.truth.onset


def _bucket_probs(median: float, sigma: float) -> NDArray[np.float64]:
    """Non-cumulative probabilities of the buckets for a lognormal latency."""
    edges = np.asarray(BUCKETS)
    cdf = norm.cdf((np.log(edges) - math.log(median)) / sigma)
    probs = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
    return np.clip(probs, 0.0, 1.0)


def latency_probs(f: Family, *, regressed: bool) -> NDArray[np.float64]:
    """Bucket probabilities of the healthy (baseline) or the fully regressed canary distribution."""
    if not regressed:
        return _bucket_probs(f.latency_median, f.latency_sigma)
    body = _bucket_probs(f.latency_median * f.shift, f.latency_sigma)
    if f.tail <= 0:
        return body
    slow = _bucket_probs(f.latency_median * f.shift * f.tail_factor, f.latency_sigma)
    return (1 - f.tail) * body + f.tail * slow


def _rng(seed: int, family: str, regressed: bool, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(family.encode()), int(regressed), index])


def generate(f: Family, *, regressed: bool, index: int, seed: int = 0, before: bool = True) -> Scenario:
    """Run ``index`` of family ``f``, healthy or regressed: deterministic in its arguments.

    ``before`` adds each check's ``before`` arm (see :func:`_add_before`); the other arms do not
    depend on it."""
    rng = _rng(seed, f.name, regressed, index)
    T, step = f.polls, float(f.interval_s)
    ends = step * np.arange(1, T + 1, dtype=np.float64)
    lo, hi = f.onset_min
    onset = 60.0 * (lo + (hi - lo) * rng.random()) if hi > lo else 60.0 * lo
    after = np.clip((ends - onset) / step, 0.0, 1.0)  # share of each interval after the onset
    if f.split:
        share = np.asarray(f.split)[np.minimum(len(f.split) - 1, np.arange(T) * len(f.split) // T)]
        lam_c, lam_b = 2 * f.rps * step * share, 2 * f.rps * step * (1 - share)
    else:
        lam_c = lam_b = np.full(T, f.rps * step)
    rho_nominal = 1.0 + (f.effect - 1.0) * after
    rho = rho_nominal if regressed else np.ones(T)

    n_c = rng.poisson(lam_c)
    n_b = rng.poisson(lam_b)
    if f.dispersion > 0:
        g_c = rng.gamma(f.dispersion, 1.0 / f.dispersion, T)
        g_b = rng.gamma(f.dispersion, 1.0 / f.dispersion, T)
    else:
        g_c = g_b = np.ones(T)
    shock = np.where(rng.random(T) < f.shock_prob, rng.uniform(*f.shock_range, T), 1.0)
    spike_c, spike_b = np.ones(T), np.ones(T)
    if f.spike_prob > 0:  # drawn only then, so that the other families' runs stay as they were
        spike_c, spike_b = (
            np.where(rng.random(T) < f.spike_prob, rng.uniform(*f.spike_range, T), 1.0) for _ in range(2)
        )
    err_rho = rho if f.kind != "latency" else np.ones(T)
    bad_c = rng.binomial(n_c, np.minimum(1.0, f.p * g_c * shock * spike_c * err_rho))
    bad_b = rng.binomial(n_b, np.minimum(1.0, f.p * g_b * shock * spike_b))

    checks: dict[str, Any] = {}
    errors: dict[str, Any] = {
        "canary": [
            [int(t), {"bad": int(b), "total": int(n)}] for t, b, n in zip(ends, bad_c, n_c, strict=True)
        ]
    }
    if f.two_sample:
        errors["baseline"] = [
            [int(t), {"bad": int(b), "total": int(n)}] for t, b, n in zip(ends, bad_b, n_b, strict=True)
        ]
    checks["errors"] = errors
    truth = Truth(
        onset=onset, lam_c=lam_c, lam_b=lam_b, rho=rho_nominal, shock=shock, spike_c=spike_c, spike_b=spike_b
    )

    if f.kind == "latency":
        q_b = latency_probs(f, regressed=False)
        q_reg = latency_probs(f, regressed=True)
        q_c_nominal = (1 - after)[:, None] * q_b[None, :] + after[:, None] * q_reg[None, :]
        q_c = q_c_nominal if regressed else np.broadcast_to(q_b, q_c_nominal.shape)
        # A multinomial draw per interval, with the interval's own request count.
        h_c = np.stack([rng.multinomial(n, q / q.sum()) for n, q in zip(n_c, q_c, strict=True)])
        h_b = rng.multinomial(n_b, q_b / q_b.sum())
        checks["latency"] = {
            "canary": _hist_points(ends, np.cumsum(h_c, axis=1)),
            "baseline": _hist_points(ends, np.cumsum(h_b, axis=1)),
        }
        truth.q_b, truth.q_c = q_b, q_c_nominal

    if before:
        _add_before(f, rng, checks)
    recording = {"deployment": dict(DEPLOYMENT), "checks": checks}
    return Scenario(family=f, regressed=regressed, index=index, recording=recording, truth=truth)


BEFORE_POLLS = 120
"""Intervals of data before the deploy (the default hour of 30 s polls: what the Watch asks for)."""


def _add_before(f: Family, rng: np.random.Generator, checks: dict[str, Any]) -> None:
    """The window before the deploy, as replay's ``before`` arm (its documented extension of DESIGN
    §6): what Prometheus would answer for the baseline version (the service's own history for slo)
    before the canary started. The engine estimates its dispersion factor from the ratio intervals
    and picks its histogram edges from the bucket counts; the other methods ignore it.

    ``BEFORE_POLLS`` per-interval points at times 0, -30, -60, ... drawn from the baseline's
    process: ratio counts (bursts, shocks and spikes included), and for latency families the bucket counts
    of the same requests' latencies."""
    step = float(f.interval_s)
    k = BEFORE_POLLS
    times = -step * np.arange(k, dtype=np.float64)
    n = rng.poisson(np.full(k, f.rps * step))
    g = rng.gamma(f.dispersion, 1.0 / f.dispersion, k) if f.dispersion > 0 else np.ones(k)
    shock = np.where(rng.random(k) < f.shock_prob, rng.uniform(*f.shock_range, k), 1.0)
    if f.spike_prob > 0:  # the baseline's own spikes: to one arm, a shock it alone had
        shock = shock * np.where(rng.random(k) < f.spike_prob, rng.uniform(*f.spike_range, k), 1.0)
    bad = rng.binomial(n, np.minimum(1.0, f.p * g * shock))
    checks["errors"]["before"] = [
        [int(t), {"bad": int(b), "total": int(m)}] for t, b, m in zip(times, bad, n, strict=True)
    ]
    if f.kind == "latency":
        q_b = latency_probs(f, regressed=False)
        counts = rng.multinomial(n, q_b / q_b.sum())
        checks["latency"]["before"] = _hist_points(times, np.cumsum(counts, axis=1))


def _hist_points(ends: NDArray[np.float64], cum: NDArray[np.int64]) -> list[list[Any]]:
    return [
        [int(t), {k: int(v) for k, v in zip(BUCKET_KEYS, row, strict=True)}]
        for t, row in zip(ends, cum, strict=True)
    ]


def healthy(f: Family) -> Family:
    """The family's settings without a regression (what healthy runs follow)."""
    return replace(f, effect=1.0, shift=1.0, tail=0.0)


def _families() -> dict[str, Family]:
    fams = [
        # Canary vs baseline error ratio, a traffic grid from 1 to 1000 req/s per arm.
        Family("r1-x2", "ratio", rps=1, p=0.02, effect=2, bake_min=60),
        Family("r1-x5", "ratio", rps=1, p=0.01, effect=5, bake_min=60),
        Family("r10-x1.5", "ratio", rps=10, p=0.01, effect=1.5),
        Family("r10-x2", "ratio", rps=10, p=0.005, effect=2, note="DESIGN §7's reference point"),
        Family("r100-x1.25", "ratio", rps=100, p=0.002, effect=1.25),
        Family("r100-x1.5", "ratio", rps=100, p=0.001, effect=1.5),
        Family("r1k-x1.25", "ratio", rps=1000, p=0.001, effect=1.25),
        Family("r1k-x5", "ratio", rps=1000, p=0.02, effect=5),
        # Real-world nuisances.
        Family("od-x2", "ratio", rps=100, p=0.01, effect=2, dispersion=4.0,
               note="independent error bursts per arm and interval, gamma k = 4 (CV 0.5)"),
        Family("od1-x2", "ratio", rps=100, p=0.01, effect=2, dispersion=1.0,
               note="the same with gamma k = 1 (CV 1): exponential bursts"),
        Family("shock-x1.5", "ratio", rps=100, p=0.01, effect=1.5, shock_prob=0.1,
               note="10 % of intervals: both arms' error rate x3-x10"),
        Family("shock-od-x2", "ratio", rps=100, p=0.01, effect=2, shock_prob=0.1, dispersion=4.0,
               note="both: shared shocks on top of per-arm bursts (which grow with the shock)"),
        Family("spike-x2", "ratio", rps=100, p=0.01, effect=2, spike_prob=0.05,
               note="5 % of intervals per arm: that arm's error rate alone x2-x6"),
        Family("twin-x1.5", "ratio", rps=100, p=0.01, effect=1.5, spike_prob=0.1, spike_range=(3.0, 10.0),
               note="shock-x1.5's window, but each arm alone: 10 % of its intervals x3-x10"),
        Family("late-x1.5", "ratio", rps=100, p=0.005, effect=1.5, onset_min=(10, 20), bake_min=60,
               note="the regression starts at minute 10-20"),
        Family("ramp-x2", "ratio", rps=100, p=0.005, effect=2, split=(0.1, 0.25, 0.5),
               note="canary share of 200 req/s steps 10 %, 25 %, 50 %"),
        # Latency histograms, with a healthy errors check beside them as a real policy would have.
        Family("lat-x1.1", "latency", rps=5, p=0.005, shift=1.1, note="every request 10 % slower"),
        Family("lat-x1.5", "latency", rps=1, p=0.005, shift=1.5, note="every request 50 % slower"),
        Family("tail-1%", "latency", rps=5, p=0.005, tail=0.01, tail_factor=8.0,
               note="1 % of requests 8x slower"),
        # compare: slo (one-sample): a healthy canary runs at the objective.
        Family("slo-x1.5", "slo", rps=10, p=0.01, effect=1.5, objective=0.01),
        Family("slo-x1.25", "slo", rps=1000, p=0.001, effect=1.25, objective=0.001),
        Family("slo-od-x2", "slo", rps=100, p=0.01, effect=2, objective=0.01, dispersion=4.0,
               note="gamma bursts, k = 4"),
    ]
    return {f.name: f for f in fams}


FAMILIES: dict[str, Family] = _families()
