"""PrometheusProvider against a scripted HTTP server answering with Prometheus' published examples."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from importlib.metadata import entry_points

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from structlog.testing import capture_logs

from providers.metrics._http import RETRY_AFTER_CAP, escape, retry_after
from providers.metrics.prometheus import PrometheusProvider, PrometheusSettings
from providers.metrics.scrape import parse_selector
from tests.providers.metrics.helpers import Reply, ScriptedServer, fixture_text
from watchdog.errors import ProviderQueryError, ProviderUnavailable
from watchdog.metrics import WatchdogMetrics
from watchdog.ports import MetricsProvider, Sample

Q = "/api/v1/query"
MakeProvider = Callable[..., PrometheusProvider]


def ok(data: object, **extra: object) -> Reply:
    return Reply(json.dumps({"status": "success", "data": data, **extra}))


def vector(*values: str) -> Reply:
    return ok(
        {
            "resultType": "vector",
            "result": [
                {"metric": {"__name__": "m", "i": str(i)}, "value": [1.0, v]}
                for i, v in enumerate(values)
            ],
        }
    )


def error(status: int, error_type: str, message: str) -> Reply:
    return Reply(
        json.dumps({"status": "error", "errorType": error_type, "error": message}), status=status
    )


# --- results ----------------------------------------------------------------------------------


async def test_vector_gives_one_sample_per_series_without_name(
    server: ScriptedServer, make_prometheus: MakeProvider
) -> None:
    """A vector becomes one Sample per series; ``__name__`` is dropped, other labels kept."""
    server.reply(Q, Reply(fixture_text("openapi.query.vector.json")))
    samples = await make_prometheus().query("up", at=1767436620.0, interval=30.0)
    assert samples == [
        Sample({"instance": "demo.prometheus.io:9090", "job": "prometheus"}, 1.0),
        Sample({"env": "demo", "instance": "demo.prometheus.io:9093", "job": "alertmanager"}, 1.0),
    ]


async def test_query_and_time_are_sent_as_parameters(
    server: ScriptedServer, make_prometheus: MakeProvider
) -> None:
    """The instant query goes to GET /api/v1/query with ``query`` and ``time=at``."""
    server.reply(Q, Reply(fixture_text("query.vector.up.json")))
    query = 'sum(increase(http_requests_total{code=~"5.."}[30s]))'
    samples = await make_prometheus().query(query, at=1435781451.781, interval=30.0)
    assert [s.value for s in samples] == [1.0, 0.0]
    (request,) = server.seen(Q)
    assert request.query == {"query": query, "time": "1435781451.781"}


async def test_bearer_token_and_headers_are_sent(
    server: ScriptedServer, make_prometheus: MakeProvider
) -> None:
    """``bearer_token`` and ``headers`` reach Prometheus (or the proxy in front of it)."""
    server.reply(Q, vector("1"))
    provider = make_prometheus(bearer_token="s3cret", headers={"X-Scope-OrgID": "shop"})
    await provider.query("up", at=0, interval=30)
    (request,) = server.seen(Q)
    assert request.headers["Authorization"] == "Bearer s3cret"
    assert request.headers["X-Scope-OrgID"] == "shop"
    assert request.headers["User-Agent"].startswith("rollback-watchdog")


async def test_scalar_gives_one_unlabelled_sample(
    server: ScriptedServer, make_prometheus: MakeProvider
) -> None:
    """A scalar result is one Sample with empty labels."""
    server.reply(Q, Reply(fixture_text("openapi.query.scalar.json")))
    assert await make_prometheus().query("scalar(x)", at=0, interval=30) == [Sample({}, 42.0)]


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        (
            "query_range.matrix.up.json",
            [
                Sample({"job": "prometheus", "instance": "localhost:9090"}, 1.0),
                Sample({"job": "node", "instance": "localhost:9091"}, 1.0),
            ],
        ),
        (
            "openapi.query_range.matrix.json",
            [Sample({"instance": "demo.prometheus.io:9090", "job": "prometheus"}, 1.0)],
        ),
    ],
)
async def test_matrix_gives_the_last_point_of_each_series(
    server: ScriptedServer, make_prometheus: MakeProvider, fixture: str, expected: list[Sample]
) -> None:
    """A range-vector result is reduced to each series' newest point (its value at ``at``)."""
    server.reply(Q, Reply(fixture_text(fixture)))
    assert await make_prometheus().query("up[1m]", at=0, interval=30) == expected


