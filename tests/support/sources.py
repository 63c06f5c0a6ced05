"""Test helpers for the CD-tool sources: the published payloads, requests built the way each tool
sends them (headers, signatures, tokens), and a raw poster for the daemon's intake."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from watchdog.ports import IncomingEvent
from watchdog.signing import sign_headers

FIXTURES = Path(__file__).resolve().parents[1] / "sources" / "fixtures"
NOW = 1_700_000_000.0


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(fixture_bytes(name))
    return data


def incoming(
    body: bytes | dict[str, Any],
    headers: dict[str, str] | None = None,
    *,
    secrets: tuple[str, ...] = (),
    allow_unsigned: bool = False,
    now: float = NOW,
    content_type: str | None = "application/json",
) -> IncomingEvent:
    """An IncomingEvent as the server builds it: case-insensitive headers, raw bytes."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    h: CIMultiDict[str] = CIMultiDict()
    if content_type is not None:
        h["Content-Type"] = content_type
    h.update(headers or {})
    return IncomingEvent(
        headers=CIMultiDictProxy(h), body=raw, secrets=secrets, allow_unsigned=allow_unsigned, now=now
    )


# --- GitHub -------------------------------------------------------------------------------------


def github_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def github_headers(
    body: bytes, secret: str | None, *, event: str = "deployment_status", delivery: str = "delivery-1"
) -> dict[str, str]:
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "User-Agent": "GitHub-Hookshot/044aadd",
    }
    if secret is not None:
        headers["X-Hub-Signature-256"] = github_signature(secret, body)
    return headers


def github_status(
    state: str = "success", *, sha: str | None = None, environment: str | None = None, **payload: Any
) -> bytes:
    """The published deployment_status delivery, with its state, sha, environment and deployment
    payload changed as asked."""
    data = copy.deepcopy(fixture_json("deployment_status.created.json"))
    data["deployment_status"]["state"] = state
    if sha is not None:
        data["deployment"]["sha"] = sha
    if environment is not None:
        data["deployment"]["environment"] = environment
    data["deployment"]["payload"].update(payload)
    return json.dumps(data).encode()


# --- GitLab, Flagger, CodeDeploy, Argo CD, Spinnaker ---------------------------------------------


def gitlab_hook(status: str = "success", *, deployment_id: int = 15, **changes: Any) -> bytes:
    data = fixture_json("deployment_hook.success.json")
    data.update(status=status, deployment_id=deployment_id, **changes)
    return json.dumps(data).encode()


def gitlab_headers(token: str | None, event: str = "Deployment Hook") -> dict[str, str]:
    headers = {"X-Gitlab-Event": event, "User-Agent": "GitLab/17.1.0-pre"}
    if token is not None:
        headers["X-Gitlab-Token"] = token
    return headers


def flagger_event(
    phase: str = "Progressing",
    *,
    token: str | None = "flagger-token",
    checksum: str = "85d557f47b",
    **meta: str,
) -> bytes:
    """The published Flagger payload as an event webhook sends it (eventMessage, eventType and
    timestamp added to the webhook's own metadata)."""
    data = fixture_json("webhook-payload.rollout.json")
    data.update(phase=phase, checksum=checksum)
    metadata = {k: v for k, v in data["metadata"].items() if k != "token"}
    metadata.update(eventMessage="Advance podinfo.test canary weight 10", eventType="Normal")
    metadata.update(timestamp=str(int(time.time() * 1000)), **meta)
    if token is not None:
        metadata["token"] = token
    data["metadata"] = metadata
    return json.dumps(data).encode()


def codedeploy_event(state: str = "SUCCESS", *, event_id: str | None = None, **detail: str) -> bytes:
    data = fixture_json("eventbridge.deployment-state-change.json")
    data["detail"].update(state=state, **detail)
    if event_id is not None:
        data["id"] = event_id
    return json.dumps(data).encode()


