"""Thread measurements behind ``python -m foundation bench --threads 1,2,4``.

N OS threads share one registry (default partitions, i.e. ``os.cpu_count()``
shards) holding ``n`` entries (default 1e5) and for a fixed time run either

* ``lookup``: ``registry.lookup(ns, name)`` over their own shuffled list of
  stored keys,
* ``mix``: 90% lookups and 10% writes. The writes alternate
  ``register_nowait`` of a fresh key (each thread has its own, so threads
  never conflict) and ``unregister_nowait`` of that key, so the table keeps
  its size for the whole run; a unit is 900 lookups, 50 registrations and 50
  unregistrations, or
* ``write``: only the mix's writes, ``register_nowait`` of 50 of the
  thread's own fresh keys then ``unregister_nowait`` of each (a unit is 100
  writes), so registrations per second are read on their own.

The result is total operations per second over all threads, and the scaling
against one thread (``ops/s(N) / ops/s(1)``); the python backend is measured
alongside the native one, rounds interleaved, order rotated. Wall-clock
throughput also drops when other processes take the CPUs (with the GIL, a
thread preempted while holding it stalls every other thread), so the
threads' own CPU time (``time.thread_time``) is reported beside it: ops per
CPU-second says whether an operation itself got dearer with more threads.

Why threads do not scale under the GIL: on a CPython with the GIL, only one
thread runs Python bytecode at a time, and a lookup is a call made from
bytecode, so N threads share one core's worth of lookups. Expect a scaling
of about 1.0x or a little below (the GIL hand-off every
``sys.getswitchinterval()`` costs a few percent, and more threads than CPUs
add context switches). What this measures under the GIL is that sharing a
registry across threads costs nothing beyond that: no lock convoy on the
read path (reads take no lock), no collapse under the write mix, and the
table intact afterwards. On a free-threaded build (``Py_GIL_DISABLED``,
``sys._is_gil_enabled() is False``; ``tools/build_python313t.sh`` builds
3.13t) threads run in parallel and the native backend runs each shard's
reads and writes in that shard's critical section, so lookups on different
shards do not wait for each other; there the ops per CPU-second column
shows whether an operation gets dearer with more threads (contention), and
wall-clock scaling needs idle CPUs. ``env.gil_enabled`` in the result says
which case was measured; ``tools/threads_bench.py`` compares interpreters.
"""

from __future__ import annotations

import gc
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ._bench import _env, _grid, _Handle, _loadavg, _median_of, make_pairs, native_status

__all__ = ["MODES", "THREAD_COUNTS", "format_threads_table", "run_threads"]

#: Default thread counts of ``--threads``.
THREAD_COUNTS: tuple[int, ...] = (1, 2, 4)
#: The workloads, in table order.
MODES: tuple[str, ...] = ("lookup", "mix", "write")

Pair = tuple[str, str]
Progress = Callable[[str], None]

#: Lookups per unit of work (the stop flag is read between units).
_UNIT = 1_000
#: In the mix, registrations (and as many unregistrations) per unit.
_MIX_WRITES = 50
_MIX_READS = _UNIT - 2 * _MIX_WRITES


class _Worker(threading.Thread):
    """One thread's loop: units of work until ``running[0]`` turns False."""

    def __init__(
        self,
        registry: Any,
        mode: str,
        reads: list[list[Pair]],
        writes: list[list[Pair]],
        barrier: threading.Barrier,
        running: list[bool],
        value: Any,
    ) -> None:
        super().__init__(daemon=True)
        self.registry = registry
        self.mode = mode
        self.reads = reads
        self.writes = writes
        self.barrier = barrier
        self.running = running
        self.value = value
        self.ops = 0
        self.start_s = 0.0
        self.end_s = 0.0
        self.cpu_s = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.barrier.wait()
            self.start_s = time.perf_counter()
            cpu0 = time.thread_time()
            if self.mode == "lookup":
                self.ops = self._lookups()
            elif self.mode == "write":
                self.ops = self._writes()
            else:
                self.ops = self._mix()
            self.cpu_s = time.thread_time() - cpu0
        except BaseException as exc:  # reported by the caller
            self.error = exc
        finally:
            self.end_s = time.perf_counter()

    def _lookups(self) -> int:
        lookup = self.registry.lookup
        running, reads = self.running, self.reads
        ops = 0
        i = 0
        while running[0]:
            for a, b in reads[i]:
                lookup(a, b)
            ops += len(reads[i])
            i = (i + 1) % len(reads)
        return ops

    def _mix(self) -> int:
        reg = self.registry
        lookup, register, unregister = reg.lookup, reg.register_nowait, reg.unregister_nowait
        running, reads, writes, v = self.running, self.reads, self.writes, self.value
        ops = 0
        i = j = 0
        while running[0]:
            for a, b in reads[i]:
                lookup(a, b)
            w = writes[j]
            for a, b in w:
                register(a, b, v)
            for a, b in w:
                unregister(a, b)
            ops += len(reads[i]) + 2 * len(w)
            i = (i + 1) % len(reads)
            j = (j + 1) % len(writes)
        return ops

    def _writes(self) -> int:
        reg = self.registry
        register, unregister = reg.register_nowait, reg.unregister_nowait
        running, writes, v = self.running, self.writes, self.value
        ops = 0
        j = 0
        while running[0]:
            w = writes[j]
            for a, b in w:
                register(a, b, v)
            for a, b in w:
                unregister(a, b)
            ops += 2 * len(w)
            j = (j + 1) % len(writes)
        return ops


