"""The command line (DESIGN §5): `validate`, `schema`, `--version`, exit codes (0 success, 2 usage
or config error), and `python -m watchdog` as the same program. In-process through
`watchdog.cli.main` where possible; one subprocess each for `python -m` and the console script."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from watchdog import __version__
from watchdog.cli import EXIT_OK, EXIT_USAGE, config_schema, main
from watchdog.plugins import KINDS, PluginRegistry

REPO = Path(__file__).resolve().parents[2]
UNSET = "RW_CLI_TEST_UNSET_SECRET"

GOOD = f"""\
server:
  webhook_secrets:
    generic: ${{{UNSET}}}
providers:
  prom: {{type: prometheus, url: "http://127.0.0.1:9090"}}
rollback:
  hook: {{type: http, url: "https://ci.example/rollback"}}
policies:
  - name: checkout
    match: {{service: checkout}}
    bake: 10m
    interval: 30s
    rollback: hook
    checks:
      - name: errors
        type: ratio
        provider: prom
        bad: 'sum(increase(http_requests_total{{code=~"5..",service="{{service}}"}}[{{interval}}]))'
        total: 'sum(increase(http_requests_total{{service="{{service}}"}}[{{interval}}]))'
"""

BROKEN = """\
server:
  listen: 127.0.0.1:8080
  listne: 0.0.0.0:80
policies:
  - name: checkout
    bake: soon
    checks:
      - {name: errors, type: ratio, provider: nowhere, bad: a, total: b}
