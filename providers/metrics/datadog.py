"""Metrics from Datadog's query API, on ``datadog-api-client``'s ``AsyncApiClient``.

What a query returns (DESIGN §7 works on counts per interval). A poll at ``at`` measures the
interval ``[at - interval, at)``; the provider asks Datadog for that span, with the poll interval as
the rollup interval, and reduces each returned series to one number:

- with ``.as_count()`` (``sum:trace.http.request.errors{service:{service},version:{version}}
  .as_count()``) the points are counts per rollup bucket, and the provider returns the **sum of the
  series' points stamped inside the window**: the number of events in the interval, what a
  ``ratio`` check's ``bad`` and ``total`` need. Points are stamped with their bucket's start and the
  window is half-open, so consecutive polls count every bucket once; a bucket that starts inside a
  window and ends after it is counted with what it held at poll time.
- without ``.as_count()`` the points are levels (a gauge, an average, a rate), and the provider
  returns the **latest point** inside the window (what a ``gauge`` check needs). Rates carry no
  sample size: write ``ratio`` queries with ``.as_count()``. On the v2 endpoint the rollup is the
  poll interval, so a window holds at most one bucket and both rules give that bucket's value; they
  differ only on the v1 fallback, where Datadog picks the resolution.
- one ``Sample`` per returned series, labelled with its group tags: ``sum:...{...} by {le}
  .as_count()`` gives one sample per ``le`` (the shape a ``histogram`` check reads).
- no series, or no point inside the window: no samples, i.e. **no data** (the check is blind this
  poll, it is not failing). A series that is there but whose points are all null is skipped too.

Endpoints: ``POST /api/v2/query/timeseries`` (Datadog's recommended one) first. When it is not there
(404, 405 or 501, e.g. a proxy or a Datadog-compatible service that only serves v1), the provider
falls back to ``GET /api/v1/query`` and stays on it for its lifetime.

Failures are mapped at this boundary, never raised as the SDK's own exceptions:

- 429: retried after what Datadog asks (``X-RateLimit-Reset`` or ``Retry-After``, seconds); a reset
  further away than a poll can wait ends the poll at once as unavailable;
- timeouts, refused connections, 408 and 5xx: retried a bounded number of times, then
  ``ProviderUnavailable``;
- 400 and 422: ``ProviderQueryError`` with Datadog's own explanation (``errors[]``);
- 401 and 403: a configuration error naming the provider (the keys are wrong or lack the
  permission to query metrics), not retried;
- an answer the SDK cannot read: ``ProviderUnavailable``.

Template values are escaped for a Datadog tag scope (:func:`escape`).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

import structlog

# aiosonic is the async SDK's transport. It ships no type information: its exceptions are Any here.
from aiosonic.exceptions import AiosonicError, BaseTimeout  # type: ignore[import-untyped]
from datadog_api_client import AsyncApiClient, Configuration
from datadog_api_client.exceptions import ApiException, OpenApiException
from datadog_api_client.v1.api.metrics_api import MetricsApi as MetricsApiV1
from datadog_api_client.v2.api.metrics_api import MetricsApi as MetricsApiV2
from datadog_api_client.v2.model.metrics_data_source import MetricsDataSource
from datadog_api_client.v2.model.metrics_timeseries_query import MetricsTimeseriesQuery
from datadog_api_client.v2.model.timeseries_formula_query_request import (
    TimeseriesFormulaQueryRequest,
)
from datadog_api_client.v2.model.timeseries_formula_request import TimeseriesFormulaRequest
from datadog_api_client.v2.model.timeseries_formula_request_attributes import (
    TimeseriesFormulaRequestAttributes,
)
from datadog_api_client.v2.model.timeseries_formula_request_queries import (
    TimeseriesFormulaRequestQueries,
)
from datadog_api_client.v2.model.timeseries_formula_request_type import (
    TimeseriesFormulaRequestType,
)
from pydantic import Field, SecretStr, field_validator

from providers import _http
from providers.metrics._api import (
    ProviderConfigError,
    Window,
    one_line,
    rate_limited,
    window,
)
from providers.metrics._http import USER_AGENT, Failed, HttpSettings, Instruments, Retry, with_retries
from watchdog.config.models import Duration, format_duration
from watchdog.errors import ProviderQueryError
from watchdog.plugins import AdapterContext
from watchdog.ports import Sample

__all__ = ["DatadogProvider", "DatadogSettings", "escape"]

log = structlog.get_logger()

_SITE: Final = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$")
_UNSAFE_TAG_CHARS: Final = re.compile(r"[^A-Za-z0-9_./:-]")
_AS_COUNT: Final = re.compile(r"\.as_count\(\s*\)")
_V2_MISSING: Final = frozenset({404, 405, 501})
"""Statuses that say the v2 endpoint is not there (rather than that the request is wrong)."""
_QUERY_REFUSED: Final = frozenset({400, 422})
_RETRYABLE: Final = frozenset({408})


class DatadogSettings(HttpSettings):
    """``providers.<name>`` with ``type: datadog``."""

    site: str = "datadoghq.com"
    """The Datadog site of the organisation: datadoghq.com, us3.datadoghq.com, us5.datadoghq.com,
    datadoghq.eu, ap1.datadoghq.com, ddog-gov.com, ... The API is https://api.<site>."""
    api_key: SecretStr
    """Sent as `DD-API-KEY`. Keep it out of the file: `${DD_API_KEY}`."""
    app_key: SecretStr
    """Sent as `DD-APPLICATION-KEY`; it needs the permission to read metrics (`timeseries_query`
    scope for a scoped key). Keep it out of the file: `${DD_APP_KEY}`."""
    url: str | None = None
    """API base URL instead of https://api.<site>: a proxy, or a test server. `/api/v2/...` and
    `/api/v1/...` are appended."""
    timeout: Duration = 10.0
    """Per request (one attempt), connect to last byte. 10s by default: Datadog answers a query over
    one poll interval in well under a second, and three attempts still fit a poll."""
    retries: int = Field(default=3, ge=1, le=10)
    """Attempts in total (1 = no retry) before the provider is reported unavailable for the poll.
    3 by default: rides over a dropped connection or a short rate limit without stretching a poll."""

    @field_validator("site")
    @classmethod
    def _bare_host_name(cls, value: str) -> str:
        if "${" not in value and not _SITE.match(value):
            raise ValueError(
                f"{value!r} is not a Datadog site (a host name such as datadoghq.com or "
                "datadoghq.eu); give a full address with `url:` instead"
            )
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            _http.check_url(value)
        return value

    @property
    def base_url(self) -> str:
        return (self.url or f"https://api.{self.site}").rstrip("/")


