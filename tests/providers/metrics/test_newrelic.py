"""NewRelicProvider against a local server speaking NerdGraph as New Relic documents it (docs page
"NerdGraph tutorial: Query your data using NRQL"): ``POST /graphql`` with an ``API-Key`` header, NRQL
under ``actor.account(id).nrql(query)``, answers in ``data.actor.account.nrql.results`` and failures
in ``errors[]``."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from providers.metrics._api import ProviderConfigError, window
from providers.metrics.newrelic import (
    NewRelicProvider,
    NewRelicSettings,
    escape,
    with_time_range,
)
from watchdog.errors import PermanentError, ProviderQueryError, ProviderUnavailable
from watchdog.metrics import WatchdogMetrics
from watchdog.ports import MetricsProvider, Sample
from watchdog.templates import render

API_KEY = "NRAK-TESTKEY0123456789"
ACCOUNT = 1234567
AT = 1_700_000_030.0
SINCE_UNTIL = "SINCE 1700000000000 UNTIL 1700000030000"  # [AT - 30 s, AT) in epoch ms


def results(rows: list[dict[str, Any]], facets: list[str] | None = None) -> dict[str, Any]:
    """The documented answer: ``{"data": {"actor": {"account": {"nrql": {"results": rows}}}}}``."""
    nrql: dict[str, Any] = {"results": rows}
    if facets is not None:
        nrql["metadata"] = {"facets": facets}
    return {"data": {"actor": {"account": {"nrql": nrql}}}}


def graphql_errors(message: str, error_class: str | None = None) -> dict[str, Any]:
    """A GraphQL error answer: ``errors[]`` and no nrql data."""
    error: dict[str, Any] = {"message": message, "path": ["actor", "account", "nrql"]}
    if error_class is not None:
        error["extensions"] = {"errorClass": error_class}
    return {"errors": [error], "data": {"actor": {"account": {"nrql": None}}}}


@dataclass
class Reply:
    body: dict[str, Any] | str
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Asked:
    headers: dict[str, str]
    graphql: str
    variables: dict[str, Any]
    at: float

    @property
    def nrql(self) -> str:
        return str(self.variables["nrql"])


class FakeNerdGraph:
    """``POST /graphql`` on loopback: a request without the right ``API-Key`` gets 401 with a
    GraphQL error; a body that is not an NRQL query for an account gets 400; the others get the
    scripted replies in turn, the last one repeated."""

    def __init__(self) -> None:
        self.asked: list[Asked] = []
        self.replies: list[Reply] = [Reply(results([{"count": 1000}]))]
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reply(self, *replies: Reply) -> None:
        self.replies = list(replies)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path != "/graphql" or request.method != "POST":
            return web.json_response({"errors": [{"message": "Not Found"}]}, status=404)
        if request.headers.get("API-Key") != API_KEY:
            error = {"message": "Invalid API key", "extensions": {"errorClass": "UNAUTHORIZED"}}
            return web.json_response({"errors": [error]}, status=401)
        body = await request.json()
        graphql, variables = body.get("query", ""), body.get("variables") or {}
        shaped = re.search(
            r"actor\s*{\s*account\(id:\s*\$accountId\)\s*{\s*nrql\(query:\s*\$nrql\)\s*{\s*results",
            graphql,
        )
        if not shaped or not isinstance(variables.get("accountId"), int) or "nrql" not in variables:
            return web.json_response({"errors": [{"message": "Validation Error"}]}, status=400)
        self.asked.append(Asked(dict(request.headers), graphql, variables, time.monotonic()))
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if reply.delay:
            await asyncio.sleep(reply.delay)
        text = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
        return web.Response(
            status=reply.status, text=text, content_type="application/json", headers=reply.headers
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
async def nerdgraph() -> AsyncIterator[FakeNerdGraph]:
    fake = FakeNerdGraph()
    await fake.start()
    yield fake
    await fake.stop()


MakeProvider = Callable[..., NewRelicProvider]


@pytest.fixture
def make_newrelic(nerdgraph: FakeNerdGraph, make_adapter: Callable[..., Any]) -> MakeProvider:
    def make(name: str = "nr", **settings: Any) -> NewRelicProvider:
        settings.setdefault("url", nerdgraph.url)
        settings.setdefault("api_key", API_KEY)
        settings.setdefault("account_id", ACCOUNT)
        provider: NewRelicProvider = make_adapter(NewRelicProvider, name, **settings)
        return provider

    return make


COUNT = "SELECT count(*) FROM Transaction WHERE appName = 'checkout'"


# --- requests and results ---------------------------------------------------------------------


async def test_count_over_the_interval(nerdgraph: FakeNerdGraph, make_newrelic: MakeProvider) -> None:
    """The documented answer ``[{"count": 1000}]`` is one unlabelled sample; the NRQL went out with
    ``SINCE``/``UNTIL`` for the poll's interval in epoch ms, for the configured account, with the key
    in ``API-Key``."""
    samples = await make_newrelic().query(COUNT, at=AT, interval=30.0)
    assert samples == [Sample({}, 1000.0)]
    (asked,) = nerdgraph.asked
    assert asked.nrql == f"{COUNT} {SINCE_UNTIL}"
    assert asked.variables["accountId"] == ACCOUNT
    assert asked.headers["API-Key"] == API_KEY
    assert asked.headers["User-Agent"].startswith("rollback-watchdog")


def test_a_query_with_its_own_time_range_is_sent_as_written() -> None:
    """``SINCE`` or ``UNTIL`` (any case) means the author chose the range; one inside a string or
    a backquoted name does not count."""
    span = window(AT, 30.0)
    own = "SELECT count(*) FROM Transaction since 5 minutes ago"
    assert with_time_range(own, span) == own
    assert with_time_range("SELECT count(*) FROM T UNTIL 1 minute ago", span).endswith("ago")
    quoted = "SELECT count(*) FROM T WHERE name = 'since it''s \\' until' AND `until` = 1"
    assert with_time_range(quoted, span) == f"{quoted} {SINCE_UNTIL}"


async def test_facets_become_labels(nerdgraph: FakeNerdGraph, make_newrelic: MakeProvider) -> None:
    """``FACET tags.version`` answers one row per facet value, repeated under the attribute's name;
    each row is a Sample labelled with its facet attributes (named in ``metadata.facets``)."""
    nerdgraph.reply(
        Reply(
            results(
                [
                    {"count": 70, "facet": "v2", "tags.version": "v2"},
                    {"count": 30, "facet": "v1", "tags.version": "v1"},
                ],
                facets=["tags.version"],
            )
        )
    )
    samples = await make_newrelic().query(f"{COUNT} FACET tags.version", at=AT, interval=30.0)
    assert samples == [Sample({"tags.version": "v2"}, 70.0), Sample({"tags.version": "v1"}, 30.0)]


async def test_several_facets_without_metadata_label_by_the_facet_field(
    nerdgraph: FakeNerdGraph, make_newrelic: MakeProvider
) -> None:
    """Without ``metadata.facets`` the row's ``facet`` field (a list for several facets) labels it."""
    nerdgraph.reply(Reply(results([{"count": 5, "facet": ["checkout", "v2"]}])))
    samples = await make_newrelic().query(f"{COUNT} FACET appName, tags.version", at=AT, interval=30)
    assert samples == [Sample({"facet": "checkout,v2"}, 5.0)]


