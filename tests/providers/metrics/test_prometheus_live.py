"""PrometheusProvider against a real Prometheus scraping two simulated app instances every second.

The module shares one setup (see the ``live`` fixture): checkout v1 healthy and v2 failing 10 % of
its requests, each at 200 req/s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from providers.metrics.prometheus import PrometheusProvider, PrometheusSettings
from tests.providers.metrics.helpers import RPS, V2_ERROR_RATE, Live
from watchdog.errors import ProviderQueryError
from watchdog.ports import Sample

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

WINDOW = 5.0  # seconds, the [5s] of the queries


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def prom(live: Live) -> AsyncIterator[PrometheusProvider]:
    """A provider on the live Prometheus, once it holds a full query window of scrapes."""
    provider = PrometheusProvider("prom", PrometheusSettings(url=live.prometheus.url))
    deadline = time.monotonic() + 20
    while True:
        samples = await provider.query(
            "min(count_over_time(up[6s]))", at=time.time(), interval=WINDOW
        )
        if samples and samples[0].value >= WINDOW + 1:
            break
        assert time.monotonic() < deadline, "Prometheus did not gather 6 scrapes in 20 s"
        await asyncio.sleep(0.25)
    yield provider
    await provider.aclose()


def requests(version: str, *, errors: bool, escape: PrometheusProvider) -> str:
    code = ',code=~"5.."' if errors else ""
    return (
        f'sum(increase(http_requests_total{{service="checkout",'
        f'version="{escape.escape(version)}"{code}}}[5s]))'
    )


async def test_error_and_request_counts_are_plausible(prom: PrometheusProvider) -> None:
    """The ratio check's queries give counts near the truth: about rps x 5 s requests, about
    10 % of them errors for v2, and exactly none for v1."""
    now = time.time()
    (total,) = await prom.query(requests("v2", errors=False, escape=prom), at=now, interval=WINDOW)
    (bad,) = await prom.query(requests("v2", errors=True, escape=prom), at=now, interval=WINDOW)
    (stable_bad,) = await prom.query(
        requests("v1", errors=True, escape=prom), at=now, interval=WINDOW
    )
    expected = RPS * WINDOW
    assert total.labels == {}
    assert 0.5 * expected < total.value < 1.6 * expected
    assert 0.5 * V2_ERROR_RATE < bad.value / total.value < 2 * V2_ERROR_RATE
    assert stable_bad == Sample({}, 0.0)


async def test_histogram_query_gives_cumulative_counts_per_le(prom: PrometheusProvider) -> None:
    """``sum by (le) (increase(..._bucket[5s]))`` gives one Sample per bucket edge, labelled only
    by ``le``, cumulative, with ``+Inf`` equal to the request count."""
    now = time.time()
    buckets = await prom.query(
        "sum by (le) (increase(http_request_duration_seconds_bucket"
        '{service="checkout",version="v2"}[5s]))',
        at=now,
        interval=WINDOW,
    )
    by_le = {float(s.labels["le"]): s.value for s in buckets}
    assert all(set(s.labels) == {"le"} for s in buckets)
    assert sorted(by_le) == [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, float("inf")]
    values = [by_le[le] for le in sorted(by_le)]
    assert values == sorted(values)
    (total,) = await prom.query(requests("v2", errors=False, escape=prom), at=now, interval=WINDOW)
    assert values[-1] == pytest.approx(total.value, rel=0.02)


async def test_hostile_version_is_escaped_for_real_promql(prom: PrometheusProvider) -> None:
    """A version crafted to break out of the label matcher is, once escaped, accepted by the real
    PromQL parser as a plain label value that matches nothing: no injection, no syntax error."""
    hostile = 'v2"} or vector(1) or up{job="\\'
    samples = await prom.query(
        requests(hostile, errors=False, escape=prom), at=time.time(), interval=WINDOW
    )
    assert samples == []


async def test_real_prometheus_bad_query_is_a_query_error(prom: PrometheusProvider) -> None:
    """Real Prometheus' answer to a malformed query becomes ProviderQueryError with its text."""
    with pytest.raises(ProviderQueryError, match=r"bad_data.*parse error"):
        await prom.query("sum(rate(http_requests_total[5s])", at=time.time(), interval=WINDOW)


async def test_scalar_from_real_prometheus(prom: PrometheusProvider) -> None:
    """A scalar answer from the real server is one unlabelled sample: both apps are up."""
    assert await prom.query("scalar(sum(up))", at=time.time(), interval=WINDOW) == [
        Sample({}, 2.0)
    ]
