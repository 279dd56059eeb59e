"""What a distributed child knows about its own instance: its fencing token."""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["current_fencing_token", "set_fencing_token"]

_TOKEN: ContextVar[int] = ContextVar("foundation.cluster.fencing_token")


def current_fencing_token() -> int:
    """The fencing token of the distributed child running the calling task.

    The token is the create revision of the child's lock in etcd: strictly
    increasing per child id, so an instance that started later has a greater
    one. Hand it to the resources the child writes (a database row, a file),
    and have them refuse writes with a token lower than one already seen:
    that is what keeps a stale instance (a paused process that resumed, see
    docs/cluster.rst) from overwriting a newer one's work. Tasks the child
    starts inherit it. Never blocks.

    Raises:
        LookupError: the calling task is not (inside) a child of a
            distributed supervisor.
    """
    try:
        return _TOKEN.get()
    except LookupError:
        raise LookupError(
            "current_fencing_token() is only set inside a child of a distributed supervisor"
            " (foundation.cluster.open_distributed_supervisor)"
        ) from None


def set_fencing_token(token: int) -> None:
    """Set the calling task's token (the child instance's wrapper does, before the target runs)."""
    _TOKEN.set(token)
