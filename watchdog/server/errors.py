"""Every error leaves as ``{"error": code, "detail": text}`` JSON (DESIGN §4), never a traceback.

aiohttp answers some bad requests itself (413 for an oversized body, 405, 404) with plain text; the
middleware turns those into the same JSON shape so clients parse one format.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from watchdog.errors import EventRejected, StateConflict

log = structlog.get_logger("watchdog.server")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid",
}


def error_response(status: int, code: str, detail: str) -> web.Response:
    return web.json_response({"error": code, "detail": detail}, status=status)


class ApiError(Exception):
    """Raised by handlers to answer with a JSON error."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except (ApiError, EventRejected) as exc:
        return error_response(exc.status, exc.code, exc.detail)
    except StateConflict as exc:
        return error_response(409, "conflict", str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = exc.reason
        if exc.status == 413:
            detail = "the body is larger than 1 MiB"
        return error_response(exc.status, _CODES.get(exc.status, "error"), detail)
    except Exception as exc:
        log.error("request.crashed", path=request.path, error=repr(exc), exc_info=exc)
        return error_response(500, "internal", "internal error; the daemon's log has the details")
