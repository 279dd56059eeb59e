"""LocalCoordinator: the coordinator interface on Trio primitives, for one process.

Every primitive keeps its state in plain dicts of the coordinator and hands
things over *synchronously* at the moment they change (a released lock is
granted to the next waiter before ``release`` returns; a round of a barrier
is released by its last arrival), so FIFO order and "at most one holder"
hold without any task in between. Waiting uses :class:`trio.Event`: once an
event is set, the waiting task is rescheduled with a value and can no longer
see a ``Cancelled`` from that wait, so a grant is never lost to a racing
cancellation; when a wait does end in ``Cancelled`` (or a timeout), the
waiter withdraws itself before the exception leaves, so no stale holder,
candidate or arrival is left behind.

The only background work is the lease of a lock taken with ``ttl=``: a
watchdog task, run under the coordinator's
:class:`~foundation.supervision.TaskSupervisor`, revokes the lock when the
lease runs out.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any

import trio

from .. import telemetry
from ..errors import (
    BarrierAborted,
    BarrierTimeout,
    ConfigError,
    ConsensusTimeout,
    DuplicateVote,
    LeadershipLost,
    LockLost,
    LockNotHeld,
    LockTimeout,
    UnknownParticipant,
)
from ..supervision import TaskSupervisor, open_task_supervisor
from ._types import Decision, Leader, LockStatus, Term, Vote

__all__ = [
    "LocalBarrier",
    "LocalCoordinator",
    "LocalCounter",
    "LocalElection",
    "LocalHeldLock",
    "LocalLock",
    "open_local_coordinator",
]

logger = logging.getLogger("foundation.coordination")

_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_cancel_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint
_emit = telemetry.emit

#: How many decided (or timed-out) ballots a coordinator remembers, so that a
#: late ``vote()`` learns the outcome instead of waiting for a new ballot.
_CLOSED_BALLOTS = 1000


def _check_name(what: str, name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{what} must be a non-empty str, got {name!r}")
    return name


def _check_seconds(what: str, value: float | None) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or math.isnan(value)
        or value < 0
    ):
        raise ConfigError(f"{what}={value!r}: use a number of seconds >= 0, or None")
    return float(value)


def _deadline(timeout: float | None) -> float:
    return math.inf if timeout is None else trio.current_time() + timeout


# ---------------------------------------------------------------------------
# Locks
# ---------------------------------------------------------------------------
class LocalHeldLock:
    """A held local lock (``async with coord.lock(name) as held``).

    Made by the coordinator; do not instantiate. Sync attributes never block.
    """

    __slots__ = (
        "_coord",
        "_lease",
        "_scope",
        "holder",
        "lost",
        "name",
        "released",
        "since",
        "task",
        "token",
        "ttl",
    )

    def __init__(
        self,
        coord: LocalCoordinator,
        name: str,
        holder: str,
        task: trio.lowlevel.Task,
        token: int,
        ttl: float | None,
    ) -> None:
        self._coord = coord
        #: The lock's name.
        self.name = name
        #: Who holds it (by default the acquiring task's name).
        self.holder = holder
        self.task = task
        #: The fencing token: strictly increasing per lock name.
        self.token = token
        #: When it was granted (:func:`trio.current_time`).
        self.since = trio.current_time()
        self.ttl = ttl
        self.released = False
        #: True once the lease ran out and the lock was taken away.
        self.lost = False
        self._scope: trio.CancelScope | None = None  # the holder's block, if scoped
        self._lease: trio.CancelScope | None = None  # the lease watchdog, if ttl

    @property
    def fencing_token(self) -> int:
        """Strictly increasing per lock name; pass it along with the writes it guards."""
        return self.token

    def __repr__(self) -> str:
        state = "lost" if self.lost else "released" if self.released else "held"
        return f"<LocalHeldLock {self.name!r} {state} by {self.holder!r} token={self.token}>"

    async def release(self) -> None:
        """Release the lock now; leaving its ``async with`` block then does nothing.

        Releases, then checkpoints (shielded: a finished release never reports
        ``Cancelled``).

        Raises:
            LockNotHeld: called from another task than the holder, or again.
            LockLost: the lease (``ttl``) ran out before this release.
        """
        self._coord._release(self, trio.lowlevel.current_task())
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


class LocalLock:
    """A handle on one lock name, as ``coord.lock(name, timeout)`` returns it.

    ``async with`` acquires on entry (blocks, FIFO) and releases on exit
    (never blocks). :meth:`acquire` and :meth:`release` do the same by hand.
    A handle may be shared: each task holds and releases its own hold.
    """

    __slots__ = ("_coord", "_holder", "_holds", "_scoped", "name", "timeout", "ttl")

    def __init__(
        self,
        coord: LocalCoordinator,
        name: str,
        timeout: float | None,
        holder: str | None,
        ttl: float | None,
    ) -> None:
        self._coord = coord
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
        hold = await self._coord._acquire(self.name, self._holder, self.timeout, self.ttl)
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
            state = self._coord._locks.get(self.name)
            other = state.hold.holder if state is not None and state.hold is not None else None
            reason = f"task {task.name!r} does not hold it" + (
                f" (held by {other!r})" if other is not None else " (nobody holds it)"
            )
            raise LockNotHeld(self.name, reason)
        await hold.release()

    async def __aenter__(self) -> LocalHeldLock:
        hold = await self._coord._acquire(self.name, self._holder, self.timeout, self.ttl)
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
                self._coord._drop(hold, "release")
        if hold.lost and (exc_type is None or swallowed):
            # The lease ran out: the block was cancelled (or ended after it).
            # The block's own error, if any, wins and propagates as itself.
            hold.released = True
            raise LockLost(self.name, hold.token)
        return swallowed


# ---------------------------------------------------------------------------
# Elections
# ---------------------------------------------------------------------------
class _Candidate:
    __slots__ = ("event", "name", "resigned_by_other", "scope", "task", "term")

    def __init__(self, task: trio.lowlevel.Task, name: str) -> None:
        self.task = task
        self.name = name
        self.event = trio.Event()
        self.term = 0
        self.scope = trio.CancelScope()
        self.resigned_by_other = False


class _ElectionState:
    __slots__ = ("changed", "leader", "queue", "resigned", "term")

    def __init__(self) -> None:
        # The candidate whose campaign block runs. After resign() it keeps
        # this slot (``resigned`` is True, leader() answers None) until its
        # block has exited, so two leaders' blocks never overlap.
        self.leader: _Candidate | None = None
        self.resigned = False
        self.queue: collections.deque[_Candidate] = collections.deque()
        self.term = 0
        self.changed = trio.Event()

    def current(self) -> Leader | None:
        c = self.leader
        if c is None or self.resigned:
            return None
        return Leader(c.name, c.term)


class LocalElection:
    """One election group of a :class:`LocalCoordinator` (``coord.election(group)``)."""

    __slots__ = ("_coord", "group")

    def __init__(self, coord: LocalCoordinator, group: str) -> None:
        self._coord = coord
        #: The election group's name.
        self.group = group

    def __repr__(self) -> str:
        return f"<LocalElection {self.group!r}: {self._state().current()!r}>"

    def _state(self) -> _ElectionState:
        state = self._coord._elections.get(self.group)
        if state is None:
            state = self._coord._elections[self.group] = _ElectionState()
        return state

    @asynccontextmanager
    async def campaign(self, candidate: str) -> AsyncIterator[Term]:
        """Campaign as ``candidate``; the block runs while it leads.

        Entering blocks until elected (candidates are elected in FIFO order,
        one at a time) and yields the :class:`Term`; ``term.number`` strictly
        increases per group. Leaving the block (normally, by an error or by
        cancellation) ends the term and elects the next candidate; leaving
        does not block. Cancelled while campaigning, the candidate withdraws.

        :meth:`resign` called by another task cancels the block, which then
        raises :class:`~foundation.errors.LeadershipLost`; called from inside the block, it
        ends the block quietly at its next checkpoint. The block's own error
        is raised as itself.
        """
        _check_name("candidate", candidate)
        await _checkpoint_if_cancelled()
        state = self._state()
        me = _Candidate(trio.lowlevel.current_task(), candidate)
        if state.leader is None and not state.queue:
            self._elect(state, me)
            await _cancel_shielded_checkpoint()
        else:
            state.queue.append(me)
            try:
                await me.event.wait()
            except BaseException:
                if state.leader is me:  # elected in the same tick it was cancelled
                    self._step_down(state, me)
                else:
                    state.queue.remove(me)
                raise
        try:
            with me.scope:
                yield Term(self.group, candidate, me.term)
        finally:
            self._step_down(state, me)
        if me.scope.cancelled_caught and me.resigned_by_other:
            error = LeadershipLost(self.group, candidate, me.term)
            logger.warning("%s", error)
            _emit(
                "foundation.coordination.election.lost",
                {"term": me.term},
                {"group": self.group, "candidate": candidate},
            )
            raise error

    def _elect(self, state: _ElectionState, c: _Candidate) -> None:
        state.term += 1
        c.term = state.term
        state.leader = c
        state.resigned = False
        c.event.set()
        self._changed(state)
        _emit(
            "foundation.coordination.election.elected",
            {"term": c.term},
            {"group": self.group, "candidate": c.name},
        )

    def _step_down(self, state: _ElectionState, c: _Candidate) -> None:
        if state.leader is not c:
            return
        was_resigned = state.resigned
        state.leader = None
        state.resigned = False
        if not was_resigned:
            _emit(
                "foundation.coordination.election.resigned",
                {"term": c.term},
                {"group": self.group, "candidate": c.name, "by": "exit"},
            )
        if state.queue:
            self._elect(state, state.queue.popleft())
        else:
            self._changed(state)

    @staticmethod
    def _changed(state: _ElectionState) -> None:
        state.changed.set()
        state.changed = trio.Event()

    async def leader(self) -> Leader | None:
        """The current leader, or None; answers at once (one checkpoint)."""
        await trio.lowlevel.checkpoint()
        return self._state().current()

    async def resign(self) -> bool:
        """End the current leader's term; False (and nothing done) if nobody leads.

        The leader's block is cancelled: from another task it then raises
        :class:`~foundation.errors.LeadershipLost`; from inside the block it ends quietly.
        ``leader()`` answers None at once; the next candidate is elected as
        soon as the resigned leader's block has exited (so two leaders' blocks
        never run at the same time). Shielded checkpoint.
        """
        state = self._state()
        c = state.leader
        if c is None or state.resigned:
            await trio.lowlevel.checkpoint()
            return False
        caller = trio.lowlevel.current_task()
        c.resigned_by_other = caller is not c.task
        state.resigned = True
        c.scope.cancel()
        self._changed(state)
        _emit(
            "foundation.coordination.election.resigned",
            {"term": c.term},
            {"group": self.group, "candidate": c.name, "by": caller.name},
        )
        await _cancel_shielded_checkpoint()
        return True

    def observe(self) -> AsyncIterator[Leader | None]:
        """Iterate over the leadership: the current leader first, then each change.

        Yields a :class:`Leader`, or None whenever nobody leads (also as the
        first item if nobody leads yet). A slow consumer sees the latest
        state, not every intermediate one: changes that happen while it is
        not waiting are coalesced. Each iteration step blocks until a change.
        """
        return _LeaderObserver(self._state())


class _LeaderObserver:
    __slots__ = ("_first", "_last", "_state")

    def __init__(self, state: _ElectionState) -> None:
        self._state = state
        self._first = True
        self._last: Leader | None = None

    def __aiter__(self) -> _LeaderObserver:
        return self

    async def __anext__(self) -> Leader | None:
        state = self._state
        if self._first:
            self._first = False
            await trio.lowlevel.checkpoint()
            self._last = state.current()
            return self._last
        while True:
            await state.changed.wait()
            current = state.current()
            if current != self._last:
                self._last = current
                return current


# ---------------------------------------------------------------------------
# Barriers
# ---------------------------------------------------------------------------
class _Round:
    __slots__ = ("aborted", "arrived", "event", "generation", "released")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.arrived = 0
        self.event = trio.Event()
        self.released = False
        self.aborted = False


class _BarrierState:
    __slots__ = ("parties", "round")

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.round = _Round(0)


class LocalBarrier:
    """A reusable barrier of a :class:`LocalCoordinator` (``coord.barrier(name, parties)``)."""

    __slots__ = ("_state", "name")

    def __init__(self, name: str, state: _BarrierState) -> None:
        #: The barrier's name.
        self.name = name
        self._state = state

    @property
    def parties(self) -> int:
        """Arrivals that release a round."""
        return self._state.parties

    @property
    def generation(self) -> int:
        """The number of the round now gathering (0 for the first)."""
        return self._state.round.generation

    @property
    def waiting(self) -> int:
        """Parties waiting in the current round."""
        return self._state.round.arrived

    def __repr__(self) -> str:
        return (
            f"<LocalBarrier {self.name!r} round {self.generation}:"
            f" {self.waiting}/{self.parties} waiting>"
        )

    async def wait(self, timeout: float | None = None) -> int:  # noqa: ASYNC109 -- DESIGN 4
        """Arrive and wait until ``parties`` have arrived in this round.

        All parties of a round are released together; the next ``wait()``
        joins the next round (generation). Always checkpoints. Cancelled or
        timed out while waiting, the arrival is withdrawn (the round needs
        one more party again).

        Returns:
            The generation (round number, from 0) this call passed.

        Raises:
            BarrierTimeout: not released within ``timeout`` seconds; ``reached``
                counts this round's arrivals, this one included.
            BarrierAborted: :meth:`abort` broke the round while waiting.
        """
        timeout = _check_seconds("timeout", timeout)
        await _checkpoint_if_cancelled()
        state = self._state
        rnd = state.round
        rnd.arrived += 1
        if rnd.arrived >= state.parties:
            rnd.released = True
            state.round = _Round(rnd.generation + 1)
            rnd.event.set()
            _emit(
                "foundation.coordination.barrier.round",
                {"generation": rnd.generation, "parties": state.parties},
                {"barrier": self.name},
            )
            await _cancel_shielded_checkpoint()
            return rnd.generation
        try:
            with trio.CancelScope(deadline=_deadline(timeout)) as scope:
                await rnd.event.wait()
        except BaseException:
            if not rnd.event.is_set():
                rnd.arrived -= 1
            raise
        if scope.cancelled_caught and not rnd.event.is_set():
            reached = rnd.arrived
            rnd.arrived -= 1
            assert timeout is not None
            error = BarrierTimeout(reached, state.parties)
            logger.warning("barrier %r round %d: %s", self.name, rnd.generation, error)
            _emit(
                "foundation.coordination.barrier.timeout",
                {"reached": reached, "parties": state.parties, "timeout": timeout},
                {"barrier": self.name, "generation": rnd.generation},
            )
            raise error
        if rnd.aborted:
            raise BarrierAborted(self.name, rnd.generation)
        return rnd.generation

    async def abort(self) -> int:
        """Break the current round: its waiters raise :class:`~foundation.errors.BarrierAborted`.

        The next ``wait()`` starts a fresh round. Shielded checkpoint.

        Returns:
            How many waiters were broken (0 -- nothing to abort, no new round).
        """
        state = self._state
        rnd = state.round
        broken = rnd.arrived
        if broken:
            rnd.aborted = True
            state.round = _Round(rnd.generation + 1)
            rnd.event.set()
            logger.warning(
                "barrier %r round %d aborted with %d of %d parties waiting",
                self.name,
                rnd.generation,
                broken,
                state.parties,
            )
            _emit(
                "foundation.coordination.barrier.abort",
                {"generation": rnd.generation, "waiting": broken},
                {"barrier": self.name},
            )
        await _cancel_shielded_checkpoint()
        return broken


# ---------------------------------------------------------------------------
# Consensus
# ---------------------------------------------------------------------------
class _Ballot:
    __slots__ = (
        "consensus_id",
        "decision",
        "done",
        "participants",
        "proposal",
        "quorum",
        "timed_out",
        "votes",
    )

    def __init__(
        self, consensus_id: str, participants: frozenset[str], proposal: Any, quorum: int
    ) -> None:
        self.consensus_id = consensus_id
        self.participants = participants
        self.proposal = proposal
        self.quorum = quorum
        self.votes: dict[str, Vote] = {}
        self.done = trio.Event()
        self.decision: Decision | None = None
        self.timed_out: ConsensusTimeout | None = None

    def try_decide(self) -> Decision | None:
        accepts = sum(1 for v in self.votes.values() if v is Vote.ACCEPT)
        pending = len(self.participants) - len(self.votes)
        if accepts >= self.quorum:
            accepted = True
        elif accepts + pending < self.quorum:
            accepted = False
        else:
            return None
        self.decision = Decision(
            self.consensus_id,
            accepted,
            self.proposal,
            self.quorum,
            MappingProxyType(dict(self.votes)),
        )
        self.done.set()
        return self.decision


class LocalCounter:
    """An atomic counter of a :class:`LocalCoordinator` (``coord.counter(name)``)."""

    __slots__ = ("_values", "name")

    def __init__(self, name: str, values: dict[str, int]) -> None:
        #: The counter's name.
        self.name = name
        self._values = values

    def __repr__(self) -> str:
        return f"<LocalCounter {self.name!r} = {self._values.get(self.name, 0)}>"

    def add_nowait(self, n: int = 1) -> int:
        """:meth:`add` without the checkpoint (local coordinators only)."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"counter increment must be an int, got {n!r}")
        value = self._values.get(self.name, 0) + n
        self._values[self.name] = value
        _emit(
            "foundation.coordination.counter.add",
            {"delta": n, "value": value},
            {"counter": self.name},
        )
        return value

    def get_nowait(self) -> int:
        """:meth:`get` without the checkpoint (local coordinators only)."""
        return self._values.get(self.name, 0)

    async def add(self, n: int = 1) -> int:
        """Add ``n`` (negative: subtract) atomically; the new value.

        Checkpoints: cancelled before it applies, nothing is added; a
        finished ``add`` never reports ``Cancelled``.
        """
        await _checkpoint_if_cancelled()
        value = self.add_nowait(n)
        await _cancel_shielded_checkpoint()
        return value

    async def get(self) -> int:
        """The current value (0 if never added to). Checkpoints."""
        await trio.lowlevel.checkpoint()
        return self._values.get(self.name, 0)


