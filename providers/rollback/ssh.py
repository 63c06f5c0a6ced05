"""Rollback by running a command over SSH on every host of a fleet (asyncssh): the way services
deployed with rsync, a package or a systemd unit are put back.

The command is a template: ``{service}``, ``{version}``, ``{baseline_version}``, ``{environment}``,
``{idempotency_key}``, ``{host}`` and the event's target fields and labels, each value shell-quoted
(``shlex.quote``), so a version string like ``v1; rm -rf /`` arrives as one literal argument.
``${NAME}`` is left to the remote shell.

Host keys are always verified against ``known_hosts``; there is no switch to turn that off. A
rollback is the moment an attacker in the middle would most like to be trusted.

Success means exit status 0 on every host. Otherwise the rollback fails with a message that lists
each host's status and the last lines of its output, and an exception whose ``details`` holds the same
per host, for the core to store::

    every failed host unreachable (refused, no route, DNS, connect timeout)
                                        → HostsUnreachable (a TemporaryError): the core retries, and
                                          a retry runs the command only on the hosts that have not
                                          succeeded yet for this idempotency key
    non-zero exit, signal, command timeout, host key not verified, login refused, unreadable key
                                        → SshRollbackFailed (a PermanentError)

A command that timed out may still be running on its host, so it is never retried automatically.
After a crash the core calls again with the same idempotency key, and this process no longer knows
which hosts succeeded: the command runs everywhere again. Write it so that a second run is harmless
("deploy {baseline_version}" is), or let it use ``{idempotency_key}`` to notice.
"""

from __future__ import annotations

import asyncio
import enum
import shlex
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import asyncssh
import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from providers import _http
from providers.rollback import _templating
from watchdog.config.models import Duration
from watchdog.errors import PermanentError, TemporaryError
from watchdog.plugins import AdapterContext
from watchdog.ports import RollbackRequest, RollbackResult

log = structlog.get_logger("providers.rollback.ssh")

OUTPUT_BUFFER: Final = 16 * 1024
"""Characters of a host's combined output kept while it runs (the end of it): a chatty command
cannot fill memory, and the last lines are what explains a failure."""
LINE_LIMIT: Final = 300
"""Characters of one output line kept."""
MESSAGE_LINES: Final = 5
"""Output lines per host quoted in the failure message (the stored details keep `output_lines`)."""
REMEMBERED_KEYS: Final = 256
"""Idempotency keys whose succeeded hosts are remembered between the core's retries."""


class Status(enum.StrEnum):
    """What happened on one host."""

    OK = "ok"
    FAILED = "failed"  # the command ran and exited non-zero, or was killed by a signal
    TIMEOUT = "timeout"  # the command started and did not finish within `timeout`
    UNREACHABLE = "unreachable"  # no SSH connection (refused, no route, DNS, connect timeout)
    HOST_KEY = "host_key_not_verified"
    LOGIN_REFUSED = "login_refused"
    ERROR = "error"  # anything else (a protocol error, the connection dropped mid-command)


TRANSIENT: Final = frozenset({Status.UNREACHABLE})
"""Statuses a retry may change without anyone acting; the others need a person."""


@dataclass
class HostResult:
    """One host's outcome, as stored in the deployment and quoted in the message."""

    host: str
    status: Status
    exit_status: int | None = None
    exit_signal: str | None = None
    output_tail: list[str] = field(default_factory=list)
    error: str | None = None
    duration: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "status": self.status.value,
            "exit_status": self.exit_status,
            "exit_signal": self.exit_signal,
            "output_tail": self.output_tail,
            "error": self.error,
            "duration": round(self.duration, 3),
        }

    def summary(self) -> str:
        """One line for a person: the status and, for a failure, why and the output's end."""
        if self.status is Status.OK:
            return f"{self.host}: ok (exit status 0)"
        if self.status is Status.FAILED:
            what = (
                f"killed by signal {self.exit_signal}"
                if self.exit_signal
                else f"exit status {self.exit_status}"
            )
        else:
            what = f"{self.status.value}: {self.error}"
        tail = self.output_tail[-MESSAGE_LINES:]
        output = " ⏎ ".join(_http.clip(line, 200) for line in tail) if tail else "(no output)"
        return f"{self.host}: {what}; output: {output}"


class SshRollbackFailed(PermanentError):
    """The command did not succeed on every host and a retry will not fix it.

    ``details["hosts"]`` lists every host's result (``HostResult.to_json()``) in the configured
    order; empty when nothing could be tried (an unreadable key or known_hosts file).
    """


