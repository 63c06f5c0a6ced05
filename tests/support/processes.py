"""Ending the server processes the tests start (Prometheus, moto): politely, then firmly."""

from __future__ import annotations

import asyncio
import contextlib


async def end_process(process: asyncio.subprocess.Process | None, timeout: float = 5.0) -> None:
    """SIGTERM and wait; SIGKILL what has not exited within ``timeout``. No-op for a process that is
    absent or already gone, so callers may stop twice."""
    if process is None or process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
