"""Replaying recordings (DESIGN §6): the matched policy's own Watch loop in virtual time, one result
per recording in the contract's shape, errors as lines that never stop the rest."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from tests.replay.conftest import DESIGN_EXAMPLE, GAUGE, HISTOGRAM, RATIO, healthy, ratio_recording
from watchdog.clock import VirtualClock
from watchdog.config.loader import LoadedConfig
from watchdog.model import DeployEvent, Deployment, State, Verdict
from watchdog.replay import RecordingProvider, _replay_policy, replay_paths, replay_recording, to_json_line
from watchdog.watch import Watch

Load = Callable[..., LoadedConfig]
CONTRACT_KEYS = {"recording", "verdict", "decided_at", "checks"}
CHECK_KEYS = {"name", "verdict", "decided_at", "statistics"}


def example() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DESIGN_EXAMPLE.read_text())
    return data


async def collect(loaded: LoadedConfig, path: Path) -> list[dict[str, Any]]:
    return [r async for r in replay_paths(loaded, path)]


async def test_design_example_replays_with_the_contract_shape(load: Load) -> None:
    """The recording printed in DESIGN §6, replayed against a policy with its ratio check, gives one
    object with the §6 fields; it ends with the recording (60 s, before the 30 m bake) and, with
    no evidence of regression, passes there."""
    results = await collect(load(bake="30m"), DESIGN_EXAMPLE)
    assert len(results) == 1
    (result,) = results
    assert set(result) >= CONTRACT_KEYS
    assert result["recording"] == "design-example.json"
    assert result["verdict"] == "pass"
    assert result["decided_at"] == 60 and isinstance(result["decided_at"], int)
    (check,) = result["checks"]
    assert set(check) >= CHECK_KEYS
    assert check["name"] == "errors" and check["verdict"] == "pass" and check["decided_at"] == 60
    stats = check["statistics"]
    assert stats["canary"] == {"bad": 5.0, "total": 2980.0}
    assert stats["baseline"] == {"bad": 6.0, "total": 3005.0}
    assert stats["queries"]["canary.bad"] == "recording: checks.errors.canary bad"
    assert json.loads(to_json_line(result)) == json.loads(json.dumps(result))


async def test_design_example_with_all_three_check_types_keeps_the_shape(load: Load) -> None:
    """With the example's histogram and gauge checks in the policy too, every check is reported in
    policy order with the §6 fields. Their recordings stop at 30 s while `errors` goes on to 60 s:
    the poll at 60 s has no data for them, which is blindness (never a rollback)."""
    loaded = load(bake="30m", checks=RATIO + HISTOGRAM + GAUGE)
    result = await replay_recording(loaded, example(), "example.json")
    assert result["verdict"] in {"pass", "inconclusive"}, result
    assert result["decided_at"] == 60
    assert [c["name"] for c in result["checks"]] == ["errors", "latency", "cpu"]
    for check in result["checks"]:
        assert set(check) >= CHECK_KEYS
        assert check["verdict"] != "fail"
    json.loads(to_json_line(result))


async def test_a_bad_canary_rolls_back_at_the_poll_where_it_breaks(load: Load) -> None:
    """Four calm polls (both arms alike), then the canary fails half its requests from 150 s on:
    the verdict is rollback, decided at 150 s, not before and not after, for the whole and for the
    check."""
    calm = [(5, 1500)] * 4
    recording = ratio_recording([*calm, *[(750, 1500)] * 6], [*calm, *[(5, 1500)] * 6])
    result = await replay_recording(load(bake="5m"), recording, "bad.json")
    assert result["verdict"] == "rollback"
    assert result["decided_at"] == 150
    (check,) = result["checks"]
    assert check["verdict"] == "fail" and check["decided_at"] == 150
    assert check["statistics"]["polls"] == 5


async def test_a_healthy_canary_passes_at_the_end_of_the_bake(load: Load) -> None:
    """Ten polls alike in both arms under a 5 m bake every 30 s: pass, decided at 300 s (the end of
    the bake window), every poll made."""
    result = await replay_recording(load(bake="5m"), healthy(12), "healthy.json")
    assert result["verdict"] == "pass"
    assert result["decided_at"] == 300
    assert result["checks"][0]["statistics"]["polls"] == 10


async def test_a_recording_shorter_than_the_bake_ends_the_watch_where_it_ends(load: Load) -> None:
    """Six polls of data under a 30 m bake: the Watch stops after the sixth poll and passes at
    180 s (the end of the recording) instead of going blind for the remaining 54 polls."""
    result = await replay_recording(load(bake="30m"), healthy(6), "short.json")
    assert result["verdict"] == "pass"
    assert result["decided_at"] == 180
    assert result["checks"][0]["statistics"]["polls"] == 6
    assert result["checks"][0]["statistics"]["blind_polls"] == 0


async def test_missing_and_null_points_are_polls_without_data(load: Load) -> None:
    """A poll with no point for the canary, and one whose value is null, are blind polls (no data),
    counted as such; with data on the other polls the bake still passes."""
    recording = healthy(10)
    canary = recording["checks"]["errors"]["canary"]
    del canary[2]  # no point at 90 s
    canary[4][1] = None  # null at 180 s (index shifted by the deletion)
    result = await replay_recording(load(bake="5m"), recording, "gaps.json")
    assert result["verdict"] == "pass"
    stats = result["checks"][0]["statistics"]
    assert stats["polls"] == 10 and stats["blind_polls"] == 2


async def test_the_first_matching_policy_applies(load: Load) -> None:
    """Policies are tried in config order against the recording's deployment: a staging-only
    policy first does not catch a prod recording, and labels in the recording can select a
    policy (here the 2 m bake for team payments, ending the replay at 120 s)."""
    extra = """\
  - name: staging
    match: {service: checkout, environment: staging}
    bake: 1m
    checks:
      - {name: errors, type: ratio, provider: prom, bad: a, total: b}
  - name: payments
    match: {team: payments}
    bake: 2m
    checks:
      - {name: errors, type: ratio, provider: prom, bad: a, total: b}
