"""What ``kubectl rollout undo`` decides, as pure functions over the API server's JSON.

The kubernetes rollback adapter reads a Deployment and its ReplicaSets, and this module answers the
questions kubectl answers in ``pkg/polymorphichelpers/rollback.go`` and
``pkg/util/deployment/deployment.go``: which ReplicaSets are the Deployment's history, which revision
to go back to, whether the Deployment already runs it, what the one JSON Patch is, and (from
``kubectl rollout status``) whether the result has rolled out. No I/O, so each rule is tested on its
own; the adapter maps the refusals raised here (:class:`NoTarget`) onto the error tree.

Objects are the API's JSON as plain dicts, never the client library's typed models: a typed model
drops fields it does not know, and a pod template round-tripped through an older model would lose
them in the patch.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

HASH_LABEL: Final = "pod-template-hash"
"""The label the Deployment controller adds to each ReplicaSet's template; never part of a rollback."""
REVISION: Final = "deployment.kubernetes.io/revision"
ANNOTATIONS_TO_SKIP: Final = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)
"""Annotations kubectl keeps from the Deployment instead of copying them from the ReplicaSet."""
KEY_ANNOTATION: Final = "rollback-watchdog/rollback-key"
"""Set in the same write as the rollback, to the request's idempotency key: a resend after a crash
sees its own write and does not roll back one revision further."""
TARGET_ANNOTATION: Final = "rollback-watchdog/rolled-back-to"
"""Set with the key: the ReplicaSet whose template the watchdog restored."""
SEPARATORS: Final = frozenset(":-_/@+")
"""What may stand before a version at the end of an image reference (``app:release-v2``). Not ``.``:
version ``2`` must not match ``app:1.2``."""


class NoTarget(Exception):
    """Nothing to roll back to, or nothing safe to do; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Revision:
    """One ReplicaSet of a Deployment's history."""

    number: int
    name: str
    template: dict[str, Any]
    annotations: dict[str, str]
    images: tuple[str, ...]

    def describe(self) -> str:
        return f"revision {self.number} ({', '.join(self.images) or 'no images'})"


@dataclass(frozen=True, slots=True)
class Choice:
    """The revision to go back to, and the rule that picked it (for the audit trail)."""

    revision: Revision
    rule: str


# --- reading objects ----------------------------------------------------------------------------


def metadata_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    value = obj.get("metadata")
    return value if isinstance(value, dict) else {}


def spec_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    value = obj.get("spec")
    return value if isinstance(value, dict) else {}


def status_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    value = obj.get("status")
    return value if isinstance(value, dict) else {}


def annotations_of(obj: Mapping[str, Any]) -> dict[str, str]:
    value = metadata_of(obj).get("annotations")
    return dict(value) if isinstance(value, dict) else {}


def template_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    value = spec_of(obj).get("template")
    return value if isinstance(value, dict) else {}


def images(pod_template: Mapping[str, Any]) -> tuple[str, ...]:
    pod_spec = pod_template.get("spec")
    containers = pod_spec.get("containers") if isinstance(pod_spec, dict) else None
    if not isinstance(containers, list):
        return ()
    return tuple(str(c["image"]) for c in containers if isinstance(c, dict) and c.get("image"))