async def test_special_float_values_survive(
    server: ScriptedServer, make_prometheus: MakeProvider
) -> None:
    """Prometheus quotes values so that NaN, +Inf and -Inf arrive intact."""
    server.reply(Q, vector("NaN", "+Inf", "-Inf", "1e3"))
    values = [s.value for s in await make_prometheus().query("m", at=0, interval=30)]
    assert math.isnan(values[0])
    assert values[1:] == [math.inf, -math.inf, 1000.0]


async def test_empty_result_is_no_data(
    server: ScriptedServer, make_prometheus: MakeProvider
) -> None:
    """An empty vector is [] (the check is blind this poll), not an error."""
    server.reply(Q, ok({"resultType": "vector", "result": []}))
    assert await make_prometheus().query("absent_metric", at=0, interval=30) == []


async def test_string_result_is_a_query_error(
    server: ScriptedServer, make_prometheus: MakeProvider
) -> None:
    """A string result cannot feed a check: the query is wrong, not the server."""
    server.reply(Q, ok({"resultType": "string", "result": [1.0, "hello"]}))
    with pytest.raises(ProviderQueryError, match="string"):
        await make_prometheus().query('"hello"', at=0, interval=30)


async def test_native_histograms_are_a_query_error_that_says_what_to_query(
    server: ScriptedServer, make_prometheus: MakeProvider
) -> None:
    """Native histogram results are refused with a pointer to classic buckets."""
    server.reply(Q, Reply(fixture_text("openapi.query.native-histogram.vector.json")))
    with pytest.raises(ProviderQueryError, match="native histograms"):
        await make_prometheus().query("http_request_duration_seconds", at=0, interval=30)


async def test_warnings_are_logged(server: ScriptedServer, make_prometheus: MakeProvider) -> None:
    """Prometheus' warnings are logged as ``prometheus.warning`` with the query, data still used."""
    server.reply(
        Q,
        ok({"resultType": "scalar", "result": [0, "1"]}, warnings=["partial response from store"]),
    )
    with capture_logs() as logs:
        samples = await make_prometheus().query("scalar(x)", at=0, interval=30)
    assert samples == [Sample({}, 1.0)]
    warning = next(e for e in logs if e["event"] == "prometheus.warning")
    assert warning["warning"] == "partial response from store"
    assert warning["query"] == "scalar(x)"
    assert warning["provider"] == "prom"


# --- errors and retries -----------------------------------------------------------------------


async def test_bad_data_is_a_query_error_at_once(
    server: ScriptedServer, make_prometheus: MakeProvider
) -> None:
    """errorType bad_data (HTTP 400) raises ProviderQueryError with Prometheus' text, no retry."""
    server.reply(Q, Reply(fixture_text("query_range.error.bad_data.issue4811.json"), status=400))
    with pytest.raises(ProviderQueryError, match='cannot parse "" to a valid timestamp'):
        await make_prometheus().query("up", at=0, interval=30)
    assert len(server.seen(Q)) == 1


async def test_execution_error_is_a_query_error_at_once(
    server: ScriptedServer, make_prometheus: MakeProvider
) -> None:
    """errorType execution (HTTP 422) is the query's fault too: no retry."""
    server.reply(Q, error(422, "execution", "vector cannot contain metrics with the same labelset"))
    with pytest.raises(ProviderQueryError, match="same labelset"):
        await make_prometheus().query("up", at=0, interval=30)
    assert len(server.seen(Q)) == 1


