"""The import contract (DESIGN §2, STYLE "Take from them" 9): `watchdog` never imports `providers`
(adapters register through entry points), and an adapter module never imports another adapter: only
the shared helpers of its own package (modules whose name starts with `_`, in the same directory)
or the helpers shared by every adapter (`providers/_*.py`).

Checked statically with `ast`, so an import hidden in a function body counts too."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "watchdog"
PROVIDERS = REPO / "providers"


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path = REPO) -> Iterator[tuple[int, str]]:
    """Every module an import statement in ``path`` loads, absolute, with its line. ``from a.b import c``
    yields ``a.b`` and ``a.b.c`` (c may be a submodule); relative imports are resolved against the
    file's package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:
                if alias.name != "*":
                    yield node.lineno, f"{module}.{alias.name}"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def python_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def is_providers(module: str) -> bool:
    return module == "providers" or module.startswith("providers.")


def test_the_walk_sees_the_code() -> None:
    """Guard against a vacuous pass: both trees are found and hold modules."""
    assert len(python_files(CORE)) > 10
    assert any(p.parent != PROVIDERS for p in python_files(PROVIDERS))


def test_watchdog_never_imports_providers() -> None:
    """The core knows adapters only through the entry-point group, so a user's own adapter package
    is a first-class citizen and the core can be tested without any adapter."""
    violations = [
        f"{path.relative_to(REPO)}:{line}: imports {module}"
        for path in python_files(CORE)
        for line, module in imported_modules(path)
        if is_providers(module)
    ]
    assert not violations, "watchdog/ must not import providers/:\n" + "\n".join(violations)


def allowed_for(path: Path, module: str) -> bool:
    """Whether an adapter module at ``path`` may import the providers module ``module``: helpers of
    its own package, or the library of helpers shared by all adapters (``providers/_*.py``), which
    itself imports no adapter."""
    if module == "providers":
        return True  # `from providers import _http` names the package on its way to the helpers
    shared = module.removeprefix("providers.").split(".")[0]
    if module.startswith("providers.") and shared.startswith("_") and (PROVIDERS / f"{shared}.py").exists():
        return True
    package_dir = path.parent
    package = module_name(package_dir / "__init__.py")
    if module == package:
        return True  # `from providers.notify import _render` names the package on its way to _render
    if not module.startswith(package + "."):
        return False
    first = module.removeprefix(package + ".").split(".")[0]
    helper = package_dir / f"{first}.py"
    helper_pkg = package_dir / first / "__init__.py"
    return first.startswith("_") and (helper.exists() or helper_pkg.exists())


def test_providers_import_only_their_own_packages_shared_helpers() -> None:
    """An adapter module imports no other adapter (nor another kind's helpers): only `_`-prefixed
    helper modules next to it. Adapters stay separable, as if each were its own distribution."""
    violations = []
    for path in python_files(PROVIDERS):
        if path.parent == PROVIDERS:
            for line, module in imported_modules(path):
                if is_providers(module) and module != "providers":
                    violations.append(f"{path.relative_to(REPO)}:{line}: imports {module}")
            continue
        for line, module in imported_modules(path):
            if is_providers(module) and not allowed_for(path, module):
                violations.append(f"{path.relative_to(REPO)}:{line}: imports {module}")
    assert not violations, "providers may import only `_` helpers of their own package:\n" + "\n".join(
        violations
    )


def test_contract_checker_catches_violations(tmp_path: Path) -> None:
    """The checker itself: a sibling adapter, another kind's helper and a relative sibling import are
    violations; a relative or absolute import of an own `_` helper is not."""
    kind = PROVIDERS / "notify"
    sample = kind / "slack.py"
    assert not allowed_for(sample, "providers.notify.webhook")
    assert not allowed_for(sample, "providers.metrics._http")
    assert not allowed_for(sample, "providers.metrics.prometheus")
    assert allowed_for(sample, "providers.notify._render")
    assert allowed_for(sample, "providers.notify._render.title")
    assert allowed_for(sample, "providers.notify")
    assert not allowed_for(sample, "providers.notify._no_such_helper")

    fake = tmp_path / "providers" / "notify" / "fake.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from . import _render, webhook\nfrom ..metrics import _http\n", encoding="utf-8")
    found = {m for _, m in imported_modules(fake, root=tmp_path)}
    assert {"providers.notify._render", "providers.notify.webhook", "providers.metrics._http"} <= found
