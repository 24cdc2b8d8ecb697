#!/usr/bin/env python3
"""Benchmark start-up: ``manifestkit inspect IMAGE`` and ``manifestkit --help`` wall time.

    python bench/bench_startup.py [--runs 15] [--image samples/tiny-stream.vmdk] [--before DIR]

Each round runs, in turn (alternating, so load changes hit all of them alike):

* ``python -c pass``            the interpreter's own start-up (the floor: the baseline)
* ``manifestkit inspect IMAGE``  the console script's path: ``python -m manifestkit inspect``
* ``manifestkit --help``         lists every command
* ``qemu-img info IMAGE``        a native tool doing the same job (when qemu-img is installed)
* ``python -c 'import boto3'``   what inspect no longer pays for, for scale

and, with ``--before DIR`` (another checkout, e.g. a ``git worktree`` of an older commit), the
same ``inspect`` run from that tree; it prints min and median wall seconds of each, the ratio of
inspect to the baseline, to qemu-img and to the --before tree, the 0.12 s goal (issue 12 item 6),
and the load average before and after. Children get a clean environment (no AWS variables) and
the same interpreter as this script.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_SECONDS = 0.12


def clean_env(root: Path = ROOT) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MANIFESTKIT_"))}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def wall(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    # cwd "/": ``python -m`` puts the working folder first on sys.path, before PYTHONPATH
    done = subprocess.run(
        command, env=env, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.decode(errors='replace')}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="rounds (default 15, at least 3)")
    parser.add_argument("--image", type=Path, default=ROOT / "samples" / "tiny-stream.vmdk")
    parser.add_argument("--before", type=Path, help="another checkout to time inspect from")
    options = parser.parse_args()
    options.image = str(options.image.resolve())
    runs = max(3, options.runs)
    python = sys.executable
    env = clean_env()
    envs: dict[str, dict[str, str]] = {}
    commands: dict[str, list[str]] = {
        "python -c pass (baseline)": [python, "-c", "pass"],
        "manifestkit inspect IMAGE": [python, "-m", "manifestkit", "inspect", options.image],
        "manifestkit --help": [python, "-m", "manifestkit", "--help"],
    }
    if shutil.which("qemu-img"):
        commands["qemu-img info IMAGE"] = ["qemu-img", "info", options.image]
    commands["python -c 'import boto3'"] = [python, "-c", "import boto3"]
    if options.before:
        before = "inspect IMAGE, --before tree"
        commands[before] = [python, "-m", "manifestkit", "inspect", options.image]
        envs[before] = clean_env(options.before.resolve())

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {runs} alternating rounds")
    for name, command in commands.items():  # warm the page cache and the .pyc files
        wall(command, envs.get(name, env))
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            times[name].append(wall(command, envs.get(name, env)))
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'':34} {'min s':>8} {'median s':>9}")
    for name, values in times.items():
        print(f"{name:34} {min(values):8.3f} {statistics.median(values):9.3f}")
    inspect = times["manifestkit inspect IMAGE"]
    baseline = times["python -c pass (baseline)"]
    print(
        f"inspect / baseline: min {min(inspect) / min(baseline):.2f}x, median "
        f"{statistics.median(inspect) / statistics.median(baseline):.2f}x; inspect minus "
        f"baseline: {min(inspect) - min(baseline):.3f} s (min)"
    )
    if "qemu-img info IMAGE" in times:
        qemu = times["qemu-img info IMAGE"]
        print(
            f"inspect / qemu-img info: min {min(inspect) / min(qemu):.2f}x, median "
            f"{statistics.median(inspect) / statistics.median(qemu):.2f}x"
        )
    if options.before:
        old = times["inspect IMAGE, --before tree"]
        print(
            f"inspect / inspect of the --before tree: min {min(inspect) / min(old):.2f}x, "
            f"median {statistics.median(inspect) / statistics.median(old):.2f}x"
        )
    verdict = "met" if statistics.median(inspect) <= GOAL_SECONDS else "NOT met"
    print(f"goal: inspect <= {GOAL_SECONDS} s wall (median): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
