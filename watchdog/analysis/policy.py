"""A policy's verdict from its checks' verdicts (DESIGN §7, "Budget" and "Verdicts").

The policy's ``alpha`` covers the whole bake and all its checks: each check gets ``alpha / k``, so by
a union bound the chance that any check of a healthy deploy ever crosses its threshold stays under
``alpha``. Blindness (no data, provider down, too little traffic) is kept apart from failure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from watchdog.analysis.checks import Check, GaugeCheck, HistogramCheck, RatioCheck
from watchdog.config.models import CheckConfig, PolicyConfig
from watchdog.model import CheckReport, Verdict


def total_polls(policy: PolicyConfig) -> int:
    return max(1, math.ceil(policy.bake / policy.interval - 1e-9))


def build_check(config: CheckConfig, alpha: float, policy: PolicyConfig) -> Check:
    polls = total_polls(policy)
    if config.type == "ratio":
        return RatioCheck(config, alpha, polls)
    if config.type == "histogram":
        return HistogramCheck(config, alpha, polls)
    return GaugeCheck(config, alpha, polls, policy.interval)


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a bake stands after a poll: ``verdict`` FAIL means roll back."""

    verdict: Verdict
    reason: str
    reports: tuple[CheckReport, ...]


_BAKING = Decision(Verdict.PENDING, "baking", ())


class PolicyAnalysis:
    """All checks of one deployment under one policy."""

    def __init__(self, policy: PolicyConfig) -> None:
        self.policy = policy
        share = policy.alpha / len(policy.checks)
        self.checks: dict[str, Check] = {c.name: build_check(c, share, policy) for c in policy.checks}
        self._all = list(self.checks.values())

    def decide(self, *, final: bool, explain: bool = True) -> Decision:
        """The verdict now; ``final`` when the bake window is over (runs the end-of-bake look).

        Reports (the numbers and sentences) are built only when a verdict is reached or when
        ``explain`` asks for them: replay decides millions of times and reads few of them."""
        if final:
            for check in self.checks.values():
                check.finish()
        elif not explain and all(c.failed_at_poll is None and c.passed_at_poll is None for c in self._all):
            return _BAKING  # the common case during a bake, without building anything
        verdicts = {name: check.verdict(final=final) for name, check in self.checks.items()}
        failing = [
            name
            for name, verdict in verdicts.items()
            if verdict is Verdict.FAIL and not self.checks[name].config.dry_run
        ]
        critical = [name for name in failing if self.checks[name].config.critical]
        if critical or len(failing) >= self.policy.failed_checks_to_rollback:
            reports = self.reports(final)
            shown = set(critical or failing)
            reason = "; ".join(r.summary for r in reports if r.name in shown)
            return Decision(Verdict.FAIL, reason, reports)
        if not final:
            if all(v is Verdict.PASS for v in verdicts.values()):
                passed = ", ".join(verdicts)
                return Decision(
                    Verdict.PASS,
                    f"passed early: every check is within its tolerance ({passed})",
                    self.reports(final),
                )
            return Decision(Verdict.PENDING, "baking", self.reports(final) if explain else ())
        reports = self.reports(final)
        blind = [r for r in reports if r.verdict is Verdict.INCONCLUSIVE]
        if blind:
            reason = "; ".join(r.summary for r in blind)
            if self.policy.on_no_data == "rollback":
                return Decision(Verdict.FAIL, f"blind at the end of the bake: {reason}", reports)
            if self.policy.on_no_data == "hold":
                return Decision(Verdict.INCONCLUSIVE, reason, reports)
        passed = ", ".join(r.name for r in reports if r.verdict is Verdict.PASS) or "none"
        return Decision(Verdict.PASS, f"bake ended without evidence of regression ({passed})", reports)

    def reports(self, final: bool) -> tuple[CheckReport, ...]:
        return tuple(c.report(final=final) for c in self.checks.values())

    def to_state(self) -> dict[str, Any]:
        return {name: check.to_state() for name, check in self.checks.items()}

    def load_state(self, state: dict[str, Any]) -> None:
        for name, check in self.checks.items():
            if isinstance(state.get(name), dict):
                check.load_state(state[name])
