"""A minimal PEP 517 build backend, in the source tree, so the test suite can install this example
offline and without build isolation (``pip install --no-build-isolation --no-index``).

A real provider package needs none of this: it names setuptools, hatchling or any other backend in
``[build-system]``. This one reads ``[project]`` name, version and entry points from
``pyproject.toml`` and packs every package folder beside it (a folder with ``__init__.py``) into a
pure-Python wheel.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import tarfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path.cwd()


def _project() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        project: dict[str, Any] = tomllib.load(f)["project"]
    return project


def _names(project: dict[str, Any]) -> tuple[str, str]:
    """(distribution name as written, its wheel-file form)."""
    name = str(project["name"])
    return name, re.sub(r"[-_.]+", "_", name).lower()


def _packages() -> list[Path]:
    return sorted(p for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").is_file())


def _metadata(project: dict[str, Any]) -> dict[str, str]:
    """The dist-info files besides RECORD."""
    name, _ = _names(project)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {project['version']}"]
    if project.get("description"):
        lines.append(f"Summary: {project['description']}")
    if project.get("requires-python"):
        lines.append(f"Requires-Python: {project['requires-python']}")
    lines.extend(f"Requires-Dist: {dep}" for dep in project.get("dependencies", []))
    entry_points = []
    for group, entries in project.get("entry-points", {}).items():
        entry_points.append(f"[{group}]")
        entry_points.extend(f"{key} = {value}" for key, value in entries.items())
        entry_points.append("")
    wheel = "Wheel-Version: 1.0\nGenerator: watchdog-example-backend\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    return {
        "METADATA": "\n".join(lines) + "\n",
        "WHEEL": wheel,
        "entry_points.txt": "\n".join(entry_points),
    }


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return []


def get_requires_for_build_sdist(config_settings: dict[str, Any] | None = None) -> list[str]:
    return []


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    project = _project()
    _, safe = _names(project)
    dist_info = f"{safe}-{project['version']}.dist-info"
    filename = f"{safe}-{project['version']}-py3-none-any.whl"
    files: dict[str, bytes] = {}
    for package in _packages():
        for source in sorted(package.rglob("*.py")):
            files[source.relative_to(ROOT).as_posix()] = source.read_bytes()
    for name, text in _metadata(project).items():
        files[f"{dist_info}/{name}"] = text.encode()
    record = [_record_line(path, data) for path, data in files.items()]
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(Path(wheel_directory) / filename, "w", zipfile.ZIP_DEFLATED) as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)
    return filename


def build_sdist(sdist_directory: str, config_settings: dict[str, Any] | None = None) -> str:
    project = _project()
    _, safe = _names(project)
    base = f"{safe}-{project['version']}"
    filename = f"{base}.tar.gz"
    with tarfile.open(Path(sdist_directory) / filename, "w:gz") as sdist:
        for path in ["pyproject.toml", *(p.name for p in _packages()), "_build"]:
            sdist.add(ROOT / path, arcname=f"{base}/{path}", filter=_no_caches)
        info = _metadata(project)["METADATA"].encode()
        entry = tarfile.TarInfo(f"{base}/PKG-INFO")
        entry.size = len(info)
        sdist.addfile(entry, io.BytesIO(info))
    return filename


def _no_caches(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if "__pycache__" in info.name else info