"""
BROKEN_PROBLEMS = [
    "{path}:3: server.listne: unknown key",
    "{path}:6: policies[0].bake: 'soon' is not a duration (write it like 30s, 10m or 2h)",
]


@pytest.fixture
def good_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(UNSET, raising=False)
    path = tmp_path / "watchdog.yaml"
    path.write_text(GOOD, encoding="utf-8")
    return path


@pytest.fixture
def broken_file(tmp_path: Path) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return config_schema(PluginRegistry.from_entry_points())


# --- validate ---------------------------------------------------------------------------------


def test_validate_good_file_exits_0_and_says_ok(good_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A valid file: exit 0, and stdout says OK with what the file defines."""
    assert main(["validate", "--config", str(good_file)]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith(
        f"{good_file}: OK (1 policies, 1 checks, 1 providers, 1 rollback targets, 0 notifiers)"
    )


def test_validate_warns_but_passes_on_an_unset_variable(
    good_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Configs are linted where secrets are absent: an unset `${VAR}` is a warning on stderr, naming
    file, line, key and variable; the exit code stays 0."""
    assert main(["validate", "--config", str(good_file)]) == EXIT_OK
    err = capsys.readouterr().err
    assert (
        f"warning: {good_file}:3: server.webhook_secrets.generic: environment variable {UNSET} is not set"
        in err
    )
    assert "error" not in err


def test_validate_set_variable_gives_no_warning(
    good_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the variable set, nothing is printed on stderr."""
    monkeypatch.setenv(UNSET, "a-secret")
    assert main(["validate", "--config", str(good_file)]) == EXIT_OK
    assert capsys.readouterr().err == ""


def test_validate_broken_file_exits_2_with_file_line_key_on_stderr(
    broken_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broken file: exit 2, one `error: file:line: key: message` line per problem on stderr,
    nothing claiming OK on stdout."""
    assert main(["validate", "--config", str(broken_file)]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert "OK" not in captured.out
    lines = captured.err.splitlines()
    for expected in BROKEN_PROBLEMS:
        assert f"error: {expected.format(path=broken_file)}" in lines
    assert all(re.match(rf"error: {re.escape(str(broken_file))}:\d+: \S+: ", line) for line in lines), lines


def test_validate_reference_error_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A check naming a provider that is not defined is an error at the check's `provider` line."""
    path = tmp_path / "w.yaml"
    path.write_text(BROKEN.replace("  listne: 0.0.0.0:80\n", "").replace("soon", "30m"), encoding="utf-8")
    assert main(["validate", "--config", str(path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert (
        f"error: {path}:7: policies[0].checks[0].provider: 'nowhere' is not defined under `providers`" in err
    )


def test_validate_invalid_yaml_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Not YAML at all: exit 2 and a line number, no traceback."""
    path = tmp_path / "w.yaml"
    path.write_text("server: [\n", encoding="utf-8")
    assert main(["validate", "--config", str(path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}:2: not valid YAML")
    assert "Traceback" not in err


def test_validate_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A path that does not exist is a config error (2), naming the path."""
    path = tmp_path / "missing.yaml"
    assert main(["validate", "--config", str(path)]) == EXIT_USAGE
    assert capsys.readouterr().err.startswith(f"error: {path}: cannot read")


def test_shipped_demo_config_validates_with_warnings(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's config, linted where its ${DEMO_*} values are absent, passes with warnings."""
    path = REPO / "watchdog" / "demo" / "demo.yaml"
    for variable in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", path.read_text(encoding="utf-8")):
        monkeypatch.delenv(variable, raising=False)
    code = main(["validate", "--config", str(path)])
    err = capsys.readouterr().err
    assert code == EXIT_OK, err
    assert "warning:" in err


def test_validate_requires_config(capsys: pytest.CaptureFixture[str]) -> None:
    """`validate` without `--config` is a usage error: exit 2."""
    with pytest.raises(SystemExit) as caught:
        main(["validate"])
    assert caught.value.code == EXIT_USAGE
    assert "--config" in capsys.readouterr().err


# --- usage ------------------------------------------------------------------------------------


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """`--version` prints the distribution name and version and exits 0."""
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"rollback-watchdog {__version__}"


@pytest.mark.parametrize("argv", [["frobnicate"], [], ["validate", "--config", "x", "--bogus"]])
def test_unknown_subcommand_or_option_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown subcommand, a missing one, or an unknown option is a usage error: exit 2."""
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == EXIT_USAGE
    assert "usage: watchdog" in capsys.readouterr().err


def test_python_dash_m_is_the_same_program() -> None:
    """`python -m watchdog --version` runs the same CLI (a subprocess, as an operator would)."""
    done = subprocess.run(
        [sys.executable, "-m", "watchdog", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"rollback-watchdog {__version__}"


def test_console_script_validate_exit_code(broken_file: Path) -> None:
    """The installed `watchdog` script returns 2 for a broken file, errors on stderr."""
    script = Path(sys.executable).parent / "watchdog"
    if not script.exists():
        pytest.skip("the console script is not installed next to this interpreter")
    done = subprocess.run(
        [str(script), "validate", "--config", str(broken_file)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == EXIT_USAGE
    assert f"error: {BROKEN_PROBLEMS[0].format(path=broken_file)}" in done.stderr.splitlines()


# --- schema -----------------------------------------------------------------------------------


def test_schema_command_prints_the_schema_as_json(
    capsys: pytest.CaptureFixture[str], schema: dict[str, Any]
) -> None:
    """`watchdog schema` prints JSON (exit 0) equal to `config_schema` for the installed adapters."""
    assert main(["schema"]) == EXIT_OK
    printed = json.loads(capsys.readouterr().out)
    assert printed == schema


JSON_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}


def _walk(node: Any, path: str = "#") -> Any:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}/{i}")


def test_schema_is_well_formed_json_schema(schema: dict[str, Any]) -> None:
    """Checked by hand (jsonschema is not a test dependency): draft 2020-12, every `$ref` resolves,
    types are JSON types, required keys are declared properties, patterns compile."""
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert schema.get("additionalProperties") is False, "unknown top-level sections must be refused"
    defs = schema["$defs"]
    for where, node in _walk(schema):
        if "$ref" in node and isinstance(node["$ref"], str):
            ref = node["$ref"]
            assert ref.startswith("#/$defs/"), f"{where}: {ref}"
            assert ref.removeprefix("#/$defs/") in defs, f"{where}: dangling {ref}"
        if isinstance(node.get("type"), str):
            assert node["type"] in JSON_TYPES, f"{where}: type {node['type']!r}"
        if isinstance(node.get("required"), list) and isinstance(node.get("properties"), dict):
            assert set(node["required"]) <= set(node["properties"]), f"{where}: required not in properties"
        if isinstance(node.get("pattern"), str):
            re.compile(node["pattern"])


def test_schema_top_level_sections(schema: dict[str, Any]) -> None:
    """The schema describes the documented sections (DESIGN §3)."""
    assert {"server", "store", "providers", "rollback", "notify", "sources", "policies", "logging"} <= set(
        schema["properties"]
    )


@pytest.mark.parametrize(
    ("section", "kind"), [("providers", "metrics"), ("rollback", "rollback"), ("notify", "notify")]
)
def test_schema_adapter_sections_offer_the_registered_types(
    schema: dict[str, Any], section: str, kind: str
) -> None:
    """Each adapter section is a map of `oneOf` the registered adapter types, each variant pinning
    `type` to its name, requiring it, and refusing unknown keys."""
    registry = PluginRegistry.from_entry_points()
    variants = schema["properties"][section]["additionalProperties"]["oneOf"]
    assert [v["properties"]["type"]["const"] for v in variants] == registry.types(kind)
    for variant in variants:
        assert "type" in variant["required"]
        assert variant["additionalProperties"] is False


def test_schema_prometheus_variant_describes_url(schema: dict[str, Any]) -> None:
    """Editors can complete `providers.prom.url`: the prometheus variant requires `url`."""
    variants = schema["properties"]["providers"]["additionalProperties"]["oneOf"]
    (prom,) = [v for v in variants if v["properties"]["type"]["const"] == "prometheus"]
    assert "url" in prom["properties"] and "url" in prom["required"]


def test_schema_meta_validates_and_accepts_the_example_config(schema: dict[str, Any]) -> None:
    """With jsonschema installed: the schema is valid against its meta-schema and accepts the
    shipped example config."""
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    jsonschema.Draft202012Validator.check_schema(schema)
    example = yaml.safe_load((REPO / "config" / "watchdog.example.yaml").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema).validate(example)


def test_schema_kinds_cover_every_adapter_section() -> None:
    """Every adapter section maps to a kind the registry knows."""
    from watchdog.config.loader import ADAPTER_SECTIONS

    assert set(ADAPTER_SECTIONS.values()) <= set(KINDS)
