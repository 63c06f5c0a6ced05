"""The daemon rolling back a Kubernetes Deployment, driven only over HTTP and its config file (issue
5, "Done when", kubernetes part): a bad canary served by simulated app instances, the `kubernetes`
rollback target pointed at a fake API server through a generated kubeconfig."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import SECRET, VIEWER, deploy_body
from tests.providers.rollback.k8s_server import FakeKubernetes, without_hash
from tests.support.daemon import DaemonProcess, free_port, post_event, wait_for_state
from watchdog.demo.simapp import SimulatedApp

DEPLOYMENT_PATH = "/apis/apps/v1/namespaces/shop/deployments/checkout"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")

CONFIG = """\
server:
  listen: 127.0.0.1:{port}
  webhook_secrets:
    generic: ${{WATCHDOG_WEBHOOK_SECRET}}
  api_tokens:
    - {{name: dashboards, token: "{viewer}", role: viewer}}
  shutdown_timeout: 5s
store:
  url: sqlite://{db}
logging:
  format: json
providers:
  apps:
    type: scrape
    targets: ["{old}", "{new}"]
rollback:
  k8s:
    type: kubernetes
    kubeconfig: {kubeconfig}
    timeout: 5s
    verify_timeout: 20s
    poll_interval: 200ms
policies:
  - name: checkout-prod
    match: {{service: checkout, environment: prod}}
    bake: 60s
    interval: 1s
    alpha: 0.01
    rollback: k8s
    checks:
      - name: errors
        type: ratio
        provider: apps
        bad: 'http_requests_total{{service="{{service}}",version="{{version}}",code=~"5.."}}'
        total: 'http_requests_total{{service="{{service}}",version="{{version}}"}}'
        compare: baseline
        critical: true
"""


@dataclass
class Cluster:
    base: str
    daemon: DaemonProcess
    k8s: FakeKubernetes
    session: aiohttp.ClientSession


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Builds the stack: v1 healthy and v2 at 10 % errors, the fake API server holding a checkout
    Deployment whose history is v0, v1, v2 (running v2), and the daemon; ``prepare`` may set the
    fake server's failure switches before the daemon starts."""
    parts: list[Any] = []

    async def build(prepare: Callable[[FakeKubernetes], None] | None = None) -> Cluster:
        old = SimulatedApp(version="v1", rps=200, error_rate=0.005, seed=1)
        new = SimulatedApp(version="v2", rps=200, error_rate=0.10, seed=2)
        k8s = FakeKubernetes()
        for part in (old, new, k8s):
            await part.start()
            parts.append(part)
        k8s.history()
        if prepare is not None:
            prepare(k8s)
        port = free_port()
        config = tmp_path / "watchdog.yaml"
        config.write_text(
            CONFIG.format(
                port=port,
                viewer=VIEWER,
                db=tmp_path / "state.db",
                old=old.metrics_url,
                new=new.metrics_url,
                kubeconfig=k8s.kubeconfig(tmp_path / "kubeconfig"),
            )
        )
        env = {"WATCHDOG_WEBHOOK_SECRET": SECRET, **dict.fromkeys(PROXY_VARIABLES, "")}
        daemon = DaemonProcess(config, env=env)
        daemon.start()
        parts.append(daemon)
        base = f"http://127.0.0.1:{port}"
        await daemon.wait_ready(base)
        session = aiohttp.ClientSession()
        parts.append(session)
        return Cluster(base, daemon, k8s, session)

    yield build
    for part in reversed(parts):
        if isinstance(part, DaemonProcess):
            part.close()
        elif isinstance(part, aiohttp.ClientSession):
            await part.close()
        else:
            await part.stop()


async def test_bad_canary_rolls_the_deployment_back_to_the_previous_revision_in_one_write(
    cluster: Callable[..., Any],
) -> None:
    """10 % errors against 0.5 %: ``rolled_back``, after exactly one PATCH of the Deployment, which
    then runs revision 2's pod template (v1, the event's baseline), fully rolled out; the API shows
    what was restored."""
    c: Cluster = await cluster()
    previous = copy.deepcopy(c.k8s.revision("shop", "checkout", 2))

    status, body = await post_event(c.session, c.base, deploy_body(), SECRET)
    assert status == 202, body
    final = await wait_for_state(
        c.session, c.base, body["deployment_id"], {"rolled_back", "rollback_failed"}, VIEWER, timeout=20
    )

    assert final["state"] == "rolled_back", (final, c.daemon.output()[-3000:])
    await asyncio.sleep(1.0)  # a second write, if there were one, would arrive by now
    patches = [w for w in c.k8s.writes if w.path == DEPLOYMENT_PATH]
    assert len(patches) == 1 and len(c.k8s.writes) == 1
    assert patches[0].content_type == "application/json-patch+json"
    now = c.k8s.deployment("shop", "checkout")
    assert without_hash(now["spec"]["template"]) == without_hash(previous["spec"]["template"])
    assert now["spec"]["template"]["spec"]["containers"][0]["image"].endswith("checkout:v1")
    assert now["status"]["availableReplicas"] == now["spec"]["replicas"]
    data = final["rollback"]["data"]
    assert (data["kind"], data["revision"], data["replicaset"]) == (
        "Deployment",
        2,
        previous["metadata"]["name"],
    )
    assert "Deployment shop/checkout rolled back to revision 2" in final["rollback"]["detail"]
    assert [a["action"] for a in final["audit"]][-2:] == ["rollback.started", "rollback.succeeded"]


async def test_a_forbidden_patch_ends_rollback_failed_with_the_rbac_fix(cluster: Callable[..., Any]) -> None:
    """The service account may not patch Deployments: ``rollback_failed`` at once (403 is not
    retried), with a reason naming the permission and config/kubernetes/rbac.yaml; nothing changed."""
    c: Cluster = await cluster(lambda k8s: k8s.forbidden.add(("patch", "deployments")))
    before = copy.deepcopy(c.k8s.deployment("shop", "checkout"))

    status, body = await post_event(c.session, c.base, deploy_body(), SECRET)
    assert status == 202, body
    final = await wait_for_state(
        c.session, c.base, body["deployment_id"], {"rolled_back", "rollback_failed"}, VIEWER, timeout=20
    )

    assert final["state"] == "rollback_failed", final
    error = final["rollback"]["error"]
    assert "may not patch deployments in namespace shop" in error
    assert "config/kubernetes/rbac.yaml" in error
    assert len([w for w in c.k8s.writes if w.path == DEPLOYMENT_PATH]) == 1  # refused, not retried
    assert c.k8s.deployment("shop", "checkout") == before