def _chunks(pairs: list[Pair], size: int) -> list[list[Pair]]:
    """Fresh tuples (compact in memory) cut into lists of ``size``."""
    fresh = [(a, b) for a, b in pairs]
    return [fresh[i : i + size] for i in range(0, len(fresh), size)] or [[]]


def _measure(
    registry: Any,
    mode: str,
    threads: int,
    duration: float,
    reads: list[list[list[Pair]]],
    writes: list[list[list[Pair]]],
    value: Any,
) -> dict[str, Any]:
    """Run ``threads`` workers for ``duration`` seconds; total ops/s."""
    running = [True]
    barrier = threading.Barrier(threads + 1)
    workers = [
        _Worker(registry, mode, reads[t], writes[t], barrier, running, value)
        for t in range(threads)
    ]
    for w in workers:
        w.start()
    barrier.wait()
    t0 = time.perf_counter()
    time.sleep(duration)
    running[0] = False
    for w in workers:
        w.join()
    for w in workers:
        if w.error is not None:
            raise RuntimeError(f"a {mode} worker failed: {w.error!r}") from w.error
    elapsed = max(w.end_s for w in workers) - t0
    total = sum(w.ops for w in workers)
    cpu = sum(w.cpu_s for w in workers)
    return {
        "ops": total,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "ops_per_s": total / elapsed if elapsed > 0 else 0.0,
        "ops_per_cpu_s": total / cpu if cpu > 0 else 0.0,
        "per_thread": [w.ops for w in workers],
    }