class HostsUnreachable(TemporaryError):
    """Every host that did not succeed could not be reached; a retry may reach them.

    ``details["hosts"]`` lists every host's result, as for :class:`SshRollbackFailed`.
    """


@dataclass(frozen=True)
class _Host:
    name: str
    port: int

    @property
    def label(self) -> str:
        return f"[{self.name}]:{self.port}" if ":" in self.name else f"{self.name}:{self.port}"


def _parse_host(text: str, default_port: int) -> _Host:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""
    value = text.strip()
    if not value:
        raise ValueError("a host is empty")
    if value.startswith("["):
        inside, bracket, rest = value[1:].partition("]")
        if not bracket or not inside or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not [address]:port")
        return _Host(inside, _port(rest[1:], text) if rest else default_port)
    if value.count(":") == 1:
        name, _, port = value.partition(":")
        if not name:
            raise ValueError(f"{text!r} has no host name")
        return _Host(name, _port(port, text))
    return _Host(value, default_port)


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{whole!r}: {text!r} is not a port (1-65535)")
    return int(text)


class SshRollbackSettings(BaseModel):
    """The keys of a ``rollback.<name>`` section with ``type: ssh``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    hosts: list[str] = Field(min_length=1)
    """The fleet: `host`, `host:port` or `[ipv6]:port`, each listed in `known_hosts`."""
    port: int = Field(default=22, gt=0, lt=65536)
    """Port for hosts listed without one. 22 by default."""
    user: str = Field(min_length=1)
    """The login name on every host."""
    key_file: str = Field(min_length=1)
    """Private key file (OpenSSH or PEM format; `~` is expanded). Read at each rollback, so a rotated
    key needs no restart."""
    passphrase: SecretStr | None = None
    """The key's passphrase, if it has one: `${SSH_KEY_PASSPHRASE}`."""
    known_hosts: str = Field(min_length=1)
    """OpenSSH known_hosts file holding every host's key (`[host]:port` entries for other ports).
    Required: host keys are always verified. Fill it with `ssh-keyscan -p PORT HOST` and check the
    fingerprints out of band."""
    command: str = Field(min_length=1)
    """The command run on each host (template; values are shell-quoted), e.g.
    `sudo /usr/local/bin/deploy {service} {baseline_version}`."""
    parallel: int = Field(default=10, ge=1, le=1000)
    """Hosts worked on at once. 10 by default: fast for a small fleet, gentle on a large one (and on
    the load balancer while instances restart)."""
    timeout: Duration = 300.0
    """Budget per host, from connecting to the command's exit. 5m by default: a package install or
    a service restart with a warm-up fits; a command still running after it is reported as timed
    out (it may still be running on the host) and is never started again automatically."""
    connect_timeout: Duration = 10.0
    """Budget for reaching one host and logging in (part of `timeout`). 10s by default; a host
    that does not answer in time counts as unreachable, which a retry may fix."""
    output_lines: int = Field(default=20, ge=1, le=1000)
    """Last lines of each host's output (stdout and stderr together) kept in the deployment."""

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        seen: set[tuple[str, int | None]] = set()
        for text in value:
            host = _parse_host(text, 0)
            key = (host.name, host.port or None)
            if key in seen:
                raise ValueError(f"{text!r} is listed twice")
            seen.add(key)
        return value

    def parsed_hosts(self) -> list[_Host]:
        return [_parse_host(text, self.port) for text in self.hosts]


@dataclass
class _Credentials:
    key: asyncssh.SSHKey
    known_hosts: asyncssh.SSHKnownHosts


