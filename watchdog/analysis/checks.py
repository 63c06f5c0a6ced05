"""One check's running analysis: numbers in, a verdict with its explanation out. No I/O.

A check splits its share ``a`` of the policy's alpha three ways (DESIGN §7, Guards):

- 75 % for the e-process from the deploy's start (threshold 1/(0.75a)): fast on regressions that
  are there from the first poll;
- 3 % for the late-onset e-detector (threshold N/(0.03a) for a bake of N polls): a leak that starts
  after twenty healthy minutes is not buried by them. Its bar is high whatever its share (N/a is
  the price of not knowing the onset), so a small share costs it little;
- 22 % for one fixed-horizon look at the end of the bake: it recovers most of the power a
  sequential test gives away on small effects (bench/decisions: at x1.5 on 10 req/s it lifts
  power from 0.88 to 0.91, where an oracle that knows the effect reaches 0.92).

The three events' probabilities add up (a union bound), so a healthy deploy is rolled back with
probability at most ``a`` by this check. Blindness (no data, nonsense numbers, too little traffic)
is recorded apart and never counts as evidence.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from scipy import special

from watchdog.analysis.eprocess import (
    CHI2_SPREAD,
    HEAVY_SPREAD,
    SPAN,
    CountStream,
    bake_span,
    high_share,
    prior_dispersion,
)
from watchdog.analysis.shift import SCALE_SPAN, ShiftStream, scale_dispersion, scale_span
from watchdog.analysis.sign import SignStream
from watchdog.config.models import CheckConfig
from watchdog.model import CheckReport, Verdict

SEQUENTIAL_SHARE, DETECTOR_SHARE, END_SHARE = 0.75, 0.03, 0.22
MIN_SPAN_INTERVALS = 10
"""Intervals before the deploy a ratio check needs before it fits its mixture's span to them."""
PASS_CONFIDENCE = 0.05
"""Error level of the confidence sequence behind the early pass: it passes a deploy that is in fact
worse than its tolerance with probability at most 5 %. Not part of alpha, which bounds false
rollbacks."""
_LOG2 = math.log(2.0)
REFERENCE_SHARE = 0.2
ASSUMED_PEARSON, ASSUMED_DOF = 10.0, 10.0
"""compare: before: the part of a check's alpha spent on the uncertainty of the reference window."""


@dataclass(frozen=True, slots=True)
class RatioCounts:
    """Bad and total events of one arm in one interval."""

    bad: float
    total: float

    def problem(self) -> str | None:
        """Why these numbers cannot be used, or None. Bad data is blindness, never evidence."""
        if not (math.isfinite(self.bad) and math.isfinite(self.total)):
            return "the provider returned NaN or infinity"
        if self.bad < 0 or self.total < 0:
            return "the provider returned a negative count (a counter reset the query missed?)"
        if self.bad > self.total * (1 + 1e-9) + 1e-9:
            return f"more bad events ({self.bad:g}) than events ({self.total:g})"
        return None


Buckets = dict[float, float]
"""Cumulative histogram counts of one interval, keyed by upper bound (``le``; +Inf as math.inf)."""


def bucket_problem(buckets: Buckets) -> str | None:
    values = [buckets[le] for le in sorted(buckets)]
    if not values:
        return "no buckets"
    if not all(math.isfinite(v) and v >= 0 for v in values):
        return "a bucket count is NaN, infinite or negative"
    if any(b < a - 1e-9 for a, b in itertools.pairwise(values)):
        return "bucket counts are not cumulative (a counter reset the query missed?)"
    if math.inf not in buckets:
        return "no +Inf bucket, so the total is unknown"
    return None


def _pct(bad: float, total: float) -> str:
    return f"{100 * bad / total:.2f} %" if total > 0 else "n/a"


def _count(x: float) -> str:
    return f"{x:,.0f}"


def _evidence(e: float) -> str:
    return f"{e:,.0f}" if e >= 10 else f"{e:.2f}"


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


class Check:
    """What every check type shares: budget, blindness bookkeeping, verdict, persistence."""

    kind: ClassVar[str] = ""

    def __init__(self, config: CheckConfig, alpha: float, total_polls: int) -> None:
        self.config = config
        self.total_polls = max(1, total_polls)
        self._set_alpha(alpha)
        self.polls = 0
        self.blind_polls = 0
        self.last_problem = ""
        self.failed_at_poll: int | None = None
        self.failed_by = ""
        self.passed_at_poll: int | None = None
        self.end_p: float | None = None
        self.queries: dict[str, str] = {}
        self.reference: dict[str, Any] | None = None

    def _set_alpha(self, alpha: float) -> None:
        self.alpha = alpha
        self.threshold = 1.0 / (SEQUENTIAL_SHARE * alpha)
        self.detector_threshold = self.total_polls / (DETECTOR_SHARE * alpha)
        self.end_alpha = END_SHARE * alpha
        self.log_threshold = math.log(self.threshold)
        self.log_detector_threshold = math.log(self.detector_threshold)

    # -- what the Watch calls ------------------------------------------------------------------------

    @property
    def needs_reference(self) -> bool:
        """Whether the Watch should fetch data from before the deploy (``compare: before``, or a
        histogram's edges) before the first poll."""
        return self.config.compare == "before" and self.reference is None

    def blind(self, reason: str, *, counted: bool = True) -> None:
        """Record a poll without usable data (no data, provider error) and why."""
        if counted:
            self.polls += 1
        self.blind_polls += 1
        self.last_problem = reason

    def finish(self) -> None:
        """The bake is over: the fixed-horizon look, once."""
        if self.failed_at_poll is None and self.end_p is None and self.has_enough_data:
            self.end_p = self.end_p_value()
            if self.end_p is not None and self.end_p <= self.end_alpha:
                self.failed_at_poll = self.polls
                self.failed_by = "end"

    def verdict(self, *, final: bool) -> Verdict:
        if self.failed_at_poll is not None:
            return Verdict.FAIL
        if self.passed_at_poll is not None:
            return Verdict.PASS
        if not final:
            return Verdict.PENDING
        return Verdict.PASS if self.has_enough_data else Verdict.INCONCLUSIVE

    # -- what each type provides ---------------------------------------------------------------------

    def observe(self, canary: Any, baseline: Any) -> None:
        """Feed one poll's numbers for both arms (baseline None when not compared with one)."""
        raise NotImplementedError

    def set_reference(self, reference: Any) -> None:
        """What the window before the deploy showed (None when it had no data)."""
        raise NotImplementedError

    def to_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    @property
    def has_enough_data(self) -> bool:
        raise NotImplementedError

    def end_p_value(self) -> float | None:
        raise NotImplementedError

    def report(self, *, final: bool = False) -> CheckReport:
        raise NotImplementedError

    def _note_failure(self, e_log: float, detector_log: float) -> None:
        if self.failed_at_poll is not None:
            return
        if e_log >= self.log_threshold:
            self.failed_at_poll, self.failed_by = self.polls, "sequential"
        elif detector_log >= self.log_detector_threshold:
            self.failed_at_poll, self.failed_by = self.polls, "late-onset detector"

    def _base_state(self) -> dict[str, Any]:
        return {
            "polls": self.polls,
            "blind_polls": self.blind_polls,
            "last_problem": self.last_problem,
            "failed_at_poll": self.failed_at_poll,
            "failed_by": self.failed_by,
            "passed_at_poll": self.passed_at_poll,
            "end_p": self.end_p,
            "reference": self.reference,
        }

    def _load_base(self, state: dict[str, Any]) -> None:
        self.polls = int(state.get("polls", 0))
        self.blind_polls = int(state.get("blind_polls", 0))
        self.last_problem = str(state.get("last_problem", ""))
        failed = state.get("failed_at_poll")
        self.failed_at_poll = int(failed) if failed is not None else None
        self.failed_by = str(state.get("failed_by", ""))
        passed = state.get("passed_at_poll")
        self.passed_at_poll = int(passed) if passed is not None else None
        end_p = state.get("end_p")
        self.end_p = float(end_p) if end_p is not None else None
        reference = state.get("reference")
        self.reference = dict(reference) if isinstance(reference, dict) else None

    def _blind_summary(self, numbers: str | None) -> str:
        why = self.last_problem or "too little traffic"
        summary = f"{self.config.name}: no verdict, {why} ({self.blind_polls} of {self.polls} polls blind)"
        return f"{summary}; {numbers}" if numbers else summary

    def _end_p_from_z(self, z: float) -> float:
        if self.config.direction == "both":
            return float(2 * special.ndtr(-abs(z)))
        return float(special.ndtr(-z))


