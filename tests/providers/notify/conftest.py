"""Fixtures for the notifiers, over those of ``tests/providers``: the loopback server answers as
Slack does (200 and a plain-text ``ok``) at a Slack-shaped path, deployments have been rolled back,
and notifications are built from the model classes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from watchdog.model import Deployment, State
from watchdog.ports import Notification, NotificationKind


@pytest.fixture
def first_reply(first_reply: Any) -> Any:
    """Slack's answer to a good message, with the content type Slack sends it with."""
    return dataclasses.replace(first_reply, body="ok", content_type="text/html")


@pytest.fixture
def hook_path() -> str:
    return "/services/T0001/B0002/t0ken-secret"


@pytest.fixture
def deployment_state() -> State:
    return State.ROLLED_BACK


@pytest.fixture
def make_notification(
    make_deployment: Callable[..., Deployment],
) -> Callable[..., Notification]:
    """Build a ROLLED_BACK notification for checkout v2; keyword arguments replace fields."""

    def make(**overrides: Any) -> Notification:
        deployment = overrides.pop("deployment", None) or make_deployment()
        fields: dict[str, Any] = {
            "kind": NotificationKind.ROLLED_BACK,
            "deployment": deployment,
            "headline": "errors regressed: 10.2 % vs 0.5 % for the baseline",
            "action": "Rolled back through hook",
            "checks": deployment.checks,
        }
        fields.update(overrides)
        return Notification(**fields)

    return make
