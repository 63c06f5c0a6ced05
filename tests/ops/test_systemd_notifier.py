"""SystemdNotifier and run_watchdog_pings against a real AF_UNIX datagram socket."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from pathlib import Path

import pytest
import structlog.testing

from watchdog.systemd import SystemdNotifier, run_watchdog_pings


def _received(sock: socket.socket) -> list[str]:
    """Every datagram waiting on the (non-blocking) receiver, oldest first."""
    messages: list[str] = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


async def _next(sock: socket.socket, timeout: float = 1.0) -> str:
    """The next datagram, awaited without blocking the loop."""
    loop = asyncio.get_running_loop()
    return (await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout)).decode()


def _notifier(receiver: socket.socket, **extra: str) -> SystemdNotifier:
    return SystemdNotifier({"NOTIFY_SOCKET": receiver.getsockname(), **extra})


# -- messages -------------------------------------------------------------------------------------


def test_ready_sends_ready_1(receiver: socket.socket) -> None:
    """ready() sends exactly READY=1, the datagram that ends a Type=notify unit's start-up."""
    assert _notifier(receiver).ready() is True
    assert _received(receiver) == ["READY=1"]


def test_stopping_sends_stopping_1(receiver: socket.socket) -> None:
    """stopping() sends exactly STOPPING=1."""
    assert _notifier(receiver).stopping() is True
    assert _received(receiver) == ["STOPPING=1"]


def test_status_sends_one_line(receiver: socket.socket) -> None:
    """status() sends STATUS=<text>; newlines become spaces, so the text cannot smuggle in a
    second assignment such as READY=1, and text that is not valid UTF-8 is replaced, not raised."""
    notifier = _notifier(receiver)
    assert notifier.status("watching 3 deployments") is True
    assert notifier.status("line one\nREADY=1") is True
    assert notifier.status("bad \udc80 text") is True
    assert _received(receiver) == [
        "STATUS=watching 3 deployments",
        "STATUS=line one READY=1",
        "STATUS=bad ? text",
    ]


def test_watchdog_ping_sends_watchdog_1(receiver: socket.socket) -> None:
    """watchdog_ping() sends exactly WATCHDOG=1, and repeated calls reuse the client socket."""
    notifier = _notifier(receiver)
    assert notifier.watchdog_ping() is True
    assert notifier.watchdog_ping() is True
    assert _received(receiver) == ["WATCHDOG=1", "WATCHDOG=1"]
    notifier.close()


def test_abstract_socket_address_with_at_sign() -> None:
    """A NOTIFY_SOCKET starting with '@' names a Linux abstract socket (leading NUL byte), which
    is how systemd hands it out in some setups (e.g. containers under systemd-nspawn)."""
    name = f"rollback-watchdog-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.setblocking(False)
        assert SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).ready() is True
        assert _received(sock) == ["READY=1"]


# -- no socket, bad socket ------------------------------------------------------------------------


def test_without_notify_socket_everything_is_a_no_op() -> None:
    """Without NOTIFY_SOCKET (a terminal, a container, tests) every call returns False, sends
    nothing and raises nothing, and there is no watchdog even if WATCHDOG_USEC is set."""
    notifier = SystemdNotifier({"WATCHDOG_USEC": "30000000"})
    assert notifier.enabled is False
    assert notifier.ready() is False
    assert notifier.status("x") is False
    assert notifier.watchdog_ping() is False
    assert notifier.stopping() is False
    assert notifier.watchdog_interval() is None


