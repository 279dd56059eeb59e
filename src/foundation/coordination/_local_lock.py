"""Locks of the local coordinator: FIFO mutual exclusion with fencing tokens and leases.

:class:`LocalLocks` is one coordinator's lock table: per name, the hold, the
FIFO queue of waiters (only while there are some) and the token counter. A
release grants the lock to the next waiter synchronously, before it
returns, so "at most one holder" and FIFO order hold without any task in
between; a waiter that is cancelled or times out leaves the queue before
the exception leaves (and passes on a grant that raced its cancellation).
The only background work is the lease of a lock taken with ``ttl=``: a
watchdog task under the coordinator's
:class:`~foundation.supervision.TaskSupervisor` takes the lock away when
the lease runs out and cancels the holder's block.

The uncontended cycle is the hot path, measured against :class:`trio.Lock`
(``tests/benchmarks/test_bench_coordination.py``): acquiring is one
schedule point, as ``trio.Lock.acquire`` is, and releasing none, as
``trio.Lock.release`` (which is sync) does not, whether by leaving the
``async with`` block or by ``await lock.release()``. A second schedule
point in the release made the handle path 2.0x ``trio.Lock`` on its own
(each one is a pass through Trio's run loop, ~half a ``trio.Lock`` cycle).
So the table keeps only the holds (``_held``) and, apart, the queues of
names that have waiters (``_queues``): a free name is one dict miss, with no
per-name state to build and drop on every cycle.
"""

from __future__ import annotations

import collections
import logging
from types import TracebackType
from typing import TYPE_CHECKING, Any

import trio

from .. import telemetry
from ..errors import LockLost, LockTimeout
from ._checks import deadline
from ._held import HeldLockRecord, not_holding
from ._types import LockStatus

if TYPE_CHECKING:
    from ..supervision import TaskSupervisor

__all__ = ["LocalHeldLock", "LocalLock", "LocalLocks"]

logger = logging.getLogger("foundation.coordination")

_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_cancel_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint
_current_task = trio.lowlevel.current_task
_current_time = trio.current_time
_emit = telemetry.emit
_new_hold = object.__new__


class LocalHeldLock(HeldLockRecord):
    """A held local lock (``async with coord.lock(name) as held``).

    Made by the coordinator; do not instantiate. Sync attributes never block.
    """

    # No __init__ of its own: LocalLocks._grant sets every field (the
    # record's too), which spares two frames on the lock's fast path.
    __slots__ = ("_lease", "_table", "ttl")

    _table: LocalLocks
    #: The lease in seconds (``lock(ttl=)``), or None.
    ttl: float | None
    _lease: trio.CancelScope | None  # the lease watchdog, if ttl

    async def release(self) -> None:
        """Release the lock now; leaving its ``async with`` block then does nothing.

        Like :meth:`trio.Lock.release`, this does not checkpoint: it never
        blocks, never raises ``Cancelled``, and the next waiter, if any, holds
        the lock when it returns. (It is awaitable because the etcd
        coordinator's release is a round trip.)

        Raises:
            LockNotHeld: called from another task than the holder, or again.
            LockLost: the lease (``ttl``) ran out before this release.
        """
        self._table.release(self, _current_task())


class _LockWaiter:
    __slots__ = ("event", "hold", "holder", "queued", "task", "ttl")

    def __init__(self, task: trio.lowlevel.Task, holder: str, ttl: float | None) -> None:
        self.task = task
        self.ttl = ttl
        self.holder = holder
        self.queued = _current_time()
        self.event = trio.Event()
        self.hold: LocalHeldLock | None = None


