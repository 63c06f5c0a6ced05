"""The CodeDeploy rollback adapter against moto's server (``moto_server``, started by the tests),
through :mod:`tests.providers.rollback.codedeploy_gaps`, which adds what moto lacks (StopDeployment,
deployment lifecycles, injected faults) and nothing else.

Proven against moto: the adapter's requests are ones CodeDeploy's API model accepts (botocore
validates them, moto parses them), the history search (ListDeployments with createTimeRange,
BatchGetDeployments), CreateDeployment of the earlier revision with the marker in its description,
and moto's own errors for unknown deployments. Proven only against the documented API (the proxy):
StopDeployment and its automatic rollback, status transitions, and the error codes AWS documents.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiobotocore.session import AioSession
from botocore.loaders import create_loader

from providers.rollback.codedeploy import CodeDeployRollback
from tests.providers.rollback.codedeploy_gaps import FIXTURES, CodeDeployGaps, Fault
from tests.support.moto_server import MotoServer
from watchdog.errors import PermanentError, TemporaryError
from watchdog.model import DeployEvent, Deployment
from watchdog.plugins import GROUP as ENTRY_POINT_GROUP
from watchdog.ports import RollbackRequest, RollbackTarget

REGION = "eu-west-1"
APP = "checkout-app"
GROUP = "checkout-prod"
ROLE = "arn:aws:iam::123456789012:role/CodeDeployServiceRole"

_LOADER = create_loader()  # botocore's data files, read once for the module's own clients

_AWS_VARIABLES = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_CODEDEPLOY",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
)


def s3(key: str) -> dict[str, Any]:
    return {"revisionType": "S3", "s3Location": {"bucket": "releases", "key": key, "bundleType": "zip"}}


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials from the environment, and nothing else from this machine's AWS setup."""
    for name in _AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def moto() -> AsyncIterator[MotoServer]:
    async with MotoServer() as server:
        yield server


@pytest.fixture
async def aws(moto: MotoServer) -> AsyncIterator[CodeDeployGaps]:
    """moto, emptied, behind the proxy that adds what it lacks."""
    async with aiohttp.ClientSession() as session, session.post(f"{moto.url}/moto-api/reset") as r:
        assert r.status == 200
    async with CodeDeployGaps(moto.url) as gaps:
        yield gaps


@pytest.fixture
async def client(aws: CodeDeployGaps) -> AsyncIterator[Any]:
    """A plain aiobotocore client, for the test's own setup and checks."""
    session = AioSession()
    session.register_component("data_loader", _LOADER)
    async with session.create_client("codedeploy", region_name=REGION, endpoint_url=aws.url) as c:
        yield c


@pytest.fixture
def seed(aws: CodeDeployGaps, client: Any) -> Callable[..., Any]:
    """Create the application, the group and one deployment per (revision, status), in order, and
    forget these calls; returns the deployment ids."""

    async def make(*history: tuple[dict[str, Any], str]) -> list[str]:
        await client.create_application(applicationName=APP, computePlatform="Server")
        await client.create_deployment_group(
            applicationName=APP, deploymentGroupName=GROUP, serviceRoleArn=ROLE
        )
        ids = []
        for revision, status in history:
            created = await client.create_deployment(
                applicationName=APP, deploymentGroupName=GROUP, revision=revision, description="CI deploy"
            )
            aws.script(created["deploymentId"], status)
            ids.append(created["deploymentId"])
        aws.forget_calls()
        return ids

    return make


@pytest.fixture
def make_codedeploy(
    make_adapter: Callable[..., Any], aws: CodeDeployGaps
) -> Callable[..., CodeDeployRollback]:
    def make(**settings: Any) -> CodeDeployRollback:
        settings = {"region": REGION, "url": aws.url, "poll_interval": "15s", "timeout": "10m", **settings}
        adapter: CodeDeployRollback = make_adapter(CodeDeployRollback, "cd", **settings)
        return adapter

    return make


@pytest.fixture
def request_for(make_deployment: Callable[..., Deployment]) -> Callable[..., RollbackRequest]:
    def make(deployment_id: str, **target: Any) -> RollbackRequest:
        event = DeployEvent(
            source="codedeploy",
            event_id="c071bfbf-83c4-49ca-a6ff-3df053957145",
            service=APP,
            version=deployment_id,
            environment=GROUP,
            target={
                "application": APP,
                "deployment_group": GROUP,
                "deployment_id": deployment_id,
                "region": REGION,
                **target,
            },
        )
        deployment = make_deployment(event=event)
        return RollbackRequest(deployment, f"{deployment.id}:rollback", "errors regressed", "watchdog")

    return make


