"""The config loader (DESIGN §3): every problem named by file, line and key; unknown keys refused at
every level; secrets interpolated into parsed values only; adapter sections validated against the
adapter's own settings model; names that point nowhere refused where they are written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.config.config_texts import NAME, VALID, line_of
from watchdog.config.loader import LoadedConfig, load_config
from watchdog.errors import ConfigError
from watchdog.plugins import PluginRegistry

Load = Callable[..., LoadedConfig]
Problems = Callable[..., list[str]]

SECRETS = """\
server:
  webhook_secrets:
    generic: {value}
"""


def secret_config(value: str) -> str:
    return SECRETS.format(value=value)


# --- a good file ------------------------------------------------------------------------------


def test_valid_config_loads_with_adapter_settings_validated(load: Load) -> None:
    """A correct file loads without warnings; each named adapter's settings are validated by the
    adapter's own model and kept under (section, name)."""
    loaded = load(VALID)
    assert loaded.warnings == []
    assert loaded.path == NAME
    config = loaded.config
    assert [p.name for p in config.policies] == ["checkout-prod"]
    assert config.policies[0].bake == 1800.0
    assert config.policies[0].interval == 30.0
    assert set(loaded.adapter_settings) == {("providers", "prom"), ("rollback", "hook"), ("notify", "slack")}
    assert str(loaded.adapter_settings[("providers", "prom")].url) == "http://127.0.0.1:9090"  # type: ignore[attr-defined]


def test_empty_file_is_all_defaults(load: Load) -> None:
    """An empty file is a valid config of defaults (loopback listener, no policies), not a crash."""
    config = load("").config
    assert config.server.listen == "127.0.0.1:8080"
    assert config.policies == []


def test_load_config_reads_a_file_and_names_it_in_errors(tmp_path: Path, registry: PluginRegistry) -> None:
    """`load_config` takes a path; the problems it reports start with that path."""
    good = tmp_path / "good.yaml"
    good.write_text(VALID, encoding="utf-8")
    assert load_config(good, registry).path == str(good)
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  listn: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(bad, registry)
    assert caught.value.problems == [f"{bad}:2: server.listn: unknown key"]


def test_missing_file_is_a_config_error_naming_it(tmp_path: Path, registry: PluginRegistry) -> None:
    """A file that cannot be read is a ConfigError naming the file, not an OSError traceback."""
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing, registry)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{missing}: cannot read")


# --- where errors point -----------------------------------------------------------------------


def test_error_names_file_line_and_dotted_key(problems: Problems) -> None:
    """The documented form: `watchdog.yaml:7: policies[0].bake: 'soon' is not a duration`."""
    text = """\
providers:
  prom: {type: prometheus, url: "http://127.0.0.1:9090"}
policies:
  - name: p
    match: {service: checkout}
    interval: 30s
    bake: soon
    checks:
      - {name: errors, type: ratio, provider: prom, bad: a, total: b}
"""
    (problem,) = problems(text)
    assert problem.startswith("watchdog.yaml:7: policies[0].bake: 'soon' is not a duration")


def test_every_problem_is_reported_not_just_the_first(problems: Problems) -> None:
    """Several mistakes give several lines, each with its own line number and key."""
    text = VALID.replace("listen: 127.0.0.1:8080", "listen: nowhere").replace("bake: 30m", "bake: 30")
    found = problems(text)
    assert f"{NAME}:{line_of(text, 'listen:')}: server.listen: 'nowhere' is not host:port" in found
    bake = f"{NAME}:{line_of(text, 'bake:')}: policies[0].bake: 30 is not a duration"
    assert any(p.startswith(bake) for p in found)


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("  listen: 127.0.0.1:8080", "  listen: 127.0.0.1:8080\n  listne: x", "server.listne"),
        ("store:\n", "store:\n  uri: x\n", "store.uri"),
        ("    bake: 30m", "    bake: 30m\n    bake_time: 1h", "policies[0].bake_time"),
        (
            "        critical: true",
            "        critical: true\n        critcal: true",
            "policies[0].checks[0].critcal",
        ),
        (
            "    match: {service: checkout, environment: prod}",
            "    match: {service: checkout, environment: prod}\n    matches: {}",
            "policies[0].matches",
        ),
        (
            '{name: oncall, token: "0123456789abcdef-oncall", role: operator}',
            '{name: oncall, token: "0123456789abcdef-oncall", role: operator, scope: all}',
            "server.api_tokens[0].scope",
        ),
        ("store:\n", "logging: {level: info, colour: true}\nstore:\n", "logging.colour"),
        ("store:\n", "sources:\n  generic: {servic: app}\nstore:\n", "sources.generic.servic"),
        ("store:\n", "stroe: {}\nstore:\n", "stroe"),
    ],
)
def test_unknown_keys_are_refused_at_every_level(problems: Problems, old: str, new: str, key: str) -> None:
    """A misspelt key is an error naming the key and its line, whatever its depth: never a silently
    ignored setting."""
    text = VALID.replace(old, new, 1)
    assert text != VALID
    found = problems(text)
    last = key.rsplit(".", 1)[-1]
    assert f"{NAME}:{line_of(text, last + ':')}: {key}: unknown key" in found


