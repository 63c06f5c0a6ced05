"""CloudWatchProvider against moto's server: metric data is put with PutMetricData through a real
aiobotocore client, then read back by the provider with GetMetricData, over HTTP."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from importlib.metadata import entry_points
from typing import Any

import pytest
import pytest_asyncio
from aiobotocore.session import get_session
from botocore.exceptions import ClientError
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from providers.metrics._api import ProviderConfigError
from providers.metrics.cloudwatch import (
    CloudWatchProvider,
    CloudWatchSettings,
    MetricQuery,
    aligned_window,
    escape,
    parse_query,
)
from tests.support.moto_server import CREDENTIALS, MotoServer
from watchdog.errors import PermanentError, ProviderQueryError, ProviderUnavailable
from watchdog.metrics import WatchdogMetrics
from watchdog.ports import MetricsProvider, Sample
from watchdog.templates import render

REGION = "eu-west-1"
PERIOD = 60
# A period boundary an hour ago: CloudWatch (and moto) take data points up to two weeks old.
T0 = math.floor(time.time() / PERIOD) * PERIOD - 3600
AT = T0 + PERIOD + 7  # a poll 7 s into the next period: it reads [T0, T0 + 60)
SESSION = get_session()  # one for every put: it loads CloudWatch's API model once


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def moto() -> AsyncIterator[MotoServer]:
    """One moto server for the module; tests keep apart by metric name (moto matches a query with
    dimensions on name and dimensions only, whatever the namespace)."""
    async with MotoServer() as server:
        yield server


async def put(
    moto: MotoServer, namespace: str, metric: str, dims: dict[str, str], *points: tuple[float, float]
) -> None:
    """PutMetricData ``points`` (unix time, value) for one metric, as an app or an agent would."""
    async with SESSION.create_client(
        "cloudwatch", region_name=REGION, endpoint_url=moto.url, **CREDENTIALS
    ) as client:
        await client.put_metric_data(
            Namespace=namespace,
            MetricData=[
                {
                    "MetricName": metric,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
                    "Timestamp": datetime.fromtimestamp(at, UTC),
                    "Value": value,
                    "Unit": "Count",
                }
                for at, value in points
            ],
        )


MakeProvider = Callable[..., CloudWatchProvider]


@pytest.fixture
def make_cloudwatch(moto: MotoServer, make_adapter: Callable[..., Any]) -> MakeProvider:
    def make(name: str = "cw", **settings: Any) -> CloudWatchProvider:
        settings.setdefault("region", REGION)
        settings.setdefault("url", moto.url)
        settings.setdefault("access_key_id", CREDENTIALS["aws_access_key_id"])
        settings.setdefault("secret_access_key", CREDENTIALS["aws_secret_access_key"])
        provider: CloudWatchProvider = make_adapter(CloudWatchProvider, name, **settings)
        return provider

    return make


V2 = {"Service": "checkout", "Version": "v2"}


# --- what a query returns ---------------------------------------------------------------------


async def test_sum_adds_up_the_last_complete_period(moto: MotoServer, make_cloudwatch: MakeProvider) -> None:
    """``Sum`` over a poll 7 s into a period counts the data points of the period before it, and
    nothing outside it; the sample is labelled with the query's dimensions."""
    await put(moto, "SumApp", "Requests", V2, (T0 - 5, 100), (T0 + 5, 3), (T0 + 25, 4), (T0 + 65, 100))
    samples = await make_cloudwatch().query(
        "SumApp|Requests|Sum|Service=checkout,Version=v2", at=AT, interval=PERIOD
    )
    assert samples == [Sample(V2, 7.0)]


@pytest.mark.parametrize(("stat", "expected"), [("SampleCount", 2.0), ("Maximum", 4.0), ("Average", 3.5)])
async def test_other_statistics_are_cloudwatchs_value_for_the_period(
    moto: MotoServer, make_cloudwatch: MakeProvider, stat: str, expected: float
) -> None:
    """The statistic is CloudWatch's own: SampleCount counts, Maximum and Average are levels."""
    namespace, metric = f"Stat{stat}", f"Latency{stat}"
    await put(moto, namespace, metric, V2, (T0 + 5, 3), (T0 + 25, 4))
    query = f"{namespace}|{metric}|{stat}|Service=checkout,Version=v2"
    assert await make_cloudwatch().query(query, at=AT, interval=PERIOD) == [Sample(V2, expected)]


async def test_a_metric_without_data_in_the_period_is_no_data(
    moto: MotoServer, make_cloudwatch: MakeProvider
) -> None:
    """Data for another version, or for another period, is not this query's: an empty list (no
    data, the check is blind), never a zero."""
    await put(moto, "NoDataApp", "NoDataRequests", V2, (T0 + 5, 3), (T0 + 2 * PERIOD + 5, 9))
    provider = make_cloudwatch()
    other_version = "NoDataApp|NoDataRequests|Sum|Service=checkout,Version=v1"
    assert await provider.query(other_version, at=AT, interval=PERIOD) == []
    empty_period = "NoDataApp|NoDataRequests|Sum|Service=checkout,Version=v2"
    assert await provider.query(empty_period, at=AT + PERIOD, interval=PERIOD) == []


