"""bench/late_onset_floor's change detectors are the statistics they are named after."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.late_onset_floor import detectors, known_effect_llr, main
from bench.scenarios import FAMILIES, generate


def test_shiryaev_roberts_and_cusum_match_their_definitions_over_every_onset() -> None:
    """Shiryaev-Roberts is the sum over onsets k of the products of likelihood ratios since k, and
    CUSUM (clipped at zero before each step) the log of the largest of them, computed the long way."""
    llr = np.random.default_rng(3).normal(-0.2, 1.0, 40)
    log_sr, cusum = detectors(llr)
    for t in range(len(llr)):
        since = [float(llr[k : t + 1].sum()) for k in range(t + 1)]
        assert math.isclose(log_sr[t], float(np.logaddexp.reduce(since)), rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(cusum[t], max(since), abs_tol=1e-9)


def test_the_known_effect_llr_drifts_down_when_healthy_and_up_after_the_onset() -> None:
    """On healthy recordings the per-poll log-likelihood ratio of the true effect drifts down (its
    mean is minus a relative entropy), on regressed ones after the onset it drifts up."""
    f = FAMILIES["late-x1.5"]
    healthy = np.concatenate([known_effect_llr(generate(f, regressed=False, index=i))[1] for i in range(40)])
    assert healthy.mean() < 0
    after = []
    for i in range(40):
        r = generate(f, regressed=True, index=i)
        times, llr = known_effect_llr(r)
        after.append(llr[times > r.truth.onset])
    assert np.concatenate(after).mean() > 0


def test_the_command_prints_each_rule_against_the_oracle(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--healthy", "200", "--regressed", "40"]) == 0
    out = capsys.readouterr().out
    for rule in ("oracle", "sr-valid", "sr-calibrated", "cusum-calibrated"):
        assert rule in out