def run_threads(
    thread_counts: Sequence[int] = THREAD_COUNTS,
    *,
    n: int = 100_000,
    duration: float = 2.0,
    rounds: int = 3,
    backends: Sequence[str] | None = None,
    modes: Sequence[str] = MODES,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Measure total ops/s of N threads sharing one registry; JSON-able result.

    Args:
        thread_counts: thread counts to measure (1 is added: scaling is read
            against it).
        n: entries in each registry.
        duration: seconds per measurement.
        rounds: interleaved rounds (a cell is the median over rounds).
        backends: registry backends (default: native when built, and python).
        modes: subset of :data:`MODES`.
        seed: seed of the shuffles.
        progress: called with a short status line as the run advances.

    Returns:
        ``{"env", "config", "results": [{"backend", "mode", "threads",
        "ops_per_s", "min", "max", "per_round", "scaling"}], "wall_s"}``.
    """
    t_start = time.perf_counter()
    counts = sorted({1, *thread_counts})
    if any(c < 1 for c in counts):
        raise ValueError(f"thread counts must be >= 1, not {list(thread_counts)}")
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"unknown mode(s) {unknown}; choose from {list(MODES)}")
    if rounds < 1 or n < 1 or duration <= 0:
        raise ValueError("rounds and n must be >= 1 and duration > 0")
    if backends is None:
        native, _ = native_status()
        backends = ["native", "python"] if native else ["python"]
    say: Progress = progress if progress is not None else (lambda _msg: None)
    load_start = _loadavg()
    rnd = random.Random(seed)
    value = _Handle("n1")
    from ..registry import Registry

    say(f"building {len(backends)} registries of {n:,} entries")
    pairs = make_pairs(n, "live")
    registries: dict[str, Any] = {}
    for impl in backends:
        reg = Registry(backend=impl)
        f = reg.register_nowait
        for a, b in pairs:
            f(a, b, value)
        registries[impl] = reg
    top = max(counts)
    reads: list[list[list[Pair]]] = []
    writes: list[list[list[Pair]]] = []
    for t in range(top):
        own = rnd.sample(pairs, min(n, 100_000))
        reads.append(_chunks(own, _UNIT if len(own) >= _UNIT else len(own)))
        fresh = make_pairs(20 * _MIX_WRITES, f"t{t}")
        writes.append(_chunks(fresh, _MIX_WRITES))
    mix_reads = [[chunk[:_MIX_READS] for chunk in r] for r in reads]
    cells: dict[tuple[str, str, int], list[float]] = {}
    cpu_cells: dict[tuple[str, str, int], list[float]] = {}
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            k = r % len(backends)
            for impl in [*backends[k:], *backends[:k]]:
                for mode in modes:
                    for c in counts:
                        say(f"round {r + 1}/{rounds}: {impl} {mode} x{c} threads")
                        m = _measure(
                            registries[impl],
                            mode,
                            c,
                            duration,
                            reads if mode == "lookup" else mix_reads,
                            writes,
                            value,
                        )
                        cells.setdefault((impl, mode, c), []).append(m["ops_per_s"])
                        cpu_cells.setdefault((impl, mode, c), []).append(m["ops_per_cpu_s"])
    finally:
        if was_enabled:
            gc.enable()
    for impl, reg in registries.items():
        if len(reg) != n:
            raise RuntimeError(f"{impl} holds {len(reg):,} entries after the run, not {n:,}")
        reg.close()
    results: list[dict[str, Any]] = []
    for impl in backends:
        for mode in modes:
            one = cells[(impl, mode, 1)]
            for c in counts:
                per = cells[(impl, mode, c)]
                ratios = [x / y for x, y in zip(per, one, strict=True) if y > 0]
                results.append(
                    {
                        "backend": impl,
                        "mode": mode,
                        "threads": c,
                        "ops_per_s": _median_of(per),
                        "min": min(per),
                        "max": max(per),
                        "per_round": [round(x) for x in per],
                        "scaling": _median_of(per) / _median_of(one),
                        "scaling_min": min(ratios) if ratios else None,
                        "scaling_max": max(ratios) if ratios else None,
                        "ops_per_cpu_s": _median_of(cpu_cells[(impl, mode, c)]),
                    }
                )
    env = _env(backends)
    env["loadavg_start"] = load_start
    env["loadavg_end"] = _loadavg()
    env["switch_interval_s"] = sys.getswitchinterval()
    return {
        "env": env,
        "config": {
            "thread_counts": counts,
            "n": n,
            "duration_s": duration,
            "rounds": rounds,
            "modes": list(modes),
            "seed": seed,
            "method": (
                "one registry per backend (default partitions) of n entries; each thread"
                " loops over its own shuffled keys until a stop flag after duration_s;"
                " ops/s = all threads' completed ops / wall time; median over rounds;"
                f" mix = {_MIX_READS} lookups + {_MIX_WRITES} register_nowait +"
                f" {_MIX_WRITES} unregister_nowait per unit; write = the same"
                f" {_MIX_WRITES} + {_MIX_WRITES} writes alone; GC off"
            ),
        },
        "results": results,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }


def format_threads_table(result: dict[str, Any]) -> str:
    """The human report of :func:`run_threads`."""
    env, cfg = result["env"], result["config"]
    gil = env.get("gil_enabled", True)
    lines = [
        f"foundation {env['foundation']}, CPython {env['python']} ({env['cpu_count']} cpus),"
        f" partitions={env.get('partitions')}, GIL {'enabled' if gil else 'DISABLED'},"
        f" switch interval {env['switch_interval_s'] * 1e3:.0f} ms",
        f"foundation.registry.NATIVE = {env['NATIVE']}: {env['native_status']}",
        f"{cfg['n']:,} entries, {cfg['duration_s']}s per measurement, rounds={cfg['rounds']};"
        f" mix = 90% lookup, 5% register_nowait, 5% unregister_nowait;"
        f" write = register_nowait + unregister_nowait;"
        f" load average (1 min) {env.get('loadavg_start')} -> {env.get('loadavg_end')}",
        "",
        "Total ops/s over all threads (median [min-max over rounds]); scaling vs 1 thread;"
        " ops/CPU-s = ops per second of the threads' own CPU time (insensitive to"
        " other processes taking the CPUs, which wall-clock ops/s is not)",
    ]
    table = [["backend", "mode", "threads", "ops/s", "scaling", "ops/CPU-s"]]
    for row in result["results"]:
        spread = f"{row['ops_per_s'] / 1e6:.2f}M [{row['min'] / 1e6:.2f}-{row['max'] / 1e6:.2f}]"
        scaling = f"{row['scaling']:.2f}x"
        if row["scaling_min"] is not None and row["threads"] != 1:
            scaling += f" [{row['scaling_min']:.2f}-{row['scaling_max']:.2f}]"
        per_cpu = f"{row['ops_per_cpu_s'] / 1e6:.2f}M"
        table.append([row["backend"], row["mode"], str(row["threads"]), spread, scaling, per_cpu])
    lines += _grid(table)
    if gil:
        lines += [
            "",
            "Under the GIL one thread runs bytecode at a time: ~1.0x is the expected ceiling;"
            " this shows that sharing costs nothing more (no lock on reads, no collapse).",
        ]
    lines += ["", f"wall time {result['wall_s']}s"]
    return "\n".join(lines)
