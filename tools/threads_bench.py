#!/usr/bin/env python3
"""Thread scaling of one registry on several interpreters, side by side.

Runs ``foundation._bench_threads.run_threads`` (what ``python -m foundation
bench --threads`` runs: N threads sharing one registry, lookups, a 90/10
mix and writes alone) under each interpreter given, one round at a time,
the interpreters' order rotated each round, and prints the medians side by
side: ops/s, scaling against one thread, and the ratio of each interpreter
to the first one. Typical use, 3.11 with the GIL against free-threaded 3.13t
(built by tools/build_python313t.sh), each with trio-foundation installed::

    tools/threads_bench.py /path/venv311/bin/python /path/venv313t/bin/python

Wall-clock throughput moves with the machine's load; the ops per CPU-second
column (the threads' own CPU time) does not, and the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from typing import Any

_RUN = """
import json, sys
from foundation import _bench_threads
counts, n, duration, seed, backends = json.loads(sys.argv[1])
print(json.dumps(_bench_threads.run_threads(
    counts, n=n, duration=duration, rounds=1, seed=seed, backends=backends)))
"""


def _one(python: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    spec = json.dumps([args.threads, args.n, args.duration, seed, args.backends])
    out = subprocess.run(
        [python, "-c", _RUN, spec],
        capture_output=True,
        text=True,
        timeout=600,
        cwd="/",  # never the source tree: the installed package is measured
    )
    if out.returncode != 0:
        raise SystemExit(f"{python} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _label(env: dict[str, Any]) -> str:
    gil = env.get("gil_enabled", True)
    return f"{env['python']}{'' if gil else 't'} ({'GIL' if gil else 'no GIL'})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pythons", nargs="+", help="interpreters with trio-foundation installed")
    parser.add_argument("--threads", default="1,2,4", help="thread counts (default 1,2,4)")
    parser.add_argument("--n", type=int, default=100_000, help="entries (default 1e5)")
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per cell")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per interpreter")
    parser.add_argument(
        "--backends", default="native", help="comma-separated (default native; python too)"
    )
    parser.add_argument("--json", action="store_true", help="print every round as JSON")
    args = parser.parse_args()
    args.threads = sorted({1, *(int(c) for c in args.threads.split(","))})
    args.backends = args.backends.split(",")

    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in args.pythons}
    for r in range(args.rounds):
        k = r % len(args.pythons)
        for python in [*args.pythons[k:], *args.pythons[:k]]:
            print(f"round {r + 1}/{args.rounds}: {python}", file=sys.stderr, flush=True)
            runs[python].append(_one(python, args, seed=r))
    if args.json:
        print(json.dumps(runs, indent=1))
        return 0

    # cells[python][(backend, mode, threads)] = [ops/s per round], cpu likewise
    cells: dict[str, dict[tuple[str, str, int], list[float]]] = {}
    cpu: dict[str, dict[tuple[str, str, int], list[float]]] = {}
    labels: dict[str, str] = {}
    loads: list[Any] = []
    for python, results in runs.items():
        labels[python] = _label(results[0]["env"])
        for res in results:
            loads.append(res["env"].get("loadavg_start"))
            for row in res["results"]:
                key = (row["backend"], row["mode"], row["threads"])
                cells.setdefault(python, {}).setdefault(key, []).append(row["ops_per_s"])
                cpu.setdefault(python, {}).setdefault(key, []).append(row["ops_per_cpu_s"])
    first = args.pythons[0]
    env0 = runs[first][0]["env"]
    print(
        f"{env0['cpu_count']} cpus; {args.n:,} entries; {args.duration}s per cell;"
        f" {args.rounds} rounds per interpreter, order rotated; medians;"
        f" load average (1 min) at each run's start: {loads}"
    )
    print(
        "ops/s = all threads' ops / wall time; scaling = ops/s(N) / ops/s(1) on that"
        " interpreter; ops/CPU-s = per second of the threads' own CPU time"
    )
    header = ["backend", "mode", "threads"]
    for p in args.pythons:
        header += [f"{labels[p]} ops/s", "scaling", "ops/CPU-s"]
        if p != first:
            header.append(f"vs {labels[first].split()[0]}")
    table = [header]
    order = {"lookup": 0, "mix": 1, "write": 2}
    for key in sorted(cells[first], key=lambda k: (k[0], order.get(k[1], 9), k[2])):
        row = [key[0], key[1], str(key[2])]
        base = statistics.median(cells[first][key])
        for p in args.pythons:
            med = statistics.median(cells[p][key])
            one = statistics.median(cells[p][(key[0], key[1], 1)])
            row += [
                f"{med / 1e6:.2f}M",
                f"{med / one:.2f}x",
                f"{statistics.median(cpu[p][key]) / 1e6:.2f}M",
            ]
            if p != first:
                row.append(f"{med / base:.2f}x")
        table.append(row)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for i, r in enumerate(table):
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
