"""Semaphores of the local coordinator: at most ``limit`` holders, FIFO, fencing tokens.

The queue is :mod:`._local_queue`'s with the ``"slot"`` admission rule:
fewer than ``limit`` holders, and nobody jumps the queue. Each acquisition
gets a new fencing token, strictly increasing per semaphore name. While a
semaphore is held or waited for, a holder asking with another ``limit``
gets :class:`~foundation.errors.ConfigError`; once it is idle, the next
acquisition sets the limit again.
"""

from __future__ import annotations

from ._local_queue import LocalQueueHandle, LocalQueues

__all__ = ["LocalSemaphore", "LocalSemaphores"]


class LocalSemaphores(LocalQueues):
    """The semaphores of one local coordinator."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__("semaphore")


class LocalSemaphore(LocalQueueHandle):
    """A handle on one local semaphore, as ``coord.semaphore(name, limit)`` returns it.

    ``async with coord.semaphore(name, limit) as slot`` holds one of its
    ``limit`` slots; ``slot.fencing_token`` is new for each acquisition.
    """

    __slots__ = ()

    def __init__(
        self,
        table: LocalSemaphores,
        name: str,
        limit: int,
        timeout: float | None,
        holder: str | None,
    ) -> None:
        super().__init__(table, name, "slot", timeout, holder, limit)

    @property
    def limit(self) -> int:
        """The most holders at a time."""
        return self._limit