def test_unknown_key_inside_an_adapter_section_is_refused(problems: Problems) -> None:
    """Adapter sections are checked against the adapter's own settings model: `providers.prom.urll`
    is an unknown key (and the missing `url` is reported too), each with the line."""
    text = VALID.replace(
        'prom: {type: prometheus, url: "http://127.0.0.1:9090"}',
        'prom:\n    type: prometheus\n    urll: "http://127.0.0.1:9090"',
    )
    found = problems(text)
    assert f"{NAME}:{line_of(text, 'urll:')}: providers.prom.urll: unknown key" in found
    assert f"{NAME}:{line_of(text, 'prom:')}: providers.prom.url: required key is missing" in found


def test_unknown_key_in_rollback_and_notify_sections_is_refused(problems: Problems) -> None:
    """The same holds for rollback targets and notifiers."""
    text = VALID.replace('/rollback"}', '/rollback", secrt: x}')
    text = text.replace('XXXX"}', 'XXXX", chanel: "#ops"}')
    found = problems(text)
    assert f"{NAME}:{line_of(text, 'secrt')}: rollback.hook.secrt: unknown key" in found
    assert f"{NAME}:{line_of(text, 'chanel')}: notify.slack.chanel: unknown key" in found


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("server:\n  listen: [127.0.0.1\n", 3),  # unclosed flow sequence: found at end of input
        ("policies:\n  - name: x\n   bad\n", 3),  # a plain line inside a mapping
        ("policies:\n  - name: a\n\tbake: 1m\n", 3),  # a tab used for indentation
    ],
)
def test_invalid_yaml_reports_a_line(problems: Problems, text: str, line: int) -> None:
    """A file that is not YAML is one problem naming the file and a line, not a parser traceback."""
    (problem,) = problems(text)
    assert problem.startswith(f"{NAME}:{line}: not valid YAML: ")


def test_top_level_must_be_a_mapping(problems: Problems) -> None:
    """A list or a scalar at the top is refused clearly."""
    assert problems("- server\n- store\n") == [f"{NAME}:1: the top level must be a mapping of sections"]


def test_yaml_aliases_are_expanded(load: Load) -> None:
    """Anchors and aliases are plain YAML and work: one provider section reused under two names."""
    text = VALID.replace(
        'prom: {type: prometheus, url: "http://127.0.0.1:9090"}',
        'prom: &prom {type: prometheus, url: "http://127.0.0.1:9090"}\n  prom2: *prom',
    )
    assert set(load(text).config.providers) == {"prom", "prom2"}


def test_yaml_merge_key_is_supported(load: Load) -> None:
    """`<<: *anchor` (YAML merge, supported by yaml.safe_load) merges a mapping into another."""
    text = VALID.replace(
        'prom: {type: prometheus, url: "http://127.0.0.1:9090"}',
        'prom: &prom {type: prometheus, url: "http://127.0.0.1:9090"}\n'
        "  slow:\n    <<: *prom\n    timeout: 30s",
    )
    loaded = load(text)
    assert loaded.adapter_settings[("providers", "slow")].timeout == 30.0  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", ["!env PORT", "!!int soon"], ids=["unknown-tag", "bad-int"])
def test_value_yaml_cannot_construct_is_a_config_error_with_a_line(problems: Problems, value: str) -> None:
    """A scalar YAML cannot build (an unknown `!tag`, `!!int` of a word) is a config problem naming
    file and line (exit 2 from `validate`), not an uncaught exception."""
    text = f"server:\n  listen: 127.0.0.1:8080\n  shutdown_timeout: {value}\n"
    (problem,) = problems(text)
    assert problem.startswith(f"{NAME}:3:")