async def test_rendered_template_values_are_matched_exactly(
    moto: MotoServer, make_cloudwatch: MakeProvider
) -> None:
    """A version holding the query's separators (``|``, ``,``, ``=``) and spaces, escaped by the
    provider, still names exactly the dimension value CloudWatch stored."""
    odd = {"Service": "checkout", "Version": " 2.0|rc=1,b "}
    await put(moto, "OddApp", "Requests", odd, (T0 + 5, 11))
    provider = make_cloudwatch()
    query = render(
        "OddApp|Requests|Sum|Service={service},Version={version}",
        {"service": "checkout", "version": odd["Version"]},
        provider.escape,
    )
    assert await provider.query(query, at=AT, interval=PERIOD) == [Sample(odd, 11.0)]


async def test_a_crafted_value_cannot_add_a_dimension(
    moto: MotoServer, make_cloudwatch: MakeProvider
) -> None:
    """``v2,Canary=false`` stays one value of Version: it matches nothing rather than another
    metric."""
    await put(moto, "InjectApp", "Requests", {"Version": "v2", "Canary": "false"}, (T0 + 5, 5))
    provider = make_cloudwatch()
    query = render("InjectApp|Requests|Sum|Version={version}", {"version": "v2,Canary=false"}, escape)
    assert parse_query(query).dimensions == (("Version", "v2,Canary=false"),)
    assert await provider.query(query, at=AT, interval=PERIOD) == []


# --- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    ["App|Requests", "App|Requests|Median", "App||Sum", "App|Requests|Sum|Version", "A|B|Sum|x=1\\"],
)
async def test_a_query_that_does_not_parse_is_a_query_error_without_a_request(
    make_cloudwatch: MakeProvider, metrics: WatchdogMetrics, query: str
) -> None:
    """Too few parts, an unknown statistic, an empty name, a dimension without ``=`` or a dangling
    backslash: ProviderQueryError naming the provider, before anything is sent."""
    with pytest.raises(ProviderQueryError) as caught:
        await make_cloudwatch().query(query, at=AT, interval=PERIOD)
    assert "cloudwatch provider 'cw'" in str(caught.value)
    assert metrics.provider_errors.labels(provider="cw", kind="query")._value.get() == 1


