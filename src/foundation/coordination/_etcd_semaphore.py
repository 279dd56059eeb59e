"""Semaphores of the etcd coordinator: at most ``limit`` holders, FIFO, a lease per holder.

Semaphore S is the queue (:mod:`._etcd_queue`) under ``prefix +
"semaphore/" + S + "/"``: a request holds a slot when fewer than ``limit``
requests are before it, so the holders are always the first ``limit`` keys
by create revision, and waiters are served in arrival order. A waiter
watches the queue from the revision it read and counts the requests before
it going; no re-read is needed unless etcd compacted that history.

Each request stores its ``limit``; a request that finds an earlier one with
another limit deletes its key and raises :class:`~foundation.errors.ConfigError`
(so of two disagreeing holders, the later one is refused, as on the local
coordinator). The fencing token is the key's create revision.

etcd has no semaphore service, so with ``prefix=""`` these keys interoperate
with no other client (locks keep working with ``etcdctl lock``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ._etcd_queue import EtcdQueueHandle, Retry, own_level
from ._etcd_session import Changes, loads

if TYPE_CHECKING:
    from ..etcd import KeyValue
    from ._etcd_context import EtcdContext
    from ._etcd_session import Session

__all__ = ["EtcdSemaphore"]


class EtcdSemaphore(EtcdQueueHandle):
    """A handle on one etcd semaphore, as ``coord.semaphore(name, limit)`` returns it.

    ``async with`` holds one of its ``limit`` slots (FIFO across every
    client of the cluster); ``slot.fencing_token`` is new for each
    acquisition. :meth:`acquire` / :meth:`release` do the same by hand.
    """

    __slots__ = ("_limit",)

    kind = "semaphore"

    def __init__(
        self, ctx: EtcdContext, name: str, limit: int, timeout: float | None, holder: str | None
    ) -> None:
        super().__init__(ctx, name, timeout, holder, subtree="semaphore", primitive="semaphore")
        self._limit = limit

    @property
    def limit(self) -> int:
        """The most holders at a time."""
        return self._limit

    def _value(self, who: str) -> dict[str, Any]:
        value = super()._value(who)
        value["limit"] = self._limit
        return value

    def _check(self, before: list[KeyValue]) -> None:
        for kv in before:
            data = loads(kv.value)
            limit = data.get("limit") if isinstance(data, dict) else None
            if isinstance(limit, int) and limit != self._limit:
                raise ConfigError(
                    f"semaphore {self.name!r} is in use with limit={limit}, not"
                    f" limit={self._limit}: every holder of a semaphore must give the same limit"
                )

    async def _wait(
        self, session: Session, mine: KeyValue, queue: list[KeyValue], revision: int
    ) -> None:
        token = mine.create_revision
        before = {kv.key for kv in queue if kv.create_revision < token}
        if len(before) < self._limit:
            return
        client = self._ctx.client
        directory = self._dir.encode()
        changes = Changes(client, self._dir, prefix=True, start_revision=revision + 1)
        try:
            while len(before) >= self._limit:
                events = await changes.next()
                if not events:  # compacted: read the queue again
                    result = await client.range(self._dir, prefix=True, keys_only=True)
                    current = own_level(result.kvs, directory)
                    if not any(kv.key == mine.key for kv in current):
                        raise Retry
                    before = {kv.key for kv in current if kv.create_revision < token}
                    continue
                for event in events:
                    if event.type == "DELETE":
                        before.discard(event.kv.key)
        finally:
            await changes.aclose()
