"""The ssh rollback adapter against real OpenSSH servers (Debian's sshd on loopback ports, each with
its own host key and an authorized client key): the rendered command runs there, values arrive
shell-quoted, host keys are verified, and every failure names each host's status and output."""

from __future__ import annotations

import functools
import getpass
import re
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from providers.rollback.ssh import HostsUnreachable, SshRollback, SshRollbackFailed
from tests.support.sshd import SshKeys, SshServer, free_port
from watchdog.errors import PermanentError, TemporaryError
from watchdog.model import DeployEvent, Deployment
from watchdog.plugins import GROUP
from watchdog.ports import RollbackRequest, RollbackTarget


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> SshKeys:
    return SshKeys.generate(tmp_path_factory.mktemp("ssh-keys"))


@pytest.fixture(scope="module")
def fleet(keys: SshKeys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[SshServer]]:
    """Three sshd processes sharing the test host key, as three hosts of one fleet."""
    servers = [SshServer(keys, tmp_path_factory.mktemp(f"sshd-{i}")) for i in range(3)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def known_hosts(fleet: list[SshServer], tmp_path: Path) -> Path:
    """The fleet's real host keys, as `ssh-keyscan` would have given them."""
    path = tmp_path / "known_hosts"
    path.write_text("".join(server.known_hosts_line() for server in fleet))
    return path


@pytest.fixture
def make_ssh(
    make_adapter: Callable[..., Any], fleet: list[SshServer], keys: SshKeys, known_hosts: Path
) -> Callable[..., SshRollback]:
    """Adapters for the first host by default, logging in as this user with the authorized key."""

    def make(**settings: Any) -> SshRollback:
        defaults = {
            "hosts": [fleet[0].address],
            "user": getpass.getuser(),
            "key_file": str(keys.client.private),
            "known_hosts": str(known_hosts),
            "command": "true",
            "connect_timeout": "5s",
            "timeout": "20s",
        }
        adapter: SshRollback = make_adapter(SshRollback, "fleet", **{**defaults, **settings})
        return adapter

    return make


@pytest.fixture
def request_for(make_deployment: Callable[..., Deployment]) -> Callable[..., RollbackRequest]:
    def make(*, key: str = "dep-42:rollback", **event: Any) -> RollbackRequest:
        fields: dict[str, Any] = {
            "source": "generic",
            "event_id": "evt-1",
            "service": "checkout",
            "version": "v2",
            "environment": "prod",
            "baseline_version": "v1",
            "target": {"namespace": "shop", "unit": "checkout.service"},
            "labels": {"team": "payments"},
            **event,
        }
        return RollbackRequest(
            make_deployment(event=DeployEvent(**fields)), key, "errors regressed", "watchdog"
        )

    return make


def hosts_of(exc: pytest.ExceptionInfo[Any]) -> dict[str, dict[str, Any]]:
    return {h["host"]: h for h in exc.value.details["hosts"]}


# --- the adapter is found ---------------------------------------------------------------------


def test_registered_as_rollback_type_ssh() -> None:
    """`type: ssh` under `rollback:` names this adapter in the entry-point group."""
    (entry,) = entry_points(group=GROUP, name="rollback.ssh")
    assert entry.load() is SshRollback


def test_is_a_rollback_target(make_ssh: Callable[..., SshRollback]) -> None:
    """The adapter satisfies the core's RollbackTarget port."""
    assert isinstance(make_ssh(), RollbackTarget)


# --- what runs --------------------------------------------------------------------------------


async def test_runs_the_rendered_command_on_the_real_sshd(
    make_ssh: Callable[..., SshRollback],
    request_for: Callable[..., RollbackRequest],
    fleet: list[SshServer],
    tmp_path: Path,
) -> None:
    """The command, with the deployment's values and target fields filled in, runs on the host;
    the file it writes there proves it, and its output's last lines come back per host."""
    out = tmp_path / "ran.txt"
    command = (
        "printf '%s\\n' {service} {version} {baseline_version} {environment} {namespace} {unit} "
        f"{{team}} {{idempotency_key}} {{host}} > {out}; echo rolled back {{service}}; echo on stderr >&2"
    )
    result = await make_ssh(command=command).rollback(request_for())
    assert out.read_text().splitlines() == [
        "checkout",
        "v2",
        "v1",
        "prod",
        "shop",
        "checkout.service",
        "payments",
        "dep-42:rollback",
        "127.0.0.1",
    ]
    (host,) = result.data["hosts"]
    assert host["host"] == fleet[0].address
    assert host["status"] == "ok" and host["exit_status"] == 0
    assert host["output_tail"] == ["rolled back checkout", "on stderr"]
    assert result.detail == "ran the rollback command on 1 host(s): all exited 0"


async def test_hostile_values_arrive_as_one_literal_argument(
    make_ssh: Callable[..., SshRollback], request_for: Callable[..., RollbackRequest], tmp_path: Path
) -> None:
    """Values are shell-quoted: a version like `v1; rm -rf /` (or with `$(...)`, backticks and
    quotes) reaches the command as one argument and runs nothing."""
    pwned = tmp_path / "pwned"
    hostile = f"v1; touch {pwned}; $(touch {pwned}) `touch {pwned}` ' \" \\ rm -rf /"
    out = tmp_path / "args.txt"
    command = f"printf '[%s]\\n' {{baseline_version}} > {out}"
    await make_ssh(command=command).rollback(request_for(baseline_version=hostile))
    assert out.read_text().splitlines() == [f"[{hostile}]"]  # one argument, one line
    assert not pwned.exists()


async def test_shell_variables_are_left_to_the_shell(
    make_ssh: Callable[..., SshRollback], request_for: Callable[..., RollbackRequest], tmp_path: Path
) -> None:
    """`${NAME}` is the remote shell's, even when NAME is a template name."""
    out = tmp_path / "vars.txt"
    await make_ssh(command=f"version=local; echo ${{version}} {{version}} > {out}").rollback(request_for())
    assert out.read_text().strip() == "local v2"


async def test_every_host_runs_it_at_most_parallel_at_a_time(
    make_ssh: Callable[..., SshRollback],
    request_for: Callable[..., RollbackRequest],
    fleet: list[SshServer],
    tmp_path: Path,
) -> None:
    """Three hosts with `parallel: 2`: each runs the command once, and never more than two at once."""
    log = tmp_path / "overlap.log"
    command = f"echo start >> {log}; sleep 0.3; echo end >> {log}"
    result = await make_ssh(hosts=[s.address for s in fleet], parallel=2, command=command).rollback(
        request_for()
    )
    events = log.read_text().split()
    assert events.count("start") == 3 and events.count("end") == 3
    running = peak = 0
    for event in events:
        running += 1 if event == "start" else -1
        peak = max(peak, running)
    assert peak == 2
    assert [h["host"] for h in result.data["hosts"]] == [s.address for s in fleet]


# --- failures ---------------------------------------------------------------------------------


async def test_partial_fleet_failure_is_permanent_listing_each_hosts_status_and_output(
    make_ssh: Callable[..., SshRollback],
    request_for: Callable[..., RollbackRequest],
    fleet: list[SshServer],
) -> None:
    """One host of three exits 3: rollback_failed, and the message and `details` name every host
    with its status and the end of its output, so a person knows which to repair."""
    bad = fleet[1]
    command = (
        'echo "rolling back {service}"; '
        f'if [ "${{SSH_CONNECTION##* }}" = {bad.port} ]; then echo "disk full" >&2; exit 3; fi; echo done'
    )
    adapter = make_ssh(hosts=[s.address for s in fleet], command=command)
    with pytest.raises(SshRollbackFailed) as caught:
        await adapter.rollback(request_for())
    message = str(caught.value)
    assert "the command failed on 1 of 3 host(s) (2 host(s) rolled back; roll back or repair" in message
    assert f"- {bad.address}: exit status 3; output: rolling back checkout ⏎ disk full" in message
    assert f"- {fleet[0].address}: ok (exit status 0)" in message
    assert f"- {fleet[2].address}: ok (exit status 0)" in message
    hosts = hosts_of(caught)
    assert hosts[bad.address]["status"] == "failed" and hosts[bad.address]["exit_status"] == 3
    assert hosts[bad.address]["output_tail"] == ["rolling back checkout", "disk full"]
    assert hosts[fleet[0].address]["status"] == "ok"
    assert hosts[fleet[0].address]["output_tail"] == ["rolling back checkout", "done"]


async def test_a_non_zero_exit_is_permanent(
    make_ssh: Callable[..., SshRollback], request_for: Callable[..., RollbackRequest]
) -> None:
    """The only host exits 7: not retried, with the status and output in the message."""
    with pytest.raises(SshRollbackFailed, match=r"exit status 7; output: no such version") as caught:
        await make_ssh(command="echo no such version; exit 7").rollback(request_for())
    assert "no host rolled back" in str(caught.value)


@pytest.mark.parametrize("entry", ["other key", "missing"])
async def test_a_host_key_that_does_not_verify_is_permanent_and_nothing_runs(
    entry: str,
    make_ssh: Callable[..., SshRollback],
    request_for: Callable[..., RollbackRequest],
    fleet: list[SshServer],
    keys: SshKeys,
    tmp_path: Path,
) -> None:
    """known_hosts holds another key for the host (rebuilt, or someone in the middle), or no entry
    at all: the connection is refused before login, nothing runs, and the message says how to check
    and fix the entry."""
    known = tmp_path / "stale_known_hosts"
    known.write_text(fleet[0].known_hosts_line(keys.other_host) if entry == "other key" else "")
    out = tmp_path / "ran.txt"
    with pytest.raises(SshRollbackFailed) as caught:
        await make_ssh(known_hosts=str(known), command=f"touch {out}").rollback(request_for())
    host = hosts_of(caught)[fleet[0].address]
    assert host["status"] == "host_key_not_verified"
    message = str(caught.value)
    assert f"ssh-keyscan -p {fleet[0].port} 127.0.0.1" in message
    assert "update known_hosts" in message and "nothing was run there" in message
    assert not out.exists()


async def test_a_refused_login_is_permanent(
    make_ssh: Callable[..., SshRollback], request_for: Callable[..., RollbackRequest], keys: SshKeys
) -> None:
    """A key the host does not authorise: rollback_failed pointing at authorized_keys."""
    with pytest.raises(SshRollbackFailed, match=r"login_refused: user .* was refused") as caught:
        await make_ssh(key_file=str(keys.other_client.private)).rollback(request_for())
    assert "authorized_keys" in str(caught.value)


async def test_a_command_that_outlives_timeout_is_permanent_with_what_it_printed(
    make_ssh: Callable[..., SshRollback], request_for: Callable[..., RollbackRequest]
) -> None:
    """The command runs past `timeout`: reported (it may still be running there), never retried,
    with the output it gave before."""
    with pytest.raises(SshRollbackFailed) as caught:
        await make_ssh(command="echo draining; sleep 3", timeout="0.7s").rollback(request_for())
    message = str(caught.value)
    assert "timeout: the command did not finish within 0.7 s; it may still be running" in message
    assert "output: draining" in message


async def test_unreachable_hosts_are_temporary_and_a_retry_skips_hosts_already_done(
    make_ssh: Callable[..., SshRollback],
    request_for: Callable[..., RollbackRequest],
    fleet: list[SshServer],
    tmp_path: Path,
) -> None:
    """A host refusing connections may come back: TemporaryError (the core retries). The retry,
    same idempotency key, runs the command only where it has not succeeded; a new key runs it
    everywhere again."""
    closed = f"127.0.0.1:{free_port()}"
    ran = tmp_path / "ran.log"
    adapter = make_ssh(hosts=[fleet[0].address, closed], command=f"echo {{host}} >> {ran}")
    for _ in range(2):
        with pytest.raises(HostsUnreachable) as caught:
            await adapter.rollback(request_for())
        assert isinstance(caught.value, TemporaryError)
        hosts = hosts_of(caught)
        assert hosts[closed]["status"] == "unreachable"
        assert "connection refused" in hosts[closed]["error"]
        assert hosts[fleet[0].address]["status"] == "ok"
        assert "retries run the command only where it has not succeeded yet" in str(caught.value)
    assert ran.read_text().splitlines() == ["127.0.0.1"]
    with pytest.raises(HostsUnreachable):
        await adapter.rollback(request_for(key="dep-43:rollback"))
    assert ran.read_text().splitlines() == ["127.0.0.1", "127.0.0.1"]


async def test_unreadable_key_or_known_hosts_stops_before_any_host(
    make_ssh: Callable[..., SshRollback], request_for: Callable[..., RollbackRequest], tmp_path: Path
) -> None:
    """A missing key or known_hosts file: permanent, naming the file and what to do, no host touched."""
    with pytest.raises(SshRollbackFailed, match="cannot read `key_file`"):
        await make_ssh(key_file=str(tmp_path / "nope")).rollback(request_for())
    with pytest.raises(SshRollbackFailed, match="cannot read `known_hosts`") as caught:
        await make_ssh(known_hosts=str(tmp_path / "nope")).rollback(request_for())
    assert "ssh-keyscan" in str(caught.value)
    assert caught.value.details == {}


async def test_a_placeholder_the_deployment_lacks_is_permanent_and_named(
    make_ssh: Callable[..., SshRollback], request_for: Callable[..., RollbackRequest]
) -> None:
    """`{baseline_version}` without one in the event, or a typo: nothing runs with a literal brace;
    the message names the placeholder and lists what is available."""
    with pytest.raises(PermanentError, match=re.escape("uses {baseline_version}, which deployment dep-42")):
        await make_ssh(command="deploy {baseline_version}").rollback(request_for(baseline_version=None))
    with pytest.raises(PermanentError, match=re.escape("uses {verison}")) as caught:
        await make_ssh(command="deploy {verison}").rollback(request_for())
    assert "{version}" in str(caught.value)


# --- settings ---------------------------------------------------------------------------------


def test_settings_require_known_hosts_and_offer_no_way_to_skip_verification() -> None:
    """Host keys are always verified: `known_hosts` is required and no key turns checking off."""
    settings = functools.partial(SshRollback.Settings.model_validate)
    base = {"hosts": ["web-1"], "user": "deploy", "key_file": "/k", "command": "true"}
    with pytest.raises(ValidationError, match="known_hosts"):
        settings(base)
    with pytest.raises(ValidationError, match="strict_host_key_checking"):
        settings({**base, "known_hosts": "/kh", "strict_host_key_checking": False})


def test_settings_parse_hosts_with_ports() -> None:
    """`host`, `host:port`, `[v6]:port` and a bare IPv6 address; duplicates and bad ports refused."""
    settings = SshRollback.Settings.model_validate(
        {
            "hosts": ["web-1", "web-2:2222", "[2001:db8::1]:2200", "2001:db8::2"],
            "user": "deploy",
            "key_file": "/k",
            "known_hosts": "/kh",
            "command": "true",
            "port": 2022,
        }
    )
    assert [h.label for h in settings.parsed_hosts()] == [
        "web-1:2022",
        "web-2:2222",
        "[2001:db8::1]:2200",
        "[2001:db8::2]:2022",
    ]
    for hosts, problem in ((["a", "a"], "listed twice"), (["a:99999"], "not a port"), (["[::1"], "not")):
        with pytest.raises(ValidationError, match=problem):
            SshRollback.Settings.model_validate(
                {"hosts": hosts, "user": "u", "key_file": "/k", "known_hosts": "/kh", "command": "true"}
            )
