"""Metrics from Amazon CloudWatch (``GetMetricData``), on aiobotocore.

The query syntax. A check's query names one CloudWatch metric and a statistic::

    <Namespace>|<MetricName>|<Stat>[|<Dimension>=<Value>[,<Dimension>=<Value>...]]

e.g. ``MyApp|Errors|Sum|Service={service},Version={version}`` or
``AWS/ApplicationELB|HTTPCode_Target_5XX_Count|Sum|LoadBalancer=app/shop/50dc6c495c0c9188``.
Whitespace around each part is ignored; a backslash makes the next character plain (``\\|``,
``\\,``, ``\\=``, ``\\\\``, ``\\ ``), and template values are escaped that way (:func:`escape`), so a version
string cannot add a dimension or end the query. As in CloudWatch itself, a metric is identified by
its complete set of dimensions: list them all. ``Stat`` is any CloudWatch statistic: ``Sum``,
``SampleCount``, ``Average``, ``Minimum``, ``Maximum``, ``p99``, ``tm90``, ``TC(0.5:)``, ...

What a query returns (DESIGN §7 works on counts per interval). ``Period`` is the poll interval in
whole seconds. CloudWatch rounds a request's start time down (to the minute, for recent data), so
the provider asks for the last *complete* period before the poll time, ``[end - period, end)``
with ``end = floor(at / period) * period``: consecutive polls then read consecutive periods, each
once, and a bucket is never split or counted twice. Of the datapoints returned in that span,

- ``Sum`` and ``SampleCount`` are **added up** (a count of events: what a ``ratio`` check needs);
- every other statistic is a level: the **latest** datapoint is the value;
- no datapoint is **no data** (CloudWatch has nothing for that metric, dimensions and period).

The one ``Sample`` is labelled with the query's dimensions. Choose a poll interval CloudWatch can
serve: 60 s or a multiple of it for standard-resolution metrics; 1, 5, 10, 20 or 30 s only for
high-resolution ones. Metrics Insights (``SELECT ... GROUP BY``) queries are not supported in this
release.

Failures are mapped at this boundary:

- throttling (``Throttling``, ``ThrottlingException``, HTTP 429), 5xx and internal errors, timeouts
  and connection failures: retried a bounded number of times, then ``ProviderUnavailable``;
- a refused request (``InvalidParameterValue``, ``ValidationError``, ...) or a query that does not
  parse: ``ProviderQueryError``;
- credentials that are missing, wrong, expired or not allowed ``cloudwatch:GetMetricData``: a
  configuration error naming the provider, not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import structlog
from aiobotocore.session import AioSession
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)
from pydantic import Field, SecretStr, field_validator, model_validator

from providers import _http
from providers.metrics._api import ProviderConfigError, one_line, rate_limited
from providers.metrics._http import USER_AGENT, Failed, HttpSettings, Instruments, Retry, with_retries
from watchdog.config.models import Duration, format_duration
from watchdog.errors import ProviderQueryError
from watchdog.plugins import AdapterContext
from watchdog.ports import Sample

__all__ = [
    "CloudWatchProvider",
    "CloudWatchSettings",
    "MetricQuery",
    "aligned_window",
    "escape",
    "parse_query",
]

log = structlog.get_logger()

_REGION: Final = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_STAT: Final = re.compile(
    r"^(SampleCount|Sum|Average|Minimum|Maximum|[pP]\d{1,2}(\.\d+)?|[pP]100|"
    r"(tm|wm|tc|ts|pr|TM|WM|TC|TS|PR)(\d{1,2}(\.\d+)?|\(.*\)))$"
)
_COUNTS: Final = frozenset({"Sum", "SampleCount"})
"""Statistics whose datapoints add up over the interval; the others are levels."""
_SPECIAL: Final = frozenset("\\|,=")
_MAX_PAGES: Final = 10
"""NextToken pages read for one query at most. One metric over one period fits in one page; the
bound keeps a misbehaving endpoint from looping a poll forever."""

_THROTTLED: Final = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "LimitExceeded",
        "LimitExceededException",
    }
)
_DENIED: Final = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "ExpiredToken",
        "ExpiredTokenException",
        "AuthFailure",
        "OptInRequired",
    }
)
_SERVER: Final = frozenset(
    {"InternalFailure", "InternalServiceError", "InternalServiceFault", "ServiceUnavailable"}
)


class CloudWatchSettings(HttpSettings):
    """``providers.<name>`` with ``type: cloudwatch``."""

    region: str
    """The AWS region of the metrics, e.g. eu-west-1."""
    url: str | None = None
    """Endpoint URL instead of the region's (a VPC endpoint, a proxy, a test server)."""
    access_key_id: SecretStr | None = None
    """With `secret_access_key`: static credentials. Without both, the usual AWS chain applies
    (environment, shared files and `profile`, the instance's or task's role)."""
    secret_access_key: SecretStr | None = None
    """Keep it out of the file: `${AWS_SECRET_ACCESS_KEY}`."""
    session_token: SecretStr | None = None
    """For temporary credentials, with the two keys above."""
    profile: str | None = None
    """A profile of the shared AWS config files, instead of static keys."""
    timeout: Duration = 10.0
    """Per request (one attempt): the connect and the read timeout each. 10s by default: one metric
    over one period answers in well under a second, and three attempts still fit a poll."""
    retries: int = Field(default=3, ge=1, le=10)
    """Attempts in total (1 = no retry) before the provider is reported unavailable for the poll.
    3 by default: rides over throttling or a dropped connection without stretching a poll."""

    @field_validator("region")
    @classmethod
    def _aws_region(cls, value: str) -> str:
        if "${" not in value and not _REGION.match(value):
            raise ValueError(f"{value!r} is not an AWS region (like eu-west-1 or us-east-2)")
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            _http.check_url(value)
        return value

    @model_validator(mode="after")
    def _whole_credentials(self) -> CloudWatchSettings:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both `access_key_id` and `secret_access_key`, or neither")
        if self.session_token is not None and self.access_key_id is None:
            raise ValueError("`session_token` goes with `access_key_id` and `secret_access_key`")
        if self.profile is not None and self.access_key_id is not None:
            raise ValueError("give either a `profile` or static keys, not both")
        return self


