"""Read/write locks of the local coordinator: many readers or one writer, FIFO.

The queue is :mod:`._local_queue`'s with the ``"read"`` / ``"write"``
admission rules. Requests are served in arrival order: readers that arrive
while readers hold and nobody waits join them at once, but a reader that
arrives while a writer waits queues behind that writer, so writers do not
starve; when the writer releases, every reader queued up to the next writer
is let in together. Each hold, read or write, gets a fencing token,
strictly increasing per lock name.
"""

from __future__ import annotations

from ._checks import check_name, check_seconds
from ._local_queue import LocalQueueHandle, LocalQueues

__all__ = ["LocalRWLock", "LocalRWLocks", "LocalReadWriteHandle"]


class LocalRWLocks(LocalQueues):
    """The read/write locks of one local coordinator."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__("rwlock")


class LocalReadWriteHandle(LocalQueueHandle):
    """The read or the write side of a local read/write lock (``rw.read()``, ``rw.write()``)."""

    __slots__ = ()


class LocalRWLock:
    """A local read/write lock, as ``coord.rwlock(name)`` returns it.

    ``async with rw.read()`` shares it with other readers; ``async with
    rw.write()`` holds it alone. Both take ``timeout=`` (then
    :class:`~foundation.errors.LockTimeout`) and ``holder=`` (a name for
    logs and telemetry; default the task's).
    """

    __slots__ = ("_table", "name")

    def __init__(self, table: LocalRWLocks, name: str) -> None:
        self._table = table
        #: The lock's name.
        self.name = name

    def __repr__(self) -> str:
        return f"<LocalRWLock {self.name!r}>"

    def read(
        self,
        timeout: float | None = None,
        *,
        holder: str | None = None,
    ) -> LocalReadWriteHandle:
        """A shared (read) hold: ``async with rw.read(timeout) as held``.

        Entering blocks while a writer holds the lock or waits for it (FIFO);
        leaving releases and never blocks.

        Raises:
            LockTimeout: on entering, not granted within ``timeout``.
            ConfigError: a bad timeout or holder.
        """
        return self._handle("read", timeout, holder)

    def write(
        self,
        timeout: float | None = None,
        *,
        holder: str | None = None,
    ) -> LocalReadWriteHandle:
        """An exclusive (write) hold: ``async with rw.write(timeout) as held``.

        Entering blocks until every earlier hold and request has gone (FIFO);
        leaving releases and never blocks.

        Raises:
            LockTimeout: on entering, not granted within ``timeout``.
            ConfigError: a bad timeout or holder.
        """
        return self._handle("write", timeout, holder)

    def _handle(self, mode: str, timeout: float | None, holder: str | None) -> LocalReadWriteHandle:
        if holder is not None:
            check_name("holder", holder)
        timeout = check_seconds("timeout", timeout)
        return LocalReadWriteHandle(
            self._table, self.name, "read" if mode == "read" else "write", timeout, holder
        )