class SshRollback:
    """A :class:`watchdog.ports.RollbackTarget` that runs a command on every host over SSH."""

    Settings = SshRollbackSettings

    def __init__(self, name: str, settings: SshRollbackSettings) -> None:
        self.name = name
        self._settings = settings
        self._hosts = settings.parsed_hosts()
        self._succeeded: OrderedDict[str, dict[str, HostResult]] = OrderedDict()

    @classmethod
    def from_settings(cls, name: str, settings: SshRollbackSettings, context: AdapterContext) -> SshRollback:
        return cls(name, settings)

    async def rollback(self, request: RollbackRequest) -> RollbackResult:
        """Run the command on every host not yet done for this key; all must exit 0."""
        values = _templating.template_values(request)
        commands = {host: self._render(host, values, request) for host in self._hosts}
        credentials = self._credentials()
        done = self._succeeded.get(request.idempotency_key, {})
        todo = [host for host in self._hosts if host.label not in done]
        gate = asyncio.Semaphore(self._settings.parallel)

        async def run(host: _Host) -> HostResult:
            async with gate:
                return await self._run(host, commands[host], credentials)

        fresh = {r.host: r for r in await asyncio.gather(*(run(h) for h in todo))}
        results = [done.get(h.label) or fresh[h.label] for h in self._hosts]
        details = [r.to_json() for r in results]
        failed = [r for r in results if r.status is not Status.OK]
        log.info(
            "rollback.ssh_done",
            hosts=len(results),
            failed=len(failed),
            skipped=len(self._hosts) - len(todo),
        )
        if not failed:
            self._succeeded.pop(request.idempotency_key, None)
            skipped = len(self._hosts) - len(todo)
            again = f" ({skipped} of them in an earlier attempt)" if skipped else ""
            return RollbackResult(
                detail=f"ran the rollback command on {len(results)} host(s){again}: all exited 0",
                data={"hosts": details},
            )
        message = self._failure_message(results, failed)
        if all(r.status in TRANSIENT for r in failed):
            self._remember(request.idempotency_key, [r for r in results if r.status is Status.OK])
            raise HostsUnreachable(message, details={"hosts": details})
        self._succeeded.pop(request.idempotency_key, None)
        raise SshRollbackFailed(message, details={"hosts": details})

    async def aclose(self) -> None:
        self._succeeded.clear()

    # --- preparation ---------------------------------------------------------------------------

    def _render(self, host: _Host, values: dict[str, str], request: RollbackRequest) -> str:
        return _templating.render(
            self._settings.command,
            {**values, "host": host.name},
            shlex.quote,
            what=f"rollback target {self.name!r}: `command`",
            deployment_id=request.deployment.id,
        )

    def _credentials(self) -> _Credentials:
        """The key and known hosts, read now: a rotated file needs no restart. Either unreadable
        stops the rollback before any host is touched."""
        settings = self._settings
        where = f"rollback target {self.name!r}"
        key_path = Path(settings.key_file).expanduser()
        known_path = Path(settings.known_hosts).expanduser()
        passphrase = settings.passphrase.get_secret_value() if settings.passphrase else None
        try:
            key = asyncssh.read_private_key(key_path, passphrase)
        except (OSError, asyncssh.KeyImportError, asyncssh.KeyEncryptionError, ValueError) as exc:
            hint = (
                "the key is encrypted: set `passphrase`, or check it"
                if passphrase is None and "passphrase" in str(exc).lower()
                else "check that the file exists, is readable by the watchdog's user and is an SSH "
                "private key (and its `passphrase`)"
            )
            raise SshRollbackFailed(f"{where}: cannot read `key_file` {key_path}: {exc}; {hint}") from exc
        try:
            known = asyncssh.read_known_hosts(str(known_path))
        except (OSError, ValueError) as exc:
            raise SshRollbackFailed(
                f"{where}: cannot read `known_hosts` {known_path}: {exc}. Host keys are always "
                "verified: create the file with `ssh-keyscan -p PORT HOST` and check the fingerprints "
                "out of band"
            ) from exc
        return _Credentials(key, known)

    # --- one host --------------------------------------------------------------------------------

    async def _run(self, host: _Host, command: str, credentials: _Credentials) -> HostResult:
        settings = self._settings
        started = time.monotonic()
        output = _Output()
        connected = False
        try:
            async with asyncio.timeout(settings.timeout):
                async with asyncssh.connect(
                    host.name,
                    host.port,
                    username=settings.user,
                    client_keys=[credentials.key],
                    known_hosts=credentials.known_hosts,
                    config=[],
                    agent_path=None,
                    preferred_auth="publickey",
                    password=None,
                    connect_timeout=min(settings.connect_timeout, settings.timeout),
                    login_timeout=min(settings.connect_timeout, settings.timeout),
                    request_pty=False,
                ) as connection:
                    connected = True
                    process = await connection.create_process(
                        command,
                        stdin=asyncssh.DEVNULL,
                        stderr=asyncssh.STDOUT,
                        encoding="utf-8",
                        errors="replace",
                    )
                    await output.read(process.stdout)
                    completed = await process.wait(check=False)
        except TimeoutError:
            if not connected:
                budget = min(settings.connect_timeout, settings.timeout)
                why = f"no SSH connection within {budget:g} s"
                return self._result(host, Status.UNREACHABLE, started, error=why)
            return self._result(
                host,
                Status.TIMEOUT,
                started,
                tail=output.tail(settings.output_lines),
                error=(
                    f"the command did not finish within {settings.timeout:g} s; it may still be "
                    "running on the host: check it there before acting"
                ),
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            return self._result(
                host,
                Status.HOST_KEY,
                started,
                error=(
                    f"its host key is not in `known_hosts` {settings.known_hosts} or does not match "
                    f"({exc.reason}). If the host was rebuilt, check its new key out of band "
                    f"(ssh-keyscan -p {host.port} {host.name}, compare the fingerprint) and update "
                    "known_hosts; otherwise someone may be in the middle: nothing was run there"
                ),
            )
        except asyncssh.PermissionDenied as exc:
            return self._result(
                host,
                Status.LOGIN_REFUSED,
                started,
                error=(
                    f"user {settings.user!r} was refused with `key_file` {settings.key_file} "
                    f"({exc.reason}); check the user's authorized_keys on the host"
                ),
            )
        except (OSError, asyncssh.ConnectionLost) as exc:
            if connected:
                why = f"the connection broke mid-command: {exc}"
                tail = output.tail(settings.output_lines)
                return self._result(host, Status.ERROR, started, tail=tail, error=why)
            return self._result(host, Status.UNREACHABLE, started, error=_os_error(exc))
        except asyncssh.Error as exc:
            why = f"{type(exc).__name__}: {exc.reason}"
            tail = output.tail(settings.output_lines)
            return self._result(host, Status.ERROR, started, tail=tail, error=why)
        status = Status.OK if completed.exit_status == 0 else Status.FAILED
        return self._result(
            host,
            status,
            started,
            tail=output.tail(settings.output_lines),
            exit_status=completed.exit_status if completed.exit_status != -1 else None,
            exit_signal=completed.exit_signal[0] if completed.exit_signal else None,
        )

    @staticmethod
    def _result(
        host: _Host,
        status: Status,
        started: float,
        *,
        tail: list[str] | None = None,
        error: str | None = None,
        exit_status: int | None = None,
        exit_signal: str | None = None,
    ) -> HostResult:
        result = HostResult(
            host=host.label,
            status=status,
            exit_status=exit_status,
            exit_signal=exit_signal,
            output_tail=tail or [],
            error=error,
            duration=time.monotonic() - started,
        )
        log.info("rollback.ssh_host", host=host.label, status=status.value, exit_status=exit_status)
        return result

    # --- the outcome -----------------------------------------------------------------------------

    def _remember(self, key: str, succeeded: Sequence[HostResult]) -> None:
        self._succeeded[key] = {r.host: r for r in succeeded}
        self._succeeded.move_to_end(key)
        while len(self._succeeded) > REMEMBERED_KEYS:
            self._succeeded.popitem(last=False)

    def _failure_message(self, results: list[HostResult], failed: list[HostResult]) -> str:
        ok = len(results) - len(failed)
        if all(r.status in TRANSIENT for r in failed):
            advice = (
                "unreachable; retries run the command only where it has not succeeded yet, and if "
                "this is the last word, roll those hosts back by hand once they are reachable"
            )
        elif ok:
            advice = f"{ok} host(s) rolled back; roll back or repair the others by hand"
        else:
            advice = "no host rolled back; act on the hosts by hand"
        lines = "\n".join(f"- {r.summary()}" for r in results)
        return (
            f"rollback target {self.name!r}: the command failed on {len(failed)} of {len(results)} "
            f"host(s) ({advice}):\n{lines}"
        )


class _Output:
    """The end of a host's output, kept while it arrives: what it printed before a timeout is
    still there to quote."""

    def __init__(self) -> None:
        self._buffer = ""

    async def read(self, stream: asyncssh.SSHReader[str]) -> None:
        """Read ``stream`` to EOF, keeping only its last ``OUTPUT_BUFFER`` characters."""
        while True:
            chunk = await stream.read(8192)
            if not chunk:
                return
            self._buffer = (self._buffer + chunk)[-OUTPUT_BUFFER:]

    def tail(self, lines: int) -> list[str]:
        return [_http.clip(line, LINE_LIMIT) for line in self._buffer.splitlines()[-lines:]]


def _os_error(exc: BaseException) -> str:
    """A connection failure in words: the OS's text, or the class name when it has none."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused ({text}): is sshd running and listening on this port?"
    return text