def escape(value: str) -> str:
    """Make a template value safe inside a Datadog tag scope (``{service:{service}}``).

    Datadog tags hold letters, digits and ``_ - : . /``; it turns every other character into ``_``
    when it ingests a tag, so the same replacement here keeps a value matching what Datadog stored
    while a ``,``, ``}`` or space can no longer close the scope or add a filter of its own.
    """
    return _UNSAFE_TAG_CHARS.sub("_", value)


class DatadogProvider:
    """A ``MetricsProvider`` backed by one Datadog organisation (one pair of keys)."""

    Settings = DatadogSettings

    def __init__(self, name: str, settings: DatadogSettings, context: AdapterContext | None = None) -> None:
        self.name = name
        self._settings = settings
        self._what = f"datadog provider {name!r} at {_http.redact_url(settings.base_url)}"
        self._instruments = Instruments(name, context)
        self._client: Any = None
        self._v1_only = False

    @classmethod
    def from_settings(cls, name: str, settings: DatadogSettings, context: AdapterContext) -> DatadogProvider:
        return cls(name, settings, context)

    def escape(self, value: str) -> str:
        """Escape a template value for a Datadog tag scope."""
        return escape(value)

    async def query(self, query: str, *, at: float, interval: float) -> list[Sample]:
        """The per-series sums of ``query`` over ``[at - interval, at)`` (see the module docstring)."""
        span = window(at, interval)

        async def attempt() -> list[Sample]:
            return await self._attempt(query, span, interval)

        async def attempts() -> list[Sample]:
            return await with_retries(self._settings.retries, self._what, attempt)

        samples = await self._instruments.timed(attempts)
        if not samples:
            log.debug("datadog.no_data", provider=self.name, query=query)
        return samples

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.__aexit__(None, None, None)

    # --- one attempt ------------------------------------------------------------------------

    async def _attempt(self, query: str, span: Window, interval: float) -> list[Sample]:
        if not self._v1_only:
            try:
                return await self._v2(query, span, interval)
            except _V2Missing as exc:
                self._v1_only = True
                log.warning(
                    "datadog.v2_unavailable",
                    provider=self.name,
                    status=exc.status,
                    fallback="/api/v1/query",
                )
        return await self._v1(query, span)

    async def _v2(self, query: str, span: Window, interval: float) -> list[Sample]:
        body = TimeseriesFormulaQueryRequest(
            data=TimeseriesFormulaRequest(
                attributes=TimeseriesFormulaRequestAttributes(
                    _from=span.start_ms,
                    to=span.end_ms,
                    interval=max(1, round(interval * 1000)),
                    queries=TimeseriesFormulaRequestQueries(  # type: ignore[no-untyped-call]
                        [MetricsTimeseriesQuery(data_source=MetricsDataSource.METRICS, query=query, name="a")]
                    ),
                ),
                type=TimeseriesFormulaRequestType.TIMESERIES_REQUEST,
            )
        )
        api = MetricsApiV2(self._api_client())  # type: ignore[no-untyped-call]
        answer = await self._call("/api/v2/query/timeseries", api.query_timeseries_data(body))
        return self._v2_samples(_as_dict(answer), span, query)

    async def _v1(self, query: str, span: Window) -> list[Sample]:
        api = MetricsApiV1(self._api_client())  # type: ignore[no-untyped-call]
        call = api.query_metrics(_from=int(span.start), to=math.ceil(span.end), query=query)
        answer = await self._call("/api/v1/query", call)
        return self._v1_samples(_as_dict(answer), span, query)

    async def _call(self, path: str, call: Any) -> Any:
        """Await the SDK's ``call``, mapping its failures onto the error tree."""
        try:
            return await call
        except ApiException as exc:
            raise self._status_error(path, exc) from exc
        except OpenApiException as exc:  # the SDK could not read the answer into its models
            raise Failed(
                f"{self._what}: unexpected answer from {path}: {one_line(str(exc))}", kind="bad_response"
            ) from exc
        except (TimeoutError, BaseTimeout) as exc:
            timeout = format_duration(self._settings.timeout)
            raise Retry(f"{path} timed out after {timeout}", kind="timeout") from exc
        except (OSError, AiosonicError) as exc:
            problem = str(exc) or type(exc).__name__
            raise Retry(f"connection failed: {one_line(problem)}", kind="connection") from exc

    def _status_error(self, path: str, exc: ApiException) -> Exception:
        status = int(exc.status or 0)
        headers = _headers(exc.headers)
        reason = exc.reason or ""
        detail = _errors_text(exc.body)
        said = f"HTTP {status} {reason}".rstrip() + (f": {detail}" if detail else "")
        if status in (401, 403):
            return ProviderConfigError(
                f"provider {self.name}: Datadog answered {status} {reason or 'Forbidden'}: "
                "check api_key/app_key and the key's permissions",
                kind="forbidden",
            )
        if status in _V2_MISSING and path.startswith("/api/v2/"):
            return _V2Missing(status)
        if status == 429:
            return rate_limited(self._what, f"rate limited by {path} ({said})", _rate_limit_delay(headers))
        if status in _RETRYABLE or status >= 500:
            return Retry(f"{path} answered {said}", kind="http", delay=_retry_after(headers))
        if status in _QUERY_REFUSED:
            return ProviderQueryError(f"{self._what}: query refused by {path}: {said}")
        if status == 404:
            return ProviderConfigError(
                f"provider {self.name}: {path} answered 404 Not Found: is "
                f"{_http.redact_url(self._settings.base_url)} a Datadog API address?"
            )
        return Failed(f"{self._what}: {path} answered {said}", kind="http")

    def _api_client(self) -> Any:
        """The SDK client, made on first use: adapters are built before the event loop runs."""
        if self._client is None:
            settings = self._settings
            configuration = Configuration(  # type: ignore[no-untyped-call]
                host=settings.base_url,
                request_timeout=settings.timeout,
                enable_retry=False,  # the retries are ours: bounded, jittered, rate-limit aware
            )
            configuration.api_key["apiKeyAuth"] = settings.api_key.get_secret_value()
            configuration.api_key["appKeyAuth"] = settings.app_key.get_secret_value()
            client = AsyncApiClient(configuration)
            client.user_agent = f"{USER_AGENT} {client.user_agent}"
            self._client = client
        return self._client

    # --- answers ----------------------------------------------------------------------------

    def _v2_samples(self, answer: Mapping[str, Any], span: Window, query: str) -> list[Sample]:
        data = answer.get("data")
        attributes = data.get("attributes") if isinstance(data, Mapping) else None
        errors = answer.get("errors")
        if not isinstance(attributes, Mapping):
            if errors:
                raise ProviderQueryError(f"{self._what}: query refused: {one_line(str(errors))}")
            raise Failed(f"{self._what}: the v2 answer has no data.attributes", kind="bad_response")
        series = attributes.get("series") or []
        times = attributes.get("times") or []
        values = attributes.get("values") or []
        if errors:
            if not series:
                raise ProviderQueryError(f"{self._what}: query refused: {one_line(str(errors))}")
            log.warning("datadog.errors", provider=self.name, query=query, errors=str(errors))
        if not isinstance(series, list) or not isinstance(times, list) or not isinstance(values, list):
            raise Failed(f"{self._what}: series, times or values is not a list", kind="bad_response")
        if len(values) != len(series):
            raise Failed(
                f"{self._what}: {len(series)} series but {len(values)} value lists", kind="bad_response"
            )
        samples = []
        for meta, points in zip(series, values, strict=True):
            if not isinstance(points, list) or len(points) != len(times):
                raise Failed(f"{self._what}: a series' values do not match `times`", kind="bad_response")
            total = _reduce(zip(times, points, strict=True), span, _adds_up(query), self._what)
            if total is not None:
                tags = meta.get("group_tags") if isinstance(meta, Mapping) else None
                samples.append(Sample(labels=_labels(tags or ()), value=total))
        return samples

    def _v1_samples(self, answer: Mapping[str, Any], span: Window, query: str) -> list[Sample]:
        if answer.get("status") == "error" or answer.get("error"):
            message = answer.get("error") or answer.get("message") or "status: error"
            raise ProviderQueryError(f"{self._what}: query refused: {one_line(str(message))}")
        series = answer.get("series") or []
        if not isinstance(series, list):
            raise Failed(f"{self._what}: `series` is not a list", kind="bad_response")
        samples = []
        for one in series:
            if not isinstance(one, Mapping):
                raise Failed(f"{self._what}: a series is not an object", kind="bad_response")
            pointlist = one.get("pointlist") or []
            pairs = []
            for point in pointlist:
                if not isinstance(point, list | tuple) or len(point) != 2:
                    raise Failed(f"{self._what}: a point is not [time, value]", kind="bad_response")
                pairs.append((point[0], point[1]))
            total = _reduce(pairs, span, _adds_up(query), self._what)
            if total is not None:
                samples.append(Sample(labels=_labels(one.get("tag_set") or ()), value=total))
        return samples


