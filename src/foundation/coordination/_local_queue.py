"""The FIFO queue under the local semaphore and read/write lock.

A :class:`LocalQueues` is one coordinator's table for one kind of
primitive: per name, the holds, the FIFO queue of waiters and the token
counter. Whether a request can be granted is the queue's *admission rule*:

* ``"slot"`` (a semaphore): fewer than ``limit`` holders;
* ``"read"``: no writer holds;
* ``"write"``: nobody holds.

A request is granted at once only when nobody waits and the rule admits
it; otherwise it queues, and a release (or a waiter leaving) grants the
head of the queue, then the next, as long as the rule admits them. So a
reader that arrives while a writer waits queues behind the writer (writers
do not starve), and a semaphore serves its waiters in arrival order. As
for locks, hand-over is synchronous (the next holder is chosen before
``release`` returns) and a waiter that is cancelled or times out leaves the
queue before the exception leaves, passing on a grant that raced its
cancellation.
"""

from __future__ import annotations

import collections
import logging
from types import TracebackType
from typing import Any, Literal

import trio

from .. import telemetry
from ..errors import ConfigError, LockTimeout
from ._checks import deadline
from ._held import HeldLockRecord, not_holding

__all__ = ["LocalHold", "LocalQueueHandle", "LocalQueues", "Mode"]

logger = logging.getLogger("foundation.coordination")

_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_cancel_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint
_emit = telemetry.emit

#: What a hold is: a semaphore slot, or a read or write hold of a read/write lock.
Mode = Literal["slot", "read", "write"]

_KIND: dict[str, str] = {"slot": "semaphore", "read": "read lock", "write": "write lock"}


class LocalHold(HeldLockRecord):
    """A semaphore slot, or a read or write hold of a local read/write lock.

    Made by the coordinator; do not instantiate. Sync attributes never block.
    """

    __slots__ = ("_table", "kind", "mode")

    def __init__(
        self,
        table: LocalQueues,
        name: str,
        holder: str,
        task: trio.lowlevel.Task,
        token: int,
        mode: Mode,
    ) -> None:
        super().__init__(name, holder, task, token)
        self._table = table
        #: ``"slot"`` (a semaphore), ``"read"`` or ``"write"``.
        self.mode: Mode = mode
        #: ``"semaphore"``, ``"read lock"`` or ``"write lock"`` (as errors name it).
        self.kind = _KIND[mode]

    async def release(self) -> None:
        """Release now; leaving its ``async with`` block then does nothing.

        Like :meth:`trio.Semaphore.release`, this does not checkpoint: it
        never blocks, never raises ``Cancelled``, and the waiters it admits
        hold when it returns (as a local lock's release).

        Raises:
            LockNotHeld: called from another task than the holder, or again.
        """
        self._table.release(self, trio.lowlevel.current_task())


class _Waiter:
    __slots__ = ("event", "hold", "holder", "mode", "queued", "task")

    def __init__(self, task: trio.lowlevel.Task, holder: str, mode: Mode) -> None:
        self.task = task
        self.holder = holder
        self.mode = mode
        self.queued = trio.current_time()
        self.event = trio.Event()
        self.hold: LocalHold | None = None


class _Queue:
    __slots__ = ("holds", "limit", "waiters", "writing")

    def __init__(self, limit: int) -> None:
        self.limit = limit  # semaphores only
        self.holds: dict[LocalHold, None] = {}  # insertion-ordered set
        self.waiters: collections.deque[_Waiter] = collections.deque()
        self.writing = False  # a write hold is among the holds

    def admits(self, mode: Mode) -> bool:
        if mode == "slot":
            return len(self.holds) < self.limit
        if mode == "read":
            return not self.writing
        return not self.holds