def label_selector(selector: Mapping[str, Any]) -> str:
    """A ``LabelSelector`` as the ``labelSelector`` query parameter (``metav1.FormatLabelSelector``)."""
    parts = [f"{key}={value}" for key, value in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = ",".join(sorted(str(v) for v in expression.get("values") or []))
        if operator == "In":
            parts.append(f"{key} in ({values})")
        elif operator == "NotIn":
            parts.append(f"{key} notin ({values})")
        elif operator == "Exists":
            parts.append(str(key))
        elif operator == "DoesNotExist":
            parts.append(f"!{key}")
        else:
            raise NoTarget(f"its selector has an operator kubectl does not know: {operator!r}")
    return ",".join(parts)


def history(deployment: Mapping[str, Any], replicasets: Iterable[Mapping[str, Any]]) -> list[Revision]:
    """The Deployment's ReplicaSets, newest revision first: those it controls (the controller
    ownerReference carries its uid) and whose revision annotation is a number, as kubectl keeps."""
    uid = metadata_of(deployment).get("uid")
    found: list[Revision] = []
    for rs in replicasets:
        owners = metadata_of(rs).get("ownerReferences") or []
        if not any(isinstance(o, dict) and o.get("controller") and o.get("uid") == uid for o in owners):
            continue
        try:
            number = int(annotations_of(rs).get(REVISION, ""))
        except ValueError:
            continue  # kubectl skips a ReplicaSet whose revision it cannot parse
        found.append(
            Revision(
                number=number,
                name=str(metadata_of(rs).get("name", "")),
                template=template_of(rs),
                annotations=annotations_of(rs),
                images=images(template_of(rs)),
            )
        )
    return sorted(found, key=lambda r: r.number, reverse=True)


# --- comparing ----------------------------------------------------------------------------------


def _pruned(value: Any) -> Any:
    """``value`` without nulls, empty maps and empty lists: the API omits them or not depending on
    how an object was written, and kubectl's semantic equality treats them as absent."""
    if isinstance(value, dict):
        pruned = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v is not None and v not in ({}, [])}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def without_hash(pod_template: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a pod template without the ``pod-template-hash`` label."""
    copied = copy.deepcopy(dict(pod_template))
    meta = copied.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("labels"), dict):
        meta["labels"].pop(HASH_LABEL, None)
    return copied


def same_template(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """kubectl's ``equalIgnoreHash``: equal pod templates once the hash label is gone."""
    return bool(_pruned(without_hash(a)) == _pruned(without_hash(b)))


def image_matches(image: str, version: str) -> bool:
    """Whether a container image reference is ``version``.

    True when its tag (after the last ``:`` of the last path segment) or its digest (after ``@``,
    with or without ``sha256:``) is the version, or ``v`` plus the version; or when the whole
    reference ends with the version right after a separator (``:-_/@+``), optionally with a ``v``
    between, so ``shop/checkout:release-v2`` is version ``v2`` and ``2`` but ``app:v12`` and
    ``app:1.2`` are not version ``2``.
    """
    if not version:
        return False
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.rpartition(":")[2] if ":" in last else ""
    if image == version or (tag and version in (tag, f"v{tag}")) or tag == f"v{version}":
        return True
    if digest and version in (digest, digest.partition(":")[2]):
        return True
    if not image.endswith(version):
        return False
    before = image[: -len(version)]
    if before.endswith("v"):
        before = before[:-1]
    return bool(before) and before[-1] in SEPARATORS


def runs(revision: Revision, version: str | None) -> bool:
    """Whether any container of the revision runs ``version``."""
    return bool(version) and any(image_matches(image, version or "") for image in revision.images)


# --- choosing -----------------------------------------------------------------------------------


def _listing(revisions: Sequence[Revision]) -> str:
    return "; ".join(r.describe() for r in revisions) or "none"


def choose(
    what: str,
    revisions: Sequence[Revision],
    current: Mapping[str, Any],
    version: str,
    baseline: str | None,
) -> Choice:
    """The revision to roll ``what`` (e.g. ``Deployment shop/checkout``) back to.

    ``revisions`` is :func:`history` (newest first), ``current`` the Deployment's pod template,
    ``version`` the bad version (the deploy event's) and ``baseline`` the good one, if known. A
    revision "runs" a version when one of its container images names it (:func:`image_matches`).

    1. ``baseline`` given and some revision runs it (and not ``version``): the newest such revision,
       however far back.
    2. ``baseline`` given, no revision runs it, but one runs ``version``: refused. Versions are image
       tags here, so the good version has left the history (revisionHistoryLimit); a person picks.
    3. No ``baseline``, and some revision runs ``version``: the newest revision that does not.
       This is "the previous revision" judged by the bad version rather than by the order of
       revisions, so a resend after the rollback landed (when the controller has renumbered the
       restored ReplicaSet as the newest revision) picks the same revision, not the one before it.
    4. No image names either version (versions are commit ids, say): what ``kubectl rollout undo``
       does, the newest revision whose template differs from the one the Deployment runs now. A
       resend after the rollback landed is caught earlier, by the marker annotation the rollback
       writes (:data:`KEY_ANNOTATION`), and does not get here.
    """
    if not revisions:
        raise NoTarget(
            f"no rollout history found for {what}: none of the ReplicaSets its selector finds is "
            "controlled by it"
        )
    bad = {r.number for r in revisions if runs(r, version)}
    if baseline:
        good = [r for r in revisions if runs(r, baseline) and r.number not in bad]
        if good:
            return Choice(good[0], f"the newest revision running baseline_version {baseline}")
        if bad:
            raise NoTarget(
                f"no revision of {what} runs baseline_version {baseline} (history: {_listing(revisions)}); "
                "it may have been pruned by revisionHistoryLimit. Pick a revision by hand: "
                "kubectl rollout undo --to-revision=N"
            )
    if bad:
        others = [r for r in revisions if r.number not in bad]
        if not others:
            raise NoTarget(
                f"every revision of {what} runs version {version} (history: {_listing(revisions)}): "
                "there is no earlier version to go back to"
            )
        return Choice(others[0], f"the newest revision not running version {version}")
    older = [r for r in revisions if not same_template(r.template, current)]
    if not older:
        raise NoTarget(
            f"no previous revision of {what}: its history holds only the template it runs now "
            f"({_listing(revisions)})"
        )
    return Choice(
        older[0],
        f"the revision before the current one (no image names version {version}"
        + (f" or {baseline}" if baseline else "")
        + ")",
    )


# --- writing ------------------------------------------------------------------------------------


def rollback_patch(deployment: Mapping[str, Any], target: Revision, key: str) -> list[dict[str, Any]]:
    """The JSON Patch kubectl sends, plus two things.

    kubectl replaces ``/spec/template`` with the ReplicaSet's template (hash label removed) and
    ``/metadata/annotations`` with the Deployment's own values of :data:`ANNOTATIONS_TO_SKIP` and
    every other annotation from the ReplicaSet. This patch also writes the Deployment's
    ``resourceVersion`` as read, so the API server refuses it (409) if the Deployment changed since
    (a newer deploy is never overwritten with a stale decision), and adds :data:`KEY_ANNOTATION`
    and :data:`TARGET_ANNOTATION` so a resend recognises its own write.
    """
    current = annotations_of(deployment)
    new_annotations = {k: v for k, v in current.items() if k in ANNOTATIONS_TO_SKIP}
    new_annotations.update({k: v for k, v in target.annotations.items() if k not in ANNOTATIONS_TO_SKIP})
    new_annotations[KEY_ANNOTATION] = key
    new_annotations[TARGET_ANNOTATION] = target.name
    has_annotations = isinstance(metadata_of(deployment).get("annotations"), dict)
    return [
        {
            "op": "replace",
            "path": "/metadata/resourceVersion",
            "value": str(metadata_of(deployment).get("resourceVersion", "")),
        },
        {"op": "replace", "path": "/spec/template", "value": without_hash(target.template)},
        {
            "op": "replace" if has_annotations else "add",
            "path": "/metadata/annotations",
            "value": new_annotations,
        },
    ]


# --- watching the result ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a Deployment's rollout stands, in ``kubectl rollout status``'s terms."""

    done: bool
    waiting: str
    """What it waits for, or why it failed."""
    failed: bool
    numbers: str
    """The status figures, for a message a person can act on."""


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def deployment_progress(deployment: Mapping[str, Any]) -> Progress:
    """``kubectl rollout status`` for one read: done when the controller has observed the latest
    generation, every replica is updated, no old replica is left and every updated one is
    available; failed when the Progressing condition says the deadline passed."""
    meta, wanted_spec, st = metadata_of(deployment), spec_of(deployment), status_of(deployment)
    generation, observed = _int(meta.get("generation")), _int(st.get("observedGeneration"))
    wanted = _int(wanted_spec.get("replicas"), 1)
    replicas, updated = _int(st.get("replicas")), _int(st.get("updatedReplicas"))
    available = _int(st.get("availableReplicas"))
    numbers = (
        f"observedGeneration {observed} of generation {generation}, {updated} of {wanted} replicas "
        f"updated, {available} of {updated} updated replicas available, {replicas} replicas in all"
    )

    def progress(waiting: str, *, done: bool = False, failed: bool = False) -> Progress:
        return Progress(done, waiting, failed, numbers)

    if observed < generation:
        return progress("waiting for the controller to observe the rolled-back template")
    for condition in st.get("conditions") or []:
        if (
            isinstance(condition, dict)
            and condition.get("type") == "Progressing"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            detail = condition.get("message") or "progress deadline exceeded"
            return progress(f"the rollout exceeded its progress deadline: {detail}", failed=True)
    if updated < wanted:
        return progress(f"{updated} of {wanted} new replicas have been updated")
    if replicas > updated:
        return progress(f"{replicas - updated} old replicas are pending termination")
    if available < updated:
        return progress(f"{available} of {updated} updated replicas are available")
    return progress("successfully rolled out", done=True)


def rollout_aborted(rollout: Mapping[str, Any]) -> bool:
    """Whether the Argo Rollouts controller has acted on an abort: ``status.abort`` is set and it
    recorded the abort (``abortedAt``, or a Progressing condition with reason ``RolloutAborted``)."""
    st = status_of(rollout)
    if st.get("abort") is not True:
        return False
    if st.get("abortedAt"):
        return True
    return any(
        isinstance(c, dict) and c.get("reason") == "RolloutAborted" for c in st.get("conditions") or []
    )


def rollout_fully_promoted(rollout: Mapping[str, Any]) -> bool:
    """Whether the Rollout's new version is already the stable one (nothing left to abort), once the
    controller has observed the latest generation."""
    meta, st = metadata_of(rollout), status_of(rollout)
    observed = str(st.get("observedGeneration", ""))
    if observed and observed != str(meta.get("generation", "")):
        return False
    stable, current = st.get("stableRS"), st.get("currentPodHash")
    return bool(stable) and stable == current