def argocd_body(**changes: Any) -> dict[str, Any]:
    """What config/argocd-notifications.yaml's template renders for a healthy synced app."""
    body: dict[str, Any] = {
        "app": "checkout",
        "app_namespace": "argocd",
        "project": "default",
        "namespace": "shop",
        "cluster": "https://kubernetes.default.svc",
        "phase": "Succeeded",
        "health": "Healthy",
        "revision": "f3937462080c6946ff5ec4b5fa393e7c22388e4c",
        "revisions": None,
        "finished_at": "2024-05-01T10:00:00Z",
        "images": ["registry.example/shop/checkout:2.1.0"],
        "history": [
            {
                "id": 1,
                "revision": "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567",
                "deployedAt": "2024-04-30T10:00:00Z",
            },
            {
                "id": 2,
                "revision": "f3937462080c6946ff5ec4b5fa393e7c22388e4c",
                "deployedAt": "2024-05-01T09:59:00Z",
            },
        ],
    }
    body.update(changes)
    return body


def spinnaker_stage_body(**changes: Any) -> dict[str, Any]:
    """What the webhook stage documented in providers/sources/spinnaker.py posts, SpEL evaluated."""
    body: dict[str, Any] = {
        "application": "checkout",
        "execution_id": "01HX3Y8Q6W8J3ZKX0V9T5B7N2C",
        "version": "2.1.0",
        "environment": "prod",
        "pipeline": "deploy-prod",
    }
    body.update(changes)
    return body


def echo_pipeline_complete(**parameters: str) -> dict[str, Any]:
    """An echo ``orca:pipeline:complete`` event as echo's REST listener forwards it, in the envelope
    of the published echo event (``details`` + ``content``), its execution cut to the fields read."""
    envelope = fixture_json("echo-event.igor-build.first-of-events-json.json")
    envelope["details"].update(source="orca", type="orca:pipeline:complete", application="checkout")
    envelope["content"] = {
        "executionId": "01HX3Y8Q6W8J3ZKX0V9T5B7N2C",
        "execution": {
            "id": "01HX3Y8Q6W8J3ZKX0V9T5B7N2C",
            "type": "PIPELINE",
            "application": "checkout",
            "name": "deploy-prod",
            "status": "SUCCEEDED",
            "trigger": {"type": "manual", "user": "anna", "parameters": {"version": "2.1.0", **parameters}},
            "stages": [{"id": "01HX3Y8Q6W", "type": "deployManifest", "status": "SUCCEEDED"}],
        },
    }
    return envelope


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def generic_headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    return sign_headers(secret, body, time.time() if now is None else now)


# --- the daemon ---------------------------------------------------------------------------------


async def post_raw(
    session: aiohttp.ClientSession,
    base: str,
    source: str,
    body: bytes | dict[str, Any],
    headers: dict[str, str] | None = None,
    *,
    content_type: str | None = "application/json",
) -> tuple[int, Any]:
    """POST exactly these bytes and headers to ``/v1/events/<source>``; the status and the JSON
    answer (None for an empty one)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    h = dict(headers or {})
    if content_type is not None:
        h.setdefault("Content-Type", content_type)
    async with session.post(f"{base}/v1/events/{source}", data=raw, headers=h) as r:
        text = await r.text()
        return r.status, (json.loads(text) if text else None)


SECRET = "s3cret-for-sources-0123"
OLD_SECRET = "old-secret-still-accepted-0123"
ROTATION = (OLD_SECRET, SECRET)
"""A rotation in progress: the old and the new secret are both accepted."""


def credentials(source: str, body: bytes, secret: str = SECRET) -> dict[str, str]:
    """Headers that authenticate ``body`` for ``source`` the way its tool does (Flagger by bearer,
    since a hostile body has no metadata to carry a token), so that what a test checks next is the
    body, not the authentication."""
    if source == "generic":
        return generic_headers(secret, body)
    if source == "github":
        return github_headers(body, secret)
    if source == "gitlab":
        return gitlab_headers(secret)
    return bearer(secret)