def test_repeated_key_is_refused(problems: Problems) -> None:
    """A key written twice in one mapping is an error at the second occurrence, not last-one-wins."""
    text = VALID.replace("    bake: 30m", "    bake: 30m\n    bake: 2h")
    found = problems(text)
    assert any(p.startswith(f"{NAME}:{line_of(text, 'bake: 2h')}: policies[0].bake") for p in found)


# --- interpolation ----------------------------------------------------------------------------


def test_environment_variable_is_interpolated(load: Load) -> None:
    """`${NAME}` takes its value from the environment."""
    loaded = load(secret_config("${HOOK_SECRET}"), environ={"HOOK_SECRET": "s3cret"})
    assert loaded.config.server.webhook_secrets["generic"] == ["s3cret"]
    assert loaded.warnings == []


def test_interpolation_within_a_longer_value(load: Load) -> None:
    """A reference can be part of a value (`127.0.0.1:${PORT}`); the result is validated as usual."""
    text = "server:\n  listen: 127.0.0.1:${PORT}\n"
    assert load(text, environ={"PORT": "9999"}).config.server.port == 9999


def test_file_reference_is_read_with_trailing_newline_stripped(load: Load, tmp_path: Path) -> None:
    """`${file:/path}` reads the file; the trailing newline every editor adds is not part of the secret."""
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n", encoding="utf-8")
    loaded = load(secret_config(f"${{file:{secret}}}"))
    assert loaded.config.server.webhook_secrets["generic"] == ["from-a-file"]


def test_doubled_dollar_stays_literal(load: Load) -> None:
    """`$${X}` is an escape: the value is the literal text `${X}`, and X is neither read nor missed."""
    loaded = load(secret_config("'pre$${X}post'"), environ={"X": "nope"})
    assert loaded.config.server.webhook_secrets["generic"] == ["pre${X}post"]
    assert loaded.warnings == []


@pytest.mark.parametrize(
    "secret",
    ["key: value", "a\n- injected", "\"quoted\" and 'single'", "{generic: x}", "[1, 2]", "x # not a comment"],
)
def test_interpolated_value_cannot_change_the_structure(load: Load, secret: str) -> None:
    """A secret full of YAML syntax (`: `, a newline and `- x`, braces) is one string value: the file's
    structure comes from the file alone."""
    loaded = load(secret_config("${S}"), environ={"S": secret})
    assert loaded.config.server.webhook_secrets["generic"] == [secret]


def test_interpolated_mapping_text_is_not_parsed_as_a_mapping(problems: Problems) -> None:
    """A whole section given as `${VAR}` stays a string, so it is refused as the wrong type rather
    than parsed into keys."""
    (problem,) = problems("server:\n  webhook_secrets: ${S}\n", environ={"S": "{generic: x}"})
    assert problem.startswith(f"{NAME}:2: server.webhook_secrets: ")


def test_unset_variable_is_an_error_when_strict(problems: Problems) -> None:
    """`serve` loads with strict_secrets=True: an unset variable refuses the file, naming line, key
    and variable."""
    assert problems(secret_config("${HOOK_SECRET}")) == [
        f"{NAME}:3: server.webhook_secrets.generic: environment variable HOOK_SECRET is not set"
    ]


def test_unset_variable_is_a_warning_when_not_strict(load: Load) -> None:
    """`validate` loads with strict_secrets=False: configs are linted where secrets are absent."""
    loaded = load(secret_config("${HOOK_SECRET}"), strict_secrets=False)
    assert loaded.warnings == [
        f"{NAME}:3: server.webhook_secrets.generic: environment variable HOOK_SECRET is not set"
    ]


def test_missing_secret_file_is_an_error_when_strict_and_a_warning_when_not(
    load: Load, problems: Problems, tmp_path: Path
) -> None:
    """The same rule holds for `${file:...}` that cannot be read."""
    missing = tmp_path / "absent"
    text = secret_config(f"${{file:{missing}}}")
    (problem,) = problems(text)
    assert problem.startswith(f"{NAME}:3: server.webhook_secrets.generic: cannot read secret file {missing}")
    (warning,) = load(text, strict_secrets=False).warnings
    assert warning == problem


