"""``python -m foundation bench``: its options and its four modes.

* the comparison table (default): native and python registries against
  plain dicts, side by side in one process (:mod:`._bench`);
* ``--etcd URLS``: the etcd backend's throughput and watch propagation
  (:mod:`._bench_etcd`);
* ``--scale``: per-operation cost and memory from 1e3 to 1e7 entries
  (:mod:`._bench_scale`);
* ``--threads 1,2,4``: OS threads sharing one registry (:mod:`._bench_threads`).

The targets the numbers are read against are in ``docs/performance.rst``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from typing import Any, TextIO

from ._options import Option, add_options, non_negative, positive, seconds, sizes

__all__ = ["add_arguments", "main"]


def _ops(text: str) -> list[str]:
    from ._bench import ALL_OPS

    ops = [op.strip() for op in text.split(",") if op.strip()]
    unknown = [op for op in ops if op not in ALL_OPS]
    if unknown or not ops:
        raise argparse.ArgumentTypeError(
            f"unknown operation(s) {unknown}; choose from {', '.join(ALL_OPS)}"
        )
    return ops


#: The comparison table's options, beyond --quick and --json.
_TABLE = (
    Option(
        "sizes",
        sizes,
        None,
        "SIZES",
        "comma-separated table sizes (default 1000,1000000; --quick: 1000,100000)",
    ),
    Option(
        "rounds",
        positive,
        None,
        "N",
        "interleaved rounds per size (default 5; --quick, --scale, --threads: 3)",
    ),
    Option("ops", _ops, None, "OPS", "comma-separated subset of operations (default: all)"),
    Option(
        "select-max",
        sizes,
        [100_000],
        "N",
        "measure select at min(size, N) entries (default 100000; a 1e6 scan takes seconds)",
    ),
    Option(
        "memory-max",
        sizes,
        [100_000],
        "N",
        "measure memory at min(size, N) entries (default 100000; tracemalloc is slow)",
    ),
    Option("seed", int, 0, "SEED", "seed of the access-order shuffles (default 0)"),
)

#: ``--etcd-*``: tuning of the etcd mode.
_ETCD = (
    Option("count", positive, 5000, "N", "registrations per throughput measurement (default 5000)"),
    Option("tasks", positive, 128, "N", "concurrent register() tasks (default 128)"),
    Option("samples", positive, 500, "N", "propagation latency samples (default 500)"),
    Option(
        "timeout",
        seconds,
        5.0,
        "SECONDS",
        "each etcd call's timeout; an etcd that does not answer fails within it (default 5)",
    ),
)

#: ``--scale-*``: tuning of the scale mode.
_SCALE = (
    Option(
        "sizes", sizes, [1_000_000, 10_000_000], "SIZES", "table sizes (default 1000000,10000000)"
    ),
    Option(
        "baseline",
        non_negative,
        1_000,
        "N",
        "reference size growth is read against (default 1000; 0: none)",
    ),
    Option(
        "python-budget",
        float,
        300.0,
        "SECONDS",
        "skip or abandon the python backend's build past this (default 300)",
    ),
    Option(
        "lookup-keys",
        positive,
        1_000_000,
        "N",
        "stored keys in the shuffled lookup sample (default 1000000)",
    ),
    Option(
        "cycle-keys",
        positive,
        100_000,
        "N",
        "fresh keys in the register+unregister sample (default 100000)",
    ),
    Option(
        "build-ops",
        positive,
        200_000,
        "N",
        "a build of fewer than N entries is timed over N//size fills (default 200k)",
    ),
    Option(
        "group-sizes",
        sizes,
        [1_000, 100_000],
        "SIZES",
        "members of the one group (default 1000,100000)",
    ),
    Option(
        "select-sizes",
        sizes,
        [10_000, 1_000_000],
        "SIZES",
        "entries of the select registries (default 10000,1000000)",
    ),
    Option(
        "select-seconds",
        float,
        0.05,
        "SECONDS",
        "seconds per select sample (more calls for fast queries; default 0.05)",
    ),
    Option(
        "targets-sizes",
        sizes,
        [1_000_000, 100_000],
        "GC_N,SCAN_N",
        "table sizes of the targets' GC/lookup rows and scan rows (default 1000000,100000)",
    ),
)

#: ``--threads-*``: tuning of the threads mode.
_THREADS = (
    Option("n", positive, 100_000, "N", "entries in the shared registry (default 100000)"),
    Option("duration", float, 2.0, "SECONDS", "seconds per measurement (default 2)"),
)

#: The exclusive modes: (option, its help, the group title of its tuning options).
_MODES = (
    (
        "--etcd",
        dict(
            metavar="URLS",
            default=None,
            help="measure the etcd backend instead: registrations/s and watch propagation"
            " p50/p99 against these comma-separated endpoints (e.g. http://127.0.0.1:2379)",
        ),
        "etcd",
        _ETCD,
    ),
    (
        "--scale",
        dict(
            action="store_true",
            help="measure growth instead: build/lookup/register+unregister/memory at 1e6 and 1e7"
            " entries against a 1e3 reference, one group of 1e5 members, and indexed vs"
            " scanned select over 1e6 entries (takes several minutes and ~10 GiB at 1e7)",
        ),
        "scale",
        _SCALE,
    ),
    (
        "--threads",
        dict(
            type=sizes,
            default=None,
            metavar="COUNTS",
            help="measure N OS threads sharing one registry instead (lookups, and a 90/10"
            " lookup/write mix), e.g. --threads 1,2,4",
        ),
        "threads",
        _THREADS,
    ),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` options to ``parser``."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help="sizes 1000,100000, 3 rounds, shorter samples (under a minute)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    add_options(parser, "", _TABLE)
    parser.add_argument(
        "--no-progress", action="store_true", help="do not print progress on stderr"
    )
    for flag, spec, name, rows in _MODES:
        group = parser.add_argument_group(f"{flag} mode (exclusive with the other modes)")
        group.add_argument(flag, **spec)
        if flag == "--etcd":
            group.add_argument(
                "--peer",
                action="store_true",
                help="--etcd: measure side by side with aetcd instead: the raw client"
                " (serial put+get, 5,000 puts from 128 tasks, txns of 100 puts) and the"
                " registry (register() from 128 tasks, register_many, against txns of 100"
                " create-if-absent puts on a lease); needs the bench extra",
            )
        if flag == "--scale":
            group.add_argument(
                "--scale-targets-only",
                action="store_true",
                help="--scale: only the at-scale targets (GC, allocation, scans, registrations,"
                " write cycles, lookups as users call them), side by side in one run",
            )
        add_options(group, f"{name}-", rows, help_prefix=f"{flag}: ")


class _Progress:
    """One status line on stderr, rewritten in place on a terminal."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = stream.isatty()
        self.t0 = time.perf_counter()
        self.width = 0

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        line = f"[bench {time.perf_counter() - self.t0:6.1f}s] {message}"
        if self.tty:
            pad = " " * max(0, self.width - len(line))
            self.stream.write(f"\r{line}{pad}")
            self.width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.enabled and self.tty and self.width:
            self.stream.write("\n")
            self.stream.flush()