async def test_timeseries_buckets_of_a_facet_are_summed(
    nerdgraph: FakeNerdGraph, make_newrelic: MakeProvider
) -> None:
    """A TIMESERIES query answers a row per bucket; rows with the same labels are added up (counts
    over the whole interval)."""
    rows = [
        {"beginTimeSeconds": 1_700_000_000, "endTimeSeconds": 1_700_000_015, "count": 4},
        {"beginTimeSeconds": 1_700_000_015, "endTimeSeconds": 1_700_000_030, "count": 6},
    ]
    nerdgraph.reply(Reply(results(rows)))
    assert await make_newrelic().query(f"{COUNT} TIMESERIES", at=AT, interval=30) == [Sample({}, 10.0)]


async def test_aliases_and_percentiles_are_the_value(
    nerdgraph: FakeNerdGraph, make_newrelic: MakeProvider
) -> None:
    """The one selected number may sit under an alias or, for ``percentile(x, 95)``, in a one-entry
    object."""
    nerdgraph.reply(
        Reply(results([{"errors": 3}])),
        Reply(results([{"percentile.duration": {"95": 0.31}}])),
    )
    provider = make_newrelic()
    assert await provider.query("SELECT count(*) AS errors FROM T", at=AT, interval=30) == [Sample({}, 3.0)]
    p95 = await provider.query("SELECT percentile(duration, 95) FROM T", at=AT, interval=30)
    assert p95 == [Sample({}, 0.31)]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([], []),
        ([{"average.duration": None}], []),
        ([{"count": 0}], [Sample({}, 0.0)]),
    ],
    ids=["no-rows", "null-aggregate", "zero-count"],
)
async def test_no_data_versus_zero(
    nerdgraph: FakeNerdGraph,
    make_newrelic: MakeProvider,
    rows: list[dict[str, Any]],
    expected: list[Sample],
) -> None:
    """No rows (a FACET that matched nothing) and a null aggregate are no data; ``count(*)`` over
    no events is a real zero."""
    nerdgraph.reply(Reply(results(rows)))
    assert await make_newrelic().query(COUNT, at=AT, interval=30) == expected


