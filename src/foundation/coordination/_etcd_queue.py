"""The queue under the etcd semaphore and read/write lock: one key per request, by revision.

A request (a semaphore slot, a read or a write hold) on name N is a key
``<dir> + <lease id in hex>`` (``<dir>`` is ``prefix + "semaphore/" + N +
"/"`` or ``prefix + "rwlock/" + N + "/"``) bound to a lease of its own and
holding JSON (``holder``, ``since``, and the semaphore's ``limit`` or the
hold's ``mode``). The keys' create revisions order the queue, the same for
every client: a request is granted by what is *before* it, and what is
before a key only ever shrinks (later keys come after it), so once granted
it stays granted while its key lives.

The acquisition, as for locks: grant a lease (a
:class:`~._etcd_session.Session`); one txn creates the key and reads the
queue; if the requests before it admit it, it holds at once, else it waits
(see :class:`EtcdQueueHandle` subclasses), raced against the session: a lost
lease starts again with a new one, ``timeout`` raises
:class:`~foundation.errors.LockTimeout`. Cancelled or timed out, the lease
is revoked (shielded) before the call returns, which deletes the key.

Keys deeper under ``<dir>`` (those of a name ``N/...``) are not part of the
queue and are ignored.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

import trio

from .. import telemetry
from ..errors import LockTimeout
from ..etcd import compare_create, op_put, op_range
from ._etcd_hold import EtcdHold, EtcdHoldHandle
from ._etcd_session import dumps

if TYPE_CHECKING:
    from ..etcd import KeyValue
    from ._etcd_context import EtcdContext
    from ._etcd_session import Session

__all__ = ["EtcdQueueHandle", "Retry", "own_level"]

logger = logging.getLogger("foundation.coordination")
_emit = telemetry.emit


class Retry(Exception):
    """Internal: the session was lost before the request was granted; start again."""


def own_level(kvs: list[KeyValue], directory: bytes) -> list[KeyValue]:
    """The keys right under ``directory`` (not deeper), in create-revision order."""
    start = len(directory)
    return sorted(
        (kv for kv in kvs if b"/" not in kv.key[start:]), key=lambda kv: kv.create_revision
    )


class EtcdQueueHandle(EtcdHoldHandle[EtcdHold]):
    """A handle whose holds are requests in an etcd queue (see the module docstring).

    Subclasses give the queue's directory (:attr:`_dir`), the request's JSON
    (:meth:`_value`), an optional check of the requests before it
    (:meth:`_check`) and the wait (:meth:`_wait`).
    """

    __slots__ = ("_dir", "_meta", "_primitive")

    def __init__(
        self,
        ctx: EtcdContext,
        name: str,
        timeout: float | None,
        holder: str | None,
        *,
        subtree: str,
        primitive: str,
        meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(ctx, name, timeout, holder)
        self._dir = f"{ctx.prefix}{subtree}/{name}/"
        self._primitive = primitive
        self._meta = meta or {}

    def _value(self, who: str) -> dict[str, Any]:
        return {"holder": who, "since": time.time()}

    def _check(self, before: list[KeyValue]) -> None:
        """Raise if the requests ``before`` this one rule it out (a semaphore's limit)."""

    async def _wait(
        self, session: Session, mine: KeyValue, queue: list[KeyValue], revision: int
    ) -> None:
        """Return once ``mine`` is granted; ``queue`` is the queue read at ``revision``.

        Raises :class:`Retry` if ``mine`` is gone.
        """
        raise NotImplementedError

    async def _acquire(self) -> EtcdHold:
        await trio.lowlevel.checkpoint_if_cancelled()
        ctx = self._ctx
        task = trio.lowlevel.current_task()
        who = self._holder if self._holder is not None else task.name
        started = trio.current_time()
        deadline = math.inf if self.timeout is None else started + self.timeout
        while True:
            session = await ctx.open_session(f"{self.kind} {self.name!r} ({who})", fenced=True)
            try:
                key, token = await self._join(session, who, deadline)
            except Retry:
                await session.close()
                continue
            except BaseException:
                await session.close()
                raise
            hold = EtcdHold(
                self.name,
                who,
                task,
                session,
                key,
                token,
                primitive=self._primitive,
                kind=self.kind,
                meta=self._meta,
            )
            session.on_lost(hold._on_lost)
            hold._emit("acquire", {"token": token, "wait": hold.since - started})
            return hold

    async def _join(self, session: Session, who: str, deadline: float) -> tuple[bytes, int]:
        client = self._ctx.client
        directory = self._dir
        key = f"{directory}{session.lease_id:x}".encode()
        value = dumps(self._value(who), "holder")
        # Retrying is safe: a second run finds the key and only reads.
        result = await client.txn(
            [compare_create(key, "==", 0)],
            [op_put(key, value, lease=session.lease_id), op_range(directory, prefix=True)],
            [op_range(directory, prefix=True)],
            retry_ambiguous=True,
        )
        kvs = own_level(getattr(result.responses[-1], "kvs", []), directory.encode())
        mine = next((kv for kv in kvs if kv.key == key), None)
        if mine is None:
            raise Retry  # the lease ended already: its key is gone
        token = mine.create_revision
        self._check([kv for kv in kvs if kv.create_revision < token])
        session.guard(key, token)
        with trio.CancelScope(deadline=deadline) as scope:
            remove = session.on_lost(lambda _reason: scope.cancel())
            try:
                await self._wait(session, mine, kvs, result.revision)
            finally:
                remove()
        if session.lost.is_set():
            logger.info(
                "%s %r: lost the lease while waiting (%s); joining the queue again",
                self.kind,
                self.name,
                session.reason,
            )
            raise Retry
        if scope.cancelled_caught:
            assert self.timeout is not None
            error = LockTimeout(self.name, self.timeout, self.kind)
            logger.warning("%s", error)
            _emit(
                f"foundation.coordination.{self._primitive}.timeout",
                {"timeout": self.timeout},
                {self._primitive: self.name, "holder": who, **self._meta},
            )
            raise error
        return key, token
