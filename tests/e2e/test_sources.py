"""CD tools' webhooks end to end (issue 4, "Done when"): the daemon as a subprocess configured by a
real file, driven only over HTTP with each tool's real payloads, headers and signatures.

The apps expose flat counters, so every watch is blind and keeps baking (the staging policy ends
its short bake as passed, to give later deploys a baseline); what is checked here is intake:
which requests create deployments, which are duplicates, ignored or refused, and that
``GET /v1/deployments`` lists exactly the deployments valid events created."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import yaml

from tests.support.daemon import DaemonProcess, Recorder, free_port, wait_for_state
from tests.support.sources import (
    OLD_SECRET,
    SECRET,
    argocd_body,
    bearer,
    codedeploy_event,
    credentials,
    echo_pipeline_complete,
    fixture_bytes,
    flagger_event,
    github_headers,
    github_status,
    gitlab_headers,
    gitlab_hook,
    post_raw,
    spinnaker_stage_body,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
VIEWER = "viewer-token-for-sources-e2e"
SOURCES = ("generic", "github", "gitlab", "flagger", "argocd", "codedeploy", "spinnaker")
GITHUB_SHA = "f95f852bd8fca8fcc58a9a2d6c842781e32a215e"

CONFIG = """\
server:
  listen: 127.0.0.1:{port}
  webhook_secrets:
    generic: ["{old_secret}", "${{SOURCES_E2E_SECRET}}"]
    github: ${{SOURCES_E2E_SECRET}}
    gitlab: ${{SOURCES_E2E_SECRET}}
    flagger: ${{SOURCES_E2E_SECRET}}
    argocd: ${{SOURCES_E2E_SECRET}}
    codedeploy: ${{SOURCES_E2E_SECRET}}
    spinnaker: ${{SOURCES_E2E_SECRET}}
  api_tokens:
    - {{name: tests, token: "{viewer}", role: viewer}}
  shutdown_timeout: 3s
store:
  url: sqlite://{db}
logging:
  format: json
sources:
  gitlab:
    labels: {{tier: environment_tier}}
providers:
  apps: {{type: scrape, targets: ["{metrics}/metrics"]}}
policies:
  - name: staging
    match: {{environment: staging}}
    bake: 2s
    interval: 1s
    on_no_data: pass
    checks:
      - {{name: errors, type: ratio, provider: apps, bad: 'http_requests_total{{code="500"}}',
         total: http_requests_total, compare: slo, objective: 0.01}}
  - name: everything-else
    bake: 10m
    interval: 1s
    checks:
      - {{name: errors, type: ratio, provider: apps, bad: 'http_requests_total{{code="500"}}',
         total: http_requests_total, compare: slo, objective: 0.01}}
