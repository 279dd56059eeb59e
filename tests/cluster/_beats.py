"""The heartbeat records of ``beater`` children, read back as runs, and the checks on them.

A run is one instance of a child: the beats of one (node, fencing token),
from its ``start`` line to its ``stop`` line (or its last beat, when its
process was killed). All times are ``time.monotonic()``: one clock for
every process of the machine, network namespaces included.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Run", "check_exclusive", "check_tokens_grow", "read_runs", "sampled_overlaps"]

#: The beat period of ``beater`` (and of the sampled check).
PERIOD = 0.05


@dataclass
class Run:
    child: str
    node: str
    token: int
    pid: int
    start: float
    end: float
    stopped: bool = False
    beats: int = 0
    #: The handoff state it started from, and the count of its last beat.
    handed: Any = None
    last_n: int | None = None
    times: list[float] = field(default_factory=list, repr=False)

    def __str__(self) -> str:
        how = "stopped" if self.stopped else "no stop line"
        return (
            f"{self.child} on {self.node} (token {self.token}, pid {self.pid}):"
            f" {self.start:.3f} .. {self.end:.3f} ({self.beats} beats, {how})"
        )


def read_runs(beats_dir: str) -> dict[str, list[Run]]:
    """child -> its runs, in the order they started."""
    out: dict[str, list[Run]] = {}
    if not os.path.isdir(beats_dir):
        return out
    for name in sorted(os.listdir(beats_dir)):
        if not name.endswith(".jsonl"):
            continue
        child = name[: -len(".jsonl")]
        runs: dict[tuple[str, int, int], Run] = {}
        with open(os.path.join(beats_dir, name)) as f:
            for line in f:
                try:
                    rec: dict[str, Any] = json.loads(line)
                except ValueError:
                    continue  # a line being written right now
                key = (rec["node"], rec["token"], rec["pid"])
                run = runs.get(key)
                if run is None:
                    run = runs[key] = Run(
                        child, rec["node"], rec["token"], rec["pid"], rec["t"], rec["t"]
                    )
                run.start = min(run.start, rec["t"])
                run.end = max(run.end, rec["t"])
                if rec["k"] == "beat":
                    run.beats += 1
                    run.times.append(rec["t"])
                    run.last_n = rec.get("n")
                elif rec["k"] == "start":
                    run.handed = rec.get("from")
                elif rec["k"] == "stop":
                    run.stopped = True
        out[child] = sorted(runs.values(), key=lambda r: r.start)
    return out


def check_exclusive(runs: dict[str, list[Run]]) -> list[str]:
    """Pairs of runs of one child whose intervals intersect (there must be none)."""
    problems = []
    for child, rs in runs.items():
        for i, a in enumerate(rs):
            for b in rs[i + 1 :]:
                if b.start < a.end and a.start < b.end:
                    problems.append(f"{child}: {a}  OVERLAPS  {b}")
    return problems


def sampled_overlaps(runs: dict[str, list[Run]], period: float = PERIOD) -> list[str]:
    """Moments on a ``period`` grid when two runs of one child were both inside."""
    problems = []
    for child, rs in runs.items():
        if not rs:
            continue
        t0 = min(r.start for r in rs)
        t1 = max(r.end for r in rs)
        k = 0
        while t0 + k * period <= t1:
            at = t0 + k * period
            inside = [r for r in rs if r.start <= at <= r.end]
            if len(inside) > 1:
                problems.append(f"{child} at {at:.3f}: " + "; ".join(map(str, inside)))
            k += 1
    return problems


def check_tokens_grow(runs: dict[str, list[Run]]) -> list[str]:
    """Runs of one child whose token is not greater than the one that started before it."""
    problems = []
    for child, rs in runs.items():
        best = -math.inf
        for run in rs:
            if run.token <= best:
                problems.append(f"{child}: token {run.token} after {best}: {run}")
            best = max(best, run.token)
    return problems