class _V2Missing(Exception):
    """The v2 query endpoint is not served here; never leaves the adapter."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def _as_dict(answer: Any) -> Mapping[str, Any]:
    """The SDK's model as plain JSON-like data (its list wrappers do not index like lists)."""
    to_dict = getattr(answer, "to_dict", None)
    result = to_dict() if callable(to_dict) else answer
    if not isinstance(result, Mapping):
        raise Failed("the answer is not a JSON object", kind="bad_response")
    return result


def _adds_up(query: str) -> bool:
    """Whether the query asks for counts (``.as_count()``), whose points add up over an interval."""
    return _AS_COUNT.search(query) is not None


def _reduce(points: Iterable[tuple[Any, Any]], span: Window, adds_up: bool, what: str) -> float | None:
    """One number for a series: the sum of its non-null points stamped inside ``span`` when they
    are counts (``adds_up``), else the latest of them; None when there is none."""
    total = 0.0
    latest: tuple[float, float] | None = None
    for stamp, value in points:
        if value is None:
            continue
        if isinstance(stamp, bool) or not isinstance(stamp, int | float):
            raise Failed(f"{what}: a point's time is not a number: {stamp!r:.40}", kind="bad_response")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Failed(f"{what}: a point's value is not a number: {value!r:.40}", kind="bad_response")
        if span.holds_ms(stamp):
            total += float(value)
            if latest is None or stamp >= latest[0]:
                latest = (float(stamp), float(value))
    if latest is None:
        return None
    return total if adds_up else latest[1]