async def test_a_row_with_several_numbers_is_refused(
    nerdgraph: FakeNerdGraph, make_newrelic: MakeProvider
) -> None:
    """``SELECT count(*), sum(x)`` cannot be one check's number: a ProviderQueryError naming them."""
    nerdgraph.reply(Reply(results([{"count": 3, "sum.x": 9}])))
    with pytest.raises(ProviderQueryError) as caught:
        await make_newrelic().query("SELECT count(*), sum(x) FROM T", at=AT, interval=30)
    assert "count, sum.x" in str(caught.value)


# --- failures ---------------------------------------------------------------------------------


async def test_nrql_syntax_error_is_a_query_error_asked_once(
    nerdgraph: FakeNerdGraph, make_newrelic: MakeProvider, metrics: WatchdogMetrics
) -> None:
    """A GraphQL error about the NRQL is a ProviderQueryError quoting New Relic, not retried."""
    message = "NRQL Syntax Error: Error at line 1 position 9, unexpected 'FORM'"
    nerdgraph.reply(Reply(graphql_errors(message, "INVALID_INPUT")))
    with pytest.raises(ProviderQueryError) as caught:
        await make_newrelic().query("SELECT * FORM Transaction", at=AT, interval=30)
    assert message in str(caught.value) and "newrelic provider 'nr'" in str(caught.value)
    assert len(nerdgraph.asked) == 1
    assert metrics.provider_errors.labels(provider="nr", kind="query")._value.get() == 1


async def test_wrong_key_is_a_configuration_error_naming_the_provider(
    nerdgraph: FakeNerdGraph, make_newrelic: MakeProvider
) -> None:
    """A key New Relic does not accept (401) is a PermanentError naming the provider and what to
    check; it is asked once, and the key itself is not in the message."""
    provider = make_newrelic("nr-prod", api_key="NRAK-REVOKED")
    with pytest.raises(ProviderConfigError) as caught:
        await provider.query(COUNT, at=AT, interval=30)
    assert isinstance(caught.value, PermanentError)
    message = str(caught.value)
    assert message.startswith("provider nr-prod: New Relic answered 401")
    assert "check api_key" in message and str(ACCOUNT) in message and "REVOKED" not in message
    assert nerdgraph.asked == []


async def test_unauthorized_error_class_is_a_configuration_error(
    nerdgraph: FakeNerdGraph, make_newrelic: MakeProvider
) -> None:
    """A 200 whose GraphQL error has class FORBIDDEN is the same configuration error."""
    nerdgraph.reply(Reply(graphql_errors("Access denied to account", "FORBIDDEN")))
    with pytest.raises(ProviderConfigError):
        await make_newrelic().query(COUNT, at=AT, interval=30)
    assert len(nerdgraph.asked) == 1


async def test_an_account_the_key_cannot_see_is_a_configuration_error(
    nerdgraph: FakeNerdGraph, make_newrelic: MakeProvider
) -> None:
    """``account: null`` without errors: the user behind the key cannot see that account."""
    nerdgraph.reply(Reply({"data": {"actor": {"account": None}}}))
    with pytest.raises(ProviderConfigError) as caught:
        await make_newrelic().query(COUNT, at=AT, interval=30)
    assert f"no account {ACCOUNT}" in str(caught.value)


async def test_transient_failures_are_retried(
    nerdgraph: FakeNerdGraph, make_newrelic: MakeProvider
) -> None:
    """A GraphQL TIMEOUT error, a 429 with Retry-After and a 503 are each retried; the answer that
    follows is used."""
    nerdgraph.reply(
        Reply(graphql_errors("NRDB query timed out", "TIMEOUT")),
        Reply({"errors": [{"message": "Too many requests"}]}, status=429, headers={"Retry-After": "0.2"}),
        Reply("Service Unavailable", status=503),
        Reply(results([{"count": 7}])),
    )
    samples = await make_newrelic(retries=4).query(COUNT, at=AT, interval=30)
    assert samples == [Sample({}, 7.0)]
    assert len(nerdgraph.asked) == 4
    assert nerdgraph.asked[2].at - nerdgraph.asked[1].at >= 0.15


