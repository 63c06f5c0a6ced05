"""Every source, authenticated, fed bodies no CD tool sends: each is a 4xx with a code and a detail
naming the problem, never an exception the server would turn into a 500."""

from __future__ import annotations

import time

import pytest

from tests.sources.conftest import Build
from tests.support.sources import NOW, SECRET, credentials, incoming
from watchdog.errors import EventRejected

SOURCES = ["generic", "github", "gitlab", "flagger", "argocd", "codedeploy", "spinnaker"]

BODIES = {
    "not JSON": (b"{not json", 400, "not JSON"),
    "empty": (b"", 400, "not JSON"),
    "an array": (b"[1, 2]", 400, "JSON object"),
    "a string": (b'"deploy"', 400, "JSON object"),
    "invalid UTF-8": (b'{"a": "\xff\xfe"}', 400, "not JSON"),
    "NaN": (b'{"a": NaN}', 400, "NaN"),
    "a 5000-digit number": (b'{"a": ' + b"9" * 5000 + b"}", 400, "not JSON"),
    "nesting past the recursion limit": (b"[" * 100_000 + b"]" * 100_000, 400, "nested"),
    "objects nested 200 deep": (b'{"a": ' * 200 + b"1" + b"}" * 200, 400, "deeper than 64"),
    "arrays nested 65 deep": (b'{"a": ' + b"[" * 64 + b"]" * 64 + b"}", 400, "deeper than 64"),
}


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("case", list(BODIES))
def test_malformed_bodies_are_400_naming_the_problem(build: Build, source: str, case: str) -> None:
    """Malformed, hostile or absurdly nested JSON: 400 with a detail saying what is wrong."""
    body, status, words = BODIES[case]
    with pytest.raises(EventRejected) as info:
        build(source).parse(incoming(body, credentials(source, body), secrets=(SECRET,), now=_now(source)))
    assert info.value.status == status
    assert words in info.value.detail


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("ctype", ["text/plain", "application/octet-stream", None])
def test_bodies_not_declared_json_are_415(build: Build, source: str, ctype: str | None) -> None:
    """A body sent as text, bytes or with no Content-Type: 415 naming what arrived."""
    body = b"{}"
    with pytest.raises(EventRejected) as info:
        build(source).parse(
            incoming(body, credentials(source, body), secrets=(SECRET,), content_type=ctype, now=_now(source))
        )
    assert (info.value.status, info.value.code) == (415, "unsupported_media_type")
    assert (ctype or "missing") in info.value.detail


@pytest.mark.parametrize("source", SOURCES)
def test_an_empty_object_is_4xx_and_names_what_is_missing(build: Build, source: str) -> None:
    """`{}` parses but is no deploy: 422 with a detail naming the missing fields."""
    body = b"{}"
    with pytest.raises(EventRejected) as info:
        build(source).parse(incoming(body, credentials(source, body), secrets=(SECRET,), now=_now(source)))
    assert info.value.status == 422
    assert "required" in info.value.detail or "missing" in info.value.detail


def _now(source: str) -> float:
    """The generic signature carries the wall clock; the other sources ignore ``now``."""
    return time.time() if source == "generic" else NOW


CREDENTIAL_HEADERS = {
    "generic": "X-Watchdog-Signature",
    "github": "X-Hub-Signature-256",
    "gitlab": "X-Gitlab-Token",
    "flagger": "Authorization",
    "argocd": "Authorization",
    "codedeploy": "X-Watchdog-Signature",
    "spinnaker": "Authorization",
}


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("value", ["sha256=é", "Bearer ü-token", "\udcff\udcfe"])
def test_non_ascii_and_undecodable_credentials_are_401(build: Build, source: str, value: str) -> None:
    """A credential header with non-ASCII text, or bytes that are not UTF-8 (aiohttp passes them on
    as surrogates), is a wrong credential: 401, never a TypeError or UnicodeError."""
    body = b"{}"
    headers = {**credentials(source, body), CREDENTIAL_HEADERS[source]: value}
    with pytest.raises(EventRejected) as info:
        build(source).parse(incoming(body, headers, secrets=(SECRET, "sécret"), now=_now(source)))
    assert info.value.status == 401
