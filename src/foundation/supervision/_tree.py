"""Frozen snapshots of a supervision tree, with a readable text rendering."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from ._spec import ChildState

__all__ = ["ChildNode", "SupervisorTree"]


@dataclass(frozen=True, slots=True)
class ChildNode:
    """One child in a :class:`SupervisorTree`."""

    id: Hashable
    state: ChildState
    restarts: int
    last_error: BaseException | None
    #: The child's own tree when the child is a running supervisor, else None.
    supervisor: SupervisorTree | None = None


@dataclass(frozen=True, slots=True)
class SupervisorTree:
    """A snapshot of a supervisor and, depth-first, its nested supervisors.

    ``str(tree)`` renders it as indented text, one line per child::

        app (one_for_one, 2 children)
        ├── db: running, 1 restart, last error: ConnectionError('reset')
        └── workers: running (dynamic, 1 child)
            └── 0: running
    """

    name: str
    #: ``"one_for_one"``, ``"one_for_all"``, ``"rest_for_one"``.
    strategy: str
    #: True for a DynamicSupervisor.
    dynamic: bool
    children: tuple[ChildNode, ...]

    def render(self) -> str:
        """The tree as indented text (what ``str()`` returns)."""
        lines = [self._header()]
        self._render_children(lines, "")
        return "\n".join(lines)

    __str__ = render

    def _header(self) -> str:
        n = len(self.children)
        kind = f"dynamic, {self.strategy}" if self.dynamic else self.strategy
        return f"{self.name} ({kind}, {n} child{'' if n == 1 else 'ren'})"

    def _render_children(self, lines: list[str], indent: str) -> None:
        for i, node in enumerate(self.children):
            last = i == len(self.children) - 1
            branch = "└── " if last else "├── "
            parts = [node.state.value]
            if node.restarts:
                parts.append(f"{node.restarts} restart{'' if node.restarts == 1 else 's'}")
            if node.last_error is not None:
                parts.append(f"last error: {node.last_error!r}")
            text = f"{indent}{branch}{node.id}: {', '.join(parts)}"
            if node.supervisor is not None:
                text += f" [{node.supervisor._header()}]"
            lines.append(text)
            if node.supervisor is not None:
                node.supervisor._render_children(lines, indent + ("    " if last else "│   "))
