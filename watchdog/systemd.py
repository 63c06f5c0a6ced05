"""Talk to systemd: readiness, status, and a watchdog that only pings while the daemon is healthy.

Why our own client instead of ``sdnotify``/``systemd-python``: the protocol is one datagram of
``KEY=VALUE`` lines sent to the AF_UNIX socket named in ``$NOTIFY_SOCKET`` (see sd_notify(3)),
a C binding would add a compiled dependency to a daemon that otherwise installs from wheels, and we
want two things the libraries do not give us: sending never raises (a lost notification must not
take the daemon down), and the socket is non-blocking (a full notification queue must not freeze
the event loop that watches production deploys).

Everything here is a no-op when ``$NOTIFY_SOCKET`` is unset, so the same code runs under systemd, in
a container, in tests and in a terminal.

The watchdog is the point of the unit's ``WatchdogSec=``: :func:`run_watchdog_pings` sends
``WATCHDOG=1`` only while ``healthy()`` says so, from a task on the event loop. If the loop is
wedged (a blocking call, a busy analysis) the task never runs; if the supervisor of watches died,
``healthy()`` is False. Either way the pings stop and systemd restarts us, which beats a process
that is alive but no longer watching deploys.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping

import structlog

__all__ = ["SystemdNotifier", "run_watchdog_pings"]

log = structlog.get_logger(__name__)


class SystemdNotifier:
    """A client for systemd's notification socket (sd_notify(3)), safe to call from the event loop.

    The environment is read once, at construction, so a test can inject its own mapping and the
    daemon's behaviour cannot change halfway through because something edited ``os.environ``.
    Every method returns whether the message went out and never raises: a notification that cannot
    be delivered is logged, and the daemon goes on watching deploys.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _parse_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = env.get("WATCHDOG_USEC", "")
        self._watchdog_pid = env.get("WATCHDOG_PID", "")
        self._sock: socket.socket | None = None
        self._failing = False

    @property
    def enabled(self) -> bool:
        """Whether there is a notification socket to talk to (i.e. systemd started us as
        ``Type=notify``)."""
        return self._address is not None

    def ready(self) -> bool:
        """Tell systemd that start-up is complete: ``systemctl start`` returns and dependent units
        start only now, so call it once the server listens and the store is open."""
        return self.notify("READY=1")

    def stopping(self) -> bool:
        """Tell systemd that shutdown has begun, so ``systemctl status`` shows "deactivating"
        while in-flight work drains instead of a service that looks hung."""
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        """Set the one-line status ``systemctl status`` shows (e.g. "watching 3 deployments").

        Newlines would start a new ``KEY=VALUE`` assignment in the datagram, so they become spaces.
        """
        return self.notify("STATUS=" + " ".join(text.splitlines()))

    def watchdog_ping(self) -> bool:
        """Reset systemd's watchdog timer (``WatchdogSec=``). Prefer :func:`run_watchdog_pings`,
        which pings only while the daemon is healthy."""
        return self.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings: half of ``$WATCHDOG_USEC``, or None when the watchdog is off.

        Half, as sd_watchdog_enabled(3) recommends, so one late ping does not get us killed.
        ``$WATCHDOG_PID``, when set, names the process the watchdog is meant for; a child that
        inherited the environment (or a process systemd did not start) must not ping, so any other
        PID gets None. Malformed values also give None: better no watchdog than a crash at start.
        Without ``$NOTIFY_SOCKET`` there is no one to ping, so None as well.
        """
        if self._address is None or not self._watchdog_usec:
            return None
        if self._watchdog_pid:
            try:
                pid = int(self._watchdog_pid)
            except ValueError:
                log.warning("systemd.watchdog_pid_invalid", value=self._watchdog_pid)
                return None
            if pid != os.getpid():
                return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            log.warning("systemd.watchdog_usec_invalid", value=self._watchdog_usec)
            return None
        if usec <= 0:
            return None
        return usec / 2 / 1_000_000

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments in one datagram; True if it was sent.

        A no-op (False) without ``$NOTIFY_SOCKET``. Errors (socket gone, queue full, permission)
        are logged, once per run of failures so a missing socket does not flood the journal every
        ping, and swallowed.
        """
        if self._address is None:
            return False
        payload = "\n".join(assignments).encode("utf-8", "replace")
        try:
            if self._sock is None:
                # Not inherited by child processes (PEP 446); NotifyAccess=main makes systemd
                # ignore anything a child sends anyway.
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                # Never block the event loop: a full receive queue fails at once (EAGAIN) instead.
                self._sock.setblocking(False)
            self._sock.sendto(payload, self._address)
        except OSError as exc:
            self._close_socket()  # start afresh next time, in case the socket was replaced
            if not self._failing:
                log.warning(
                    "systemd.notify_failed",
                    socket=_printable(self._address),
                    message=assignments[0].partition("=")[0] if assignments else "",
                    error=str(exc),
                )
            self._failing = True
            return False
        if self._failing:
            log.info("systemd.notify_recovered", socket=_printable(self._address))
            self._failing = False
        return True

    def close(self) -> None:
        """Release the socket. Further calls reopen it, so closing early is harmless."""
        self._close_socket()

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


async def run_watchdog_pings(
    notifier: SystemdNotifier,
    healthy: Callable[[], bool],
    stop: asyncio.Event,
) -> None:
    """Ping systemd's watchdog every :meth:`SystemdNotifier.watchdog_interval` while ``healthy()``.

    A ping is the daemon vouching that it still works, so it is sent only when ``healthy()``
    returns True (say, the supervisor of watches is running). When it returns False or raises,
    the ping is withheld and, after ``WatchdogSec=``, systemd kills and restarts us
    (``Restart=on-failure``). A wedged event loop withholds pings by itself: this coroutine never
    gets to run.

    Returns promptly once ``stop`` is set, and only then: without a watchdog (no socket, no
    ``$WATCHDOG_USEC``) it simply waits for ``stop``, so it can sit among the daemon's root tasks,
    where a task that ends early means trouble. It uses monotonic loop time rather than the
    injected clock on purpose: systemd's timer runs in real time even when a Watch does not.
    """
    interval = notifier.watchdog_interval()
    if interval is None:
        await stop.wait()
        return
    log.info("systemd.watchdog_enabled", interval=interval)
    was_healthy = True
    while not stop.is_set():
        try:
            ok = bool(healthy())
        except Exception as exc:  # a broken health check is an unhealthy daemon, not a crash
            log.warning("systemd.health_check_failed", error=repr(exc))
            ok = False
        if ok:
            notifier.watchdog_ping()
            if not was_healthy:
                log.info("systemd.watchdog_resumed")
        elif was_healthy:
            log.error("systemd.watchdog_withheld", reason="unhealthy", interval=interval)
        was_healthy = ok
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except TimeoutError:
            continue


def _parse_address(value: str) -> str | None:
    """``$NOTIFY_SOCKET`` as a ``sendto`` address, or None if there is none we can use.

    A leading ``@`` names a Linux abstract socket (no file; the kernel wants a NUL byte instead).
    Anything that is neither abstract nor an absolute path (``vsock:`` addresses for VMs, garbage)
    is logged and ignored rather than fatal.
    """
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    log.warning("systemd.notify_socket_unsupported", socket=value)
    return None


def _printable(address: str) -> str:
    return "@" + address[1:] if address.startswith("\0") else address
