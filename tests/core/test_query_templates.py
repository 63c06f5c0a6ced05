"""Query templates (watchdog.templates.render, DESIGN §3): only `{name}` with a known name is
replaced, every other brace stays as written, and values are escaped for the query language."""

from __future__ import annotations

import pytest

from watchdog.templates import render


def promql_escape(value: str) -> str:
    """What a Prometheus adapter does: escape for a double-quoted PromQL string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def identity(value: str) -> str:
    return value


VALUES = {"service": "checkout", "version": "v2", "environment": "prod", "interval": "30s"}


def test_known_names_are_replaced() -> None:
    """`{service}`, `{version}`, `{interval}` get their values."""
    template = 'sum(increase(http_requests_total{service="{service}",version="{version}"}[{interval}]))'
    assert render(template, VALUES, promql_escape) == (
        'sum(increase(http_requests_total{service="checkout",version="v2"}[30s]))'
    )


def test_promql_label_matcher_braces_stay() -> None:
    """A PromQL matcher such as `{code=~"5.."}` is not a placeholder and is left alone."""
    template = 'http_requests_total{code=~"5..",service="{service}"}'
    assert render(template, VALUES, promql_escape) == 'http_requests_total{code=~"5..",service="checkout"}'


def test_datadog_tag_scope_braces_stay() -> None:
    """A Datadog scope `{service:x}` stays; a placeholder inside one is still replaced."""
    assert (
        render("avg:container.cpu.usage{service:web}", VALUES, identity)
        == "avg:container.cpu.usage{service:web}"
    )
    assert render("avg:cpu{service:{service},version:{version}}", VALUES, identity) == (
        "avg:cpu{service:checkout,version:v2}"
    )


@pytest.mark.parametrize("template", ["{team}", "{ service }", "{1abc}", "{}", "{{service}", "{service"])
def test_unknown_or_malformed_placeholders_are_left_as_written(template: str) -> None:
    """A name the values do not have, or something that is not `{identifier}`, is kept verbatim
    (unlike str.format, which would raise or eat doubled braces)."""
    rendered = render(template, VALUES, identity)
    assert rendered.replace("checkout", "{service}") == template


def test_values_are_escaped_with_the_given_function() -> None:
    """A version crafted to close the label matcher stays inside the string once escaped."""
    values = {"version": 'v2"} or vector(1) #'}
    rendered = render('up{version="{version}"}', values, promql_escape)
    assert rendered == 'up{version="v2\\"} or vector(1) #"}'


def test_escape_is_applied_to_values_only() -> None:
    """The template's own text is never passed through the escape function."""
    calls: list[str] = []

    def spy(value: str) -> str:
        calls.append(value)
        return value.upper()

    assert render('a{b="{service}"} "quoted" {version}', VALUES, spy) == 'a{b="CHECKOUT"} "quoted" V2'
    assert calls == ["checkout", "v2"]


def test_replacement_is_not_recursive() -> None:
    """A value that itself looks like a placeholder is inserted literally, not expanded again."""
    values = {"service": "{version}", "version": "v2"}
    assert render("{service}/{version}", values, identity) == "{version}/v2"


def test_labels_are_placeholders_too() -> None:
    """Any name present in the values (the event's labels) can be used."""
    assert render('x{team="{team}"}', {"team": "pay"}, promql_escape) == 'x{team="pay"}'


def test_empty_value_is_substituted() -> None:
    """An empty value (no baseline version yet) replaces the placeholder with nothing."""
    assert render('x{v="{baseline_version}"}', {"baseline_version": ""}, promql_escape) == 'x{v=""}'