"""

METRICS = """\
# TYPE http_requests_total counter
http_requests_total{code="200"} 1000
http_requests_total{code="500"} 1
"""


@dataclass
class Daemon:
    base: str
    session: aiohttp.ClientSession
    process: DaemonProcess

    async def post(
        self, source: str, body: bytes | dict[str, Any], headers: dict[str, str] | None = None, **kw: Any
    ) -> tuple[int, Any]:
        return await post_raw(self.session, self.base, source, body, headers, **kw)

    async def get(self, path: str) -> Any:
        async with self.session.get(f"{self.base}{path}", headers=bearer(VIEWER)) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def listing(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await self.get("/v1/deployments?limit=500"))["items"]
        return items


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    metrics = Recorder(responses=[(200, METRICS)])
    await metrics.start()
    port = free_port()
    config = tmp_path / "watchdog.yaml"
    config.write_text(
        CONFIG.format(
            port=port, old_secret=OLD_SECRET, viewer=VIEWER, db=tmp_path / "state.db", metrics=metrics.url
        )
    )
    process = DaemonProcess(config, env={"SOURCES_E2E_SECRET": SECRET})
    process.start()
    base = f"http://127.0.0.1:{port}"
    session = aiohttp.ClientSession()
    try:
        await process.wait_ready(base)
        yield Daemon(base, session, process)
    finally:
        process.close()
        await session.close()
        await metrics.stop()


async def test_github_deployment_statuses_end_to_end(daemon: Daemon) -> None:
    """A signed success status creates a deployment named after the repository, in
    deployment.environment, at deployment.sha; its redelivery returns the same id; a failure status
    and a ping get 204; a forged or tampered one 401. The listing holds exactly that deployment."""
    body = github_status()
    status, created = await daemon.post("github", body, github_headers(body, SECRET, delivery="d-1"))
    assert status == 202, created
    deployment = await daemon.get(f"/v1/deployments/{created['deployment_id']}")
    assert (deployment["service"], deployment["environment"], deployment["version"]) == (
        "Hello-World",
        "production",
        GITHUB_SHA,
    )
    assert (deployment["source"], deployment["event_id"], deployment["state"]) == ("github", "d-1", "baking")

    status, again = await daemon.post("github", body, github_headers(body, SECRET, delivery="d-1"))
    assert (status, again["deployment_id"], again["duplicate"]) == (200, created["deployment_id"], True)

    failed = github_status("failure", sha="1" * 40)
    assert (await daemon.post("github", failed, github_headers(failed, SECRET, delivery="d-2")))[0] == 204
    ping = b'{"zen": "Design for failure.", "hook_id": 1}'
    assert (await daemon.post("github", ping, github_headers(ping, SECRET, event="ping", delivery="d-3")))[
        0
    ] == 204

    forged = github_status(sha="2" * 40)
    status, error = await daemon.post(
        "github", forged, github_headers(forged, "not-the-secret", delivery="d-4")
    )
    assert (status, error["error"]) == (401, "bad_signature")
    tampered = body.replace(GITHUB_SHA.encode(), b"3" * 40)
    status, error = await daemon.post("github", tampered, github_headers(body, SECRET, delivery="d-5"))
    assert (status, error["error"]) == (401, "bad_signature")

    form = urlencode({"payload": github_status(sha="4" * 40).decode()}).encode()
    status, via_form = await daemon.post(
        "github",
        form,
        github_headers(form, SECRET, delivery="d-6"),
        content_type="application/x-www-form-urlencoded",
    )
    assert status == 202, via_form

    listed = await daemon.listing()
    assert {d["id"] for d in listed} == {created["deployment_id"], via_form["deployment_id"]}


async def test_every_tool_starts_exactly_one_watch_per_deploy(daemon: Daemon) -> None:
    """GitLab (token), Flagger (token in metadata, an event per analysis step), Argo CD, CodeDeploy
    and Spinnaker (bearer tokens) each create one deployment mapped by DESIGN §4; repeats are
    duplicates, non-starting states 204, wrong credentials 401; the listing is exactly those."""
    expected: dict[str, tuple[str, str, str]] = {}

    async def created(source: str, body: bytes | dict[str, Any], headers: dict[str, str]) -> str:
        status, answer = await daemon.post(source, body, headers)
        assert status == 202, (source, answer)
        return str(answer["deployment_id"])

    gitlab = await created("gitlab", gitlab_hook(), gitlab_headers(SECRET))
    expected[gitlab] = ("test-deployment-webhooks", "staging", "279484c0")
    assert (await daemon.post("gitlab", gitlab_hook(), gitlab_headers(SECRET)))[0] == 200
    assert (await daemon.post("gitlab", gitlab_hook("running", deployment_id=16), gitlab_headers(SECRET)))[
        0
    ] == 204
    assert (await daemon.post("gitlab", gitlab_hook(deployment_id=17), gitlab_headers("wrong")))[0] == 401

    flagger = await created("flagger", flagger_event(token=SECRET), {})
    expected[flagger] = ("podinfo", "test", "85d557f47b")
    status, step = await daemon.post("flagger", flagger_event(token=SECRET, eventMessage="Advance weight 20"))
    assert (status, step["deployment_id"]) == (200, flagger)
    assert (await daemon.post("flagger", flagger_event("Succeeded", token=SECRET)))[0] == 204
    assert (await daemon.post("flagger", flagger_event(token="wrong", checksum="ffff")))[0] == 401

    argocd = await created("argocd", argocd_body(), bearer(SECRET))
    expected[argocd] = ("checkout", "shop", "f3937462080c6946ff5ec4b5fa393e7c22388e4c")
    assert (await daemon.post("argocd", argocd_body(phase="Failed", revision="9" * 40), bearer(SECRET)))[
        0
    ] == 204
    assert (await daemon.post("argocd", argocd_body(revision="8" * 40), bearer("wrong")))[0] == 401

    codedeploy = await created("codedeploy", codedeploy_event(), bearer(SECRET))
    expected[codedeploy] = ("myApplication", "myDeploymentGroup", "d-123456789")
    assert (await daemon.post("codedeploy", codedeploy_event("START", event_id="e-2"), bearer(SECRET)))[
        0
    ] == 204
    instance = fixture_bytes("eventbridge.instance-state-change.json")
    assert (await daemon.post("codedeploy", instance, bearer(SECRET)))[0] == 204
    assert (await daemon.post("codedeploy", codedeploy_event(event_id="e-3"), {}))[0] == 401

    stage = await created("spinnaker", spinnaker_stage_body(application="cart"), bearer(SECRET))
    expected[stage] = ("cart", "prod", "2.1.0")
    echo = await created("spinnaker", echo_pipeline_complete(environment="eu-prod"), bearer(SECRET))
    expected[echo] = ("checkout", "eu-prod", "2.1.0")
    assert (await daemon.post("spinnaker", spinnaker_stage_body(execution_id="x2"), bearer("wrong")))[
        0
    ] == 401

    listed = await daemon.listing()
    assert {d["id"]: (d["service"], d["environment"], d["version"]) for d in listed} == expected
    gitlab_deployment = next(d for d in listed if d["id"] == gitlab)
    assert gitlab_deployment["labels"] == {"tier": "staging"}  # sources.gitlab.labels from the config


HOSTILE: dict[str, Callable[[str], tuple[bytes, dict[str, str], str | None, int]]] = {
    "over 1 MiB": lambda s: (b'{"a": "' + b"x" * (1024 * 1024 + 1) + b'"}', {}, "application/json", 413),
    "nested 100000 deep": lambda s: (b"[" * 100_000 + b"]" * 100_000, {}, "application/json", 400),
    "nested 100 deep": lambda s: (b'{"a":' * 100 + b"1" + b"}" * 100, {}, "application/json", 400),
    "text/plain": lambda s: (b"{}", {}, "text/plain", 415),
    "wrong secret": lambda s: (b"{}", {"secret": "wrong"}, "application/json", 401),
    "no credentials": lambda s: (b"{}", {"secret": ""}, "application/json", 401),
    "wrong field types": lambda s: (_wrong_types(s), {}, "application/json", 422),
}


def _wrong_types(source: str) -> bytes:
    """A body shaped like the tool's but with a number where a string belongs."""
    bodies: dict[str, Any] = {
        "generic": {"id": "x", "service": 5, "version": "v"},
        "github": json.loads(github_status(sha="5" * 40).replace(b'"production"', b"42")),
        "gitlab": json.loads(gitlab_hook(short_sha=1234)),
        "flagger": {"name": "podinfo", "namespace": 7, "phase": "Progressing", "checksum": "c"},
        "argocd": argocd_body(app=["checkout"]),
        "codedeploy": json.loads(codedeploy_event(deploymentId=12)),  # type: ignore[arg-type]
        "spinnaker": spinnaker_stage_body(version=2),
    }
    return json.dumps(bodies[source]).encode()