# --- the adapter is found ---------------------------------------------------------------------


def test_registered_as_rollback_type_codedeploy() -> None:
    """`type: codedeploy` under `rollback:` names this adapter in the entry-point group."""
    (entry,) = entry_points(group=ENTRY_POINT_GROUP, name="rollback.codedeploy")
    assert entry.load() is CodeDeployRollback


async def test_is_a_rollback_target(make_codedeploy: Callable[..., CodeDeployRollback]) -> None:
    """The adapter satisfies the core's RollbackTarget port."""
    assert isinstance(make_codedeploy(), RollbackTarget)


# --- a finished deployment: redeploy the last good revision ------------------------------------


async def test_succeeded_deployment_is_rolled_back_by_redeploying_the_last_good_revision(
    seed: Callable[..., Any],
    client: Any,
    aws: CodeDeployGaps,
    make_codedeploy: Callable[..., CodeDeployRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """After a bake the deployment has succeeded: the newest earlier successful deployment with
    another revision is found (a failed one and one with the bad revision are passed over), its
    revision deployed as a new deployment marked with the idempotency key, and awaited."""
    published = json.loads((FIXTURES / "get-deployment.response.json").read_text())
    good_revision = published["deploymentInfo"]["revision"]
    v1, v2, v3_failed, v4_again, bad = await seed(
        (s3("checkout-v1.zip"), "Succeeded"),
        (good_revision, "Succeeded"),
        (s3("checkout-v3.zip"), "Failed"),
        (s3("checkout-v4.zip"), "Succeeded"),
        (s3("checkout-v4.zip"), "Succeeded"),
    )
    del v1, v3_failed
    result = await make_codedeploy().rollback(request_for(bad))
    (create,) = aws.ops("CreateDeployment")
    assert create["applicationName"] == APP and create["deploymentGroupName"] == GROUP
    assert create["revision"] == good_revision
    assert create["description"].startswith("[rollback-watchdog dep-42:rollback] roll back ")
    assert aws.ops("StopDeployment") == []
    new_id = result.data["rollback_deployment_id"]
    stored = (await client.get_deployment(deploymentId=new_id))["deploymentInfo"]
    assert stored["revision"] == good_revision  # moto's own record of the new deployment
    assert result.data["method"] == "redeploy"
    assert result.data["restored_deployment_id"] == v2
    assert result.data["rolled_back_deployment_id"] == bad
    assert v4_again not in result.detail and new_id in result.detail and "Succeeded" in result.detail
    assert result.data["console_url"].startswith(f"https://{REGION}.console.aws.amazon.com/codesuite/")


async def test_a_call_after_a_crash_waits_on_the_deployment_already_created(
    seed: Callable[..., Any],
    aws: CodeDeployGaps,
    make_codedeploy: Callable[..., CodeDeployRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """The core re-sends the same idempotency key after a crash: the adapter finds the deployment
    it created by the marker in its description and waits on it; CreateDeployment is called once."""
    _, bad = await seed((s3("checkout-v1.zip"), "Succeeded"), (s3("checkout-v2.zip"), "Succeeded"))
    aws.next_scripts = [["InProgress"]]
    first = asyncio.create_task(make_codedeploy(timeout="24h").rollback(request_for(bad)))
    await asyncio.wait_for(aws.seen["GetDeployment"].wait(), 5)
    aws.seen["GetDeployment"].clear()
    await asyncio.wait_for(aws.seen["GetDeployment"].wait(), 5)  # polling the created deployment
    first.cancel()  # the daemon dies while the rollback deployment runs
    with pytest.raises(asyncio.CancelledError):
        await first
    (created,) = aws.created
    aws.script(created, "InProgress", "Succeeded")

    result = await make_codedeploy().rollback(request_for(bad))

    assert len(aws.ops("CreateDeployment")) == 1
    assert result.data["rollback_deployment_id"] == created


async def test_nothing_earlier_to_roll_back_to_is_permanent(
    seed: Callable[..., Any],
    aws: CodeDeployGaps,
    make_codedeploy: Callable[..., CodeDeployRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """The group's first deployment, or only earlier ones with the same revision or that failed:
    nothing to redeploy, and the message says so instead of deploying the bad revision again."""
    _, _, bad = await seed(
        (s3("checkout-v1.zip"), "Failed"),
        (s3("checkout-v2.zip"), "Succeeded"),
        (s3("checkout-v2.zip"), "Succeeded"),
    )
    with pytest.raises(PermanentError, match="nothing to roll back to") as caught:
        await make_codedeploy().rollback(request_for(bad))
    assert "Deploy a good revision by hand" in str(caught.value)
    assert aws.ops("CreateDeployment") == []


async def test_a_failing_rollback_deployment_is_permanent_with_the_reason_and_console_link(
    seed: Callable[..., Any],
    aws: CodeDeployGaps,
    make_codedeploy: Callable[..., CodeDeployRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """The rollback deployment fails (the published HEALTH_CONSTRAINTS error): rollback_failed with
    CodeDeploy's code and message and where to look."""
    published = json.loads((FIXTURES / "batch-get-deployments.response.failed.json").read_text())
    error_information = published["deploymentsInfo"][1]["errorInformation"]
    _, bad = await seed((s3("checkout-v1.zip"), "Succeeded"), (s3("checkout-v2.zip"), "Succeeded"))
    aws.next_scripts = [["InProgress", "Failed"]]
    aws.next_fields = [{"errorInformation": error_information}]
    with pytest.raises(PermanentError) as caught:
        await make_codedeploy().rollback(request_for(bad))
    (created,) = aws.created
    message = str(caught.value)
    assert f"rollback deployment {created} Failed" in message
    assert (
        "HEALTH_CONSTRAINTS: Deployment failed: Constraint default violated: No hosts succeeded." in message
    )
    assert f"codedeploy/deployments/{created}?region={REGION}" in message


async def test_a_rollback_deployment_still_running_after_timeout_is_permanent(
    seed: Callable[..., Any],
    aws: CodeDeployGaps,
    make_codedeploy: Callable[..., CodeDeployRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """`timeout` bounds the wait (virtual time here): the message names the deployment, says it
    keeps running and will not be started again."""
    _, bad = await seed((s3("checkout-v1.zip"), "Succeeded"), (s3("checkout-v2.zip"), "Succeeded"))
    aws.next_scripts = [["InProgress"]]
    with pytest.raises(PermanentError, match=r"still InProgress after 60 s \(`timeout`\)") as caught:
        await make_codedeploy(timeout="60s", poll_interval="15s").rollback(request_for(bad))
    assert "will not be started again" in str(caught.value)
    assert len(aws.ops("GetDeployment")) == 1 + 5  # the bad one, then polls at 0, 15, 30, 45, 60 s


# --- a deployment still in flight: stop it with CodeDeploy's automatic rollback ----------------


async def test_in_flight_deployment_is_stopped_with_auto_rollback_and_that_rollback_awaited(
    seed: Callable[..., Any],
    aws: CodeDeployGaps,
    make_codedeploy: Callable[..., CodeDeployRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """A canary judged while CodeDeploy still deploys it: StopDeployment with autoRollbackEnabled,
    then the rollback deployment CodeDeploy names in rollbackInfo is awaited; nothing is created
    by the adapter itself."""
    _, bad = await seed((s3("checkout-v1.zip"), "Succeeded"), (s3("checkout-v2.zip"), "InProgress"))
    result = await make_codedeploy().rollback(request_for(bad))
    assert aws.ops("StopDeployment") == [{"deploymentId": bad, "autoRollbackEnabled": True}]
    assert aws.ops("CreateDeployment") == []
    assert result.data["method"] == "stop" and result.data["stopped_by_watchdog"] is True
    rollback_id = result.data["rollback_deployment_id"]
    assert aws.overlay[rollback_id]["creator"] == "codeDeployRollback"
    assert f"CodeDeploy's rollback deployment {rollback_id} of {bad} Succeeded" in result.detail


async def test_a_deployment_that_completes_before_the_stop_is_redeployed_over(
    seed: Callable[..., Any],
    aws: CodeDeployGaps,
    make_codedeploy: Callable[..., CodeDeployRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """StopDeployment answers DeploymentAlreadyCompletedException (it just succeeded): the adapter
    re-reads it and redeploys the last good revision instead."""
    good, bad = await seed((s3("checkout-v1.zip"), "Succeeded"), (s3("checkout-v2.zip"), "Succeeded"))
    aws.script(bad, "InProgress", "Succeeded")
    result = await make_codedeploy().rollback(request_for(bad))
    assert len(aws.ops("StopDeployment")) == 1
    (create,) = aws.ops("CreateDeployment")
    assert create["revision"] == s3("checkout-v1.zip")
    assert result.data["restored_deployment_id"] == good


async def test_a_deployment_codedeploy_already_rolls_back_is_followed(
    seed: Callable[..., Any],
    aws: CodeDeployGaps,
    make_codedeploy: Callable[..., CodeDeployRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """A failed deployment whose rollbackInfo names CodeDeploy's own rollback deployment (an alarm
    or a failure triggered it, or an earlier call stopped it): the adapter waits on that one and
    neither stops nor creates anything."""
    _, bad, codedeploy_rollback = await seed(
        (s3("checkout-v1.zip"), "Succeeded"),
        (s3("checkout-v2.zip"), "Failed"),
        (s3("checkout-v1.zip"), "InProgress"),
    )
    aws.overlay[bad]["rollbackInfo"] = {"rollbackDeploymentId": codedeploy_rollback}
    aws.script(codedeploy_rollback, "InProgress", "Succeeded")
    result = await make_codedeploy().rollback(request_for(bad))
    assert aws.ops("StopDeployment") == [] and aws.ops("CreateDeployment") == []
    assert result.data == {
        "method": "stop",
        "rolled_back_deployment_id": bad,
        "rollback_deployment_id": codedeploy_rollback,
        "stopped_by_watchdog": False,
        "console_url": result.data["console_url"],
    }


# --- the target ---------------------------------------------------------------------------------


async def test_an_unknown_deployment_is_permanent_with_what_to_check(
    seed: Callable[..., Any],
    make_codedeploy: Callable[..., CodeDeployRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """moto's own DeploymentDoesNotExistException (a 400): permanent, naming the target keys and
    the region to check."""
    await seed()
    with pytest.raises(PermanentError, match="DeploymentDoesNotExistException") as caught:
        await make_codedeploy().rollback(request_for("d-NOPE12345"))
    assert "Check the event's target" in str(caught.value) and REGION in str(caught.value)


async def test_a_target_of_another_group_changes_nothing(
    seed: Callable[..., Any],
    aws: CodeDeployGaps,
    make_codedeploy: Callable[..., CodeDeployRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """The event says one group, the deployment belongs to another: refused before any change."""
    _, bad = await seed((s3("checkout-v1.zip"), "Succeeded"), (s3("checkout-v2.zip"), "Succeeded"))
    with pytest.raises(PermanentError, match="belongs to deployment_group 'checkout-prod'"):
        await make_codedeploy().rollback(request_for(bad, deployment_group="checkout-staging"))
    assert aws.ops("CreateDeployment") == [] and aws.ops("StopDeployment") == []


async def test_a_target_without_deployment_id_or_in_another_region_is_refused_without_a_call(
    aws: CodeDeployGaps,
    make_codedeploy: Callable[..., CodeDeployRollback],
    make_deployment: Callable[..., Deployment],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """A generic event's Kubernetes-style target, or a deployment in another region: permanent,
    saying what the target must carry; AWS is not called."""
    adapter = make_codedeploy()
    k8s = make_deployment()  # target {"namespace", "deployment"}
    with pytest.raises(PermanentError, match="has no `deployment_id` \\(it has: deployment, namespace\\)"):
        await adapter.rollback(RollbackRequest(k8s, "dep-42:rollback", "bad", "watchdog"))
    with pytest.raises(PermanentError, match="is in region us-east-1, this target works in eu-west-1"):
        await adapter.rollback(request_for("d-123456789", region="us-east-1"))
    assert aws.calls == []


# --- credentials and AWS's refusals ----------------------------------------------------------------


async def test_missing_credentials_are_permanent_with_the_chain_to_fill(
    monkeypatch: pytest.MonkeyPatch,
    aws: CodeDeployGaps,
    make_codedeploy: Callable[..., CodeDeployRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """No credentials anywhere in the chain: permanent, naming the ways to provide them; nothing
    reaches AWS."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(PermanentError, match="no usable AWS credentials") as caught:
        await make_codedeploy().rollback(request_for("d-123456789"))
    assert "AWS_PROFILE" in str(caught.value) and "instance role" in str(caught.value)
    assert aws.calls == []


@pytest.mark.parametrize(
    ("operation", "fault", "expected"),
    [
        (
            "GetDeployment",
            Fault(
                400,
                "AccessDeniedException",
                "User: arn:aws:sts::123456789012:assumed-role/wd/i-0 is not "
                "authorized to perform: codedeploy:GetDeployment",
            ),
            "Grant the watchdog's IAM principal codedeploy:GetDeployment",
        ),
        (
            "CreateDeployment",
            Fault(400, "AccessDeniedException", "not authorized to perform: codedeploy:CreateDeployment"),
            "Grant the watchdog's IAM principal codedeploy:CreateDeployment",
        ),
        (
            "GetDeployment",
            Fault(
                400, "UnrecognizedClientException", "The security token included in the request is invalid."
            ),
            "AWS refused the credentials",
        ),
        (
            "GetDeployment",
            Fault(400, "ExpiredTokenException", "The security token included in the request is expired"),
            "renew the credentials",
        ),
    ],
)
async def test_refusals_are_permanent_with_what_to_grant_or_renew(
    operation: str,
    fault: Fault,
    expected: str,
    seed: Callable[..., Any],
    aws: CodeDeployGaps,
    make_codedeploy: Callable[..., CodeDeployRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """AccessDenied and bad credentials are not retried; the message says which permission to
    grant or that the credentials need renewing."""
    _, bad = await seed((s3("checkout-v1.zip"), "Succeeded"), (s3("checkout-v2.zip"), "Succeeded"))
    aws.fail(operation, fault)
    with pytest.raises(PermanentError, match=fault.code) as caught:
        await make_codedeploy().rollback(request_for(bad))
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    "fault",
    [
        Fault(400, "ThrottlingException", "Rate exceeded"),
        Fault(500, "InternalFailure", "We encountered an internal error. Please try again."),
        Fault(503, "ServiceUnavailable", "Service is unavailable"),
        Fault(
            400, "DeploymentLimitExceededException", "The Deployment Group already has an active Deployment"
        ),
    ],
)
async def test_throttling_and_server_errors_are_temporary(
    fault: Fault,
    seed: Callable[..., Any],
    aws: CodeDeployGaps,
    make_codedeploy: Callable[..., CodeDeployRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """Throttling, 5xx and a group busy with another deployment may pass: TemporaryError, so the
    core retries (and the retry re-checks before acting)."""
    _, bad = await seed((s3("checkout-v1.zip"), "Succeeded"), (s3("checkout-v2.zip"), "Succeeded"))
    aws.fail("CreateDeployment", fault)
    with pytest.raises(TemporaryError, match=fault.code):
        await make_codedeploy().rollback(request_for(bad))


async def test_a_call_that_gets_no_answer_is_temporary(
    seed: Callable[..., Any],
    aws: CodeDeployGaps,
    make_codedeploy: Callable[..., CodeDeployRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """A call hanging past `request_timeout`: TemporaryError naming the operation."""
    await seed()
    aws.fail("GetDeployment", Fault(hang=True))
    with pytest.raises(TemporaryError, match="CodeDeploy GetDeployment: no answer"):
        await make_codedeploy(request_timeout="0.3s").rollback(request_for("d-123456789"))


async def test_a_poll_that_fails_transiently_is_repeated_not_fatal(
    seed: Callable[..., Any],
    aws: CodeDeployGaps,
    make_codedeploy: Callable[..., CodeDeployRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """While waiting for the rollback deployment, a throttled GetDeployment is just one lost poll."""
    _, bad = await seed((s3("checkout-v1.zip"), "Succeeded"), (s3("checkout-v2.zip"), "Succeeded"))
    aws.next_scripts = [["InProgress", "InProgress", "Succeeded"]]

    async def throttle_second_read() -> None:
        await aws.seen["CreateDeployment"].wait()
        aws.fail("GetDeployment", Fault(400, "ThrottlingException", "Rate exceeded"))

    helper = asyncio.create_task(throttle_second_read())
    result = await make_codedeploy().rollback(request_for(bad))
    await helper
    assert result.data["method"] == "redeploy"
    assert len(aws.ops("CreateDeployment")) == 1
    assert aws.faults["GetDeployment"] == []  # the throttled poll happened
    assert len(aws.ops("GetDeployment")) == 1 + 1 + 3  # the bad one, the throttled poll, three more


def test_settings_refuse_unknown_keys_and_a_malformed_url() -> None:
    """`extra="forbid"`: a misspelt key is an error naming it; `url` must be http(s)."""
    from pydantic import ValidationError

    settings = functools.partial(CodeDeployRollback.Settings.model_validate)
    with pytest.raises(ValidationError, match="regoin"):
        settings({"region": REGION, "regoin": "x"})
    with pytest.raises(ValidationError, match="not an http"):
        settings({"region": REGION, "url": "localhost:4566"})
    assert settings({"region": REGION, "timeout": "30m"}).timeout == 1800.0
