"""Pure statistics and the verdict policy: numbers in, decisions out, no I/O (DESIGN §7)."""

from watchdog.analysis.checks import RatioCheck, RatioCounts
from watchdog.analysis.eprocess import OneSampleRatio, TwoSampleRatio
from watchdog.analysis.policy import Decision, PolicyAnalysis, unsupported

__all__ = [
    "Decision",
    "OneSampleRatio",
    "PolicyAnalysis",
    "RatioCheck",
    "RatioCounts",
    "TwoSampleRatio",
    "unsupported",
]
