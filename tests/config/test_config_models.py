"""The config schema's own rules (watchdog.config.models): durations, what a check needs for its
type and comparison, policy coherence, and which policy an event gets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from watchdog.config.loader import LoadedConfig
from watchdog.config.models import (
    CheckConfig,
    PolicyConfig,
    WatchdogConfig,
    format_duration,
    parse_duration,
)

Load = Callable[..., LoadedConfig]
Problems = Callable[..., list[str]]

RATIO = {"name": "errors", "type": "ratio", "provider": "prom", "bad": "bad", "total": "total"}


def check(**overrides: Any) -> dict[str, Any]:
    return {**RATIO, **overrides}


def policy(name: str = "p", match: dict[str, str] | None = None, **overrides: Any) -> dict[str, Any]:
    return {"name": name, "match": match or {}, "checks": [check()], **overrides}


def error_text(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return "\n".join(e["msg"] for e in exc.value.errors())


# --- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("10m", 600.0), ("2h", 7200.0), ("1.5h", 5400.0), ("500ms", 0.5), ("1d", 86400.0)],
)
def test_duration_strings_are_seconds(text: str, seconds: float) -> None:
    """Durations are numbers with a unit; the result is in seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("value", [30, 30.0, "30", "soon", "30 sec", "-5s", "1e3s", "30S", "", True, None])
def test_bare_numbers_and_other_shapes_are_not_durations(value: Any) -> None:
    """A bare number is refused on purpose (`bake: 30`: seconds or minutes?), as is anything that is
    not a number and one of ms, s, m, h, d."""
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(value)


@pytest.mark.parametrize("value", ["0s", "0ms", "0.0h"])
def test_zero_duration_is_refused(value: str) -> None:
    """A zero bake or interval is meaningless; refused as not positive."""
    with pytest.raises(ValueError, match="is not a positive duration"):
        parse_duration(value)


@pytest.mark.parametrize(("seconds", "text"), [(30.0, "30s"), (60.0, "1m"), (5400.0, "90m"), (0.5, "500ms")])
def test_format_duration_is_the_shortest_exact_form(seconds: float, text: str) -> None:
    """`{interval}` in PromQL gets the shortest exact form (`1m`, not `60s`)."""
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text", ["30s", "1m", "2h", "500ms", "1d"])
def test_format_and_parse_round_trip(text: str) -> None:
    """What format_duration writes, parse_duration reads back to the same number of seconds."""
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


def test_durations_through_the_loader(load: Load, problems: Problems) -> None:
    """Durations in the file are seconds in the config; a bare `30` is an error at its line."""
    text = "server:\n  shutdown_timeout: 1.5h\n"
    assert load(text).config.server.shutdown_timeout == 5400.0
    (problem,) = problems("server:\n  shutdown_timeout: 30\n")
    assert problem == (
        "watchdog.yaml:2: server.shutdown_timeout: 30 is not a duration (write it like 30s, 10m or 2h)"
    )


# --- check-level rules ------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["bad", "total"])
def test_ratio_check_needs_bad_and_total(missing: str) -> None:
    """A ratio is bad events over all events: both queries are required."""
    data = check()
    del data[missing]
    with pytest.raises(ValidationError) as exc:
        CheckConfig.model_validate(data)
    assert "a ratio check needs both `bad` and `total` queries" in error_text(exc)


def test_ratio_check_refuses_a_query() -> None:
    """`query` is for histogram and gauge checks; on a ratio check it would be silently unused."""
    with pytest.raises(ValidationError) as exc:
        CheckConfig.model_validate(check(query="q"))
    assert "not `query`" in error_text(exc)


@pytest.mark.parametrize("type_", ["histogram", "gauge"])
def test_histogram_and_gauge_checks_need_a_query(type_: str) -> None:
    """Histogram and gauge checks take one `query`."""
    with pytest.raises(ValidationError) as exc:
        CheckConfig.model_validate({"name": "c", "type": type_, "provider": "prom"})
    assert f"a {type_} check needs a `query`" in error_text(exc)
    good = CheckConfig.model_validate({"name": "c", "type": type_, "provider": "prom", "query": "q"})
    assert good.query == "q"


def test_slo_ratio_check_needs_an_objective() -> None:
    """`compare: slo` judges against `objective`; without one there is nothing to judge against."""
    with pytest.raises(ValidationError) as exc:
        CheckConfig.model_validate(check(compare="slo"))
    assert "compare: slo needs an `objective`" in error_text(exc)
    assert CheckConfig.model_validate(check(compare="slo", objective=0.01)).objective == 0.01


@pytest.mark.parametrize("objective", [1, 1.0, 5])
def test_ratio_objective_must_be_below_one(objective: float) -> None:
    """A ratio objective is a fraction (0.01 = 1 %); 1 or more is a mistake (a percentage?)."""
    with pytest.raises(ValidationError) as exc:
        CheckConfig.model_validate(check(compare="slo", objective=objective))
    assert "is a ratio below 1" in error_text(exc)


@pytest.mark.parametrize("objective", [0, -0.1])
def test_objective_must_be_positive(objective: float) -> None:
    """An objective of zero or less would fail on a single bad request."""
    with pytest.raises(ValidationError):
        CheckConfig.model_validate(check(compare="slo", objective=objective))


@pytest.mark.parametrize("name", ["has space", "slash/name", "", "ünïcode"])
def test_check_names_are_simple_identifiers(name: str) -> None:
    """Check names appear in URLs, metric labels and logs: letters, digits, `_`, `.`, `-` only."""
    with pytest.raises(ValidationError):
        CheckConfig.model_validate(check(name=name))


