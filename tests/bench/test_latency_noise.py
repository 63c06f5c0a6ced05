"""bench/latency_noise's latencies are what it says, and the command runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.latency_noise import BOUNDS, MEDIAN, intervals, main, surges


def _p50(rows: list[dict[float, float]]) -> np.ndarray:
    """Per interval, the share of requests at or under the median's bucket bound (0.1 s)."""
    return np.array([row[0.1] / row[math.inf] for row in rows])


def test_wobble_moves_each_interval_and_surges_slow_both_versions() -> None:
    rng = np.random.default_rng(3)
    flat = np.ones(400)
    steady = _p50(intervals(rng, 400, 200, 0.0, flat))
    wobbly = _p50(intervals(rng, 400, 200, 0.2, flat))
    assert np.std(wobbly) > 3 * np.std(steady)
    assert steady.mean() == pytest.approx(0.63, abs=0.02)  # lognormal: P(latency <= 0.1 s)
    shared = surges(rng, 400, 0.1)
    assert 0.05 < np.mean(shared > 1) < 0.15 and shared.max() <= 4.0
    slow = _p50(intervals(rng, 400, 200, 0.0, np.full(400, 3.0)))
    assert slow.mean() < 0.2
    assert BOUNDS[1] > MEDIAN


def test_the_command_prints_every_cell(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--runs", "5", "--rps", "20", "--wobble", "0,0.1", "--surges", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "   20       0     0.1" in out and "   20     0.1     0.1" in out
