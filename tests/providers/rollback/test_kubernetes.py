"""The kubernetes rollback adapter against a fake API server on loopback (``k8s_server``), reached
through a real kubeconfig: which revision it restores, that it writes once, how it verifies, how it
behaves when called again, and how every failure reads."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import certifi
import pytest
import yaml
from pydantic import ValidationError

from providers.rollback import _k8s_undo as undo
from providers.rollback.kubernetes import KubernetesRollback
from tests.providers.rollback.k8s_server import (
    HASH_LABEL,
    TOKEN,
    FakeKubernetes,
    Fault,
    Seen,
    fixture,
    without_hash,
)
from watchdog.errors import PermanentError, TemporaryError
from watchdog.model import DeployEvent, Deployment
from watchdog.plugins import PluginRegistry
from watchdog.ports import RollbackRequest, RollbackTarget
from watchdog.retry import RetryPolicy

ROOT = Path(__file__).resolve().parents[3]
DEPLOYMENT_PATH = "/apis/apps/v1/namespaces/shop/deployments/checkout"
ROLLOUT_PATH = "/apis/argoproj.io/v1alpha1/namespaces/shop/rollouts/checkout"


@pytest.fixture
async def k8s() -> AsyncIterator[FakeKubernetes]:
    server = FakeKubernetes()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def kubeconfig(k8s: FakeKubernetes, tmp_path: Path) -> Path:
    return k8s.kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def make_k8s(make_adapter: Callable[..., Any], kubeconfig: Path) -> Callable[..., KubernetesRollback]:
    """Adapters from raw settings, pointed at the fake server's kubeconfig unless told otherwise;
    closed after the test."""

    def make(**settings: Any) -> KubernetesRollback:
        settings = {"kubeconfig": str(kubeconfig), "poll_interval": "1s", "verify_timeout": "1m", **settings}
        adapter: KubernetesRollback = make_adapter(
            KubernetesRollback, "k8s", **{k: v for k, v in settings.items() if v is not None}
        )
        return adapter

    return make


@pytest.fixture
def request_for(make_deployment: Callable[..., Deployment]) -> Callable[..., RollbackRequest]:
    """A rollback request for checkout v2 (baseline v1) in shop; keyword arguments replace event
    fields."""

    def make(key: str = "dep-42:rollback", **event: Any) -> RollbackRequest:
        base = make_deployment()
        fields = {
            "source": "generic",
            "event_id": "evt-1",
            "service": "checkout",
            "version": "v2",
            "environment": "prod",
            "baseline_version": "v1",
            "strategy": "canary",
            "target": {"namespace": "shop", "deployment": "checkout"},
            **event,
        }
        deployment = Deployment(**{**_fields(base), "event": DeployEvent(**fields)})
        return RollbackRequest(deployment, key, "errors regressed", "watchdog")

    return make


def _fields(deployment: Deployment) -> dict[str, Any]:
    return {name: getattr(deployment, name) for name in deployment.__dataclass_fields__}


def patches(k8s: FakeKubernetes, path: str = DEPLOYMENT_PATH) -> list[Seen]:
    return [r for r in k8s.writes if r.path == path]


def template_of_revision(k8s: FakeKubernetes, rs_name: str) -> dict[str, Any]:
    return without_hash(k8s.replicasets[("shop", rs_name)]["spec"]["template"])


# --- registration and settings -------------------------------------------------------------------


def test_registered_through_its_entry_point() -> None:
    """`type: kubernetes` finds this adapter through the entry-point group, and it is a RollbackTarget."""
    adapter = PluginRegistry.from_entry_points().find("rollback", "kubernetes")
    assert adapter is not None and adapter.factory is KubernetesRollback
    assert issubclass(KubernetesRollback, RollbackTarget)


def test_settings_defaults_and_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults: verify for 5m, poll every 2s, 10s per request; `~` in kubeconfig is expanded;
    a misspelt key, a non-http url and in_cluster together with a kubeconfig are refused."""
    monkeypatch.setenv("HOME", "/home/ops")
    settings = KubernetesRollback.Settings.model_validate({"kubeconfig": "~/.kube/prod"})
    assert settings.kubeconfig == "/home/ops/.kube/prod"
    assert (settings.verify_timeout, settings.poll_interval, settings.timeout) == (300.0, 2.0, 10.0)
    assert settings.in_cluster is None and settings.url is None
    for wrong, word in [
        ({"kubeconfg": "x"}, "kubeconfg"),
        ({"url": "ftp://api.example"}, "http"),
        ({"in_cluster": True, "kubeconfig": "/k"}, "in_cluster"),
        ({"poll_interval": "10m", "verify_timeout": "1m"}, "poll_interval"),
    ]:
        with pytest.raises(ValidationError, match=word):
            KubernetesRollback.Settings.model_validate(wrong)


