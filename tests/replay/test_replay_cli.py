"""`watchdog replay --config FILE --recording FILE_OR_DIR [--json]` (DESIGN §5, §6): JSON lines in
input order on stdout, or a readable table; exit 0 whatever the verdicts, 2 for a config error."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.replay.conftest import DESIGN_EXAMPLE, config_text, healthy, ratio_recording
from watchdog.cli import EXIT_OK, EXIT_USAGE, main

REPO = Path(__file__).resolve().parents[2]
BAD = ratio_recording([(5, 1500), (750, 1500), (700, 1500)], [(5, 1500), (5, 1500), (6, 1500)])
# half an hour of the baseline before the deploy (replay's `before` arm), as Prometheus would have it:
# with that history the engine trusts the first polls and decides at the first failing one
BAD["checks"]["errors"]["before"] = [[-30 * k, {"bad": 5 + k % 3, "total": 1500}] for k in range(60)]


@pytest.fixture
def folder(recordings: Callable[[dict[str, Any]], Path]) -> Path:
    return recordings(
        {
            "2026-11-20-checkout.json": BAD,
            "2026-11-21-checkout.json": healthy(10),
            "2026-11-22-broken.json": "{not json",
            "2026-11-23-cart.json": ratio_recording([(1, 10)], [(1, 10)], service="cart"),
        }
    )


def test_json_lines_parse_and_come_in_input_order(write_config: Callable[..., Path], folder: Path) -> None:
    """As a real process: stdout holds exactly one JSON object per recording, in name order, and
    nothing else (logs go to stderr); a rollback verdict still exits 0."""
    config = write_config(bake="5m")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "watchdog",
            "replay",
            "--config",
            str(config),
            "--recording",
            str(folder),
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=60,
    )
    assert done.returncode == EXIT_OK, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["recording"] for r in lines] == [
        "2026-11-20-checkout.json",
        "2026-11-21-checkout.json",
        "2026-11-22-broken.json",
        "2026-11-23-cart.json",
    ]
    assert [r["verdict"] for r in lines] == ["rollback", "pass", "error", "error"]
    assert lines[0]["decided_at"] == 60 and lines[1]["decided_at"] == 300
    assert lines[0]["checks"][0]["verdict"] == "fail"
    assert "detail" in lines[2] and "no policy matches" in lines[3]["detail"]


def test_a_single_file_gives_a_single_line(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """--recording with one file (the DESIGN §6 example) prints one line named after the file."""
    assert (
        main(
            [
                "replay",
                "--config",
                str(write_config(bake="30m")),
                "--recording",
                str(DESIGN_EXAMPLE),
                "--json",
            ]
        )
        == 0
    )
    (line,) = capsys.readouterr().out.splitlines()
    result = json.loads(line)
    assert result["recording"] == "design-example.json" and result["verdict"] == "pass"


def test_without_json_a_readable_table(
    write_config: Callable[..., Path], folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The table has a header, one row per recording with verdict and decision time, and under it
    a row per check with its verdict and its report's summary sentence; errors show their detail."""
    assert main(["replay", "--config", str(write_config(bake="5m")), "--recording", str(folder)]) == EXIT_OK
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["RECORDING", "VERDICT", "DECIDED", "AT", "CHECKS"]
    assert lines[1].split() == ["2026-11-20-checkout.json", "rollback", "60s"]
    assert "errors: fail: errors" in lines[2] and "evidence" in lines[2]
    assert lines[3].split()[:3] == ["2026-11-21-checkout.json", "pass", "300s"]
    assert "2026-11-22-broken.json" in out and "not valid JSON" in out
    assert "no policy matches service='cart'" in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[1])


def test_a_config_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A broken config is a usage error: exit 2, the problem on stderr with file and line, nothing
    on stdout."""
    config = tmp_path / "bad.yaml"
    config.write_text("policies:\n  - name: p\n    bake: soon\n    checks: []\n")
    assert main(["replay", "--config", str(config), "--recording", str(DESIGN_EXAMPLE)]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{config}:3: policies[0].bake" in captured.err


def test_unset_secrets_do_not_stop_a_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replay contacts no provider, so a config whose secrets are unset (as on a laptop) still
    replays: the unset reference is a warning, not an error."""
    monkeypatch.delenv("RW_REPLAY_UNSET_TOKEN", raising=False)
    text = config_text(bake="30m")
    secret = 'url: "http://127.0.0.1:9090", bearer_token: "${RW_REPLAY_UNSET_TOKEN}"}'
    config = tmp_path / "watchdog.yaml"
    config.write_text(text.replace('url: "http://127.0.0.1:9090"}', secret, 1))
    assert "RW_REPLAY_UNSET_TOKEN" in config.read_text()
    assert main(["replay", "--config", str(config), "--recording", str(DESIGN_EXAMPLE), "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["verdict"] == "pass"


def test_an_empty_folder_prints_nothing_and_warns(
    write_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder without *.json recordings: no lines, a warning on stderr, exit 0."""
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["replay", "--config", str(write_config()), "--recording", str(empty), "--json"]) == EXIT_OK
    captured = capsys.readouterr()
    assert captured.out == "" and "no *.json recordings" in captured.err
