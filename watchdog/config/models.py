"""The configuration schema (DESIGN §3, a contract), as nested pydantic models.

Every field says its unit, its default and why. Unknown keys are refused everywhere (``extra="forbid"``)
so that a misspelt key is an error, not a silently ignored setting. Adapter sections (``providers``,
``rollback``, ``notify``) keep only ``type`` here; the rest of each section is validated against the
adapter's own ``Settings`` model by :mod:`watchdog.config.loader`.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """``30s``, ``10m``, ``2h``, ``1.5h``, ``500ms`` → seconds. Bare numbers are refused on purpose:
    ``bake: 30`` is ambiguous (seconds? minutes?) and a wrong guess bakes for the wrong time."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"{value!r} is not a duration (write it like 30s, 10m or 2h)")
    m = _DURATION.match(value)
    if m is None:
        raise ValueError(f"{value!r} is not a duration (write it like 30s, 10m or 2h)")
    seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if seconds <= 0:
        raise ValueError(f"{value!r} is not a positive duration")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact form, for messages and for ``{interval}`` in PromQL (``1m``, ``30s``)."""
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and float(seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    return f"{round(seconds * 1000)}ms"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema({"type": "string", "pattern": _DURATION.pattern, "examples": ["30s", "10m"]}),
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ApiToken(_Section):
    name: str
    """Who holds the token; written to the audit trail of every action taken with it."""
    token: str = Field(min_length=16)
    """The bearer token. At least 16 characters; keep it in a file (`${file:/run/secrets/...}`)."""
    role: Literal["viewer", "operator", "admin"] = "viewer"
    """viewer reads; operator pauses, resumes, rolls back and aborts; admin also promotes and freezes."""


def _secret_list(value: Any) -> Any:
    items = [value] if isinstance(value, str) else value
    if isinstance(items, list) and any(isinstance(s, str) and not s.strip() for s in items):
        raise ValueError("a webhook secret is empty (is its environment variable set to ''?)")
    return items


SecretList = Annotated[
    list[str],
    BeforeValidator(_secret_list),
    WithJsonSchema({"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
]


class ServerConfig(_Section):
    listen: str = "127.0.0.1:8080"
    """host:port to listen on. Loopback by default: put a TLS proxy in front to expose it."""
    webhook_secrets: dict[str, SecretList] = Field(default_factory=dict)
    """Per source, the secret (or list of secrets, during a rotation) that signs its webhooks."""
    allow_unsigned: list[str] = Field(default_factory=list)
    """Sources accepted without a secret. Empty by default: an unsigned event is refused (401)."""
    api_tokens: list[ApiToken] = Field(default_factory=list)
    """Bearer tokens for the operator API."""
    public_reads: bool = False
    """Serve the read-only API without a token (inside a trusted network only)."""
    shutdown_timeout: Duration = 10.0
    """How long SIGTERM waits for in-flight work before cancelling it. 10s fits systemd's default
    TimeoutStopSec (90s) and Kubernetes' terminationGracePeriodSeconds (30s) with room to spare."""

    @field_validator("listen")
    @classmethod
    def _listen_has_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{value!r} is not host:port")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class StoreConfig(_Section):
    url: str = "sqlite:///var/lib/rollback-watchdog/state.db"
    """Where deployments are kept: sqlite:///ABSOLUTE/PATH (sqlite:///:memory: for tests) or
    postgresql://user@host/db when several replicas share the work."""

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise ValueError(f"{value!r} is not a sqlite:// or postgresql:// URL")
        return value