def escape(value: str) -> str:
    """Escape a template value so it stays one dimension value (see the module docstring).

    Whitespace is escaped too, so a value's own leading or trailing spaces survive the trimming
    around each part.
    """
    return "".join("\\" + c if c in _SPECIAL or c.isspace() else c for c in value)


@dataclass(frozen=True, slots=True)
class MetricQuery:
    """A parsed query: one metric, one statistic."""

    namespace: str
    metric: str
    stat: str
    dimensions: tuple[tuple[str, str], ...] = ()

    @property
    def adds_up(self) -> bool:
        return self.stat in _COUNTS

    def metric_stat(self, period: int) -> dict[str, Any]:
        return {
            "Metric": {
                "Namespace": self.namespace,
                "MetricName": self.metric,
                "Dimensions": [{"Name": n, "Value": v} for n, v in self.dimensions],
            },
            "Period": period,
            "Stat": self.stat,
        }


class QuerySyntaxError(ValueError):
    """The query is not ``Namespace|MetricName|Stat|Dim=Value,...``."""


def _split(text: str, separator: str) -> list[str]:
    """Split on ``separator`` where it is not escaped; escapes are kept for the next split."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        raise QuerySyntaxError("the query ends with a lone backslash")
    parts.append("".join(current))
    return parts


def _plain(text: str) -> str:
    """``text`` without the whitespace around it (unless escaped) and with its escapes resolved."""
    chars: list[tuple[str, bool]] = []
    escaped = False
    for char in text:
        if escaped:
            chars.append((char, True))
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            chars.append((char, False))
    while chars and not chars[0][1] and chars[0][0].isspace():
        chars.pop(0)
    while chars and not chars[-1][1] and chars[-1][0].isspace():
        chars.pop()
    return "".join(c for c, _ in chars)


def parse_query(query: str) -> MetricQuery:
    """``Namespace|MetricName|Stat|Dim=Value,...`` → :class:`MetricQuery`, or QuerySyntaxError."""
    parts = _split(query, "|")
    if len(parts) not in (3, 4):
        raise QuerySyntaxError(
            "a CloudWatch query is Namespace|MetricName|Stat or Namespace|MetricName|Stat|Dim=Value,... "
            f"({len(parts)} part(s) found)"
        )
    namespace, metric, stat = (_plain(p) for p in parts[:3])
    if not namespace or not metric:
        raise QuerySyntaxError("the namespace and the metric name must not be empty")
    if not _STAT.match(stat):
        raise QuerySyntaxError(
            f"{stat!r} is not a CloudWatch statistic (Sum, SampleCount, Average, Minimum, Maximum, p99, ...)"
        )
    dimensions: list[tuple[str, str]] = []
    if len(parts) == 4 and parts[3].strip():
        for item in _split(parts[3], ","):
            pair = _split(item, "=")
            if len(pair) != 2 or not _plain(pair[0]):
                raise QuerySyntaxError(f"{_plain(item)!r} is not Dimension=Value")
            dimensions.append((_plain(pair[0]), _plain(pair[1])))
    names = [n for n, _ in dimensions]
    if len(set(names)) != len(names):
        raise QuerySyntaxError("a dimension is named twice")
    return MetricQuery(namespace, metric, stat, tuple(dimensions))


def aligned_window(at: float, interval: float) -> tuple[int, int, int]:
    """``(period, start, end)``: the last complete period of ``interval`` seconds before ``at``."""
    period = max(1, round(interval))
    end = math.floor(at / period) * period
    return period, end - period, end


class CloudWatchProvider:
    """A ``MetricsProvider`` backed by CloudWatch in one region with one set of credentials."""

    Settings = CloudWatchSettings

    def __init__(
        self, name: str, settings: CloudWatchSettings, context: AdapterContext | None = None
    ) -> None:
        self.name = name
        self._settings = settings
        where = _http.redact_url(settings.url) if settings.url else settings.region
        self._what = f"cloudwatch provider {name!r} in {where}"
        self._instruments = Instruments(name, context)
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(
        cls, name: str, settings: CloudWatchSettings, context: AdapterContext
    ) -> CloudWatchProvider:
        return cls(name, settings, context)

    def escape(self, value: str) -> str:
        """Escape a template value so it stays one dimension value."""
        return escape(value)

    async def query(self, query: str, *, at: float, interval: float) -> list[Sample]:
        """The value of ``query`` over the last complete period before ``at`` (module docstring)."""
        period, start, end = aligned_window(at, interval)

        async def attempts() -> list[Sample]:
            try:
                parsed = parse_query(query)
            except QuerySyntaxError as exc:
                raise ProviderQueryError(f"{self._what}: {exc}: {query!r:.200}") from exc

            async def attempt() -> list[Sample]:
                return await self._attempt(parsed, period, start, end)

            return await with_retries(self._settings.retries, self._what, attempt)

        samples = await self._instruments.timed(attempts)
        if not samples:
            log.debug("cloudwatch.no_data", provider=self.name, query=query, start=start, end=end)
        return samples

    async def aclose(self) -> None:
        async with self._lock:
            stack, self._exit_stack, self._client = self._exit_stack, None, None
            if stack is not None:
                await stack.aclose()

    async def _cloudwatch(self) -> Any:
        """The aiobotocore client, made on first use (a constructor runs outside the event loop)."""
        async with self._lock:
            if self._client is None:
                s = self._settings
                session = AioSession(profile=s.profile)
                config = Config(
                    connect_timeout=s.timeout,
                    read_timeout=s.timeout,
                    retries={"total_max_attempts": 1},  # the retries are ours: bounded, jittered
                    user_agent_extra=USER_AGENT,
                )
                options: dict[str, Any] = {"region_name": s.region, "config": config}
                if s.url:
                    options["endpoint_url"] = s.url
                if s.access_key_id is not None and s.secret_access_key is not None:
                    options["aws_access_key_id"] = s.access_key_id.get_secret_value()
                    options["aws_secret_access_key"] = s.secret_access_key.get_secret_value()
                if s.session_token is not None:
                    options["aws_session_token"] = s.session_token.get_secret_value()
                stack = contextlib.AsyncExitStack()
                try:
                    self._client = await stack.enter_async_context(
                        session.create_client("cloudwatch", **options)
                    )
                except BaseException:
                    await stack.aclose()
                    raise
                self._exit_stack = stack
            return self._client

    async def _attempt(self, query: MetricQuery, period: int, start: int, end: int) -> list[Sample]:
        try:
            client = await self._cloudwatch()
            points = await self._datapoints(client, query, period, start, end)
        except ClientError as exc:
            raise self._client_error(exc) from exc
        except (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError) as exc:
            raise ProviderConfigError(
                f"provider {self.name}: no usable AWS credentials ({exc}): set access_key_id and "
                "secret_access_key, a profile, or a role for the host",
                kind="forbidden",
            ) from exc
        except (NoRegionError, ProfileNotFound) as exc:
            raise ProviderConfigError(f"provider {self.name}: {exc}") from exc
        except ParamValidationError as exc:
            raise ProviderQueryError(f"{self._what}: CloudWatch would refuse the request: {exc}") from exc
        except (TimeoutError, ConnectTimeoutError, ReadTimeoutError) as exc:
            timeout = format_duration(self._settings.timeout)
            raise Retry(f"timed out after {timeout}", kind="timeout") from exc
        except (ConnectionError, HTTPClientError) as exc:
            raise Retry(one_line(f"connection failed: {exc}"), kind="connection") from exc
        except BotoCoreError as exc:
            raise Failed(f"{self._what}: {one_line(str(exc))}", kind="other") from exc
        if not points:
            return []
        points.sort()
        value = math.fsum(v for _, v in points) if query.adds_up else points[-1][1]
        return [Sample(labels=dict(query.dimensions), value=value)]

    async def _datapoints(
        self, client: Any, query: MetricQuery, period: int, start: int, end: int
    ) -> list[tuple[float, float]]:
        """Every (time, value) of the query in ``[start, end)``, over all NextToken pages."""
        request: dict[str, Any] = {
            "MetricDataQueries": [{"Id": "q", "MetricStat": query.metric_stat(period), "ReturnData": True}],
            "StartTime": datetime.fromtimestamp(start, UTC),
            "EndTime": datetime.fromtimestamp(end, UTC),
            "ScanBy": "TimestampAscending",
        }
        points: list[tuple[float, float]] = []
        for _ in range(_MAX_PAGES):
            answer = await client.get_metric_data(**request)
            for message in answer.get("Messages") or ():
                log.info(
                    "cloudwatch.message",
                    provider=self.name,
                    code=message.get("Code"),
                    message=message.get("Value"),
                )
            for result in answer.get("MetricDataResults") or ():
                points.extend(self._result_points(result, start, end))
            token = answer.get("NextToken")
            if not token:
                return points
            request["NextToken"] = token
        raise Failed(f"{self._what}: more than {_MAX_PAGES} pages for one query", kind="bad_response")

    def _result_points(self, result: Mapping[str, Any], start: int, end: int) -> list[tuple[float, float]]:
        status = result.get("StatusCode")
        if status == "Forbidden":
            raise ProviderConfigError(
                f"provider {self.name}: CloudWatch answered Forbidden for the metric: check that the "
                "credentials allow cloudwatch:GetMetricData",
                kind="forbidden",
            )
        if status == "InternalError":
            raise Retry("CloudWatch answered InternalError for the metric", kind="http")
        stamps = result.get("Timestamps") or []
        values = result.get("Values") or []
        if len(stamps) != len(values):
            raise Failed(
                f"{self._what}: {len(stamps)} timestamps but {len(values)} values", kind="bad_response"
            )
        points = []
        for stamp, value in zip(stamps, values, strict=True):
            when = stamp.timestamp() if isinstance(stamp, datetime) else float(stamp)
            if start <= when < end:
                points.append((when, float(value)))
        return points

    def _client_error(self, exc: ClientError) -> Exception:
        error = exc.response.get("Error") or {}
        code = str(error.get("Code") or "")
        message = one_line(str(error.get("Message") or code or exc))
        status = int((exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
        said = f"{code}: {message}" if code and message != code else message
        if code in _DENIED or status in (401, 403):
            return ProviderConfigError(
                f"provider {self.name}: CloudWatch answered {said}: check the credentials and that "
                "they allow cloudwatch:GetMetricData",
                kind="forbidden",
            )
        if code in _THROTTLED or status == 429:
            return rate_limited(self._what, f"throttled by CloudWatch ({said})", None)
        if code in _SERVER or status >= 500:
            return Retry(f"CloudWatch answered {said} (HTTP {status})", kind="http")
        return ProviderQueryError(f"{self._what}: CloudWatch refused the query: {said}")
