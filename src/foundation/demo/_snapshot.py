"""What a demo publishes and ``inspect`` reads: names, snapshot format, where state lives.

This is the one module the demo and the ``inspect`` command share: the
registry namespaces, election, lock and barrier names the demo uses, the
snapshot's format, the per-user directory the snapshots go to, and the JSON
conversions and tree rendering both sides use.

A running demo writes a snapshot of its state (supervision tree,
registrations, leader and term, locks, recent events) to ``--state PATH``
every half second; ``python -m foundation inspect`` reads it. Snapshots are
plain JSON (no pickles), so an operator can also read them with ``jq``, and
each is written to a temporary file and renamed over the old one
(:func:`os.replace` is atomic), so a reader never sees half a file.

By default each run gets its own file in a directory of the current user's,
``<tempdir>/foundation-<uid>/demo-<date>-<time>-<pid>.json`` (the directory
mode 0700), so two users or two runs on one machine never overwrite each
other's state, and ``inspect`` with no ``--state`` reads the newest run's.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import stat
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ConfigError
from ..registry import Registration
from ..supervision import ChildState, SupervisorTree

__all__ = [
    "BARRIER",
    "CHAOS_NS",
    "ELECTION",
    "FORMAT",
    "INSTANCES_NS",
    "LEADER_NAME",
    "LEDGER_LOCK",
    "LEDGER_NS",
    "NAMES_NS",
    "ROUNDS_TOPIC",
    "ROUND_NAME",
    "WATCHED_NAMESPACES",
    "check_snapshot",
    "jsonable",
    "latest_state_path",
    "new_state_path",
    "read_snapshot",
    "registration_json",
    "registrations_json",
    "render_tree",
    "settled_tree",
    "short_error",
    "state_dir",
    "tree_json",
    "write_atomic",
]

#: Worker names (``worker-1`` -> its current instance id) and ``leader``.
NAMES_NS = "demo"
#: One entry per live instance (``worker-1#2``), with metadata (role, pid, term).
INSTANCES_NS = "demo.instances"
#: Poison pills: the fault injector registers ``(CHAOS_NS, instance)`` to crash it.
CHAOS_NS = "demo.chaos"
#: The round ledger: ``(LEDGER_NS, ROUND_NAME)`` holds the latest recorded
#: round ``{"round", "value", "by"}``, moved forward by compare-and-set
#: (``update_value(..., expect=...)``), and the one worker that moves it
#: announces the round on the ``(LEDGER_NS, ROUNDS_TOPIC)`` pub/sub topic.
LEDGER_NS = "demo.ledger"
ROUND_NAME = "round"
ROUNDS_TOPIC = "rounds"
#: Namespaces whose entries belong to workers: all must be gone once they are.
WATCHED_NAMESPACES = (NAMES_NS, INSTANCES_NS)
#: The name the leader registers under :data:`NAMES_NS` while it leads (with
#: metadata ``role="leader"``, its term and fencing token).
LEADER_NAME = "leader"
#: The election group the workers campaign in.
ELECTION = "demo-leader"
#: The lock the leader holds for its whole term (its fencing token shows who wrote last).
LEDGER_LOCK = "demo-ledger"
#: The barrier the workers meet at, once per round.
BARRIER = "demo-round"

#: The ``format`` field of every snapshot; inspect refuses other formats.
FORMAT = "foundation-demo/1"

_STATE_GLOB = "demo-*.json"


def _user_tag() -> str:
    if hasattr(os, "getuid"):
        return str(os.getuid())
    import getpass

    return getpass.getuser()


def state_dir() -> str:
    """The current user's directory for demo state: ``<tempdir>/foundation-<uid>``."""
    return os.path.join(tempfile.gettempdir(), f"foundation-{_user_tag()}")


def _check_own_dir(path: str) -> None:
    """Refuse a state directory that is not a real directory of this user's.

    Another user could create ``/tmp/foundation-<our uid>`` first (or a
    symlink there) to read or plant our state; a directory we do not own, or
    that others can write to, is refused rather than used.
    """
    st = os.lstat(path)
    theirs = hasattr(os, "getuid") and st.st_uid != os.getuid()
    if not stat.S_ISDIR(st.st_mode) or theirs:
        raise ConfigError(
            f"{path!r} is not a directory of yours, so the demo will not keep its state"
            " there; remove it, or pass --state PATH"
        )
    if sys.platform != "win32" and st.st_mode & 0o077:
        os.chmod(path, 0o700)


def new_state_path(*, now: float | None = None, pid: int | None = None) -> str:
    """A fresh state file for one run in :func:`state_dir` (created, mode 0700).

    Raises:
        ConfigError: the directory exists but is not the current user's.
    """
    directory = state_dir()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    _check_own_dir(directory)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    return os.path.join(directory, f"demo-{stamp}-{os.getpid() if pid is None else pid}.json")


def latest_state_path() -> str:
    """The state file of the current user's newest run (the default of ``inspect``).

    Runs are ordered by their start time (in the file name), then by the
    time their state was last written.

    Raises:
        ConfigError: no run of the current user's left any state; the
            message says how to get one.
    """
    directory = state_dir()
    paths: list[tuple[str, float, str]] = []
    if os.path.lexists(directory):
        _check_own_dir(directory)
        for path in glob.glob(os.path.join(directory, _STATE_GLOB)):
            with contextlib.suppress(OSError):  # removed meanwhile
                started = os.path.basename(path)[len("demo-") : -len(".json")].rsplit("-", 1)[0]
                paths.append((started, os.stat(path).st_mtime, path))
    if not paths:
        raise ConfigError(
            f"no demo state of yours under {directory!r}; start one with"
            " 'python -m foundation demo' (it prints where it publishes), or pass --state PATH"
        )
    return max(paths)[2]


