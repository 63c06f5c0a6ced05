"""Metrics read straight from the app's own ``/metrics`` endpoints, without a Prometheus server.

For a sidecar next to an app that exposes Prometheus text or OpenMetrics but is not scraped by
anything the watchdog can query. A query is a series selector, ``name{label="v", other=~"re"}``,
and what it returns follows what the checks need (DESIGN §7 works on counts per interval):

- counters (and a histogram's ``_bucket``/``_count``/``_sum``, a summary's ``_count``/``_sum``):
  the increase since this provider last evaluated the same query string, with Prometheus'
  counter-reset rule (a value that went down started again from zero). The first evaluation has
  nothing to subtract from: it records the values and returns no data;
- gauges and untyped series: the current value;
- everything that matches is summed into one sample, except histogram buckets, which are summed
  per ``le`` (the cumulative bucket counts a ``histogram`` check reads).

The increase is kept per query string, so two watches evaluating the very same query would split
one interval's increase between them; rendered queries carry the service and version, so that
happens only for two watches of the same version at once.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, Literal, NoReturn

import aiohttp
import structlog
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families as text_families
from pydantic import Field, field_validator

from providers._http import is_transient
from providers.metrics._http import (
    USER_AGENT,
    Failed,
    HttpSettings,
    Instruments,
    check_http_url,
    escape,
    get,
    retry_status,
    with_retries,
)
from watchdog.errors import ProviderQueryError
from watchdog.plugins import AdapterContext
from watchdog.ports import Sample

__all__ = [
    "Exposed",
    "Matcher",
    "ScrapeProvider",
    "ScrapeSettings",
    "Selector",
    "SelectorError",
    "parse_exposition",
    "parse_selector",
]

log = structlog.get_logger()

_ACCEPT: Final = "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1"
"""Prefer the classic text format: it parses faster and accepts more of what exporters emit."""

_MAX_SNAPSHOTS: Final = 4096
"""Query strings whose previous values are kept. Rendered queries carry a version, so over months
the set of strings grows without end; the least recently evaluated ones are forgotten (and start
again from a first, no-data evaluation if they ever come back)."""

_COUNTER_SUFFIXES: Final[dict[str, tuple[str, ...]]] = {
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
}


class ScrapeSettings(HttpSettings):
    """``providers.<name>`` with ``type: scrape``."""

    targets: list[str] = Field(min_length=1)
    """URLs of the app's metrics endpoints, e.g. [http://127.0.0.1:8000/metrics]. Every one must
    answer each poll: a missing instance would undercount its share of the traffic."""

    @field_validator("targets")
    @classmethod
    def _http_urls(cls, value: list[str]) -> list[str]:
        return [check_http_url(url) for url in value]


# --- the selector ---------------------------------------------------------------------------


class SelectorError(ValueError):
    """A query that is not a series selector; the message points at the offending position."""


_Op = Literal["=", "!=", "=~", "!~"]


@dataclass(frozen=True, slots=True)
class Matcher:
    """One ``label op "value"`` clause; the metric name is the ``__name__`` label, as in PromQL."""

    label: str
    op: _Op
    value: str

    def matches(self, actual: str) -> bool:
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = _regex(self.value).fullmatch(actual) is not None  # PromQL regexes are anchored
        return found if self.op == "=~" else not found


@dataclass(frozen=True, slots=True)
class Selector:
    """A parsed series selector. A missing label matches as the empty string, as in PromQL."""

    matchers: tuple[Matcher, ...]

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        return all(
            m.matches(name if m.label == "__name__" else labels.get(m.label, "")) for m in self.matchers
        )


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    # Prometheus compiles `^(?s:pattern)$`: dot matches newlines too.
    return re.compile(pattern, re.DOTALL)


_METRIC_NAME: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_OPS: Final[tuple[_Op, ...]] = ("=~", "!~", "!=", "=")  # two-character operators first
_QUOTES: Final = ('"', "'", "`")
_SIMPLE_ESCAPES: Final = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
    "\\": "\\", "'": "'", '"': '"',
}  # fmt: skip
_HEX_ESCAPES: Final = {"x": 2, "u": 4, "U": 8}


@lru_cache(maxsize=1024)
def parse_selector(text: str) -> Selector:
    """Parse ``name{label="value", ...}`` (PromQL's instant vector selector, without range or
    offset). Also takes the quoted UTF-8 form ``{"my.dotted.metric", "a.label"="v"}``.
    """
    return _SelectorParser(text).parse()


class _SelectorParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.name: str | None = None

    def parse(self) -> Selector:
        matchers: list[Matcher] = []
        self._skip()
        found = _METRIC_NAME.match(self.text, self.pos)
        if found:
            self.name = found.group()
            self.pos = found.end()
            self._skip()
        if self._peek() == "{":
            self.pos += 1
            matchers.extend(self._matchers())
        self._skip()
        if self.pos != len(self.text):
            self._fail(
                f"unexpected {self.text[self.pos]!r} (the scrape provider takes a series selector "
                'such as http_requests_total{code=~"5.."}, not a PromQL expression)'
            )
        if self.name is not None:
            matchers.insert(0, Matcher("__name__", "=", self.name))
        if all(m.matches("") for m in matchers):
            raise SelectorError(
                f"{self.text!r}: a selector needs a metric name or a matcher that does not match "
                "the empty string"
            )
        return Selector(tuple(matchers))

    def _matchers(self) -> Iterator[Matcher]:
        while True:
            self._skip()
            if self._peek() == "}":
                self.pos += 1
                return
            if self._peek() in _QUOTES:
                label = self._string()
                self._skip()
                if self._peek() in (",", "}"):  # a quoted metric name on its own
                    if self.name is not None:
                        self._fail(f"the metric name is given twice ({label!r})")
                    self.name = label
                    self._after_item()
                    continue
            else:
                found = _LABEL_NAME.match(self.text, self.pos)
                if not found:
                    self._fail("expected a label name")
                label = found.group()
                self.pos = found.end()
            self._skip()
            op = next((op for op in _OPS if self.text.startswith(op, self.pos)), None)
            if op is None:
                self._fail(f"expected one of = != =~ !~ after {label!r}")
            self.pos += len(op)
            self._skip()
            value = self._string()
            if label == "__name__" and self.name is not None:
                self._fail("the metric name is given twice")
            if op in ("=~", "!~"):
                try:
                    _regex(value)
                except re.error as exc:
                    self._fail(f"bad regular expression {value!r}: {exc}")
            yield Matcher(label, op, value)
            self._after_item()

    def _after_item(self) -> None:
        self._skip()
        if self._peek() == ",":
            self.pos += 1
        elif self._peek() != "}":
            self._fail("expected ',' or '}'")

    def _string(self) -> str:
        quote = self._peek()
        if quote not in _QUOTES:
            self._fail("expected a quoted string")
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == quote:
                return "".join(out)
            if quote == "`":
                out.append(char)
            elif char == "\n":
                break
            elif char == "\\":
                out.append(self._escape())
            else:
                out.append(char)
        self.pos = start
        self._fail("unterminated string")

    def _escape(self) -> str:
        if self.pos >= len(self.text):
            self._fail("unterminated string")
        char = self.text[self.pos]
        self.pos += 1
        if char in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[char]
        if char in _HEX_ESCAPES:
            digits = self.text[self.pos : self.pos + _HEX_ESCAPES[char]]
            if len(digits) == _HEX_ESCAPES[char] and all(c in "0123456789abcdefABCDEF" for c in digits):
                self.pos += len(digits)
                return chr(int(digits, 16))
        elif char in "01234567":
            digits = self.text[self.pos - 1 : self.pos + 2]
            if len(digits) == 3 and all(c in "01234567" for c in digits):
                self.pos += 2
                return chr(int(digits, 8))
        self.pos -= 2
        self._fail(f"unknown escape sequence \\{char}")

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def _fail(self, message: str) -> NoReturn:
        raise SelectorError(f"{self.text!r}, at {self.pos + 1}: {message}")


# --- the exposition ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exposed:
    """One sample of a scrape; ``counter`` says whether it only ever goes up (until a restart)."""

    name: str
    labels: Mapping[str, str]
    value: float
    counter: bool


def parse_exposition(text: str, content_type: str) -> list[Exposed]:
    """Every sample in a scrape, marked counter or not from its family's TYPE."""
    parse = openmetrics_families if content_type == "application/openmetrics-text" else text_families
    points = []
    for family in parse(text):
        suffixes = _COUNTER_SUFFIXES.get(family.type)
        for sample in family.samples:
            if family.type == "counter":
                counter = not sample.name.endswith("_created")  # _created is a timestamp
            else:
                counter = suffixes is not None and sample.name.endswith(suffixes)
            points.append(Exposed(sample.name, sample.labels, float(sample.value), counter))
    return points


