"""bench/latency_noise's latencies are what it says, the command runs, and a histogram check keeps
versions whose latencies spike on their own under alpha."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bench.latency_noise import BOUNDS, MEDIAN, intervals, main, run, spikes, surges


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
    cells = ["--wobble", "0,0.1", "--surges", "0.1", "--spikes", "0,0.05"]
    assert main(["--runs", "5", "--rps", "20", *cells]) == 0
    out = capsys.readouterr().out
    assert "   20       0     0.1       0" in out and "   20     0.1     0.1    0.05" in out


def test_spikes_draw_nothing_when_there_are_none() -> None:
    """A cell without spikes draws the numbers it drew before the axis existed."""
    a, b = np.random.default_rng(4), np.random.default_rng(4)
    assert np.all(spikes(a, 50, 0.0) == 1.0)
    assert a.random() == b.random()
    assert 0.05 < np.mean(spikes(a, 2000, 0.1) > 1) < 0.15


def test_latency_spikes_of_either_version_keep_a_histogram_check_under_alpha() -> None:
    """100 seeded healthy deploys at 50 req/s, each version's latencies alone x2-x4 in one
    interval of ten, in the hour before too. Before every edge took the heaviest tail any edge
    saw, 27.5 % of such deploys were rolled back (55 of 200, bench/latency_noise.py --runs 200
    --wobble 0 --surges 0 --spikes 0.1 --rps 50): near the median a spike moves the share of
    slow requests no more than a burst does, and a few spike-free polls let the edge's own
    estimate take the factor down to about 1."""
    rng = np.random.default_rng(8)
    runs = 100
    alarms = sum(run(rng, 50, 0.0, 0.0, 0.1) for _ in range(runs))
    assert stats.binomtest(alarms, runs, 0.01, alternative="greater").pvalue > 0.001, alarms


def test_spikes_beside_shared_surges_keep_a_histogram_check_under_alpha() -> None:
    """100 seeded healthy deploys at 50 req/s with both: latencies of both versions x2-x4 in one
    interval of ten (a slow dependency) and each version's alone in one of thirty. Once the bake
    has shown the shared surges, judging one version's spikes rolled back 9 % of such deploys
    (18 of 200, bench/latency_noise.py --runs 200 --wobble 0 --surges 0.1 --spikes 0.03 --rps 50);
    a poll where one version alone has far more slow requests is now learned from, not judged."""
    rng = np.random.default_rng(9)
    runs = 100
    alarms = sum(run(rng, 50, 0.0, 0.1, 0.03) for _ in range(runs))
    assert stats.binomtest(alarms, runs, 0.01, alternative="greater").pvalue > 0.001, alarms
