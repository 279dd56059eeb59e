"""Read/write locks of the etcd coordinator: many readers or one writer, FIFO, a lease per hold.

Lock L is the queue (:mod:`._etcd_queue`) under ``prefix + "rwlock/" + L +
"/"``, each request storing its ``mode``, as in etcd's own read/write mutex
recipe: a writer holds once no request is before it; a reader holds once no
*write* request is before it. So a reader that arrives while a writer waits
queues behind it (writers do not starve), and the readers queued behind a
writer are let in together when it goes. A waiter watches only the request
it waits for (a writer: the last request before it; a reader: the last
write request before it) and reads the queue again when that one is gone.
A request whose mode cannot be read (a foreign key) counts as a writer.
The fencing token of a hold, read or write, is its key's create revision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._checks import check_name, check_seconds
from ._etcd_queue import EtcdQueueHandle, Retry, own_level
from ._etcd_session import Changes, loads

if TYPE_CHECKING:
    from ..etcd import EtcdClient, KeyValue
    from ._etcd_context import EtcdContext
    from ._etcd_session import Session

__all__ = ["EtcdRWLock", "EtcdReadHandle", "EtcdReadWriteHandle", "EtcdWriteHandle"]


def _reads(kv: KeyValue) -> bool:
    data = loads(kv.value)
    return isinstance(data, dict) and data.get("mode") == "read"


class EtcdReadWriteHandle(EtcdQueueHandle):
    """The read or the write side of an etcd read/write lock (``rw.read()``, ``rw.write()``)."""

    __slots__ = ()

    #: ``"read"`` or ``"write"``.
    _mode = "write"

    def __init__(
        self, ctx: EtcdContext, name: str, timeout: float | None, holder: str | None
    ) -> None:
        super().__init__(
            ctx,
            name,
            timeout,
            holder,
            subtree="rwlock",
            primitive="rwlock",
            meta={"mode": self._mode},
        )

    def _value(self, who: str) -> dict[str, Any]:
        value = super()._value(who)
        value["mode"] = self._mode
        return value

    def _blocking(self, queue: list[KeyValue], token: int) -> list[KeyValue]:
        before = [kv for kv in queue if kv.create_revision < token]
        if self._mode == "write":
            return before
        return [kv for kv in before if not _reads(kv)]

    async def _wait(
        self, session: Session, mine: KeyValue, queue: list[KeyValue], revision: int
    ) -> None:
        client = self._ctx.client
        directory = self._dir.encode()
        token = mine.create_revision
        while True:
            blocking = self._blocking(queue, token)
            if not blocking:
                return
            await _wait_gone(client, blocking[-1], revision)
            result = await client.range(self._dir, prefix=True)
            queue = own_level(result.kvs, directory)
            revision = result.header.revision
            if not any(kv.key == mine.key for kv in queue):
                raise Retry


class EtcdReadHandle(EtcdReadWriteHandle):
    """The read side of an etcd read/write lock (``rw.read()``)."""

    __slots__ = ()
    _mode = "read"
    kind = "read lock"


class EtcdWriteHandle(EtcdReadWriteHandle):
    """The write side of an etcd read/write lock (``rw.write()``)."""

    __slots__ = ()
    _mode = "write"
    kind = "write lock"


async def _wait_gone(client: EtcdClient, kv: KeyValue, revision: int) -> None:
    """Return once key ``kv`` (as read at ``revision``) is deleted."""
    changes = Changes(client, kv.key, start_revision=revision + 1)
    try:
        while True:
            events = await changes.next()
            if not events:  # compacted: look at the key itself
                now = await client.get(kv.key)
                if now is None or now.create_revision != kv.create_revision:
                    return
                continue
            if any(e.type == "DELETE" for e in events):
                return
    finally:
        await changes.aclose()


class EtcdRWLock:
    """An etcd read/write lock, as ``coord.rwlock(name)`` returns it.

    ``async with rw.read()`` shares it with other readers; ``async with
    rw.write()`` holds it alone; FIFO across every client of the cluster.
    Each hold has a lease of its own: a lost lease cancels the holder's
    block, which raises :class:`~foundation.errors.LockLost`.
    """

    __slots__ = ("_ctx", "name")

    def __init__(self, ctx: EtcdContext, name: str) -> None:
        self._ctx = ctx
        #: The lock's name.
        self.name = name

    def __repr__(self) -> str:
        return f"<EtcdRWLock {self.name!r}>"

    def read(
        self,
        timeout: float | None = None,
        *,
        holder: str | None = None,
    ) -> EtcdReadWriteHandle:
        """A shared (read) hold: ``async with rw.read(timeout) as held``.

        Entering blocks while a write request is before it in the queue;
        leaving revokes the hold's lease (one round trip, shielded).

        Raises:
            LockTimeout: on entering, not granted within ``timeout``.
            NodeUnreachable: on entering, no etcd member answered.
            ConfigError: a bad timeout or holder.
        """
        return self._handle("read", timeout, holder)

    def write(
        self,
        timeout: float | None = None,
        *,
        holder: str | None = None,
    ) -> EtcdReadWriteHandle:
        """An exclusive (write) hold: ``async with rw.write(timeout) as held``.

        Entering blocks until every earlier request has gone; leaving
        revokes the hold's lease (one round trip, shielded).

        Raises:
            LockTimeout: on entering, not granted within ``timeout``.
            NodeUnreachable: on entering, no etcd member answered.
            ConfigError: a bad timeout or holder.
        """
        return self._handle("write", timeout, holder)

    def _handle(self, mode: str, timeout: float | None, holder: str | None) -> EtcdReadWriteHandle:
        if holder is not None:
            check_name("holder", holder)
        timeout = check_seconds("timeout", timeout)
        kind = EtcdReadHandle if mode == "read" else EtcdWriteHandle
        return kind(self._ctx, self.name, timeout, holder)
