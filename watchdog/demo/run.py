"""``watchdog demo``: the whole product in about a minute, on a machine with nothing else running.

Two simulated instances of ``checkout`` export real Prometheus metrics (v1 stable, v2 the canary);
the daemon runs in-process with the shipped ``demo.yaml`` and reads them with the ``scrape``
provider; a signed deploy event starts the bake; after a while v2 starts failing; the progress view
shows each poll's counts and the evidence against the threshold; the rollback hook and Slack are
local stand-ins that print what they received. Every byte goes over loopback HTTP, as in
production.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sys
import tempfile
import time
from importlib.resources import as_file, files
from typing import Any, TextIO

import aiohttp
from aiohttp import web

from watchdog.config.loader import load_config
from watchdog.daemon import Daemon
from watchdog.demo.simapp import SimulatedApp
from watchdog.errors import ConfigError
from watchdog.logs import configure_logging
from watchdog.plugins import PluginRegistry
from watchdog.signing import sign_headers

FAIL_AFTER = 12.0  # seconds of healthy canary before it breaks: a few polls of calm first
CANARY_ERROR_RATE = 0.08
STABLE_ERROR_RATE = 0.005
RPS = 60.0


class StandIn:
    """A loopback HTTP server standing in for the rollback hook or Slack: it records each request."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.received: list[tuple[str, dict[str, str], Any]] = []
        self.event = asyncio.Event()

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append((request.path, dict(request.headers), await request.json()))
        self.event.set()
        return web.Response(text=self.answer)

    async def stop(self) -> None:
        await self.runner.cleanup()


def _line(out: TextIO, text: str = "") -> None:
    out.write(text + "\n")
    out.flush()


def render_blocks(message: dict[str, Any]) -> list[str]:
    """Block Kit as plain lines, close to what Slack would show."""
    lines: list[str] = []
    for block in message.get("blocks", []):
        kind = block.get("type")
        if kind == "header":
            lines.append(f"  ▌ {block['text']['text']}")
        elif kind == "section":
            if "text" in block:
                lines.extend(f"  {line}" for line in block["text"]["text"].splitlines())
            for f in block.get("fields", []):
                lines.append("  " + f["text"].replace("\n", " "))
        elif kind == "context":
            lines.append("  " + " · ".join(e.get("text", "") for e in block.get("elements", [])))
        elif kind == "divider":
            lines.append("  " + "─" * 60)
    return lines or [f"  {message.get('text', '')}"]


