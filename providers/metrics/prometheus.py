"""Metrics from a Prometheus server's HTTP API (``GET /api/v1/query``), on aiohttp.

Failures are mapped at this boundary: what another attempt may fix (timeouts, refused connections,
5xx, 429, Prometheus' ``timeout``/``internal``/``unavailable``/``canceled``) is retried a bounded
number of times and then raised as ``ProviderUnavailable``; a query Prometheus rejects
(``bad_data``, ``execution``) is a ``ProviderQueryError`` at once, since asking again gets the same
answer.
"""

from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import structlog
from pydantic import Field, SecretStr, field_validator, model_validator

from providers._http import is_transient
from providers.metrics._http import (
    USER_AGENT,
    Failed,
    HttpSettings,
    Instruments,
    Retry,
    check_http_url,
    escape,
    get,
    retry_after,
    retry_status,
    with_retries,
)
from watchdog.errors import ProviderQueryError
from watchdog.plugins import AdapterContext
from watchdog.ports import Sample

__all__ = ["PrometheusProvider", "PrometheusSettings"]

log = structlog.get_logger()

_QUERY_ERRORS: Final = frozenset({"bad_data", "execution"})
_RETRY_ERRORS: Final = frozenset({"timeout", "internal", "unavailable", "canceled"})


class PrometheusSettings(HttpSettings):
    """``providers.<name>`` with ``type: prometheus``."""

    url: str
    """Base URL of the Prometheus server (or of a proxy in front of it), e.g.
    http://127.0.0.1:9090 or https://mon.example/prometheus. `/api/v1/query` is appended."""
    bearer_token: SecretStr | None = None
    """Sent as `Authorization: Bearer ...`. Keep it out of the file: `${file:/run/secrets/prom}`."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra request headers, e.g. `X-Scope-OrgID` for Cortex, Mimir or Thanos tenants."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return check_http_url(value)

    @model_validator(mode="after")
    def _one_authorization(self) -> PrometheusSettings:
        if self.bearer_token is not None and any(key.lower() == "authorization" for key in self.headers):
            raise ValueError("give either `bearer_token` or an Authorization header, not both")
        return self


def _without_credentials(url: str) -> str:
    """The URL for messages and logs: a user:password@ part must not reach Slack."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class _Shape(Exception):
    """The answer is JSON but not the shape Prometheus documents."""