async def test_tsdb_not_ready_is_retried_then_unavailable(
    server: ScriptedServer, make_prometheus: MakeProvider, metrics: WatchdogMetrics
) -> None:
    """errorType internal is retried up to ``retries`` attempts, then ProviderUnavailable names
    the provider and the problem; the error is counted once per query."""
    server.reply(Q, Reply(fixture_text("openapi.query.error.tsdb-not-ready.json"), status=500))
    with pytest.raises(ProviderUnavailable) as caught:
        await make_prometheus(retries=3).query("up", at=0, interval=30)
    message = str(caught.value)
    assert "prometheus provider 'prom'" in message
    assert "TSDB not ready" in message
    assert "3 attempts" in message
    assert len(server.seen(Q)) == 3
    errors = metrics.registry.get_sample_value(
        "watchdog_provider_errors_total", {"provider": "prom", "kind": "prometheus_internal"}
    )
    assert errors == 1


async def test_tsdb_not_ready_then_ready_succeeds(
    server: ScriptedServer, make_prometheus: MakeProvider, metrics: WatchdogMetrics
) -> None:
    """A Prometheus that is still starting is waited for within the attempts."""
    server.reply(
        Q,
        Reply(fixture_text("openapi.query.error.tsdb-not-ready.json"), status=503),
        vector("7"),
    )
    assert await make_prometheus().query("up", at=0, interval=30) == [Sample({"i": "0"}, 7.0)]
    assert len(server.seen(Q)) == 2
    latency = metrics.registry.get_sample_value(
        "watchdog_poll_duration_seconds_count", {"provider": "prom"}
    )
    assert latency == 1


async def test_500_then_success_is_retried(
    server: ScriptedServer, make_prometheus: MakeProvider
) -> None:
    """HTTP 500s (a proxy's error page, not JSON) are retried; a later success is returned."""
    server.reply(
        Q,
        Reply("<html>Bad Gateway</html>", status=500, content_type="text/html"),
        Reply("<html>Bad Gateway</html>", status=502, content_type="text/html"),
        vector("3"),
    )
    assert await make_prometheus(retries=3).query("up", at=0, interval=30) == [
        Sample({"i": "0"}, 3.0)
    ]
    assert len(server.seen(Q)) == 3


async def test_500_forever_is_unavailable_after_bounded_attempts(
    server: ScriptedServer, make_prometheus: MakeProvider, metrics: WatchdogMetrics
) -> None:
    """A server that keeps failing costs exactly ``retries`` requests and a short wait."""
    server.reply(Q, Reply("oops", status=500, content_type="text/plain"))
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match=r"HTTP 500: oops \(gave up after 3 attempts\)"):
        await make_prometheus().query("up", at=0, interval=30)
    assert time.monotonic() - started < 2.0
    assert len(server.seen(Q)) == 3
    assert (
        metrics.registry.get_sample_value(
            "watchdog_provider_errors_total", {"provider": "prom", "kind": "http"}
        )
        == 1
    )


async def test_timeout_is_retried_then_unavailable(
    server: ScriptedServer, make_prometheus: MakeProvider
) -> None:
    """A request slower than ``timeout`` is abandoned, retried, then reported as a timeout."""
    server.reply(Q, Reply(json.dumps({"status": "success"}), delay=3.0))
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="timed out after 200ms"):
        await make_prometheus(timeout="200ms", retries=2).query("up", at=0, interval=30)
    assert time.monotonic() - started < 2.0
    assert len(server.seen(Q)) == 2


async def test_slow_first_answer_then_fast_succeeds(
    server: ScriptedServer, make_prometheus: MakeProvider
) -> None:
    """One timed-out attempt does not lose the poll when the next attempt answers."""
    server.reply(Q, Reply(delay=3.0), vector("5"))
    samples = await make_prometheus(timeout="200ms").query("up", at=0, interval=30)
    assert samples == [Sample({"i": "0"}, 5.0)]


async def test_429_waits_for_retry_after(
    server: ScriptedServer, make_prometheus: MakeProvider
) -> None:
    """HTTP 429 is retried no sooner than its Retry-After asks."""
    server.reply(Q, Reply("slow down", status=429, headers={"Retry-After": "1"}), vector("1"))
    assert await make_prometheus().query("up", at=0, interval=30) == [Sample({"i": "0"}, 1.0)]
    first, second = server.seen(Q)
    assert second.at - first.at >= 0.95


async def test_429_forever_is_unavailable_as_rate_limited(
    server: ScriptedServer, make_prometheus: MakeProvider, metrics: WatchdogMetrics
) -> None:
    """A rate limit that never lifts ends as ProviderUnavailable counted as ``rate_limited``."""
    server.reply(Q, Reply("slow down", status=429))
    with pytest.raises(ProviderUnavailable, match="rate limited"):
        await make_prometheus(retries=2).query("up", at=0, interval=30)
    assert (
        metrics.registry.get_sample_value(
            "watchdog_provider_errors_total", {"provider": "prom", "kind": "rate_limited"}
        )
        == 1
    )


def test_retry_after_takes_seconds_and_dates_and_is_capped() -> None:
    """Retry-After in seconds or as an HTTP date becomes a wait, never above the cap."""
    assert retry_after({"Retry-After": "2"}) == 2.0
    assert retry_after({"Retry-After": "3600"}) == RETRY_AFTER_CAP
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    assert 1.0 <= (retry_after({"Retry-After": soon}) or 0) <= 3.0
    assert retry_after({"Retry-After": "whenever"}) is None
    assert retry_after({}) is None


async def test_non_json_body_is_unavailable_without_retry(
    server: ScriptedServer, make_prometheus: MakeProvider
) -> None:
    """A 200 that is not JSON (a login page, the wrong URL) is reported, not retried."""
    server.reply(Q, Reply("<html>Please log in</html>", content_type="text/html"))
    with pytest.raises(ProviderUnavailable, match=r"not a JSON object.*Please log in"):
        await make_prometheus().query("up", at=0, interval=30)
    assert len(server.seen(Q)) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"status": "success"},
        {"status": "success", "data": {"resultType": "vector", "result": {}}},
        {"status": "success", "data": {"resultType": "vector", "result": [{"value": [0, "1"]}]}},
        {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}},
        {"status": "success", "data": {"resultType": "scalar", "result": [0, 1]}},
        {"status": "success", "data": {"resultType": "scalar", "result": [0, "one"]}},
        {"status": "success", "data": {"resultType": "histogram", "result": []}},
        [1, 2, 3],
    ],
)
async def test_wrong_shape_is_unavailable(
    server: ScriptedServer, make_prometheus: MakeProvider, body: object
) -> None:
    """JSON that is not Prometheus' documented shape is ProviderUnavailable, never a crash."""
    server.reply(Q, Reply(json.dumps(body)))
    with pytest.raises(ProviderUnavailable):
        await make_prometheus().query("up", at=0, interval=30)


async def test_unauthorized_is_unavailable_without_retry(
    server: ScriptedServer, make_prometheus: MakeProvider
) -> None:
    """A 401 will not heal by asking again: reported at once, naming the status."""
    server.reply(Q, Reply("unauthorized", status=401, content_type="text/plain"))
    with pytest.raises(ProviderUnavailable, match="HTTP 401"):
        await make_prometheus().query("up", at=0, interval=30)
    assert len(server.seen(Q)) == 1


async def test_connection_refused_is_unavailable(make_prometheus: MakeProvider) -> None:
    """Nobody listening is a connection error, retried and then reported with the URL."""
    from tests.support.prometheus_server import free_port

    port = free_port()
    provider = make_prometheus(url=f"http://127.0.0.1:{port}", retries=2)
    with pytest.raises(ProviderUnavailable, match=rf"127\.0\.0\.1:{port}.*connection failed"):
        await provider.query("up", at=0, interval=30)


# --- escaping ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("v1.2.3", "v1.2.3"),
        ('v2"} or vector(1) #', 'v2\\"} or vector(1) #'),
        ("C:\\dir", "C:\\\\dir"),
        ("line\nbreak", "line\\nbreak"),
        ('\\"', '\\\\\\"'),
    ],
)
def test_escape_neutralises_hostile_values(value: str, escaped: str) -> None:
    """Backslash, double quote and newline are escaped, so a value cannot end the string."""
    provider = PrometheusProvider("prom", PrometheusSettings(url="http://127.0.0.1:9090"))
    assert provider.escape(value) == escaped


@given(st.text())
def test_escaped_value_reads_back_as_itself(value: str) -> None:
    """Whatever the value, a PromQL string parser reads the escaped form back as the value,
    and as one matcher: nothing leaks out of the quotes."""
    selector = parse_selector(f'm{{version="{escape(value)}"}}')
    assert [(m.label, m.value) for m in selector.matchers] == [("__name__", "m"), ("version", value)]


# --- settings and wiring ----------------------------------------------------------------------


def test_settings_defaults_and_durations() -> None:
    """Only ``url`` is required; ``timeout`` is a duration string; unknown keys are refused."""
    settings = PrometheusSettings.model_validate({"url": "https://prom.example/prefix"})
    assert (settings.timeout, settings.retries, settings.bearer_token) == (10.0, 3, None)
    assert PrometheusSettings.model_validate({"url": "http://p", "timeout": "2s"}).timeout == 2.0
    with pytest.raises(ValidationError, match="timout"):
        PrometheusSettings.model_validate({"url": "http://p", "timout": "2s"})
    with pytest.raises(ValidationError, match="not an http"):
        PrometheusSettings.model_validate({"url": "prom:9090"})
    with pytest.raises(ValidationError, match="either `bearer_token` or an Authorization"):
        PrometheusSettings.model_validate(
            {"url": "http://p", "bearer_token": "t", "headers": {"authorization": "Basic x"}}
        )


def test_bearer_token_is_not_in_repr() -> None:
    """The token stays out of reprs and so out of logs and tracebacks."""
    settings = PrometheusSettings.model_validate({"url": "http://p", "bearer_token": "s3cret"})
    assert "s3cret" not in repr(settings)


async def test_url_prefix_is_kept(server: ScriptedServer, make_prometheus: MakeProvider) -> None:
    """A Prometheus behind a path prefix (``/prometheus``) is queried under that prefix."""
    server.reply("/prometheus/api/v1/query", vector("1"))
    provider = make_prometheus(url=f"{server.url}/prometheus/")
    assert len(await provider.query("up", at=0, interval=30)) == 1


def test_constructed_outside_an_event_loop() -> None:
    """Building a provider needs no running loop: the session is created on first query."""
    provider = PrometheusProvider("prom", PrometheusSettings(url="http://127.0.0.1:9090"))
    assert isinstance(provider, MetricsProvider)


async def test_aclose_closes_the_session_and_is_idempotent(
    server: ScriptedServer, make_prometheus: MakeProvider
) -> None:
    """aclose() releases the connection pool; calling it twice, or before any query, is fine."""
    server.reply(Q, vector("1"))
    unused = make_prometheus()
    await unused.aclose()
    provider = make_prometheus()
    await provider.query("up", at=0, interval=30)
    session = provider._session
    assert session is not None
    await provider.aclose()
    assert session.closed
    await provider.aclose()


def test_registered_as_metrics_prometheus_entry_point() -> None:
    """The daemon finds the adapter as ``metrics.prometheus`` in the plugin group."""
    (ep,) = [
        ep for ep in entry_points(group="rollback_watchdog.providers") if ep.name == "metrics.prometheus"
    ]
    assert ep.load() is PrometheusProvider
