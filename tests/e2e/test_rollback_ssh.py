"""The daemon as a subprocess rolling back over SSH (issue 5): a bad canary judged from real metrics,
the rollback command run on real sshd hosts, the outcome stored and notified."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.e2e.conftest import SECRET, VIEWER, deploy_body
from tests.support.daemon import DaemonProcess, Recorder, eventually, free_port, post_event, wait_for_state
from tests.support.sshd import SshKeys, SshServer
from watchdog.demo.simapp import SimulatedApp


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SshKeys, list[SshServer]]]:
    """Two real sshd hosts with their own host key and the watchdog's client key authorised."""
    keys = SshKeys.generate(tmp_path_factory.mktemp("e2e-ssh-keys"))
    servers = [SshServer(keys, tmp_path_factory.mktemp(f"e2e-sshd-{i}")) for i in range(2)]
    try:
        for server in servers:
            server.start()
        yield keys, servers
    finally:
        for server in servers:
            server.stop()


@dataclass
class Stack:
    base: str
    daemon: DaemonProcess
    slack: Recorder
    session: aiohttp.ClientSession


@pytest.fixture
async def start_stack(tmp_path: Path, fleet: tuple[SshKeys, list[SshServer]]) -> AsyncIterator[Any]:
    """The daemon with an `ssh` rollback target over the given hosts, a canary with 10 % errors
    against a 0.5 % baseline (both real exporters scraped by the daemon) and a Slack stand-in."""
    keys, servers = fleet
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("".join(s.known_hosts_line() for s in servers))
    started: list[tuple[Stack, list[SimulatedApp]]] = []

    async def start(hosts: list[SshServer], command: str) -> Stack:
        old = SimulatedApp(version="v1", rps=200, error_rate=0.005, seed=1)
        new = SimulatedApp(version="v2", rps=200, error_rate=0.10, seed=2)
        await old.start()
        await new.start()
        slack = Recorder(responses=[(200, "ok")])
        await slack.start()
        port = free_port()
        config = {
            "server": {
                "listen": f"127.0.0.1:{port}",
                "webhook_secrets": {"generic": "${WATCHDOG_WEBHOOK_SECRET}"},
                "api_tokens": [{"name": "dashboards", "token": VIEWER, "role": "viewer"}],
                "shutdown_timeout": "5s",
            },
            "store": {"url": f"sqlite://{tmp_path / 'state.db'}"},
            "logging": {"format": "json"},
            "providers": {"apps": {"type": "scrape", "targets": [old.metrics_url, new.metrics_url]}},
            "rollback": {
                "fleet": {
                    "type": "ssh",
                    "hosts": [s.address for s in hosts],
                    "user": getpass.getuser(),
                    "key_file": str(keys.client.private),
                    "known_hosts": str(known_hosts),
                    "command": command,
                    "timeout": "20s",
                }
            },
            "notify": {"slack": {"type": "slack", "webhook_url": f"{slack.url}/services/T000/B000/XXXX"}},
            "policies": [
                {
                    "name": "checkout-prod",
                    "match": {"service": "checkout", "environment": "prod"},
                    "bake": "60s",
                    "interval": "1s",
                    "alpha": 0.01,
                    "rollback": "fleet",
                    "notify": ["slack"],
                    "checks": [
                        {
                            "name": "errors",
                            "type": "ratio",
                            "provider": "apps",
                            "bad": 'http_requests_total{service="{service}",version="{version}",code=~"5.."}',
                            "total": 'http_requests_total{service="{service}",version="{version}"}',
                            "compare": "baseline",
                            "critical": True,
                        }
                    ],
                }
            ],
        }
        path = tmp_path / "watchdog.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        daemon = DaemonProcess(path, env={"WATCHDOG_WEBHOOK_SECRET": SECRET})
        daemon.start()
        base = f"http://127.0.0.1:{port}"
        stack = Stack(base, daemon, slack, aiohttp.ClientSession())
        started.append((stack, [old, new]))
        await daemon.wait_ready(base)
        return stack

    yield start
    for stack, apps in started:
        stack.daemon.close()
        await stack.session.close()
        await stack.slack.stop()
        for app in apps:
            await app.stop()


async def test_bad_canary_is_rolled_back_over_ssh_and_the_command_runs_exactly_once(
    start_stack: Any, fleet: tuple[SshKeys, list[SshServer]], tmp_path: Path
) -> None:
    """The daemon judges the canary bad and runs the rendered command on the real sshd once: the
    deployment ends rolled_back with the host's result stored, and Slack hears of it."""
    _, servers = fleet
    ran = tmp_path / "rollbacks.log"
    s = await start_stack(
        servers[:1],
        f"printf '%s %s %s %s\\n' {{service}} {{baseline_version}} {{namespace}} {{host}} >> {ran}",
    )
    status, body = await post_event(s.session, s.base, deploy_body(), SECRET)
    assert status == 202, body
    final = await wait_for_state(
        s.session, s.base, body["deployment_id"], {"rolled_back", "rollback_failed"}, VIEWER, timeout=20
    )
    assert final["state"] == "rolled_back", (final, s.daemon.output()[-3000:])
    assert final["rollback"]["target"] == "fleet"
    (host,) = final["rollback"]["data"]["hosts"]
    assert host["host"] == servers[0].address and host["status"] == "ok"
    await asyncio.sleep(1.5)  # a second run, if there were one, would have happened by now
    assert ran.read_text().splitlines() == ["checkout v1 shop 127.0.0.1"]
    await eventually(lambda: s.slack.requests)
    assert "Rolled back checkout v2" in str(s.slack.requests[0].json())


async def test_partial_fleet_failure_ends_rollback_failed_with_each_host_stored_and_notified(
    start_stack: Any, fleet: tuple[SshKeys, list[SshServer]]
) -> None:
    """One host of two exits non-zero: rollback_failed; the stored deployment and the Slack message
    both name each host with its status and the end of its output."""
    _, servers = fleet
    bad = servers[1]
    command = (
        f'case "$SSH_CONNECTION" in *" {bad.port}") echo "no space left on device" >&2; exit 4;; esac; '
        "echo restarted {service}"
    )
    s = await start_stack(servers, command)
    status, body = await post_event(s.session, s.base, deploy_body(), SECRET)
    assert status == 202, body
    final = await wait_for_state(
        s.session, s.base, body["deployment_id"], {"rolled_back", "rollback_failed"}, VIEWER, timeout=20
    )
    assert final["state"] == "rollback_failed", (final, s.daemon.output()[-3000:])
    error = final["rollback"]["error"]
    assert f"{bad.address}: exit status 4; output: no space left on device" in error
    assert f"{servers[0].address}: ok (exit status 0)" in error
    hosts = {h["host"]: h for h in final["rollback"]["details"]["hosts"]}  # the error's `details`
    assert hosts[bad.address]["status"] == "failed" and hosts[bad.address]["exit_status"] == 4
    assert hosts[bad.address]["output_tail"] == ["no space left on device"]
    assert hosts[servers[0].address]["output_tail"] == ["restarted checkout"]
    await eventually(lambda: s.slack.requests)
    message = str(s.slack.requests[0].json())
    assert "FAILED" in message and bad.address in message and "no space left on device" in message