async def test_hostile_requests_get_json_4xx_and_store_nothing(daemon: Daemon) -> None:
    """Per source: a body over 1 MiB (413), nesting past the recursion limit and past 64 levels
    (400), a text/plain body (415), a wrong or missing secret (401), wrong field types (422). Each
    answer is a JSON error naming the problem, and the store stays empty."""
    for source in SOURCES:
        for case, make in HOSTILE.items():
            body, special, ctype, expected = make(source)
            if "secret" in special:
                headers = credentials(source, body, special["secret"]) if special["secret"] else {}
            else:
                headers = credentials(source, body)
            if source == "flagger" and case == "wrong field types":
                headers = {}
                body = json.dumps({**json.loads(body), "metadata": {"token": SECRET}}).encode()
            status, answer = await daemon.post(source, body, headers, content_type=ctype)
            assert status == expected, (source, case, answer)
            assert answer["error"] and answer["detail"], (source, case, answer)
    assert await daemon.listing() == []


async def test_a_newer_deploy_supersedes_the_baking_one(daemon: Daemon) -> None:
    """A second success status of the same repository and environment (another sha) closes the
    first as superseded, with an audit entry naming the new deployment; the new one bakes."""
    first = github_status(sha="a" * 40)
    status, old = await daemon.post("github", first, github_headers(first, SECRET, delivery="old"))
    assert status == 202
    second = github_status(sha="b" * 40)
    status, new = await daemon.post("github", second, github_headers(second, SECRET, delivery="new"))
    assert status == 202
    superseded = await daemon.get(f"/v1/deployments/{old['deployment_id']}")
    assert superseded["state"] == "superseded"
    assert superseded["audit"][-1]["action"] == "superseded"
    assert new["deployment_id"] in superseded["audit"][-1]["detail"]
    assert (await daemon.get(f"/v1/deployments/{new['deployment_id']}"))["state"] == "baking"
    await asyncio.sleep(1.5)  # a watch still running would have polled and written by now
    assert (await daemon.get(f"/v1/deployments/{old['deployment_id']}"))["polls"] == superseded["polls"]


