"""bench/decisions' building blocks: the seeded scenario generator, its recordings and the baselines.

The figures themselves are measured by running ``bench/decisions.py``; these tests only pin that the
inputs are what they claim to be and that each baseline behaves like the rule it imitates."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace

import numpy as np
import pytest

from bench.baselines import (
    METHODS,
    applies,
    dispersion_factor,
    histogram_quantile,
    kayenta,
    naive,
    oracle,
    ratio_series,
    threshold,
)
from bench.decisions import Run, aggregate, clopper_pearson_upper, engine_config, table
from bench.scenarios import BUCKET_KEYS, FAMILIES, Family, Scenario, generate
from watchdog.config.loader import load_config_text
from watchdog.plugins import PluginRegistry
from watchdog.replay import replay_recording


def _family(**extra: object) -> Family:
    return replace(FAMILIES["r100-x1.25"], **extra)  # type: ignore[arg-type]


def test_a_run_is_a_pure_function_of_seed_family_kind_and_index() -> None:
    """The same (seed, family, healthy/regressed, index) gives the same recording whatever was
    generated before it; changing any of them changes the draws."""
    f = FAMILIES["od-x2"]
    first = generate(f, regressed=True, index=7, seed=3)
    for i in range(3):
        generate(f, regressed=True, index=i, seed=3)
    assert generate(f, regressed=True, index=7, seed=3).recording == first.recording
    assert generate(f, regressed=True, index=7, seed=4).recording != first.recording
    assert generate(f, regressed=True, index=8, seed=3).recording != first.recording
    assert generate(f, regressed=False, index=7, seed=3).recording != first.recording


def test_the_window_before_the_deploy_does_not_change_the_bake() -> None:
    """Leaving out the `before` arm leaves every other point as it was (it is drawn last)."""
    f = FAMILIES["tail-1%"]
    with_before = generate(f, regressed=True, index=2).recording
    without = generate(f, regressed=True, index=2, before=False).recording
    for check, arms in without["checks"].items():
        assert set(arms) == {"canary", "baseline"}
        assert {k: v for k, v in with_before["checks"][check].items() if k != "before"} == arms


@pytest.mark.parametrize("name", ["r10-x2", "lat-x1.1", "slo-x1.5"])
def test_recordings_follow_design_section_6(name: str) -> None:
    """deployment with service/version/baseline_version; per check and arm one [seconds, value]
    point per 30 s poll over the bake; ratio values {bad, total} with bad <= total; histogram values
    cumulative by `le` up to +Inf; no baseline for compare: slo; `before` points only at t <= 0."""
    f = FAMILIES[name]
    rec = generate(f, regressed=True, index=0).recording
    assert rec["deployment"]["service"] == "bench"
    assert rec["deployment"]["version"] != rec["deployment"]["baseline_version"]
    assert set(rec["checks"]) == set(f.checks)
    expected_arms = {"canary", "before"} | ({"baseline"} if f.two_sample else set())
    for check, arms in rec["checks"].items():
        assert set(arms) == expected_arms
        for arm, points in arms.items():
            times = [t for t, _ in points]
            if arm == "before":
                assert all(isinstance(t, int) and t <= 0 for t in times)
            else:
                assert times == [30 * k for k in range(1, f.polls + 1)]
            for _, value in points:
                if check == "errors":
                    assert set(value) == {"bad", "total"}
                    assert 0 <= value["bad"] <= value["total"]
                else:
                    assert list(value) == list(BUCKET_KEYS)
                    counts = list(value.values())
                    assert counts == sorted(counts) and all(isinstance(c, int) for c in counts)


def test_healthy_runs_have_equal_true_rates_and_regressed_runs_the_nominal_effect() -> None:
    """Pooled over runs, a healthy canary's error rate matches the baseline's and its latency
    buckets match too; a regressed canary's error rate is the family's effect times the baseline's."""
    f = _family(rps=100, p=0.01)

    def pooled(regressed: bool) -> float:
        bad = np.zeros(2)
        for i in range(30):
            errors = generate(f, regressed=regressed, index=i).recording["checks"]["errors"]
            for j, arm in enumerate(("canary", "baseline")):
                bad[j] += sum(v["bad"] for _, v in errors[arm]) / sum(v["total"] for _, v in errors[arm])
        return float(bad[0] / bad[1])

    assert pooled(False) == pytest.approx(1.0, abs=0.03)
    assert pooled(True) == pytest.approx(f.effect, rel=0.03)
    lat = FAMILIES["lat-x1.5"]
    share = np.zeros((2, len(BUCKET_KEYS)))
    for i in range(30):
        hist = generate(lat, regressed=False, index=i).recording["checks"]["latency"]
        for j, arm in enumerate(("canary", "baseline")):
            share[j] += np.sum([list(v.values()) for _, v in hist[arm]], axis=0)
    share /= share[:, -1:]
    assert np.allclose(share[0], share[1], atol=0.02)