@pytest.mark.parametrize(
    "text",
    [
        "server:\n  listen: 127.0.0.1:${PORT}\n",
        "server:\n  api_tokens:\n    - {name: oncall, token: '${TOKEN}', role: operator}\n",
        "providers:\n  prom: {type: prometheus, url: '${PROM_URL}'}\n",
    ],
    ids=["listen", "api-token", "prometheus-url"],
)
def test_unset_variable_in_a_checked_field_is_still_only_a_warning(load: Load, text: str) -> None:
    """DESIGN §3: `validate` warns about an unset secret wherever it sits (the shipped demo config,
    `listen: 127.0.0.1:${DEMO_PORT}`, is such a file)."""
    loaded = load(text, strict_secrets=False)
    assert len(loaded.warnings) == 1


@pytest.mark.parametrize("value", ["${WEBHOOK-SECRET}", "${ WEBHOOK_SECRET }", "${WEBHOOK_SECRET", "${}"])
def test_malformed_reference_is_an_error_not_a_literal_secret(problems: Problems, value: str) -> None:
    """`${WEBHOOK-SECRET}` (a dash), `${ X }`, an unclosed `${X` are typos of a reference: refused
    (strict or not), since taken literally they would make the text itself the secret. A literal
    `${` is written `$${`."""
    environ = {"WEBHOOK_SECRET": "s3cret"}
    (problem,) = problems(secret_config(f"'{value}'"), environ=environ)
    assert problem.startswith(f"{NAME}:3: server.webhook_secrets.generic: ")


@pytest.mark.parametrize("value", ["${S}", "['ok-secret', '${S}']"], ids=["single", "in-rotation-list"])
@pytest.mark.parametrize("empty", ["", "   "])
def test_empty_webhook_secret_is_refused(problems: Problems, value: str, empty: str) -> None:
    """A webhook secret that is empty (a variable set to '') would accept any signature: refused."""
    (problem,) = problems(secret_config(value), environ={"S": empty})
    assert problem.startswith(f"{NAME}:3: server.webhook_secrets.generic: a webhook secret is empty")


def test_webhook_secrets_accept_a_list_during_rotation(load: Load) -> None:
    """A list of secrets is accepted (rotation); a single one is normalised to a list of one."""
    loaded = load(secret_config("[new-secret, old-secret]"))
    assert loaded.config.server.webhook_secrets["generic"] == ["new-secret", "old-secret"]


def test_keys_are_not_interpolated(problems: Problems) -> None:
    """Only values are interpolated: a `${X}` key is just an unknown key."""
    (problem,) = problems("${X}: {}\n", environ={"X": "server"})
    assert problem == f"{NAME}:1: ${{X}}: unknown key"


# --- references between sections --------------------------------------------------------------


def test_references_to_undefined_names_are_errors_at_the_referencing_line(problems: Problems) -> None:
    """A policy's rollback target, notifier and a check's provider must exist; the error points at
    the key that names the missing entry."""
    text = (
        VALID.replace("rollback: hook", "rollback: hookk")
        .replace("notify: [slack]", "notify:\n      - slack\n      - pager")
        .replace("provider: prom", "provider: grafana")
    )
    found = problems(text)
    assert found == [
        f"{NAME}:{line_of(text, 'rollback: hookk')}: policies[0].rollback: "
        "'hookk' is not defined under `rollback`",
        f"{NAME}:{line_of(text, '- pager')}: policies[0].notify[1]: 'pager' is not defined under `notify`",
        f"{NAME}:{line_of(text, 'provider: grafana')}: policies[0].checks[0].provider: "
        "'grafana' is not defined under `providers`",
    ]


def test_a_policy_without_rollback_target_is_valid(load: Load) -> None:
    """`rollback` is optional: without one a failing verdict is only notified."""
    loaded = load(VALID.replace("    rollback: hook\n", ""))
    assert loaded.config.policies[0].rollback is None


# --- adapter types ----------------------------------------------------------------------------


def test_unknown_adapter_type_lists_the_available_ones(problems: Problems, registry: PluginRegistry) -> None:
    """A misspelt type is "unknown", with the types this install offers."""
    text = VALID.replace("type: prometheus", "type: promethues")
    (problem,) = problems(text)
    available = ", ".join(registry.types("metrics"))
    assert problem == (
        f"{NAME}:{line_of(text, 'promethues')}: providers.prom.type: "
        f"unknown metrics type 'promethues' (available: {available})"
    )


