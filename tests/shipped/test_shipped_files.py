"""What ships in config/ stays true: the example validates, the schema is the generated one, the
demo config is the one the demo runs."""

from __future__ import annotations

import json
from pathlib import Path

from watchdog.cli import config_schema, main
from watchdog.config.loader import load_config
from watchdog.plugins import PluginRegistry

ROOT = Path(__file__).resolve().parents[2]


def test_the_annotated_example_validates(capsys) -> None:
    """`watchdog validate` accepts config/watchdog.example.yaml (secrets unset are warnings)."""
    assert main(["validate", "--config", str(ROOT / "config/watchdog.example.yaml")]) == 0
    assert "OK" in capsys.readouterr().out


def test_the_shipped_schema_is_the_generated_one() -> None:
    """config/watchdog.schema.json equals `watchdog schema`; run `make schema` after changing models."""
    shipped = json.loads((ROOT / "config/watchdog.schema.json").read_text())
    assert shipped == config_schema(PluginRegistry.from_entry_points())


def test_the_demo_config_validates_with_its_values_filled_in() -> None:
    env = {
        name: "http://127.0.0.1:1" if "URL" in name or "METRICS" in name else "x" * 20
        for name in (
            "DEMO_WEBHOOK_SECRET", "DEMO_API_TOKEN", "DEMO_STABLE_METRICS", "DEMO_CANARY_METRICS",
            "DEMO_HOOK_URL", "DEMO_SLACK_URL",
        )
    }
    env.update(DEMO_PORT="8080", DEMO_STATE_DIR="/tmp/demo")
    loaded = load_config(ROOT / "config/watchdog.demo.yaml", PluginRegistry.from_entry_points(), environ=env)
    assert loaded.config.policies[0].checks[0].compare == "baseline"
