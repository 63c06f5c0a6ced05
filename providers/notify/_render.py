"""Wording shared by the notifiers.

Slack and the webhook describe a deployment with the same title, so a person who reads one
recognises the other. How a failed call is described (status, the start of the body, the address
with its credentials hidden) is not notifier wording: the rollback hook says it the same way, so it
lives in :mod:`providers._http`.
"""

from __future__ import annotations

from typing import Final

from watchdog.model import Deployment
from watchdog.ports import NotificationKind

_TITLES: Final[dict[NotificationKind, tuple[str, str]]] = {
    NotificationKind.ROLLED_BACK: (":rewind:", "Rolled back {place}"),
    NotificationKind.ROLLBACK_FAILED: (
        ":rotating_light:",
        "Rollback FAILED for {place}: it may still be serving traffic",
    ),
    # Not "Dry run": a freeze sends this kind too; the action line says which it was.
    NotificationKind.WOULD_ROLL_BACK: (":warning:", "Would have rolled back {place} (not executed)"),
    NotificationKind.PASSED: (":white_check_mark:", "{place} passed its bake"),
    NotificationKind.INCONCLUSIVE: (":grey_question:", "No verdict for {place}: inconclusive"),
    NotificationKind.BLIND: (":see_no_evil:", "Watching {place} blind: no usable metrics"),
}


def place(deployment: Deployment) -> str:
    """``checkout v2 in prod``: the words people use for a deploy."""
    where = f" in {deployment.environment}" if deployment.environment else ""
    return f"{deployment.service} {deployment.version}{where}"


def title(kind: NotificationKind, deployment: Deployment) -> str:
    """One line that says what happened, without markup (plain text for every channel)."""
    return _TITLES[kind][1].format(place=place(deployment))


def emoji(kind: NotificationKind) -> str:
    """A Slack emoji code per kind, so a channel can be scanned by eye."""
    return _TITLES[kind][0]