_SeriesKey = tuple[int, str, tuple[tuple[str, str], ...]]


class ScrapeProvider:
    """A ``MetricsProvider`` that scrapes exposition endpoints itself, for sidecar deployments."""

    Settings = ScrapeSettings

    def __init__(self, name: str, settings: ScrapeSettings, context: AdapterContext | None = None) -> None:
        self.name = name
        self._settings = settings
        self._what = f"scrape provider {name!r}"
        self._instruments = Instruments(name, context)
        self._session: aiohttp.ClientSession | None = None
        self._previous: OrderedDict[str, dict[_SeriesKey, float]] = OrderedDict()

    @classmethod
    def from_settings(cls, name: str, settings: ScrapeSettings, context: AdapterContext) -> ScrapeProvider:
        return cls(name, settings, context)

    def escape(self, value: str) -> str:
        """Selector label values are PromQL strings, so they escape the same way."""
        return escape(value)

    async def query(self, query: str, *, at: float, interval: float) -> list[Sample]:
        """Scrape every target now and evaluate the selector ``query`` on what they expose.

        ``at`` and ``interval`` are not used: an endpoint only tells its current values, and the
        increase is measured between this provider's own evaluations.
        """

        async def evaluate() -> list[Sample]:
            try:
                selector = parse_selector(query)
            except SelectorError as exc:
                raise ProviderQueryError(f"{self._what}: {exc}") from exc
            scrapes = await self._scrape_all()
            return self._evaluate(query, selector, scrapes)

        return await self._instruments.timed(evaluate)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _client(self) -> aiohttp.ClientSession:
        """The session, created on first use: a constructor runs outside any event loop."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT, "Accept": _ACCEPT})
        return self._session

    async def _scrape_all(self) -> list[list[Exposed]]:
        """All targets at once, so a poll takes as long as the slowest, not the sum."""
        results = await asyncio.gather(
            *(self._scrape(url) for url in self._settings.targets), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        for failure in failures:
            if not isinstance(failure, Exception):  # cancellation and the like go through
                raise failure
        if failures:
            first = failures[0]
            kind = first.kind if isinstance(first, Failed) else "other"
            if len(failures) == 1:
                raise Failed(str(first), kind=kind) from first
            raise Failed(
                f"{self._what}: {len(failures)} of {len(results)} targets failed: "
                + "; ".join(str(f) for f in failures),
                kind=kind,
            ) from first
        return [r for r in results if not isinstance(r, BaseException)]

    async def _scrape(self, url: str) -> list[Exposed]:
        what = f"{self._what} target {url}"

        async def read(response: aiohttp.ClientResponse) -> tuple[str, str]:
            if is_transient(response.status):
                raise retry_status(response.status, response.headers, "")
            if response.status >= 300:
                raise Failed(f"{what}: HTTP {response.status}", kind="http")
            return await response.text(errors="replace"), response.content_type

        async def attempt() -> tuple[str, str]:
            return await get(self._client(), url, params=None, timeout=self._settings.timeout, read=read)

        text, content_type = await with_retries(self._settings.retries, what, attempt)
        try:
            return parse_exposition(text, content_type)
        except Exception as exc:  # the parsers raise ValueError, IndexError, ... on bad input
            raise Failed(
                f"{what}: cannot parse the exposition ({content_type}): {exc}",
                kind="bad_response",
            ) from exc

    def _evaluate(self, query: str, selector: Selector, scrapes: list[list[Exposed]]) -> list[Sample]:
        matched: list[tuple[_SeriesKey, Exposed]] = [
            ((index, point.name, tuple(sorted(point.labels.items()))), point)
            for index, points in enumerate(scrapes)
            for point in points
            if selector.matches(point.name, point.labels)
        ]
        buckets = [p.name.endswith("_bucket") and "le" in p.labels for _, p in matched]
        if any(buckets) and not all(buckets):
            raise ProviderQueryError(
                f"{self._what}: {query!r} matches histogram buckets and other series at once; "
                "select the `_bucket` series alone"
            )
        edges = {p.labels["le"]: _edge(p, self._what) for _, p in matched} if all(buckets) else {}
        # Validated: from here on, state changes.
        previous = self._previous.pop(query, None)
        self._previous[query] = {key: p.value for key, p in matched if p.counter}
        while len(self._previous) > _MAX_SNAPSHOTS:
            self._previous.popitem(last=False)
        if previous is None and (not matched or any(p.counter for _, p in matched)):
            log.debug("scrape.first_evaluation", provider=self.name, query=query)
            return []
        if not matched:
            return []

        def value(key: _SeriesKey, point: Exposed) -> float:
            if not point.counter:
                return point.value
            before = (previous or {}).get(key)
            # A series seen for the first time was created since the last poll (client libraries
            # create a labelled child on its first increment: the first 5xx of a new version), so
            # all of it is new. A value that went down means a restart: it counts from zero.
            if before is None or point.value < before:
                return point.value
            return point.value - before

        if not any(buckets):
            return [Sample(labels={}, value=math.fsum(value(k, p) for k, p in matched))]
        per_le: dict[float, tuple[str, list[float]]] = {}
        for key, point in matched:
            le = point.labels["le"]
            # `1` and `1.0` are the same edge from two client libraries: group by number.
            per_le.setdefault(edges[le], (le, []))[1].append(value(key, point))
        return [
            Sample(labels={"le": le}, value=math.fsum(values)) for _, (le, values) in sorted(per_le.items())
        ]


def _edge(point: Exposed, what: str) -> float:
    le = point.labels["le"]
    try:
        return float(le)
    except ValueError:
        raise ProviderQueryError(f"{what}: {point.name} has a bucket le={le!r}, not a number") from None