def reference_objective(bad: float, total: float, alpha: float, direction: str) -> float | None:
    """``compare: before``: the reference window's rate, moved to the edge of its Clopper-Pearson
    interval at level ``alpha`` on the side that protects against false rollbacks (the upper bound
    when an increase is bad). Testing the canary against that bound keeps the false-rollback chance
    under this check's alpha plus ``alpha`` although the reference is itself only an estimate."""
    if total <= 0:
        return None
    if direction == "decrease":
        bound = float(special.betaincinv(bad, total - bad + 1, alpha)) if bad > 0 else 0.0
    else:
        bound = float(special.betaincinv(bad + 1, total - bad, 1 - alpha)) if bad < total else 1.0
    return min(max(bound, 1e-9), 1 - 1e-6)


def dispersion_sum(intervals: list[RatioCounts]) -> tuple[float, float]:
    """Pearson's X^2 of per-interval bad counts around their pooled rate, and its degrees of freedom:
    X^2 / dof estimates how much burstier the errors are than independent requests."""
    bad = sum(c.bad for c in intervals)
    total = sum(c.total for c in intervals)
    if len(intervals) < 2 or total <= 0 or not 0 < bad < total:
        return 0.0, 0.0
    rate = bad / total
    pearson = sum((c.bad - c.total * rate) ** 2 / (c.total * rate * (1 - rate)) for c in intervals)
    return float(pearson), float(len(intervals) - 1)


def dispersion_spread(intervals: list[RatioCounts]) -> float:
    """How heavy-tailed the per-interval Pearson residuals around the pooled rate are: their
    variance over their squared mean, less what a binomial's small counts add to it (a binomial
    residual's is 2 + (1 - 6pq) / npq, so a quiet service's 0, 1 or 2 errors are no heavy tail),
    and never below 2, the chi-square's.

    Gamma bursts keep it near 2 (2.6 in bench/decisions' od-x2); spikes of one version (x2-x6
    in one interval of twenty) raise it to 15-40, and then a few dozen intervals without a spike
    say little about the next one (see :func:`~watchdog.analysis.eprocess.effective_dof`)."""
    bad = sum(c.bad for c in intervals)
    total = sum(c.total for c in intervals)
    if len(intervals) < 10 or total <= 0 or not 0 < bad < total:
        return CHI2_SPREAD
    rate = bad / total
    bads = np.asarray([c.bad for c in intervals], dtype=float)
    totals = np.asarray([c.total for c in intervals], dtype=float)
    npq = totals * rate * (1 - rate)
    residuals = (bads - totals * rate) ** 2 / npq
    mean = float(residuals.mean())
    if mean <= 0:
        return CHI2_SPREAD
    binomial = float(np.mean((1 - 6 * rate * (1 - rate)) / npq))
    return CHI2_SPREAD + max(0.0, float(residuals.var(ddof=1)) / mean**2 - CHI2_SPREAD - binomial)


def _high_share(intervals: list[RatioCounts], typical: float | None) -> float | None:
    """:func:`~watchdog.analysis.eprocess.high_share` of a window's intervals, None without a
    typical rate."""
    if not typical:
        return None
    bad = np.asarray([c.bad for c in intervals], dtype=float)
    total = np.asarray([c.total for c in intervals], dtype=float)
    return high_share(bad, total, typical)


