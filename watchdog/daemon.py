"""``watchdog serve``: the daemon's lifetime, from start-up to a bounded shutdown.

Start: store, supervisor (resuming watches), then the HTTP listener, then READY=1 to systemd. Stop
(SIGTERM or SIGINT): stop intake first, then let Watches finish their poll in flight within
``server.shutdown_timeout``, then cancel what is left and close adapters and the store.
"""

from __future__ import annotations

import asyncio
import signal

import structlog
from aiohttp import web

from watchdog.config.loader import LoadedConfig
from watchdog.plugins import PluginRegistry
from watchdog.runtime import Runtime
from watchdog.server.app import create_app
from watchdog.systemd import SystemdNotifier, run_watchdog_pings
from watchdog.tasks import TaskGroup

log = structlog.get_logger("watchdog.daemon")


class Daemon:
    """A started daemon; tests and the demo run it in-process, ``serve`` until a signal."""

    def __init__(self, loaded: LoadedConfig, registry: PluginRegistry, runtime: Runtime | None = None):
        self.loaded = loaded
        self.runtime = runtime or Runtime(loaded, registry)
        self.runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        server = self.loaded.config.server
        await self.runtime.start()
        self.runner = web.AppRunner(
            create_app(self.runtime), handle_signals=False, access_log=None, shutdown_timeout=3.0
        )
        await self.runner.setup()
        site = web.TCPSite(self.runner, server.host, server.port)
        await site.start()
        addresses = self.runner.addresses
        self.port = int(addresses[0][1]) if addresses else server.port
        log.info(
            "daemon.started", listen=f"{server.host}:{self.port}", policies=len(self.loaded.config.policies)
        )

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()  # stop intake first
            self.runner = None
        await self.runtime.aclose(self.loaded.config.server.shutdown_timeout)
        log.info("daemon.stopped")


async def serve(loaded: LoadedConfig, registry: PluginRegistry) -> int:
    """Run until SIGTERM/SIGINT; 0 on a clean stop."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    daemon = Daemon(loaded, registry)
    systemd = SystemdNotifier()
    background = TaskGroup("daemon")
    try:
        await daemon.start()
        systemd.ready()
        systemd.status(f"watching; listening on {loaded.config.server.host}:{daemon.port}")
        background.spawn(
            run_watchdog_pings(systemd, daemon.runtime.supervisor.healthy, stop), "systemd-watchdog"
        )
        await stop.wait()
        log.info("daemon.stopping")
        systemd.stopping()
    finally:
        stop.set()
        await daemon.stop()
        await background.cancel_all()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0