class AdapterSection(BaseModel):
    """A named adapter instance: `type` picks the adapter, the other keys are its settings."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str
    """The adapter type, e.g. prometheus, scrape, http, slack."""

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SourceConfig(_Section):
    """Overrides of a source's default field mapping (DESIGN §4), as dotted paths into its payload.

    A path walks JSON objects by key and arrays by index (``resources.0.images.0``). A path that is
    configured must be present in every event that starts a watch: falling back to the default
    silently could watch the wrong service, so a missing one is refused (422) with the path named.
    """

    service: str | None = None
    """Path to the service name. Unset: the source's default (e.g. github: deployment.payload.service,
    else repository.name)."""
    environment: str | None = None
    """Path to the environment. Unset: the source's default (e.g. gitlab: environment)."""
    version: str | None = None
    """Path to the version being deployed. Unset: the source's default (e.g. github: deployment.sha)."""
    baseline_version: str | None = None
    """Path to the version it replaces. Unset: the source's default if it has one; without any, the
    last version of the same service and environment whose watch passed."""
    event_id: str | None = None
    """Path to the idempotency key. Unset: the source's own delivery or event id (DESIGN §4); only
    override it when that id is not stable across the tool's retries."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Extra event labels, each a label name mapped to a path (``team: deployment.payload.team``), for
    policy `match` and query templates. Empty by default: payloads carry no labels of ours."""
    start_on: str | None = None
    """The one state of the tool's event that starts a watch, compared without regard to case.
    Unset: the source's default (github and gitlab: success, flagger: Progressing, argocd: Succeeded,
    codedeploy: SUCCESS, spinnaker: orca:pipeline:complete). CodeDeploy may use START to bake while
    the deployment rolls out. A single state, not a list, so that one deploy never starts two
    watches (each state arrives as its own event with its own id)."""

    @field_validator("service", "environment", "version", "baseline_version", "event_id")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        if value is not None:
            cls._check_path(value)
        return value

    @field_validator("labels")
    @classmethod
    def _label_paths(cls, value: dict[str, str]) -> dict[str, str]:
        for name, path in value.items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                raise ValueError(f"label name {name!r} must be a word (letters, digits, _)")
            cls._check_path(path)
        return value

    @field_validator("start_on")
    @classmethod
    def _start_on_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("start_on is empty; leave it out for the source's default")
        return value

    @staticmethod
    def _check_path(value: str) -> None:
        if not re.match(r"^[^.\s]+(\.[^.\s]+)*$", value):
            raise ValueError(f"{value!r} is not a dotted path into the payload (like deployment.payload.app)")