class RatioCheck(Check):
    """``type: ratio``: bad / total events, against the baseline, the window before, or the SLO."""

    kind = "ratio"

    def __init__(self, config: CheckConfig, alpha: float, total_polls: int) -> None:
        super().__init__(config, alpha, total_polls)
        self.alpha_reference = alpha * REFERENCE_SHARE
        if config.compare == "before":
            self._set_alpha(alpha * (1 - REFERENCE_SHARE))
        self.stream = self._new_stream()
        # Against a concurrent baseline after a heavy-tailed window: the sign test, weighed equally
        # with the count test (an average of e-processes is one; see watchdog.analysis.sign).
        self.sign: SignStream | None = None

    def _objective(self) -> float | None:
        if self.config.compare == "slo":
            return self.config.objective
        if self.config.compare == "before" and self.reference is not None:
            objective = self.reference.get("objective")
            return float(objective) if objective is not None else None
        return None

    def _new_stream(self) -> CountStream:
        span = (self.reference or {}).get("span")
        if isinstance(span, list) and len(span) == 2:
            low, high = float(span[0]), float(span[1])
            return CountStream(self.config.direction, self._objective(), span=(low, high))
        return CountStream(self.config.direction, self._objective())

    @property
    def two_sample(self) -> bool:
        return self.config.compare == "baseline"

    @property
    def needs_reference(self) -> bool:
        """Every ratio check looks before the deploy: its intervals give the dispersion factor
        before the test sees any canary data, and for ``compare: before`` the reference rate."""
        return self.reference is None

    def set_reference(self, intervals: list[RatioCounts] | None) -> None:
        """Per-interval counts from before the deploy (the baseline version's, or the service's);
        None or empty when there were none."""
        usable = [c for c in intervals or [] if c.problem() is None and c.total > 0]
        bad = float(sum(c.bad for c in usable))
        total = float(sum(c.total for c in usable))
        pearson, dof = dispersion_sum(usable)
        spread = dispersion_spread(usable)
        self.reference = {
            "intervals": len(usable),
            "bad": bad,
            "total": total,
            "objective": None,
            "dispersion": max(1.0, pearson / dof) if dof else None,
        }
        rebuild = False
        if self.config.compare == "before" and total > 0:
            self.reference["objective"] = reference_objective(
                bad, total, self.alpha_reference, self.config.direction
            )
            rebuild = True
        span = self._bake_span(bad, total, len(usable), pearson, dof, spread)
        if span != SPAN:
            self.reference["span"] = list(span)
            rebuild = True
        if rebuild:  # the objective or the span changed: the stream has seen no interval yet
            self.stream = self._new_stream()
        per = len(usable) or 1  # no intervals: no dof either, and nothing is seeded
        # a typical interval's rate, which spikes and shocks do not move (a quiet service's median
        # interval may have no errors: then the pooled rate)
        typical = float(np.median([c.bad / c.total for c in usable])) if usable else None
        if not typical and total > 0:
            typical = bad / total
        self.stream.seed_dispersion(
            pearson,
            dof,
            events=bad / per,
            requests=total / per,
            spread=spread,
            typical_rate=typical,
            high=_high_share(usable, typical),
        )
        heavy = self.two_sample and self.config.direction != "both" and spread > HEAVY_SPREAD
        self.sign = SignStream(self.config.direction) if heavy else None
        self.reference["sign_test"] = heavy

    def _bake_span(
        self, bad: float, total: float, intervals: int, pearson: float, dof: float, spread: float
    ) -> tuple[float, float]:
        """The mixture's span for the traffic before the deploy (see :func:`bake_span`), at the
        dispersion factor the stream will be seeded with; only for ``direction: increase``, the
        side every error check bets on."""
        objective = self._objective()
        if self.config.direction != "increase" or intervals < MIN_SPAN_INTERVALS:
            return SPAN
        events = bad / intervals if objective is None else total / intervals * objective
        phi = prior_dispersion(pearson, dof, excess_only=True, spread=spread) if dof >= 1 else 1.0
        return bake_span(events / phi, self.total_polls, self.log_threshold, two_sample=objective is None)

    def observe(self, canary: RatioCounts, baseline: RatioCounts | None) -> None:
        """Feed one poll's counts. Counts that make no sense are recorded as blindness."""
        self.polls += 1
        problem = None
        # the common case first, in one comparison chain (NaN fails it too): sound counts
        if not (0 <= canary.bad <= canary.total < math.inf) or (
            baseline is not None and not (0 <= baseline.bad <= baseline.total < math.inf)
        ):
            problem = canary.problem() or (baseline.problem() if baseline is not None else None)
        if problem is None and self.two_sample and baseline is None:
            problem = "no baseline counts"
        if problem is None and self.config.compare == "before" and self._objective() is None:
            problem = "the window before the deploy had no data to compare with"
        if problem is not None:
            self.blind(problem, counted=False)
            return
        if self.two_sample:
            assert baseline is not None
            self.stream.update(canary.bad, canary.total, baseline.bad, baseline.total)
            if self.sign is not None:
                self.sign.update(canary.bad, canary.total, baseline.bad, baseline.total)
        else:
            self.stream.update(canary.bad, canary.total)
        if self.failed_at_poll is None:
            # with the sign test beside it, the count test alone must clear twice the bar
            share = _LOG2 if self.sign is not None else 0.0
            crossed = self.stream.crossed(self.log_threshold + share, self.log_detector_threshold)
            if not crossed and self.sign is not None and self.log_e_value >= self.log_threshold:
                crossed = "sequential"
            if crossed:
                self.failed_at_poll, self.failed_by = self.polls, crossed
        self._maybe_pass_early()

    @property
    def log_e_value(self) -> float:
        """The check's e-process: the count test's, or its average with the sign test's."""
        if self.sign is None:
            return self.stream.log_e_value
        return float(np.logaddexp(self.stream.log_e_value, self.sign.log_e_value)) - _LOG2

    def _maybe_pass_early(self) -> None:
        tolerance = self.config.tolerance
        if tolerance is None or self.failed_at_poll is not None or not self.has_enough_data:
            return
        low, high = self.stream.confidence_interval(PASS_CONFIDENCE)
        direction = self.config.direction
        inside_up = high <= 1 + tolerance
        inside_down = low >= 1 / (1 + tolerance)
        if (
            (direction == "increase" and inside_up)
            or (direction == "decrease" and inside_down)
            or (direction == "both" and inside_up and inside_down)
        ):
            self.passed_at_poll = self.polls

    @property
    def events(self) -> float:
        c = self.stream.counts
        return float(c[1] + c[3])

    @property
    def has_enough_data(self) -> bool:
        return self.stream.counts[1] > 0 and self.events >= max(1, self.config.min_requests)

    def end_p_value(self) -> float | None:
        if self.stream.score[1] <= 0:
            return None
        return self._end_p_from_z(self.stream.end_z())

    def statistics(self) -> dict[str, Any]:
        s = self.stream
        bad_c, total_c, bad_b, total_b = (float(x) for x in s.counts)
        low, high = s.confidence_interval(PASS_CONFIDENCE)
        stats_: dict[str, Any] = {
            "type": self.kind,
            "compare": self.config.compare,
            "canary": {"bad": bad_c, "total": total_c},
            "effect": s.effect_estimate(),
            "effect_interval": [low, high],
            "effect_interval_level": 1 - PASS_CONFIDENCE,
            "e_value": math.exp(min(700.0, self.log_e_value)),
            "threshold": self.threshold,
            "detector": _finite(math.exp(min(700.0, s.log_detector))),
            "detector_threshold": self.detector_threshold,
            "end_p_value": self.end_p,
            "end_alpha": self.end_alpha,
            "dispersion": s.phi,
            "alpha": self.alpha,
            "polls": self.polls,
            "blind_polls": self.blind_polls,
            "queries": self.queries,
        }
        if self.failed_at_poll is not None:
            stats_["failed_by"] = self.failed_by
        if self.two_sample:
            stats_["baseline"] = {"bad": bad_b, "total": total_b}
            if self.sign is not None:
                stats_["sign_test"] = {
                    "worse": self.sign.worse,
                    "better": self.sign.better,
                    "e_value": math.exp(min(700.0, self.sign.log_e_value)),
                }
        elif self.config.compare == "slo":
            stats_["objective"] = self.config.objective
        else:
            stats_["reference"] = self.reference
        return stats_

    def numbers(self) -> str:
        s = self.stream
        bad_c, total_c, bad_b, total_b = (float(x) for x in s.counts)
        name = self.config.name
        if self.two_sample:
            return (
                f"{name} {_pct(bad_c, total_c)} vs {_pct(bad_b, total_b)} "
                f"on {_count(total_c)} vs {_count(total_b)} requests"
            )
        if self.config.compare == "slo":
            return (
                f"{name} {_pct(bad_c, total_c)} against an objective of "
                f"{100 * (self.config.objective or 0):.2f} % on {_count(total_c)} requests"
            )
        ref = self.reference or {}
        before_bad, before_total = ref.get("bad", 0), ref.get("total", 0)
        return (
            f"{name} {_pct(bad_c, total_c)} on {_count(total_c)} requests vs "
            f"{_pct(before_bad, before_total)} before the deploy on {_count(before_total)}"
        )

    def report(self, *, final: bool = False) -> CheckReport:
        verdict = self.verdict(final=final)
        stats_ = self.statistics()
        numbers = self.numbers()
        if verdict is Verdict.INCONCLUSIVE or (self.polls and self.blind_polls == self.polls):
            summary = self._blind_summary(numbers if self.stream.counts[1] else None)
        else:
            summary = f"{numbers}; {self._evidence_words(stats_)}"
        return CheckReport(name=self.config.name, verdict=verdict, summary=summary, statistics=stats_)

    def _evidence_words(self, stats_: dict[str, Any]) -> str:
        low, high = stats_["effect_interval"]
        what = "error ratio" if self.two_sample else "ratio to the reference"
        effect = f"{what} x{stats_['effect']:.2f} (95 % {low:.2f}-{high:.2f})"
        if self.failed_by == "late-onset detector":
            detector, threshold = _evidence(stats_["detector"] or 0), _evidence(self.detector_threshold)
            words = f"late-onset evidence {detector} against {threshold}"
        elif self.failed_by == "end":
            words = f"end-of-bake test p = {self.end_p:.2g} below {self.end_alpha:.2g}"
        else:
            words = (
                f"evidence {_evidence(stats_['e_value'])} against a threshold of {_evidence(self.threshold)}"
            )
            sign = stats_.get("sign_test")
            if sign is not None and sign["worse"] + sign["better"]:
                betting = sign["worse"] + sign["better"]
                words += f" (errors higher on the canary in {sign['worse']} of {betting} intervals)"
        if self.passed_at_poll is not None:
            words += f"; passed early: at most {100 * (self.config.tolerance or 0):.0f} % worse"
        return f"{words}; {effect}"

    def to_state(self) -> dict[str, Any]:
        state = {**self._base_state(), "stream": self.stream.to_state()}
        if self.sign is not None:
            state["sign"] = self.sign.to_state()
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        self._load_base(state)
        self.stream = self._new_stream()
        self.stream.load_state(state.get("stream", {}))
        sign = state.get("sign")
        self.sign = None
        if isinstance(sign, dict):
            self.sign = SignStream(self.config.direction)
            self.sign.load_state(sign)