def _emit(result: dict[str, Any], args: argparse.Namespace, table: str) -> None:
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(table + "\n")
    sys.stdout.flush()


def _say_native(args: argparse.Namespace) -> None:
    from ._bench import native_status

    if not args.no_progress:
        native, why = native_status()
        sys.stderr.write(f"foundation.registry.NATIVE = {native}: {why}\n")
        sys.stderr.flush()


def _etcd(args: argparse.Namespace) -> int:
    import trio

    from . import _bench_etcd

    endpoints = [e.strip() for e in args.etcd.split(",") if e.strip()]
    if args.peer:
        if not args.no_progress:
            sys.stderr.write(f"measuring etcd clients against {', '.join(endpoints)}\n")
            sys.stderr.flush()
        peer = trio.run(
            functools.partial(_bench_etcd.run_peer, endpoints, timeout=args.etcd_timeout)
        )
        _emit(peer, args, "" if args.json else _bench_etcd.format_peer_table(peer))
        return 0
    if not args.no_progress:
        sys.stderr.write(f"measuring the etcd backend against {', '.join(endpoints)}\n")
        sys.stderr.flush()
    result = trio.run(
        functools.partial(
            _bench_etcd.run_etcd,
            endpoints,
            count=args.etcd_count,
            tasks=args.etcd_tasks,
            samples=args.etcd_samples,
            timeout=args.etcd_timeout,
        )
    )
    _emit(result, args, "" if args.json else _bench_etcd.format_etcd_table(result))
    return 0


