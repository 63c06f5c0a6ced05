"""DatadogProvider against a local server that speaks Datadog's query API: it checks the API and
application keys the way Datadog does and answers with the bodies recorded from the real API
(``datadog_fixtures/``), or with bodies built in the same shapes where none was recorded."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from providers.metrics._api import ProviderConfigError
from providers.metrics.datadog import DatadogProvider, DatadogSettings, escape
from watchdog.errors import PermanentError, ProviderQueryError, ProviderUnavailable
from watchdog.metrics import WatchdogMetrics
from watchdog.ports import MetricsProvider, Sample
from watchdog.templates import render

FIXTURES = Path(__file__).parent / "datadog_fixtures"
V2 = "/api/v2/query/timeseries"
V1 = "/api/v1/query"
API_KEY = "dd-api-key-0123"
APP_KEY = "dd-app-key-4567"
JSON_API = "application/vnd.api+json"

# The recorded v2 answer: three points, at these times (ms), worth 1, 1 and 87.
V2_TIMES = (1711977645000, 1711977705000, 1711980225000)


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


@dataclass
class Reply:
    """One scripted answer; ``delay`` sleeps first (a slow Datadog)."""

    body: str
    status: int = 200
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


FORBIDDEN = Reply(json.dumps({"errors": ["Forbidden"]}), status=403)
"""What Datadog answers a request whose keys it does not accept (not recorded: built in its shape)."""


class FakeDatadog:
    """A loopback server shaped like Datadog's API: requests without the right ``DD-API-KEY`` and
    ``DD-APPLICATION-KEY`` get 403; the others get the scripted replies of their path, in turn, the
    last one repeated. Paths with no script answer 404, as Datadog does for an unknown route."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self._script: dict[str, list[Reply]] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reply(self, path: str, *replies: Reply) -> None:
        self._script[path] = list(replies)

    def seen(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        seen = Seen(
            request.method,
            request.path,
            dict(request.query),
            dict(request.headers),
            await request.read(),
            time.monotonic(),
        )
        self.requests.append(seen)
        keys = (request.headers.get("DD-API-KEY"), request.headers.get("DD-APPLICATION-KEY"))
        script = self._script.get(request.path)
        if keys != (API_KEY, APP_KEY):
            reply = FORBIDDEN
        elif not script:
            reply = Reply(json.dumps({"errors": ["Not found"]}), status=404)
        else:
            reply = script.pop(0) if len(script) > 1 else script[0]
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return web.Response(
            status=reply.status,
            text=reply.body,
            content_type=reply.content_type,
            headers=reply.headers,
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest_asyncio.fixture
async def datadog() -> AsyncIterator[FakeDatadog]:
    fake = FakeDatadog()
    await fake.start()
    yield fake
    await fake.stop()


MakeProvider = Callable[..., DatadogProvider]


@pytest.fixture
def make_datadog(datadog: FakeDatadog, make_adapter: Callable[..., Any]) -> MakeProvider:
    """Providers with the right keys, pointed at ``datadog`` by ``url:``; closed after the test."""

    def make(name: str = "dd", **settings: Any) -> DatadogProvider:
        settings.setdefault("url", datadog.url)
        settings.setdefault("api_key", API_KEY)
        settings.setdefault("app_key", APP_KEY)
        provider: DatadogProvider = make_adapter(DatadogProvider, name, **settings)
        return provider

    return make


def v2_body(series: list[tuple[list[str], list[float | None]]], times: list[int]) -> str:
    """A v2 answer in the recorded shape (``v2.query_timeseries.response.ok.json``), for series the
    recordings do not have: each is (group tags, values)."""
    return json.dumps(
        {
            "data": {
                "id": "0",
                "type": "timeseries_response",
                "attributes": {
                    "series": [
                        {"group_tags": tags, "query_index": 0, "unit": None} for tags, _ in series
                    ],
                    "times": times,
                    "values": [values for _, values in series],
                },
            }
        }
    )


def v2_ok() -> Reply:
    return Reply(fixture("v2.query_timeseries.response.ok.json"), content_type=JSON_API)


# --- what a query returns ---------------------------------------------------------------------


async def test_counts_inside_the_window_are_summed(
    datadog: FakeDatadog, make_datadog: MakeProvider
) -> None:
    """With ``.as_count()``, the recorded answer's three points (1, 1, 87) all fall in an hour-long
    window ending after the last: one unlabelled sample worth their sum, the count over the
    interval."""
    datadog.reply(V2, v2_ok())
    samples = await make_datadog().query("sum:x{*}.as_count()", at=1711980240.0, interval=3600.0)
    assert samples == [Sample({}, 89.0)]


async def test_levels_give_the_latest_point_in_the_window(
    datadog: FakeDatadog, make_datadog: MakeProvider
) -> None:
    """Without ``.as_count()`` the points are levels (a gauge): the same answer gives the latest
    point inside the window, not a sum."""
    datadog.reply(V2, v2_ok())
    samples = await make_datadog().query("avg:x{*}", at=1711980240.0, interval=3600.0)
    assert samples == [Sample({}, 87.0)]


async def test_points_outside_the_window_are_left_out(
    datadog: FakeDatadog, make_datadog: MakeProvider
) -> None:
    """A one-minute window holds only the point stamped inside it; the window is half-open, so a
    point stamped exactly at the poll time belongs to the next poll."""
    datadog.reply(V2, v2_ok())
    provider = make_datadog()
    inside = await provider.query("sum:x{*}.as_count()", at=1711977720.0, interval=60.0)
    assert inside == [Sample({}, 1.0)]
    at_the_end = await provider.query("sum:x{*}.as_count()", at=V2_TIMES[2] / 1000, interval=60.0)
    assert at_the_end == []


async def test_request_is_the_documented_v2_timeseries_request_with_both_keys(
    datadog: FakeDatadog, make_datadog: MakeProvider
) -> None:
    """POST /api/v2/query/timeseries carries DD-API-KEY and DD-APPLICATION-KEY, and a body shaped
    like the SDK's recorded request: the window in ms, the poll interval as the rollup interval in
    ms, and the rendered query as the one metrics query."""
    datadog.reply(V2, v2_ok())
    query = "sum:trace.http.request.errors{service:checkout,version:v2}.as_count()"
    await make_datadog().query(query, at=1711981201.0, interval=30.0)
    (request,) = datadog.seen(V2)
    assert request.method == "POST"
    assert request.headers["DD-API-KEY"] == API_KEY
    assert request.headers["DD-APPLICATION-KEY"] == APP_KEY
    assert request.headers["User-Agent"].startswith("rollback-watchdog")
    sent = request.json()
    recorded = json.loads(fixture("v2.query_timeseries.request.json"))
    assert sent["data"]["type"] == recorded["data"]["type"] == "timeseries_request"
    attributes = sent["data"]["attributes"]
    assert set(attributes) <= set(recorded["data"]["attributes"])
    assert attributes["from"] == 1711981171000 and attributes["to"] == 1711981201000
    assert attributes["interval"] == 30000
    assert attributes["queries"] == [{"data_source": "metrics", "name": "a", "query": query}]
    assert set(attributes["queries"][0]) == set(recorded["data"]["attributes"]["queries"][0])


async def test_grouped_series_give_one_labelled_sample_each(
    datadog: FakeDatadog, make_datadog: MakeProvider
) -> None:
    """``... by {le}`` answers one series per group; each becomes a Sample labelled with its group
    tags (``le:0.5`` → ``{"le": "0.5"}``), summed over the window on its own."""
    times = [1_700_000_000_000, 1_700_000_010_000, 1_700_000_020_000]
    datadog.reply(
        V2,
        Reply(
            v2_body(
                [(["le:0.5"], [3.0, 4.0, 5.0]), (["le:+Inf", "env:prod"], [10.0, None, 20.0])], times
            ),
            content_type=JSON_API,
        ),
    )
    samples = await make_datadog().query("sum:h{*} by {le}.as_count()", at=1_700_000_030, interval=30)
    assert samples == [Sample({"le": "0.5"}, 12.0), Sample({"le": "+Inf", "env": "prod"}, 30.0)]


async def test_empty_series_answer_is_no_data(datadog: FakeDatadog, make_datadog: MakeProvider) -> None:
    """The recorded 200 answer with empty series, times and values is "no data": an empty list,
    never a zero (the check is blind this poll, not healthy)."""
    datadog.reply(V2, Reply(fixture("v2.query_timeseries.response.empty-series.apm-metrics.json")))
    assert await make_datadog().query("sum:x{*}.as_count()", at=1711980240.0, interval=60.0) == []


async def test_series_with_only_null_points_is_no_data(
    datadog: FakeDatadog, make_datadog: MakeProvider
) -> None:
    """A series whose points in the window are all null (Datadog's gaps) contributes no sample; a
    series with a real 0 is a real zero."""
    times = [1_700_000_000_000, 1_700_000_010_000]
    body = v2_body([(["version:v1"], [None, None]), (["version:v2"], [0.0, None])], times)
    datadog.reply(V2, Reply(body, content_type=JSON_API))
    samples = await make_datadog().query("sum:x{*} by {version}", at=1_700_000_020, interval=20)
    assert samples == [Sample({"version": "v2"}, 0.0)]


# --- failures ---------------------------------------------------------------------------------


async def test_bad_request_is_a_query_error_with_datadogs_explanation_and_no_retry(
    datadog: FakeDatadog, make_datadog: MakeProvider, metrics: WatchdogMetrics
) -> None:
    """The recorded 400 is a ProviderQueryError quoting Datadog's ``errors[]``; asking again would
    get the same answer, so it is asked once."""
    datadog.reply(V2, Reply(fixture("v2.query_timeseries.response.400.json"), status=400))
    with pytest.raises(ProviderQueryError) as caught:
        await make_datadog().query("sum:x{*}", at=1711980240.0, interval=60.0)
    assert 'Invalid type. Expected "timeseries_request"' in str(caught.value)
    assert "datadog provider 'dd'" in str(caught.value)
    assert len(datadog.seen(V2)) == 1
    assert metrics.provider_errors.labels(provider="dd", kind="query")._value.get() == 1


async def test_forbidden_is_a_configuration_error_naming_the_provider(
    datadog: FakeDatadog, make_datadog: MakeProvider, metrics: WatchdogMetrics
) -> None:
    """Keys Datadog does not accept get 403: a PermanentError (the check is blind, never failing)
    that names the provider and what to check, asked once and never retried."""
    datadog.reply(V2, v2_ok())
    provider = make_datadog("dd-prod", app_key="revoked-key")
    with pytest.raises(ProviderConfigError) as caught:
        await provider.query("sum:x{*}.as_count()", at=1711980240.0, interval=60.0)
    assert isinstance(caught.value, PermanentError)
    assert not isinstance(caught.value, ProviderUnavailable)
    assert str(caught.value) == (
        "provider dd-prod: Datadog answered 403 Forbidden: check api_key/app_key and the key's "
        "permissions"
    )
    assert len(datadog.requests) == 1
    assert "revoked-key" not in str(caught.value)
    assert metrics.provider_errors.labels(provider="dd-prod", kind="forbidden")._value.get() == 1


async def test_rate_limit_waits_for_the_reset_datadog_announces(
    datadog: FakeDatadog, make_datadog: MakeProvider
) -> None:
    """A 429 with ``X-RateLimit-Reset: 1`` (Datadog's headers, built in their documented form) is
    retried no sooner than a second later, and the poll then gets its numbers."""
    limited = Reply(
        json.dumps({"errors": ["Too many requests"]}),
        status=429,
        headers={
            "X-RateLimit-Limit": "100",
            "X-RateLimit-Period": "10",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": "1",
            "X-RateLimit-Name": "query_timeseries",
        },
    )
    datadog.reply(V2, limited, v2_ok())
    samples = await make_datadog().query("sum:x{*}.as_count()", at=1711980240.0, interval=3600.0)
    assert samples == [Sample({}, 89.0)]
    first, second = datadog.seen(V2)
    assert second.at - first.at >= 0.95


async def test_retry_after_is_honoured_too(datadog: FakeDatadog, make_datadog: MakeProvider) -> None:
    """``Retry-After`` (seconds) on a 429 sets the wait as well."""
    limited = Reply("{}", status=429, headers={"Retry-After": "0.4"})
    datadog.reply(V2, limited, v2_ok())
    await make_datadog().query("sum:x{*}.as_count()", at=1711980240.0, interval=3600.0)
    first, second = datadog.seen(V2)
    assert second.at - first.at >= 0.35


async def test_rate_limit_longer_than_a_poll_gives_up_at_once(
    datadog: FakeDatadog, make_datadog: MakeProvider, metrics: WatchdogMetrics
) -> None:
    """A reset a minute away is not waited for (the poll has a budget) nor retried early (it would
    be refused again): the provider is unavailable for this poll, after one request."""
    datadog.reply(V2, Reply("{}", status=429, headers={"X-RateLimit-Reset": "60"}))
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable) as caught:
        await make_datadog().query("sum:x{*}.as_count()", at=1711980240.0, interval=60.0)
    assert time.monotonic() - started < 1.0
    assert "60 s" in str(caught.value) and "datadog provider 'dd'" in str(caught.value)
    assert len(datadog.seen(V2)) == 1
    assert metrics.provider_errors.labels(provider="dd", kind="rate_limited")._value.get() == 1


async def test_persistent_rate_limit_is_unavailable_after_the_configured_attempts(
    datadog: FakeDatadog, make_datadog: MakeProvider
) -> None:
    """429s that keep coming are retried ``retries`` times in total, then ProviderUnavailable."""
    datadog.reply(V2, Reply("{}", status=429, headers={"X-RateLimit-Reset": "0"}))
    with pytest.raises(ProviderUnavailable) as caught:
        await make_datadog(retries=2).query("sum:x{*}.as_count()", at=1711980240.0, interval=60.0)
    assert "gave up after 2 attempts" in str(caught.value)
    assert len(datadog.seen(V2)) == 2


async def test_server_error_is_retried(datadog: FakeDatadog, make_datadog: MakeProvider) -> None:
    """A 503 (Datadog having a moment) is retried; the next answer is used."""
    datadog.reply(V2, Reply("upstream unavailable", status=503, content_type="text/plain"), v2_ok())
    samples = await make_datadog().query("sum:x{*}.as_count()", at=1711980240.0, interval=3600.0)
    assert samples == [Sample({}, 89.0)]
    assert len(datadog.seen(V2)) == 2


async def test_timeout_is_unavailable(datadog: FakeDatadog, make_datadog: MakeProvider) -> None:
    """An answer slower than ``timeout`` is a timeout: ProviderUnavailable, saying so."""
    datadog.reply(V2, Reply(fixture("v2.query_timeseries.response.ok.json"), delay=2.0))
    with pytest.raises(ProviderUnavailable) as caught:
        await make_datadog(timeout="200ms", retries=1).query("m{*}", at=1711980240.0, interval=60.0)
    assert "timed out" in str(caught.value)


async def test_nothing_listening_is_unavailable(
    make_datadog: MakeProvider, closed_port: int
) -> None:
    """A refused connection is retried and then reported as unavailable (blind, not failing)."""
    provider = make_datadog(url=f"http://127.0.0.1:{closed_port}", retries=2)
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.query("m{*}", at=1711980240.0, interval=60.0)
    assert "connection failed" in str(caught.value)


async def test_unreadable_answer_is_unavailable(datadog: FakeDatadog, make_datadog: MakeProvider) -> None:
    """A 200 that is not Datadog's JSON (a captive portal, a proxy page) is unavailable, not data."""
    datadog.reply(V2, Reply("<html>hello</html>", content_type="text/html"))
    with pytest.raises(ProviderUnavailable):
        await make_datadog(retries=1).query("m{*}", at=1711980240.0, interval=60.0)


# --- the v1 fallback --------------------------------------------------------------------------


async def test_without_the_v2_endpoint_it_falls_back_to_v1_and_stays_there(
    datadog: FakeDatadog, make_datadog: MakeProvider
) -> None:
    """A 404 from the v2 endpoint sends the query to GET /api/v1/query (``from``/``to`` in seconds,
    the query as a parameter), and the recorded v1 answer is reduced like a v2 one: the latest point
    inside the window for a level, the sum for ``.as_count()``. Later polls go to v1 directly."""
    datadog.reply(V2, Reply(json.dumps({"errors": ["Not found"]}), status=404))
    datadog.reply(V1, Reply(fixture("v1.query.response.ok.json")))
    provider = make_datadog()
    # 1641344100000, ...400000 and ...700000 are in [1641344100, 1641345000): three points.
    samples = await provider.query("system.cpu.idle{*}", at=1641345000.0, interval=900.0)
    assert samples == [Sample({}, 91.5031727472941)]
    (request,) = datadog.seen(V1)
    assert request.method == "GET"
    assert request.query == {"from": "1641344100", "to": "1641345000", "query": "system.cpu.idle{*}"}
    assert request.headers["DD-API-KEY"] == API_KEY
    assert request.headers["DD-APPLICATION-KEY"] == APP_KEY
    counted = await provider.query("system.cpu.idle{*}.as_count()", at=1641345000.0, interval=900.0)
    assert counted == [Sample({}, 91.4583840476142 + 91.5041914039484 + 91.5031727472941)]
    assert len(datadog.seen(V2)) == 1 and len(datadog.seen(V1)) == 2


async def test_v1_group_tags_become_labels(datadog: FakeDatadog, make_datadog: MakeProvider) -> None:
    """v1 series carry their group in ``tag_set``; they label the samples as v2's group_tags do."""
    datadog.reply(V2, Reply("{}", status=404))
    recorded = json.loads(fixture("v1.query.response.ok.json"))
    series = recorded["series"][0]
    recorded["series"] = [
        {**series, "tag_set": ["version:v1"], "scope": "version:v1"},
        {**series, "tag_set": ["version:v2"], "scope": "version:v2"},
    ]
    datadog.reply(V1, Reply(json.dumps(recorded)))
    samples = await make_datadog().query("avg:m{*} by {version}", at=1641344400.0, interval=300.0)
    assert samples == [
        Sample({"version": "v1"}, 91.4583840476142),
        Sample({"version": "v2"}, 91.4583840476142),
    ]


async def test_v1_error_status_is_a_query_error(datadog: FakeDatadog, make_datadog: MakeProvider) -> None:
    """A v1 answer with ``status: error`` refuses the query: ProviderQueryError with its message."""
    datadog.reply(V2, Reply("{}", status=404))
    datadog.reply(V1, Reply(json.dumps({"status": "error", "error": "Error parsing query: x{"})))
    with pytest.raises(ProviderQueryError) as caught:
        await make_datadog().query("x{", at=1641344400.0, interval=300.0)
    assert "Error parsing query" in str(caught.value)


async def test_404_from_v1_too_is_a_configuration_error(
    datadog: FakeDatadog, make_datadog: MakeProvider
) -> None:
    """When neither endpoint exists the `url` is not a Datadog API: a configuration error naming
    the provider, not retried."""
    with pytest.raises(ProviderConfigError) as caught:
        await make_datadog().query("m{*}", at=1641344400.0, interval=300.0)
    assert "provider dd:" in str(caught.value) and "404" in str(caught.value)
    assert len(datadog.requests) == 2


# --- settings, escaping, registration ---------------------------------------------------------


def test_settings_default_to_the_us1_site_and_take_a_url_override() -> None:
    """Without `url`, the API is https://api.<site>; `url` replaces it (a proxy, a test server)."""
    settings = DatadogSettings.model_validate({"api_key": "a", "app_key": "b"})
    assert settings.base_url == "https://api.datadoghq.com"
    eu = DatadogSettings.model_validate({"site": "datadoghq.eu", "api_key": "a", "app_key": "b"})
    assert eu.base_url == "https://api.datadoghq.eu"
    local = DatadogSettings.model_validate({"url": "http://127.0.0.1:9/", "api_key": "a", "app_key": "b"})
    assert local.base_url == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    "settings",
    [
        {"app_key": "b"},
        {"api_key": "a"},
        {"api_key": "a", "app_key": "b", "site": "https://app.datadoghq.com"},
        {"api_key": "a", "app_key": "b", "url": "api.datadoghq.com"},
        {"api_key": "a", "app_key": "b", "apikey": "c"},
        {"api_key": "a", "app_key": "b", "retries": 0},
    ],
)
def test_settings_refuse_what_cannot_work(settings: dict[str, Any]) -> None:
    """Both keys are required; a site is a bare host name; a url is absolute http(s); unknown keys
    and zero attempts are refused at config load."""
    with pytest.raises(ValidationError):
        DatadogSettings.model_validate(settings)


