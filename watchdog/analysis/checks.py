"""One check's running analysis: numbers in, a verdict with its explanation out. No I/O.

A check keeps its e-process and the counts behind it, says "not enough data" apart from "worse",
and serialises itself so a resumed Watch continues with the evidence it had.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from watchdog.analysis.eprocess import OneSampleRatio, TwoSampleRatio
from watchdog.config.models import CheckConfig
from watchdog.model import CheckReport, Verdict


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


def _pct(bad: float, total: float) -> str:
    return f"{100 * bad / total:.2f} %" if total > 0 else "n/a"


def _count(x: float) -> str:
    return f"{x:,.0f}"


def _evidence(e: float) -> str:
    return f"{e:,.0f}" if e >= 10 else f"{e:.2f}"


class RatioCheck:
    """A ``type: ratio`` check with ``compare: baseline`` (two-sample) or ``compare: slo``."""

    def __init__(self, config: CheckConfig, alpha: float) -> None:
        self.config = config
        self.alpha = alpha
        self.threshold = 1.0 / alpha
        self.test: TwoSampleRatio | OneSampleRatio
        if config.compare == "slo":
            assert config.objective is not None  # the config model insists
            self.test = OneSampleRatio(config.objective, config.direction)
        else:
            self.test = TwoSampleRatio(config.direction)
        self.bad_c = self.total_c = self.bad_b = self.total_b = 0.0
        self.polls = 0
        self.blind_polls = 0
        self.last_problem = ""
        self.failed_at_poll: int | None = None
        self.queries: dict[str, str] = {}

    @property
    def two_sample(self) -> bool:
        return isinstance(self.test, TwoSampleRatio)

    def observe(self, canary: RatioCounts, baseline: RatioCounts | None) -> None:
        """Feed one poll's counts. Counts that make no sense are recorded as blindness."""
        self.polls += 1
        problem = canary.problem() or (baseline.problem() if baseline is not None else None)
        if problem is None and self.two_sample and baseline is None:
            problem = "no baseline counts"
        if problem is not None:
            self.blind(problem, counted=False)
            return
        if isinstance(self.test, TwoSampleRatio):
            assert baseline is not None
            self.test.update(canary.bad, canary.total, baseline.bad, baseline.total)
            self.bad_b += baseline.bad
            self.total_b += baseline.total
        else:
            self.test.update(canary.bad, canary.total)
        self.bad_c += canary.bad
        self.total_c += canary.total
        if self.failed_at_poll is None and self.test.e_value >= self.threshold:
            self.failed_at_poll = self.polls

    def blind(self, reason: str, *, counted: bool = True) -> None:
        """Record a poll without usable data (no data, provider error) and why."""
        if counted:
            self.polls += 1
        self.blind_polls += 1
        self.last_problem = reason

    @property
    def events(self) -> float:
        return self.total_c + self.total_b

    @property
    def has_enough_data(self) -> bool:
        return self.total_c > 0 and self.events >= max(1, self.config.min_requests)

    def verdict(self, *, final: bool) -> Verdict:
        if self.failed_at_poll is not None:
            return Verdict.FAIL
        if not final:
            return Verdict.PENDING
        return Verdict.PASS if self.has_enough_data else Verdict.INCONCLUSIVE

    def report(self, *, final: bool = False) -> CheckReport:
        verdict = self.verdict(final=final)
        e = self.test.e_value
        stats: dict[str, Any] = {
            "type": "ratio",
            "compare": self.config.compare,
            "canary": {"bad": self.bad_c, "total": self.total_c},
            "e_value": e,
            "threshold": self.threshold,
            "alpha": self.alpha,
            "polls": self.polls,
            "blind_polls": self.blind_polls,
            "queries": self.queries,
        }
        name = self.config.name
        if self.two_sample:
            stats["baseline"] = {"bad": self.bad_b, "total": self.total_b}
            rate_c = self.bad_c / self.total_c if self.total_c else None
            rate_b = self.bad_b / self.total_b if self.total_b else None
            stats["effect"] = (
                rate_c / rate_b if rate_c is not None and rate_b else None
            )  # observed ratio of bad rates
            numbers = (
                f"{name} {_pct(self.bad_c, self.total_c)} vs {_pct(self.bad_b, self.total_b)} "
                f"on {_count(self.total_c)} vs {_count(self.total_b)} requests"
            )
        else:
            stats["objective"] = self.config.objective
            numbers = (
                f"{name} {_pct(self.bad_c, self.total_c)} against an objective of "
                f"{100 * (self.config.objective or 0):.2f} % on {_count(self.total_c)} requests"
            )
        evidence = f"evidence {_evidence(e)} against a threshold of {_evidence(self.threshold)}"
        if verdict is Verdict.INCONCLUSIVE or (self.polls and self.blind_polls == self.polls):
            why = self.last_problem or "too little traffic"
            summary = f"{name}: no verdict, {why} ({self.blind_polls} of {self.polls} polls blind)"
            if self.total_c:
                summary += f"; {numbers}"
        else:
            summary = f"{numbers}; {evidence}"
        return CheckReport(name=name, verdict=verdict, summary=summary, statistics=stats)

    def to_state(self) -> dict[str, Any]:
        return {
            "test": self.test.to_state(),
            "counts": [self.bad_c, self.total_c, self.bad_b, self.total_b],
            "polls": self.polls,
            "blind_polls": self.blind_polls,
            "last_problem": self.last_problem,
            "failed_at_poll": self.failed_at_poll,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.test.load_state(state.get("test", {}))
        self.bad_c, self.total_c, self.bad_b, self.total_b = (
            float(x) for x in state.get("counts", [0, 0, 0, 0])
        )
        self.polls = int(state.get("polls", 0))
        self.blind_polls = int(state.get("blind_polls", 0))
        self.last_problem = str(state.get("last_problem", ""))
        failed = state.get("failed_at_poll")
        self.failed_at_poll = int(failed) if failed is not None else None
