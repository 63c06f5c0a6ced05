"""Local stand-ins for the Unleash admin API and the LaunchDarkly REST API, as far as turning a flag
off goes. They check what the documented APIs check and answer what they document:

- Unleash (operation ``toggleFeatureEnvironmentOff``): ``POST /api/admin/projects/{projectId}/
  features/{featureName}/environments/{environment}/off``; ``Authorization`` holds the token itself;
  200 with the feature (``environments: [{"name", "enabled"}]``; ``legacy`` answers 200 with no body,
  as older servers do), 401 without a valid token, 403 for a token without the permission, 404 for an
  unknown project, feature or environment. Errors are ``{"id", "name", "message"}``.
- LaunchDarkly (``PATCH /api/v2/flags/{projectKey}/{featureFlagKey}``): ``Authorization`` holds the
  access token itself; the body must be a semantic patch (``Content-Type: application/json;
  domain-model=launchdarkly.semanticpatch``, else 400 as the docs warn) with ``environmentKey`` and
  ``instructions``; 200 with the flag (``environments: {key: {"on": bool}}``), 401, 403, 404, 400.
  Errors are ``{"code", "message", "id"}``.

``replies`` lets a test put canned answers (429 with rate-limit headers, 409, 5xx, a hang) in front.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

SEMANTIC_PATCH = "application/json; domain-model=launchdarkly.semanticpatch"


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Canned:
    status: int = 200
    body: str = "{}"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


def _segments(request: web.Request) -> list[str]:
    """The path's segments, each decoded after splitting (as the real routers match them), so an
    encoded `/` stays inside its segment."""
    path = request.raw_path.split("?", 1)[0]
    return [urllib.parse.unquote(part) for part in path.strip("/").split("/")]


class FlagServer:
    """Common plumbing: a loopback server that records requests and serves canned replies first."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.read_only_tokens: set[str] = set()
        self.requests: list[Seen] = []
        self.replies: list[Canned] = []
        self.release = asyncio.Event()
        self.url = ""
        self._server: TestServer | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._server = TestServer(app, host="127.0.0.1", port=0)
        await self._server.start_server()
        self.url = str(self._server.make_url("")).rstrip("/")

    async def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            await self._server.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            Seen(request.method, request.raw_path, dict(request.headers), await request.read())
        )
        if self.replies:
            canned = self.replies.pop(0)
            if canned.hang:
                await self.release.wait()
            return web.Response(
                status=canned.status,
                text=canned.body,
                content_type="application/json",
                headers=canned.headers,
            )
        return await self.answer(request)

    async def answer(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError


class FakeUnleash(FlagServer):
    """``features[project][feature][environment] = enabled``."""

    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.features: dict[str, dict[str, dict[str, bool]]] = {}
        self.legacy = False

    @staticmethod
    def _error(status: int, name: str, message: str) -> web.Response:
        body = {"id": str(uuid.uuid4()), "name": name, "message": message}
        return web.json_response(body, status=status)

    async def answer(self, request: web.Request) -> web.StreamResponse:
        parts = _segments(request)
        # api admin projects {p} features {f} environments {e} off
        if (
            request.method != "POST"
            or len(parts) != 9
            or parts[:3] != ["api", "admin", "projects"]
            or parts[4] != "features"
            or parts[6] != "environments"
            or parts[8] not in ("on", "off")
        ):
            return self._error(404, "NotFoundError", f"Could not find {request.method} {request.path}")
        token = request.headers.get("Authorization")
        if token not in {self.token, *self.read_only_tokens}:
            return self._error(
                401,
                "AuthenticationRequired",
                "Authorization information is missing or invalid. Provide a valid API token as the "
                "`authorization` header, e.g. `authorization:*.*.my-admin-token`.",
            )
        if token in self.read_only_tokens:
            return self._error(
                403,
                "NoAccessError",
                "You don't have the required permissions to perform this operation. You need the "
                '"UPDATE_FEATURE_ENVIRONMENT" permission',
            )
        project, feature, environment = parts[3], parts[5], parts[7]
        environments = self.features.get(project, {}).get(feature)
        if environments is None:
            return self._error(
                404, "NotFoundError", f"Could not find feature flag {feature} in project {project}"
            )
        if environment not in environments:
            return self._error(404, "NotFoundError", f"Could not find environment {environment}")
        environments[environment] = parts[8] == "on"
        if self.legacy:
            return web.Response(status=200)
        return web.json_response(
            {
                "name": feature,
                "project": project,
                "environments": [{"name": e, "enabled": on} for e, on in environments.items()],
            }
        )


class FakeLaunchDarkly(FlagServer):
    """``flags[project][flag][environment] = on``; ``approval_required`` keeps flags on (an
    environment whose changes wait for approval) while still answering 200."""

    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.flags: dict[str, dict[str, dict[str, bool]]] = {}
        self.approval_required: set[str] = set()

    @staticmethod
    def _error(status: int, code: str, message: str) -> web.Response:
        return web.json_response({"code": code, "message": message, "id": str(uuid.uuid4())}, status=status)

    async def answer(self, request: web.Request) -> web.StreamResponse:
        parts = _segments(request)
        if request.method != "PATCH" or len(parts) != 5 or parts[:3] != ["api", "v2", "flags"]:
            return self._error(
                405 if parts[:3] == ["api", "v2", "flags"] else 404, "not_found", "Unknown route"
            )
        token = request.headers.get("Authorization")
        if token not in {self.token, *self.read_only_tokens}:
            return self._error(401, "unauthorized", "Invalid access token")
        if token in self.read_only_tokens:
            return self._error(403, "forbidden", "Access to the requested resource was denied")
        project, key = parts[3], parts[4]
        environments = self.flags.get(project, {}).get(key)
        if environments is None:
            return self._error(404, "not_found", "Unknown resource")
        if "domain-model=launchdarkly.semanticpatch" not in request.headers.get("Content-Type", ""):
            return self._error(400, "invalid_request", "Invalid JSON patch: expected an array of operations")
        try:
            patch = await request.json()
        except ValueError:
            return self._error(400, "invalid_request", "Invalid JSON")
        environment = patch.get("environmentKey")
        instructions = patch.get("instructions")
        if not isinstance(instructions, list) or not instructions:
            return self._error(400, "invalid_request", "instructions are required")
        if environment not in environments:
            return self._error(400, "invalid_request", f"Environment {environment!r} not found")
        for instruction in instructions:
            kind = instruction.get("kind") if isinstance(instruction, dict) else None
            if kind not in ("turnFlagOn", "turnFlagOff"):
                return self._error(400, "invalid_request", f"Unknown instruction kind {kind!r}")
            if environment not in self.approval_required:
                environments[environment] = kind == "turnFlagOn"
        return web.json_response(
            {
                "key": key,
                "environments": {
                    e: {"on": on, "_environmentName": e.title()} for e, on in environments.items()
                },
            }
        )