def test_every_family_config_loads_and_replays() -> None:
    """Each family's engine config validates, and replay accepts the family's recordings."""
    registry = PluginRegistry.from_entry_points()
    kinds: dict[str, Family] = {}
    for f in FAMILIES.values():
        loaded = load_config_text(engine_config(f), f"{f.name}.yaml", registry, strict_secrets=False)
        assert loaded.config.policies[0].alpha == 0.01
        kinds.setdefault(f.kind, f)
    for f in kinds.values():
        loaded = load_config_text(engine_config(f), f"{f.name}.yaml", registry, strict_secrets=False)
        s = generate(f, regressed=True, index=0)
        result = asyncio.run(replay_recording(loaded, s.recording, f.name))
        assert result["verdict"] in ("rollback", "pass"), result


def test_the_oracle_rejects_a_5x_regression_within_a_few_polls() -> None:
    """Knowing the effect, Wald's SPRT needs only a few polls for x5 at 10 req/s and 0.5 %."""
    f = _family(rps=10, p=0.005, effect=5)
    decided = [oracle(generate(f, regressed=True, index=i), 0.01) for i in range(40)]
    assert all(d is not None for d in decided)
    assert float(np.median([d for d in decided if d is not None])) <= 5 * 30


def test_the_naive_test_repeated_at_60_polls_rejects_healthy_deploys_well_above_alpha() -> None:
    """A fixed-sample z-test at 1 % re-run at each of 60 polls: the peeking DESIGN §7 warns about."""
    f = _family(rps=10, p=0.01)
    fp = np.mean([naive(generate(f, regressed=False, index=i), 0.01) is not None for i in range(400)])
    assert fp >= 0.03


def test_kayenta_judges_once_at_the_end_of_the_bake() -> None:
    """Mann-Whitney at the end: a rollback is always decided at the bake's last poll."""
    f = FAMILIES["r10-x2"]
    decided = {kayenta(generate(f, regressed=True, index=i), 0.01) for i in range(20)}
    assert decided <= {f.bake_s, None} and f.bake_s in decided
    assert not applies("kayenta", "slo") and applies("naive", "slo")


def _broken_canary(f: Family) -> Scenario:
    s = generate(f, regressed=False, index=0)
    for _, value in s.recording["checks"]["errors"]["canary"]:
        value["bad"] = value["total"]
    return s


def test_the_threshold_rule_rolls_back_at_the_fifth_failed_poll() -> None:
    """Flagger's `threshold: 5`: a canary failing every poll is rolled back at the 5th (150 s)."""
    assert threshold(_broken_canary(FAMILIES["r10-x2"]), 0.01) == 150.0
    assert threshold(generate(FAMILIES["r1k-x1.25"], regressed=False, index=0), 0.01) is None


def test_every_method_rolls_back_a_canary_that_fails_every_request() -> None:
    """Sanity on a tiny, extreme input: all errors on the canary is caught by every baseline."""
    s = _broken_canary(FAMILIES["r10-x2"])
    for name, method in METHODS.items():
        assert method(s, 0.01) is not None, name


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    """Linear inside the bucket that holds the rank; the +Inf bucket gives the last finite edge."""
    counts = np.array([[0, 50, 50, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 10], [0, 0, 0, 0, 0, 0, 0]], float)
    q = histogram_quantile(0.5, counts)
    assert q[0] == pytest.approx(0.1)  # rank 50 is the top of the (0.05, 0.1] bucket
    assert q[1] == 2.5 and math.isnan(q[2])
    assert histogram_quantile(0.75, counts)[0] == pytest.approx(0.175)


def test_clopper_pearson_upper_bound() -> None:
    """0 of 2000 gives about 3/2000 (the rule of three); it grows with the count."""
    assert clopper_pearson_upper(0, 2000) == pytest.approx(0.0015, rel=0.01)
    assert clopper_pearson_upper(20, 2000) > 0.01 > clopper_pearson_upper(10, 2000)
    assert clopper_pearson_upper(5, 5) == 1.0