def edge_span(share: float) -> tuple[float, float]:
    """Where a histogram edge's mixture puts its weight, given the share of the baseline's requests
    slower than it. That share can grow at most to 1, so a ratio above 1/share is impossible there;
    and a slowdown moves a share near the median by less, relatively, than a share in the tail
    (10 % slower moves the median edge's share x1.13 and the p99's x1.5), so the span starts lower
    the larger the share. Betting on impossible or implausible ratios only slows the decision."""
    low = 1 + (SPAN[0] - 1) * (1 - min(max(share, 0.0), 1.0))
    high = min(SPAN[1], 1 / share) if share > 0 else SPAN[1]
    return low, max(high, low * 1.5)


class HistogramCheck(Check):
    """``type: histogram``: requests slower than K bucket edges, each edge a ratio test, and
    against a concurrent baseline a whole-distribution shift test (:mod:`watchdog.analysis.shift`).

    The edges are the configured ``edges`` (an SLO threshold), or the bucket bounds nearest the
    baseline's p50, p90, p99 and p99.9 in data the test does not use (the window before the deploy
    when the provider has it, else the first poll, which is then left out). The check's e-value is
    the average of the shift stream's and of the edges' average (an average of e-processes is
    one); the end-of-bake look spends its share over the edges (Bonferroni).
    """

    kind = "histogram"
    QUANTILES = (0.5, 0.9, 0.99, 0.999)

    def __init__(self, config: CheckConfig, alpha: float, total_polls: int) -> None:
        super().__init__(config, alpha, total_polls)
        self.alpha_reference = alpha * REFERENCE_SHARE
        if config.compare == "before":
            self._set_alpha(alpha * (1 - REFERENCE_SHARE))
        self.edges: list[float] = list(config.edges or [])
        self.shares: list[float | None] = [None for _ in self.edges]
        self.spans: list[tuple[float, float] | None] = [None for _ in self.edges]
        self.objectives: list[float | None] = [None for _ in self.edges]
        self.streams: list[CountStream] = [self._stream(None, None) for _ in self.edges]
        self.shift: ShiftStream | None = None

    def _stream(
        self, share: float | None, reference: float | None, span: tuple[float, float] | None = None
    ) -> CountStream:
        """A stream for an edge that ``share`` of the baseline's requests are slower than (None:
        not known yet). Only "slower is worse" bets by the share: a share can shrink to nothing.
        ``reference``: compare: before, the edge's share before the deploy at the bound of its
        interval that protects against false rollbacks. ``span``: the ratios fitted to the
        traffic before the deploy (see :meth:`_edge_spans`), else the share's own range."""
        compare = self.config.compare
        objective = self.config.objective if compare == "slo" else reference if compare == "before" else None
        if objective is None and share is not None and share > 0 and self.config.direction == "increase":
            stream = CountStream(self.config.direction, span=span or edge_span(share), limit=1 / share)
        else:
            stream = CountStream(self.config.direction, objective)
        # Until the window before the deploy gives each edge its measured dispersion (a provider
        # without history, edges taken from the first poll), the streams start from an assumed one
        # worth ten intervals of independent requests (at its 75 % bound, about 1.5): slow
        # requests burst less than errors do, and without any prior the first polls would only
        # teach the dispersion.
        stream.seed_dispersion(ASSUMED_PEARSON, ASSUMED_DOF, measured=False)
        return stream

    @property
    def needs_reference(self) -> bool:
        """A histogram looks before the deploy like a ratio does: for its edges (unless configured)
        and, from the per-interval history, each edge's dispersion factor."""
        return self.reference is None

    def set_reference(self, intervals: list[Buckets] | Buckets | None) -> None:
        """Per-interval bucket counts from before the deploy, newest first (a single ``Buckets`` is
        one interval). None or empty defers the edges to the first poll; fewer than two intervals
        leave the assumed dispersion in place."""
        if isinstance(intervals, dict):
            intervals = [intervals]
        usable = [b for b in intervals or [] if bucket_problem(b) is None and b[math.inf] > 0]
        # one bucket layout: the newest one, as the polls will see it
        usable = [b for b in usable if b.keys() == usable[0].keys()]
        self.reference = {"source": "before the deploy" if usable else "first poll", "intervals": len(usable)}
        if not usable:
            return
        summed = {le: sum(b[le] for b in usable) for le in usable[0]}
        if self.edges:  # configured: the history only measures them
            self._set_edges(self.edges, summed, len(usable))
        else:
            self._choose_edges(summed, len(usable))
        self.reference["edges"] = self.edges
        dispersion: list[float | None] = []
        slows = [[RatioCounts(b[math.inf] - b[e], b[math.inf]) for b in usable if e in b] for e in self.edges]
        # One version's latency spike (a GC pause, a cold cache) is one event at every edge, but
        # only the edges with few slow requests see it as the heavy tail it is: near the median it
        # moves the share of slow requests by tens of per cent, as ordinary bursts do, and there a
        # few spike-free intervals of the bake soon "showed" a factor near 1. So where any edge saw
        # a heavy tail, every edge is judged as having seen it (bench/latency_noise.py --spikes).
        heaviest = max((dispersion_spread(slow) for slow in slows), default=CHI2_SPREAD)
        spread = heaviest if heaviest > HEAVY_SPREAD else CHI2_SPREAD
        for slow, stream in zip(slows, self.streams, strict=True):
            pearson, dof = dispersion_sum(slow)
            if dof >= 1:
                typical = float(np.median([c.bad / c.total for c in slow])) or None
                stream.seed_dispersion(
                    pearson,
                    dof,
                    events=sum(c.bad for c in slow) / len(slow),
                    requests=sum(c.total for c in slow) / len(slow),
                    spread=spread,
                    typical_rate=typical,
                    high=_high_share(slow, typical),
                )
            dispersion.append(max(1.0, pearson / dof) if dof >= 1 else None)
        self.reference["spread"] = heaviest
        self.reference["dispersion"] = dispersion
        bounds = sorted(le for le in usable[0] if math.isfinite(le) and le > 0)
        pearson, dof = scale_dispersion(bounds, [[b[le] for le in bounds] + [b[math.inf]] for b in usable])
        whole = prior_dispersion(pearson, dof, excess_only=True) if dof >= 1 else None
        self.reference["shift_dispersion"] = whole
        self._start_shift(summed, len(usable))  # after the dispersion its span is fitted with

    def _choose_edges(self, buckets: Buckets, intervals: int) -> None:
        total = buckets[math.inf]
        if total <= 0:
            return
        bounds = sorted(le for le in buckets if math.isfinite(le))
        chosen: list[float] = []
        for q in self.QUANTILES:
            edge = next((le for le in bounds if buckets[le] >= q * total), None)
            if edge is not None and edge not in chosen:
                chosen.append(edge)
        self._set_edges(chosen, buckets, intervals)
        assert self.reference is not None
        self.reference["edges"] = chosen

    def _set_edges(self, edges: list[float], buckets: Buckets, intervals: int) -> None:
        """Fresh streams for ``edges``, each betting on the effects its baseline share allows, or
        (compare: before) testing against the share it had before the deploy; ``buckets`` are
        summed over ``intervals``."""
        total = buckets[math.inf]
        self.edges = list(edges)
        self.shares = [(total - buckets[e]) / total if e in buckets and total > 0 else None for e in edges]
        self.spans = self._edge_spans(buckets, intervals)
        self.objectives = [None for _ in edges]
        if self.config.compare == "before":
            share_alpha = self.alpha_reference / max(1, len(edges))
            self.objectives = [
                reference_objective(total - buckets[e], total, share_alpha, self.config.direction)
                if e in buckets
                else None
                for e in edges
            ]
        self.streams = [self._edge_stream(i) for i in range(len(self.edges))]

    def _edge_stream(self, i: int) -> CountStream:
        return self._stream(self.shares[i], self.objectives[i], self.spans[i])

    def _edge_spans(self, buckets: Buckets, intervals: int) -> list[tuple[float, float] | None]:
        """Per edge, its share's range of ratios (:func:`edge_span`) narrowed to what this bake
        can show and what a few polls decide anyway (:func:`~watchdog.analysis.eprocess.bake_span`),
        from the baseline's slow requests per interval before the deploy; None where there is
        nothing to fit to (no history, an edge without slow requests, not "slower against a
        concurrent baseline"). An edge's evidence is a 1/(2K) share of the check's (half the
        weight to the shift stream, the rest over K edges), so its bar is that much higher."""
        if (
            intervals < MIN_SPAN_INTERVALS
            or self.config.compare != "baseline"
            or self.config.direction != "increase"
        ):
            return [None for _ in self.edges]
        log_bar = self.log_threshold + math.log(2 * len(self.edges))
        spans: list[tuple[float, float] | None] = []
        for edge, share in zip(self.edges, self.shares, strict=True):
            if share is None or share <= 0:
                spans.append(None)
                continue
            base = edge_span(share)
            events = (buckets[math.inf] - buckets[edge]) / intervals
            low, high = bake_span(events, self.total_polls, log_bar, two_sample=True, span=base)
            high = min(high, base[1])
            spans.append((low, high) if high > low * 1.2 else None)
        return spans

    def observe(self, canary: Buckets, baseline: Buckets | None) -> None:
        self.polls += 1
        problem = bucket_problem(canary) or (bucket_problem(baseline) if baseline is not None else None)
        two_sample = self.config.compare == "baseline"
        if problem is None and two_sample and baseline is None:
            problem = "no baseline buckets"
        if problem is not None:
            self.blind(problem, counted=False)
            return
        if self.config.compare == "before" and (not self.edges or None in self.objectives):
            self.blind("the window before the deploy had no data to compare with", counted=False)
            return
        if not self.edges:
            source = baseline if baseline is not None else canary
            if self.reference is None:
                self.reference = {"source": "first poll"}
            self._choose_edges(source, 1)
            self._start_shift(source, 1)
            self.reference["edges"] = self.edges
            return  # that poll chose the edges; it does not also test them
        missing = [e for e in self.edges if e not in canary or (baseline is not None and e not in baseline)]
        if missing:
            self.blind(f"bucket layout changed: edge {missing[0]:g} is gone")
            self.polls -= 1
            return
        n_c = canary[math.inf]
        if two_sample:
            assert baseline is not None
            n_b = baseline[math.inf]
            phis = self._edge_phis(canary, baseline)  # once, for the shift stream and the edges
            if self.shift is not None:
                self.shift.update(canary, baseline, self._shift_phi(phis))
            for edge, stream, phi in zip(self.edges, self.streams, phis, strict=True):
                stream.update(n_c - canary[edge], n_c, n_b - baseline[edge], n_b, phi=phi)
            self._share_surges()
        else:
            for edge, stream in zip(self.edges, self.streams, strict=True):
                stream.update(n_c - canary[edge], n_c)
        self._note_failure(self.log_e_value, self.log_detector)

    @property
    def log_e_value(self) -> float:
        """Half the weight on the shift stream, half shared by the edges (a weighted average of
        e-processes is one); the edges alone without a shift stream."""
        return self._combined("log_e_value")

    @property
    def log_detector(self) -> float:
        """The late-onset detectors, weighed as :attr:`log_e_value` weighs the e-processes."""
        return self._combined("log_detector")

    def _combined(self, statistic: str) -> float:
        edges = self._log_mean([getattr(s, statistic) for s in self.streams])
        if self.shift is None:
            return edges
        return self._log_mean([getattr(self.shift, statistic), edges])

    def _edge_phis(self, canary: Buckets, baseline: Buckets) -> list[float]:
        """Each edge's factor for this poll (:meth:`CountStream.interval_phi`), before it learns;
        all infinite (the poll is learned from, not judged) where the hour before showed a heavy
        tail and, at some edge, the poll is a surge that edge would not judge, or one version's
        spike (:meth:`CountStream.spike_alone`).

        A poll is one event at every edge: one version's latencies x3 are a surge at the slow
        edges and barely more slow requests at the median's, where judging it undoes what the
        slow edges skip. And even once the bake has shown surges that hit both versions (a slow
        dependency, which the two-sample tests cancel: :attr:`CountStream.tail_spread`), a service
        can spike per version too, which one version's history cannot tell apart: with shared
        x2-x4 surges in one interval of ten and each version's own in one of thirty,
        bench/latency_noise.py rolled back 20 % of healthy deploys at 50 req/s (23 % at 200)
        judging those spikes (200 runs each), 0.6 % (0.4 %) not (1,000 each). The canary's bar
        rises with the effect seen so far, so that a real slowdown is skipped for a few polls at
        most, and only after a heavy-tailed hour: over 100 deploys each, x1.25 at 50 req/s with
        both kinds of spike was caught in 93 (87 judging every poll), x1.5 in 100 (100), in a
        median 25 polls (24)."""
        n_c, n_b = canary[math.inf], baseline[math.inf]
        phis, skip = [], False
        for stream, edge in zip(self.streams, self.edges, strict=True):
            bad_c, bad_b = n_c - canary[edge], n_b - baseline[edge]
            effect = stream.effect_estimate()
            phi = stream.interval_phi(bad_c + bad_b, n_c, n_b, effect)
            phis.append(phi)
            if stream.prior_phi is not None and stream.prior_spread > HEAVY_SPREAD:
                skip = skip or math.isinf(phi) or stream.spike_alone(bad_c, n_c, bad_b, n_b, effect)
        return [math.inf for _ in phis] if skip else phis

    def _share_surges(self) -> None:
        """Every edge counts the surges any edge saw (the most of each kind): a surge of slow
        requests that hit both versions is a slow dependency, which the two-sample tests cancel at
        every edge, yet the edges near the median, whose slow requests a surge barely multiplies,
        never see it as one (:attr:`~watchdog.analysis.eprocess.CountStream.tail_spread`)."""
        shared = max((s.surges[0] for s in self.streams), default=0)
        lopsided = max((s.surges[1] for s in self.streams), default=0)
        for stream in self.streams:
            stream.surges[:] = [shared, lopsided]

    def _shift_phi(self, phis: list[float] | None = None) -> float:
        """The dispersion the shift stream judges a poll with: the largest of the edges' (before
        they learn from the poll), among the edges whose dispersion the history measured. An edge
        the history had no slow request at has only the assumed, cautious one, which would slow
        the whole stream for want of data rather than because of any burst. ``phis``: the factors
        the edges judge this poll with (:meth:`CountStream.interval_phi`, grown where a surge of
        slow requests hit both versions); without them, their factors for an ordinary interval."""
        reference = self.reference or {}
        measured = reference.get("dispersion") or []
        whole = float(reference.get("shift_dispersion") or 1.0)
        factors = phis if phis is not None else [s.phi for s in self.streams]
        kept = [f for f, m in zip(factors, measured, strict=False) if m is not None] or factors
        return max(whole, *kept)

    def _start_shift(self, buckets: Buckets, intervals: int) -> None:
        """The shift stream, for "slower is worse" against a concurrent baseline, from the
        baseline's buckets summed over ``intervals`` before the deploy (or the first poll's).
        With MIN_SPAN_INTERVALS of history its multipliers are fitted to that traffic (see
        :func:`~watchdog.analysis.shift.scale_span`), at the dispersion it will be judged with
        and against its share of the threshold (half the check's evidence)."""
        if self.config.compare != "baseline" or self.config.direction != "increase":
            return
        bounds = sorted(le for le in buckets if math.isfinite(le) and le > 0)
        if not bounds or buckets[math.inf] <= 0:
            return
        cumulative = [buckets[b] for b in bounds] + [buckets[math.inf]]
        span = SCALE_SPAN
        if intervals >= MIN_SPAN_INTERVALS:
            deflated = [c / self._shift_phi() for c in cumulative] if self.streams else cumulative
            span = scale_span(bounds, deflated, intervals, self.total_polls, self.log_threshold + math.log(2))
        self.shift = ShiftStream(bounds, cumulative, span)

    @staticmethod
    def _log_mean(values: list[float]) -> float:
        if not values:
            return 0.0
        top = max(values)
        return top + math.log(sum(math.exp(v - top) for v in values) / len(values))

    @property
    def has_enough_data(self) -> bool:
        if not self.streams:
            return False
        c = self.streams[0].counts
        return bool(c[1] > 0 and c[1] + c[3] >= max(1, self.config.min_requests))

    def end_p_value(self) -> float | None:
        ps = [self._end_p_from_z(s.end_z()) for s in self.streams if s.score[1] > 0]
        return min(1.0, min(ps) * len(ps)) if ps else None

    def report(self, *, final: bool = False) -> CheckReport:
        verdict = self.verdict(final=final)
        two_sample = self.config.compare == "baseline"
        per_edge = []
        for edge, s, objective in zip(self.edges, self.streams, self.objectives, strict=True):
            bad_c, total_c, bad_b, total_b = (float(x) for x in s.counts)
            entry: dict[str, Any] = {
                "edge": edge,
                "canary": {"slower": bad_c, "total": total_c},
                "e_value": s.e_value,
                "effect": s.effect_estimate(),
                "effect_interval": list(s.confidence_interval(PASS_CONFIDENCE)),
            }
            if two_sample:
                entry["baseline"] = {"slower": bad_b, "total": total_b}
            elif objective is not None:
                entry["before_share"] = objective
            per_edge.append(entry)
        e = math.exp(min(700.0, self.log_e_value))
        stats_: dict[str, Any] = {
            "type": self.kind,
            "compare": self.config.compare,
            "edges": per_edge,
            "e_value": e,
            "threshold": self.threshold,
            "detector_threshold": self.detector_threshold,
            "end_p_value": self.end_p,
            "end_alpha": self.end_alpha,
            "alpha": self.alpha,
            "polls": self.polls,
            "blind_polls": self.blind_polls,
            "queries": self.queries,
            "reference": self.reference,
        }
        if self.shift is not None:
            stats_["shift"] = {
                "e_value": math.exp(min(700.0, self.shift.log_e_value)),
                "scale": self.shift.scale_estimate(),
            }
        if self.failed_at_poll is not None:
            stats_["failed_by"] = self.failed_by
        name = self.config.name
        worst = max(per_edge, key=lambda x: x["e_value"], default=None)
        numbers = None
        if worst is not None and worst["canary"]["total"]:
            c = worst["canary"]
            numbers = f"{name}: {_pct(c['slower'], c['total'])} of requests slower than {worst['edge']:g} s"
            if two_sample:
                b = worst["baseline"]
                numbers += f" vs {_pct(b['slower'], b['total'])}"
            elif "before_share" in worst:
                numbers += f" vs at most {100 * worst['before_share']:.2f} % before the deploy"
            numbers += f" on {_count(c['total'])} requests"
        if verdict is Verdict.INCONCLUSIVE or not numbers or (self.polls and self.blind_polls == self.polls):
            summary = self._blind_summary(numbers)
        elif self.failed_by == "end":
            summary = f"{numbers}; end-of-bake test p = {self.end_p:.2g} below {self.end_alpha:.2g}"
        else:
            summary = f"{numbers}; evidence {_evidence(e)} against a threshold of {_evidence(self.threshold)}"
            if self.shift is not None and self.shift.intervals and self.shift.log_e_value > 0:
                # the whole-distribution test found the canary slower: say by how much
                summary += f"; latencies about x{self.shift.scale_estimate():.2f} the baseline's"
        return CheckReport(name=name, verdict=verdict, summary=summary, statistics=stats_)

    def to_state(self) -> dict[str, Any]:
        return {
            **self._base_state(),
            "edges": self.edges,
            "shares": self.shares,
            "spans": [list(span) if span is not None else None for span in self.spans],
            "objectives": self.objectives,
            "streams": [s.to_state() for s in self.streams],
            "shift": self.shift.to_state() if self.shift is not None else None,
        }

    def _saved_spans(self, saved: Any) -> list[tuple[float, float] | None]:
        """Saved per-edge spans, or Nones (a state from before spans were fitted): those edges
        bet on their share's own range, as they did when the state was saved."""
        if not isinstance(saved, list) or len(saved) != len(self.edges):
            return [None] * len(self.edges)
        return [(float(v[0]), float(v[1])) if isinstance(v, list) and len(v) == 2 else None for v in saved]

    def _per_edge(self, saved: Any) -> list[float | None]:
        """A saved per-edge list (shares, objectives), or Nones where the state has none that fits."""
        if not isinstance(saved, list) or len(saved) != len(self.edges):
            return [None] * len(self.edges)
        return [float(v) if v is not None else None for v in saved]

    def load_state(self, state: dict[str, Any]) -> None:
        self._load_base(state)
        self.edges = [float(e) for e in state.get("edges", self.edges)]
        # a state from before edges had shares or objectives has none of them
        self.shares = self._per_edge(state.get("shares"))
        self.objectives = self._per_edge(state.get("objectives"))
        self.spans = self._saved_spans(state.get("spans"))
        self.streams = [self._edge_stream(i) for i in range(len(self.edges))]
        shift = state.get("shift")
        self.shift = ShiftStream.from_state(shift) if isinstance(shift, dict) else None
        for stream, saved in zip(self.streams, state.get("streams", []), strict=False):
            stream.load_state(saved)


