"""The coordinator interface: what the local and the etcd coordinators both provide.

These are structural :class:`typing.Protocol` types, so an implementation
need not inherit from them; ``tests/coordination`` runs one conformance suite
against every implementation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Protocol

from ._types import Decision, Leader, LockStatus, Term, Vote

__all__ = ["Barrier", "Coordinator", "Counter", "Election", "HeldLock", "Lock"]


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
    ``LockNotHeld`` (it is never a silent no-op).
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
    """Locks, elections, barriers, agreement, consensus and counters.

    Implemented by :class:`~foundation.coordination.LocalCoordinator`
    (in-process) and, later, the etcd coordinator (cluster-wide).
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
