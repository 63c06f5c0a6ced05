"""The request signature (watchdog.signing, DESIGN §4): HMAC-SHA256 over "<timestamp>.<raw body>",
refused when wrong, tampered, more than 300 s off, malformed or missing; several secrets during a
rotation."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from watchdog.signing import (
    MAX_SKEW_SECONDS,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign_headers,
    signature,
    verify,
)

NOW = 1_700_000_000.0
SECRET = "webhook-secret"
BODY = b'{"id": "evt-1", "service": "checkout", "version": "v2"}'


def test_signature_is_the_documented_hmac() -> None:
    """`sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>`, so any CD tool can sign."""
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert signature(SECRET, "1700000000", BODY) == f"sha256={expected}"
    assert sign_headers(SECRET, BODY, NOW) == {
        TIMESTAMP_HEADER: "1700000000",
        SIGNATURE_HEADER: f"sha256={expected}",
    }


def test_header_names() -> None:
    """The header names are part of the contract."""
    assert (TIMESTAMP_HEADER, SIGNATURE_HEADER) == ("X-Watchdog-Timestamp", "X-Watchdog-Signature")


def test_round_trip() -> None:
    """What sign_headers produces, verify accepts."""
    assert verify(sign_headers(SECRET, BODY, NOW), BODY, [SECRET], NOW) is None


def test_wrong_secret_is_refused() -> None:
    """Signed with another secret: refused."""
    assert verify(sign_headers("other", BODY, NOW), BODY, [SECRET], NOW) == "signature does not match"


def test_tampered_body_is_refused() -> None:
    """One byte changed in the body after signing: refused."""
    headers = sign_headers(SECRET, BODY, NOW)
    assert verify(headers, BODY.replace(b"v2", b"v3"), [SECRET], NOW) == "signature does not match"


def test_timestamp_is_covered_by_the_signature() -> None:
    """Moving the timestamp (to refresh a captured request) breaks the signature."""
    headers = sign_headers(SECRET, BODY, NOW - 1000)
    headers[TIMESTAMP_HEADER] = str(int(NOW))
    assert verify(headers, BODY, [SECRET], NOW) == "signature does not match"


@pytest.mark.parametrize("offset", [-301, 301, -3600, 86400])
def test_stale_or_future_timestamp_is_refused(offset: float) -> None:
    """More than 300 s off in either direction is refused, even with a genuine signature."""
    headers = sign_headers(SECRET, BODY, NOW + offset)
    problem = verify(headers, BODY, [SECRET], NOW)
    assert problem is not None and "300 s" in problem


@pytest.mark.parametrize("offset", [-MAX_SKEW_SECONDS, 0, MAX_SKEW_SECONDS])
def test_timestamp_within_the_window_is_accepted(offset: float) -> None:
    """Up to and including 300 s of skew is accepted (clocks drift, queues delay)."""
    assert verify(sign_headers(SECRET, BODY, NOW + offset), BODY, [SECRET], NOW) is None


@pytest.mark.parametrize("stamp", ["soon", "1700000000.5", "1.7e9", "0x10"])
def test_non_numeric_timestamp_is_refused(stamp: str) -> None:
    """A timestamp that is not whole unix seconds is refused before any MAC is computed."""
    headers = {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: signature(SECRET, stamp, BODY)}
    assert verify(headers, BODY, [SECRET], NOW) == f"{TIMESTAMP_HEADER} is not unix seconds"


def test_rotation_accepts_any_listed_secret() -> None:
    """During a rotation both the new and the old secret are accepted, in any order."""
    old_signed = sign_headers("old-secret", BODY, NOW)
    assert verify(old_signed, BODY, ["new-secret", "old-secret"], NOW) is None
    assert verify(sign_headers("new-secret", BODY, NOW), BODY, ["new-secret", "old-secret"], NOW) is None
    assert verify(old_signed, BODY, ["new-secret"], NOW) == "signature does not match"


def test_no_secrets_accepts_nothing() -> None:
    """An empty list of secrets never verifies (no secret is not "any secret")."""
    assert verify(sign_headers(SECRET, BODY, NOW), BODY, [], NOW) == "signature does not match"


@pytest.mark.parametrize("missing", [TIMESTAMP_HEADER, SIGNATURE_HEADER])
def test_missing_header_is_refused(missing: str) -> None:
    """Without either header the request is refused, saying which headers are needed."""
    headers = sign_headers(SECRET, BODY, NOW)
    del headers[missing]
    problem = verify(headers, BODY, [SECRET], NOW)
    assert problem is not None and problem.startswith("missing ")
    assert verify({}, BODY, [SECRET], NOW) == problem


def test_empty_headers_are_missing() -> None:
    """Present but empty headers count as missing."""
    assert verify({TIMESTAMP_HEADER: "", SIGNATURE_HEADER: ""}, BODY, [SECRET], NOW) is not None


def test_signature_without_prefix_is_refused() -> None:
    """The bare hex digest (no `sha256=`) does not match: the format is exact."""
    headers = sign_headers(SECRET, BODY, NOW)
    headers[SIGNATURE_HEADER] = headers[SIGNATURE_HEADER].removeprefix("sha256=")
    assert verify(headers, BODY, [SECRET], NOW) == "signature does not match"
