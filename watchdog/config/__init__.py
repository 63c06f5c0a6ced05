"""Configuration: the schema (:mod:`.models`) and the file loader (:mod:`.loader`)."""

from watchdog.config.loader import LoadedConfig, load_config, load_config_text
from watchdog.config.models import (
    CheckConfig,
    PolicyConfig,
    WatchdogConfig,
    format_duration,
    parse_duration,
)

__all__ = [
    "CheckConfig",
    "LoadedConfig",
    "PolicyConfig",
    "WatchdogConfig",
    "format_duration",
    "load_config",
    "load_config_text",
    "parse_duration",
]
