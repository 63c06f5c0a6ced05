"""What moto's CodeDeploy lacks, put in front of moto's server for the tests only.

moto 5 serves CreateApplication, CreateDeploymentGroup, CreateDeployment, GetDeployment,
BatchGetDeployments and ListDeployments from its own state, and the adapter's calls go to it as they
would go to AWS. Two things are missing: ``StopDeployment`` is not implemented (moto answers 500), and
deployments have no lifecycle (every one stays ``Created`` forever, with empty ``rollbackInfo``).

:class:`CodeDeployGaps` is a small HTTP proxy that forwards every request to ``moto_server`` and
passes moto's answer back, except for exactly those gaps:

- ``StopDeployment`` is answered here, with the body AWS publishes (``codedeploy_fixtures/
  stop-deployment.response.json``) or ``DeploymentAlreadyCompletedException`` for a finished
  deployment; with ``autoRollbackEnabled`` it does what CodeDeploy documents: it creates (in moto) a
  deployment of the group's last successful earlier revision and names it in the stopped deployment's
  ``rollbackInfo.rollbackDeploymentId``;
- deployment statuses follow a script per deployment: each ``GetDeployment`` shows the head of the
  script and moves on (the last status sticks); ``BatchGetDeployments`` shows the current status
  without moving; ``ListDeployments``' ``includeOnlyStatuses`` is applied to those statuses. Fields
  CodeDeploy fills in as a deployment runs (``rollbackInfo``, ``errorInformation``, ``creator``) are
  overlaid the same way;
- faults on demand: the next call of an operation answers an AWS error (AccessDenied, throttling,
  5xx) or hangs, as a test asks.

Everything else (ids, revisions, descriptions, create times, groups, moto's own errors such as
``DeploymentDoesNotExistException``) is moto's. The adapter itself knows nothing of this proxy.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

FIXTURES: Final = Path(__file__).parent / "codedeploy_fixtures"
PREFIX: Final = "CodeDeploy_20141006."
JSON: Final = "application/x-amz-json-1.1"
TERMINAL: Final = frozenset({"Succeeded", "Failed", "Stopped"})


@dataclass
class Fault:
    """An AWS error answer (JSON protocol: ``__type`` and ``message``), or a hang."""

    status: int = 400
    code: str = "AccessDeniedException"
    message: str = ""
    hang: bool = False


class CodeDeployGaps:
    """``async with CodeDeployGaps(moto.url) as aws: aws.url``."""

    def __init__(self, moto_url: str) -> None:
        self.moto_url = moto_url.rstrip("/")
        self.url = ""
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.created: list[str] = []
        self.scripts: dict[str, list[str]] = {}
        self.overlay: dict[str, dict[str, Any]] = defaultdict(dict)
        self.next_scripts: list[list[str]] = []
        self.next_fields: list[dict[str, Any]] = []
        self.default_script: list[str] = ["InProgress", "Succeeded"]
        self.rollback_script: list[str] = ["InProgress", "Succeeded"]
        self.faults: dict[str, list[Fault]] = defaultdict(list)
        self.release = asyncio.Event()
        self.seen: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._server: TestServer | None = None
        self._session: aiohttp.ClientSession | None = None

    # --- what tests use ----------------------------------------------------------------------

    def ops(self, name: str) -> list[dict[str, Any]]:
        """The parameters of every call of operation ``name`` the adapter made, in order."""
        return [params for op, params in self.calls if op == name]

    def forget_calls(self) -> None:
        """Start recording afresh (after a test's own setup)."""
        self.calls.clear()
        self.created.clear()
        self.seen.clear()

    def status(self, deployment_id: str) -> str:
        script = self.scripts.get(deployment_id)
        return script[0] if script else "Created"

    def script(self, deployment_id: str, *statuses: str, **fields: Any) -> None:
        """Make ``deployment_id`` show ``statuses`` on successive reads, and ``fields`` always."""
        self.scripts[deployment_id] = list(statuses)
        self.overlay[deployment_id].update(fields)

    def fail(self, operation: str, fault: Fault) -> None:
        """Answer the next call of ``operation`` with ``fault``."""
        self.faults[operation].append(fault)

    # --- the server ----------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._server = TestServer(app, host="127.0.0.1", port=0)
        await self._server.start_server()
        self.url = str(self._server.make_url("")).rstrip("/")
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        self.release.set()
        if self._session is not None:
            await self._session.close()
        if self._server is not None:
            await self._server.close()

    async def __aenter__(self) -> CodeDeployGaps:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        target = request.headers.get("X-Amz-Target", "")
        operation = target.removeprefix(PREFIX)
        params = json.loads(body) if body else {}
        self.calls.append((operation, params))
        self.seen[operation].set()
        if self.faults.get(operation):
            fault = self.faults[operation].pop(0)
            if fault.hang:
                await self.release.wait()
            return _error(fault.status, fault.code, fault.message or f"{fault.code} (injected by the test)")
        auth = request.headers.get("Authorization", "")
        if operation == "StopDeployment":
            return await self._stop_deployment(params, auth)
        if operation == "ListDeployments" and params.get("includeOnlyStatuses"):
            wanted = set(params.pop("includeOnlyStatuses"))
            status, answer = await self._moto("ListDeployments", params, auth)
            if status == 200:
                answer["deployments"] = [d for d in answer["deployments"] if self.status(d) in wanted]
            return _json(status, answer)
        status, answer = await self._moto(operation, params, auth)
        if status == 200:
            if operation == "CreateDeployment":
                script = self.next_scripts.pop(0) if self.next_scripts else list(self.default_script)
                self.scripts[answer["deploymentId"]] = script
                if self.next_fields:
                    self.overlay[answer["deploymentId"]].update(self.next_fields.pop(0))
                self.created.append(answer["deploymentId"])
            elif operation == "GetDeployment":
                self._show(answer["deploymentInfo"], advance=True)
            elif operation == "BatchGetDeployments":
                for info in answer["deploymentsInfo"]:
                    self._show(info, advance=False)
        return _json(status, answer)

    def _show(self, info: dict[str, Any], *, advance: bool) -> None:
        deployment_id = info["deploymentId"]
        info["status"] = self.status(deployment_id)
        info.update(copy.deepcopy(self.overlay.get(deployment_id, {})))
        script = self.scripts.get(deployment_id)
        if advance and script and len(script) > 1:
            script.pop(0)

    async def _moto(self, operation: str, params: dict[str, Any], auth: str) -> tuple[int, Any]:
        assert self._session is not None
        headers = {"X-Amz-Target": PREFIX + operation, "Content-Type": JSON, "Authorization": auth}
        async with self._session.post(self.moto_url + "/", data=json.dumps(params), headers=headers) as r:
            text = await r.text()
            return r.status, (json.loads(text) if text else {})

    async def _stop_deployment(self, params: dict[str, Any], auth: str) -> web.Response:
        deployment_id = params["deploymentId"]
        status, answer = await self._moto("GetDeployment", {"deploymentId": deployment_id}, auth)
        if status != 200:
            return _json(status, answer)
        if self.status(deployment_id) in TERMINAL:
            return _error(
                400,
                "DeploymentAlreadyCompletedException",
                f"The deployment {deployment_id} has already completed.",
            )
        info = answer["deploymentInfo"]
        self.scripts[deployment_id] = ["Stopped"]
        if params.get("autoRollbackEnabled"):
            good = await self._last_success(info, auth)
            if good is None:
                self.overlay[deployment_id]["rollbackInfo"] = {
                    "rollbackMessage": "No last known good revision to roll back to."
                }
            else:
                _, created = await self._moto(
                    "CreateDeployment",
                    {
                        "applicationName": info["applicationName"],
                        "deploymentGroupName": info["deploymentGroupName"],
                        "revision": good["revision"],
                    },
                    auth,
                )
                rollback_id = created["deploymentId"]
                self.scripts[rollback_id] = list(self.rollback_script)
                self.overlay[rollback_id].update(
                    creator="codeDeployRollback",
                    rollbackInfo={"rollbackTriggeringDeploymentId": deployment_id},
                )
                self.overlay[deployment_id]["rollbackInfo"] = {"rollbackDeploymentId": rollback_id}
        published = json.loads((FIXTURES / "stop-deployment.response.json").read_text())
        return _json(200, published)

    async def _last_success(self, bad: dict[str, Any], auth: str) -> dict[str, Any] | None:
        _, listed = await self._moto(
            "ListDeployments",
            {"applicationName": bad["applicationName"], "deploymentGroupName": bad["deploymentGroupName"]},
            auth,
        )
        ids = [i for i in listed["deployments"] if i != bad["deploymentId"] and self.status(i) == "Succeeded"]
        if not ids:
            return None
        _, found = await self._moto("BatchGetDeployments", {"deploymentIds": ids}, auth)
        earlier = [d for d in found["deploymentsInfo"] if d["createTime"] < bad["createTime"]]
        return max(earlier, key=lambda d: d["createTime"], default=None)


def _json(status: int, document: Any) -> web.Response:
    return web.Response(status=status, text=json.dumps(document), content_type=JSON)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"__type": code, "message": message}),
        content_type=JSON,
        headers={"x-amzn-ErrorType": code},
    )