"""
    loaded = load(bake="5m", extra=extra)
    plain = await replay_recording(loaded, healthy(10), "plain.json")
    assert plain["decided_at"] == 300
    labelled = healthy(10)
    labelled["deployment"]["labels"] = {"team": "payments"}
    assert (await replay_recording(loaded, labelled, "labelled.json"))["decided_at"] == 120


async def test_no_matching_policy_is_an_error_line(load: Load) -> None:
    """A recording of a service no policy matches gives verdict error with a detail that names the
    service; it does not raise."""
    result = await replay_recording(load(), ratio_recording([(1, 10)], [(1, 10)], service="cart"), "c.json")
    assert result["verdict"] == "error"
    assert set(result) == {"recording", "verdict", "detail"}
    assert "no policy matches" in result["detail"] and "'cart'" in result["detail"]


async def test_malformed_recordings_are_error_lines_with_the_place_named(load: Load) -> None:
    """Each kind of malformed recording gives an error line whose detail points at the problem:
    missing fields, a check of the policy absent, a missing arm the comparison needs, a point that
    is not [seconds, value], a ratio point without counts, a duplicate time, and a recording that
    ends before the policy's first poll."""
    loaded = load()
    base = healthy(3)

    def variant(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        data = copy.deepcopy(base)
        change(data)
        return data

    cases: list[tuple[Any, str]] = [
        ([1, 2], "a JSON object"),
        ({"checks": {}}, "`deployment` is missing"),
        (variant(lambda d: d["deployment"].pop("version")), "`deployment.version`"),
        (variant(lambda d: d.pop("checks")), "`checks` is missing"),
        (variant(lambda d: d["checks"].pop("errors")), "no points for check 'errors'"),
        (variant(lambda d: d["checks"]["errors"].pop("baseline")), "no `baseline` points"),
        (variant(lambda d: d["checks"]["errors"]["canary"].append([120])), "checks.errors.canary[3]"),
        (variant(lambda d: d["checks"]["errors"]["canary"][0].__setitem__(1, {"bad": 1})), '"bad": n'),
        (variant(lambda d: d["checks"]["errors"]["canary"].append([30, None])), "a second point at 30"),
        (ratio_recording([(1, 10)], [(1, 10)], interval=10), "before the first poll"),
    ]
    for recording, expected in cases:
        result = await replay_recording(loaded, recording, "x.json")
        assert result["verdict"] == "error", (recording, result)
        assert expected in result["detail"], (expected, result["detail"])


async def test_a_folder_replays_its_json_files_in_name_order(
    load: Load, recordings: Callable[[dict[str, Any]], Path]
) -> None:
    """Every *.json of a folder, in name order (not creation order), each on its own: other files
    and sub-folders are ignored."""
    folder = recordings(
        {"b.json": healthy(10), "a.json": healthy(4), "10.json": healthy(2), "notes.txt": "not a recording"}
    )
    (folder / "sub.json").mkdir()
    results = await collect(load(), folder)
    assert [r["recording"] for r in results] == ["10.json", "a.json", "b.json"]
    assert [r["decided_at"] for r in results] == [60, 120, 300]


async def test_an_unreadable_recording_is_an_error_line_and_the_rest_still_run(
    load: Load, recordings: Callable[[dict[str, Any]], Path]
) -> None:
    """Broken JSON and an empty file each give an error line in their place; the recordings after
    them are replayed as usual."""
    folder = recordings(
        {"1.json": healthy(10), "2.json": '{"deployment": ', "3.json": "", "4.json": healthy(10)}
    )
    results = await collect(load(), folder)
    assert [r["verdict"] for r in results] == ["pass", "error", "error", "pass"]
    assert "not valid JSON" in results[1]["detail"]
    assert "not valid JSON" in results[2]["detail"]


async def test_a_missing_path_is_an_error_line(load: Load, tmp_path: Path) -> None:
    """A --recording path that does not exist cannot be read: one error line, no exception."""
    (result,) = await collect(load(), tmp_path / "nowhere.json")
    assert result["verdict"] == "error" and "cannot read" in result["detail"]


async def test_the_inline_path_for_immediate_providers_decides_exactly_as_the_gathered_one(
    load: Load,
) -> None:
    """The Watch calls an immediate provider inline (no tasks, no timeout), a performance path only:
    the same recording through the same provider marked not immediate (gathered tasks under
    wait_for) gives the same decision, reports, statistics and queries, poll by poll."""

    class Gathered(RecordingProvider):
        immediate = False

    calm = [(5, 1500)] * 3
    recording = ratio_recording(
        [*calm, (9, 1400), (0, 0), (60, 1500)], [*calm, (4, 1600), (3, 1500), (5, 1500)]
    )
    recording["checks"]["errors"]["canary"][4][1] = None  # no data at 150 s
    loaded = load(bake="5m")
    policy = _replay_policy(loaded.config.policies[0], 180.0)
    event = DeployEvent(
        source="replay", event_id="e", service="checkout", version="v2", baseline_version="v1"
    )
    outcomes = []
    for cls in (RecordingProvider, Gathered):
        provider = cls(recording["checks"], version="v2", baseline_version="v1")
        deployment = Deployment("d", event, policy.name, State.BAKING, Verdict.PENDING, 0.0, 0.0)
        polls: list[tuple[int, Any, Any]] = []

        async def on_poll(n: int, reports: Any, state: Any, polls: list[Any] = polls) -> None:
            polls.append((n, reports, state))

        watch = Watch(
            deployment, policy, {"prom": provider}, VirtualClock(0.0), asyncio.Event(), on_poll=on_poll
        )
        assert watch._inline is (cls is RecordingProvider)
        decision = await watch.run()
        outcomes.append((decision, polls, dict(watch.analysis.checks["errors"].queries)))
    assert outcomes[0] == outcomes[1]


async def test_replay_leaves_no_check_binding_in_the_logging_context(load: Load) -> None:
    """The inline path binds `check` to the logging context while it measures a check and undoes
    it afterwards, as a task's binding would end with the task: later log lines of the caller
    carry no stale check name."""
    structlog.contextvars.clear_contextvars()
    await replay_recording(load(), healthy(10), "r.json")
    assert "check" not in structlog.contextvars.get_contextvars()


async def test_provider_answers_from_the_recording_not_from_anything_else(load: Load) -> None:
    """Sanity of the wiring: the Watch's rendered tokens reach the recording's points (the check's
    counts are the recording's sums)."""
    recording = ratio_recording([(1, 100), (2, 200)], [(3, 300), (4, 400)])
    result = await replay_recording(load(bake="1m"), recording, "r.json")
    stats = result["checks"][0]["statistics"]
    assert stats["canary"] == {"bad": 3.0, "total": 300.0}
    assert stats["baseline"] == {"bad": 7.0, "total": 700.0}
