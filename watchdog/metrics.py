"""The daemon's own Prometheus metrics, on a registry created at start-up (never at import time).

Every name starts with ``watchdog_`` (DESIGN §4). Tests read values back with
``metrics.registry.get_sample_value(...)``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_ROLLBACK_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class WatchdogMetrics:
    """All instruments in one object, passed explicitly to whoever records something."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.deployments = Gauge(
            "watchdog_deployments", "Deployments in the store, by state.", ["state"], registry=r
        )
        self.events = Counter(
            "watchdog_events_total",
            "Webhook events received, by source and outcome (created, duplicate, ignored, rejected).",
            ["source", "outcome"],
            registry=r,
        )
        self.polls = Counter(
            "watchdog_polls_total",
            "Check polls, by outcome (ok, no_data, error).",
            ["check", "outcome"],
            registry=r,
        )
        self.poll_latency = Histogram(
            "watchdog_poll_duration_seconds",
            "Time one provider query took, retries included.",
            ["provider"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.provider_errors = Counter(
            "watchdog_provider_errors_total",
            "Provider queries that failed after their retries.",
            ["provider", "kind"],
            registry=r,
        )
        self.decisions = Counter(
            "watchdog_decisions_total",
            "Final verdicts reached by watches.",
            ["verdict"],
            registry=r,
        )
        self.rollbacks = Counter(
            "watchdog_rollbacks_total",
            "Rollbacks executed, by outcome (succeeded, failed, dry_run, frozen).",
            ["outcome"],
            registry=r,
        )
        self.rollback_duration = Histogram(
            "watchdog_rollback_duration_seconds",
            "Time a rollback adapter took, retries included.",
            buckets=_ROLLBACK_BUCKETS,
            registry=r,
        )
        self.notifications = Counter(
            "watchdog_notifications_total",
            "Notifications sent, by notifier and outcome (sent, failed).",
            ["notifier", "outcome"],
            registry=r,
        )
        self.provider_queries = Counter(
            "watchdog_provider_queries_total",
            "Metrics provider queries, by outcome (ok, no_data, error).",
            ["provider", "outcome"],
            registry=r,
        )
        self.provider_query_seconds = Histogram(
            "watchdog_provider_query_seconds",
            "Time one provider query took as the core saw it, the provider's retries included.",
            ["provider"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.active_watches = Gauge(
            "watchdog_active_watches", "Watch loops running in this process.", registry=r
        )
