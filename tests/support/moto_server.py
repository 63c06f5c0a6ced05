"""moto's standalone server (``moto_server``) on a free loopback port, for tests of AWS adapters.

``async with MotoServer() as moto: moto.url`` starts the server from the virtualenv's ``bin``
folder, waits until it answers, and stops it (terminate, then kill) when the block ends. Every AWS
service moto mocks is served from the one port, so a test points any client at ``moto.url`` with
the fake credentials in :data:`CREDENTIALS`. State lives in the process: each server starts empty.
It starts in well under a second; a module may still share one (``scope="module"``, with
``loop_scope="module"``) and keep its tests apart by names (namespaces, applications).

A real server process rather than ``mock_aws()``: the adapters under test talk HTTP through
aiobotocore, and an in-process mock patches botocore's synchronous transport only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import aiohttp

from tests.support.processes import end_process

CREDENTIALS: Final = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
}
"""Keys for clients of the server (moto accepts any unless told to check them); real-looking values
keep botocore from searching the host for credentials."""

START_ATTEMPTS: Final = 3
"""A free port found by binding port 0 can be taken before the server binds it: try again."""


class MotoMissing(RuntimeError):
    """``moto_server`` is not installed (the `test` extra brings ``moto[server]``)."""


def find_binary() -> str:
    """``moto_server`` next to the running interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "moto_server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("moto_server")
    if found:
        return found
    raise MotoMissing(
        "moto_server is not installed: install the test extra (`pip install -e '.[test]'`), "
        "which brings moto[server]"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoServer:
    """One ``moto_server -H 127.0.0.1 -p <port>`` process for the length of an ``async with``."""

    def __init__(self, *, start_timeout: float = 20.0, env: Mapping[str, str] | None = None) -> None:
        """``env`` adds to the server's environment, e.g. ``{"INITIAL_NO_AUTH_ACTION_COUNT": "0"}``
        makes moto check credentials and refuse unknown ones, as AWS does."""
        self.start_timeout = start_timeout
        self.env = dict(env or {})
        self.port = 0
        self._process: asyncio.subprocess.Process | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """The endpoint URL for any AWS client, e.g. ``http://127.0.0.1:40123``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        """What the server printed so far (its request log), for failure messages."""
        if self._dir is None:
            return ""
        path = Path(self._dir.name) / "moto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def start(self) -> None:
        binary = find_binary()
        self._dir = tempfile.TemporaryDirectory(prefix="watchdog-moto-")
        problem = ""
        try:
            for _ in range(START_ATTEMPTS):
                self.port = free_port()
                await self._spawn(binary, Path(self._dir.name))
                problem = await self._wait_ready()
                if not problem:
                    return
                await self._terminate()
        except BaseException:
            await self.stop()
            raise
        await self.stop()
        raise RuntimeError(f"moto_server did not start: {problem}")

    async def _spawn(self, binary: str, folder: Path) -> None:
        # The request log goes to a file: an unread pipe would fill up and stall the server.
        with (folder / "moto.log").open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                binary,
                "-H",
                "127.0.0.1",
                "-p",
                str(self.port),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, **{k.upper(): v for k, v in CREDENTIALS.items()}, **self.env},
            )

    async def _wait_ready(self) -> str:
        """'' once the server answers; otherwise why it did not."""
        deadline = time.monotonic() + self.start_timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < deadline:
                if self._process is not None and self._process.returncode is not None:
                    return f"exited with {self._process.returncode}:\n{self.log[-2000:]}"
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"{self.url}/moto-api/") as response:
                        if response.status < 500:
                            return ""
                await asyncio.sleep(0.1)
        return f"no answer on {self.url} within {self.start_timeout:g} s:\n{self.log[-2000:]}"

    async def _terminate(self, timeout: float = 5.0) -> None:
        process, self._process = self._process, None
        await end_process(process, timeout)

    async def stop(self) -> None:
        """Terminate and wait (kill after 5 s); remove the log. Safe to call twice."""
        await self._terminate()
        folder, self._dir = self._dir, None
        if folder is not None:
            folder.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
