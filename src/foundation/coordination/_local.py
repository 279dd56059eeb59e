"""LocalCoordinator: the coordinator interface on Trio primitives, for one process.

Every primitive keeps its state in plain objects of the coordinator and
hands things over *synchronously* at the moment they change (a released
lock is granted to the next waiter before ``release`` returns; a round of a
barrier is released by its last arrival), so FIFO order and "at most one
holder" hold without any task in between. Waiting uses :class:`trio.Event`:
once an event is set, the waiting task is rescheduled with a value and can
no longer see a ``Cancelled`` from that wait, so a grant is never lost to a
racing cancellation; when a wait does end in ``Cancelled`` (or a timeout),
the waiter withdraws itself before the exception leaves, so no stale
holder, candidate or arrival is left behind.

One module per primitive, as on the etcd side: :mod:`._local_lock`,
:mod:`._local_semaphore` and :mod:`._local_rwlock` (on the FIFO queue of
:mod:`._local_queue`), :mod:`._local_membership`, :mod:`._local_election`,
:mod:`._local_barrier`, :mod:`._local_consensus` (agreement, consensus,
counters). This module holds the coordinator, which
checks arguments (:mod:`._checks`) and hands each primitive only its own
state (the lock table, the elections by group...); a hold subclasses
:class:`~._held.HeldLockRecord`, shared with the etcd side.

The only background work is the lease of a lock taken with ``ttl=``: a
watchdog task, run under the coordinator's
:class:`~foundation.supervision.TaskSupervisor`, revokes the lock when the
lease runs out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from ..errors import ConfigError
from ..supervision import TaskSupervisor, open_task_supervisor
from ._checks import check_limit, check_member, check_name, check_parties, check_seconds
from ._local_barrier import BarrierStates, LocalBarrier, barrier_snapshot, barrier_state
from ._local_consensus import LocalBallots, LocalCounter, agree
from ._local_election import ElectionStates, LocalElection, election_snapshot
from ._local_lock import LocalLock, LocalLocks
from ._local_membership import LocalGroups, membership
from ._local_rwlock import LocalRWLock, LocalRWLocks
from ._local_semaphore import LocalSemaphore, LocalSemaphores
from ._membership import GroupMembership
from ._types import Decision, LockStatus, Vote

__all__ = ["LocalCoordinator", "open_local_coordinator"]


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
        self._locks = LocalLocks(tasks)
        self._semaphores = LocalSemaphores()
        self._rwlocks = LocalRWLocks()
        self._groups = LocalGroups()
        self._elections: ElectionStates = {}
        self._barriers: BarrierStates = {}
        self._agreed: dict[str, Any] = {}
        self._counters: dict[str, int] = {}
        self._ballots = LocalBallots()

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
        check_name("lock name", name)
        if holder is not None:
            check_name("holder", holder)
        timeout = check_seconds("timeout", timeout)
        ttl = check_seconds("ttl", ttl)
        if ttl is not None and self._tasks is None:
            raise ConfigError(
                "lock leases (ttl=) expire in a background task: open the coordinator"
                " with open_local_coordinator(), or drop ttl"
            )
        return LocalLock(self._locks, name, timeout, holder, ttl)

    async def lock_status(self, name: str) -> LockStatus | None:
        """Who holds lock ``name`` now, or None when nobody does. Checkpoints."""
        await trio.lowlevel.checkpoint()
        return self._locks.status(name)

    # -- semaphores and read/write locks -------------------------------------
    def semaphore(
        self,
        name: str,
        limit: int,
        timeout: float | None = None,
        *,
        holder: str | None = None,
    ) -> LocalSemaphore:
        """A handle on semaphore ``name``: ``async with coord.semaphore(name, limit) as slot``.

        At most ``limit`` holders at a time; waiters are served in arrival
        order. ``slot.fencing_token`` is new for each acquisition and strictly
        increases per name. Entering blocks until a slot is free; leaving
        releases and never blocks.

        Args:
            name: The semaphore's name.
            limit: The most holders at a time; every holder must give the same.
            timeout: Seconds to wait for a slot, then :class:`~foundation.errors.LockTimeout`.
            holder: A name for logs and telemetry (default: the task's).

        Raises:
            ConfigError: a bad name, limit, timeout or holder; on entering,
                the semaphore is held or waited for with another ``limit``.
            LockTimeout: on entering, no slot within ``timeout``.
        """
        check_name("semaphore name", name)
        limit = check_limit(limit)
        if holder is not None:
            check_name("holder", holder)
        timeout = check_seconds("timeout", timeout)
        return LocalSemaphore(self._semaphores, name, limit, timeout, holder)

    def rwlock(self, name: str) -> LocalRWLock:
        """The read/write lock ``name``: ``async with coord.rwlock(name).read() as held``.

        ``rw.read(timeout)`` shares the lock with other readers,
        ``rw.write(timeout)`` holds it alone. FIFO: a reader that arrives while
        a writer waits queues behind it, so writers do not starve. Each hold
        has a fencing token, strictly increasing per name.
        """
        return LocalRWLock(self._rwlocks, check_name("rwlock name", name))

    # -- membership ------------------------------------------------------------
    def membership(
        self, group: str, member: str, metadata: Any = None
    ) -> AbstractAsyncContextManager[GroupMembership]:
        """Join ``group`` as ``member`` for an ``async with`` block; leave on exit.

        Entering checkpoints and, if ``member`` is in the group already (a
        member id is there at most once), waits until that membership
        leaves. Leaving never blocks. The yielded
        :class:`~foundation.coordination.GroupMembership` answers
        ``members()``, ``metadata()``, ``owner_of(key)`` (rendezvous hashing)
        and ``watch()``.

        Args:
            group: The group's name.
            member: This member's id (non-empty, without ``/``).
            metadata: Anything, shown to the group by ``metadata()``.

        Raises:
            ConfigError: a bad group name or member id.
        """
        check_name("group", group)
        check_member(member)
        return membership(self._groups, group, member, metadata)

    # -- elections -----------------------------------------------------------
    def election(self, group: str) -> LocalElection:
        """The election of ``group`` (state is shared by every handle on it)."""
        return LocalElection(self._elections, check_name("election group", group))

    # -- barriers ------------------------------------------------------------
    def barrier(self, name: str, parties: int) -> LocalBarrier:
        """The reusable barrier ``name`` of ``parties`` parties.

        Raises:
            ConfigError: ``parties`` is not an int >= 1, or differs from the
                one this name was first used with while a round gathers.
        """
        check_name("barrier name", name)
        parties = check_parties(parties)
        return LocalBarrier(name, barrier_state(self._barriers, name, parties))

    # -- agreement -----------------------------------------------------------
    async def agree(self, name: str, proposal: Any) -> Any:
        """Single-decree agreement: the first proposal for ``name`` wins.

        Every caller, first or later, returns the agreed value. Checkpoints;
        cancelled before it applies, it proposes nothing.
        """
        return await agree(self._agreed, name, proposal)

    # -- consensus -----------------------------------------------------------
    async def consensus(
        self,
        consensus_id: str,
        participants: Collection[str],
        proposal: Any,
        quorum: int | None = None,
        unanimous: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 -- the interface takes timeout=
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
        return await self._ballots.consensus(
            consensus_id, participants, proposal, quorum, unanimous, timeout
        )

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
        return await self._ballots.vote(consensus_id, participant, vote)

    # -- counters ------------------------------------------------------------
    def counter(self, name: str) -> LocalCounter:
        """The atomic counter ``name`` (0 until first added to)."""
        return LocalCounter(check_name("counter name", name), self._counters)

    # -- introspection -------------------------------------------------------
    def snapshot(self) -> Mapping[str, Any]:
        """A plain-data view of the state, for ``inspect`` and debugging. Sync."""
        return {
            "locks": self._locks.snapshot(),
            "semaphores": self._semaphores.snapshot(),
            "rwlocks": self._rwlocks.snapshot(),
            "groups": self._groups.snapshot(),
            "elections": election_snapshot(self._elections),
            "barriers": barrier_snapshot(self._barriers),
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
