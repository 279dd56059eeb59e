"""The coordinator interface: what the local and the etcd coordinators both provide.

These are structural :class:`typing.Protocol` types, so an implementation
need not inherit from them; ``tests/coordination`` runs one conformance suite
against every implementation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Protocol

from ._types import Decision, Leader, LockStatus, Term, Vote

__all__ = [
    "Barrier",
    "Coordinator",
    "Counter",
    "Election",
    "HeldLock",
    "Lock",
    "Membership",
    "RWLock",
    "Semaphore",
]


class HeldLock(Protocol):
    """A held lock, as ``async with coord.lock(name) as held`` yields it."""

    @property
    def name(self) -> str: ...

    @property
    def holder(self) -> str:
        """Who holds it (by default the acquiring task's name)."""
        ...

    @property
    def fencing_token(self) -> int:
        """Strictly increasing per lock name; pass it along with writes the lock guards."""
        ...

    async def release(self) -> None:
        """Release early; leaving the block then does nothing.

        Raises ``LockNotHeld`` when called by another task than the holder or
        after the lock was released, ``LockLost`` when its lease had expired.
        """
        ...


class Lock(Protocol):
    """A lock handle, as ``coord.lock(name, timeout)`` returns it.

    ``async with lock as held`` acquires on entry and releases on exit;
    ``await lock.acquire()`` / ``await lock.release()`` do the same by hand,
    in one task: a release from a task that does not hold the lock raises
    ``LockNotHeld`` (it is never a silent no-op). Acquiring checkpoints;
    releasing never raises ``Cancelled``: locally it is synchronous and no
    checkpoint (as :meth:`trio.Lock.release`), on etcd a shielded round trip.
    """

    @property
    def name(self) -> str: ...

    async def acquire(self) -> HeldLock:
        """Wait for the lock (FIFO); ``LockTimeout`` after the handle's timeout."""
        ...

    async def release(self) -> None:
        """Release the hold of the calling task; ``LockNotHeld`` if it has none."""
        ...

    async def __aenter__(self) -> HeldLock: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...


class Semaphore(Protocol):
    """A semaphore handle, as ``coord.semaphore(name, limit, timeout)`` returns it.

    ``async with semaphore as slot`` holds one of ``limit`` slots (FIFO);
    ``slot.fencing_token`` is new for each acquisition and strictly
    increasing per name. ``acquire()`` / ``release()`` do the same by hand,
    one hold per task.
    """

    @property
    def name(self) -> str: ...

    @property
    def limit(self) -> int:
        """The most holders at a time."""
        ...

    async def acquire(self) -> HeldLock:
        """Wait for a slot (FIFO); ``LockTimeout`` after the handle's timeout."""
        ...

    async def release(self) -> None:
        """Release the calling task's slot; ``LockNotHeld`` if it has none."""
        ...

    async def __aenter__(self) -> HeldLock: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...


class RWLock(Protocol):
    """A read/write lock, as ``coord.rwlock(name)`` returns it.

    ``rw.read()`` and ``rw.write()`` are handles like a :class:`Lock`'s:
    many readers, or one writer, served in arrival order (a reader that
    arrives while a writer waits queues behind it).
    """

    @property
    def name(self) -> str: ...

    def read(
        self,
        timeout: float | None = None,
        *,
        holder: str | None = None,
    ) -> Lock:
        """A shared hold: ``async with rw.read(timeout) as held``."""
        ...

    def write(
        self,
        timeout: float | None = None,
        *,
        holder: str | None = None,
    ) -> Lock:
        """An exclusive hold: ``async with rw.write(timeout) as held``."""
        ...


class Membership(Protocol):
    """A joined group membership (``async with coord.membership(group, member) as g``)."""

    @property
    def group(self) -> str: ...

    @property
    def member(self) -> str: ...

    def members(self) -> list[str]:
        """The live members' ids, sorted."""
        ...

    def metadata(self) -> Mapping[str, Any]:
        """``{member: metadata}`` of the live members."""
        ...

    def owner_of(self, key: str) -> str | None:
        """The member owning ``key`` by rendezvous hashing; None for an empty group."""
        ...

    def watch(self) -> AsyncIterator[list[str]]:
        """The member list now, then after each change (coalesced)."""
        ...


class Election(Protocol):
    """One election group (``coord.election(group)``)."""

    @property
    def group(self) -> str: ...

    def campaign(self, candidate: str) -> AbstractAsyncContextManager[Term]:
        """Enter once elected; leaving hands leadership to the next candidate."""
        ...

    async def leader(self) -> Leader | None:
        """The current leader, answered at once."""
        ...

    async def resign(self) -> bool:
        """End the current leader's term; False if nobody led."""
        ...

    def observe(self) -> AsyncIterator[Leader | None]:
        """The current leader (None: nobody leads), then each change."""
        ...


class Barrier(Protocol):
    """A reusable barrier of ``parties`` (``coord.barrier(name, parties)``)."""

    @property
    def name(self) -> str: ...

    @property
    def parties(self) -> int: ...

    async def wait(
        self,
        timeout: float | None = None,  # noqa: ASYNC109 -- the interface is wait(timeout=)
    ) -> int:
        """Wait until ``parties`` have arrived; returns the round (generation) passed."""
        ...

    async def abort(self) -> int:
        """Fail the current round: its waiters get ``BarrierAborted``; how many."""
        ...


class Counter(Protocol):
    """An atomic integer counter (``coord.counter(name)``)."""

    @property
    def name(self) -> str: ...

    async def add(self, n: int = 1) -> int:
        """Add ``n`` (negative decrements); returns the new value."""
        ...

    async def get(self) -> int:
        """The current value (0 if never added to)."""
        ...


class Coordinator(Protocol):
    """The coordination primitives, in one process or across a cluster.

    Locks, semaphores, read/write locks, group memberships, elections,
    barriers, agreement, consensus and counters. Implemented by
    :class:`~foundation.coordination.LocalCoordinator` (in-process) and
    :class:`~foundation.coordination.EtcdCoordinator` (cluster-wide).
    """

    def lock(
        self,
        name: str,
        timeout: float | None = None,
        *,
        holder: str | None = None,
        ttl: float | None = None,
    ) -> Lock: ...

    async def lock_status(self, name: str) -> LockStatus | None: ...

    def semaphore(
        self,
        name: str,
        limit: int,
        timeout: float | None = None,
        *,
        holder: str | None = None,
    ) -> Semaphore: ...

    def rwlock(self, name: str) -> RWLock: ...

    def membership(
        self, group: str, member: str, metadata: Any = None
    ) -> AbstractAsyncContextManager[Membership]: ...

    def election(self, group: str) -> Election: ...

    def barrier(self, name: str, parties: int) -> Barrier: ...

    async def agree(self, name: str, proposal: Any) -> Any: ...

    async def consensus(
        self,
        consensus_id: str,
        participants: Collection[str],
        proposal: Any,
        quorum: int | None = None,
        unanimous: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 -- the interface takes timeout=
    ) -> Decision: ...

    async def vote(self, consensus_id: str, participant: str, vote: Vote) -> Decision | None: ...

    def counter(self, name: str) -> Counter: ...