def test_keys_never_show_in_the_settings_repr() -> None:
    """The keys are secrets: a logged settings object does not reveal them."""
    settings = DatadogSettings.model_validate({"api_key": "s3cret-api", "app_key": "s3cret-app"})
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())


def test_escape_keeps_a_value_inside_its_tag_scope() -> None:
    """A version crafted to close the scope and widen the filter stays one odd tag value."""
    values = {"service": "checkout", "version": "v2} by {host},version:*"}
    rendered = render("sum:m{service:{service},version:{version}}", values, escape)
    assert rendered == "sum:m{service:checkout,version:v2__by__host__version:_}"
    assert rendered.count("{") == 1 and rendered.count("}") == 1


@given(st.text())
def test_escaped_values_hold_only_tag_characters(value: str) -> None:
    """Whatever the value, what lands in the scope is letters, digits and ``_ - : . /``; ordinary
    values (versions, service names, ``30s``) are unchanged."""
    escaped = escape(value)
    assert len(escaped) == len(value)
    assert all(c.isascii() and (c.isalnum() or c in "_-:./") for c in escaped)


@pytest.mark.parametrize("value", ["checkout", "v2.3.1", "1.4.0-rc.1", "30s", "team/payments", "a_b"])
def test_ordinary_values_pass_unchanged(value: str) -> None:
    """Versions, service names and intervals are valid tag values already."""
    assert escape(value) == value


def test_registered_under_metrics_datadog() -> None:
    """The entry point ``metrics.datadog`` loads this class, which builds a MetricsProvider."""
    (ep,) = [e for e in entry_points(group="rollback_watchdog.providers") if e.name == "metrics.datadog"]
    assert ep.load() is DatadogProvider
    settings = DatadogSettings.model_validate({"api_key": "a", "app_key": "b"})
    assert isinstance(DatadogProvider("dd", settings), MetricsProvider)