def jsonable(value: Any) -> Any:
    """``value`` as JSON data: containers converted, anything else as its ``repr``.

    Registry owners of local ``registered()`` blocks are opaque tokens and
    metadata may hold any object locally; a snapshot must still be JSON.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return repr(value)


def short_error(error: BaseException | None, limit: int = 80) -> str | None:
    """``Type: message`` of ``error``, cut to ``limit`` characters (None stays None)."""
    if error is None:
        return None
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def tree_json(
    tree: SupervisorTree, grafts: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """A :class:`SupervisorTree` as JSON data.

    ``grafts`` maps a child id to the JSON tree of a supervisor that runs
    elsewhere (the etcd mode's worker processes), hung under that child.
    """
    children = []
    for node in tree.children:
        sub: Mapping[str, Any] | None = None
        if node.supervisor is not None:
            sub = tree_json(node.supervisor, grafts)
        elif grafts is not None:
            sub = grafts.get(str(node.id))
        children.append(
            {
                "id": jsonable(node.id),
                "state": node.state.value,
                "restarts": node.restarts,
                "last_error": short_error(node.last_error),
                "supervisor": dict(sub) if sub is not None else None,
            }
        )
    return {
        "name": tree.name,
        "strategy": tree.strategy,
        "dynamic": tree.dynamic,
        "children": children,
    }


_ENDED = (ChildState.STOPPED.value, ChildState.CRASHED.value)


def settled_tree(before: Mapping[str, Any] | None, after: SupervisorTree) -> dict[str, Any]:
    """The JSON tree of a root supervisor that has exited.

    ``after`` is the root's own tree once its block has ended: its children's
    final states, but no nested trees any more (a stopped supervisor child
    has nothing running to show). Under each child that was a supervisor,
    the nested tree ``before`` (taken while it ran) is kept for its restarts
    and last errors, with every child still marked live there shown as
    stopped: a supervisor that has exited runs nothing.
    """
    grafts = {
        str(node.get("id")): _stopped(node["supervisor"])
        for node in (before or {}).get("children", ())
        if node.get("supervisor")
    }
    return tree_json(after, grafts)


def _stopped(tree: Mapping[str, Any]) -> dict[str, Any]:
    children = []
    for node in tree.get("children", ()):
        state = node.get("state")
        sub = node.get("supervisor")
        children.append(
            {
                **node,
                "state": state if state in _ENDED else ChildState.STOPPED.value,
                "supervisor": _stopped(sub) if sub else None,
            }
        )
    return {**tree, "children": children}


def render_tree(tree: Mapping[str, Any]) -> list[str]:
    """The JSON tree as indented text, one line per child (as ``str(SupervisorTree)``)."""
    lines = [_header(tree)]
    _render_children(tree, lines, "")
    return lines


def _header(tree: Mapping[str, Any]) -> str:
    n = len(tree.get("children", ()))
    kind = f"dynamic, {tree.get('strategy')}" if tree.get("dynamic") else tree.get("strategy")
    return f"{tree.get('name')} ({kind}, {n} child{'' if n == 1 else 'ren'})"


def _render_children(tree: Mapping[str, Any], lines: list[str], indent: str) -> None:
    children = list(tree.get("children", ()))
    for i, node in enumerate(children):
        last = i == len(children) - 1
        parts = [str(node.get("state"))]
        restarts = int(node.get("restarts") or 0)
        if restarts:
            parts.append(f"{restarts} restart{'' if restarts == 1 else 's'}")
        if node.get("last_error"):
            parts.append(f"last error: {node['last_error']}")
        text = f"{indent}{'└── ' if last else '├── '}{node.get('id')}: {', '.join(parts)}"
        sub = node.get("supervisor")
        if sub:
            text += f" [{_header(sub)}]"
        lines.append(text)
        if sub:
            _render_children(sub, lines, indent + ("    " if last else "│   "))


def registration_json(reg: Registration) -> dict[str, Any]:
    """One registration as JSON data (its owner as text when it is an opaque token)."""
    return {
        "namespace": jsonable(reg.namespace),
        "name": jsonable(reg.name),
        "value": jsonable(reg.value),
        "metadata": jsonable(reg.metadata),
        "owner": jsonable(reg.owner),
    }


def registrations_json(regs: Iterable[Registration]) -> list[dict[str, Any]]:
    """Registrations as JSON data, sorted by namespace and name (stable output)."""
    out = [registration_json(r) for r in regs]
    out.sort(key=lambda r: (str(r["namespace"]), str(r["name"])))
    return out


def write_atomic(path: str, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` so a reader sees the old file or the new one.

    The temporary file is made in the same directory (a rename across file
    systems is not atomic) and removed again if anything fails.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".foundation-demo-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_snapshot(path: str) -> dict[str, Any]:
    """Read a snapshot written by a demo.

    Raises:
        ConfigError: no such file, not JSON, or not a demo snapshot; the
            message says how to get one.
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ConfigError(
            f"no demo state at {path!r}; start one with 'python -m foundation demo'"
            " (it prints where it publishes), or pass --state PATH"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read demo state {path!r}: {exc}") from exc
    return check_snapshot(data, path)


def check_snapshot(data: Any, where: str) -> dict[str, Any]:
    """``data`` if it is a demo snapshot of the known format, else ConfigError."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(
            f"{where!r} is not a trio-foundation demo snapshot (format {FORMAT!r});"
            " point --state at the file the demo printed at start"
        )
    return data
