"""Metrics from New Relic: NRQL queries through the NerdGraph GraphQL API, on aiohttp.

What a query returns. A check's query is NRQL that selects one number per row, e.g.
``SELECT count(*) FROM Transaction WHERE appName = '{service}' AND tags.version = '{version}'
AND httpResponseCode LIKE '5%'``. A poll at ``at`` measures ``[at - interval, at)``:

- a query without ``SINCE`` and ``UNTIL`` gets ``SINCE <start> UNTIL <end>`` appended, in epoch
  milliseconds, so ``count(*)`` is the number of events in the interval (a ``ratio`` check's
  counts). A query that has either keyword (outside a string) is sent as written: its author took
  charge of the time range;
- each result row gives one ``Sample``: its one numeric field (``count``, ``sum.duration``, an
  alias; a ``percentile`` answer's single value) is the value, and with ``FACET`` the facet
  attributes are the labels (``FACET tags.version`` → ``{"tags.version": "v2"}``). Rows with the same
  labels (the buckets of a ``TIMESERIES`` query) are summed; a row with several numbers is refused
  (select one);
- an empty ``results`` list (a ``FACET`` query that matched nothing) or rows whose number is null
  (``average()`` over no events) are **no data**; ``count(*)`` over no events is a real 0.

Requests: ``POST <url>/graphql`` with the ``API-Key`` header (a New Relic *user* key) and the body
``{"query": "query($accountId: Int!, $nrql: Nrql!) { actor { account(id: $accountId) { nrql(query:
$nrql) { results metadata { facets } } } } }", "variables": {...}}``; the NRQL travels as a GraphQL
variable, so no quoting of it is needed. Answers are ``data.actor.account.nrql.results`` (a list of
rows) and, on failure, ``errors[]``.

Failures are mapped at this boundary:

- timeouts, refused connections, 429 and 5xx, and GraphQL errors of class ``TIMEOUT``,
  ``TOO_MANY_REQUESTS`` or ``INTERNAL_SERVER_ERROR``: retried a bounded number of times, then
  ``ProviderUnavailable``;
- other GraphQL errors (an NRQL syntax error, an unknown function): ``ProviderQueryError`` quoting
  New Relic's message;
- 401 and 403, errors of class ``UNAUTHORIZED`` / ``FORBIDDEN``, or no access to the account: a
  configuration error naming the provider, not retried.

Template values are escaped for an NRQL single-quoted string (:func:`escape`): put placeholders
inside quotes, ``appName = '{service}'``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any, Final, Literal

import aiohttp
import structlog
from pydantic import Field, SecretStr, field_validator

from providers import _http
from providers.metrics._api import ProviderConfigError, Window, one_line, rate_limited, window
from providers.metrics._http import USER_AGENT, Failed, HttpSettings, Instruments, Retry, with_retries
from watchdog.config.models import Duration, format_duration
from watchdog.errors import ProviderQueryError
from watchdog.plugins import AdapterContext
from watchdog.ports import Sample

__all__ = ["NewRelicProvider", "NewRelicSettings", "escape", "with_time_range"]

log = structlog.get_logger()

ENDPOINTS: Final = {"us": "https://api.newrelic.com", "eu": "https://api.eu.newrelic.com"}
"""NerdGraph's base URL per New Relic data centre region; `/graphql` is appended."""

GRAPHQL: Final = (
    "query($accountId: Int!, $nrql: Nrql!) { actor { account(id: $accountId) "
    "{ nrql(query: $nrql) { results metadata { facets } } } } }"
)

_RETRY_CLASSES: Final = frozenset({"TIMEOUT", "TOO_MANY_REQUESTS", "INTERNAL_SERVER_ERROR", "SERVER_ERROR"})
_CONFIG_CLASSES: Final = frozenset({"UNAUTHORIZED", "FORBIDDEN", "ACCESS_DENIED"})
_NOT_VALUES: Final = frozenset({"facet", "beginTimeSeconds", "endTimeSeconds", "timestamp", "comparison"})
"""Row fields that are never the selected number."""
_BODY_LIMIT: Final = 4 * 1024 * 1024
"""Bytes of an answer read at most: a FACET query returns a few hundred rows, well under this."""

_STRING_OR_NAME: Final = re.compile(r"'(?:[^'\\]|\\.)*'|`[^`]*`", re.DOTALL)
_TIME_RANGE: Final = re.compile(r"\b(SINCE|UNTIL)\b", re.IGNORECASE)


