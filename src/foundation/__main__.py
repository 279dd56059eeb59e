"""The ``foundation`` command line: ``python -m foundation <command>``.

Commands:

``bench``
    the backend comparison table of DESIGN section 6 (native and python
    registries against plain dicts, side by side in one process); with
    ``--etcd URLS`` the etcd backend's throughput and propagation, with
    ``--scale`` per-operation cost and memory from 1e3 to 1e7 entries, with
    ``--threads 1,2,4`` OS threads sharing one registry.
``demo``
    the main job: a small self-healing system (supervised workers, a
    registry, leader election, barrier rounds, crashes and failover) with a
    live view and a checked summary; ``--etcd URL`` runs it across OS
    processes sharing one etcd. See :mod:`foundation.demo`.
``inspect``
    registrations (``--namespace``, ``--where``), the supervision tree of a
    running demo (its ``--state`` snapshot), lock and leader status; with
    ``--etcd URL`` read from the cluster.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

__all__ = ["main"]


def _sizes(text: str) -> list[int]:
    """Parse ``1000,100000`` (also ``1e3,1e6`` and ``1_000``) into ints >= 1."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip().replace("_", "")
        if not part:
            continue
        try:
            value = float(part) if any(c in part for c in ".eE") else int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a size (use e.g. 1000,1e6)"
            ) from None
        if value != int(value) or value < 1:
            raise argparse.ArgumentTypeError(f"size {part!r} must be a whole number >= 1")
        out.append(int(value))
    if not out:
        raise argparse.ArgumentTypeError("give at least one size, e.g. --sizes 1000,100000")
    return out


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
    return value


def _ops(text: str) -> list[str]:
    from ._bench import ALL_OPS

    ops = [op.strip() for op in text.split(",") if op.strip()]
    unknown = [op for op in ops if op not in ALL_OPS]
    if unknown or not ops:
        raise argparse.ArgumentTypeError(
            f"unknown operation(s) {unknown}; choose from {', '.join(ALL_OPS)}"
        )
    return ops


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m foundation",
        description="trio-foundation command line",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    bench = sub.add_parser(
        "bench",
        help="compare the registry backends against plain dicts (DESIGN section 6)",
        description=(
            "Time the registry's hot operations on the native and python backends and on"
            " plain dicts, side by side in one process (interleaved rounds, shuffled access"
            " over prebuilt names, medians net of the bare loop, spread over rounds), plus"
            " memory per entry. Human table on stdout, progress on stderr."
        ),
    )
    bench.add_argument(
        "--quick",
        action="store_true",
        help="sizes 1000,100000, 3 rounds, shorter samples (under a minute)",
    )
    bench.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    bench.add_argument(
        "--sizes",
        type=_sizes,
        default=None,
        help="comma-separated table sizes (default 1000,1000000; --quick: 1000,100000)",
    )
    bench.add_argument(
        "--rounds",
        type=_positive,
        default=None,
        help="interleaved rounds per size (default 5; --quick, --scale, --threads: 3)",
    )
    bench.add_argument(
        "--ops",
        type=_ops,
        default=None,
        help="comma-separated subset of operations (default: all)",
    )
    bench.add_argument(
        "--select-max",
        type=_sizes,
        default=[100_000],
        metavar="N",
        help="measure select at min(size, N) entries (default 100000; a 1e6 scan takes seconds)",
    )
    bench.add_argument(
        "--memory-max",
        type=_sizes,
        default=[100_000],
        metavar="N",
        help="measure memory at min(size, N) entries (default 100000; tracemalloc is slow)",
    )
    bench.add_argument(
        "--seed", type=int, default=0, help="seed of the access-order shuffles (default 0)"
    )
    bench.add_argument("--no-progress", action="store_true", help="do not print progress on stderr")
    bench.add_argument(
        "--etcd",
        metavar="URLS",
        default=None,
        help=(
            "measure the etcd backend instead: registrations/s and watch propagation"
            " p50/p99 against these comma-separated endpoints (e.g. http://127.0.0.1:2379)"
        ),
    )
    bench.add_argument(
        "--etcd-count",
        type=_positive,
        default=5000,
        metavar="N",
        help="registrations per etcd throughput measurement (default 5000)",
    )
    bench.add_argument(
        "--etcd-tasks",
        type=_positive,
        default=128,
        metavar="N",
        help="concurrent register() tasks (default 128)",
    )
    bench.add_argument(
        "--etcd-samples",
        type=_positive,
        default=500,
        metavar="N",
        help="propagation latency samples (default 500)",
    )
    bench.add_argument(
        "--scale",
        action="store_true",
        help=(
            "measure growth instead: build/lookup/register+unregister/memory at 1e6 and 1e7"
            " entries against a 1e3 reference, one group of 1e5 members, and indexed vs"
            " scanned select over 1e6 entries (takes several minutes and ~10 GiB at 1e7)"
        ),
    )
    bench.add_argument(
        "--scale-sizes",
        type=_sizes,
        default=[1_000_000, 10_000_000],
        metavar="SIZES",
        help="--scale table sizes (default 1000000,10000000)",
    )
    bench.add_argument(
        "--scale-baseline",
        type=_non_negative,
        default=1_000,
        metavar="N",
        help="--scale reference size growth is read against (default 1000; 0: none)",
    )
    bench.add_argument(
        "--scale-python-budget",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="--scale: skip or abandon the python backend's build past this (default 300)",
    )
    bench.add_argument(
        "--scale-lookup-keys",
        type=_positive,
        default=1_000_000,
        metavar="N",
        help="--scale: stored keys in the shuffled lookup sample (default 1000000)",
    )
    bench.add_argument(
        "--scale-cycle-keys",
        type=_positive,
        default=100_000,
        metavar="N",
        help="--scale: fresh keys in the register+unregister sample (default 100000)",
    )
    bench.add_argument(
        "--scale-build-ops",
        type=_positive,
        default=200_000,
        metavar="N",
        help="--scale: a build of fewer than N entries is timed over N//size fills (default 200k)",
    )
    bench.add_argument(
        "--scale-group-sizes",
        type=_sizes,
        default=[1_000, 100_000],
        metavar="SIZES",
        help="--scale: members of the one group (default 1000,100000)",
    )
    bench.add_argument(
        "--scale-select-sizes",
        type=_sizes,
        default=[10_000, 1_000_000],
        metavar="SIZES",
        help="--scale: entries of the select registries (default 10000,1000000)",
    )
    bench.add_argument(
        "--scale-select-seconds",
        type=float,
        default=0.05,
        metavar="SECONDS",
        help="--scale: seconds per select sample (more calls for fast queries; default 0.05)",
    )
    bench.add_argument(
        "--scale-targets-only",
        action="store_true",
        help=(
            "--scale: only the at-scale targets (GC, allocation, scans, registrations, write"
            " cycles, lookups as users call them), side by side in one run"
        ),
    )
    bench.add_argument(
        "--scale-targets-sizes",
        type=_sizes,
        default=[1_000_000, 100_000],
        metavar="GC_N,SCAN_N",
        help="--scale: table sizes of the targets' GC/lookup rows and scan rows"
        " (default 1000000,100000)",
    )
    bench.add_argument(
        "--threads",
        type=_sizes,
        default=None,
        metavar="COUNTS",
        help=(
            "measure N OS threads sharing one registry instead (lookups, and a 90/10"
            " lookup/write mix), e.g. --threads 1,2,4"
        ),
    )
    bench.add_argument(
        "--threads-n",
        type=_positive,
        default=100_000,
        metavar="N",
        help="--threads: entries in the shared registry (default 100000)",
    )
    bench.add_argument(
        "--threads-duration",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="--threads: seconds per measurement (default 2)",
    )
    from . import _inspect, demo

    demo.add_arguments(
        sub.add_parser(
            "demo",
            help="run the self-healing demo (about 10 s, no server needed)",
            description=(
                "Run a small self-healing system on trio-foundation: supervised workers"
                " registered by name elect a leader, meet at a barrier each round and agree"
                " on a value, while workers and the leader are crashed on a seeded plan and"
                " restarted. Live view on stdout, a checked summary at the end; exit status"
                " 0 when the checks held."
            ),
        )
    )
    _inspect.add_arguments(
        sub.add_parser(
            "inspect",
            help="show registrations, the demo's supervision tree, leader and locks",
            description=(
                "Show a demo's published state (--state, the default) or an etcd cluster's"
                " (--etcd): registrations (filter with --namespace and --where), the"
                " supervision tree, the leader and term, and lock holders."
            ),
        )
    )
    return parser


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


