"""The lock-holder record, one shape for every coordinator's held locks.

:class:`HeldLock` (what ``async with coord.lock(name) as held`` yields) is
the same record on every coordinator: the lock's name, who holds it, the
holding task, the fencing token, when it was granted and whether it was
released or lost. :class:`HeldLockRecord` holds those fields, their
``repr`` and the :class:`LockStatus` they make, and the errors a release
by the wrong task or a second release raise; each coordinator subclasses it
with what only it needs (a lease watchdog locally, an etcd session and key
on etcd). A new kind of hold (a semaphore slot, a read or write hold)
subclasses it the same way, setting :attr:`HeldLockRecord.kind`.
"""

from __future__ import annotations

import trio

from ..errors import LockNotHeld
from ._types import LockStatus

__all__ = ["HeldLockRecord", "not_holding"]


class HeldLockRecord:
    """A held lock: name, holder, task, fencing token, grant time, released/lost.

    Made by a coordinator; do not instantiate. Sync attributes never block.
    """

    __slots__ = ("_scope", "holder", "lost", "name", "released", "since", "task", "token")

    #: What is held, as errors name it: ``"lock"`` here, ``"semaphore"``,
    #: ``"read lock"`` or ``"write lock"`` in subclasses.
    kind = "lock"

    def __init__(self, name: str, holder: str, task: trio.lowlevel.Task, token: int) -> None:
        #: The lock's name (without a coordinator's prefix).
        self.name = name
        #: Who holds it (by default the acquiring task's name).
        self.holder = holder
        #: The task that holds it (only it may release it).
        self.task = task
        #: The fencing token: strictly increasing per lock name.
        self.token = token
        #: When it was granted (:func:`trio.current_time`).
        self.since = trio.current_time()
        #: True once released (by :meth:`release` or leaving the block).
        self.released = False
        #: True once the lock was taken away from the holder (its lease ended).
        self.lost = False
        # The holder's ``async with`` block, when a loss must cancel it.
        self._scope: trio.CancelScope | None = None

    @property
    def fencing_token(self) -> int:
        """Strictly increasing per lock name; pass it along with the writes it guards."""
        return self.token

    def __repr__(self) -> str:
        state = "lost" if self.lost else "released" if self.released else "held"
        return (
            f"<{type(self).__name__} {self.name!r} {state} by {self.holder!r} token={self.token}>"
        )

    def status(self) -> LockStatus:
        """This hold as ``coord.lock_status(name)`` reports it."""
        return LockStatus(self.holder, self.since, self.token)

    def _not_holder(self, task: trio.lowlevel.Task) -> LockNotHeld:
        """The error of a release by ``task``, which does not hold this lock."""
        return LockNotHeld(
            self.name,
            f"task {task.name!r} is not its holder (held by {self.holder!r},"
            f" task {self.task.name!r})",
            self.kind,
        )

    def _released_already(self) -> LockNotHeld:
        return LockNotHeld(self.name, "it was already released", self.kind)


def not_holding(
    name: str, task: trio.lowlevel.Task, holder: str | None, kind: str = "lock"
) -> LockNotHeld:
    """The error of a handle's ``release()`` by a task that holds nothing through it.

    ``holder``: for a lock, who holds it (None: nobody); other kinds have
    several holders and pass None, which names none.
    """
    if kind != "lock":
        whose = ""
    elif holder is not None:
        whose = f" (held by {holder!r})"
    else:
        whose = " (nobody holds it)"
    return LockNotHeld(name, f"task {task.name!r} does not hold it{whose}", kind)