class NewRelicSettings(HttpSettings):
    """``providers.<name>`` with ``type: newrelic``."""

    api_key: SecretStr
    """A New Relic user key (NRAK-...), sent as `API-Key`. Keep it out of the file: `${NEW_RELIC_API_KEY}`."""
    account_id: int = Field(gt=0)
    """The account the NRQL runs in."""
    region: Literal["us", "eu"] = "us"
    """The data centre region of the account: us (api.newrelic.com) or eu (api.eu.newrelic.com)."""
    url: str | None = None
    """API base URL instead of the region's: a proxy, or a test server. `/graphql` is appended."""
    timeout: Duration = 10.0
    """Per request (one attempt), connect to last byte. 10s by default: NRQL over one poll interval
    answers in well under a second, and three attempts still fit a poll."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            _http.check_url(value)
        return value

    @property
    def endpoint(self) -> str:
        return (self.url or ENDPOINTS[self.region]).rstrip("/") + "/graphql"


def escape(value: str) -> str:
    """Escape a template value for an NRQL single-quoted string, so it cannot close the string.

    ``v2' OR appName LIKE '%`` would otherwise widen the WHERE clause to every app.
    """
    return value.replace("\\", "\\\\").replace("'", "\\'")


def with_time_range(nrql: str, span: Window) -> str:
    """``nrql`` with ``SINCE <start ms> UNTIL <end ms>`` appended, unless it names a range itself
    (``SINCE`` or ``UNTIL`` outside strings and backquoted names)."""
    bare = _STRING_OR_NAME.sub("''", nrql)
    if _TIME_RANGE.search(bare):
        return nrql
    return f"{nrql.rstrip()} SINCE {span.start_ms} UNTIL {span.end_ms}"


class NewRelicProvider:
    """A ``MetricsProvider`` backed by one New Relic account."""

    Settings = NewRelicSettings

    def __init__(self, name: str, settings: NewRelicSettings, context: AdapterContext | None = None) -> None:
        self.name = name
        self._settings = settings
        self._what = f"newrelic provider {name!r} at {_http.redact_url(settings.endpoint)}"
        self._instruments = Instruments(name, context)
        self._session = _http.LazySession(
            headers={
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
                "API-Key": settings.api_key.get_secret_value(),
            },
        )

    @classmethod
    def from_settings(
        cls, name: str, settings: NewRelicSettings, context: AdapterContext
    ) -> NewRelicProvider:
        return cls(name, settings, context)

    def escape(self, value: str) -> str:
        """Escape a template value for an NRQL single-quoted string."""
        return escape(value)

    async def query(self, query: str, *, at: float, interval: float) -> list[Sample]:
        """One sample per result row of ``query`` over ``[at - interval, at)`` (see the module
        docstring)."""
        nrql = with_time_range(query, window(at, interval))
        body = _http.json_body(
            {"query": GRAPHQL, "variables": {"accountId": self._settings.account_id, "nrql": nrql}}
        )

        async def attempt() -> list[Sample]:
            return await self._attempt(body, nrql)

        async def attempts() -> list[Sample]:
            return await with_retries(self._settings.retries, self._what, attempt)

        samples = await self._instruments.timed(attempts)
        if not samples:
            log.debug("newrelic.no_data", provider=self.name, nrql=nrql)
        return samples

    async def aclose(self) -> None:
        await self._session.aclose()

    async def _attempt(self, body: bytes, nrql: str) -> list[Sample]:
        timeout = self._settings.timeout
        try:
            async with self._session.get().post(
                self._settings.endpoint,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as response:
                answer = await _http.Answer.read(response, _BODY_LIMIT)
        except TimeoutError as exc:
            raise Retry(f"timed out after {format_duration(timeout)}", kind="timeout") from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise Retry(f"connection failed: {exc or type(exc).__name__}", kind="connection") from exc
        except aiohttp.ClientError as exc:
            raise Retry(f"bad HTTP response: {exc}", kind="http") from exc
        return self._read(answer, nrql)

    def _read(self, answer: _http.Answer, nrql: str) -> list[Sample]:
        status = answer.status
        payload = _json(answer.body) if not answer.truncated else None
        errors = payload.get("errors") if isinstance(payload, Mapping) else None
        detail = _errors_text(errors) if errors else _http.excerpt(answer.body)
        if status in (401, 403):
            raise ProviderConfigError(
                f"provider {self.name}: New Relic answered {status} {answer.reason or ''}".rstrip()
                + f": {detail}: check api_key (a user key) and its access to account "
                f"{self._settings.account_id}",
                kind="forbidden",
            )
        if status == 429:
            delay = _http.retry_after(answer.headers.get("Retry-After"), time.time())
            raise rate_limited(self._what, f"rate limited (HTTP 429): {detail}", delay)
        if status >= 500:
            raise Retry(
                f"HTTP {status}: {detail}",
                kind="http",
                delay=_http.retry_after(answer.headers.get("Retry-After"), time.time()),
            )
        if answer.truncated:
            raise Failed(f"{self._what}: the answer is larger than {_BODY_LIMIT} bytes", kind="bad_response")
        if not isinstance(payload, Mapping):
            raise Failed(
                f"{self._what}: HTTP {status}, not a GraphQL answer: {_http.excerpt(answer.body)}",
                kind="bad_response",
            )
        nrql_result = _dig(payload, "data", "actor", "account", "nrql")
        results = nrql_result.get("results") if isinstance(nrql_result, Mapping) else None
        if errors:
            if isinstance(results, list):  # a partial answer: use it, keep the warning
                log.warning("newrelic.errors", provider=self.name, nrql=nrql, errors=detail)
            else:
                raise self._graphql_error(errors, detail)
        if status >= 300:
            raise Failed(f"{self._what}: HTTP {status}: {detail}", kind="http")
        if _dig(payload, "data", "actor") is not None and _dig(payload, "data", "actor", "account") is None:
            raise ProviderConfigError(
                f"provider {self.name}: New Relic returned no account {self._settings.account_id}: "
                "check account_id and that the api_key's user can see that account"
            )
        if not isinstance(results, list):
            raise Failed(
                f"{self._what}: the answer has no data.actor.account.nrql.results", kind="bad_response"
            )
        metadata = nrql_result.get("metadata") if isinstance(nrql_result, Mapping) else None
        facets = metadata.get("facets") if isinstance(metadata, Mapping) else None
        return self._samples(results, facets if isinstance(facets, list) else None)

    def _graphql_error(self, errors: Any, detail: str) -> Exception:
        classes = {_error_class(e) for e in errors} if isinstance(errors, list) else set()
        if classes & _CONFIG_CLASSES:
            return ProviderConfigError(
                f"provider {self.name}: New Relic refused the request: {detail}: check api_key "
                f"(a user key) and its access to account {self._settings.account_id}",
                kind="forbidden",
            )
        if "TOO_MANY_REQUESTS" in classes:
            return rate_limited(self._what, f"rate limited: {detail}", None)
        if classes & _RETRY_CLASSES:
            return Retry(f"New Relic error: {detail}", kind="newrelic_error")
        return ProviderQueryError(f"{self._what}: query refused: {detail}")

    def _samples(self, rows: list[Any], facets: list[Any] | None) -> list[Sample]:
        sums: dict[tuple[tuple[str, str], ...], float] = {}
        for row in rows:
            if not isinstance(row, Mapping):
                raise Failed(f"{self._what}: a result row is not an object", kind="bad_response")
            if row.get("comparison") == "previous":  # COMPARE WITH: only the current window counts
                continue
            labels = _labels(row, facets)
            value = self._value(row, {name for name, _ in labels})
            if value is None:
                continue
            key = tuple(sorted(labels))
            sums[key] = sums.get(key, 0.0) + value
        return [Sample(labels=dict(key), value=value) for key, value in sums.items()]

    def _value(self, row: Mapping[str, Any], facet_names: set[str]) -> float | None:
        """The row's one selected number; None when it is null (no events to aggregate)."""
        fields = {k: v for k, v in row.items() if k not in _NOT_VALUES and k not in facet_names}
        if len(fields) != 1:
            names = ", ".join(sorted(fields)) or "none"
            raise ProviderQueryError(
                f"{self._what}: a check's NRQL must select exactly one number per row; got {names}"
            )
        ((name, value),) = fields.items()
        if isinstance(value, Mapping):  # percentile(x, 95) answers {"95": 0.31}
            if len(value) != 1:
                raise ProviderQueryError(
                    f"{self._what}: {name} holds {len(value)} numbers; select one (one percentile)"
                )
            (value,) = value.values()
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProviderQueryError(f"{self._what}: {name} is not a number: {value!r:.40}")
        return float(value)


