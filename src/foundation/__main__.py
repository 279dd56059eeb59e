"""The ``foundation`` command line: ``python -m foundation <command>``.

Commands:

``bench``
    the backend comparison table of DESIGN section 6 (native and python
    registries against plain dicts, side by side in one process).
``demo``, ``inspect``
    not implemented yet (exit code 2).
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

_NOT_YET = ("demo", "inspect")


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
        help="interleaved rounds per size (default 5; --quick: 3)",
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
    for name in _NOT_YET:
        sub.add_parser(name, help="not implemented yet", add_help=False).add_argument(
            "rest", nargs=argparse.REMAINDER
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


def _bench(args: argparse.Namespace) -> int:
    from . import _bench

    if args.etcd:
        return _bench_etcd(args)

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
    print(
        f"foundation {args.command}: not implemented yet (see DESIGN section 7);"
        " try 'python -m foundation bench'",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