@pytest.mark.parametrize(
    ("old", "new", "key", "kind"),
    [
        (
            'prom: {type: prometheus, url: "http://127.0.0.1:9090"}',
            "prom: {type: graphite, api_key: x}",
            "providers.prom.type",
            "metrics",
        ),
        (
            'hook: {type: http, url: "https://ci.example/rollback"}',
            "hook: {type: nomad}",
            "rollback.hook.type",
            "rollback",
        ),
    ],
)
def test_planned_adapter_type_is_not_available_yet(
    problems: Problems, old: str, new: str, key: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A type a later release brings is "not available yet", not "unknown": a config written for a
    newer release fails understandably. Its settings are not judged."""
    monkeypatch.setattr(
        "watchdog.plugins.PLANNED",
        {
            "metrics": frozenset({"graphite"}),
            "rollback": frozenset({"nomad"}),
            "notify": frozenset(),
            "source": frozenset(),
        },
    )
    text = VALID.replace(old, new)
    (problem,) = problems(text)
    line = line_of(text, new.split(":", maxsplit=1)[0] + ":")
    assert problem.startswith(f"{NAME}:{line}: {key}: {kind} type ")
    assert "is not available yet in this version" in problem


def test_source_section_for_an_unregistered_source_is_refused(problems: Problems) -> None:
    """`sources.<name>` must name a registered source adapter."""
    text = VALID.replace("store:\n", "sources:\n  jenkins: {}\nstore:\n")
    (problem,) = problems(text)
    line = line_of(text, "jenkins")
    assert problem.startswith(f"{NAME}:{line}: sources.jenkins: unknown source type 'jenkins'")


def test_adapter_section_needs_a_type(problems: Problems) -> None:
    """An adapter entry without `type` is refused naming the entry."""
    text = VALID.replace(
        'prom: {type: prometheus, url: "http://127.0.0.1:9090"}', 'prom: {url: "http://x:1"}'
    )
    found = problems(text)
    assert f"{NAME}:{line_of(text, 'prom:')}: providers.prom.type: required key is missing" in found


def test_adapter_setting_with_a_wrong_value_names_the_setting(problems: Problems) -> None:
    """An adapter's own validation errors carry the full key path and line."""
    text = VALID.replace(
        'prom: {type: prometheus, url: "http://127.0.0.1:9090"}',
        "prom:\n    type: prometheus\n    url: http://127.0.0.1:9090\n    timeout: soon",
    )
    (problem,) = problems(text)
    line = line_of(text, "timeout: soon")
    assert problem.startswith(f"{NAME}:{line}: providers.prom.timeout: 'soon' is not")


# --- policy-level rules through the loader ----------------------------------------------------


def test_interval_longer_than_bake_is_refused_at_the_policy(problems: Problems) -> None:
    """A bake that would end before its first poll is refused, at the policy's line."""
    text = VALID.replace("bake: 30m", "bake: 20s")
    (problem,) = problems(text)
    assert problem == (
        f"{NAME}:{line_of(text, '- name: checkout-prod')}: policies[0]: "
        "`interval` is longer than `bake`: the bake would end before a poll"
    )


def test_duplicate_check_names_are_refused(problems: Problems) -> None:
    """Check names identify checks in the API and notifications: unique within a policy."""
    text = VALID + "      - {name: errors, type: ratio, provider: prom, bad: a, total: b}\n"
    (problem,) = problems(text)
    assert problem.endswith("policies[0]: check names must be unique; repeated: errors")


def test_check_rule_violation_points_at_the_check(problems: Problems) -> None:
    """A check-level rule (ratio needs bad and total) is reported at that check's line and index."""
    text = "\n".join(line for line in VALID.splitlines() if "total:" not in line) + "\n"
    (problem,) = problems(text)
    assert problem == (
        f"{NAME}:{line_of(text, '- name: errors')}: policies[0].checks[0]: "
        "a ratio check needs both `bad` and `total` queries"
    )


def test_every_documented_check_type_validates(load: Callable[..., LoadedConfig]) -> None:
    """Gauge and histogram checks (and compare: before) are analysed by this release."""
    text = VALID + (
        "      - {name: cpu, type: gauge, provider: prom, query: 'avg(cpu)'}\n"
        "      - {name: latency, type: histogram, provider: prom, query: x, compare: before}\n"
    )
    checks = load(text).config.policies[0].checks
    assert [c.type for c in checks][-2:] == ["gauge", "histogram"]
