"""The sign test by betting (watchdog.analysis.sign) and how a ratio check runs it beside the count
test after a heavy-tailed window."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from watchdog.analysis import RatioCheck, RatioCounts
from watchdog.analysis.sign import FRACTIONS, SPLIT_BAND, SignStream
from watchdog.config.models import CheckConfig
from watchdog.model import Verdict


def _config(**extra: object) -> CheckConfig:
    return CheckConfig.model_validate(
        {"name": "errors", "type": "ratio", "provider": "p", "bad": "b", "total": "t", **extra}
    )


def _spiky(rng: np.random.Generator, n: int, rps: float = 100, share: float = 0.1) -> list[RatioCounts]:
    """One version's intervals: errors at 1 %, x3-x10 on their own in a ``share`` of them."""
    spike = np.where(rng.random(n) < share, rng.uniform(3, 10, n), 1.0)
    total = rng.poisson(rps * 30, n)
    bad = rng.binomial(total, 0.01 * spike)
    return [RatioCounts(float(b), float(t)) for b, t in zip(bad, total, strict=True)]


def test_each_interval_bets_its_fractions_on_the_worse_side_at_even_odds() -> None:
    """log W per bettor is the sum of log(1 + f*s): s = +1 when the canary's rate is above, -1 when
    below; ties and lopsided splits bet nothing; `decrease` bets the other way."""
    up, down = SignStream(), SignStream("decrease")
    for stream in (up, down):
        stream.update(40, 3000, 30, 3000)  # canary above
        stream.update(20, 3000, 30, 3000)  # below
        stream.update(35, 3000, 30, 3000)  # above
        stream.update(30, 3000, 30, 3000)  # tie: nothing
        stream.update(90, 500, 30, 5500)  # a canary on 8 % of the traffic: nothing
    assert 0.5 + SPLIT_BAND < 5500 / 6000
    np.testing.assert_allclose(up.log_e, 2 * np.log1p(FRACTIONS) + np.log1p(-FRACTIONS))
    np.testing.assert_allclose(down.log_e, np.log1p(FRACTIONS) + 2 * np.log1p(-FRACTIONS))
    assert (up.worse, up.better) == (2, 1) and (down.worse, down.better) == (1, 2)
    assert up.log_e_value == pytest.approx(math.log(np.mean(np.exp(up.log_e))))
    restored = SignStream()
    restored.load_state(json.loads(json.dumps(up.to_state())))
    assert restored.log_e_value == up.log_e_value and (restored.worse, restored.better) == (2, 1)


def test_spikes_of_either_version_leave_the_sign_test_under_alpha() -> None:
    """Healthy deploys whose versions spike x3-x10 on their own in one interval of ten, and whose
    traffic is Poisson on each: crossing 1/alpha at any of 60 polls stays under alpha (Ville), and
    the count test's own worst case (a spike of the canary) moves the sign test one interval's
    bet only."""
    rng = np.random.default_rng(12)
    alpha, runs = 0.05, 1000
    alarms = 0
    for _ in range(runs):
        stream = SignStream()
        for c, b in zip(_spiky(rng, 60), _spiky(rng, 60), strict=True):
            stream.update(c.bad, c.total, b.bad, b.total)
            if stream.log_e_value >= math.log(1 / alpha):
                alarms += 1
                break
    assert stats.binomtest(alarms, runs, alpha, alternative="greater").pvalue > 0.001, alarms


def test_a_ratio_check_runs_the_sign_test_only_after_a_heavy_tailed_window() -> None:
    """A window with spikes of one version (spread far above 6) starts the sign test beside the count
    test; a plain or gamma-bursty one does not, nor does a two-sided check or one without a
    baseline. The check's e-value is the average of both; its state and report carry the test."""
    rng = np.random.default_rng(2)
    heavy = RatioCheck(_config(), 0.01, 60)
    heavy.set_reference(_spiky(rng, 120))
    assert heavy.sign is not None and heavy.reference is not None and heavy.reference["sign_test"] is True
    for check_config, window in (
        (_config(), _spiky(rng, 120, share=0.0)),
        (_config(direction="both"), _spiky(rng, 120)),
        (_config(compare="slo", objective=0.01), _spiky(rng, 120)),
    ):
        plain = RatioCheck(check_config, 0.01, 60)
        plain.set_reference(window)
        assert plain.sign is None
    for _ in range(5):
        heavy.observe(RatioCounts(45, 3000), RatioCounts(30, 3000))
    assert heavy.sign.worse == 5
    both = math.log((math.exp(heavy.stream.log_e_value) + math.exp(heavy.sign.log_e_value)) / 2)
    assert heavy.log_e_value == pytest.approx(both)
    stats_ = heavy.statistics()
    assert stats_["e_value"] == pytest.approx(math.exp(both)) and stats_["sign_test"]["worse"] == 5
    assert "errors higher on the canary in 5 of 5 intervals" in heavy.report().summary
    resumed = RatioCheck(_config(), 0.01, 60)
    resumed.load_state(json.loads(json.dumps(heavy.to_state())))
    assert resumed.sign is not None and resumed.log_e_value == pytest.approx(heavy.log_e_value)


def test_the_sign_test_catches_what_spikes_hide_from_the_count_test() -> None:
    """x1.5 on a service whose versions spike on their own (one interval in ten, x3-x10): the count
    test, which must take every big interval for a possible spike, decides almost none within the
    bake (bench/decisions' twin-x1.5: 15 of 500); with the sign test beside it, most are caught."""
    rng = np.random.default_rng(21)
    caught = 0
    runs = 40
    for _ in range(runs):
        check = RatioCheck(_config(), 0.01, 60)
        check.set_reference(_spiky(rng, 120))
        canary = [
            RatioCounts(float(rng.binomial(int(c.total), min(1.0, 1.5 * c.bad / c.total))), c.total)
            for c in _spiky(rng, 60)
        ]
        for c, b in zip(canary, _spiky(rng, 60), strict=True):
            check.observe(c, b)
            if check.verdict(final=False) is Verdict.FAIL:
                caught += 1
                break
    assert caught >= 0.8 * runs