def test_aggregate_counts_false_rollbacks_power_and_delay_from_onset() -> None:
    """Healthy rollbacks are false rollbacks; a regressed run's delay is decision time minus onset."""
    f = FAMILIES["late-x1.5"]
    runs = [
        Run(f.name, False, 0, 600.0, {"engine": None, "oracle": 900.0}, "pass"),
        Run(f.name, False, 1, 600.0, {"engine": None, "oracle": None}, "pass"),
        Run(f.name, True, 0, 600.0, {"engine": 1200.0, "oracle": 900.0}, "rollback"),
        Run(f.name, True, 1, 600.0, {"engine": None, "oracle": 960.0}, "pass"),
    ]
    rows = aggregate(runs, [f])
    engine, ora = rows[(f.name, "engine")], rows[(f.name, "oracle")]
    assert (engine.fp, ora.fp) == (0.0, 0.5)
    assert (engine.power, ora.power) == (0.5, 1.0)
    assert engine.delay(0.5) == pytest.approx(10.0) and ora.delay(0.5) == pytest.approx(5.5)
    text = table(rows, [f], markdown=True)
    assert "| **late-x1.5** | engine |" in text and "1.82" in text  # 10 min / 5.5 min


def test_the_oracle_knows_each_shock_and_the_bursts_it_multiplies() -> None:
    """Bursts grow with the volume they burst on: in a shocked interval the oracle's dispersion
    factor is 1 + mu*S/k, from the shock the simulator drew (which both arms' errors show)."""
    f = FAMILIES["shock-od-x2"]
    s = generate(f, regressed=False, index=4)
    shock = s.truth.shock
    assert shock.shape == (f.polls,) and (shock > 1).any() and (shock == 1).any()
    factor = dispersion_factor(s, s.truth.lam_b)
    assert isinstance(factor, np.ndarray)
    np.testing.assert_allclose(factor, 1 + s.truth.lam_b * f.p * shock / f.dispersion)
    _, bad_c, _, bad_b, _ = ratio_series(s)
    assert bad_b is not None
    hit = shock > 1
    assert (bad_c + bad_b)[hit].mean() > 2 * (bad_c + bad_b)[~hit].mean()
    assert dispersion_factor(generate(FAMILIES["shock-x1.5"], regressed=False, index=4), s.truth.lam_b) == 1.0


def test_spikes_hit_one_arm_at_a_time_and_the_oracle_knows_each() -> None:
    """spike-x2: each arm's error rate alone jumps x2-x6 in 5 % of its intervals, independently of
    the other's, in the bake and in the window before it; the oracle's null share follows them."""
    f = FAMILIES["spike-x2"]
    s = generate(f, regressed=False, index=2)
    spike_c, spike_b = s.truth.spike_c, s.truth.spike_b
    assert spike_c.shape == spike_b.shape == (f.polls,)
    assert ((spike_c > 1) != (spike_b > 1)).any() and not ((spike_c > 1) & (spike_b > 1)).all()
    assert ((spike_c == 1) | ((spike_c >= 2) & (spike_c <= 6))).all()
    _, bad_c, _, bad_b, _ = ratio_series(s)
    assert bad_b is not None
    assert bad_c[spike_c > 1].mean() > 1.5 * bad_c[spike_c == 1].mean()
    before = np.array([v["bad"] for _, v in s.recording["checks"]["errors"]["before"]], dtype=float)
    assert before.max() > 2 * np.median(before)  # the window shows the baseline's own spikes
    # the oracle's null share follows each spike: told of none, it rolls healthy deploys back
    aware = blind = 0
    for i in range(100):
        run = generate(f, regressed=False, index=i)
        aware += oracle(run, 0.01) is not None
        told_none = replace(run.truth, spike_c=np.ones(f.polls), spike_b=np.ones(f.polls))
        blind += oracle(replace(run, truth=told_none), 0.01) is not None
    assert aware <= 3 and blind >= 15
    many = sum((generate(f, regressed=False, index=i).truth.spike_c > 1).mean() for i in range(40)) / 40
    assert 0.03 < many < 0.07
    assert generate(FAMILIES["shock-x1.5"], regressed=False, index=4).truth.spike_c.tolist() == [1.0] * 60