class LocalLocks:
    """The lock table of one :class:`~foundation.coordination.LocalCoordinator`.

    Per name: the hold, the FIFO queue (while there are waiters) and the
    token counter (which outlives an idle lock, so tokens keep increasing).
    Waiters exist only while the lock is held: a release hands it to the
    first of them. ``tasks`` runs lease watchdogs; without it, ``ttl`` must
    be None.
    """

    __slots__ = ("_held", "_queues", "_tasks", "_tokens")

    def __init__(self, tasks: TaskSupervisor | None) -> None:
        self._tasks = tasks
        self._held: dict[str, LocalHeldLock] = {}
        self._queues: dict[str, collections.deque[_LockWaiter]] = {}
        self._tokens: dict[str, int] = {}

    def __len__(self) -> int:
        """Lock names held (and so, maybe, waited for)."""
        return len(self._held)

    def status(self, name: str) -> LockStatus | None:
        hold = self._held.get(name)
        return None if hold is None else hold.status()

    async def acquire(
        self, name: str, holder: str | None, patience: float | None, ttl: float | None
    ) -> LocalHeldLock:
        """Wait until lock ``name`` is held by the calling task (FIFO; ``patience`` seconds)."""
        await _checkpoint_if_cancelled()
        task = _current_task()
        who = holder if holder is not None else task.name
        # Not re-entrant: the holding task asking again queues like anyone
        # else (and times out), as a second acquire does on etcd.
        if name not in self._held:
            hold = self._grant(name, who, task, ttl, None)
            await _cancel_shielded_checkpoint()
            return hold
        return await self._wait(name, who, task, patience, ttl)

    async def _wait(
        self,
        name: str,
        who: str,
        task: trio.lowlevel.Task,
        patience: float | None,
        ttl: float | None,
    ) -> LocalHeldLock:
        timeout = patience
        waiter = _LockWaiter(task, who, ttl)
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = collections.deque()
        queue.append(waiter)
        try:
            with trio.CancelScope(deadline=deadline(timeout)) as scope:
                await waiter.event.wait()
        except BaseException:
            self._withdraw(name, waiter)
            raise
        if waiter.hold is None:  # timed out (the only other way out of the scope)
            self._withdraw(name, waiter)
            assert scope.cancelled_caught
            assert timeout is not None
            error = LockTimeout(name, timeout)
            current = self._held.get(name)
            status = f"held by {current.holder!r}" if current is not None else "free"
            waiting = len(self._queues.get(name, ()))
            logger.warning("%s (%s, %d waiting)", error, status, waiting)
            _emit(
                "foundation.coordination.lock.timeout",
                {"timeout": timeout, "waiting": waiting},
                {"lock": name, "holder": who},
            )
            raise error
        return waiter.hold

    def _withdraw(self, name: str, waiter: _LockWaiter) -> None:
        if waiter.hold is not None:
            # Granted in the same tick the wait was cancelled: pass it on.
            self.release(waiter.hold, waiter.task)
            return
        queue = self._queues[name]
        queue.remove(waiter)
        if not queue:
            del self._queues[name]

    def _grant(
        self,
        name: str,
        holder: str,
        task: trio.lowlevel.Task,
        ttl: float | None,
        queued: float | None,
    ) -> LocalHeldLock:
        token = self._tokens.get(name, 0) + 1
        self._tokens[name] = token
        # HeldLockRecord.__init__, inlined: one frame less on the hot path.
        hold = _new_hold(LocalHeldLock)
        hold.name = name
        hold.holder = holder
        hold.task = task
        hold.token = token
        hold.since = _current_time()
        hold.released = False
        hold.lost = False
        hold._scope = None
        hold._table = self
        hold.ttl = ttl
        hold._lease = None
        self._held[name] = hold
        _emit(
            "foundation.coordination.lock.acquire",
            {"token": token, "wait": 0.0 if queued is None else hold.since - queued},
            {"lock": name, "holder": holder},
        )
        if ttl is not None:
            assert self._tasks is not None
            hold._lease = trio.CancelScope()
            self._tasks.start_soon(self._lease_watchdog, hold, name=f"lock-lease:{name}")
        return hold

    def release(self, hold: LocalHeldLock, task: trio.lowlevel.Task) -> None:
        """Release ``hold`` on behalf of ``task`` and grant the next waiter (sync)."""
        if task is not hold.task:
            raise hold._not_holder(task)
        if hold.lost:
            hold.released = True
            raise LockLost(hold.name, hold.token)
        if hold.released:
            raise hold._released_already()
        self.drop(hold, "foundation.coordination.lock.release")

    def drop(self, hold: LocalHeldLock, event: str) -> None:
        """End ``hold`` and grant the next waiter (sync); emits ``event`` (release or lost)."""
        hold.released = True
        if hold._lease is not None:
            hold._lease.cancel()
        name = hold.name
        del self._held[name]
        _emit(
            event,
            {"token": hold.token, "held": _current_time() - hold.since},
            {"lock": name, "holder": hold.holder},
        )
        queue = self._queues.get(name)
        if queue:
            waiter = queue.popleft()
            if not queue:
                del self._queues[name]
            waiter.hold = self._grant(name, waiter.holder, waiter.task, waiter.ttl, waiter.queued)
            waiter.event.set()

    async def _lease_watchdog(self, hold: LocalHeldLock) -> None:
        assert hold._lease is not None
        assert hold.ttl is not None
        with hold._lease:
            await trio.sleep_until(hold.since + hold.ttl)
            if hold.released:
                return
            hold.lost = True
            logger.warning(
                "lock %r (holder %r, token %d): lease of %g s expired; taken away",
                hold.name,
                hold.holder,
                hold.token,
                hold.ttl,
            )
            hold._lease = None  # this task is ending: nothing to cancel
            self.drop(hold, "foundation.coordination.lock.lost")
            if hold._scope is not None:
                hold._scope.cancel()

    def snapshot(self) -> dict[str, Any]:
        return {
            name: {
                "holder": hold.holder,
                "token": hold.token,
                "waiting": [w.holder for w in self._queues.get(name, ())],
            }
            for name, hold in self._held.items()
        }


