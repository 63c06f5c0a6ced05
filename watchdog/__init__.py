"""rollback-watchdog: watches production deploys and rolls them back when the new version hurts users."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rollback-watchdog")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
