"""The systemd unit: it verifies cleanly, keeps its hardening, and the runtime survives it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from watchdog.config.models import StoreConfig

SYSTEMD_ANALYZE = Path("/usr/bin/systemd-analyze")
SHIPPED_BINARY = "/opt/rollback-watchdog/bin/watchdog"


def _unit_entries(path: Path) -> dict[str, list[tuple[str, str]]]:
    """The unit's (key, value) pairs per section, in order; keys may repeat (SystemCallFilter)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path}: {raw!r} comes before any section"
        key, sep, value = line.partition("=")
        assert sep, f"{path}: {raw!r} is not KEY=VALUE"
        current.append((key.strip(), value.strip()))
    return sections


def _values(path: Path, section: str, key: str) -> list[str]:
    return [v for k, v in _unit_entries(path).get(section, []) if k == key]


@pytest.fixture(scope="module")
def systemd_analyze() -> Path:
    """systemd-analyze, which ships with systemd on every Linux host the unit is for."""
    if not sys.platform.startswith("linux"):
        pytest.skip("systemd-analyze exists only on Linux")
    if not SYSTEMD_ANALYZE.is_file():
        pytest.fail(f"{SYSTEMD_ANALYZE} is missing; install systemd (apt-get install systemd)")
    return SYSTEMD_ANALYZE


def test_unit_passes_systemd_analyze_verify(
    systemd_analyze: Path, unit_path: Path, venv_bin: Path, tmp_path: Path
) -> None:
    """`systemd-analyze verify` accepts the unit with exit 0 and prints nothing at all.

    verify also checks that ExecStart's binary exists and is executable, and
    /opt/rollback-watchdog/bin/watchdog exists only on an installed host. So the test copies the
    unit as shipped, under its own name, into a temporary directory and substitutes exactly one
    thing: that path, for this venv's real `watchdog` console script (the same entry point the
    venv in /opt would hold). Every other byte is what ships, and the test checks that the
    substitution touched nothing else. (`--root=` with a fake /opt does not work: verify then
    also wants sysinit.target and the rest of a system inside the root.)
    """
    binary = venv_bin / "watchdog"
    assert binary.is_file(), f"{binary} missing: install the project (.venv/bin/pip install -e .)"
    shipped = unit_path.read_text()
    assert shipped.count(SHIPPED_BINARY) == 1, "expected the binary path exactly once (ExecStart)"
    candidate = shipped.replace(SHIPPED_BINARY, str(binary))
    differing = [(a, b) for a, b in zip(shipped.splitlines(), candidate.splitlines(), strict=True) if a != b]
    assert len(differing) == 1 and differing[0][0].startswith(f"ExecStart={SHIPPED_BINARY} ")

    copy = tmp_path / unit_path.name
    copy.write_text(candidate)
    result = subprocess.run(
        [str(systemd_analyze), "verify", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_unit_is_type_notify_with_watchdog(unit_path: Path) -> None:
    """The daemon signals readiness itself (Type=notify, only the main process may) and is
    restarted when it stops pinging the watchdog for 30 s or fails."""
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "30",
        "ExecStart": f"{SHIPPED_BINARY} serve --config /etc/rollback-watchdog/watchdog.yaml",
        "Restart": "on-failure",
        "RestartSec": "5",
        "TimeoutStopSec": "20",
        "KillSignal": "SIGTERM",
        "DynamicUser": "yes",
        "StateDirectory": "rollback-watchdog",
        "ConfigurationDirectory": "rollback-watchdog",
        "EnvironmentFile": "-/etc/rollback-watchdog/env",
        "UMask": "0077",
    }
    for key, value in expected.items():
        assert _values(unit_path, "Service", key) == [value], key
    assert _values(unit_path, "Install", "WantedBy") == ["multi-user.target"]


def test_unit_keeps_its_hardening(unit_path: Path) -> None:
    """Every hardening option stays in place with its value: dropping one is a security
    regression that `systemd-analyze verify` would not notice."""
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "NoNewPrivileges": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "ProtectClock": "yes",
        "ProtectHostname": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "RestrictNamespaces": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
    }
    for key, value in expected.items():
        assert _values(unit_path, "Service", key) == [value], key
    assert _values(unit_path, "Service", "SystemCallFilter") == [
        "@system-service",
        "~@privileged @resources",
    ]


def test_store_path_is_inside_the_state_directory(unit_path: Path) -> None:
    """The default store (sqlite:///var/lib/rollback-watchdog/state.db) lies in the only
    directory ProtectSystem=strict leaves writable: StateDirectory=rollback-watchdog."""
    state_dir = Path("/var/lib") / _values(unit_path, "Service", "StateDirectory")[0]
    store = Path(StoreConfig().url.removeprefix("sqlite://"))
    assert store.parent == state_dir


def test_runtime_works_without_writable_executable_memory() -> None:
    """numpy, scipy and the rest of the runtime need no W+X memory (no JIT), so
    MemoryDenyWriteExecute=yes cannot break them.

    systemd enforces that setting with seccomp; the kernel's PR_SET_MDWE (Linux 6.3+) enforces
    the same rule, so a child interpreter turns it on, proves that W+X mappings are refused,
    then imports the runtime and runs the numerical kernels the analysis engine uses.
    """
    probe = textwrap.dedent(
        """
        import ctypes, mmap, sys
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
            sys.exit(77)
        try:
            mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        except OSError:
            pass
        else:
            sys.exit("W+X mapping was allowed: the probe proves nothing")
        import sqlite3
        import aiohttp, aiosqlite, prometheus_client, pydantic, structlog, tenacity, yaml
        import numpy as np, scipy.linalg, scipy.special, scipy.stats
        import watchdog.config, watchdog.systemd
        x = np.random.default_rng(0).normal(size=(300, 300))
        scipy.linalg.solve(x @ x.T + np.eye(300), np.ones(300))
        scipy.stats.mannwhitneyu(x[0], x[1])
        scipy.special.betaln(3.0, 4.0)
        sqlite3.connect(":memory:").execute("select 1").fetchall()
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr
