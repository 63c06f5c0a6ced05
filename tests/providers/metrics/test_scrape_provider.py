"""ScrapeProvider: the selector language, exposition parsing and counter-increase semantics."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from importlib.metadata import entry_points

import pytest
from pydantic import ValidationError

from providers.metrics.scrape import (
    Matcher,
    ScrapeProvider,
    ScrapeSettings,
    SelectorError,
    parse_exposition,
    parse_selector,
)
from tests.providers.metrics.helpers import Reply, ScriptedServer, fixture_text
from tests.support.prometheus_server import free_port
from watchdog.demo.simapp import SimulatedApp
from watchdog.errors import ProviderQueryError, ProviderUnavailable
from watchdog.metrics import WatchdogMetrics
from watchdog.ports import MetricsProvider, Sample

MakeScrape = Callable[..., ScrapeProvider]
TEXT = "text/plain"


def exposition(*lines: str) -> Reply:
    return Reply("\n".join(lines) + "\n", content_type=TEXT)


def requests_total(ok: float, errors: float, **extra: float) -> Reply:
    lines = [
        "# TYPE http_requests_total counter",
        f'http_requests_total{{service="checkout",version="v2",code="200"}} {ok}',
        f'http_requests_total{{service="checkout",version="v2",code="500"}} {errors}',
    ]
    lines += [
        f'http_requests_total{{service="checkout",version="v2",code="{code}"}} {value}'
        for code, value in extra.items()
    ]
    return exposition(*lines)


async def query(provider: ScrapeProvider, selector: str) -> list[Sample]:
    return await provider.query(selector, at=0, interval=30)


# --- the selector -----------------------------------------------------------------------------


def test_selector_with_every_operator() -> None:
    """Name plus =, !=, =~ and !~ matchers parse into PromQL's matcher list, name first."""
    selector = parse_selector(
        'http_requests_total{service="checkout", code=~"5..", version!="v1", path!~"/health.*",}'
    )
    assert selector.matchers == (
        Matcher("__name__", "=", "http_requests_total"),
        Matcher("service", "=", "checkout"),
        Matcher("code", "=~", "5.."),
        Matcher("version", "!=", "v1"),
        Matcher("path", "!~", "/health.*"),
    )


def test_selector_without_matchers_and_with_spaces() -> None:
    """A bare name, and whitespace around every token, are fine."""
    assert parse_selector("  up ").matchers == (Matcher("__name__", "=", "up"),)
    assert parse_selector('up { job = "x" }').matchers[1] == Matcher("job", "=", "x")


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        (r'"a\"b"', 'a"b'),
        (r'"C:\\DIR"', "C:\\DIR"),
        (r'"line\nbreak\ttab"', "line\nbreak\ttab"),
        (r'"\u00e9\x41\101"', "éAA"),
        ("'single \"quoted\"'", 'single "quoted"'),
        (r"`raw \n`", r"raw \n"),
    ],
)
def test_selector_strings_decode_escapes(literal: str, value: str) -> None:
    """Quoted values decode PromQL's (Go's) escapes; backtick strings are raw."""
    assert parse_selector(f"m{{l={literal}}}").matchers[1].value == value


def test_selector_quoted_utf8_name() -> None:
    """The UTF-8 form ``{"my.dotted.metric", "error.message"="..."}`` names the metric in braces."""
    selector = parse_selector('{"my.dotted.metric", "error.message"="Not Found"}')
    assert selector.matchers == (
        Matcher("__name__", "=", "my.dotted.metric"),
        Matcher("error.message", "=", "Not Found"),
    )


def test_regex_is_anchored_and_missing_label_is_empty() -> None:
    """As in PromQL, ``=~`` matches the whole value and a missing label equals ""."""
    selector = parse_selector('m{code=~"5..", zone=""}')
    assert selector.matches("m", {"code": "503"})
    assert not selector.matches("m", {"code": "5030"})
    assert not selector.matches("m", {"code": "503", "zone": "a"})
    assert not selector.matches("other", {"code": "503"})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("sum(up)", "not a PromQL expression"),
        ('rate(m{a="b"}[1m])', "not a PromQL expression"),
        ('m{a="b"', "expected ',' or '}'"),
        ('m{="b"}', "expected a label name"),
        ("m{a=b}", "expected a quoted string"),
        ('m{a=="b"}', "expected a quoted string"),
        ('m{a~"b"}', "expected one of"),
        ('m{a="b" c="d"}', "expected ',' or '}'"),
        ('m{a="b}', "unterminated string"),
        (r'm{a="\q"}', "unknown escape"),
        ('m{a=~"("}', "bad regular expression"),
        ('m{__name__="n"}', "given twice"),
        ('{"a", "b"}', "given twice"),
        ('{a=""}', "needs a metric name"),
        ('{a=~".*"}', "needs a metric name"),
        ("", "needs a metric name"),
    ],
)
def test_selector_errors_say_what_and_where(text: str, problem: str) -> None:
    """Anything that is not one series selector is refused with the reason."""
    with pytest.raises(SelectorError, match=re.escape(problem)):
        parse_selector(text)


async def test_bad_selector_is_a_query_error_before_any_scrape(
    server: ScriptedServer, make_scrape: MakeScrape
) -> None:
    """A PromQL expression given to the scrape provider fails at once, without scraping."""
    server.reply("/metrics", requests_total(1, 0))
    with pytest.raises(ProviderQueryError, match=r"scrape provider 'sidecar'.*PromQL expression"):
        await query(make_scrape(f"{server.url}/metrics"), "sum(http_requests_total)")
    assert server.requests == []


# --- the exposition ---------------------------------------------------------------------------


def test_published_example_is_refused_as_prometheus_would() -> None:
    """The published text-format example has a UTF-8 line without a value; like Prometheus'
    own scraper we refuse the whole exposition rather than guess."""
    with pytest.raises(ValueError):
        parse_exposition(fixture_text("exposition.text-format.example.txt"), TEXT)


def test_published_example_parses_once_complete() -> None:
    """With that line given a value, every family of the example parses: escapes in label
    values, UTF-8 names, +Inf, timestamps, and counter-ness from TYPE."""
    text = fixture_text("exposition.text-format.example.txt").replace(
        '"error.message"="Not Found"}', '"error.message"="Not Found"} 1'
    )
    points = {(p.name, tuple(sorted(p.labels.items()))): p for p in parse_exposition(text, TEXT)}
    posts = points[("http_requests_total", (("code", "200"), ("method", "post")))]
    assert (posts.value, posts.counter) == (1027, True)
    msdos = next(p for (name, _), p in points.items() if name == "msdos_file_access_time_seconds")
    assert msdos.labels == {"path": "C:\\DIR\\FILE.TXT", "error": 'Cannot find file:\n"FILE.TXT"'}
    assert not msdos.counter
    assert points[("my.dotted.metric", (("error.message", "Not Found"),))].value == 1
    assert points[("something_weird", (("problem", "division by zero"),))].value == math.inf
    bucket = points[("http_request_duration_seconds_bucket", (("le", "+Inf"),))]
    assert (bucket.value, bucket.counter) == (144320, True)
    assert points[("http_request_duration_seconds_count", ())].counter
    assert points[("rpc_duration_seconds_count", ())].counter  # a summary's count is a counter
    assert not points[("rpc_duration_seconds", (("quantile", "0.5"),))].counter


async def test_unparsable_exposition_is_unavailable_naming_the_target(
    server: ScriptedServer, make_scrape: MakeScrape
) -> None:
    """A target whose exposition cannot be parsed makes the provider unavailable, by name."""
    server.reply("/metrics", Reply(fixture_text("exposition.text-format.example.txt"), content_type=TEXT))
    target = f"{server.url}/metrics"
    with pytest.raises(ProviderUnavailable, match=f"target {target}: cannot parse"):
        await query(make_scrape(target), "http_requests_total")


# --- semantics --------------------------------------------------------------------------------


async def test_first_evaluation_records_and_returns_no_data(
    server: ScriptedServer, make_scrape: MakeScrape
) -> None:
    """A counter query's first evaluation has nothing to subtract from: [] (no data yet)."""
    server.reply("/metrics", requests_total(100, 5))
    assert await query(make_scrape(f"{server.url}/metrics"), "http_requests_total") == []


async def test_counter_value_is_the_increase_since_the_previous_evaluation(
    server: ScriptedServer, make_scrape: MakeScrape
) -> None:
    """After the first evaluation, a counter query returns the summed increase since the last."""
    provider = make_scrape(f"{server.url}/metrics")
    errors = 'http_requests_total{code=~"5.."}'
    server.reply("/metrics", requests_total(100, 5))
    await query(provider, "http_requests_total")
    await query(provider, errors)
    server.reply("/metrics", requests_total(190, 8))
    assert await query(provider, "http_requests_total") == [Sample({}, 93.0)]
    assert await query(provider, errors) == [Sample({}, 3.0)]
    server.reply("/metrics", requests_total(250, 8))
    assert await query(provider, errors) == [Sample({}, 0.0)]


async def test_counter_reset_counts_from_zero(
    server: ScriptedServer, make_scrape: MakeScrape
) -> None:
    """A counter that went down (the app restarted) contributes its whole new value."""
    provider = make_scrape(f"{server.url}/metrics")
    server.reply("/metrics", requests_total(1000, 50))
    await query(provider, "http_requests_total")
    server.reply("/metrics", requests_total(30, 2))
    assert await query(provider, "http_requests_total") == [Sample({}, 32.0)]


async def test_new_series_counts_in_full(server: ScriptedServer, make_scrape: MakeScrape) -> None:
    """A series that appears between evaluations (the first 503 ever) was created since the last
    poll, so all of its value is new."""
    provider = make_scrape(f"{server.url}/metrics")
    selector = 'http_requests_total{code=~"5.."}'
    server.reply("/metrics", requests_total(100, 5))
    await query(provider, selector)
    server.reply("/metrics", requests_total(110, 5, **{"503": 4}))
    assert await query(provider, selector) == [Sample({}, 4.0)]


async def test_counters_sum_across_targets(
    server: ScriptedServer, second_server: ScriptedServer, make_scrape: MakeScrape
) -> None:
    """Every target's increase is added up: each instance serves part of the traffic."""
    provider = make_scrape(f"{server.url}/metrics", f"{second_server.url}/metrics")
    server.reply("/metrics", requests_total(100, 1))
    second_server.reply("/metrics", requests_total(100, 1))
    await query(provider, "http_requests_total")
    server.reply("/metrics", requests_total(110, 2))
    second_server.reply("/metrics", requests_total(120, 4))
    assert await query(provider, "http_requests_total") == [Sample({}, 34.0)]


def histogram(counts: dict[str, int], *, name: str = "latency_seconds", version: str = "v2") -> str:
    lines = [f"# TYPE {name} histogram"]
    lines += [f'{name}_bucket{{version="{version}",le="{le}"}} {n}' for le, n in counts.items()]
    lines += [
        f'{name}_count{{version="{version}"}} {max(counts.values())}',
        f'{name}_sum{{version="{version}"}} 1.5',
    ]
    return "\n".join(lines)


async def test_histogram_buckets_are_summed_per_le(
    server: ScriptedServer, second_server: ScriptedServer, make_scrape: MakeScrape
) -> None:
    """``_bucket`` selections return one increase per ``le`` (cumulative, ordered by edge),
    across targets, with ``1`` and ``1.0`` from two client libraries taken as one edge."""
    provider = make_scrape(f"{server.url}/metrics", f"{second_server.url}/metrics")
    selector = 'latency_seconds_bucket{version="v2"}'
    server.reply("/metrics", Reply(histogram({"0.1": 5, "1.0": 8, "+Inf": 10}), content_type=TEXT))
    second_server.reply("/metrics", Reply(histogram({"0.1": 0, "1": 0, "+Inf": 0}), content_type=TEXT))
    assert await query(provider, selector) == []
    server.reply("/metrics", Reply(histogram({"0.1": 15, "1.0": 28, "+Inf": 30}), content_type=TEXT))
    second_server.reply("/metrics", Reply(histogram({"0.1": 1, "1": 2, "+Inf": 3}), content_type=TEXT))
    assert await query(provider, selector) == [
        Sample({"le": "0.1"}, 11.0),
        Sample({"le": "1.0"}, 22.0),
        Sample({"le": "+Inf"}, 23.0),
    ]


async def test_histogram_count_is_a_counter_summed_into_one(
    server: ScriptedServer, make_scrape: MakeScrape
) -> None:
    """A histogram's ``_count`` is a counter too: one summed increase, no ``le``."""
    provider = make_scrape(f"{server.url}/metrics")
    server.reply("/metrics", Reply(histogram({"0.1": 5, "+Inf": 10}), content_type=TEXT))
    await query(provider, "latency_seconds_count")
    server.reply("/metrics", Reply(histogram({"0.1": 6, "+Inf": 17}), content_type=TEXT))
    assert await query(provider, "latency_seconds_count") == [Sample({}, 7.0)]


async def test_buckets_mixed_with_other_series_is_a_query_error(
    server: ScriptedServer, make_scrape: MakeScrape
) -> None:
    """A selector matching buckets and other series at once has no sensible sum: refused."""
    server.reply("/metrics", Reply(histogram({"0.1": 5, "+Inf": 10}), content_type=TEXT))
    with pytest.raises(ProviderQueryError, match="select the `_bucket` series alone"):
        await query(make_scrape(f"{server.url}/metrics"), '{__name__=~"latency_seconds_.*"}')


async def test_gauge_is_the_current_sum_from_the_first_evaluation(
    server: ScriptedServer, make_scrape: MakeScrape
) -> None:
    """Gauges and untyped series need no previous value: their current values, summed, at once."""
    provider = make_scrape(f"{server.url}/metrics")
    server.reply(
        "/metrics",
        exposition(
            "# TYPE process_resident_memory_bytes gauge",
            'process_resident_memory_bytes{pod="a"} 100',
            'process_resident_memory_bytes{pod="b"} 50',
            'queue_depth{pod="a"} 7',
        ),
    )
    assert await query(provider, "process_resident_memory_bytes") == [Sample({}, 150.0)]
    assert await query(provider, "queue_depth") == [Sample({}, 7.0)]
    assert await query(provider, "process_resident_memory_bytes") == [Sample({}, 150.0)]


async def test_no_matching_series_is_no_data(
    server: ScriptedServer, make_scrape: MakeScrape
) -> None:
    """A selector that matches nothing returns [], as Prometheus would for an empty vector."""
    provider = make_scrape(f"{server.url}/metrics")
    server.reply("/metrics", requests_total(1, 0))
    assert await query(provider, 'http_requests_total{version="v9"}') == []
    assert await query(provider, 'http_requests_total{version="v9"}') == []


async def test_openmetrics_answers_are_parsed(
    server: ScriptedServer, make_scrape: MakeScrape
) -> None:
    """An exporter answering ``application/openmetrics-text`` is read with the OpenMetrics parser;
    a counter's ``_created`` timestamp is not counted as traffic."""
    provider = make_scrape(f"{server.url}/metrics")

    def om(total: int, created: float) -> Reply:
        return Reply(
            "# TYPE jobs counter\n"
            f"jobs_total {total}\n"
            f"jobs_created {created}\n"
            "# EOF\n",
            content_type="application/openmetrics-text",
        )

    server.reply("/metrics", om(10, 1700000000.0))
    await query(provider, "jobs_total")
    server.reply("/metrics", om(25, 1700000000.0))
    assert await query(provider, "jobs_total") == [Sample({}, 15.0)]
    assert await query(provider, "jobs_created") == [Sample({}, 1700000000.0)]


# --- failures ---------------------------------------------------------------------------------


async def test_missing_target_is_unavailable_naming_it(
    server: ScriptedServer, make_scrape: MakeScrape, metrics: WatchdogMetrics
) -> None:
    """If any target cannot be scraped the query fails, naming that target: partial data would
    undercount."""
    server.reply("/metrics", requests_total(1, 0))
    missing = f"http://127.0.0.1:{free_port()}/metrics"
    provider = make_scrape(f"{server.url}/metrics", missing, retries=2)
    with pytest.raises(ProviderUnavailable, match=f"target {missing}: connection failed"):
        await query(provider, "http_requests_total")
    assert (
        metrics.registry.get_sample_value(
            "watchdog_provider_errors_total", {"provider": "sidecar", "kind": "connection"}
        )
        == 1
    )


async def test_every_failing_target_is_named(make_scrape: MakeScrape) -> None:
    """With several targets down, the message lists each."""
    first, second = (f"http://127.0.0.1:{free_port()}/metrics" for _ in range(2))
    provider = make_scrape(first, second, retries=1)
    with pytest.raises(ProviderUnavailable, match="2 of 2 targets failed") as caught:
        await query(provider, "up")
    assert first in str(caught.value)
    assert second in str(caught.value)