class PrometheusProvider:
    """A ``MetricsProvider`` backed by one Prometheus-compatible server (Prometheus, Thanos, Mimir,
    VictoriaMetrics: anything that serves the ``/api/v1/query`` API)."""

    Settings = PrometheusSettings

    def __init__(
        self, name: str, settings: PrometheusSettings, context: AdapterContext | None = None
    ) -> None:
        self.name = name
        self._settings = settings
        self._endpoint = settings.url.rstrip("/") + "/api/v1/query"
        self._what = f"prometheus provider {name!r} at {_without_credentials(settings.url)}"
        self._instruments = Instruments(name, context)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(
        cls, name: str, settings: PrometheusSettings, context: AdapterContext
    ) -> PrometheusProvider:
        return cls(name, settings, context)

    def escape(self, value: str) -> str:
        """Escape a template value for a PromQL double-quoted label value."""
        return escape(value)

    async def query(self, query: str, *, at: float, interval: float) -> list[Sample]:
        """Evaluate ``query`` as an instant query at ``at``.

        ``interval`` is already in the rendered query (``[{interval}]``); Prometheus needs only the
        evaluation time.
        """
        params = {"query": query, "time": f"{at:.3f}"}

        async def attempt() -> list[Sample]:
            return await get(
                self._client(),
                self._endpoint,
                params=params,
                timeout=self._settings.timeout,
                read=lambda response: self._read(response, query),
            )

        async def attempts() -> list[Sample]:
            return await with_retries(self._settings.retries, self._what, attempt)

        return await self._instruments.timed(attempts)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _client(self) -> aiohttp.ClientSession:
        """The session, created on first use: a constructor runs outside any event loop."""
        if self._session is None or self._session.closed:
            headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
            headers.update(self._settings.headers)
            if self._settings.bearer_token is not None:
                token = self._settings.bearer_token.get_secret_value()
                headers["Authorization"] = f"Bearer {token}"
            self._session = aiohttp.ClientSession(headers=headers)
        return self._session

    async def _read(self, response: aiohttp.ClientResponse, query: str) -> list[Sample]:
        body = await response.read()
        try:
            payload: Any = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            payload = None
        status = response.status
        error_type = payload.get("errorType") if payload is not None else None
        error = str(payload.get("error", "")) if payload is not None else _snippet(body)
        detail = f": {error}" if error else ""

        if error_type in _QUERY_ERRORS:
            raise ProviderQueryError(f"{self._what}: query refused ({error_type}){detail}")
        if error_type in _RETRY_ERRORS:
            raise Retry(
                f"Prometheus error {error_type} (HTTP {status}){detail}",
                kind=f"prometheus_{error_type}",
                delay=retry_after(response.headers),
            )
        if is_transient(status):
            raise retry_status(status, response.headers, detail)
        if status >= 300:
            raise Failed(f"{self._what}: HTTP {status}{detail}", kind="http")
        if payload is None:
            raise Failed(
                f"{self._what}: the answer is not a JSON object (is this a Prometheus API?){detail}",
                kind="bad_response",
            )
        if payload.get("status") != "success":
            raise Failed(
                f"{self._what}: status {payload.get('status')!r}, error type {error_type!r}{detail}",
                kind="bad_response",
            )
        self._log_annotations(payload, query)
        try:
            return _samples(payload.get("data"), self._what, query)
        except _Shape as exc:
            raise Failed(f"{self._what}: unexpected answer: {exc}", kind="bad_response") from exc

    def _log_annotations(self, payload: dict[str, Any], query: str) -> None:
        """Prometheus' warnings often explain odd numbers (a PromQL info about a non-counter in
        ``rate``, a partial answer from a Thanos store); they belong next to the poll in the log."""
        for warning in payload.get("warnings") or ():
            log.warning("prometheus.warning", provider=self.name, query=query, warning=warning)
        for info in payload.get("infos") or ():
            log.info("prometheus.info", provider=self.name, query=query, info=info)


def _snippet(body: bytes, limit: int = 200) -> str:
    """The start of a non-JSON body (a proxy's error page), on one line, for the message."""
    text = " ".join(body.decode("utf-8", "replace").split())
    return text if len(text) <= limit else text[:limit] + "..."


def _samples(data: Any, what: str, query: str) -> list[Sample]:
    if not isinstance(data, dict):
        raise _Shape("`data` is not an object")
    result_type = data.get("resultType")
    result = data.get("result")
    if result_type == "scalar":
        return [Sample(labels={}, value=_value(result))]
    if result_type == "string":
        raise ProviderQueryError(f"{what}: {query!r} returns a string, not a number")
    if result_type not in ("vector", "matrix"):
        raise _Shape(f"unknown resultType {result_type!r}")
    if not isinstance(result, list):
        raise _Shape("`result` is not a list")
    samples = []
    for series in result:
        if not isinstance(series, dict) or not isinstance(series.get("metric"), dict):
            raise _Shape("a series without a `metric` object")
        labels = {str(k): str(v) for k, v in series["metric"].items() if k != "__name__"}
        if "histogram" in series or "histograms" in series:
            raise ProviderQueryError(
                f"{what}: {query!r} returns native histograms; query the classic `_bucket` "
                "series (sum by (le)) or a number such as histogram_count(...)"
            )
        if result_type == "vector":
            point = series.get("value")
        else:
            points = series.get("values")
            if not isinstance(points, list):
                raise _Shape("a matrix series without `values`")
            if not points:
                continue
            point = points[-1]  # the newest point: what the series is worth at `at`
        samples.append(Sample(labels=labels, value=_value(point)))
    return samples


def _value(point: Any) -> float:
    """``[<unix time>, "<value>"]`` → float; Prometheus quotes values so NaN and ±Inf survive JSON."""
    if not isinstance(point, list) or len(point) != 2 or not isinstance(point[1], str):
        raise _Shape(f'a point is not [time, "value"]: {point!r:.80}')
    try:
        return float(point[1])
    except ValueError as exc:
        raise _Shape(f"value {point[1]!r:.40} is not a number") from exc
