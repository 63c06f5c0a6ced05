"""bench/gauge_noise's noise is what it says, and the command runs."""

from __future__ import annotations

import numpy as np
import pytest

from bench.gauge_noise import SD, ar1, main


def test_ar1_noise_has_the_asked_spread_and_correlation() -> None:
    x = ar1(np.random.default_rng(5), 0.8, 20_000)
    assert np.std(x) == pytest.approx(SD, rel=0.05)
    assert np.corrcoef(x[:-1], x[1:])[0, 1] == pytest.approx(0.8, abs=0.02)


def test_the_command_prints_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--runs", "20", "--correlations", "0.5"]) == 0
    out = capsys.readouterr().out
    for setting in ("baseline", "slo", "slo, no history"):
        assert f"0.5  {setting}" in out
