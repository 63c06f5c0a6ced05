"""The HTTP API (DESIGN §4): webhook intake, deployment reads, health, metrics."""

from __future__ import annotations

import hmac

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from watchdog import __version__
from watchdog.errors import EventRejected
from watchdog.model import Deployment, State, Verdict
from watchdog.ports import GateSource, IncomingEvent
from watchdog.runtime import Runtime
from watchdog.server.errors import ApiError, json_errors

log = structlog.get_logger("watchdog.server")

MAX_BODY = 1024 * 1024
RUNTIME = web.AppKey("runtime", Runtime)
_ROLES = {"viewer": 1, "operator": 2, "admin": 3}


def create_app(runtime: Runtime) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[json_errors])
    app[RUNTIME] = runtime
    app.router.add_post("/v1/events/{source}", receive_event)
    app.router.add_get("/v1/deployments", list_deployments)
    app.router.add_get("/v1/deployments/{id}", get_deployment)
    app.router.add_get("/v1/deployments/{id}/verdict", deployment_verdict)
    app.router.add_get("/v1/verdict", verdict_by_version)
    app.router.add_post("/v1/gates/flagger/{gate}", flagger_gate)
    app.router.add_get("/v1/providers", list_providers)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def receive_event(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    name = request.match_info["source"]
    source = rt.sources.get(name)
    if source is None:
        known = ", ".join(sorted(rt.sources))
        raise ApiError(404, "unknown_source", f"no source {name!r} (known: {known})")
    incoming = await _incoming(request, name)
    try:
        event = source.parse(incoming)
    except EventRejected as exc:
        rt.metrics.events.labels(source=name, outcome="rejected").inc()
        log.warning("event.rejected", source=name, status=exc.status, code=exc.code, detail=exc.detail)
        raise
    if event is None:
        rt.metrics.events.labels(source=name, outcome="ignored").inc()
        log.info("event.ignored", source=name)
        return web.Response(status=204)
    deployment, created = await rt.supervisor.submit(event)
    outcome = "created" if created else "duplicate"
    rt.metrics.events.labels(source=name, outcome=outcome).inc()
    log.info(f"event.{outcome}", source=name, event_id=event.event_id, deployment_id=deployment.id)
    return web.json_response(
        {"deployment_id": deployment.id, "duplicate": not created, "state": deployment.state.value},
        status=202 if created else 200,
    )


async def _incoming(request: web.Request, source: str) -> IncomingEvent:
    """The request as a source sees it, with that source's secrets; 413 above 1 MiB."""
    rt = request.app[RUNTIME]
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "body_too_large", "the body is larger than 1 MiB")
    body = await request.read()
    server = rt.loaded.config.server
    return IncomingEvent(
        headers=request.headers,
        body=body,
        secrets=tuple(server.webhook_secrets.get(source, ())),
        allow_unsigned=source in server.allow_unsigned,
        now=rt.clock.now(),
    )


async def flagger_gate(request: web.Request) -> web.Response:
    """Flagger's ``confirm-promotion`` and ``rollback`` webhooks (DESIGN §4). Flagger acts on the
    status code alone: promotion gets 200 only once the watch of that canary passed, rollback gets
    200 only when the watchdog decided the canary fails. Anything else is 409 with the verdict, so
    Flagger waits (promotion) or carries on (rollback)."""
    rt = request.app[RUNTIME]
    gate = request.match_info["gate"]
    if gate not in ("promotion", "rollback"):
        raise ApiError(404, "not_found", f"no Flagger gate {gate!r} (promotion or rollback)")
    source = rt.sources.get("flagger")
    if not isinstance(source, GateSource):
        raise ApiError(404, "unknown_source", "the flagger source is not installed")
    key = source.identify(await _incoming(request, "flagger"))
    deployment = await _find(rt, key.service, key.environment, key.version)
    if deployment is None:
        raise ApiError(
            404,
            "not_found",
            f"no watch of canary {key.service} in {key.environment} at revision {key.version}",
        )
    answer = verdict_of(deployment)
    wanted = "pass" if gate == "promotion" else "fail"
    log.info("gate.flagger", gate=gate, deployment_id=deployment.id, verdict=answer["verdict"])
    return web.json_response(answer, status=200 if answer["verdict"] == wanted else 409)