def _labels(tags: Iterable[Any]) -> dict[str, str]:
    """``["le:0.5", "env:prod"]`` → ``{"le": "0.5", "env": "prod"}`` (a bare tag maps to "")."""
    labels: dict[str, str] = {}
    for tag in tags:
        key, _, value = str(tag).partition(":")
        labels[key] = value
    return labels


def _headers(raw: Any) -> dict[str, str]:
    """Response headers with lower-case names (the SDK keeps them as the server wrote them)."""
    if not isinstance(raw, Mapping):
        return {}
    return {str(k).lower(): str(v) for k, v in raw.items()}


def _retry_after(headers: Mapping[str, str]) -> float | None:
    return _http.retry_after(headers.get("retry-after"), time.time())


def _rate_limit_delay(headers: Mapping[str, str]) -> float | None:
    """Seconds until Datadog lifts a rate limit: ``Retry-After`` if given, else
    ``X-RateLimit-Reset`` (seconds until the current period ends, as Datadog documents it)."""
    after = _retry_after(headers)
    if after is not None:
        return after
    try:
        reset = float(headers.get("x-ratelimit-reset", ""))
    except ValueError:
        return None
    return reset if math.isfinite(reset) and reset >= 0 else None


def _errors_text(body: Any) -> str:
    """Datadog's ``{"errors": [...]}`` as one line, or the start of whatever else came."""
    if isinstance(body, Mapping):
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            return one_line("; ".join(str(e) for e in errors))
        return one_line(json.dumps(body)) if body else ""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    return one_line(str(body)) if body else ""
