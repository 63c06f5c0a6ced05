"""Replay throughput: how many recordings (and polls) per second ``watchdog replay`` gets through.

The target (issue 3, item 5): at least 200 recordings of 60 polls with two ratio checks each per
second, on one core. This script generates N seeded recordings of that shape into a temporary
folder, replays them in-process (single-threaded: one event loop, one recording after another),
then times the CLI end to end on the same folder, and prints the figures and the command lines.

    .venv/bin/python bench/replay_throughput.py [--recordings 200] [--polls 60] [--bad 0.0]
                                                [--repeat 3] [--profile]

Recordings are healthy by default (canary and baseline at the same error rate), so every one runs
all its polls: a bad canary is decided after a few polls and would flatter the figures. ``--bad``
makes that fraction of the canaries fail (10x the baseline's error rate) to see the mix.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from watchdog.config.loader import LoadedConfig, load_config
from watchdog.logs import configure_logging
from watchdog.plugins import PluginRegistry
from watchdog.replay import replay_paths

INTERVAL = 30
CONFIG = """\
providers:
  prom: {{type: prometheus, url: "http://127.0.0.1:9090"}}
policies:
  - name: bench
    match: {{service: checkout}}
    bake: {bake}s
    interval: {interval}s
    alpha: 0.01
    checks:
      - name: errors
        type: ratio
        provider: prom
        bad: 'sum(increase(http_requests_total{{version="{{version}}",code=~"5.."}}[{{interval}}]))'
        total: 'sum(increase(http_requests_total{{version="{{version}}"}}[{{interval}}]))'
      - name: timeouts
        type: ratio
        provider: prom
        bad: 'sum(increase(http_timeouts_total{{version="{{version}}"}}[{{interval}}]))'
        total: 'sum(increase(http_requests_total{{version="{{version}}"}}[{{interval}}]))'
"""


def recording(rng: np.random.Generator, polls: int, bad: bool) -> dict[str, Any]:
    """One deploy: about 1,500 requests per arm and interval, 0.5 % errors and 0.2 % timeouts."""
    checks: dict[str, Any] = {}
    for check, rate in (("errors", 0.005), ("timeouts", 0.002)):
        arms: dict[str, list[list[Any]]] = {}
        for arm in ("canary", "baseline"):
            p = rate * (10 if bad and arm == "canary" else 1)
            totals = rng.poisson(1500, polls)
            bads = rng.binomial(totals, p)
            arms[arm] = [
                [INTERVAL * (k + 1), {"bad": int(b), "total": int(t)}]
                for k, (b, t) in enumerate(zip(bads, totals, strict=True))
            ]
        checks[check] = arms
    deployment = {"service": "checkout", "environment": "prod", "version": "v2", "baseline_version": "v1"}
    return {"deployment": deployment, "checks": checks}


def generate(folder: Path, count: int, polls: int, bad_fraction: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(count):
        data = recording(rng, polls, bad=rng.random() < bad_fraction)
        (folder / f"rec-{i:05d}.json").write_text(json.dumps(data))
    config = folder / "watchdog.yaml"
    config.write_text(CONFIG.format(bake=polls * INTERVAL, interval=INTERVAL))
    return config


async def replay_all(loaded: LoadedConfig, folder: Path) -> list[dict[str, Any]]:
    return [result async for result in replay_paths(loaded, folder)]


def polls_run(results: list[dict[str, Any]]) -> int:
    """Polls the Watch actually made (a recording decided early stops polling)."""
    return sum(
        max((c["statistics"].get("polls", 0) for c in r.get("checks", [])), default=0) for r in results
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recordings", type=int, default=200)
    parser.add_argument("--polls", type=int, default=60)
    parser.add_argument("--bad", type=float, default=0.0, help="fraction of failing canaries")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="in-process runs; the best is reported")
    parser.add_argument("--profile", action="store_true", help="cProfile one in-process run")
    parser.add_argument("--no-cli", action="store_true", help="skip timing the CLI")
    args = parser.parse_args()

    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(
        f"python {sys.version.split()[0]}, cpus {sorted(os.sched_getaffinity(0))}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="watchdog-replay-bench-") as tmp:
        folder = Path(tmp)
        config = generate(folder, args.recordings, args.polls, args.bad, args.seed)
        size = sum(p.stat().st_size for p in folder.glob("*.json"))
        print(
            f"{args.recordings} recordings x {args.polls} polls x 2 ratio checks "
            f"({size / 1e6:.1f} MB of JSON, seed {args.seed}, {args.bad:.0%} bad) in {folder}"
        )

        loaded = load_config(config, PluginRegistry.from_entry_points(), strict_secrets=False)
        configure_logging("warning", "json")
        best = best_cpu = float("inf")
        results: list[dict[str, Any]] = []
        for _ in range(args.repeat):
            started, cpu = time.perf_counter(), time.process_time()
            results = asyncio.run(replay_all(loaded, folder))
            wall = time.perf_counter() - started
            cpu = time.process_time() - cpu
            best, best_cpu = min(best, wall), min(best_cpu, cpu)
            print(f"  in-process run: {wall:.3f} s wall, {cpu:.3f} s cpu")
        verdicts: dict[str, int] = {}
        for r in results:
            verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
        polls = polls_run(results)
        print(f"verdicts: {verdicts}; polls made: {polls}")
        for label, seconds in (("wall", best), ("cpu", best_cpu)):
            print(
                f"in-process, best {label} time of {args.repeat}: {seconds:.3f} s = "
                f"{len(results) / seconds:,.0f} recordings/s, {polls / seconds:,.0f} polls/s, "
                f"{2 * polls / seconds:,.0f} check-polls/s ({1e6 * seconds / max(polls, 1):.0f} us per poll)"
            )
        print(f"peak RSS (this process): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")

        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            asyncio.run(replay_all(loaded, folder))
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)

        if not args.no_cli:
            watchdog = Path(sys.executable).with_name("watchdog")
            command = [str(watchdog), "replay", "--config", str(config), "--recording", str(folder), "--json"]
            print("cli command:", shlex.join(command), "> /dev/null")
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, check=False)
            wall = time.perf_counter() - started
            lines = done.stdout.decode().splitlines()
            child = resource.getrusage(resource.RUSAGE_CHILDREN)
            print(
                f"cli end to end: exit {done.returncode}, {len(lines)} lines in {wall:.3f} s wall "
                f"(start-up included), {len(lines) / wall:,.0f} recordings/s, "
                f"cpu {child.ru_utime + child.ru_stime:.3f} s, peak RSS {child.ru_maxrss / 1024:.0f} MiB"
            )
            if done.returncode != 0 or done.stderr:
                print(done.stderr.decode()[-2000:], file=sys.stderr)
            started = time.perf_counter()
            subprocess.run([str(watchdog), "--version"], capture_output=True, check=False)
            print(f"cli start-up alone (watchdog --version): {time.perf_counter() - started:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