# ---------------------------------------------------------------------------
# The coordinator
# ---------------------------------------------------------------------------
class LocalCoordinator:
    """In-process coordination on Trio primitives: one process, and tests.

    Implements :class:`~foundation.coordination.Coordinator`. State lives in
    this object; two coordinators share nothing. All of it is usable from
    the Trio tasks of one run.

    ``LocalCoordinator()`` may be built directly (sync, no background work):
    everything works except lock leases (``coord.lock(..., ttl=...)``), whose
    expiry is a background task and raises :class:`~foundation.errors.ConfigError`
    there. :func:`open_local_coordinator` gives the coordinator a
    :class:`~foundation.supervision.TaskSupervisor` for that work.

    Args:
        tasks: The task supervisor that runs this coordinator's background
            tasks (lease watchdogs), or None for none.
    """

    def __init__(self, *, tasks: TaskSupervisor | None = None) -> None:
        self._tasks = tasks
        self._locks: dict[str, _LockState] = {}
        self._lock_tokens: dict[str, int] = {}
        self._elections: dict[str, _ElectionState] = {}
        self._barriers: dict[str, _BarrierState] = {}
        self._agreed: dict[str, Any] = {}
        self._counters: dict[str, int] = {}
        self._ballots: dict[str, _Ballot] = {}
        self._ballot_opened: dict[str, trio.Event] = {}
        self._closed_ballots: collections.OrderedDict[str, _Ballot] = collections.OrderedDict()

    def __repr__(self) -> str:
        return (
            f"<LocalCoordinator: {len(self._locks)} locks busy,"
            f" {len(self._elections)} elections, {len(self._barriers)} barriers>"
        )

    @property
    def tasks(self) -> TaskSupervisor | None:
        """The task supervisor running this coordinator's background work, if any."""
        return self._tasks

    # -- locks ---------------------------------------------------------------
    def lock(
        self,
        name: str,
        timeout: float | None = None,
        *,
        holder: str | None = None,
        ttl: float | None = None,
    ) -> LocalLock:
        """A handle on lock ``name``: ``async with coord.lock(name, timeout) as held``.

        Mutual exclusion with FIFO fairness; ``held.fencing_token`` strictly
        increases per name. Entering blocks until granted; leaving releases
        and never blocks. The block's own error is raised as itself.

        Args:
            name: The lock's name.
            timeout: Seconds to wait for it, then :class:`~foundation.errors.LockTimeout`.
            holder: The name :meth:`lock_status` reports (default: the task's).
            ttl: A lease: held longer than ``ttl`` seconds, the lock is taken
                away (the next waiter gets it at once), the block is cancelled
                and raises :class:`~foundation.errors.LockLost`. Needs
                :func:`open_local_coordinator`.

        Raises:
            LockTimeout: on entering, not granted within ``timeout``.
            ConfigError: on entering, a bad name, timeout or ttl.
        """
        _check_name("lock name", name)
        if holder is not None:
            _check_name("holder", holder)
        timeout = _check_seconds("timeout", timeout)
        ttl = _check_seconds("ttl", ttl)
        if ttl is not None and self._tasks is None:
            raise ConfigError(
                "lock leases (ttl=) expire in a background task: open the coordinator"
                " with open_local_coordinator(), or drop ttl"
            )
        return LocalLock(self, name, timeout, holder, ttl)

    async def lock_status(self, name: str) -> LockStatus | None:
        """Who holds lock ``name`` now, or None when nobody does. Checkpoints."""
        await trio.lowlevel.checkpoint()
        state = self._locks.get(name)
        if state is None or state.hold is None:
            return None
        hold = state.hold
        return LockStatus(hold.holder, hold.since, hold.token)

    async def _acquire(
        self, name: str, holder: str | None, patience: float | None, ttl: float | None
    ) -> LocalHeldLock:
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
            with trio.CancelScope(deadline=_deadline(timeout)) as scope:
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
            self._release(waiter.hold, waiter.task)
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
        token = self._lock_tokens.get(name, 0) + 1
        self._lock_tokens[name] = token
        hold = LocalHeldLock(self, name, holder, task, token, ttl)
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

    def _release(self, hold: LocalHeldLock, task: trio.lowlevel.Task) -> None:
        """Release ``hold`` on behalf of ``task`` and grant the next waiter (sync)."""
        if task is not hold.task:
            raise LockNotHeld(
                hold.name,
                f"task {task.name!r} is not its holder (held by {hold.holder!r},"
                f" task {hold.task.name!r})",
            )
        if hold.lost:
            hold.released = True
            raise LockLost(hold.name, hold.token)
        if hold.released:
            raise LockNotHeld(hold.name, "it was already released")
        self._drop(hold, "release")

    def _drop(self, hold: LocalHeldLock, why: str) -> None:
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
        # The token counter (_lock_tokens) stays, so tokens keep increasing.
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
            self._drop(hold, "lost")
            if hold._scope is not None:
                hold._scope.cancel()

    # -- elections -----------------------------------------------------------
    def election(self, group: str) -> LocalElection:
        """The election of ``group`` (state is shared by every handle on it)."""
        return LocalElection(self, _check_name("election group", group))

    # -- barriers ------------------------------------------------------------
    def barrier(self, name: str, parties: int) -> LocalBarrier:
        """The reusable barrier ``name`` of ``parties`` parties.

        Raises:
            ConfigError: ``parties`` is not an int >= 1, or differs from the
                one this name was first used with while a round gathers.
        """
        _check_name("barrier name", name)
        if isinstance(parties, bool) or not isinstance(parties, int) or parties < 1:
            raise ConfigError(f"parties={parties!r}: use an int >= 1")
        state = self._barriers.get(name)
        if state is None:
            state = self._barriers[name] = _BarrierState(parties)
        elif state.parties != parties:
            if state.round.arrived:
                raise ConfigError(
                    f"barrier {name!r} has {state.parties} parties and a round gathering;"
                    f" cannot use it with parties={parties}"
                )
            state.parties = parties
        return LocalBarrier(name, state)

    # -- agreement -----------------------------------------------------------
    async def agree(self, name: str, proposal: Any) -> Any:
        """Single-decree agreement: the first proposal for ``name`` wins.

        Every caller, first or later, returns the agreed value. Checkpoints;
        cancelled before it applies, it proposes nothing.
        """
        _check_name("agreement name", name)
        await _checkpoint_if_cancelled()
        if name not in self._agreed:
            self._agreed[name] = proposal
            _emit("foundation.coordination.consensus.agreed", {}, {"name": name, "value": proposal})
        value = self._agreed[name]
        await _cancel_shielded_checkpoint()
        return value

    # -- consensus -----------------------------------------------------------
    async def consensus(
        self,
        consensus_id: str,
        participants: Collection[str],
        proposal: Any,
        quorum: int | None = None,
        unanimous: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 -- DESIGN section 4
    ) -> Decision:
        """Open ballot ``consensus_id`` on ``proposal`` and wait for its decision.

        Each participant votes once with :meth:`vote`. The proposal is
        *accepted* once ``quorum`` ACCEPT votes are in; it is *rejected* as soon
        as that can no longer happen. ``quorum`` defaults to a majority of the
        participants (``len // 2 + 1``); ``unanimous=True`` makes it all of them.
        ABSTAIN counts toward neither side: it is neither an ACCEPT (it never
        helps carry) nor a REJECT (``decision.rejects`` leaves it out); like any
        vote it tells that the participant is done, so with a quorum out of
        reach it ends the ballot early. The decision is made as soon as it is
        certain, so not every participant may have voted.

        A second ``consensus()`` on an open id waits for the same ballot (its
        other arguments are ignored). Cancelled or timed out, the ballot closes.

        Raises:
            ConsensusTimeout: no decision within ``timeout`` seconds.
            ConfigError: no participants, a bad quorum, or both ``quorum``
                and ``unanimous`` with different counts.
        """
        _check_name("consensus id", consensus_id)
        timeout = _check_seconds("timeout", timeout)
        names = frozenset(participants)
        if not names or not all(isinstance(p, str) and p for p in names):
            raise ConfigError(f"participants={participants!r}: give one or more non-empty str")
        if unanimous:
            if quorum is not None and quorum != len(names):
                raise ConfigError(
                    f"unanimous=True needs all {len(names)} participants; drop quorum={quorum}"
                )
            quorum = len(names)
        elif quorum is None:
            quorum = len(names) // 2 + 1
        elif (
            isinstance(quorum, bool) or not isinstance(quorum, int) or not 1 <= quorum <= len(names)
        ):
            raise ConfigError(f"quorum={quorum!r}: use an int from 1 to {len(names)}")
        await _checkpoint_if_cancelled()
        ballot = self._ballots.get(consensus_id)
        if ballot is None:
            self._closed_ballots.pop(consensus_id, None)
            ballot = self._ballots[consensus_id] = _Ballot(consensus_id, names, proposal, quorum)
            opened = self._ballot_opened.pop(consensus_id, None)
            if opened is not None:
                opened.set()
        try:
            with trio.CancelScope(deadline=_deadline(timeout)):
                await ballot.done.wait()
        finally:
            if ballot.decision is None and ballot.timed_out is None:
                # Timed out or cancelled: close it, so no stale ballot stays open.
                ballot.timed_out = ConsensusTimeout(
                    consensus_id,
                    timeout if timeout is not None else math.inf,
                    len(ballot.votes),
                    len(ballot.participants),
                )
                self._close_ballot(ballot)
                ballot.done.set()
        if ballot.decision is not None:
            return ballot.decision
        error = ballot.timed_out
        assert error is not None
        logger.warning("%s", error)
        _emit(
            "foundation.coordination.consensus.timeout",
            {"received": error.received, "participants": error.participants},
            {"consensus_id": consensus_id},
        )
        raise error

    def _close_ballot(self, ballot: _Ballot) -> None:
        if self._ballots.get(ballot.consensus_id) is ballot:
            del self._ballots[ballot.consensus_id]
        self._closed_ballots[ballot.consensus_id] = ballot
        while len(self._closed_ballots) > _CLOSED_BALLOTS:
            self._closed_ballots.popitem(last=False)

    async def vote(self, consensus_id: str, participant: str, vote: Vote) -> Decision | None:
        """Cast ``participant``'s vote on ballot ``consensus_id``.

        Waits until a ``consensus()`` opens the ballot if none is open or
        recently closed (no timeout: use :func:`trio.fail_after`). Checkpoints.

        Returns:
            The :class:`Decision` if the ballot is decided (by this vote or
            before it: a late vote is not counted), else None.

        Raises:
            UnknownParticipant: ``participant`` is not one of the ballot's.
            DuplicateVote: ``participant`` has voted on it already.
            ConsensusTimeout: the ballot closed undecided (timed out or its
                ``consensus()`` caller was cancelled).
        """
        if not isinstance(vote, Vote):
            raise TypeError(f"vote must be a Vote (ACCEPT, REJECT, ABSTAIN), got {vote!r}")
        await _checkpoint_if_cancelled()
        ballot = self._ballots.get(consensus_id) or self._closed_ballots.get(consensus_id)
        while ballot is None:
            opened = self._ballot_opened.get(consensus_id)
            if opened is None:
                opened = self._ballot_opened[consensus_id] = trio.Event()
            try:
                await opened.wait()
            finally:
                if (
                    not opened.is_set()
                    and not opened.statistics().tasks_waiting
                    and self._ballot_opened.get(consensus_id) is opened
                ):
                    del self._ballot_opened[consensus_id]  # no stale waiter entry
            # Open now; possibly decided (closed) before this task ran again.
            ballot = self._ballots.get(consensus_id) or self._closed_ballots.get(consensus_id)
        if participant not in ballot.participants:
            raise UnknownParticipant(consensus_id, participant)
        if participant in ballot.votes:
            raise DuplicateVote(consensus_id, participant)
        if ballot.timed_out is not None:
            late = ballot.timed_out
            raise ConsensusTimeout(consensus_id, late.timeout, late.received, late.participants)
        if ballot.decision is not None:
            await _cancel_shielded_checkpoint()
            return ballot.decision
        ballot.votes[participant] = vote
        _emit(
            "foundation.coordination.consensus.vote",
            {},
            {"consensus_id": consensus_id, "participant": participant, "vote": vote.value},
        )
        decision = ballot.try_decide()
        if decision is not None:
            self._close_ballot(ballot)
            _emit(
                "foundation.coordination.consensus.decided",
                {
                    "accepts": decision.accepts,
                    "rejects": decision.rejects,
                    "abstains": decision.abstains,
                    "quorum": decision.quorum,
                },
                {"consensus_id": consensus_id, "accepted": decision.accepted},
            )
        await _cancel_shielded_checkpoint()
        return decision

    # -- counters ------------------------------------------------------------
    def counter(self, name: str) -> LocalCounter:
        """The atomic counter ``name`` (0 until first added to)."""
        return LocalCounter(_check_name("counter name", name), self._counters)

    # -- introspection -------------------------------------------------------
    def snapshot(self) -> Mapping[str, Any]:
        """A plain-data view of the state, for ``inspect`` and debugging. Sync."""
        return {
            "locks": {
                name: {
                    "holder": s.hold.holder if s.hold else None,
                    "token": s.hold.token if s.hold else None,
                    "waiting": [w.holder for w in s.queue],
                }
                for name, s in self._locks.items()
            },
            "elections": {
                group: {
                    "leader": s.current(),
                    "candidates": [c.name for c in s.queue],
                    "term": s.term,
                }
                for group, s in self._elections.items()
            },
            "barriers": {
                name: {
                    "parties": s.parties,
                    "generation": s.round.generation,
                    "waiting": s.round.arrived,
                }
                for name, s in self._barriers.items()
            },
            "counters": dict(self._counters),
            "ballots": sorted(self._ballots),
        }


@asynccontextmanager
async def open_local_coordinator(name: str = "coordination") -> AsyncIterator[LocalCoordinator]:
    """Open a :class:`LocalCoordinator` with its own task supervisor.

    Entering does not block. Leaving cancels the coordinator's background
    tasks (lease watchdogs) and waits for them; an error of the block is
    raised as itself.

    Example::

        async with open_local_coordinator() as coord:
            async with coord.lock("resource", timeout=5) as held:
                ...
    """
    async with open_task_supervisor(name) as tasks:
        coord = LocalCoordinator(tasks=tasks)
        try:
            yield coord
        finally:
            tasks.cancel()


if TYPE_CHECKING:
    from ._interface import Coordinator

    def _conforms(coord: LocalCoordinator) -> Coordinator:
        # mypy checks here that LocalCoordinator satisfies the Coordinator protocol.
        return coord
