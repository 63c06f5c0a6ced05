"""A real OpenSSH server (Debian's ``openssh-server``) on a free loopback port, for the ssh rollback
adapter's tests.

Each server runs ``sshd -D -e -f <config>`` with a config written into its own folder: its own host
key, an ``AuthorizedKeysFile`` holding a generated client key, no PAM, no passwords, and the PID
file and log beside them. It lets in only the user running the tests (root on CI, hence
``PermitRootLogin prohibit-password``). Keys are made with ``ssh-keygen``, once per set.

Real sshd rather than a fake: host key verification, the login, the remote shell that parses the
rendered command and the exit status are the real ones. The binary is ``/usr/sbin/sshd`` (the
Makefile's ``system-deps`` installs it); ``WATCHDOG_SSHD`` may point elsewhere.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Self

DEFAULT_BINARY: Final = "/usr/sbin/sshd"
START_ATTEMPTS: Final = 3
"""A free port found by binding port 0 can be taken before sshd binds it: try again."""
PRIVSEP_DIR: Final = Path("/run/sshd")
"""Debian's sshd, started as root, insists on this empty directory (its systemd unit creates it)."""


class SshdMissing(RuntimeError):
    """The OpenSSH server is not installed."""


def find_sshd() -> str:
    """The sshd binary, or an error that says how to get it."""
    candidate = os.environ.get("WATCHDOG_SSHD") or DEFAULT_BINARY
    if Path(candidate).is_file() and os.access(candidate, os.X_OK):
        return candidate
    raise SshdMissing(
        f"OpenSSH's server is not installed ({candidate} not found). The ssh rollback tests run a "
        "real sshd: run the project's test command (`make test`), which installs Debian's "
        "`openssh-server`, or `apt-get install openssh-server` (or set WATCHDOG_SSHD)."
    )


def find_keygen() -> str:
    found = shutil.which("ssh-keygen")
    if found is None:
        raise SshdMissing(
            "ssh-keygen is not installed (Debian's openssh-client, a dependency of openssh-server)"
        )
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path

    @property
    def public_line(self) -> str:
        """``<type> <base64>`` without the comment, as known_hosts and authorized_keys take it."""
        kind, blob, *_ = self.public.read_text().split()
        return f"{kind} {blob}"

    @classmethod
    def generate(cls, path: Path, comment: str) -> KeyPair:
        subprocess.run(
            [find_keygen(), "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
            capture_output=True,
        )
        return cls(path, path.with_name(path.name + ".pub"))


@dataclass(frozen=True)
class SshKeys:
    """The key material of a test session: the servers' host key, the client's key, and a second
    host key and client key that nothing trusts (for mismatch and refusal tests)."""

    host: KeyPair
    client: KeyPair
    other_host: KeyPair
    other_client: KeyPair

    @classmethod
    def generate(cls, folder: Path) -> SshKeys:
        folder.mkdir(parents=True, exist_ok=True)
        return cls(
            host=KeyPair.generate(folder / "host_ed25519", "test sshd host key"),
            client=KeyPair.generate(folder / "client_ed25519", "rollback-watchdog test client"),
            other_host=KeyPair.generate(folder / "other_host_ed25519", "a host key nobody trusts"),
            other_client=KeyPair.generate(folder / "other_client_ed25519", "a key nobody authorised"),
        )


CONFIG: Final = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {folder}/sshd.pid
AuthorizedKeysFile {folder}/authorized_keys
StrictModes no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowUsers {user}
LogLevel VERBOSE
MaxStartups 100:30:200
MaxSessions 100
"""

PENALTIES_OFF: Final = "PerSourcePenalties no\n"
"""OpenSSH 9.8+ delays a source after failed logins, which the refusal tests cause on purpose;
older servers (Debian 12 has 9.2) do not know the option."""


class SshServer:
    """``with SshServer(keys, folder) as sshd: sshd.port``: one sshd on 127.0.0.1."""

    def __init__(self, keys: SshKeys, folder: Path, *, user: str | None = None, start_timeout: float = 10.0):
        self.keys = keys
        self.folder = folder
        self.user = user or getpass.getuser()
        self.start_timeout = start_timeout
        self.host = "127.0.0.1"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``host:port`` as the adapter's `hosts` takes it."""
        return f"{self.host}:{self.port}"

    @property
    def log(self) -> str:
        path = self.folder / "sshd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def known_hosts_line(self, key: KeyPair | None = None) -> str:
        """This server's known_hosts entry, with its real host key or ``key`` instead."""
        return f"[{self.host}]:{self.port} {(key or self.keys.host).public_line}\n"

    def start(self) -> None:
        binary = find_sshd()
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "authorized_keys").write_text(self.keys.client.public_line + "\n")
        if os.geteuid() == 0:
            PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        problem = ""
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            config = self._write_config(binary)
            log = (self.folder / "sshd.log").open("ab")
            self._proc = subprocess.Popen(
                [binary, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
            log.close()
            problem = self._wait_ready()
            if not problem:
                return
            self.stop()
        raise RuntimeError(f"sshd did not start: {problem}")

    def _write_config(self, binary: str) -> Path:
        config = self.folder / "sshd_config"
        text = CONFIG.format(
            port=self.port, host_key=self.keys.host.private, folder=self.folder, user=self.user
        )
        config.write_text(text + PENALTIES_OFF)
        test = [binary, "-t", "-f", str(config)]
        check = subprocess.run(test, capture_output=True, text=True, check=False)
        if check.returncode != 0 and "PerSourcePenalties" in check.stderr:
            config.write_text(text)
            check = subprocess.run(test, capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"sshd refuses the test config: {check.stderr.strip()}")
        return config

    def _wait_ready(self) -> str:
        """'' once sshd sends its version banner; otherwise why it did not."""
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return f"exited with {self._proc.returncode}: {self.log[-2000:]}"
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 1) as s:
                s.settimeout(1)
                if s.recv(64).startswith(b"SSH-2.0-"):
                    return ""
            time.sleep(0.02)
        return f"no SSH banner on {self.address} within {self.start_timeout:g} s: {self.log[-2000:]}"

    def stop(self) -> None:
        """Terminate and wait; kill what does not exit. Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