async def _find(rt: Runtime, service: str, environment: str | None, version: str) -> Deployment | None:
    """The newest deployment of that service (and environment) at ``version``."""
    cursor: str | None = None
    while True:
        page = await rt.store.page(service=service, environment=environment, limit=100, cursor=cursor)
        for deployment in page.items:
            if deployment.version == version:
                return deployment
        if page.next is None:
            return None
        cursor = page.next


def require(request: web.Request, role: str) -> str:
    """The token's name, after checking it grants ``role``; 401/403 otherwise."""
    server = request.app[RUNTIME].loaded.config.server
    if role == "viewer" and server.public_reads:
        return "public"
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
    match = None
    for candidate in server.api_tokens:  # compare against all, in constant time each
        if hmac.compare_digest(candidate.token.encode(), token.strip().encode()):
            match = candidate
    if match is None:
        raise ApiError(401, "unauthorized", "the bearer token is not valid")
    if _ROLES[match.role] < _ROLES[role]:
        raise ApiError(403, "forbidden", f"this needs the {role} role; token {match.name!r} is {match.role}")
    return match.name


async def list_deployments(request: web.Request) -> web.Response:
    require(request, "viewer")
    q = request.query
    state = q.get("state") or None
    if state is not None and state not in {s.value for s in State}:
        raise ApiError(
            400, "bad_request", f"state {state!r} is not one of {', '.join(s.value for s in State)}"
        )
    try:
        limit = int(q.get("limit", "50"))
    except ValueError:
        raise ApiError(400, "bad_request", "limit must be a whole number") from None
    if not 1 <= limit <= 500:
        raise ApiError(400, "bad_request", "limit must be between 1 and 500")
    cursor = q.get("cursor") or None
    if cursor is not None and not cursor.isdigit():
        raise ApiError(400, "bad_request", "cursor is not one this API returned")
    page = await request.app[RUNTIME].store.page(
        state=state,
        service=q.get("service") or None,
        environment=q.get("environment") if "environment" in q else None,
        limit=limit,
        cursor=cursor,
    )
    return web.json_response({"items": [d.to_json() for d in page.items], "next": page.next})


async def _deployment(request: web.Request) -> Deployment:
    deployment = await request.app[RUNTIME].store.get(request.match_info["id"])
    if deployment is None:
        raise ApiError(404, "not_found", f"no deployment {request.match_info['id']!r}")
    return deployment


async def get_deployment(request: web.Request) -> web.Response:
    require(request, "viewer")
    return web.json_response((await _deployment(request)).to_json())


def verdict_of(deployment: Deployment) -> dict[str, str]:
    """``pass | fail | pending`` for CD gates: anything not decided yet, or undecidable, is pending
    so a gate waits rather than promoting blind."""
    if deployment.verdict is Verdict.PASS:
        verdict = "pass"
    elif deployment.verdict is Verdict.FAIL:
        verdict = "fail"
    else:
        verdict = "pending"
    return {
        "verdict": verdict,
        "deployment_id": deployment.id,
        "state": deployment.state.value,
        "reason": deployment.reason,
    }


async def deployment_verdict(request: web.Request) -> web.Response:
    require(request, "viewer")
    return web.json_response(verdict_of(await _deployment(request)))


async def verdict_by_version(request: web.Request) -> web.Response:
    require(request, "viewer")
    q = request.query
    missing = [k for k in ("service", "version") if not q.get(k)]
    if missing:
        raise ApiError(400, "bad_request", f"missing query parameter(s): {', '.join(missing)}")
    deployment = await _find(request.app[RUNTIME], q["service"], q.get("environment"), q["version"])
    if deployment is None:
        raise ApiError(404, "not_found", "no deployment of that service, environment and version")
    return web.json_response(verdict_of(deployment))


async def list_providers(request: web.Request) -> web.Response:
    """Each metrics provider's health as the core saw it: when it last answered, with data or
    without, and why it last failed."""
    require(request, "viewer")
    return web.json_response({"providers": request.app[RUNTIME].health.snapshot()})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__})


async def readyz(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    try:
        await rt.store.ping()
    except Exception as exc:
        return web.json_response({"status": "not ready", "detail": f"store: {exc}"}, status=503)
    if not rt.supervisor.healthy():
        return web.json_response(
            {"status": "not ready", "detail": "watch supervisor not running"}, status=503
        )
    return web.json_response({"status": "ready", "watches": len(rt.supervisor.watches)})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[RUNTIME].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
