"""Agreement, consensus and counters of the etcd coordinator.

* ``agree(name, proposal)``: a txn creates ``prefix + "agree/" + name`` if it
  is absent; every caller returns the value that is there (JSON).
* ``consensus(id, ...)``: the ballot is the key ``prefix + "consensus/" + id``
  (JSON: participants, proposal, quorum, state) and each vote a key
  ``.../votes/<participant>`` created only if absent (a second vote is a
  :class:`DuplicateVote`), in a txn guarded by the ballot's mod revision so
  no vote lands on a closed ballot. Votes count in create-revision order:
  the decision is the first prefix of that order that decides (a vote cast
  after it is not counted), so every process computes the same one, and
  whoever sees it first writes it into the ballot (state ``decided``). A
  ``consensus()`` that times out or is cancelled closes the ballot (state
  ``timeout``); a later ``consensus()`` on the id opens a fresh ballot.
* ``counter(name)``: a JSON int at ``prefix + "counter/" + name``, added to
  with a compare-and-swap loop on its mod revision. Adds of one coordinator
  are serialised by a local lock first, so they do not contend in etcd.

Values are JSON (never pickle): a proposal that is not JSON-able raises
:class:`TypeError`, and values come back as JSON gives them (tuples as lists).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import trio

from .. import telemetry
from ..errors import ConsensusTimeout, DuplicateVote, UnknownParticipant
from ..etcd import compare_create, compare_mod, op_delete, op_put, op_range
from ._checks import check_name, check_quorum, check_seconds
from ._etcd_reach import reaching
from ._etcd_session import Changes, dumps, loads
from ._types import Decision, Vote

if TYPE_CHECKING:
    from ..etcd import KeyValue, RangeResult
    from ._etcd_context import EtcdContext

__all__ = ["CounterGates", "EtcdCounter", "agree", "consensus", "vote"]

logger = logging.getLogger("foundation.coordination")
_emit = telemetry.emit
_VOTES = {v.value: v for v in Vote}


# ---------------------------------------------------------------------------
# Agreement
# ---------------------------------------------------------------------------
async def agree(ctx: EtcdContext, name: str, proposal: Any) -> Any:
    """Single-decree agreement: the first proposal for ``name`` wins; all learn it.

    Cancelled before it is sent, it proposes nothing; once sent it finishes
    (shielded, bounded by the client's timeout).
    """
    check_name("agreement name", name)
    raw = dumps(proposal, "proposal")
    await trio.lowlevel.checkpoint_if_cancelled()
    key = f"{ctx.prefix}agree/{name}"
    with trio.CancelScope(shield=True):
        # Safe to resend: a second run finds our own value there.
        result = await ctx.client.txn(
            [compare_create(key, "==", 0)],
            [op_put(key, raw)],
            [op_range(key)],
            retry_ambiguous=True,
        )
    if result.succeeded:
        value = loads(raw.encode())
        _emit("foundation.coordination.consensus.agreed", {}, {"name": name, "value": value})
        return value
    found: RangeResult = result.responses[0]  # type: ignore[assignment]
    return loads(found.kvs[0].value)


# ---------------------------------------------------------------------------
# Consensus
# ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Ballot:
    participants: frozenset[str]
    proposal: Any
    quorum: int
    state: str  # "open" | "decided" | "timeout"
    data: dict[str, Any]

    @classmethod
    def parse(cls, kv: KeyValue | None) -> _Ballot | None:
        data = loads(kv.value) if kv is not None else None
        if not isinstance(data, dict):
            return None
        return cls(
            frozenset(data.get("participants", ())),
            data.get("proposal"),
            int(data.get("quorum", 1)),
            str(data.get("state", "open")),
            data,
        )

    def decision(self, consensus_id: str) -> Decision:
        votes = {p: _VOTES[v] for p, v in self.data.get("votes", {}).items() if v in _VOTES}
        return Decision(
            consensus_id,
            bool(self.data.get("accepted")),
            self.proposal,
            self.quorum,
            MappingProxyType(votes),
        )

    def timed_out(self, consensus_id: str) -> ConsensusTimeout:
        limit = self.data.get("timeout")
        return ConsensusTimeout(
            consensus_id,
            float(limit) if isinstance(limit, int | float) else math.inf,
            int(self.data.get("received", 0)),
            len(self.participants),
        )


class _Keys:
    __slots__ = ("ballot", "id", "votes")

    def __init__(self, ctx: EtcdContext, consensus_id: str) -> None:
        self.id = consensus_id
        self.ballot = f"{ctx.prefix}consensus/{consensus_id}"
        self.votes = self.ballot + "/votes/"


def _first_deciding(ballot: _Ballot, votes: list[KeyValue], prefix: bytes) -> Any:
    """(accepted, counted votes) of the first prefix of ``votes`` that decides, or None."""
    counted: dict[str, Vote] = {}
    accepts = 0
    for kv in sorted(votes, key=lambda kv: kv.create_revision):
        participant = kv.key[len(prefix) :].decode(errors="replace")
        data = loads(kv.value, {})
        vote = _VOTES.get(str(data.get("vote"))) if isinstance(data, dict) else None
        if vote is None or participant not in ballot.participants or participant in counted:
            continue
        counted[participant] = vote
        accepts += vote is Vote.ACCEPT
        pending = len(ballot.participants) - len(counted)
        if accepts >= ballot.quorum:
            return True, counted
        if accepts + pending < ballot.quorum:
            return False, counted
    return None


async def _evaluate(
    ctx: EtcdContext, keys: _Keys, ballot_mod: int, *, closed_raises: bool
) -> tuple[int, Decision | None]:
    """(revision read, decision) of the ballot opened at ``ballot_mod``; decides it if due."""
    client = ctx.client
    while True:
        result = await client.txn([], [op_range(keys.ballot), op_range(keys.votes, prefix=True)])
        ballots: RangeResult = result.responses[0]  # type: ignore[assignment]
        votes: RangeResult = result.responses[1]  # type: ignore[assignment]
        kv = ballots.kvs[0] if ballots.kvs else None
        ballot = _Ballot.parse(kv)
        if kv is None or ballot is None or kv.mod_revision != ballot_mod:
            if ballot is not None and ballot.state == "decided":
                return result.revision, ballot.decision(keys.id)
            if closed_raises:
                if ballot is not None and ballot.state == "timeout":
                    raise ballot.timed_out(keys.id)
                raise ConsensusTimeout(
                    keys.id, math.inf, 0, len(ballot.participants) if ballot else 0
                )
            return result.revision, None
        found = _first_deciding(ballot, votes.kvs, keys.votes.encode())
        if found is None:
            return result.revision, None
        accepted, counted = found
        data = dict(ballot.data)
        data.update(
            state="decided", accepted=accepted, votes={p: v.value for p, v in counted.items()}
        )
        wrote = await client.txn(
            [compare_mod(keys.ballot, "==", ballot_mod)],
            [op_put(keys.ballot, dumps(data, "ballot"))],
        )
        if not wrote.succeeded:
            continue  # decided or closed by someone else meanwhile: read it again
        decision = Decision(
            keys.id, accepted, ballot.proposal, ballot.quorum, MappingProxyType(counted)
        )
        _emit(
            "foundation.coordination.consensus.decided",
            {
                "accepts": decision.accepts,
                "rejects": decision.rejects,
                "abstains": decision.abstains,
                "quorum": decision.quorum,
            },
            {"consensus_id": keys.id, "accepted": accepted},
        )
        return wrote.revision, decision


async def consensus(
    ctx: EtcdContext,
    consensus_id: str,
    participants: Collection[str],
    proposal: Any,
    quorum: int | None = None,
    unanimous: bool = False,
    timeout: float | None = None,  # noqa: ASYNC109 -- the interface takes timeout=
) -> Decision:
    """Open (or join) ballot ``consensus_id`` and wait for its decision (module docstring)."""
    check_name("consensus id", consensus_id)
    timeout = check_seconds("timeout", timeout)
    names, needed = check_quorum(participants, quorum, unanimous)
    raw = {"state": "open", "participants": sorted(names), "proposal": proposal, "quorum": needed}
    value = dumps(raw, "proposal")
    await trio.lowlevel.checkpoint_if_cancelled()
    deadline = math.inf if timeout is None else trio.current_time() + timeout
    keys = _Keys(ctx, consensus_id)
    client = ctx.client
    with trio.CancelScope(shield=True):
        ballot_mod = await _open_ballot(ctx, keys, value)
    decision: Decision | None = None
    error: ConsensusTimeout | None = None
    try:
        with trio.CancelScope(deadline=deadline):
            revision, decision = await _evaluate(ctx, keys, ballot_mod, closed_raises=True)
            changes = Changes(client, keys.ballot, prefix=True, start_revision=revision + 1)
            try:
                while decision is None:
                    events = await changes.next()
                    if not events or any(
                        e.kv.key == keys.ballot.encode() or e.kv.key.startswith(keys.votes.encode())
                        for e in events
                    ):
                        _, decision = await _evaluate(ctx, keys, ballot_mod, closed_raises=True)
            finally:
                await changes.aclose()
    finally:
        if decision is None:
            # Timed out or cancelled: close the ballot, so no stale ballot stays open.
            with trio.CancelScope(shield=True):
                decision, error = await _close_ballot(ctx, keys, ballot_mod, timeout)
    if decision is not None:
        return decision
    assert error is not None
    logger.warning("%s", error)
    _emit(
        "foundation.coordination.consensus.timeout",
        {"received": error.received, "participants": error.participants},
        {"consensus_id": consensus_id},
    )
    raise error


async def _open_ballot(ctx: EtcdContext, keys: _Keys, value: str) -> int:
    """The mod revision of the open ballot: joined, or opened fresh (its old votes deleted)."""
    client = ctx.client
    while True:
        kv = await client.get(keys.ballot)
        ballot = _Ballot.parse(kv)
        if kv is not None and ballot is not None and ballot.state == "open":
            return kv.mod_revision
        result = await client.txn(
            [compare_mod(keys.ballot, "==", kv.mod_revision if kv is not None else 0)],
            [op_delete(keys.votes, prefix=True), op_put(keys.ballot, value)],
        )
        if result.succeeded:
            return result.revision


async def _close_ballot(
    ctx: EtcdContext, keys: _Keys, ballot_mod: int, limit: float | None
) -> tuple[Decision | None, ConsensusTimeout | None]:
    client = ctx.client
    counted = await client.range(keys.votes, prefix=True, count_only=True)
    kv = await client.get(keys.ballot)
    ballot = _Ballot.parse(kv)
    if kv is None or ballot is None or kv.mod_revision != ballot_mod:
        if ballot is not None and ballot.state == "decided":
            return ballot.decision(keys.id), None
        if ballot is not None and ballot.state == "timeout":
            return None, ballot.timed_out(keys.id)
        return None, ConsensusTimeout(
            keys.id, math.inf, counted.count, len(ballot.participants) if ballot else 0
        )
    seconds = limit if limit is not None else math.inf
    error = ConsensusTimeout(keys.id, seconds, counted.count, len(ballot.participants))
    data = dict(ballot.data)
    data.update(state="timeout", timeout=limit, received=counted.count)
    result = await client.txn(
        [compare_mod(keys.ballot, "==", ballot_mod)],
        [op_put(keys.ballot, dumps(data, "ballot"))],
    )
    if result.succeeded:
        return None, error
    return await _close_ballot(ctx, keys, ballot_mod, limit)


async def vote(
    ctx: EtcdContext, consensus_id: str, participant: str, choice: Vote
) -> Decision | None:
    """Cast ``participant``'s vote on ballot ``consensus_id``; the decision if there is one.

    Waits (no timeout) until a ``consensus()`` opens the ballot if none
    exists. Once cast, the vote and the evaluation after it finish even if
    the caller is cancelled (shielded, bounded by the client's timeout).
    """
    if not isinstance(choice, Vote):
        raise TypeError(f"vote must be a Vote (ACCEPT, REJECT, ABSTAIN), got {choice!r}")
    await trio.lowlevel.checkpoint_if_cancelled()
    keys = _Keys(ctx, consensus_id)
    mine = keys.votes + participant
    client = ctx.client
    while True:
        result = await client.txn([], [op_range(keys.ballot), op_range(mine)])
        ballots: RangeResult = result.responses[0]  # type: ignore[assignment]
        mine_kv: RangeResult = result.responses[1]  # type: ignore[assignment]
        kv = ballots.kvs[0] if ballots.kvs else None
        ballot = _Ballot.parse(kv)
        if kv is None or ballot is None:
            changes = Changes(client, keys.ballot, start_revision=result.revision + 1)
            try:
                await changes.next()  # wait for a ballot to be opened
            finally:
                await changes.aclose()
            continue
        if participant not in ballot.participants:
            raise UnknownParticipant(consensus_id, participant)
        if mine_kv.kvs:
            raise DuplicateVote(consensus_id, participant)
        if ballot.state == "timeout":
            raise ballot.timed_out(consensus_id)
        if ballot.state == "decided":
            return ballot.decision(consensus_id)
        with trio.CancelScope(shield=True):
            cast = await client.txn(
                [compare_mod(keys.ballot, "==", kv.mod_revision), compare_create(mine, "==", 0)],
                [op_put(mine, dumps({"vote": choice.value}, "vote"))],
            )
            if not cast.succeeded:
                continue  # the ballot changed (or a racing vote of ours landed): look again
            _emit(
                "foundation.coordination.consensus.vote",
                {},
                {"consensus_id": consensus_id, "participant": participant, "vote": choice.value},
            )
            _, decision = await _evaluate(ctx, keys, kv.mod_revision, closed_raises=False)
        return decision


# ---------------------------------------------------------------------------
# Counters
# ---------------------------------------------------------------------------
class CounterGates:
    """One coordinator's local gates, by counter name (an ``EtcdContext.state``).

    Adds of one coordinator to one counter take turns behind its gate, so
    they do not contend in etcd's compare-and-swap.
    """

    __slots__ = ("gates",)

    def __init__(self) -> None:
        self.gates: dict[str, trio.Lock] = {}


class EtcdCounter:
    """An atomic counter of an :class:`EtcdCoordinator` (``coord.counter(name)``)."""

    __slots__ = ("_ctx", "_gates", "_key", "name")

    def __init__(self, ctx: EtcdContext, name: str) -> None:
        self._ctx = ctx
        self._gates = ctx.state(CounterGates).gates
        #: The counter's name.
        self.name = name
        self._key = f"{ctx.prefix}counter/{name}"

    def __repr__(self) -> str:
        return f"<EtcdCounter {self.name!r}>"

    @reaching
    async def add(self, n: int = 1) -> int:
        """Add ``n`` (negative: subtract) atomically; the new value.

        Cancelled before it is sent, nothing is added; once sent it finishes
        (shielded, bounded by the client's timeout) and never reports
        ``Cancelled``.
        """
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"counter increment must be an int, got {n!r}")
        await trio.lowlevel.checkpoint_if_cancelled()
        gate = self._gates.get(self.name)
        if gate is None:
            gate = self._gates[self.name] = trio.Lock()
        async with gate:
            with trio.CancelScope(shield=True):
                value = await self._add(n)
        _emit(
            "foundation.coordination.counter.add",
            {"delta": n, "value": value},
            {"counter": self.name},
        )
        return value

    async def _add(self, n: int) -> int:
        client = self._ctx.client
        kv = await client.get(self._key)
        while True:
            current = _int(kv)
            result = await client.txn(
                [compare_mod(self._key, "==", kv.mod_revision if kv is not None else 0)],
                [op_put(self._key, str(current + n))],
                [op_range(self._key)],
            )
            if result.succeeded:
                return current + n
            found: RangeResult = result.responses[0]  # type: ignore[assignment]
            kv = found.kvs[0] if found.kvs else None

    @reaching
    async def get(self) -> int:
        """The current value (0 if never added to)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        return _int(await self._ctx.client.get(self._key))


def _int(kv: KeyValue | None) -> int:
    if kv is None:
        return 0
    value = loads(kv.value, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
