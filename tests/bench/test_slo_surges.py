"""bench/slo_surges' traffic is what it says, and the command runs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from bench.slo_surges import INTERVAL_S, OBJECTIVE, intervals, main, run


def test_surges_multiply_the_traffic_and_bursts_spread_the_errors() -> None:
    rng = np.random.default_rng(4)
    steady = intervals(rng, 2000, 100, 4.0, 0.0)
    totals = np.array([c.total for c in steady])
    assert totals.mean() == pytest.approx(100 * INTERVAL_S, rel=0.01)
    rates = np.array([c.bad / c.total for c in steady])
    assert rates.mean() == pytest.approx(OBJECTIVE, rel=0.03)
    assert rates.std() == pytest.approx(OBJECTIVE / 2, rel=0.1)  # CV 1/sqrt(4), binomial noise small
    surging = np.array([c.total for c in intervals(rng, 2000, 100, 4.0, 0.1)])
    assert 0.05 < np.mean(surging > 2.5 * 100 * INTERVAL_S) < 0.15


def test_the_command_prints_every_cell(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--runs", "5", "--rps", "10", "--shape", "4", "--surges", "0,0.1"]) == 0
    out = capsys.readouterr().out
    assert "   10      4       0" in out and "   10      4     0.1" in out


def test_traffic_surges_on_bursty_errors_keep_an_slo_check_under_alpha() -> None:
    """300 seeded healthy deploys at the objective, gamma bursts (k = 4), traffic x3-x10 in one
    interval of ten: judged with the factor of ordinary intervals, 12 % were rolled back (120 of
    1,000 in the bench); with the factor grown with the traffic, the rate is compatible with alpha."""
    rng = np.random.default_rng(9)
    runs = 300
    alarms = sum(run(rng, 100, 4.0, 0.1) for _ in range(runs))
    assert stats.binomtest(alarms, runs, 0.01, alternative="greater").pvalue > 0.001, alarms
