"""Locks of the etcd coordinator, on etcd's Lock service.

A lock named N is etcd's lock ``prefix + N``: each acquisition writes the key
``prefix + N + "/" + <lease id in hex>`` bound to a lease of its own, and
the key with the lowest create revision under ``prefix + N + "/"`` holds
the lock, exactly as ``etcdctl lock`` and every other etcd client do it, so
they exclude each other. The acquisition:

1. grants a fresh lease (:class:`~._etcd_session.Session`);
2. joins the queue with one txn that creates the key (its value is JSON
   ``{"holder", "since"}``, which ``etcdctl lock`` ignores) and reads the
   queue: with the lowest create revision it holds the lock at once (what
   etcd's Lock RPC would answer without waiting, one round trip saved);
3. otherwise waits in etcd's Lock RPC, raced against the session: a lease
   lost while waiting (revoked, expired, the key deleted) cancels the RPC
   and the acquisition starts again with a new lease; ``timeout`` cancels
   it with :class:`LockTimeout`. The key is read back afterwards, so a Lock
   answered for a key that is gone (etcd 3.4 does that after its lease was
   revoked) never counts as held.

The fencing token is the key's create revision: strictly increasing per lock
across every client. A cancelled or timed-out acquire revokes its lease
before it returns (shielded): that deletes the key, and unlike a plain
delete it also stops a Lock request still in flight on the server from
creating the key afterwards. Releasing revokes the lease the same way.
While held, the session's guard watches the key: its lease ending, the
key being deleted by anyone, or the session fencing itself (no keepalive
acknowledged in time: it stops a margin before etcd could expire the lease,
see :mod:`._etcd_session`) cancels the holder's block, which raises
:class:`LockLost`.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

import trio

from .. import telemetry
from ..errors import EtcdError, LockTimeout
from ..etcd import compare_create, op_put, op_range
from ._etcd_hold import EtcdHold, EtcdHoldHandle
from ._etcd_reach import reaching
from ._etcd_session import Session, dumps, loads, session_expired
from ._types import LockStatus

if TYPE_CHECKING:
    from ..etcd import KeyValue
    from ._etcd_context import EtcdContext

__all__ = ["EtcdHeldLock", "EtcdLock", "lock_status"]

logger = logging.getLogger("foundation.coordination")
_emit = telemetry.emit


class _Retry(Exception):
    """Internal: the session was lost before the lock was held; start again."""


class EtcdHeldLock(EtcdHold):
    """A held etcd lock (``async with coord.lock(name) as held``).

    ``held.fencing_token`` (the key's create revision, strictly increasing
    per lock) goes with every write the lock guards; ``held.lease_id`` is
    the lock's own lease, to bind keys that must live exactly as long as the
    hold. The holder's block is cancelled, and raises
    :class:`~foundation.errors.LockLost`, when the lease ends, when the key
    is deleted, or a margin before etcd could expire the lease because no
    keepalive was acknowledged in time (see ``docs/coordination.rst``,
    "Cut off from the cluster").

    Made by the coordinator; do not instantiate. Sync attributes never block.
    """

    __slots__ = ("_ctx",)

    def __init__(
        self,
        ctx: EtcdContext,
        name: str,
        holder: str,
        task: trio.lowlevel.Task,
        session: Session,
        key: bytes,
        token: int,
    ) -> None:
        super().__init__(name, holder, task, session, key, token)
        self._ctx = ctx

    async def _drop(self, why: str) -> None:
        if self._ctx.holds.get(self.key) is self:
            del self._ctx.holds[self.key]
        await super()._drop(why)


class EtcdLock(EtcdHoldHandle[EtcdHeldLock]):
    """A handle on one etcd lock name, as ``coord.lock(name, timeout)`` returns it.

    ``async with`` acquires on entry (FIFO, in create-revision order across
    every etcd client) and releases on exit. :meth:`acquire` and
    :meth:`release` do the same by hand. A handle may be shared: each task
    holds and releases its own hold. Not re-entrant: a task asking again
    waits like anyone else.
    """

    __slots__ = ("ttl",)

    def __init__(
        self,
        ctx: EtcdContext,
        name: str,
        timeout: float | None,
        holder: str | None,
        ttl: float | None,
    ) -> None:
        super().__init__(ctx, name, timeout, holder)
        #: Take the lock away this many seconds after it was granted (None: never).
        self.ttl = ttl

    async def _current_holder(self) -> str | None:
        status = await lock_status(self._ctx, self.name)
        return status.holder if status is not None else None

    # -- acquisition ---------------------------------------------------------
    async def _acquire(self) -> EtcdHeldLock:
        await trio.lowlevel.checkpoint_if_cancelled()
        ctx = self._ctx
        task = trio.lowlevel.current_task()
        who = self._holder if self._holder is not None else task.name
        started = trio.current_time()
        deadline = math.inf if self.timeout is None else started + self.timeout
        lock_name = ctx.prefix + self.name
        while True:
            session = await ctx.open_session(f"lock {self.name!r} ({who})", fenced=True)
            try:
                key, token = await self._join(session, lock_name, who, deadline)
            except _Retry:
                await session.close()
                continue
            except BaseException:
                await session.close()
                raise
            hold = EtcdHeldLock(ctx, self.name, who, task, session, key, token)
            ctx.holds[key] = hold
            session.on_lost(hold._on_lost)
            if self.ttl is not None:
                session.expire_after(self.ttl)
            _emit(
                "foundation.coordination.lock.acquire",
                {"token": token, "wait": hold.since - started},
                {"lock": self.name, "holder": who},
            )
            return hold

    async def _join(
        self, session: Session, lock_name: str, who: str, deadline: float
    ) -> tuple[bytes, int]:
        client = self._ctx.client
        queue = lock_name + "/"
        key = f"{queue}{session.lease_id:x}".encode()
        value = dumps({"holder": who, "since": time.time()}, "holder")
        # Retrying is safe: a second run finds the key and only reads.
        result = await client.txn(
            [compare_create(key, "==", 0)],
            [
                op_put(key, value, lease=session.lease_id),
                op_range(queue, prefix=True, keys_only=True),
            ],
            [op_range(queue, prefix=True, keys_only=True)],
            retry_ambiguous=True,
        )
        kvs: list[KeyValue] = getattr(result.responses[-1], "kvs", [])
        mine = next((kv for kv in kvs if kv.key == key), None)
        if mine is None:
            raise _Retry  # the lease ended already: its key is gone
        token = mine.create_revision
        session.guard(key, token)
        if min(kvs, key=lambda kv: kv.create_revision) is mine:
            return key, token  # first in the queue: held
        with trio.CancelScope(deadline=deadline) as scope:
            remove = session.on_lost(lambda _reason: scope.cancel())
            try:
                await client.lock(lock_name, session.lease_id)
            except EtcdError as exc:
                if session.lost.is_set() or session_expired(exc):
                    raise _Retry from exc
                raise
            finally:
                remove()
        if session.lost.is_set():
            logger.info(
                "lock %r: lost the lease while waiting (%s); joining the queue again",
                self.name,
                session.reason,
            )
            raise _Retry
        if scope.cancelled_caught:
            assert self.timeout is not None
            error = LockTimeout(self.name, self.timeout)
            logger.warning("%s", error)
            _emit(
                "foundation.coordination.lock.timeout",
                {"timeout": self.timeout},
                {"lock": self.name, "holder": who},
            )
            raise error
        kv = await client.get(key)
        if kv is None or kv.create_revision != token:
            raise _Retry  # etcd 3.4 answers Lock even after the key went with its lease
        return key, token


@reaching
async def lock_status(ctx: EtcdContext, name: str) -> LockStatus | None:
    """Who holds etcd lock ``name`` now (the key with the lowest create revision), or None.

    ``since`` is on this process's Trio clock: exact for holds of this
    coordinator; for other coordinators converted from the wall-clock time
    they stored (as exact as the hosts' clocks agree); for holders that
    store no JSON (``etcdctl lock``) the time of this query. ``holder`` of
    such a foreign key is its lease ID in hex (the key's last part).
    """
    await trio.lowlevel.checkpoint_if_cancelled()
    queue = ctx.prefix + name + "/"
    result = await ctx.client.range(queue, prefix=True)
    if not result.kvs:
        return None
    kv = min(result.kvs, key=lambda kv: kv.create_revision)
    hold = ctx.holds.get(kv.key)
    if hold is not None and not hold.released:
        return hold.status()
    now = trio.current_time()
    data = loads(kv.value)
    if isinstance(data, dict) and isinstance(data.get("holder"), str):
        since = data.get("since")
        age = time.time() - since if isinstance(since, int | float) else 0.0
        return LockStatus(data["holder"], now - max(age, 0.0), kv.create_revision)
    holder = kv.key[len(queue.encode()) :].decode(errors="replace")
    return LockStatus(holder, now, kv.create_revision)