def test_default_environment_is_os_environ(receiver: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no mapping given, the notifier reads os.environ (as the CLI will use it)."""
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.getsockname())
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    notifier = SystemdNotifier()
    assert notifier.ready() is True
    assert notifier.watchdog_interval() == 15.0
    assert _received(receiver) == ["READY=1"]


def test_relative_notify_socket_is_ignored() -> None:
    """An address that is neither absolute nor abstract (a vsock: address, garbage) disables the
    notifier instead of failing start-up."""
    notifier = SystemdNotifier({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert notifier.enabled is False
    assert notifier.ready() is False


def test_vanished_socket_does_not_raise_and_recovers(receiver: socket.socket) -> None:
    """When the socket goes away (systemd restarted, path removed) sends return False without
    raising; once a socket is back at the same path they succeed again."""
    path = receiver.getsockname()
    notifier = _notifier(receiver)
    receiver.close()
    Path(path).unlink()
    assert notifier.ready() is False
    assert notifier.watchdog_ping() is False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as again:
        again.bind(path)
        again.setblocking(False)
        assert notifier.watchdog_ping() is True
        assert _received(again) == ["WATCHDOG=1"]


def test_failures_are_logged_once_per_outage(receiver: socket.socket) -> None:
    """A run of failed sends logs one warning, not one per ping, and recovery is logged once."""
    path = receiver.getsockname()
    notifier = _notifier(receiver)
    receiver.close()
    Path(path).unlink()
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            notifier.watchdog_ping()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as again:
            again.bind(path)
            notifier.watchdog_ping()
            notifier.watchdog_ping()
    assert [entry["event"] for entry in logs] == ["systemd.notify_failed", "systemd.notify_recovered"]
    assert logs[0]["message"] == "WATCHDOG"


def test_full_queue_never_blocks() -> None:
    """If nobody drains the socket, sends fail fast (EAGAIN) instead of blocking the event loop."""
    name = f"rollback-watchdog-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        notifier = SystemdNotifier({"NOTIFY_SOCKET": "@" + name})
        started = time.monotonic()
        results = [notifier.watchdog_ping() for _ in range(5000)]
        assert time.monotonic() - started < 2.0
        assert results[0] is True
        assert False in results


# -- watchdog interval ----------------------------------------------------------------------------


def test_watchdog_interval_is_half_of_watchdog_usec(receiver: socket.socket) -> None:
    """WATCHDOG_USEC=30 s (WatchdogSec=30) gives a ping every 15 s, as sd_watchdog_enabled(3)
    advises, so one late ping does not get the daemon killed."""
    assert _notifier(receiver, WATCHDOG_USEC="30000000").watchdog_interval() == 15.0


def test_watchdog_pid_of_this_process_enables(receiver: socket.socket) -> None:
    """WATCHDOG_PID naming this process keeps the watchdog on."""
    notifier = _notifier(receiver, WATCHDOG_USEC="30000000", WATCHDOG_PID=str(os.getpid()))
    assert notifier.watchdog_interval() == 15.0


def test_watchdog_pid_mismatch_disables(receiver: socket.socket) -> None:
    """WATCHDOG_PID naming another process (we are a child that inherited the environment)
    turns the watchdog off: only the main process may vouch for the service."""
    notifier = _notifier(receiver, WATCHDOG_USEC="30000000", WATCHDOG_PID=str(os.getpid() + 1))
    assert notifier.watchdog_interval() is None


@pytest.mark.parametrize(("usec", "pid"), [("", ""), ("0", ""), ("-5", ""), ("soon", ""), ("30000000", "me")])
def test_missing_or_malformed_watchdog_variables_disable(
    receiver: socket.socket, usec: str, pid: str
) -> None:
    """No, zero, negative or unparsable WATCHDOG_USEC, or an unparsable WATCHDOG_PID, means no
    watchdog rather than a crash at start-up."""
    assert _notifier(receiver, WATCHDOG_USEC=usec, WATCHDOG_PID=pid).watchdog_interval() is None


# -- run_watchdog_pings ---------------------------------------------------------------------------

FAST = {"WATCHDOG_USEC": "40000"}  # WatchdogSec=40ms: a ping every 20 ms


async def _finish(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    stop.set()
    await asyncio.wait_for(task, timeout=1.0)


async def test_pings_only_while_healthy(receiver: socket.socket) -> None:
    """WATCHDOG=1 goes out every interval while healthy() is True, stops while it is False (so
    systemd restarts a daemon whose supervisor died) and resumes once it is True again."""
    healthy = True
    stop = asyncio.Event()
    task = asyncio.create_task(run_watchdog_pings(_notifier(receiver, **FAST), lambda: healthy, stop))
    try:
        assert await _next(receiver) == "WATCHDOG=1"
        assert await _next(receiver) == "WATCHDOG=1"

        healthy = False
        await asyncio.sleep(0.05)  # let a ping already past its health check land
        _received(receiver)
        await asyncio.sleep(0.15)  # seven intervals
        assert _received(receiver) == []

        healthy = True
        assert await _next(receiver) == "WATCHDOG=1"
    finally:
        await _finish(task, stop)


async def test_health_check_that_raises_withholds_pings(receiver: socket.socket) -> None:
    """A health check that raises counts as unhealthy: no ping, and the loop keeps running."""

    def broken() -> bool:
        raise RuntimeError("supervisor state unreadable")

    stop = asyncio.Event()
    task = asyncio.create_task(run_watchdog_pings(_notifier(receiver, **FAST), broken, stop))
    try:
        await asyncio.sleep(0.1)
        assert _received(receiver) == []
        assert not task.done()
    finally:
        await _finish(task, stop)


async def test_stop_ends_the_loop_at_once(receiver: socket.socket) -> None:
    """Setting stop ends the loop promptly, even in the middle of a long (15 s) interval."""
    stop = asyncio.Event()
    notifier = _notifier(receiver, WATCHDOG_USEC="30000000")
    task = asyncio.create_task(run_watchdog_pings(notifier, lambda: True, stop))
    assert await _next(receiver) == "WATCHDOG=1"
    started = time.monotonic()
    await _finish(task, stop)
    assert time.monotonic() - started < 1.0
    assert _received(receiver) == []


async def test_without_watchdog_waits_for_stop() -> None:
    """Without a watchdog the coroutine neither pings nor returns early: it waits for stop, so it
    can sit among root tasks where an early return would read as a failure."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_watchdog_pings(SystemdNotifier({}), lambda: True, stop))
    await asyncio.sleep(0.05)
    assert not task.done()
    await _finish(task, stop)