class CheckConfig(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """Unique within the policy; shown in the API, logs and notifications."""
    type: Literal["ratio", "histogram", "gauge"]
    """ratio: bad/total counts per interval; histogram: cumulative bucket counts; gauge: a number."""
    provider: str
    """Name of an entry under `providers`."""
    bad: str | None = None
    """ratio: query for the bad events in one interval (e.g. 5xx responses)."""
    total: str | None = None
    """ratio: query for all events in one interval."""
    query: str | None = None
    """histogram and gauge: the query."""
    compare: Literal["baseline", "before", "slo"] = "baseline"
    """baseline: the same query for {baseline_version}, same time; before: the window before the
    deploy; slo: against `objective`."""
    objective: float | None = Field(default=None)
    """compare: slo: the highest acceptable ratio (ratio; histogram: share of requests slower than
    the edge) or value (gauge; the lowest with direction: decrease)."""
    critical: bool = False
    """A failing critical check rolls back on its own, whatever the policy's failure threshold."""
    direction: Literal["increase", "decrease", "both"] = "increase"
    """Which change is bad. Error ratios and latency get worse upward, hence the default."""
    before_window: Duration = 3600.0
    """How far back before the deploy a check reads history, one query per poll interval and at
    most 120 of them: the reference rate (compare: before), dispersion factors, the range of effects
    a ratio check's test bets on (from what the bake could show at that traffic to what a few polls
    decide anyway), a histogram's edges and latency distribution, how slowly a gauge against an
    objective drifts. 1h by default."""
    min_requests: int = Field(default=0, ge=0)
    """Total events (both arms) below which the check is not judged yet (too little traffic)."""
    dry_run: bool = False
    """This check is computed and reported but never causes a rollback."""
    tolerance: float | None = Field(default=None, gt=0, le=10)
    """Early pass: end the bake as passed once the check is confident (95 %) the new version is at
    most this much worse (0.1 = 10 % more errors). Unset: the check always bakes to the end."""
    edges: list[float] | None = Field(default=None, min_length=1, max_length=5)
    """histogram: bucket bounds (seconds) to count requests slower than, e.g. an SLO threshold.
    Unset: the bounds nearest the baseline's p50, p90, p99 and p99.9, chosen from data before the deploy."""
    block: Duration = 120.0
    """gauge: length of the blocks whose means are tested. Gauges are autocorrelated from poll to
    poll; means over 2 minutes are close to independent for most resource metrics."""
    test: Literal["sequential", "mann-whitney"] = "sequential"
    """sequential: the anytime-valid test; mann-whitney: a Kayenta-style fixed-horizon test at the
    end of the bake (gauge checks)."""

    @model_validator(mode="after")
    def _queries_fit_type(self) -> CheckConfig:
        if self.type == "ratio":
            if not self.bad or not self.total:
                raise ValueError("a ratio check needs both `bad` and `total` queries")
            if self.query:
                raise ValueError("a ratio check takes `bad` and `total`, not `query`")
        elif not self.query:
            raise ValueError(f"a {self.type} check needs a `query`")
        if self.compare == "slo" and self.objective is None:
            what = "the highest acceptable value" if self.type == "gauge" else "the highest acceptable ratio"
            raise ValueError(f"compare: slo needs an `objective` ({what})")
        if self.type != "gauge" and self.objective is not None and not 0 < self.objective < 1:
            raise ValueError(f"a {self.type} check's `objective` is a ratio below 1 (0.01 = 1 %)")
        if self.type == "histogram" and self.compare == "slo" and not self.edges:
            raise ValueError("a histogram check with compare: slo needs `edges` (the latency threshold)")
        if self.test == "mann-whitney" and self.type != "gauge":
            raise ValueError("test: mann-whitney is for gauge checks")
        if self.edges is not None and self.type != "histogram":
            raise ValueError("`edges` is for histogram checks")
        return self


class PolicyConfig(_Section):
    name: str
    """Shown in the API and notifications."""
    match: dict[str, str] = Field(default_factory=dict)
    """Event fields (service, environment, strategy, source) or labels, each a glob (`checkout-*`).
    Empty matches every event."""
    bake: Duration = 1800.0
    """The bake window. 30m by default: long enough for a few thousand requests on most services."""
    interval: Duration = 30.0
    """How often providers are polled. 30s by default: a typical Prometheus scrape interval is 15s,
    so each poll sees at least one new scrape."""
    alpha: float = Field(default=0.01, gt=0, lt=0.5)
    """False-rollback budget for the whole bake and all checks (1 % by default)."""
    dry_run: bool = False
    """Decide and notify, never roll back."""
    rollback: str | None = None
    """Name of an entry under `rollback`. Without one, a failing verdict is notified only."""
    notify: list[str] = Field(default_factory=list)
    """Names of entries under `notify`."""
    failed_checks_to_rollback: int = Field(default=1, ge=1)
    """How many failing non-critical checks roll back. 1 by default: any failing check does."""
    on_no_data: Literal["hold", "rollback", "pass"] = "hold"
    """What a bake that ends blind (no data, too little traffic, provider down) becomes:
    hold → inconclusive, rollback, or pass."""
    blind_after: Duration | None = 300.0
    """Notify when a check has had no usable data this long ("blind: checkout's checks have had no
    data for 5 minutes"); once per blind stretch. Null: never."""
    poll_timeout: Duration = 20.0
    """Budget for one poll's provider queries, retries included."""
    checks: list[CheckConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _coherent(self) -> PolicyConfig:
        if self.interval > self.bake:
            raise ValueError("`interval` is longer than `bake`: the bake would end before a poll")
        names = [c.name for c in self.checks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"check names must be unique; repeated: {', '.join(dupes)}")
        return self

    def matches(self, fields: dict[str, str]) -> bool:
        """Whether every `match` glob fits the event's field (or label) of that name."""
        return all(
            key in fields and fnmatch.fnmatchcase(fields[key], pattern) for key, pattern in self.match.items()
        )


class LoggingConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console", "auto"] = "auto"
    """json for journald and log shippers, console for a terminal; auto picks by whether stderr is
    a terminal."""


class WatchdogConfig(_Section):
    """The whole configuration file."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    providers: dict[str, AdapterSection] = Field(default_factory=dict)
    """Metrics providers by name."""
    rollback: dict[str, AdapterSection] = Field(default_factory=dict)
    """Rollback targets by name."""
    notify: dict[str, AdapterSection] = Field(default_factory=dict)
    """Notifiers by name."""
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    """Per-source field overrides (DESIGN §4)."""
    policies: list[PolicyConfig] = Field(default_factory=list)
    """The first policy whose `match` fits an event applies; an event no policy fits is recorded
    but not watched."""
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    def policy_for(self, fields: dict[str, str]) -> PolicyConfig | None:
        return next((p for p in self.policies if p.matches(fields)), None)


Location = tuple[str | int, ...]


def reference_problems(config: WatchdogConfig) -> list[tuple[Location, str]]:
    """Names that point nowhere (a check's provider, a policy's rollback or notifier), with the
    location of the key that names them, so the loader can report file and line."""
    problems: list[tuple[Location, str]] = []
    for i, policy in enumerate(config.policies):
        if policy.rollback is not None and policy.rollback not in config.rollback:
            problems.append(
                (("policies", i, "rollback"), f"{policy.rollback!r} is not defined under `rollback`")
            )
        for j, name in enumerate(policy.notify):
            if name not in config.notify:
                problems.append((("policies", i, "notify", j), f"{name!r} is not defined under `notify`"))
        for j, check in enumerate(policy.checks):
            if check.provider not in config.providers:
                problems.append(
                    (
                        ("policies", i, "checks", j, "provider"),
                        f"{check.provider!r} is not defined under `providers`",
                    )
                )
    return problems