# --- choosing the revision and writing it once ---------------------------------------------------


async def test_rolls_back_to_the_baseline_revision_with_one_json_patch(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """v2 bad, baseline v1: one JSON Patch replaces the template with revision 2's (no hash label)
    and the annotations as kubectl builds them, guarded by the resourceVersion read; the
    Deployment ends up running revision 2's template, fully rolled out."""
    k8s.history()
    before = copy.deepcopy(k8s.deployment("shop", "checkout"))
    previous = k8s.revision("shop", "checkout", 2)

    result = await make_k8s().rollback(request_for())

    (write,) = k8s.writes
    assert write.path == DEPLOYMENT_PATH and write.content_type == "application/json-patch+json"
    ops = write.json()
    assert [(op["op"], op["path"]) for op in ops] == [
        ("replace", "/metadata/resourceVersion"),
        ("replace", "/spec/template"),
        ("replace", "/metadata/annotations"),
    ]
    assert ops[0]["value"] == before["metadata"]["resourceVersion"]
    assert ops[1]["value"] == without_hash(previous["spec"]["template"])
    assert HASH_LABEL not in ops[1]["value"]["metadata"]["labels"]
    sent = ops[2]["value"]
    kept = before["metadata"]["annotations"]
    assert (
        sent["kubectl.kubernetes.io/last-applied-configuration"]
        == kept["kubectl.kubernetes.io/last-applied-configuration"]
    )
    assert sent[undo.REVISION] == kept[undo.REVISION] == "3"  # the Deployment's own, not the ReplicaSet's
    assert "deployment.kubernetes.io/desired-replicas" not in sent  # skipped, as kubectl does
    assert sent[undo.KEY_ANNOTATION] == "dep-42:rollback"
    assert sent[undo.TARGET_ANNOTATION] == previous["metadata"]["name"]

    now = k8s.deployment("shop", "checkout")
    assert without_hash(now["spec"]["template"]) == template_of_revision(k8s, previous["metadata"]["name"])
    assert now["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":v1")
    assert now["status"]["observedGeneration"] == now["metadata"]["generation"]
    assert now["status"]["availableReplicas"] == now["status"]["updatedReplicas"] == 3
    assert result.data["revision"] == 2 and result.data["patched"] is True
    assert result.data["replicaset"] == previous["metadata"]["name"]
    assert result.data["new_revision"] == "4"  # the controller re-used the old ReplicaSet as revision 4
    assert "revision 2" in result.detail and "baseline_version v1" in result.detail
    assert all(r.authorization == f"Bearer {TOKEN}" for r in k8s.requests)
    assert all(r.user_agent == "rollback-watchdog" for r in k8s.requests)


async def test_baseline_older_than_the_previous_revision_is_restored(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """The event's baseline_version decides, not the order: baseline v0 restores revision 1."""
    k8s.history()
    oldest = k8s.revision("shop", "checkout", 1)

    result = await make_k8s().rollback(request_for(baseline_version="v0"))

    assert result.data["revision"] == 1
    now = k8s.deployment("shop", "checkout")
    assert without_hash(now["spec"]["template"]) == template_of_revision(k8s, oldest["metadata"]["name"])


async def test_without_baseline_the_newest_revision_not_running_the_bad_version_is_restored(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """No baseline_version: the newest revision whose images do not carry the bad version."""
    k8s.history(
        images=("shop/checkout:v0", "shop/checkout:v1", "shop/checkout:v2", "shop/checkout:release-v2")
    )
    result = await make_k8s().rollback(request_for(baseline_version=None))
    assert result.data["revision"] == 2 and result.data["images"] == ["shop/checkout:v1"]
    assert "not running version v2" in result.data["rule"]


async def test_versions_that_are_not_image_tags_restore_the_previous_revision_like_kubectl(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """Commit ids as versions (no image names them): kubectl's rule, the revision before the
    current one."""
    k8s.history(images=("shop/checkout:build-101", "shop/checkout:build-102", "shop/checkout:build-103"))
    result = await make_k8s().rollback(request_for(version="3f2a9c1", baseline_version="9e8d7c6"))
    assert result.data["revision"] == 2 and result.data["images"] == ["shop/checkout:build-102"]
    assert "before the current one" in result.data["rule"]


@pytest.mark.parametrize(
    "images",
    [
        ("shop/checkout:v0", "shop/checkout:v1", "shop/checkout:v2"),
        ("shop/checkout:build-101", "shop/checkout:build-102", "shop/checkout:build-103"),
    ],
)
async def test_a_resend_after_the_write_landed_does_not_roll_back_further(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
    images: tuple[str, ...],
) -> None:
    """The core calls again with the same key after a crash: the Deployment (whose restored
    ReplicaSet is now the newest revision) is verified, not patched again, and still runs the
    template of the first call, whether versions are image tags or not."""
    k8s.history(images=images)
    adapter = make_k8s()
    request = request_for(baseline_version=None, version="v2" if images[0].endswith("v0") else "3f2a9c1")

    first = await adapter.rollback(request)
    restored = copy.deepcopy(k8s.deployment("shop", "checkout")["spec"]["template"])
    again = await make_k8s().rollback(request)  # a fresh adapter, as after a restart

    assert len(k8s.writes) == 1
    assert k8s.deployment("shop", "checkout")["spec"]["template"] == restored
    assert first.data["patched"] is True and again.data["patched"] is False
    assert again.data["replicaset"] == first.data["replicaset"]
    assert "earlier attempt" in again.detail


async def test_a_write_whose_answer_was_lost_is_not_repeated_by_the_retry(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """The PATCH lands but its answer is a 502 (a proxy timed out): the core's retry re-reads,
    recognises its own write by the key, verifies it and writes nothing more."""
    k8s.history()
    k8s.faults.append(Fault("PATCH", "deployments", 502, applied=True))
    adapter, request = make_k8s(), request_for()

    result = await RetryPolicy(attempts=3, base=0.01).call(lambda: adapter.rollback(request))

    assert len(patches(k8s)) == 1
    assert result.data["patched"] is False and "earlier attempt" in result.detail
    image = k8s.deployment("shop", "checkout")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith("checkout:v1")


async def test_a_deployment_already_on_the_chosen_template_is_not_patched(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """Someone already ran `kubectl rollout undo` (no marker of ours): kubectl's "skipped rollback
    (current template already matches revision N)", then verification; no write."""
    k8s.history(images=("shop/checkout:v1", "shop/checkout:v2"))
    dep = k8s.deployment("shop", "checkout")
    dep["spec"]["template"] = without_hash(k8s.revision("shop", "checkout", 1)["spec"]["template"])

    result = await make_k8s().rollback(request_for())

    assert k8s.writes == []
    assert result.data["patched"] is False
    assert "current template already matches revision 1" in result.detail


async def test_history_pages_are_followed(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """A LIST answered in pages (`continue`) is read to the end before choosing."""
    k8s.history()
    k8s.page_size = 1
    result = await make_k8s().rollback(request_for())
    lists = [r for r in k8s.requests if r.path.endswith("/replicasets")]
    assert len(lists) == 3 and lists[0].query["labelSelector"] == "app=checkout"
    assert [r.query.get("continue") for r in lists] == [None, "1", "2"]
    assert result.data["revision"] == 2


# --- refusals ------------------------------------------------------------------------------------


async def test_a_paused_deployment_is_refused_with_how_to_go_on(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """spec.paused: nothing is written, and the reason says how to resume and which revision to
    restore by hand."""
    k8s.history()
    k8s.deployment("shop", "checkout")["spec"]["paused"] = True
    with pytest.raises(PermanentError) as caught:
        await make_k8s().rollback(request_for())
    message = str(caught.value)
    assert "Deployment shop/checkout is paused" in message
    assert "kubectl -n shop rollout resume deployment/checkout" in message
    assert "--to-revision=2" in message
    assert k8s.writes == []


async def test_the_published_single_revision_deployment_has_no_previous_revision(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """The captured icx-db Deployment and its one ReplicaSet, as published: nothing to go back to."""
    k8s.add_deployment(fixture("deployment.apps-v1.icx-db.json"))
    k8s.add_replicaset({**fixture("replicaset.extensions-v1beta1.icx-db.json"), "apiVersion": "apps/v1"})
    with pytest.raises(PermanentError, match="no previous revision of Deployment icx/icx-db"):
        await make_k8s().rollback(request_for(target={"namespace": "icx", "deployment": "icx-db"}))
    assert k8s.writes == []


async def test_replicasets_another_deployment_controls_are_not_history(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """A ReplicaSet the selector finds but another Deployment controls (the captured nginx-pv one,
    relabelled to match nginx's selector) is not the nginx Deployment's history."""
    k8s.add_deployment(fixture("deployment.apps-v1.nginx.json"))
    foreign = fixture("replicaset.apps-v1.nginx-pv.json")
    foreign["metadata"]["labels"]["app"] = "nginx"
    k8s.add_replicaset(foreign)
    with pytest.raises(PermanentError, match="no rollout history found for Deployment default/nginx"):
        await make_k8s().rollback(request_for(target={"namespace": "default", "deployment": "nginx"}))
    listed = next(r for r in k8s.requests if r.path.endswith("/replicasets"))
    assert listed.query["labelSelector"] == "app=nginx"


async def test_a_baseline_missing_from_the_history_is_refused(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """Images carry versions but none carries the baseline (pruned by revisionHistoryLimit): no
    guess, a reason listing the history and the kubectl command to pick one by hand."""
    k8s.history()
    with pytest.raises(PermanentError) as caught:
        await make_k8s().rollback(request_for(baseline_version="v-1"))
    message = str(caught.value)
    assert "no revision of Deployment shop/checkout runs baseline_version v-1" in message
    assert "revision 3 (registry.example.com/shop/checkout:v2)" in message
    assert "--to-revision" in message
    assert k8s.writes == []


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ({}, 'expected {"namespace": "<namespace>", "deployment": "<name>"}'),
        ({"deployment": "checkout"}, "expected"),
        ({"namespace": "shop", "deployment": "a", "rollout": "b"}, "both a deployment and a rollout"),
        (
            {"namespace": "shop", "deployment": "../../api"},
            "target.deployment '../../api' is not a Kubernetes name",
        ),
    ],
)
async def test_a_target_of_the_wrong_shape_is_refused_naming_the_shape(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
    target: dict[str, Any],
    words: str,
) -> None:
    """The event's target must be {namespace, deployment} or {namespace, rollout}; nothing is sent."""
    with pytest.raises(PermanentError, match=None) as caught:
        await make_k8s().rollback(request_for(target=target))
    assert words in str(caught.value)
    assert k8s.requests == []


# --- failures of the API server ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verb", "resource"), [("get", "deployments"), ("list", "replicasets"), ("patch", "deployments")]
)
async def test_403_names_the_missing_permission_and_the_rbac_file(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
    verb: str,
    resource: str,
) -> None:
    """RBAC refusals are permanent (no retry) and say which verb on what, where, and the fix."""
    k8s.history()
    k8s.forbidden.add((verb, resource))
    with pytest.raises(PermanentError) as caught:
        await make_k8s().rollback(request_for())
    message = str(caught.value)
    assert f"may not {verb} {resource} in namespace shop" in message
    assert "config/kubernetes/rbac.yaml" in message
    assert "system:serviceaccount:ops:rollback-watchdog" in message  # the server's own words
    assert (ROOT / "config/kubernetes/rbac.yaml").is_file()


async def test_401_says_the_credentials_are_refused(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
    tmp_path: Path,
) -> None:
    """A token the server does not accept: permanent, without printing the token."""
    k8s.history()
    stale = k8s.kubeconfig(tmp_path / "stale", token="expired-token-0000000000")
    with pytest.raises(PermanentError) as caught:
        await make_k8s(kubeconfig=str(stale)).rollback(request_for())
    assert "refused the watchdog's credentials (401)" in str(caught.value)
    assert "expired-token" not in str(caught.value)


async def test_404_names_the_missing_object(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """A Deployment that does not exist: permanent, naming it and pointing at the event's target."""
    k8s.history()
    with pytest.raises(PermanentError) as caught:
        await make_k8s().rollback(request_for(target={"namespace": "shop", "deployment": "chekout"}))
    assert "Deployment shop/chekout not found" in str(caught.value)
    assert "check the deploy event's target" in str(caught.value)


async def test_a_500_on_the_patch_is_temporary_and_the_core_retry_writes_once(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """500 then OK: the first call raises TemporaryError, the core's retry (the same request)
    re-reads and patches; the Deployment is written once."""
    k8s.history()
    k8s.faults.append(Fault("PATCH", "deployments", 500))
    adapter, request = make_k8s(), request_for()
    with pytest.raises(TemporaryError, match="500"):
        await adapter.rollback(request)
    result = await RetryPolicy(attempts=2, base=0.01).call(lambda: adapter.rollback(request))
    assert result.data["patched"] is True
    assert len(patches(k8s)) == 2  # the refused one and the applied one
    assert k8s.deployment("shop", "checkout")["metadata"]["annotations"][undo.REVISION] == "4"


async def test_a_deployment_changed_between_read_and_write_is_a_409_and_is_read_again(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """The controller updates the Deployment after the adapter read it: the server refuses the
    stale patch (409), which is temporary; the retry reads the new version and succeeds."""
    k8s.history()
    listed = []

    def bump(seen: Seen) -> None:
        if seen.path.endswith("/replicasets") and not listed:
            listed.append(seen)
            k8s.deployment("shop", "checkout")["metadata"]["resourceVersion"] = "999999"

    k8s.on_request = bump
    adapter, request = make_k8s(), request_for()
    with pytest.raises(TemporaryError, match="409"):
        await adapter.rollback(request)
    assert without_hash(k8s.deployment("shop", "checkout")["spec"]["template"])["spec"]["containers"][0][
        "image"
    ].endswith(":v2")  # nothing applied
    result = await adapter.rollback(request)
    assert result.data["revision"] == 2
    assert patches(k8s)[-1].json()[0]["value"] == "999999"


async def test_a_slow_api_server_is_a_temporary_timeout(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """No answer within `timeout`: TemporaryError naming the wait."""
    k8s.history()
    k8s.delay = 0.5
    with pytest.raises(TemporaryError, match="no answer within 200ms"):
        await make_k8s(timeout="200ms").rollback(request_for())


async def test_an_unreachable_api_server_is_temporary(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
    closed_port: int,
) -> None:
    """Connection refused: TemporaryError naming the address."""
    with pytest.raises(TemporaryError, match=f"cannot reach the API server http://127.0.0.1:{closed_port}"):
        await make_k8s(url=f"http://127.0.0.1:{closed_port}").rollback(request_for())


# --- verification --------------------------------------------------------------------------------


async def test_pods_that_never_become_available_fail_verification_with_the_numbers(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """The template is restored but its pods never become available: after verify_timeout a
    permanent failure with what was last seen and the command to look further."""
    k8s.history()
    k8s.stuck = True
    with pytest.raises(PermanentError) as caught:
        await make_k8s(verify_timeout="30s", poll_interval="5s").rollback(request_for())
    message = str(caught.value)
    assert "was not fully rolled back to revision 2" in message and "within 30s" in message
    assert "0 of 3 updated replicas are available" in message
    assert "observedGeneration 4 of generation 4, 3 of 3 replicas updated" in message
    assert "kubectl -n shop rollout status deployment/checkout" in message
    assert len(k8s.writes) == 1


async def test_a_progress_deadline_exceeded_fails_verification_at_once(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """The controller reports ProgressDeadlineExceeded (the published degraded condition): fail
    without waiting out verify_timeout."""
    k8s.history()
    k8s.deadline_exceeded = True
    with pytest.raises(PermanentError, match=r"exceeded its progress deadline: ReplicaSet .* has timed out"):
        await make_k8s().rollback(request_for())
    reads = [r for r in k8s.requests if r.method == "GET" and r.path == DEPLOYMENT_PATH]
    assert len(reads) <= 4


async def test_a_failed_read_while_verifying_is_tolerated(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """A 503 on one verification read says nothing about the rollout: polling goes on."""
    k8s.history()

    def after_patch(seen: Seen) -> None:
        if seen.method == "PATCH":
            k8s.faults.append(Fault("GET", "deployments", 503))

    k8s.on_request = after_patch
    result = await make_k8s().rollback(request_for())
    assert result.data["revision"] == 2 and len(k8s.writes) == 1


# --- how the adapter reaches the cluster ---------------------------------------------------------


async def test_the_kubeconfig_context_picks_the_cluster(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """`context` selects a context of the kubeconfig: `elsewhere` points at a closed port, the
    current one (`fake`) at the server."""
    k8s.history()
    with pytest.raises(TemporaryError, match="cannot reach"):
        await make_k8s(context="elsewhere").rollback(request_for())
    result = await make_k8s(context="fake").rollback(request_for())
    assert result.data["revision"] == 2


async def test_url_overrides_the_kubeconfig_server(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
    tmp_path: Path,
    closed_port: int,
) -> None:
    """`url` replaces the kubeconfig's server; the kubeconfig's token is still used."""
    k8s.history()
    away = k8s.kubeconfig(tmp_path / "away", server=f"http://127.0.0.1:{closed_port}")
    result = await make_k8s(kubeconfig=str(away), url=k8s.url).rollback(request_for())
    assert result.data["revision"] == 2
    assert k8s.requests[0].authorization == f"Bearer {TOKEN}"


async def test_in_cluster_uses_the_pod_service_account(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without a kubeconfig, in a pod (KUBERNETES_SERVICE_HOST set), the mounted service account
    token authenticates the requests."""
    from kubernetes_asyncio.config import incluster_config

    token = tmp_path / "token"
    token.write_text(TOKEN)
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", certifi.where())
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    k8s.history()

    adapter = make_k8s(kubeconfig=None, url=k8s.url)
    result = await adapter.rollback(request_for())

    assert result.data["revision"] == 2
    assert {r.authorization for r in k8s.requests} == {f"Bearer {TOKEN}"}


async def test_in_cluster_outside_a_pod_says_so(
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`in_cluster: true` where no service account is mounted: permanent, saying what is missing."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(PermanentError, match="cannot use the pod's service account"):
        await make_k8s(kubeconfig=None, in_cluster=True).rollback(request_for())


async def test_an_unreadable_kubeconfig_or_unknown_context_is_permanent(
    make_k8s: Callable[..., KubernetesRollback], request_for: Callable[..., RollbackRequest], tmp_path: Path
) -> None:
    """A kubeconfig that is not there, or a context it does not have: permanent, naming the file
    and the context; a later call tries again (nothing broken is cached)."""
    missing = tmp_path / "nope"
    adapter = make_k8s(kubeconfig=str(missing))
    for _ in range(2):
        with pytest.raises(PermanentError, match=f"cannot load the kubeconfig {missing}"):
            await adapter.rollback(request_for())
    with pytest.raises(PermanentError, match="context 'prod'"):
        await make_k8s(context="prod").rollback(request_for())


# --- Argo Rollouts -------------------------------------------------------------------------------


async def test_a_rollout_is_aborted_through_its_status_subresource(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """{namespace, rollout}: one merge patch `{"status": {"abort": true}}` on rollouts/status, as
    `kubectl argo rollouts abort` sends; done once the controller reports the abort."""
    k8s.add_rollout()
    result = await make_k8s().rollback(request_for(target={"namespace": "shop", "rollout": "checkout"}))
    (write,) = k8s.writes
    assert write.path == f"{ROLLOUT_PATH}/status"
    assert write.content_type == "application/merge-patch+json"
    assert write.json() == {"status": {"abort": True}}
    assert k8s.rollouts[("shop", "checkout")]["status"]["abort"] is True
    assert result.data["phase"] == "Degraded" and result.data["patched"] is True
    assert "Rollout shop/checkout aborted" in result.detail


async def test_a_rollout_without_status_subresource_is_patched_directly(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """An old Rollout CRD without the status subresource: 404 there, then the same patch on the
    object itself, as the plugin falls back."""
    k8s.add_rollout()
    k8s.status_subresource = False
    await make_k8s().rollback(request_for(target={"namespace": "shop", "rollout": "checkout"}))
    assert [w.path for w in k8s.writes] == [f"{ROLLOUT_PATH}/status", ROLLOUT_PATH]
    assert k8s.rollouts[("shop", "checkout")]["status"]["abort"] is True


async def test_an_aborted_rollout_is_not_patched_again(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """A resend finds the abort in place: verified, not written again."""
    k8s.add_rollout()
    request = request_for(target={"namespace": "shop", "rollout": "checkout"})
    await make_k8s().rollback(request)
    again = await make_k8s().rollback(request)
    assert len(k8s.writes) == 1 and again.data["patched"] is False


async def test_a_fully_promoted_rollout_is_refused(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """The new version is already stable: abort would change nothing, so it is refused with the
    command that does roll back."""
    k8s.add_rollout(promoted=True)
    with pytest.raises(PermanentError, match=r"fully promoted.*kubectl argo rollouts undo checkout -n shop"):
        await make_k8s().rollback(request_for(target={"namespace": "shop", "rollout": "checkout"}))
    assert k8s.writes == []


async def test_an_abort_the_controller_never_reports_times_out(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """No Argo Rollouts controller acting on the abort: permanent after verify_timeout, asking
    whether it runs."""
    k8s.add_rollout()
    k8s.rollout_controller = False
    with pytest.raises(PermanentError, match="did not report Rollout shop/checkout aborted within 10s"):
        await make_k8s(verify_timeout="10s").rollback(
            request_for(target={"namespace": "shop", "rollout": "checkout"})
        )


async def test_rollout_refusals_name_the_permission_or_the_missing_object(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """403 on rollouts/status names the permission and the RBAC file; a missing Rollout asks
    whether Argo Rollouts is installed."""
    k8s.add_rollout()
    k8s.forbidden.add(("patch", "rollouts/status"))
    with pytest.raises(PermanentError, match=r"may not patch rollouts/status in namespace shop.*rbac.yaml"):
        await make_k8s().rollback(request_for(target={"namespace": "shop", "rollout": "checkout"}))
    with pytest.raises(PermanentError, match=r"Rollout shop/other not found.*Argo Rollouts installed"):
        await make_k8s().rollback(request_for(target={"namespace": "shop", "rollout": "other"}))


# --- the shipped RBAC ----------------------------------------------------------------------------


async def test_the_shipped_rbac_grants_what_the_adapter_uses_and_no_more(
    k8s: FakeKubernetes,
    make_k8s: Callable[..., KubernetesRollback],
    request_for: Callable[..., RollbackRequest],
) -> None:
    """config/kubernetes/rbac.yaml: get/list/patch on deployments and replicasets, get/patch on
    rollouts and rollouts/status, bound to its ServiceAccount; every call of a Deployment rollback,
    a fallback Rollout abort and their verification is covered."""
    documents = [d for d in yaml.safe_load_all((ROOT / "config/kubernetes/rbac.yaml").read_text()) if d]
    by_kind = {d["kind"]: d for d in documents}
    rules = by_kind["ClusterRole"]["rules"]
    granted = {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == {
        *{("apps", r, v) for r in ("deployments", "replicasets") for v in ("get", "list", "patch")},
        *{("argoproj.io", r, v) for r in ("rollouts", "rollouts/status") for v in ("get", "patch")},
    }
    account = by_kind["ServiceAccount"]["metadata"]
    (subject,) = by_kind["RoleBinding"]["subjects"]
    assert (subject["name"], subject["namespace"]) == (account["name"], account["namespace"])
    assert by_kind["RoleBinding"]["roleRef"]["name"] == by_kind["ClusterRole"]["metadata"]["name"]

    k8s.history()
    k8s.add_rollout()
    k8s.status_subresource = False
    await make_k8s().rollback(request_for())
    await make_k8s().rollback(request_for(target={"namespace": "shop", "rollout": "checkout"}))
    used = set()
    for r in k8s.requests:
        group = "argoproj.io" if "/argoproj.io/" in r.path else "apps"
        parts = r.path.split("/")
        resource = parts[6] + ("/status" if r.path.endswith("/status") else "")
        verb = {"PATCH": "patch"}.get(r.method) or ("list" if len(parts) == 7 else "get")
        used.add((group, resource, verb))
    assert used <= granted


# --- the rules on their own ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "version", "matches"),
    [
        ("registry.example.com/shop/checkout:v2", "v2", True),
        ("registry.example.com:5000/checkout:v2", "v2", True),
        ("shop/checkout:1.4.2", "v1.4.2", True),
        ("shop/checkout:v1.4.2", "1.4.2", True),
        ("shop/checkout:release-v2", "v2", True),
        ("shop/checkout:release-v2", "2", True),
        ("shop/checkout@sha256:abc123", "abc123", True),
        ("shop/checkout@sha256:abc123", "sha256:abc123", True),
        ("shop/checkout:v12", "2", False),
        ("shop/checkout:1.2", "2", False),
        ("shop/checkout:v2", "v1", False),
        ("shop/checkout:v2", "", False),
        ("registry.example.com:5000/checkout", "5000", False),
    ],
)
def test_image_matching(image: str, version: str, matches: bool) -> None:
    """A version is an image's tag or digest (a `v` either side allowed), or the reference's end
    right after a separator; never a bare suffix of a longer number."""
    assert undo.image_matches(image, version) is matches


def test_label_selector_formatting() -> None:
    """matchLabels and matchExpressions become the labelSelector syntax kubectl sends."""
    selector = {
        "matchLabels": {"app": "checkout", "tier": "web"},
        "matchExpressions": [
            {"key": "track", "operator": "In", "values": ["stable", "canary"]},
            {"key": "legacy", "operator": "DoesNotExist"},
            {"key": "zone", "operator": "NotIn", "values": ["b"]},
            {"key": "team", "operator": "Exists"},
        ],
    }
    assert undo.label_selector(selector) == (
        "app=checkout,tier=web,track in (canary,stable),!legacy,zone notin (b),team"
    )


def test_templates_compare_without_the_hash_label_and_empty_fields() -> None:
    """kubectl's equalIgnoreHash: the hash label, nulls and empty maps do not make two templates
    differ; an image does."""
    rs = fixture("replicaset.extensions-v1beta1.icx-db.json")["spec"]["template"]
    dep = fixture("deployment.apps-v1.icx-db.json")["spec"]["template"]
    assert undo.same_template(rs, dep)
    bare = copy.deepcopy(dep)
    del bare["metadata"]["creationTimestamp"]
    bare["spec"]["securityContext"] = None
    assert undo.same_template(rs, bare)
    other = copy.deepcopy(dep)
    other["spec"]["containers"][0]["image"] = "postgres:9.3-alpine"
    assert not undo.same_template(rs, other)