def _bench_etcd(args: argparse.Namespace) -> int:
    import trio

    from . import _bench_etcd

    endpoints = [e.strip() for e in args.etcd.split(",") if e.strip()]
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
        )
    )
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(_bench_etcd.format_etcd_table(result) + "\n")
    sys.stdout.flush()
    return 0


def _emit(result: dict[str, Any], args: argparse.Namespace, table: str) -> None:
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(table + "\n")
    sys.stdout.flush()


def _bench_scale(args: argparse.Namespace) -> int:
    from . import _bench, _bench_scale

    native, why = _bench.native_status()
    progress = _Progress(sys.stderr, not args.no_progress)
    if not args.no_progress:
        sys.stderr.write(f"foundation.registry.NATIVE = {native}: {why}\n")
        sys.stderr.flush()
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


def _bench_threads(args: argparse.Namespace) -> int:
    from . import _bench, _bench_threads

    native, why = _bench.native_status()
    progress = _Progress(sys.stderr, not args.no_progress)
    if not args.no_progress:
        sys.stderr.write(f"foundation.registry.NATIVE = {native}: {why}\n")
        sys.stderr.flush()
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


def _bench(args: argparse.Namespace) -> int:
    from . import _bench

    modes = [
        m
        for m, on in (("--etcd", args.etcd), ("--scale", args.scale), ("--threads", args.threads))
        if on
    ]
    if len(modes) > 1:
        sys.stderr.write(f"foundation bench: {' and '.join(modes)} are separate modes; pick one\n")
        return 2
    if args.etcd:
        return _bench_etcd(args)
    if args.scale:
        return _bench_scale(args)
    if args.threads:
        if args.threads_duration <= 0:
            sys.stderr.write("foundation bench: --threads-duration must be > 0\n")
            return 2
        return _bench_threads(args)

    sizes = args.sizes or list(_bench.QUICK_SIZES if args.quick else _bench.FULL_SIZES)
    rounds = args.rounds or (3 if args.quick else 5)
    native, why = _bench.native_status()
    progress = _Progress(sys.stderr, not args.no_progress)
    if not args.no_progress:
        sys.stderr.write(f"foundation.registry.NATIVE = {native}: {why}\n")
        sys.stderr.flush()
    try:
        result: dict[str, Any] = _bench.run(
            sizes,
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
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(_bench.format_table(result) + "\n")
    sys.stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m foundation`` and of the ``foundation`` script."""
    args = _parser().parse_args(argv)
    if args.command == "bench":
        return _bench(args)
    if args.command == "demo":
        from .demo import main as demo_main

        return demo_main(args)
    if args.command == "inspect":
        from ._inspect import main as inspect_main

        return inspect_main(args)
    print(f"foundation {args.command}: unknown command", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