def _labels(row: Mapping[str, Any], facets: list[Any] | None) -> list[tuple[str, str]]:
    """The facet attributes of a row as (name, value) pairs.

    NerdGraph names them in ``metadata.facets`` and repeats each as a field of the row; without
    that list, the row's ``facet`` field (a value, or a list for several facets) is the label.
    """
    if facets:
        return [(str(name), _text(row.get(str(name)))) for name in facets if str(name) in row]
    facet = row.get("facet")
    if facet is None:
        return []
    if isinstance(facet, list):
        return [("facet", ",".join(_text(v) for v in facet))]
    return [("facet", _text(facet))]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _dig(payload: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(payload, Mapping):
            return None
        payload = payload.get(key)
    return payload


def _error_class(error: Any) -> str:
    extensions = error.get("extensions") if isinstance(error, Mapping) else None
    if not isinstance(extensions, Mapping):
        return ""
    return str(extensions.get("errorClass") or extensions.get("code") or "").upper()


def _errors_text(errors: Any) -> str:
    """GraphQL ``errors[]`` as one line of their messages."""
    if not isinstance(errors, list):
        return one_line(str(errors))
    messages = [str(e.get("message", e)) if isinstance(e, Mapping) else str(e) for e in errors]
    return one_line("; ".join(messages))
