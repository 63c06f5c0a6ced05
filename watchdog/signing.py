"""The watchdog's request signature, used on incoming generic events and on outgoing hooks.

``X-Watchdog-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>`` with
``X-Watchdog-Timestamp: <unix seconds>`` (DESIGN §4). Binding the timestamp into the MAC lets a
receiver refuse stale requests, so a captured request cannot be replayed after the window.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

TIMESTAMP_HEADER = "X-Watchdog-Timestamp"
SIGNATURE_HEADER = "X-Watchdog-Signature"
MAX_SKEW_SECONDS = 300.0


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def sign_headers(secret: str, body: bytes, now: float) -> dict[str, str]:
    """Headers that sign ``body`` at time ``now``."""
    ts = str(int(now))
    return {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: signature(secret, ts, body)}


def verify(headers: Mapping[str, str], body: bytes, secrets: Iterable[str], now: float) -> str | None:
    """Check a signed request; return None when it is genuine and fresh, else what is wrong.

    Every accepted secret is tried (rotation), each comparison in constant time.
    """
    ts = headers.get(TIMESTAMP_HEADER)
    sig = headers.get(SIGNATURE_HEADER)
    if not ts or not sig:
        return f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header"
    try:
        stamp = int(ts)
    except ValueError:
        return f"{TIMESTAMP_HEADER} is not unix seconds"
    if abs(now - stamp) > MAX_SKEW_SECONDS:
        return f"{TIMESTAMP_HEADER} is more than {int(MAX_SKEW_SECONDS)} s away from now"
    given = sig.encode("utf-8", "surrogateescape")  # header text may hold anything; compare bytes
    if not any(hmac.compare_digest(signature(s, ts, body).encode(), given) for s in secrets):
        return "signature does not match"
    return None
