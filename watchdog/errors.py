"""The watchdog's exception tree.

Adapters map their SDK's errors onto this tree at the boundary (``raise ... from exc``) so the core
decides what to do from the class alone::

    WatchdogError
    ├── ConfigError                 a config file or value is wrong; exit code 2, never retried
    ├── AdapterError                something outside the process failed
    │   ├── TemporaryError          worth retrying (timeouts, 5xx, 429); carries an optional delay
    │   │   └── ProviderUnavailable a metrics provider could not answer (the check is blind, not failing)
    │   └── PermanentError          retrying will not help (403, 404, bad query, host key mismatch)
    │       └── ProviderQueryError  the provider refused the query itself
    ├── StoreError                  the store cannot be used (schema from a newer release)
    ├── StateConflict               an action the deployment's state does not allow (HTTP 409)
    └── EventRejected               a webhook that is refused, with its HTTP status and code
"""

from __future__ import annotations


class WatchdogError(Exception):
    """Root of every error the watchdog raises on purpose."""


class ConfigError(WatchdogError):
    """A configuration problem, with every individual error listed as ``file:line: key: message``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class AdapterError(WatchdogError):
    """Something outside the process (a provider, a rollback target, a notifier) failed.

    ``details`` carries structured facts the core stores with the failure (per-host results of an
    ssh rollback, the status an API answered), beside the sentence for people.
    """

    def __init__(self, message: str, *, details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


class TemporaryError(AdapterError):
    """A failure that may go away: retried with backoff, bounded.

    ``delay`` is a hint from the other side (``Retry-After``), in seconds.
    """

    def __init__(
        self, message: str, *, delay: float | None = None, details: dict[str, object] | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.delay = delay


class PermanentError(AdapterError):
    """A failure that retrying cannot fix; reported at once with its reason."""


class ProviderUnavailable(TemporaryError):
    """A metrics provider did not answer usefully after its retries: the check is blind this poll."""


class ProviderQueryError(PermanentError):
    """A metrics provider rejected the query (bad syntax, unknown metric function)."""


class StoreError(WatchdogError):
    """The store cannot be used as it is (a schema newer than this release, an unknown URL)."""


class StateConflict(WatchdogError):
    """The requested action does not fit the deployment's current state."""


class EventRejected(WatchdogError):
    """A webhook that is not accepted, with the HTTP status and a machine-readable code.

    401 for authenticity (missing, wrong or stale signature), 400 for a body that is not what the
    source sends, 422 for one that parses but lacks what a deploy needs.
    """

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
