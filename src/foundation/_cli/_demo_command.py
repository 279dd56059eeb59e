"""``python -m foundation demo``: options, logging, the live view, the exit status."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
from collections.abc import Callable

import trio

from ..config import backend_from_env
from ..demo import DemoConfig, View, run_demo
from ..demo._snapshot import new_state_path, state_dir
from ..demo._view import format_summary
from ..errors import ConfigError, FoundationError
from ..registry import NATIVE
from ._options import count, endpoints, seconds

__all__ = ["add_arguments", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo`` options to ``parser``."""
    parser.add_argument(
        "--seconds", type=seconds, default=10.0, help="how long the scenario runs (default 10)"
    )
    parser.add_argument(
        "--workers", type=count, default=4, help="supervised workers, 2 to 64 (default 4)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds which worker crashes when (default 0)"
    )
    parser.add_argument(
        "--state",
        metavar="PATH",
        default=None,
        help="publish JSON snapshots here for 'inspect' (default: a new file per run in"
        f" {state_dir()}, printed at start)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the summary as JSON on stdout (view on stderr)"
    )
    parser.add_argument(
        "--round-interval",
        type=seconds,
        default=0.4,
        metavar="SECONDS",
        help="pause between two rounds (default 0.4)",
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "native", "python"),
        default="auto",
        help="local mode's registry backend (default auto: native if built)",
    )
    parser.add_argument(
        "--log-file",
        metavar="PATH",
        default=None,
        help="where the library's log records go (default: the state path with .log)",
    )
    etcd = parser.add_argument_group("etcd mode")
    etcd.add_argument(
        "--etcd",
        metavar="URL[,URL...]",
        type=endpoints,
        default=None,
        help="run across OS processes sharing this etcd cluster",
    )
    etcd.add_argument(
        "--processes",
        type=count,
        default=2,
        help="worker processes: the nodes of the workers' distributed supervisor (default 2)",
    )
    etcd.add_argument(
        "--prefix",
        default="foundation-demo/",
        help="key prefix of everything the demo writes (default foundation-demo/)",
    )
    etcd.add_argument(
        "--ttl",
        type=count,
        default=3,
        help="lease TTL in seconds: how long a killed process's names and leadership live on",
    )
    # The worker processes of etcd mode are this same command with a role.
    parser.add_argument(
        "--role", choices=("main", "worker"), default="main", help=argparse.SUPPRESS
    )
    parser.add_argument("--proc", default="proc-1", help=argparse.SUPPRESS)


def _config(args: argparse.Namespace) -> DemoConfig:
    state = args.state
    if state is None and args.role == "main":
        state = new_state_path()
    log_file = args.log_file
    if log_file is None and state is not None:
        log_file = os.path.splitext(state)[0] + ".log"
    return DemoConfig(
        seconds=args.seconds,
        workers=args.workers,
        seed=args.seed,
        state_path=state,
        round_interval=args.round_interval,
        backend=args.backend,
        etcd=args.etcd,
        processes=args.processes,
        prefix=args.prefix,
        ttl=args.ttl,
        log_file=log_file,
    ).checked()


def _log_to(path: str | None) -> Callable[[], None]:
    """Send the ``foundation`` loggers' records to ``path`` (stderr when None).

    The demo crashes workers on purpose and supervisors log every crash with
    its traceback: on the terminal that would bury the live view, so by
    default the records go to a file next to the state (printed at start).
    Returns the undo.
    """
    handler: logging.Handler
    if path is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(logging.WARNING)
    else:
        handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(
        logging.Formatter("%(asctime)s pid %(process)d %(name)s %(levelname)s: %(message)s")
    )
    log = logging.getLogger("foundation")
    old_level = log.level
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    log.addHandler(handler)

    def undo() -> None:
        log.removeHandler(handler)
        log.setLevel(old_level)
        handler.close()

    return undo


def _backend_label(config: DemoConfig) -> str:
    if config.etcd is not None:
        return f"etcd at {', '.join(config.etcd)}, prefix {config.prefix!r}"
    name = config.backend if config.backend != "auto" else backend_from_env("auto")
    if name == "auto":
        name = "native" if NATIVE else "python"
    label = f"embedded {name} registry, LocalCoordinator"
    if not NATIVE:
        label += "; the native extension is not in use: 'python -m foundation --version' says why"
    return label


def main(args: argparse.Namespace) -> int:
    """Run ``python -m foundation demo`` with parsed ``args``; the exit status.

    0 when the scenario's checks held, 1 when they did not or the run failed
    (the reason on stderr, and in the summary), 2 for settings that make no
    sense.
    """
    try:
        config = _config(args)
    except ConfigError as exc:
        print(f"foundation demo: {exc}", file=sys.stderr)
        return 2
    if args.role == "worker":
        return _worker_main(config, args)
    stream = sys.stderr if args.json else sys.stdout
    view = View(stream)
    view.say(
        f"trio-foundation demo: {config.workers} workers, {config.seconds:g} s, seed"
        f" {config.seed}, {config.mode} mode ({_backend_label(config)})"
    )
    view.say(
        f"  state: {config.state_path}  (python -m foundation inspect --state {config.state_path})"
    )
    view.say(f"  log:   {config.log_file}")
    undo = _log_to(config.log_file)
    try:
        summary = trio.run(functools.partial(run_demo, config, view=view))
    except FoundationError as exc:
        view.say(f"foundation demo: failed: {exc}")
        if args.json:
            print(json.dumps({"ok": False, "problems": [str(exc)]}))
        return 1
    except KeyboardInterrupt:
        view.say("foundation demo: interrupted")
        return 130
    finally:
        undo()
    view.close()
    tree = summary.extra.get("tree")
    if args.json:
        json.dump(summary.to_json(), sys.stdout, indent=1)
        sys.stdout.write("\n")
        sys.stdout.flush()
        if not summary.ok:
            print("foundation demo: FAILED: " + "; ".join(summary.problems), file=sys.stderr)
    else:
        view.say(format_summary(summary, tree if isinstance(tree, dict) else None))
    return 0 if summary.ok else 1


def _worker_main(config: DemoConfig, args: argparse.Namespace) -> int:
    """A worker process of etcd mode (started by the parent, talks JSON lines on stdout)."""
    if config.etcd is None:
        print("foundation demo: --role worker needs --etcd", file=sys.stderr)
        return 2
    undo = _log_to(config.log_file)
    try:
        from ..demo._cluster import run_worker_process

        trio.run(run_worker_process, config, args.proc)
    except KeyboardInterrupt:
        return 130
    finally:
        undo()
    return 0