async def run_demo(registry: PluginRegistry, *, healthy: bool = False, out: TextIO = sys.stdout) -> int:
    configure_logging("error", "console")
    stable = SimulatedApp(version="v1", rps=RPS, error_rate=STABLE_ERROR_RATE, seed=11)
    canary = SimulatedApp(version="v2", rps=RPS, error_rate=STABLE_ERROR_RATE, seed=12)
    hook, slack = StandIn('{"status": "rolled back"}'), StandIn("ok")
    await stable.start()
    await canary.start()
    hook_url, slack_url = await hook.start(), await slack.start()
    secret, token = secrets.token_hex(16), secrets.token_hex(16)
    state_dir = tempfile.TemporaryDirectory(prefix="watchdog-demo-")
    daemon: Daemon | None = None
    try:
        port = _free_port()
        env = {
            "DEMO_PORT": str(port),
            "DEMO_WEBHOOK_SECRET": secret,
            "DEMO_API_TOKEN": token,
            "DEMO_STATE_DIR": state_dir.name,
            "DEMO_STABLE_METRICS": stable.metrics_url,
            "DEMO_CANARY_METRICS": canary.metrics_url,
            "DEMO_HOOK_URL": hook_url,
            "DEMO_SLACK_URL": slack_url,
        }
        with as_file(files("watchdog.demo").joinpath("demo.yaml")) as path:
            try:
                loaded = load_config(path, registry, environ=env)
            except ConfigError as exc:
                for problem in exc.problems:
                    _line(out, f"error: {problem}")
                return 2
        policy = loaded.config.policies[0]
        daemon = Daemon(loaded, registry)
        await daemon.start()
        base = f"http://127.0.0.1:{daemon.port}"
        _line(out, "rollback-watchdog demo")
        _line(out, f"  stable  checkout v1  {stable.metrics_url}  ({STABLE_ERROR_RATE:.1%} errors)")
        _line(out, f"  canary  checkout v2  {canary.metrics_url}  ({STABLE_ERROR_RATE:.1%} errors for now)")
        _line(
            out,
            f"  daemon  {base}  policy {policy.name}: bake {policy.bake:.0f}s, poll every "
            f"{policy.interval:.0f}s, alpha {policy.alpha}",
        )
        _line(out)
        async with aiohttp.ClientSession() as session:
            deployment_id = await _deploy(session, base, secret)
            _line(out, f"→ signed deploy event sent: deployment {deployment_id}")
            if healthy:
                _line(out, "  (--healthy: v2 stays as good as v1 for the whole bake)")
            else:
                _line(out, f"  v2 will start failing {FAIL_AFTER:.0f}s in ({CANARY_ERROR_RATE:.0%} errors)")
            _line(out)
            started = time.monotonic()
            flipped = healthy
            last_polls = -1
            final: dict[str, Any] = {}
            while True:
                if not flipped and time.monotonic() - started >= FAIL_AFTER:
                    canary.error_rate = CANARY_ERROR_RATE
                    flipped = True
                    _line(
                        out, f"!! v2 starts failing: {CANARY_ERROR_RATE:.0%} of its requests now return 500"
                    )
                async with session.get(
                    f"{base}/v1/deployments/{deployment_id}",
                    headers={"Authorization": f"Bearer {token}"},
                ) as r:
                    final = await r.json()
                if final["polls"] != last_polls and final["checks"]:
                    last_polls = final["polls"]
                    _line(out, _progress(final, time.monotonic() - started))
                if final["state"] not in ("baking", "rolling_back"):
                    break
                await asyncio.sleep(0.25)
            if final["state"] == "rolled_back":
                canary.rps = 0  # the hook "rolled back": v2 gets no more traffic
        _line(out)
        _line(out, f"⇒ {final['state'].upper()} after {final['polls']} polls: {final['reason']}")
        for hook_path, headers, body in hook.received:
            _line(
                out,
                f"→ rollback hook got POST {hook_path} with Idempotency-Key "
                f"{headers.get('Idempotency-Key')} for {body['service']} {body['version']}",
            )
        if not hook.received:
            _line(out, "→ the rollback hook was never called")
        await _wait(slack.event, 5.0)
        for _, _, message in slack.received:
            _line(out)
            _line(out, "Slack message (Block Kit, as posted to the incoming webhook):")
            for line in render_blocks(message):
                _line(out, line)
            _line(out)
            _line(out, "raw payload:")
            _line(out, json.dumps(message, indent=2)[:4000])
        ok = final["state"] == ("passed" if healthy else "rolled_back")
        return 0 if ok else 1
    finally:
        if daemon is not None:
            await daemon.stop()
        for thing in (stable, canary, hook, slack):
            await thing.stop()
        state_dir.cleanup()


def _progress(d: dict[str, Any], elapsed: float) -> str:
    parts = [f"[{elapsed:5.1f}s] poll {d['polls']:>3}"]
    for check in d["checks"]:
        stats = check["statistics"]
        canary, baseline = stats.get("canary", {}), stats.get("baseline", {})
        e, threshold = stats.get("e_value", 0.0), stats.get("threshold", 0.0)
        bar = _bar(e, threshold)
        parts.append(
            f"{check['name']}: v2 {canary.get('bad', 0):.0f}/{canary.get('total', 0):.0f} "
            f"vs v1 {baseline.get('bad', 0):.0f}/{baseline.get('total', 0):.0f}  "
            f"evidence {e:10.2f} / {threshold:.0f} {bar} {check['verdict']}"
        )
    return "  ".join(parts)


def _bar(e: float, threshold: float, width: int = 20) -> str:
    import math

    if threshold <= 1:
        return ""
    filled = 0 if e <= 1 else min(width, round(width * math.log(e) / math.log(threshold)))
    return "[" + "#" * filled + "." * (width - filled) + "]"


async def _deploy(session: aiohttp.ClientSession, base: str, secret: str) -> str:
    body = json.dumps(
        {
            "id": f"demo-{int(time.time())}",
            "service": "checkout",
            "environment": "demo",
            "version": "v2",
            "baseline_version": "v1",
            "target": {"namespace": "shop", "deployment": "checkout"},
        }
    ).encode()
    headers = {"Content-Type": "application/json", **sign_headers(secret, body, time.time())}
    async with session.post(f"{base}/v1/events/generic", data=body, headers=headers) as r:
        answer = await r.json()
        if r.status != 202:
            raise RuntimeError(f"the daemon refused the deploy event: {answer}")
        return str(answer["deployment_id"])


async def _wait(event: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
