"""``python -m foundation``: the top-level parser, ``--version``, and how a command ends.

Commands:

``bench``
    the backend comparison table (native and python registries against
    plain dicts, side by side in one process); with ``--etcd URLS`` the etcd
    backend's throughput and propagation, with ``--scale`` per-operation
    cost and memory from 1e3 to 1e7 entries, with ``--threads 1,2,4`` OS
    threads sharing one registry.
``demo``
    the main job: a small self-healing system (supervised workers, a
    registry, leader election, barrier rounds, crashes and failover) with a
    live view and a checked summary; ``--etcd URL`` runs it across OS
    processes sharing one etcd. See :mod:`foundation.demo`.
``inspect``
    registrations (``--namespace``, ``--where``), the supervision tree of a
    running demo (its ``--state`` snapshot), lock and leader status; with
    ``--etcd URL`` read from the cluster.

Every command ends the same way: a typed error from :mod:`foundation.errors`
is one line on stderr and exit status 1 (never a traceback), bad options
print the command's own usage and exit 2, Ctrl-C exits 130, and a reader
that goes away early (``inspect --json | head -1``) ends the command quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import FoundationError
from . import _bench_command, _demo_command, _inspect

__all__ = ["main", "version_text"]

#: name -> (add_arguments, main, one-line help, description)
_COMMANDS: dict[
    str,
    tuple[
        Callable[[argparse.ArgumentParser], None],
        Callable[[argparse.Namespace], int],
        str,
        str,
    ],
] = {
    "bench": (
        _bench_command.add_arguments,
        _bench_command.main,
        "compare the registry backends against plain dicts",
        "Time the registry's hot operations on the native and python backends and on"
        " plain dicts, side by side in one process (interleaved rounds, shuffled access"
        " over prebuilt names, medians net of the bare loop, spread over rounds), plus"
        " memory per entry. Human table on stdout, progress on stderr.",
    ),
    "demo": (
        _demo_command.add_arguments,
        _demo_command.main,
        "run the self-healing demo (about 10 s, no server needed)",
        "Run a small self-healing system on trio-foundation: supervised workers"
        " registered by name elect a leader, meet at a barrier each round and agree"
        " on a value, while workers and the leader are crashed on a seeded plan and"
        " restarted. Live view on stdout, a checked summary at the end; exit status"
        " 0 when the checks held.",
    ),
    "inspect": (
        _inspect.add_arguments,
        _inspect.main,
        "show registrations, the demo's supervision tree, leader and locks",
        "Show a demo's published state (--state; by default your newest run's) or an"
        " etcd cluster's (--etcd): registrations (filter with --namespace and --where),"
        " the supervision tree, the leader and term, and lock holders.",
    ),
}


def version_text() -> str:
    """What ``--version`` prints: the version, the interpreter, and which registry twin runs."""
    from .. import __version__

    head = (
        f"trio-foundation {__version__}"
        f" ({platform.python_implementation()} {platform.python_version()})"
    )
    try:
        from ..registry import _compat
    except Exception as exc:  # a bad FOUNDATION_* value: say so, still print the version
        return f"{head}\nregistry: cannot import: {type(exc).__name__}: {exc}"
    if _compat.NATIVE:
        twin = "native extension: in use (foundation.NATIVE is True)"
    else:
        if _compat.NO_EXTENSIONS:
            why = "FOUNDATION_NO_EXTENSIONS is set"
        elif not _compat.CPYTHON:
            why = f"{sys.implementation.name} is not CPython"
        else:
            why = (
                "it was not compiled when this copy was installed (no C compiler, or"
                " FOUNDATION_NO_EXTENSIONS=1 then; 'pip install -v' shows why)"
            )
        twin = (
            f"native extension: NOT in use, {why}; the pure-Python twin runs, slower"
            " (foundation.NATIVE is False)"
        )
    return f"{head}\n{twin}"


class _Version(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        sys.stdout.write(version_text() + "\n")
        parser.exit()


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="python -m foundation",
        description="trio-foundation command line",
    )
    parser.add_argument(
        "--version",
        action=_Version,
        help="print the version and whether the native extension is in use, then exit",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    parsers = {}
    for name, (add_arguments, _, help_, description) in _COMMANDS.items():
        parsers[name] = sub.add_parser(name, help=help_, description=description)
        add_arguments(parsers[name])
    return parser, parsers


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser, parsers = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # argparse hands a subcommand's unknown options up to the top-level
        # parser, whose usage says nothing about them: show the command's.
        parsers[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def _stdout_gone() -> None:
    """The reader closed our stdout: point it at /dev/null so the exit flush stays quiet.

    Python flushes ``sys.stdout`` once more on the way out; into a closed
    pipe that prints "Exception ignored ... BrokenPipeError". This is the
    recipe of the ``signal`` module's documentation ("Note on SIGPIPE").
    """
    # ValueError, OSError: no file descriptor behind sys.stdout (a test's capture).
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m foundation`` and of the ``foundation`` script.

    Returns the exit status: 0 on success, 1 when the command failed (the
    reason on stderr, one line) or its reader went away, 2 for bad options,
    130 on Ctrl-C.
    """
    try:
        args = _parse(argv)
        try:
            code = _COMMANDS[args.command][1](args)
        except BaseException as exc:
            leaves = _leaves(exc)
            if all(isinstance(e, FoundationError) for e in leaves):
                for e in leaves:
                    print(f"foundation {args.command}: {e}", file=sys.stderr)
                return 1
            if all(isinstance(e, KeyboardInterrupt) for e in leaves):
                print(f"foundation {args.command}: interrupted", file=sys.stderr)
                return 130
            raise
        sys.stdout.flush()
        return code
    except BaseException as exc:
        if all(isinstance(e, BrokenPipeError) for e in _leaves(exc)):
            _stdout_gone()
            return 1
        raise
