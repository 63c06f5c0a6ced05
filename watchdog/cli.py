"""The command line (DESIGN §5): exit 0 success, 1 runtime failure, 2 usage or config error."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from watchdog import __version__
from watchdog.config.loader import ADAPTER_SECTIONS, LoadedConfig, load_config
from watchdog.config.models import WatchdogConfig
from watchdog.errors import ConfigError, StoreError
from watchdog.logs import configure_logging
from watchdog.plugins import PluginRegistry

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="watchdog",
        description="Watches production deploys and rolls them back when the new version hurts users.",
    )
    parser.add_argument("--version", action="version", version=f"rollback-watchdog {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the daemon")
    p.add_argument("--config", required=True, help="path to watchdog.yaml")
    p = sub.add_parser("validate", help="check a config file without starting anything")
    p.add_argument("--config", required=True, help="path to watchdog.yaml")
    sub.add_parser("schema", help="print the config file's JSON Schema")
    p = sub.add_parser(
        "replay",
        help="run a policy's Watch over recorded numbers in virtual time (a backtest)",
        description="Replays recordings (DESIGN §6) through the policy whose match fits each one's "
        "deployment. Exit 0 whatever the verdicts; a recording that cannot be replayed gives an "
        "error line and the rest still run.",
    )
    p.add_argument("--config", required=True, help="path to watchdog.yaml")
    p.add_argument(
        "--recording", required=True, help="a recording (JSON) or a folder: its *.json in name order"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per recording and line")
    p = sub.add_parser("demo", help="a one-minute demo: a bad canary caught and rolled back")
    p.add_argument("--healthy", action="store_true", help="let the new version stay healthy")
    args = parser.parse_args(argv)
    try:
        registry = PluginRegistry.from_entry_points()
    except ConfigError as exc:
        _problems(exc)
        return EXIT_USAGE
    if args.command == "schema":
        print(json.dumps(config_schema(registry), indent=2))
        return EXIT_OK
    if args.command == "validate":
        return _validate(args.config, registry)
    if args.command == "serve":
        return _serve(args.config, registry)
    if args.command == "replay":
        return _replay(args.config, args.recording, registry, as_json=args.json)
    if args.command == "demo":
        from watchdog.demo.run import run_demo

        code: int = asyncio.run(run_demo(registry, healthy=args.healthy))
        return code
    return EXIT_USAGE  # pragma: no cover - argparse refuses unknown commands


def _problems(exc: ConfigError) -> None:
    for problem in exc.problems:
        print(f"error: {problem}", file=sys.stderr)


def _validate(path: str, registry: PluginRegistry) -> int:
    try:
        loaded = load_config(path, registry, strict_secrets=False)
    except ConfigError as exc:
        _problems(exc)
        return EXIT_USAGE
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    c = loaded.config
    checks = sum(len(p.checks) for p in c.policies)
    print(
        f"{path}: OK ({len(c.policies)} policies, {checks} checks, "
        f"{len(c.providers)} providers, {len(c.rollback)} rollback targets, {len(c.notify)} notifiers)"
    )
    return EXIT_OK


def _serve(path: str, registry: PluginRegistry) -> int:
    from watchdog.daemon import serve

    try:
        loaded: LoadedConfig = load_config(path, registry, strict_secrets=True)
    except ConfigError as exc:
        _problems(exc)
        return EXIT_USAGE
    configure_logging(loaded.config.logging.level, loaded.config.logging.format)
    try:
        return asyncio.run(serve(loaded, registry))
    except (OSError, StoreError) as exc:  # port taken, store unwritable or from a newer release
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _replay(config: str, recording: str, registry: PluginRegistry, *, as_json: bool) -> int:
    """DESIGN §6: results on stdout (JSON lines, or a table), warnings on stderr; exit 0 whatever
    the verdicts. Secrets are not needed (no provider is contacted), so unset ones only warn."""
    from pathlib import Path

    from watchdog.replay import recording_files, replay_paths, to_json_line

    try:
        loaded = load_config(config, registry, strict_secrets=False)
    except ConfigError as exc:
        _problems(exc)
        return EXIT_USAGE
    level = "error" if loaded.config.logging.level == "error" else "warning"
    configure_logging(level, loaded.config.logging.format)
    path = Path(recording)
    if path.is_dir() and not recording_files(path):
        print(f"warning: {recording}: no *.json recordings in this folder", file=sys.stderr)

    async def run() -> None:
        async for result in replay_paths(loaded, path):
            if as_json:
                print(to_json_line(result), flush=True)
            else:
                print(_table_rows(result), flush=True)

    if not as_json:
        print(f"{'RECORDING':<32} {'VERDICT':<13} {'DECIDED AT':>10}  CHECKS")
    asyncio.run(run())
    return EXIT_OK


def _table_rows(result: dict[str, Any]) -> str:
    """One recording as table rows: its verdict and time, then a line per check with its summary."""
    name = str(result["recording"])
    if result["verdict"] == "error":
        return f"{name:<32} {'error':<13} {'-':>10}  {result.get('detail', '')}"
    at = result.get("decided_at")
    lines = [f"{name:<32} {result['verdict']:<13} {_at(at):>10}"]
    for check in result.get("checks", []):
        lines.append(
            f"{'':<32} {'':<13} {_at(check.get('decided_at')):>10}  "
            f"{check['name']}: {check['verdict']}: {check.get('summary', '')}"
        )
    return "\n".join(lines)


def _at(seconds: Any) -> str:
    return "-" if seconds is None else f"{seconds:g}s"


def config_schema(registry: PluginRegistry) -> dict[str, Any]:
    """The config's JSON Schema, with each adapter section's settings as a ``oneOf`` over the
    registered adapter types, so editors can complete ``providers.prom.url`` too."""
    schema = WatchdogConfig.model_json_schema()
    defs = schema.setdefault("$defs", {})
    for section, kind in ADAPTER_SECTIONS.items():
        variants = []
        for type_ in registry.types(kind):
            adapter = registry.find(kind, type_)
            assert adapter is not None
            sub = adapter.settings_model.model_json_schema(ref_template="#/$defs/{model}")
            defs.update(sub.pop("$defs", {}))
            sub["properties"] = {"type": {"const": type_}, **sub.get("properties", {})}
            sub["required"] = ["type", *sub.get("required", [])]
            sub["additionalProperties"] = False
            sub["title"] = f"{kind} adapter {type_}"
            variants.append(sub)
        schema["properties"][section]["additionalProperties"] = {"oneOf": variants}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "rollback-watchdog configuration"
    return schema


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
