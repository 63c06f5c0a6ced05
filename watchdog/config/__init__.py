"""Configuration: the schema (:mod:`.models`) and the file loader (:mod:`.loader`).

Only the schema is re-exported here: the loader depends on the analysis package (to refuse checks
it cannot analyse), which itself depends on the schema.
"""

from watchdog.config.models import (
    CheckConfig,
    PolicyConfig,
    WatchdogConfig,
    format_duration,
    parse_duration,
)

__all__ = ["CheckConfig", "PolicyConfig", "WatchdogConfig", "format_duration", "parse_duration"]