class LocalQueues:
    """The holds and FIFO queues of one kind of primitive of one local coordinator.

    ``primitive`` (``"semaphore"`` or ``"rwlock"``) names its telemetry
    events, ``foundation.coordination.<primitive>.<event>``. Per name, the
    token counter outlives an idle queue, so tokens keep increasing.
    """

    __slots__ = ("_queues", "_tokens", "primitive")

    def __init__(self, primitive: str) -> None:
        self.primitive = primitive
        self._queues: dict[str, _Queue] = {}
        self._tokens: dict[str, int] = {}

    def __len__(self) -> int:
        """Names held or waited for."""
        return len(self._queues)

    def _event(
        self, event: str, measurements: dict[str, float], name: str, holder: str, mode: Mode
    ) -> None:
        meta: dict[str, Any] = {self.primitive: name, "holder": holder}
        if mode != "slot":
            meta["mode"] = mode  # a read/write lock's holds say which they are
        _emit(f"foundation.coordination.{self.primitive}.{event}", measurements, meta)

    async def acquire(
        self, name: str, mode: Mode, holder: str | None, patience: float | None, limit: int = 0
    ) -> LocalHold:
        """Wait until ``name`` grants the calling task a ``mode`` hold (FIFO; ``patience`` s)."""
        timeout = patience
        await _checkpoint_if_cancelled()
        task = trio.lowlevel.current_task()
        who = holder if holder is not None else task.name
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = _Queue(limit)
        elif mode == "slot" and queue.limit != limit:
            raise ConfigError(
                f"semaphore {name!r} is in use with limit={queue.limit}, not limit={limit}:"
                " every holder of a semaphore must give the same limit"
            )
        if not queue.waiters and queue.admits(mode):
            hold = self._grant(name, queue, who, task, mode, None)
            await _cancel_shielded_checkpoint()
            return hold
        waiter = _Waiter(task, who, mode)
        queue.waiters.append(waiter)
        try:
            with trio.CancelScope(deadline=deadline(timeout)) as scope:
                await waiter.event.wait()
        except BaseException:
            self._withdraw(name, queue, waiter)
            raise
        if waiter.hold is None:  # timed out (the only other way out of the scope)
            self._withdraw(name, queue, waiter)
            assert scope.cancelled_caught
            assert timeout is not None
            error = LockTimeout(name, timeout, _KIND[mode])
            logger.warning(
                "%s (%d holding, %d waiting)", error, len(queue.holds), len(queue.waiters)
            )
            self._event(
                "timeout",
                {"timeout": timeout, "waiting": len(queue.waiters)},
                name,
                holder=who,
                mode=mode,
            )
            raise error
        return waiter.hold

    def _withdraw(self, name: str, queue: _Queue, waiter: _Waiter) -> None:
        if waiter.hold is not None:
            # Granted in the same tick the wait was cancelled: pass it on.
            self.drop(waiter.hold, "release")
        else:
            queue.waiters.remove(waiter)
            # A writer leaving the head of the queue may let the readers behind it in.
            self._pump(name, queue)

    def _grant(
        self,
        name: str,
        queue: _Queue,
        holder: str,
        task: trio.lowlevel.Task,
        mode: Mode,
        queued: float | None,
    ) -> LocalHold:
        token = self._tokens.get(name, 0) + 1
        self._tokens[name] = token
        hold = LocalHold(self, name, holder, task, token, mode)
        queue.holds[hold] = None
        if mode == "write":
            queue.writing = True
        self._event(
            "acquire",
            {"token": token, "wait": 0.0 if queued is None else hold.since - queued},
            name,
            holder=holder,
            mode=mode,
        )
        return hold

    def release(self, hold: LocalHold, task: trio.lowlevel.Task) -> None:
        """Release ``hold`` on behalf of ``task`` and grant the waiters it admits (sync)."""
        if task is not hold.task:
            raise hold._not_holder(task)
        if hold.released:
            raise hold._released_already()
        self.drop(hold, "release")

    def drop(self, hold: LocalHold, why: str) -> None:
        """End ``hold`` and grant the waiters the queue now admits (sync)."""
        hold.released = True
        name = hold.name
        queue = self._queues[name]
        del queue.holds[hold]
        if hold.mode == "write":
            queue.writing = False
        self._event(
            why,
            {"token": hold.token, "held": trio.current_time() - hold.since},
            name,
            holder=hold.holder,
            mode=hold.mode,
        )
        self._pump(name, queue)

    def _pump(self, name: str, queue: _Queue) -> None:
        waiters = queue.waiters
        while waiters and queue.admits(waiters[0].mode):
            waiter = waiters.popleft()
            waiter.hold = self._grant(
                name, queue, waiter.holder, waiter.task, waiter.mode, waiter.queued
            )
            waiter.event.set()
        if not queue.holds and not waiters and self._queues.get(name) is queue:
            del self._queues[name]  # the token counter stays

    def holders(self, name: str) -> list[str]:
        """Who holds ``name`` now, in grant order."""
        queue = self._queues.get(name)
        return [] if queue is None else [h.holder for h in queue.holds]

    def snapshot(self) -> dict[str, Any]:
        return {
            name: {
                "limit": q.limit if q.limit else None,
                "holders": [(h.holder, h.mode, h.token) for h in q.holds],
                "waiting": [(w.holder, w.mode) for w in q.waiters],
            }
            for name, q in self._queues.items()
        }


class LocalQueueHandle:
    """A handle on one semaphore, or on the read or write side of one read/write lock.

    ``async with`` acquires on entry (blocks, FIFO) and releases on exit
    (never blocks). :meth:`acquire` and :meth:`release` do the same by hand.
    A handle may be shared: each task holds and releases its own hold.
    """

    __slots__ = ("_holder", "_holds", "_limit", "_mode", "_scoped", "_table", "name", "timeout")

    def __init__(
        self,
        table: LocalQueues,
        name: str,
        mode: Mode,
        timeout: float | None,
        holder: str | None,
        limit: int = 0,
    ) -> None:
        self._table = table
        #: The semaphore's (read/write lock's) name.
        self.name = name
        #: Seconds to wait, then :class:`~foundation.errors.LockTimeout` (None: no limit).
        self.timeout = timeout
        self._mode: Mode = mode
        self._holder = holder
        self._limit = limit
        self._holds: dict[trio.lowlevel.Task, LocalHold] = {}
        self._scoped: dict[trio.lowlevel.Task, LocalHold] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} timeout={self.timeout}>"

    async def acquire(self) -> LocalHold:
        """Wait until the calling task holds it; FIFO among waiters.

        Checkpoints. Cancelled while waiting, the task leaves the queue. Not
        re-entrant: a task that holds it and asks again queues like anyone else.

        Raises:
            LockTimeout: not granted within the handle's ``timeout``.
            ConfigError: (a semaphore) it is in use with another ``limit``.
        """
        hold = await self._table.acquire(
            self.name, self._mode, self._holder, self.timeout, self._limit
        )
        self._holds[hold.task] = hold
        return hold

    async def release(self) -> None:
        """Release the calling task's hold taken through this handle (no checkpoint).

        Raises:
            LockNotHeld: the calling task holds nothing through this handle,
                or released it already.
        """
        task = trio.lowlevel.current_task()
        hold = self._holds.pop(task, None)
        if hold is None:
            raise not_holding(self.name, task, None, _KIND[self._mode])
        await hold.release()

    async def __aenter__(self) -> LocalHold:
        hold = await self._table.acquire(
            self.name, self._mode, self._holder, self.timeout, self._limit
        )
        self._scoped[hold.task] = hold
        return hold

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        hold = self._scoped.pop(trio.lowlevel.current_task())
        if not hold.released:
            # Synchronous: it must run even inside a cancelled scope.
            self._table.drop(hold, "release")