async def test_persistent_server_errors_are_unavailable(
    nerdgraph: FakeNerdGraph, make_newrelic: MakeProvider, metrics: WatchdogMetrics
) -> None:
    """502s that keep coming: ProviderUnavailable after ``retries`` attempts, counted as an error."""
    nerdgraph.reply(Reply("Bad Gateway", status=502))
    with pytest.raises(ProviderUnavailable) as caught:
        await make_newrelic(retries=2).query(COUNT, at=AT, interval=30)
    assert "gave up after 2 attempts" in str(caught.value)
    assert metrics.provider_errors.labels(provider="nr", kind="http")._value.get() == 1


async def test_timeout_and_refused_connection_are_unavailable(
    nerdgraph: FakeNerdGraph, make_newrelic: MakeProvider, closed_port: int
) -> None:
    """A slow answer and a closed port both leave the check blind (ProviderUnavailable)."""
    nerdgraph.reply(Reply(results([{"count": 1}]), delay=2.0))
    with pytest.raises(ProviderUnavailable) as slow:
        await make_newrelic(timeout="200ms", retries=1).query(COUNT, at=AT, interval=30)
    assert "timed out" in str(slow.value)
    with pytest.raises(ProviderUnavailable) as refused:
        await make_newrelic(url=f"http://127.0.0.1:{closed_port}", retries=1).query(COUNT, at=AT, interval=30)
    assert "connection failed" in str(refused.value)


async def test_an_answer_that_is_not_graphql_is_unavailable(
    nerdgraph: FakeNerdGraph, make_newrelic: MakeProvider
) -> None:
    """A 200 that is not the documented shape (a proxy's page) is unavailable, not data."""
    nerdgraph.reply(Reply("<html>login</html>"))
    with pytest.raises(ProviderUnavailable):
        await make_newrelic(retries=1).query(COUNT, at=AT, interval=30)


# --- settings, escaping, registration ---------------------------------------------------------


def test_region_picks_the_endpoint_and_url_overrides_it() -> None:
    """us → api.newrelic.com, eu → api.eu.newrelic.com; `url` replaces either; `/graphql` is added."""
    base = {"api_key": "k", "account_id": 1}
    assert NewRelicSettings.model_validate(base).endpoint == "https://api.newrelic.com/graphql"
    eu = NewRelicSettings.model_validate({**base, "region": "eu"})
    assert eu.endpoint == "https://api.eu.newrelic.com/graphql"
    local = NewRelicSettings.model_validate({**base, "url": "http://127.0.0.1:9/"})
    assert local.endpoint == "http://127.0.0.1:9/graphql"


@pytest.mark.parametrize(
    "settings",
    [
        {"account_id": 1},
        {"api_key": "k"},
        {"api_key": "k", "account_id": 0},
        {"api_key": "k", "account_id": 1, "region": "ap"},
        {"api_key": "k", "account_id": 1, "url": "newrelic.internal"},
        {"api_key": "k", "account_id": 1, "accountId": 1},
    ],
)
def test_settings_refuse_what_cannot_work(settings: dict[str, Any]) -> None:
    """Key and account are required, the account id positive, the region us or eu, a url absolute,
    and unknown keys are refused at config load."""
    with pytest.raises(ValidationError):
        NewRelicSettings.model_validate(settings)


def test_escape_keeps_a_value_inside_its_string() -> None:
    """A version crafted to close the string and widen the WHERE clause stays one string."""
    values = {"version": "v2' OR appName LIKE '%"}
    nrql = render("SELECT count(*) FROM T WHERE tags.version = '{version}'", values, escape)
    assert nrql == "SELECT count(*) FROM T WHERE tags.version = 'v2\\' OR appName LIKE \\'%'"


@given(st.text())
def test_an_escaped_value_is_exactly_one_string_literal(value: str) -> None:
    """Whatever the value, quoting its escaped form gives one NRQL string literal, end to end."""
    literal = f"'{escape(value)}'"
    assert re.fullmatch(r"'(?:[^'\\]|\\.)*'", literal, flags=re.DOTALL)


def test_registered_under_metrics_newrelic() -> None:
    """The entry point ``metrics.newrelic`` loads this class, which builds a MetricsProvider."""
    (ep,) = [e for e in entry_points(group="rollback_watchdog.providers") if e.name == "metrics.newrelic"]
    assert ep.load() is NewRelicProvider
    settings = NewRelicSettings.model_validate({"api_key": "k", "account_id": 1})
    assert isinstance(NewRelicProvider("nr", settings), MetricsProvider)