MIN_HISTORY_POLLS = 20
"""Values before the deploy a gauge needs before their autocorrelation is trusted as a floor."""


def history_autocorrelation(values: list[float]) -> float | None:
    """The lag-1 autocorrelation of a gauge's values before the deploy (consecutive polls), raised by
    (1 + 4r)/n, the first-order downward bias of the estimate for an AR(1) process whose mean is
    estimated too; None with fewer than MIN_HISTORY_POLLS values or no variation.

    A one-sample gauge test (against an objective or the mean before the deploy) reads the long-run
    variance of its block means from its own polls, and a bake is too short for that when the gauge
    drifts slowly: with r = 0.9 from one 30 s poll to the next, its own polls let 3.4 % of healthy
    deploys be rolled back at alpha = 1 %, and with this floor from the hour before 0.75 %
    (bench/gauge_noise.py, 2,000 runs each)."""
    x = np.asarray(values, dtype=float)
    if x.size < MIN_HISTORY_POLLS or not np.ptp(x) > 0:  # (a flat gauge's mean leaves rounding noise)
        return None
    r = _lag_one(x - x.mean())
    return r + (1 + 4 * max(r, 0.0)) / x.size


def _lag_one(centred: NDArray[np.float64]) -> float:
    """The lag-1 autocorrelation of a series already centred on its mean (with some spread)."""
    return float(np.dot(centred[:-1], centred[1:]) / np.dot(centred, centred))