@pytest.mark.parametrize(
    ("key", "value"), [("type", "counter"), ("compare", "yesterday"), ("direction", "up")]
)
def test_enumerated_check_fields_refuse_other_values(key: str, value: str) -> None:
    """type, compare and direction take only their documented values."""
    with pytest.raises(ValidationError):
        CheckConfig.model_validate(check(**{key: value}))


# --- policy-level rules -----------------------------------------------------------------------


def test_interval_longer_than_bake_is_refused() -> None:
    """The bake would end before the first poll."""
    with pytest.raises(ValidationError) as exc:
        PolicyConfig.model_validate(policy(bake="20s", interval="30s"))
    assert "`interval` is longer than `bake`" in error_text(exc)


def test_interval_equal_to_bake_is_accepted() -> None:
    """One poll at the end of the bake is allowed."""
    assert PolicyConfig.model_validate(policy(bake="30s", interval="30s")).bake == 30.0


def test_duplicate_check_names_are_refused_and_named() -> None:
    """Every repeated name is listed."""
    checks = [check(), check(), check(name="lat"), check(name="lat"), check(name="ok")]
    with pytest.raises(ValidationError) as exc:
        PolicyConfig.model_validate(policy(checks=checks))
    assert "check names must be unique; repeated: errors, lat" in error_text(exc)


def test_a_policy_needs_at_least_one_check() -> None:
    """A policy with no checks could never decide anything."""
    with pytest.raises(ValidationError):
        PolicyConfig.model_validate(policy(checks=[]))


@pytest.mark.parametrize("alpha", [0, 0.5, 1, -0.01])
def test_alpha_is_a_small_probability(alpha: float) -> None:
    """The false-rollback budget is in (0, 0.5)."""
    with pytest.raises(ValidationError):
        PolicyConfig.model_validate(policy(alpha=alpha))


@pytest.mark.parametrize("listen", ["8080", "localhost", ":8080", "host:99999", "host:http"])
def test_listen_must_be_host_and_port(listen: str) -> None:
    """`server.listen` is host:port with a numeric port in range."""
    with pytest.raises(ValidationError):
        WatchdogConfig.model_validate({"server": {"listen": listen}})


def test_listen_accepts_bracketed_ipv6() -> None:
    """`[::1]:8080` gives host `::1` and port 8080."""
    server = WatchdogConfig.model_validate({"server": {"listen": "[::1]:8080"}}).server
    assert (server.host, server.port) == ("::1", 8080)


@pytest.mark.parametrize("url", ["mysql://x/db", "/var/lib/state.db", "sqlite:/x.db"])
def test_store_url_scheme_is_sqlite_or_postgresql(url: str) -> None:
    """Only the schemes a backend exists (or is planned) for."""
    with pytest.raises(ValidationError):
        WatchdogConfig.model_validate({"store": {"url": url}})


def test_api_token_is_at_least_16_characters() -> None:
    """A short bearer token is guessable."""
    with pytest.raises(ValidationError):
        WatchdogConfig.model_validate({"server": {"api_tokens": [{"name": "a", "token": "short"}]}})


def test_config_is_immutable() -> None:
    """A loaded config cannot be changed behind the loader's back (frozen models)."""
    config = WatchdogConfig.model_validate({"policies": [policy()]})
    with pytest.raises(ValidationError):
        config.policies[0].bake = 1.0  # type: ignore[misc]


# --- which policy applies ---------------------------------------------------------------------


def config_with(*policies: dict[str, Any]) -> WatchdogConfig:
    return WatchdogConfig.model_validate({"policies": list(policies)})


def test_match_values_are_globs() -> None:
    """`checkout-*` fits `checkout-api`; matching is case-sensitive and whole-value."""
    p = PolicyConfig.model_validate(policy(match={"service": "checkout-*", "environment": "prod"}))
    assert p.matches({"service": "checkout-api", "environment": "prod"})
    assert not p.matches({"service": "checkout-api", "environment": "prod-eu"})
    assert not p.matches({"service": "Checkout-api", "environment": "prod"})
    assert not p.matches({"service": "my-checkout-api", "environment": "prod"})


def test_match_on_labels_and_missing_fields() -> None:
    """A match key may name a label; an event without that field or label does not match."""
    p = PolicyConfig.model_validate(policy(match={"team": "pay*"}))
    assert p.matches({"service": "x", "team": "payments"})
    assert not p.matches({"service": "x"})


def test_empty_match_fits_every_event() -> None:
    """A policy without `match` is a catch-all."""
    assert PolicyConfig.model_validate(policy()).matches({"service": "anything"})


def test_first_matching_policy_wins() -> None:
    """Policies are tried in file order; a later, more specific one never overrides an earlier fit."""
    config = config_with(
        policy("prod", {"environment": "prod"}),
        policy("checkout-prod", {"service": "checkout", "environment": "prod"}),
        policy("catch-all"),
    )
    found = config.policy_for({"service": "checkout", "environment": "prod"})
    assert found is not None and found.name == "prod"
    other = config.policy_for({"service": "checkout", "environment": "staging"})
    assert other is not None and other.name == "catch-all"


def test_no_matching_policy_gives_none() -> None:
    """An event no policy fits is recorded, not watched: policy_for says None."""
    config = config_with(policy("prod", {"environment": "prod"}))
    assert config.policy_for({"service": "checkout", "environment": "dev"}) is None