async def test_the_baseline_is_the_last_version_that_passed(daemon: Daemon) -> None:
    """Without a baseline in the event, a new deploy of a service and environment is compared with
    the last version whose watch passed (the staging policy passes its 2 s blind bake)."""
    status, first = await daemon.post(
        "gitlab", gitlab_hook(deployment_id=20, short_sha="aaaa1111"), gitlab_headers(SECRET)
    )
    assert status == 202
    passed = await wait_for_state(
        daemon.session, daemon.base, first["deployment_id"], {"passed", "inconclusive"}, VIEWER, 10
    )
    assert passed["state"] == "passed", passed
    status, second = await daemon.post(
        "gitlab", gitlab_hook(deployment_id=21, short_sha="bbbb2222"), gitlab_headers(SECRET)
    )
    assert status == 202
    deployment = await daemon.get(f"/v1/deployments/{second['deployment_id']}")
    assert (deployment["version"], deployment["baseline_version"]) == ("bbbb2222", "aaaa1111")


def _ci_script(path: str) -> str:
    """The shell of the shipped CI snippet: GitHub's step `run`, or GitLab's script without the
    package install."""
    data = yaml.safe_load((ROOT / path).read_text())
    if "jobs" in data:
        steps = data["jobs"]["deploy"]["steps"]
        return str(next(s for s in steps if "run" in s)["run"])
    job = next(iter(data.values()))
    return str(next(line for line in job["script"] if "openssl dgst" in line))


@pytest.mark.parametrize("path", ["config/ci/github-actions.yml", "config/ci/gitlab-ci.yml"])
async def test_the_shipped_ci_snippets_sign_what_the_generic_source_accepts(
    daemon: Daemon, path: str
) -> None:
    """The GitHub Actions and GitLab CI snippets, run as written with their variables set (GitLab's
    by a POSIX sh, as in its alpine image), post a signed event the daemon accepts (202); run
    again, the same event id is a duplicate (200)."""
    shell = "bash" if "github" in path else "sh"
    env = {
        **os.environ,
        "WATCHDOG_URL": daemon.base,
        "WATCHDOG_SECRET": SECRET,
        "WATCHDOG_WEBHOOK_SECRET": SECRET,
        "SERVICE": "checkout",
        "ENVIRONMENT": "prod",
        "VERSION": "0123abcd",
        "EVENT_ID": f"ci-{Path(path).stem}-1",
    }
    run: Callable[[], Awaitable[subprocess.CompletedProcess[str]]] = lambda: asyncio.to_thread(  # noqa: E731
        subprocess.run, [shell, "-c", _ci_script(path)], env=env, capture_output=True, text=True, timeout=30
    )
    first = await run()
    assert first.returncode == 0, first.stderr
    answer = json.loads(first.stdout)
    again = json.loads((await run()).stdout)
    assert again["deployment_id"] == answer["deployment_id"] and again["duplicate"] is True
    deployment = await daemon.get(f"/v1/deployments/{answer['deployment_id']}")
    assert (deployment["service"], deployment["version"], deployment["source"]) == (
        "checkout",
        "0123abcd",
        "generic",
    )