async def test_credentials_aws_refuses_are_a_configuration_error(make_adapter: Callable[..., Any]) -> None:
    """Keys AWS does not know (moto checking credentials, as AWS does) are a PermanentError naming
    the provider and what to check; not retried."""
    async with MotoServer(env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as strict:
        provider = make_adapter(
            CloudWatchProvider,
            "cw-prod",
            region=REGION,
            url=strict.url,
            access_key_id="AKIAUNKNOWN00000000",
            secret_access_key="wrong",
        )
        with pytest.raises(ProviderConfigError) as caught:
            await provider.query("App|Requests|Sum|Version=v2", at=AT, interval=PERIOD)
    assert isinstance(caught.value, PermanentError)
    message = str(caught.value)
    assert message.startswith("provider cw-prod: CloudWatch answered")
    assert "InvalidClientTokenId" in message and "cloudwatch:GetMetricData" in message
    assert "wrong" not in message


async def test_no_credentials_at_all_is_a_configuration_error(
    make_adapter: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """Without keys, profile or role, the provider says so and how to fix it (not "unavailable")."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    provider = make_adapter(CloudWatchProvider, "cw", region=REGION, url="http://127.0.0.1:9")
    with pytest.raises(ProviderConfigError) as caught:
        await provider.query("App|Requests|Sum", at=AT, interval=PERIOD)
    assert "no usable AWS credentials" in str(caught.value)


async def test_nothing_listening_is_unavailable(make_cloudwatch: MakeProvider, closed_port: int) -> None:
    """A refused connection is retried, then the check is blind (ProviderUnavailable)."""
    provider = make_cloudwatch(url=f"http://127.0.0.1:{closed_port}", retries=2)
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.query("App|Requests|Sum", at=AT, interval=PERIOD)
    assert "connection failed" in str(caught.value) and "gave up after 2 attempts" in str(caught.value)


class FlakyCloudWatch:
    """Stands in for the aiobotocore client: raises the given errors in turn, then answers."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def get_metric_data(self, **request: Any) -> dict[str, Any]:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        stamp = request["StartTime"]
        result = {"Id": "q", "Timestamps": [stamp], "Values": [5.0], "StatusCode": "Complete"}
        return {"MetricDataResults": [result]}


def client_error(code: str, status: int, message: str = "") -> ClientError:
    """The ClientError botocore raises for an AWS error answer (code, message, HTTP status)."""
    return ClientError(
        {"Error": {"Code": code, "Message": message or code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetMetricData",
    )


def with_client(provider: CloudWatchProvider, client: FlakyCloudWatch) -> CloudWatchProvider:
    provider._client = client
    return provider


async def test_throttling_and_server_errors_are_retried(make_cloudwatch: MakeProvider) -> None:
    """``Throttling`` (400) and ``InternalFailure`` (500) may pass: retried, and the answer that
    follows is used."""
    flaky = FlakyCloudWatch(
        client_error("Throttling", 400, "Rate exceeded"), client_error("InternalFailure", 500)
    )
    provider = with_client(make_cloudwatch(retries=3), flaky)
    assert await provider.query("App|Requests|Sum", at=AT, interval=PERIOD) == [Sample({}, 5.0)]
    assert flaky.calls == 3


async def test_persistent_throttling_is_unavailable(
    make_cloudwatch: MakeProvider, metrics: WatchdogMetrics
) -> None:
    """Throttling on every attempt: ProviderUnavailable after ``retries``, counted as rate_limited."""
    flaky = FlakyCloudWatch(*(client_error("ThrottlingException", 400) for _ in range(5)))
    provider = with_client(make_cloudwatch(retries=2), flaky)
    with pytest.raises(ProviderUnavailable):
        await provider.query("App|Requests|Sum", at=AT, interval=PERIOD)
    assert flaky.calls == 2
    assert metrics.provider_errors.labels(provider="cw", kind="rate_limited")._value.get() == 1


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (client_error("InvalidParameterValue", 400, "Period 7 is not valid."), ProviderQueryError),
        (client_error("AccessDenied", 403, "not authorized: GetMetricData"), ProviderConfigError),
        (client_error("ExpiredToken", 400), ProviderConfigError),
    ],
)
async def test_refusals_are_not_retried(
    make_cloudwatch: MakeProvider, error: ClientError, raised: type[Exception]
) -> None:
    """A parameter CloudWatch refuses is a query error; denied or expired credentials are a
    configuration error. Neither is asked twice."""
    flaky = FlakyCloudWatch(error)
    provider = with_client(make_cloudwatch(), flaky)
    with pytest.raises(raised) as caught:
        await provider.query("App|Requests|Sum", at=AT, interval=PERIOD)
    assert str(error.response["Error"]["Message"]) in str(caught.value)
    assert flaky.calls == 1


# --- the syntax, settings and registration ----------------------------------------------------


def test_parse_query_reads_every_part() -> None:
    """Namespace, metric, statistic and dimensions, with whitespace around parts ignored."""
    parsed = parse_query(" AWS/ApplicationELB | HTTPCode_Target_5XX_Count | Sum | LoadBalancer = app/shop/1 ")
    assert parsed == MetricQuery(
        "AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", "Sum", (("LoadBalancer", "app/shop/1"),)
    )
    assert parse_query("NS|M|p99.9").stat == "p99.9" and parse_query("NS|M|p99.9").dimensions == ()
    assert parse_query("NS|M|TM(10%:90%)").stat == "TM(10%:90%)"


@given(st.text())
def test_escaped_values_come_back_unchanged(value: str) -> None:
    """Any value, escaped into a template, parses back to exactly itself as one dimension value."""
    assert parse_query(f"NS|M|Sum|A=1,Version={escape(value)},B=2").dimensions == (
        ("A", "1"),
        ("Version", value),
        ("B", "2"),
    )


def test_the_window_is_the_last_complete_period() -> None:
    """Period = the interval in whole seconds; the window ends at the last period boundary before
    the poll, so consecutive polls read consecutive periods once each."""
    assert aligned_window(1_000_007.0, 60.0) == (60, 999_900, 999_960)
    assert aligned_window(120.0, 60.0) == (60, 60, 120)
    assert aligned_window(10.4, 0.2) == (1, 9, 10)


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"region": "Ireland"},
        {"region": REGION, "url": "localhost:4566"},
        {"region": REGION, "access_key_id": "AKIA"},
        {"region": REGION, "session_token": "t"},
        {"region": REGION, "access_key_id": "a", "secret_access_key": "b", "profile": "p"},
        {"region": REGION, "namespace": "x"},
    ],
)
def test_settings_refuse_what_cannot_work(settings: dict[str, Any]) -> None:
    """A region is required and looks like one; a url is absolute; keys come in pairs, a session
    token with them, a profile instead of them; unknown keys are refused."""
    with pytest.raises(ValidationError):
        CloudWatchSettings.model_validate(settings)


def test_registered_under_metrics_cloudwatch() -> None:
    """The entry point ``metrics.cloudwatch`` loads this class, which builds a MetricsProvider."""
    (ep,) = [e for e in entry_points(group="rollback_watchdog.providers") if e.name == "metrics.cloudwatch"]
    assert ep.load() is CloudWatchProvider
    settings = CloudWatchSettings.model_validate({"region": REGION})
    assert isinstance(CloudWatchProvider("cw", settings), MetricsProvider)
