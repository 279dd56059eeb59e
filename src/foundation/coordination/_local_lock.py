"""Locks of the local coordinator: FIFO mutual exclusion with fencing tokens and leases.

:class:`LocalLocks` is one coordinator's lock table: per name, the hold, the
FIFO queue of waiters and the token counter. A release grants the lock to
the next waiter synchronously, before it returns, so "at most one holder"
and FIFO order hold without any task in between; a waiter that is cancelled
or times out leaves the queue before the exception leaves (and passes on a
grant that raced its cancellation). The only background work is the lease
of a lock taken with ``ttl=``: a watchdog task under the coordinator's
:class:`~foundation.supervision.TaskSupervisor` takes the lock away when
the lease runs out and cancels the holder's block.
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
_emit = telemetry.emit


class LocalHeldLock(HeldLockRecord):
    """A held local lock (``async with coord.lock(name) as held``).

    Made by the coordinator; do not instantiate. Sync attributes never block.
    """

    # No __init__ of its own: LocalLocks._grant sets these three after the
    # record's, which spares a frame on the lock's fast path (~0.3 us of the
    # ~7.5 us of an uncontended ``async with coord.lock()`` cycle).
    __slots__ = ("_lease", "_table", "ttl")

    _table: LocalLocks
    #: The lease in seconds (``lock(ttl=)``), or None.
    ttl: float | None
    _lease: trio.CancelScope | None  # the lease watchdog, if ttl

    async def release(self) -> None:
        """Release the lock now; leaving its ``async with`` block then does nothing.

        Releases, then checkpoints (shielded: a finished release never reports
        ``Cancelled``).

        Raises:
            LockNotHeld: called from another task than the holder, or again.
            LockLost: the lease (``ttl``) ran out before this release.
        """
        self._table.release(self, trio.lowlevel.current_task())
        await _cancel_shielded_checkpoint()


class _LockWaiter:
    __slots__ = ("event", "hold", "holder", "queued", "task", "ttl")

    def __init__(self, task: trio.lowlevel.Task, holder: str, ttl: float | None) -> None:
        self.task = task
        self.ttl = ttl
        self.holder = holder
        self.queued = trio.current_time()
        self.event = trio.Event()
        self.hold: LocalHeldLock | None = None


class _LockState:
    __slots__ = ("hold", "queue")

    def __init__(self) -> None:
        self.hold: LocalHeldLock | None = None
        self.queue: collections.deque[_LockWaiter] = collections.deque()


class LocalLocks:
    """The lock table of one :class:`~foundation.coordination.LocalCoordinator`.

    Per name: the hold, the FIFO queue and the token counter (which outlives
    an idle lock, so tokens keep increasing). ``tasks`` runs lease
    watchdogs; without it, ``ttl`` must be None.
    """

    __slots__ = ("_locks", "_tasks", "_tokens")

    def __init__(self, tasks: TaskSupervisor | None) -> None:
        self._tasks = tasks
        self._locks: dict[str, _LockState] = {}
        self._tokens: dict[str, int] = {}

    def __len__(self) -> int:
        """Lock names held or waited for."""
        return len(self._locks)

    def status(self, name: str) -> LockStatus | None:
        state = self._locks.get(name)
        if state is None or state.hold is None:
            return None
        return state.hold.status()

    async def acquire(
        self, name: str, holder: str | None, patience: float | None, ttl: float | None
    ) -> LocalHeldLock:
        """Wait until lock ``name`` is held by the calling task (FIFO; ``patience`` seconds)."""
        timeout = patience
        await _checkpoint_if_cancelled()
        task = trio.lowlevel.current_task()
        who = holder if holder is not None else task.name
        state = self._locks.get(name)
        if state is None:
            state = self._locks[name] = _LockState()
        # Not re-entrant: the holding task asking again queues like anyone
        # else (and times out), as a second acquire does on etcd.
        if state.hold is None and not state.queue:
            hold = self._grant(name, state, who, task, ttl, None)
            await _cancel_shielded_checkpoint()
            return hold
        waiter = _LockWaiter(task, who, ttl)
        state.queue.append(waiter)
        try:
            with trio.CancelScope(deadline=deadline(timeout)) as scope:
                await waiter.event.wait()
        except BaseException:
            self._withdraw(name, state, waiter)
            raise
        if waiter.hold is None:  # timed out (the only other way out of the scope)
            self._withdraw(name, state, waiter)
            assert scope.cancelled_caught
            assert timeout is not None
            error = LockTimeout(name, timeout)
            status = f"held by {state.hold.holder!r}" if state.hold is not None else "free"
            logger.warning("%s (%s, %d waiting)", error, status, len(state.queue))
            _emit(
                "foundation.coordination.lock.timeout",
                {"timeout": timeout, "waiting": len(state.queue)},
                {"lock": name, "holder": who},
            )
            raise error
        return waiter.hold

    def _withdraw(self, name: str, state: _LockState, waiter: _LockWaiter) -> None:
        if waiter.hold is not None:
            # Granted in the same tick the wait was cancelled: pass it on.
            self.release(waiter.hold, waiter.task)
        else:
            state.queue.remove(waiter)
            self._forget_idle(name, state)

    def _grant(
        self,
        name: str,
        state: _LockState,
        holder: str,
        task: trio.lowlevel.Task,
        ttl: float | None,
        queued: float | None,
    ) -> LocalHeldLock:
        token = self._tokens.get(name, 0) + 1
        self._tokens[name] = token
        hold = LocalHeldLock(name, holder, task, token)
        hold._table = self
        hold.ttl = ttl
        hold._lease = None
        state.hold = hold
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
        self.drop(hold, "release")

    def drop(self, hold: LocalHeldLock, why: str) -> None:
        """End ``hold`` (``why``: "release" or "lost") and grant the next waiter (sync)."""
        hold.released = True
        if hold._lease is not None:
            hold._lease.cancel()
        name = hold.name
        state = self._locks[name]
        assert state.hold is hold
        state.hold = None
        now = trio.current_time()
        _emit(
            f"foundation.coordination.lock.{why}",
            {"token": hold.token, "held": now - hold.since},
            {"lock": name, "holder": hold.holder},
        )
        if state.queue:
            waiter = state.queue.popleft()
            waiter.hold = self._grant(
                name, state, waiter.holder, waiter.task, waiter.ttl, waiter.queued
            )
            waiter.event.set()
        else:
            self._forget_idle(name, state)

    def _forget_idle(self, name: str, state: _LockState) -> None:
        # The token counter stays, so tokens keep increasing.
        if state.hold is None and not state.queue and self._locks.get(name) is state:
            del self._locks[name]

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
            self.drop(hold, "lost")
            if hold._scope is not None:
                hold._scope.cancel()

    def snapshot(self) -> dict[str, Any]:
        return {
            name: {
                "holder": s.hold.holder if s.hold else None,
                "token": s.hold.token if s.hold else None,
                "waiting": [w.holder for w in s.queue],
            }
            for name, s in self._locks.items()
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
        task = trio.lowlevel.current_task()
        hold = await self._table.acquire(self.name, self._holder, self.timeout, self.ttl)
        self._holds[task] = hold
        return hold

    async def release(self) -> None:
        """Release the calling task's hold on this lock (shielded checkpoint).

        Raises:
            LockNotHeld: the calling task holds no lock through this handle
                (another task does, or nobody), or released it already.
            LockLost: the lease (``ttl``) ran out before this release.
        """
        task = trio.lowlevel.current_task()
        hold = self._holds.pop(task, None)
        if hold is None:
            status = self._table.status(self.name)
            raise not_holding(self.name, task, status.holder if status is not None else None)
        await hold.release()

    async def __aenter__(self) -> LocalHeldLock:
        hold = await self._table.acquire(self.name, self._holder, self.timeout, self.ttl)
        if hold.ttl is not None:
            # Only a lease can take the lock away, and only then is the block
            # run in a scope the lease watchdog may cancel (a scope costs ~1 us).
            hold._scope = trio.CancelScope()
            hold._scope.__enter__()
        self._scoped[hold.task] = hold
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
                # Synchronous: it must run even inside a cancelled scope.
                self._table.drop(hold, "release")
        if hold.lost and (exc_type is None or swallowed):
            # The lease ran out: the block was cancelled (or ended after it).
            # The block's own error, if any, wins and propagates as itself.
            hold.released = True
            raise LockLost(self.name, hold.token)
        return swallowed
