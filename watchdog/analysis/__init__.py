"""Pure statistics and the verdict policy: numbers in, decisions out, no I/O (DESIGN §7)."""

from watchdog.analysis.checks import Buckets, Check, GaugeCheck, HistogramCheck, RatioCheck, RatioCounts
from watchdog.analysis.eprocess import CountStream
from watchdog.analysis.policy import Decision, PolicyAnalysis, build_check, total_polls

__all__ = [
    "Buckets",
    "Check",
    "CountStream",
    "Decision",
    "GaugeCheck",
    "HistogramCheck",
    "PolicyAnalysis",
    "RatioCheck",
    "RatioCounts",
    "build_check",
    "total_polls",
]