class GaugeCheck(Check):
    """``type: gauge``: a number per poll (CPU, memory, queue depth).

    Sequential (default): the per-poll differences (canary minus baseline, minus the mean before the
    deploy, or minus the objective) are averaged over blocks of a few minutes against
    autocorrelation, and the block means feed a normal-mixture mSPRT (Johari et al.) whose variance
    is estimated from earlier blocks only. ``test: mann-whitney``: a Kayenta-style rank test of
    canary against baseline values, judged once at the end of the bake.
    """

    kind = "gauge"
    MIN_BLOCKS = 4

    def __init__(self, config: CheckConfig, alpha: float, total_polls: int, interval: float) -> None:
        super().__init__(config, alpha, total_polls)
        self.block_size = max(1, round(config.block / interval))
        self.pending: list[float] = []
        self.blocks: list[float] = []
        self.canary_values: list[float] = []
        self.baseline_values: list[float] = []
        self.log_e = 0.0

    @property
    def needs_reference(self) -> bool:
        """``compare: before`` for its mean; ``compare: slo`` for how the gauge drifts (see
        :func:`history_autocorrelation`). Against a concurrent baseline the history of one version
        would mislead: what both versions share (load following traffic) drifts slowly but cancels
        in their difference."""
        return self.reference is None and self.config.compare in ("before", "slo")

    def set_reference(self, values: list[float] | None) -> None:
        """The gauge's values at the poll times before the deploy, newest first."""
        clean = [v for v in values or [] if math.isfinite(v)]
        self.reference = {
            "mean": float(np.mean(clean)) if clean else None,
            "n": len(clean),
            "autocorrelation": history_autocorrelation(clean),
        }

    def _target(self, baseline: float | None) -> float | None:
        compare = self.config.compare
        if compare == "baseline":
            return baseline
        if compare == "slo":
            return self.config.objective
        return None if self.reference is None else self.reference.get("mean")

    def observe(self, canary: float, baseline: float | None) -> None:
        self.polls += 1
        target = self._target(baseline)
        if not math.isfinite(canary) or (baseline is not None and not math.isfinite(baseline)):
            self.blind("the provider returned NaN or infinity", counted=False)
            return
        if target is None:
            self.blind("nothing to compare with (no baseline value or reference)", counted=False)
            return
        self.canary_values.append(canary)
        if baseline is not None:
            self.baseline_values.append(baseline)
        if self.config.test == "mann-whitney":
            return
        sign = -1.0 if self.config.direction == "decrease" else 1.0
        self.pending.append(sign * (canary - target))
        if len(self.pending) < self.block_size:
            return
        block = float(np.mean(self.pending))
        self.pending = []
        if len(self.blocks) >= self.MIN_BLOCKS - 1:
            self.log_e = self._log_msprt([*self.blocks, block], variance=self._variance_bound())
        self.blocks.append(block)
        self._note_failure(self.log_e, -math.inf)

    def _long_run_variance(self) -> float:
        """The variance of a block mean, for blocks that are not independent.

        Two estimates, and the larger wins: the block means' own sample variance (it sees slow
        drifts), and one built from the polls inside the completed blocks, which are several times
        as many: their variance and lag-1 autocorrelation r, fitted as an AR(1), give the long-run
        variance of a block mean, var * (1 + r) / (1 - r) / b for blocks of ``b`` polls. The
        poll-level fit is what keeps correlated noise (r = 0.7 from poll to poll) near alpha:
        fifteen block means alone cannot see it. r is raised by 1/sqrt(n), the order of its
        downward bias, before use. A bake's polls still cannot see a drift that is slow against
        them (r = 0.9 from poll to poll: a time constant of 5 minutes, three or four independent
        values in a 30-minute bake), so a one-sample gauge also takes the autocorrelation of the
        hour before the deploy as a floor (see :func:`history_autocorrelation`)."""
        blocks = np.asarray(self.blocks)
        variance = float(np.var(blocks, ddof=1))
        b = self.block_size
        polls = self._poll_differences()[: len(blocks) * b]
        if polls.size < 8:
            return variance
        centred = polls - polls.mean()
        spread = float(np.dot(centred, centred))
        if spread <= 0:
            return variance
        r = _lag_one(centred) + 1 / math.sqrt(polls.size)
        before = (self.reference or {}).get("autocorrelation") if self.config.compare != "baseline" else None
        if before is not None:  # a bake's few polls cannot see a slow drift; the hour before can
            r = max(r, float(before))
        r = min(max(r, 0.0), 0.95)
        return max(variance, spread / (polls.size - 1) * (1 + r) / (1 - r) / b)

    def _poll_differences(self) -> NDArray[np.float64]:
        """Each poll's canary minus its target, signed so that positive is worse (what the blocks
        average)."""
        canary = np.asarray(self.canary_values, dtype=float)
        if self.config.compare == "baseline":
            other = np.asarray(self.baseline_values[: canary.size], dtype=float)
        else:
            target = self._target(None)
            other = np.full(canary.size, target if target is not None else np.nan)
        sign = -1.0 if self.config.direction == "decrease" else 1.0
        return np.asarray(sign * (canary[: other.size] - other))

    def _variance_bound(self) -> float:
        """The long-run variance from earlier blocks only, raised to its 90 % upper confidence
        bound: a variance underestimated from a handful of blocks would turn noise into evidence."""
        dof = len(self.blocks) - 1
        return self._long_run_variance() * dof / float(2 * special.gammaincinv(dof / 2, 0.1))

    def _log_msprt(self, blocks: list[float], variance: float) -> float:
        """Normal-mixture SPRT for mean > 0 (mixing scale = one block standard deviation), counting
        only evidence in the bad direction unless ``direction: both``."""
        n = len(blocks)
        mean = float(np.mean(blocks))
        sigma2 = max(variance, 1e-12)
        tau2 = sigma2
        if self.config.direction != "both" and mean <= 0:
            return min(self.log_e, 0.0)
        return 0.5 * math.log(sigma2 / (sigma2 + n * tau2)) + (n * n * tau2 * mean * mean) / (
            2 * sigma2 * (sigma2 + n * tau2)
        )

    @property
    def has_enough_data(self) -> bool:
        if self.config.test == "mann-whitney":
            return len(self.canary_values) >= 3 and (
                self.config.compare != "baseline" or len(self.baseline_values) >= 3
            )
        return len(self.blocks) >= self.MIN_BLOCKS

    def finish(self) -> None:
        if self.config.test == "mann-whitney":
            if self.failed_at_poll is None and self.end_p is None and self.has_enough_data:
                self.end_p = self._mann_whitney()
                if self.end_p <= self.alpha:
                    self.failed_at_poll, self.failed_by = self.polls, "end"
            return
        super().finish()

    def _mann_whitney(self) -> float:
        alternative = {"increase": "greater", "decrease": "less", "both": "two-sided"}[self.config.direction]
        other = self.baseline_values
        if self.config.compare != "baseline":
            target = self._target(None)
            other = [target] * len(self.canary_values) if target is not None else []
        from scipy import stats  # only this migration test needs scipy.stats: 0.6 s of start-up

        return float(stats.mannwhitneyu(self.canary_values, other, alternative=alternative).pvalue)

    def end_p_value(self) -> float | None:
        if len(self.blocks) < 2:
            return None
        n = len(self.blocks)
        t = float(np.mean(self.blocks)) / math.sqrt(max(self._long_run_variance(), 1e-24) / n)
        if self.config.direction == "both":
            return float(2 * special.stdtr(n - 1, -abs(t)))
        return float(special.stdtr(n - 1, -t))

    def report(self, *, final: bool = False) -> CheckReport:
        verdict = self.verdict(final=final)
        name = self.config.name
        c_mean = float(np.mean(self.canary_values)) if self.canary_values else None
        target = (
            (float(np.mean(self.baseline_values)) if self.baseline_values else None)
            if (self.config.compare == "baseline")
            else self._target(None)
        )
        stats_: dict[str, Any] = {
            "type": self.kind,
            "compare": self.config.compare,
            "test": self.config.test,
            "canary_mean": c_mean,
            "target_mean": target,
            "blocks": len(self.blocks),
            "block_size": self.block_size,
            "e_value": math.exp(min(700.0, self.log_e)),
            "threshold": self.threshold,
            "end_p_value": self.end_p,
            "end_alpha": self.alpha if self.config.test == "mann-whitney" else self.end_alpha,
            "alpha": self.alpha,
            "polls": self.polls,
            "blind_polls": self.blind_polls,
            "queries": self.queries,
        }
        numbers = None
        if c_mean is not None and target is not None:
            numbers = f"{name} {c_mean:.4g} vs {target:.4g} over {len(self.canary_values)} polls"
        if verdict is Verdict.INCONCLUSIVE or numbers is None:
            summary = self._blind_summary(numbers)
        elif self.config.test == "mann-whitney":
            p = (
                "pending until the end of the bake"
                if self.end_p is None
                else f"Mann-Whitney p = {self.end_p:.2g}"
            )
            summary = f"{numbers}; {p} (alpha {self.alpha:.2g})"
        else:
            evidence = _evidence(stats_["e_value"])
            summary = f"{numbers}; evidence {evidence} against a threshold of {_evidence(self.threshold)}"
        return CheckReport(name=name, verdict=verdict, summary=summary, statistics=stats_)

    def to_state(self) -> dict[str, Any]:
        return {
            **self._base_state(),
            "pending": self.pending,
            "blocks": self.blocks,
            "canary_values": self.canary_values,
            "baseline_values": self.baseline_values,
            "log_e": self.log_e,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self._load_base(state)
        self.pending = [float(x) for x in state.get("pending", [])]
        self.blocks = [float(x) for x in state.get("blocks", [])]
        self.canary_values = [float(x) for x in state.get("canary_values", [])]
        self.baseline_values = [float(x) for x in state.get("baseline_values", [])]
        self.log_e = float(state.get("log_e", 0.0))
