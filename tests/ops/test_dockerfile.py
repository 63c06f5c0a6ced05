"""The Dockerfile: lint-clean, and the properties the image promises (DESIGN §2: slim, non-root,
runs `watchdog serve`). Docker itself is not needed: nothing here builds the image."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

BASE_IMAGE = "python:3.11-slim-bookworm"


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continuation line"
    result = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        result.append((instruction.upper(), " ".join(args.split())))
    return result


def _args(dockerfile: Path, instruction: str) -> list[str]:
    return [a for i, a in _instructions(dockerfile) if i == instruction]


@pytest.fixture(scope="module")
def dockerfile(repo_root: Path) -> Path:
    return repo_root / "Dockerfile"


def test_hadolint_finds_nothing(hadolint: Path, dockerfile: Path, tmp_path: Path) -> None:
    """hadolint reports no finding at any severity (style included), with inline
    `# hadolint ignore=` pragmas disabled and an empty rule config, so nothing is silenced
    (a stray ~/.config/hadolint.yaml cannot silence anything either)."""
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n")
    result = subprocess.run(
        [
            str(hadolint),
            "--no-color",
            "--disable-ignore-pragma",
            "--failure-threshold",
            "style",
            "--config",
            str(config),
            str(dockerfile),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_both_stages_use_the_same_pinned_slim_base(dockerfile: Path) -> None:
    """Builder and final stage start from the same pinned python:3.11-slim-bookworm: the copied
    venv's interpreter is a symlink into the base image, so the two must match exactly."""
    bases = [args.split()[0] for args in _args(dockerfile, "FROM")]
    assert len(bases) == 2
    assert {re.sub(r"@sha256:[0-9a-f]{64}$", "", base) for base in bases} == {BASE_IMAGE}
    assert bases[0] == bases[1]


def test_image_runs_as_fixed_non_root_user(dockerfile: Path) -> None:
    """The final stage switches to UID 10001 (numeric, so Kubernetes' runAsNonRoot can check it)
    and that user is created in the image."""
    users = _args(dockerfile, "USER")
    assert users == ["10001:10001"]
    assert "--uid 10001" in " ".join(_args(dockerfile, "RUN"))


def test_image_runs_watchdog_serve(dockerfile: Path) -> None:
    """ENTRYPOINT and CMD (exec form, so the daemon is PID 1 and gets SIGTERM) run
    `watchdog serve --config /etc/rollback-watchdog/watchdog.yaml`."""
    assert [json.loads(a) for a in _args(dockerfile, "ENTRYPOINT")] == [["watchdog"]]
    assert [json.loads(a) for a in _args(dockerfile, "CMD")] == [
        ["serve", "--config", "/etc/rollback-watchdog/watchdog.yaml"]
    ]


def test_image_exposes_state_port_and_health(dockerfile: Path) -> None:
    """Port 8080, the state volume, unbuffered logs, and a HEALTHCHECK on /healthz done with
    Python (the slim image has no curl)."""
    assert _args(dockerfile, "EXPOSE") == ["8080"]
    assert _args(dockerfile, "VOLUME") == ['["/var/lib/rollback-watchdog"]']
    assert "PYTHONUNBUFFERED=1" in " ".join(_args(dockerfile, "ENV"))
    (healthcheck,) = _args(dockerfile, "HEALTHCHECK")
    exec_form = json.loads(healthcheck.partition("CMD ")[2])
    assert exec_form[:2] == ["python", "-c"]
    assert "http://127.0.0.1:8080/healthz" in exec_form[2]
    compile(exec_form[2], "<healthcheck>", "exec")


def test_dockerignore_keeps_local_state_out_of_the_context(repo_root: Path) -> None:
    """The build context leaves out the venv, git history, caches, tests and local databases,
    but keeps what `pip install .` needs."""
    patterns = {
        line.strip()
        for line in (repo_root / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", "tests", "**/__pycache__", ".pytest_cache", "*.db"} <= patterns
    assert not {"pyproject.toml", "watchdog", "providers", "README.md"} & patterns
