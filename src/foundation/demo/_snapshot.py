"""The demo's published state: plain JSON, written atomically, rendered as text.

A running demo writes a snapshot of its state (supervision tree,
registrations, leader and term, locks, recent events) to ``--state PATH``
every half second; ``python -m foundation inspect`` reads it. Snapshots are
plain JSON (no pickles), so an operator can also read them with ``jq``, and
each is written to a temporary file and renamed over the old one
(:func:`os.replace` is atomic), so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ConfigError
from ..registry import Registration
from ..supervision import SupervisorTree

__all__ = [
    "FORMAT",
    "check_snapshot",
    "jsonable",
    "read_snapshot",
    "registration_json",
    "registrations_json",
    "render_tree",
    "short_error",
    "tree_json",
    "write_atomic",
]

#: The ``format`` field of every snapshot; inspect refuses other formats.
FORMAT = "foundation-demo/1"


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
