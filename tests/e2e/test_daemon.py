"""The daemon driven only over HTTP and its config file, as CD tools and operators drive it
(issue 2, "Done when")."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.e2e.conftest import OPERATOR, SECRET, VIEWER, deploy_body
from tests.support.daemon import eventually, post_event, wait_for_state

AUTH = {"Authorization": f"Bearer {VIEWER}"}


async def test_bad_canary_is_rolled_back_exactly_once_and_slack_is_told(stack_factory: Any) -> None:
    """10 % errors against 0.5 % (200 requests per poll each, 1 s polls): rolled back once within
    15 s, the hook gets the deployment with its idempotency key, Slack a message naming it."""
    s = await stack_factory(new_error_rate=0.10)
    started = time.monotonic()
    status, body = await post_event(s.session, s.base, deploy_body(), SECRET)
    assert status == 202, body
    deployment_id = body["deployment_id"]
    final = await wait_for_state(
        s.session, s.base, deployment_id, {"rolled_back", "rollback_failed"}, VIEWER, timeout=15
    )
    assert time.monotonic() - started < 15
    assert final["state"] == "rolled_back", final
    assert final["verdict"] == "fail"
    errors = final["checks"][0]
    assert errors["name"] == "errors" and errors["verdict"] == "fail"
    assert errors["statistics"]["e_value"] >= errors["statistics"]["threshold"]
    await asyncio.sleep(1.5)  # a second rollback, if there were one, would arrive by now
    rollbacks = [r for r in s.hook.requests if r.path == "/rollback"]
    assert len(rollbacks) == 1
    assert rollbacks[0].headers["Idempotency-Key"] == f"{deployment_id}:rollback"
    assert rollbacks[0].json()["id"] == deployment_id
    await eventually(lambda: s.slack.requests)
    assert len(s.slack.requests) == 1
    message = s.slack.requests[0].json()
    text = str(message)
    assert "checkout" in text and "v2" in text and "errors" in text
    assert [a["action"] for a in final["audit"]][-2:] == ["rollback.started", "rollback.succeeded"]


async def test_healthy_canary_passes_without_a_rollback_call(stack_factory: Any) -> None:
    """Same traffic, same error rate on both versions: the bake ends ``passed`` and the rollback
    hook is never called."""
    s = await stack_factory(new_error_rate=0.005, bake="6s")
    status, body = await post_event(s.session, s.base, deploy_body(), SECRET)
    assert status == 202
    final = await wait_for_state(
        s.session, s.base, body["deployment_id"], {"passed", "rolled_back", "inconclusive"}, VIEWER, 20
    )
    assert final["state"] == "passed", final
    assert final["verdict"] == "pass"
    assert s.hook.requests == []
    assert final["polls"] == 6
    async with s.session.get(f"{s.base}/v1/deployments/{final['id']}/verdict", headers=AUTH) as r:
        assert (await r.json())["verdict"] == "pass"


async def test_failed_rollback_ends_rollback_failed_and_is_notified(stack_factory: Any) -> None:
    """A hook that answers 403 is not retried: ``rollback_failed``, with the reason, and Slack is
    told loudly."""
    s = await stack_factory(new_error_rate=0.10, hook_responses=[(403, "forbidden: token expired")])
    status, body = await post_event(s.session, s.base, deploy_body(), SECRET)
    final = await wait_for_state(
        s.session, s.base, body["deployment_id"], {"rolled_back", "rollback_failed"}, VIEWER, 15
    )
    assert final["state"] == "rollback_failed"
    assert "403" in final["rollback"]["error"]
    assert len(s.hook.requests) == 1
    await eventually(lambda: s.slack.requests)
    assert "FAILED" in str(s.slack.requests[0].json())


async def test_webhook_intake_refuses_forged_malformed_and_duplicate_events(stack_factory: Any) -> None:
    """Forged or unsigned: 401. Malformed: 400/415/422 with a JSON error. Duplicate: 200 and the
    same id. Nothing bad is stored."""
    s = await stack_factory(new_error_rate=0.005, bake="60s")
    session, base = s.session, s.base
    status, body = await post_event(session, base, deploy_body("forged"), "not-the-secret")
    assert (status, body["error"]) == (401, "bad_signature")
    status, body = await post_event(session, base, deploy_body("unsigned"), None)
    assert status == 401 and "missing" in body["detail"]
    status, body = await post_event(session, base, deploy_body("stale"), SECRET, now=time.time() - 301)
    assert status == 401 and "300" in body["detail"]
    status, body = await post_event(session, base, b"{not json", SECRET)
    assert (status, body["error"]) == (400, "invalid_json")
    status, body = await post_event(session, base, {"id": "x", "service": "checkout"}, SECRET)
    assert status == 422 and "version" in body["detail"]
    status, body = await post_event(session, base, {**deploy_body("typo"), "baseline": "v1"}, SECRET)
    assert status == 422 and "baseline" in body["detail"]
    status, body = await post_event(
        session,
        base,
        deploy_body("form"),
        SECRET,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 415
    status, body = await post_event(session, base, b"[" * 100_000 + b"]" * 100_000, SECRET)
    assert status == 400
    status, body = await post_event(session, base, b'{"a": "' + b"x" * (1024 * 1024 + 1) + b'"}', SECRET)
    assert (status, body["error"]) == (413, "body_too_large")
    status, body = await post_event(session, base, deploy_body("nope"), SECRET, source="nope")
    assert status == 404 and body["error"] == "unknown_source"

    status, first = await post_event(session, base, deploy_body("real"), SECRET)
    assert status == 202
    status, again = await post_event(session, base, deploy_body("real"), SECRET)
    assert status == 200 and again["deployment_id"] == first["deployment_id"] and again["duplicate"]

    async with session.get(f"{base}/v1/deployments", headers=AUTH) as r:
        listing = await r.json()
    assert [d["event_id"] for d in listing["items"]] == ["real"]


async def test_api_reads_need_a_token(stack_factory: Any) -> None:
    """Reads need a viewer token (401 without, 401 with a wrong one); errors are JSON; filters
    are validated; health and metrics need none."""
    s = await stack_factory(new_error_rate=0.005)
    session, base = s.session, s.base
    async with session.get(f"{base}/v1/deployments") as r:
        assert r.status == 401 and (await r.json())["error"] == "unauthorized"
    async with session.get(f"{base}/v1/deployments", headers={"Authorization": "Bearer wrong"}) as r:
        assert r.status == 401
    async with session.get(f"{base}/v1/deployments", headers={"Authorization": f"Bearer {OPERATOR}"}) as r:
        assert r.status == 200
    async with session.get(f"{base}/v1/deployments?state=bogus", headers=AUTH) as r:
        assert r.status == 400 and "state" in (await r.json())["detail"]
    async with session.get(f"{base}/v1/deployments?limit=abc", headers=AUTH) as r:
        assert r.status == 400
    async with session.get(f"{base}/v1/deployments/does-not-exist", headers=AUTH) as r:
        assert r.status == 404 and (await r.json())["error"] == "not_found"
    async with session.delete(f"{base}/v1/deployments") as r:
        assert r.status == 405 and "error" in await r.json()
    async with session.get(f"{base}/healthz") as r:
        assert r.status == 200
    async with session.get(f"{base}/metrics") as r:
        text = await r.text()
    assert "watchdog_deployments" in text
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert names and all(n.startswith("watchdog_") for n in names)


async def test_sigterm_stops_the_daemon_within_ten_seconds_mid_bake(stack_factory: Any) -> None:
    """SIGTERM while a watch is baking: exit 0 well within 10 s; the deployment stays ``baking``
    in the store so the next start resumes it."""
    s = await stack_factory(new_error_rate=0.005, bake="60s")
    status, body = await post_event(s.session, s.base, deploy_body(), SECRET)
    assert status == 202
    await asyncio.sleep(2.5)
    code, seconds = await asyncio.to_thread(s.daemon.terminate)
    assert code == 0, s.daemon.output()
    assert seconds < 10
    assert '"daemon.stopped"' in s.daemon.output()


async def test_crash_mid_bake_resumes_with_its_evidence(stack_factory: Any) -> None:
    """SIGKILL mid-bake, then a restart: the same deployment goes on baking from the polls it had
    (not from zero) and reaches its verdict; no second deployment appears."""
    s = await stack_factory(new_error_rate=0.005, bake="8s")
    status, body = await post_event(s.session, s.base, deploy_body(), SECRET)
    deployment_id = body["deployment_id"]
    await asyncio.sleep(3.5)
    s.daemon.kill()
    s.daemon.start()
    await s.daemon.wait_ready(s.base)
    final = await wait_for_state(
        s.session, s.base, deployment_id, {"passed", "inconclusive", "rolled_back"}, VIEWER, 20
    )
    assert final["state"] == "passed", final
    assert final["polls"] == 8
    async with s.session.get(f"{s.base}/v1/deployments", headers=AUTH) as r:
        assert len((await r.json())["items"]) == 1
    assert s.hook.requests == []