async def test_target_500_is_retried(server: ScriptedServer, make_scrape: MakeScrape) -> None:
    """A 5xx from a target is retried within the query."""
    server.reply("/metrics", Reply("busy", status=503, content_type=TEXT), requests_total(5, 0))
    provider = make_scrape(f"{server.url}/metrics")
    assert await query(provider, "http_requests_total") == []
    assert len(server.seen("/metrics")) == 2


async def test_target_404_is_not_retried(server: ScriptedServer, make_scrape: MakeScrape) -> None:
    """A wrong path will not appear by asking again: one request, then unavailable."""
    provider = make_scrape(f"{server.url}/not-metrics")
    with pytest.raises(ProviderUnavailable, match="HTTP 404"):
        await query(provider, "up")
    assert len(server.requests) == 1


async def test_failed_poll_keeps_the_previous_values(
    server: ScriptedServer, make_scrape: MakeScrape
) -> None:
    """A failed evaluation changes nothing: the next good one counts from the last good one, so no
    traffic is lost or counted twice."""
    provider = make_scrape(f"{server.url}/metrics", retries=1)
    server.reply("/metrics", requests_total(100, 0))
    await query(provider, "http_requests_total")
    server.reply("/metrics", Reply("down", status=500, content_type=TEXT))
    with pytest.raises(ProviderUnavailable):
        await query(provider, "http_requests_total")
    server.reply("/metrics", requests_total(130, 0))
    assert await query(provider, "http_requests_total") == [Sample({}, 30.0)]


# --- against a real exporter ------------------------------------------------------------------


async def test_increase_matches_a_simulated_apps_true_counts(make_scrape: MakeScrape) -> None:
    """Against the prometheus_client exposition of a SimulatedApp, the increases equal exactly the
    requests, errors and per-bucket counts the app generated."""
    async with SimulatedApp(
        version="v2", rps=500, error_rate=0.2, generate_traffic=False, seed=7
    ) as app:
        provider = make_scrape(app.metrics_url)
        errors = 'http_requests_total{service="checkout",version="v2",code=~"5.."}'
        total = 'http_requests_total{service="checkout",version="v2"}'
        buckets = 'http_request_duration_seconds_bucket{service="checkout",version="v2"}'
        for selector in (errors, total, buckets):
            assert await query(provider, selector) == []
        truth = app.generate(10)
        assert truth.requests > 0
        assert truth.errors > 0
        assert await query(provider, errors) == [Sample({}, float(truth.errors))]
        assert await query(provider, total) == [Sample({}, float(truth.requests))]
        per_le = await query(provider, buckets)
        assert [s.labels["le"] for s in per_le] == ["0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "+Inf"]
        assert per_le[-1].value == truth.requests
        assert [s.value for s in per_le] == sorted(s.value for s in per_le)


# --- settings and wiring ----------------------------------------------------------------------


def test_settings_need_http_targets() -> None:
    """At least one target, each an http(s) URL; unknown keys refused."""
    with pytest.raises(ValidationError):
        ScrapeSettings.model_validate({"targets": []})
    with pytest.raises(ValidationError, match="not an http"):
        ScrapeSettings.model_validate({"targets": ["127.0.0.1:9100/metrics"]})
    with pytest.raises(ValidationError, match="interval"):
        ScrapeSettings.model_validate({"targets": ["http://a/metrics"], "interval": "1s"})
    settings = ScrapeSettings.model_validate({"targets": ["http://a/metrics"], "timeout": "2s"})
    assert (settings.timeout, settings.retries) == (2.0, 3)


def test_escape_is_promql_escaping() -> None:
    """Selector values are PromQL strings: the same escaping, so templates work for both."""
    provider = ScrapeProvider("s", ScrapeSettings(targets=["http://a/metrics"]))
    assert isinstance(provider, MetricsProvider)
    assert provider.escape('v"\\\n') == 'v\\"\\\\\\n'


def test_registered_as_metrics_scrape_entry_point() -> None:
    """The daemon finds the adapter as ``metrics.scrape`` in the plugin group."""
    (ep,) = [
        ep for ep in entry_points(group="rollback_watchdog.providers") if ep.name == "metrics.scrape"
    ]
    assert ep.load() is ScrapeProvider
