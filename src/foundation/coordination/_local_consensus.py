"""Agreement, consensus and counters of the local coordinator.

* ``agree(name, proposal)``: the first proposal stored for ``name`` wins.
* ``consensus(id, ...)`` / ``vote(id, ...)``: :class:`LocalBallots` keeps
  the open ballots, the recently closed ones (so a late vote learns the
  outcome) and the voters waiting for a ballot to open. A vote that makes
  the outcome certain decides the ballot synchronously and wakes its
  ``consensus()`` callers; a ``consensus()`` that times out or is cancelled
  closes the ballot.
* ``counter(name)``: :class:`LocalCounter`, an int in a dict.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Collection, Iterator
from types import MappingProxyType
from typing import Any

import trio

from .. import telemetry
from ..errors import ConsensusTimeout, DuplicateVote, UnknownParticipant
from ._checks import check_name, check_quorum, check_seconds, deadline
from ._types import Decision, Vote

__all__ = ["LocalBallots", "LocalCounter", "agree"]

logger = logging.getLogger("foundation.coordination")

_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_cancel_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint
_emit = telemetry.emit

#: How many decided (or timed-out) ballots a coordinator remembers, so that a
#: late ``vote()`` learns the outcome instead of waiting for a new ballot.
_CLOSED_BALLOTS = 1000


# ---------------------------------------------------------------------------
# Agreement
# ---------------------------------------------------------------------------
async def agree(agreed: dict[str, Any], name: str, proposal: Any) -> Any:
    """Single-decree agreement on ``agreed`` (a coordinator's): the first proposal wins."""
    check_name("agreement name", name)
    await _checkpoint_if_cancelled()
    if name not in agreed:
        agreed[name] = proposal
        _emit("foundation.coordination.consensus.agreed", {}, {"name": name, "value": proposal})
    value = agreed[name]
    await _cancel_shielded_checkpoint()
    return value


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


class LocalBallots:
    """The ballots of one local coordinator: open, recently closed, and awaited."""

    __slots__ = ("_closed", "_open", "_opened")

    def __init__(self) -> None:
        self._open: dict[str, _Ballot] = {}
        self._opened: dict[str, trio.Event] = {}
        self._closed: collections.OrderedDict[str, _Ballot] = collections.OrderedDict()

    def __iter__(self) -> Iterator[str]:
        """The ids of the open ballots."""
        return iter(self._open)

    async def consensus(
        self,
        consensus_id: str,
        participants: Collection[str],
        proposal: Any,
        quorum: int | None,
        unanimous: bool,
        timeout: float | None,  # noqa: ASYNC109 -- the interface takes timeout=
    ) -> Decision:
        """``coord.consensus(...)``: open (or join) the ballot and wait for its decision."""
        check_name("consensus id", consensus_id)
        timeout = check_seconds("timeout", timeout)
        names, quorum = check_quorum(participants, quorum, unanimous)
        await _checkpoint_if_cancelled()
        ballot = self._open.get(consensus_id)
        if ballot is None:
            self._closed.pop(consensus_id, None)
            ballot = self._open[consensus_id] = _Ballot(consensus_id, names, proposal, quorum)
            opened = self._opened.pop(consensus_id, None)
            if opened is not None:
                opened.set()
        try:
            with trio.CancelScope(deadline=deadline(timeout)):
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
                self._close(ballot)
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

    def _close(self, ballot: _Ballot) -> None:
        if self._open.get(ballot.consensus_id) is ballot:
            del self._open[ballot.consensus_id]
        self._closed[ballot.consensus_id] = ballot
        while len(self._closed) > _CLOSED_BALLOTS:
            self._closed.popitem(last=False)

    async def vote(self, consensus_id: str, participant: str, vote: Vote) -> Decision | None:
        """``coord.vote(...)``: cast a vote; the decision if the ballot has one."""
        if not isinstance(vote, Vote):
            raise TypeError(f"vote must be a Vote (ACCEPT, REJECT, ABSTAIN), got {vote!r}")
        await _checkpoint_if_cancelled()
        ballot = self._open.get(consensus_id) or self._closed.get(consensus_id)
        while ballot is None:
            opened = self._opened.get(consensus_id)
            if opened is None:
                opened = self._opened[consensus_id] = trio.Event()
            try:
                await opened.wait()
            finally:
                if (
                    not opened.is_set()
                    and not opened.statistics().tasks_waiting
                    and self._opened.get(consensus_id) is opened
                ):
                    del self._opened[consensus_id]  # no stale waiter entry
            # Open now; possibly decided (closed) before this task ran again.
            ballot = self._open.get(consensus_id) or self._closed.get(consensus_id)
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
            self._close(ballot)
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


# ---------------------------------------------------------------------------
# Counters
# ---------------------------------------------------------------------------
class LocalCounter:
    """An atomic counter of a local coordinator (``coord.counter(name)``)."""

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