def _scale(args: argparse.Namespace) -> int:
    from . import _bench_scale

    _say_native(args)
    progress = _Progress(sys.stderr, not args.no_progress)
    gc_n, scan_n = [*args.scale_targets_sizes, 100_000][:2]
    if args.scale_targets_only:
        try:
            targets = _bench_scale.run_targets(
                gc_n=gc_n,
                scan_n=scan_n,
                small_n=args.scale_baseline or _bench_scale.SCALE_BASELINE,
                rounds=args.rounds or 3,
                lookup_keys=args.scale_lookup_keys,
                cycle_keys=args.scale_cycle_keys,
                seed=args.seed,
                progress=progress,
            )
        finally:
            progress.done()
        _emit(targets, args, "" if args.json else _bench_scale.format_targets_table(targets))
        return 0
    try:
        result = _bench_scale.run_scale(
            args.scale_sizes,
            baseline_n=args.scale_baseline,
            rounds=args.rounds or 3,
            lookup_keys=args.scale_lookup_keys,
            cycle_keys=args.scale_cycle_keys,
            build_ops=args.scale_build_ops,
            python_budget_s=args.scale_python_budget,
            group_sizes=args.scale_group_sizes,
            select_sizes=args.scale_select_sizes,
            select_target_s=args.scale_select_seconds,
            seed=args.seed,
            progress=progress,
            targets_gc_n=gc_n,
            targets_scan_n=scan_n,
        )
    finally:
        progress.done()
    _emit(result, args, "" if args.json else _bench_scale.format_scale_table(result))
    return 0


def _threads(args: argparse.Namespace) -> int:
    from . import _bench_threads

    if args.threads_duration <= 0:
        sys.stderr.write("foundation bench: --threads-duration must be > 0\n")
        return 2
    _say_native(args)
    progress = _Progress(sys.stderr, not args.no_progress)
    try:
        result = _bench_threads.run_threads(
            args.threads,
            n=args.threads_n,
            duration=args.threads_duration,
            rounds=args.rounds or 3,
            seed=args.seed,
            progress=progress,
        )
    finally:
        progress.done()
    _emit(result, args, "" if args.json else _bench_threads.format_threads_table(result))
    return 0


def _table(args: argparse.Namespace) -> int:
    from . import _bench

    sizes_ = args.sizes or list(_bench.QUICK_SIZES if args.quick else _bench.FULL_SIZES)
    rounds = args.rounds or (3 if args.quick else 5)
    _say_native(args)
    progress = _Progress(sys.stderr, not args.no_progress)
    try:
        result: dict[str, Any] = _bench.run(
            sizes_,
            rounds,
            quick=args.quick,
            ops=args.ops,
            seed=args.seed,
            progress=progress,
            select_max_n=max(args.select_max),
            memory_max_n=max(args.memory_max),
        )
    finally:
        progress.done()
    _emit(result, args, "" if args.json else _bench.format_table(result))
    return 0


def main(args: argparse.Namespace) -> int:
    """Run ``python -m foundation bench`` with parsed ``args``; the exit status.

    0 on success, 2 for options that do not go together. A typed error
    (an etcd that does not answer) propagates to the caller, which prints
    it on one line.
    """
    modes = [flag for flag, _, name, _ in _MODES if getattr(args, name)]
    if args.peer and args.etcd is None:
        sys.stderr.write("foundation bench: --peer compares etcd clients; give --etcd URLS\n")
        return 2
    if len(modes) > 1:
        sys.stderr.write(f"foundation bench: {' and '.join(modes)} are separate modes; pick one\n")
        return 2
    run = {"--etcd": _etcd, "--scale": _scale, "--threads": _threads}.get(
        modes[0] if modes else "", _table
    )
    return run(args)
