"""Holds of the etcd coordinator and the handle that takes them, shared by every kind.

An etcd hold (a lock, a semaphore slot, a read or write hold) is a key
bound to a lease of its own (a :class:`~._etcd_session.Session`); its
fencing token is the key's create revision. :class:`EtcdHold` is that
record; :class:`EtcdHoldHandle` is what ``coord.lock(...)``,
``coord.semaphore(...)`` and ``rw.read()`` / ``rw.write()`` return:
``async with`` acquires on entry and releases on exit, :meth:`acquire` /
:meth:`release` do the same by hand, one hold per task.

While held, the block runs in a cancel scope the session's loss cancels
(its lease ended, its key was deleted, a lock's ``ttl=`` ran out, or the
session fenced itself because no keepalive was acknowledged in time, a
margin before etcd could expire the lease): leaving it then raises
:class:`~foundation.errors.LockLost`, unless the block raised an error of
its own, which wins. Releasing, or leaving a lost hold, revokes the lease
(shielded, bounded by the client's timeout), which deletes the key when a
member can be reached; otherwise etcd expires it.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import trio

from .. import telemetry
from ..errors import LockLost
from ._etcd_reach import reaching, unreachable_as_node
from ._held import HeldLockRecord, not_holding

if TYPE_CHECKING:
    from ._etcd_context import EtcdContext
    from ._etcd_session import Session

__all__ = ["EtcdHold", "EtcdHoldHandle"]

logger = logging.getLogger("foundation.coordination")
_emit = telemetry.emit


class EtcdHold(HeldLockRecord):
    """A hold on etcd: a key with a lease of its own (see the module docstring).

    Made by the coordinator; do not instantiate. Sync attributes never block.
    """

    __slots__ = ("_meta", "_primitive", "_session", "key", "kind", "reason")

    def __init__(
        self,
        name: str,
        holder: str,
        task: trio.lowlevel.Task,
        session: Session,
        key: bytes,
        token: int,
        *,
        primitive: str = "lock",
        kind: str = "lock",
        meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(name, holder, task, token)
        self._session = session
        #: The etcd key of the hold (its create revision is the token).
        self.key = key
        #: Why it was lost (lease ended, key deleted, ttl ran out), or None.
        self.reason: str | None = None
        #: ``"lock"``, ``"semaphore"``, ``"read lock"`` or ``"write lock"`` (as errors name it).
        self.kind = kind
        self._primitive = primitive  # telemetry: foundation.coordination.<primitive>.<event>
        self._meta = meta or {}

    @property
    def lease_id(self) -> int:
        """The ID of the hold's own etcd lease (its key is bound to it).

        Bind other keys to it (``lease=held.lease_id``) to make them live
        exactly as long as the hold on the server: releasing revokes the
        lease, and etcd expires it with the holder when it is cut off.
        """
        return self._session.lease_id

    def _emit(self, event: str, measurements: dict[str, float], **meta: Any) -> None:
        _emit(
            f"foundation.coordination.{self._primitive}.{event}",
            measurements,
            {self._primitive: self.name, "holder": self.holder, **self._meta, **meta},
        )

    def _on_lost(self, reason: str) -> None:
        if self.released or self.lost:
            return
        self.lost = True
        self.reason = reason
        logger.warning(
            "%s %r (holder %r, token %d) lost: %s; the holder's block is cancelled",
            self.kind,
            self.name,
            self.holder,
            self.token,
            reason,
        )
        held = trio.current_time() - self.since
        self._emit("lost", {"token": self.token, "held": held}, reason=reason)
        if self._scope is not None:
            self._scope.cancel()

    async def release(self) -> None:
        """Release now (revokes its lease; shielded); leaving the block then does nothing.

        Raises:
            LockNotHeld: called from another task than the holder, or again.
            LockLost: it was lost before this release.
        """
        task = trio.lowlevel.current_task()
        if task is not self.task:
            raise self._not_holder(task)
        if self.lost and not self.released:
            await self._drop("lost")
            raise LockLost(self.name, self.token, self.kind)
        if self.released:
            raise self._released_already()
        await self._drop("release")

    async def _drop(self, why: str) -> None:
        self.released = True
        await self._session.close()
        if why == "release":
            self._emit("release", {"token": self.token, "held": trio.current_time() - self.since})


_H = TypeVar("_H", bound=EtcdHold)


class EtcdHoldHandle(Generic[_H]):
    """A handle that takes holds of one name, one per task (see the module docstring).

    Subclasses implement :meth:`_acquire` (and may name the holder a
    refused release reports, :meth:`_current_holder`).
    """

    __slots__ = ("_ctx", "_holder", "_holds", "_scoped", "name", "timeout")

    #: What the handle holds, as errors name it.
    kind = "lock"

    def __init__(
        self, ctx: EtcdContext, name: str, timeout: float | None, holder: str | None
    ) -> None:
        self._ctx = ctx
        #: The name (without the coordinator's prefix).
        self.name = name
        #: Seconds to wait in the queue, then :class:`~foundation.errors.LockTimeout`.
        self.timeout = timeout
        self._holder = holder
        self._holds: dict[trio.lowlevel.Task, _H] = {}
        self._scoped: dict[trio.lowlevel.Task, _H] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} timeout={self.timeout}>"

    async def _acquire(self) -> _H:
        raise NotImplementedError

    async def _current_holder(self) -> str | None:
        return None

    @reaching
    async def acquire(self) -> _H:
        """Wait until the calling task holds it (FIFO, across every client of the cluster).

        ``timeout`` bounds the wait in the queue: joining it (a lease grant
        and one txn) always completes first, so ``timeout=0`` takes what is
        free. Cancelled or timed out, the waiter's key is gone before this
        returns.

        Raises:
            LockTimeout: not granted within the handle's ``timeout``.
            NodeUnreachable: no etcd member answered.
            EtcdError: etcd refused (``EtcdPermissionDenied``...).
        """
        hold = await self._acquire()
        self._holds[hold.task] = hold
        return hold

    @reaching
    async def release(self) -> None:
        """Release the calling task's hold taken through this handle (shielded).

        Raises:
            LockNotHeld: the calling task holds nothing through this handle.
            LockLost: it was lost before this release.
        """
        task = trio.lowlevel.current_task()
        hold = self._holds.pop(task, None)
        if hold is None:
            raise not_holding(self.name, task, await self._current_holder(), self.kind)
        await hold.release()

    async def __aenter__(self) -> _H:
        with unreachable_as_node():
            hold = await self._acquire()
        # The lease can end at any time: the block always runs in a scope
        # the session's loss cancels.
        hold._scope = trio.CancelScope()
        hold._scope.__enter__()
        self._scoped[hold.task] = hold
        if hold.lost:
            hold._scope.cancel()
        return hold

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        hold = self._scoped.pop(trio.lowlevel.current_task())
        scope, hold._scope = hold._scope, None
        swallowed = False
        try:
            if scope is not None:
                swallowed = bool(scope.__exit__(exc_type, exc, tb))
        finally:
            if not hold.released:
                await hold._drop("lost" if hold.lost else "release")  # shielded
        if hold.lost and (exc_type is None or swallowed):
            # The block was cancelled (or ended after the loss); its own
            # error, if any, wins and propagates as itself.
            raise LockLost(self.name, hold.token, hold.kind)
        return swallowed