class LocalLock:
    """A handle on one lock name, as ``coord.lock(name, timeout)`` returns it.

    ``async with`` acquires on entry (blocks, FIFO) and releases on exit
    (never blocks). :meth:`acquire` and :meth:`release` do the same by hand.
    A handle may be shared: each task holds and releases its own hold.
    """

    __slots__ = ("_holder", "_holds", "_scoped", "_table", "name", "timeout", "ttl")

    def __init__(
        self,
        table: LocalLocks,
        name: str,
        timeout: float | None,
        holder: str | None,
        ttl: float | None,
    ) -> None:
        self._table = table
        self.name = name
        self.timeout = timeout
        self.ttl = ttl
        self._holder = holder
        self._holds: dict[trio.lowlevel.Task, LocalHeldLock] = {}
        self._scoped: dict[trio.lowlevel.Task, LocalHeldLock] = {}

    def __repr__(self) -> str:
        return f"<LocalLock {self.name!r} timeout={self.timeout}>"

    async def acquire(self) -> LocalHeldLock:
        """Wait until the lock is granted to the calling task; FIFO among waiters.

        Checkpoints. Cancelled while waiting, the task leaves the queue.

        Locks are not re-entrant: a task that holds the lock and asks again
        waits like any other (use a ``timeout``).

        Raises:
            LockTimeout: not granted within the handle's ``timeout``.
        """
        # LocalLocks.acquire inlined (here and in __aenter__): the uncontended
        # cycle is the hot path, and a frame is ~3% of it.
        await _checkpoint_if_cancelled()
        table = self._table
        name = self.name
        task = _current_task()
        holder = self._holder
        who = holder if holder is not None else task.name
        if name in table._held:
            hold = await table._wait(name, who, task, self.timeout, self.ttl)
        else:
            hold = table._grant(name, who, task, self.ttl, None)
            await _cancel_shielded_checkpoint()
        self._holds[task] = hold
        return hold

    async def release(self) -> None:
        """Release the calling task's hold on this lock.

        Like :meth:`trio.Lock.release`, this does not checkpoint: it never
        blocks, never raises ``Cancelled``, and the next waiter, if any, holds
        the lock when it returns. (It is awaitable because the etcd
        coordinator's release is a round trip.)

        Raises:
            LockNotHeld: the calling task holds no lock through this handle
                (another task does, or nobody), or released it already.
            LockLost: the lease (``ttl``) ran out before this release.
        """
        task = _current_task()
        hold = self._holds.pop(task, None)
        if hold is None:
            status = self._table.status(self.name)
            raise not_holding(self.name, task, status.holder if status is not None else None)
        if hold.released or hold.lost:
            self._table.release(hold, task)  # raises what it should
        else:
            self._table.drop(hold, "foundation.coordination.lock.release")

    async def __aenter__(self) -> LocalHeldLock:
        await _checkpoint_if_cancelled()
        table = self._table
        name = self.name
        task = _current_task()
        holder = self._holder
        who = holder if holder is not None else task.name
        if name in table._held:
            hold = await table._wait(name, who, task, self.timeout, self.ttl)
        else:
            hold = table._grant(name, who, task, self.ttl, None)
            await _cancel_shielded_checkpoint()
        if hold.ttl is not None:
            # Only a lease can take the lock away, and only then is the block
            # run in a scope the lease watchdog may cancel (a scope costs ~1 us).
            hold._scope = trio.CancelScope()
            hold._scope.__enter__()
        self._scoped[task] = hold
        return hold

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        hold = self._scoped.pop(_current_task())
        scope = hold._scope
        if scope is None:  # no lease (only a lease can take the lock away)
            if not hold.released:
                # Synchronous: it must run even inside a cancelled scope.
                self._table.drop(hold, "foundation.coordination.lock.release")
            return None
        hold._scope = None
        swallowed = False
        try:
            swallowed = bool(scope.__exit__(exc_type, exc, tb))
        finally:
            if not hold.released:
                self._table.drop(hold, "foundation.coordination.lock.release")
        if hold.lost and (exc_type is None or swallowed):
            # The lease ran out: the block was cancelled (or ended after it).
            # The block's own error, if any, wins and propagates as itself.
            hold.released = True
            raise LockLost(self.name, hold.token)
        return swallowed
