"""Records, enums and the vector clock of :mod:`foundation.coordination`."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Decision",
    "Leader",
    "LockStatus",
    "Ordering",
    "Term",
    "VectorClock",
    "Vote",
]


@dataclass(frozen=True, slots=True)
class LockStatus:
    """Who holds a lock, as ``coord.lock_status(name)`` reports it."""

    #: The holder's name (by default the acquiring task's name).
    holder: str
    #: When it was acquired, on the Trio clock (:func:`trio.current_time`).
    since: float
    #: Its fencing token.
    token: int


@dataclass(frozen=True, slots=True)
class Term:
    """One term of leadership, yielded by ``election.campaign(candidate)``."""

    #: The election group.
    group: str
    #: The elected candidate.
    candidate: str
    #: The term number: strictly increasing per election group.
    number: int


@dataclass(frozen=True, slots=True)
class Leader:
    """The current leader, as ``election.leader()`` and ``election.observe()`` report it."""

    #: The candidate that leads.
    candidate: str
    #: Its term number.
    term: int


class Vote(enum.Enum):
    """A participant's vote on a consensus ballot."""

    ACCEPT = "accept"
    REJECT = "reject"
    #: Counts as a vote (the participant is done) but neither for nor against.
    ABSTAIN = "abstain"


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of ``coord.consensus(...)``."""

    #: The ballot's id.
    consensus_id: str
    #: True if the proposal reached the quorum of ACCEPT votes.
    accepted: bool
    #: The proposal voted on.
    proposal: Any
    #: The ACCEPT votes needed (the quorum; every participant when unanimous).
    quorum: int
    #: The votes counted when the decision was made, by participant.
    votes: Mapping[str, Vote]

    @property
    def accepts(self) -> int:
        """The number of ACCEPT votes counted."""
        return sum(1 for v in self.votes.values() if v is Vote.ACCEPT)

    @property
    def rejects(self) -> int:
        """The number of REJECT votes counted."""
        return sum(1 for v in self.votes.values() if v is Vote.REJECT)

    @property
    def abstains(self) -> int:
        """The number of ABSTAIN votes counted."""
        return sum(1 for v in self.votes.values() if v is Vote.ABSTAIN)


class Ordering(enum.Enum):
    """How two vector clocks relate (:meth:`VectorClock.compare`)."""

    BEFORE = "before"
    AFTER = "after"
    CONCURRENT = "concurrent"
    EQUAL = "equal"


class VectorClock(Mapping[str, int]):
    """An immutable, hashable vector clock: a count per node, 0 when absent.

    Every operation returns a new clock. Entries with a count of 0 are not
    stored, so ``VectorClock({"a": 0}) == VectorClock()``. A clock is a
    read-only mapping from node to count (``clock["a"]`` is 0 for an unknown
    node).

    Example::

        a = VectorClock().increment("a")
        b = a.increment("b")
        assert a.compare(b) is Ordering.BEFORE
        assert a.increment("a").compare(b) is Ordering.CONCURRENT
    """

    __slots__ = ("_entries", "_hash")

    _entries: dict[str, int]
    _hash: int | None

    def __init__(self, counts: Mapping[str, int] | Iterable[tuple[str, int]] = ()) -> None:
        items = counts.items() if isinstance(counts, Mapping) else counts
        entries: dict[str, int] = {}
        for node, count in items:
            if not isinstance(count, int) or count < 0:
                raise ValueError(
                    f"vector clock count for {node!r} must be an int >= 0, not {count!r}"
                )
            if count:
                entries[node] = count
        self._entries = dict(sorted(entries.items()))
        self._hash = None

    def __getitem__(self, node: str) -> int:
        return self._entries.get(node, 0)

    def __contains__(self, node: object) -> bool:
        return node in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, VectorClock):
            return self._entries == other._entries
        return NotImplemented

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(self._entries.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"VectorClock({self._entries!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (VectorClock, (self._entries,))

    @classmethod
    def from_dict(cls, counts: Mapping[str, int]) -> VectorClock:
        """A clock from ``{node: count}`` (as :meth:`to_dict` gives, or JSON)."""
        return cls(counts)

    def to_dict(self) -> dict[str, int]:
        """``{node: count}`` for the nodes with a count above 0 (JSON-able)."""
        return dict(self._entries)

    def increment(self, node: str) -> VectorClock:
        """A copy with ``node``'s count raised by one (a local event at ``node``)."""
        entries = dict(self._entries)
        entries[node] = entries.get(node, 0) + 1
        return VectorClock(entries)

    def merge(self, other: VectorClock) -> VectorClock:
        """The pointwise maximum of the two clocks (the least upper bound)."""
        entries = dict(self._entries)
        for node, count in other._entries.items():
            if count > entries.get(node, 0):
                entries[node] = count
        return VectorClock(entries)

    def compare(self, other: VectorClock) -> Ordering:
        """How this clock relates to ``other``.

        Returns:
            ``EQUAL`` if every count is equal; ``BEFORE`` if every count is
            ``<=`` other's (so self happened before other); ``AFTER`` if every
            count is ``>=``; otherwise ``CONCURRENT``.
        """
        less = greater = False
        for node in self._entries.keys() | other._entries.keys():
            mine, theirs = self[node], other[node]
            if mine < theirs:
                less = True
            elif mine > theirs:
                greater = True
            if less and greater:
                return Ordering.CONCURRENT
        if less:
            return Ordering.BEFORE
        if greater:
            return Ordering.AFTER
        return Ordering.EQUAL
