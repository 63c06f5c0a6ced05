"""The HTTP helpers the adapters share (:mod:`providers._http`): what a person reads about a failed
call, and how long the other side asked us to wait."""

from __future__ import annotations

import pytest

from providers import _http
from watchdog.errors import PermanentError, TemporaryError

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://ops:pa55@ci.example/rb?token=abc&x=1#frag",
            "https://ci.example/rb?token=***&x=***",
        ),
        ("http://127.0.0.1:8080/hook", "http://127.0.0.1:8080/hook"),
        ("http://[::1]:9000/h?k=v", "http://[::1]:9000/h?k=***"),
        ("http://host:notaport/x", "<malformed URL>"),
    ],
)
def test_redact_url_hides_credentials_and_query_values(url: str, shown: str) -> None:
    """Messages are logged and posted to Slack; they show where, never the secrets in a URL."""
    assert _http.redact_url(url) == shown


def test_redact_url_can_hide_a_token_in_the_path() -> None:
    """A Slack webhook's credential is the last path segment."""
    url = "https://hooks.slack.com/services/T000/B000/XXXXsecret"
    assert _http.redact_url(url, hide_last_segment=True) == (
        "https://hooks.slack.com/services/T000/B000/…"
    )


@pytest.mark.parametrize(
    ("header", "delay"),
    [
        (None, None),
        ("", None),
        ("12", 12.0),
        (" 1.5 ", 1.5),
        ("-3", 0.0),
        ("Tue, 14 Nov 2023 22:13:40 GMT", 20.0),  # NOW is 22:13:20 UTC
        ("Tue, 14 Nov 2023 22:00:00 GMT", 0.0),  # already past
        ("soon", None),
        ("nan", None),
    ],
)
def test_retry_after_reads_seconds_and_dates(header: str | None, delay: float | None) -> None:
    """Retry-After is seconds or an HTTP date; anything unreadable gives no hint, not a crash."""
    assert _http.retry_after(header, NOW) == delay


def test_status_error_maps_classes() -> None:
    """429 and 5xx are worth a retry with the server's delay; other statuses are not."""
    endpoint = _http.Endpoint(what="notifier 'x'", url="https://x.example/h", timeout=10.0)
    temporary = endpoint.status_error(
        _http.Answer(
            status=429,
            reason="Too Many Requests",
            body="slow down",
            headers={"Retry-After": "4"},
        ),
        now=NOW,
    )
    assert isinstance(temporary, TemporaryError)
    assert temporary.delay == 4.0
    permanent = endpoint.status_error(
        _http.Answer(status=422, reason=None, body="  missing\n  field  "),
        now=NOW,
        hint="Fix it",
    )
    assert isinstance(permanent, PermanentError)
    assert str(permanent) == (
        "notifier 'x': POST https://x.example/h answered 422: missing field. Fix it"
    )


def test_clip_and_excerpt_stay_within_bounds() -> None:
    """Long texts end with an ellipsis at exactly the limit; an empty body says so."""
    assert _http.clip("abcdef", 4) == "abc…"
    assert len(_http.excerpt("w " * 500)) == 200
    assert _http.excerpt("   ") == "(empty body)"
