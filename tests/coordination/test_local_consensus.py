"""agree(), consensus()/vote() and counters."""

from __future__ import annotations

import pickle

import pytest
import trio
import trio.testing

from foundation.coordination import (
    ConsensusTimeout,
    Coordinator,
    Decision,
    DuplicateVote,
    UnknownParticipant,
    Vote,
)
from foundation.errors import ConfigError

A, R, X = Vote.ACCEPT, Vote.REJECT, Vote.ABSTAIN


@pytest.mark.local_only  # autojump_clock: mock time cannot drive etcd
async def test_agree_first_proposal_wins_everyone_learns(
    coordinator: Coordinator, autojump_clock: trio.testing.MockClock
) -> None:
    learned: dict[int, object] = {}

    async def proposer(i: int) -> None:
        await trio.sleep(i % 4)
        learned[i] = await coordinator.agree("config", {"from": i})

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(proposer, i)
    values = {repr(v) for v in learned.values()}
    assert len(learned) == 20
    assert len(values) == 1
    assert await coordinator.agree("config", "late") in learned.values()
    assert await coordinator.agree("other", 1) == 1


async def ballot(
    coordinator: Coordinator,
    votes: dict[str, Vote],
    **kwargs: object,
) -> Decision:
    """Run consensus over the participants of ``votes``; each votes after a beat."""
    result: list[Decision] = []

    async def propose() -> None:
        result.append(await coordinator.consensus("c", list(votes), "proposal", **kwargs))  # type: ignore[arg-type]

    async def cast(name: str, vote: Vote) -> None:
        await trio.sleep(1)
        await coordinator.vote("c", name, vote)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(propose)
        for name, vote in votes.items():
            nursery.start_soon(cast, name, vote)
    return result[0]


@pytest.mark.parametrize(
    ("votes", "kwargs", "accepted"),
    [
        ("AAARR", {}, True),  # majority
        ("AARRR", {}, False),
        ("AAXXR", {}, False),  # abstentions do not help carry
        ("AAAXX", {}, True),
        ("AAAAR", {"unanimous": True}, False),
        ("AAAAA", {"unanimous": True}, True),
        ("AAAAX", {"unanimous": True}, False),
        ("AARRR", {"quorum": 2}, True),
        ("AXXXX", {"quorum": 2}, False),
    ],
)
@pytest.mark.local_only  # autojump_clock: mock time cannot drive etcd
async def test_consensus_outcomes(
    coordinator: Coordinator,
    autojump_clock: trio.testing.MockClock,
    votes: str,
    kwargs: dict[str, object],
    accepted: bool,
) -> None:
    by_name = {f"p{i}": {"A": A, "R": R, "X": X}[c] for i, c in enumerate(votes)}
    decision = await ballot(coordinator, by_name, **kwargs)
    assert decision.accepted is accepted
    assert decision.proposal == "proposal"
    assert decision.consensus_id == "c"
    # counted votes are a consistent prefix of what was cast
    for name, vote in decision.votes.items():
        assert by_name[name] is vote
    assert decision.abstains == sum(1 for v in decision.votes.values() if v is X)
    assert decision.rejects == sum(1 for v in decision.votes.values() if v is R)


async def test_decision_is_made_as_soon_as_certain(coordinator: Coordinator) -> None:
    async with trio.open_nursery() as nursery:
        result: list[Decision] = []

        async def propose() -> None:
            result.append(await coordinator.consensus("early", ["a", "b", "c"], 42))

        nursery.start_soon(propose)
        await trio.testing.wait_all_tasks_blocked()
        assert await coordinator.vote("early", "a", A) is None
        decision = await coordinator.vote("early", "b", A)
        assert decision is not None
        assert decision.accepted
        assert decision.quorum == 2
    assert result == [decision]
    # a late vote is not counted; it learns the decision
    assert await coordinator.vote("early", "c", R) == decision
    assert decision.rejects == 0


async def test_duplicate_and_unknown_voters(coordinator: Coordinator) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(coordinator.consensus, "dup", ["a", "b", "c"], "x")
        await trio.testing.wait_all_tasks_blocked()
        await coordinator.vote("dup", "a", A)
        with pytest.raises(DuplicateVote) as dup:
            await coordinator.vote("dup", "a", R)
        assert (dup.value.consensus_id, dup.value.participant) == ("dup", "a")
        assert isinstance(dup.value, ValueError)
        with pytest.raises(UnknownParticipant) as unknown:
            await coordinator.vote("dup", "mallory", A)
        assert unknown.value.participant == "mallory"
        assert isinstance(unknown.value, LookupError)
        assert pickle.loads(pickle.dumps(unknown.value)).participant == "mallory"
        await coordinator.vote("dup", "b", A)


@pytest.mark.local_only  # autojump_clock: mock time cannot drive etcd
async def test_vote_before_ballot_opens_waits(
    coordinator: Coordinator, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(coordinator.vote, "later", "a", A)
        nursery.start_soon(coordinator.vote, "later", "b", A)
        await trio.sleep(3)
        decision = await coordinator.consensus("later", ["a", "b"], "go", timeout=1)
    assert decision.accepted


@pytest.mark.local_only  # autojump_clock: mock time cannot drive etcd
async def test_consensus_timeout(
    coordinator: Coordinator, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:

        async def one_vote() -> None:
            await trio.testing.wait_all_tasks_blocked()
            await coordinator.vote("slow", "a", A)

        nursery.start_soon(one_vote)
        start = trio.current_time()
        with pytest.raises(ConsensusTimeout) as info:
            await coordinator.consensus("slow", ["a", "b", "c"], "x", timeout=10)
    assert trio.current_time() - start == pytest.approx(10)
    exc = info.value
    assert (exc.consensus_id, exc.timeout, exc.received, exc.participants) == ("slow", 10, 1, 3)
    assert isinstance(exc, TimeoutError)
    # the ballot is closed: a late vote learns it timed out
    with pytest.raises(ConsensusTimeout):
        await coordinator.vote("slow", "b", A)


@pytest.mark.local_only  # autojump_clock: mock time cannot drive etcd
async def test_cancelled_consensus_closes_ballot(
    coordinator: Coordinator, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.move_on_after(1):
        await coordinator.consensus("gone", ["a", "b"], "x")
    with pytest.raises(ConsensusTimeout):
        await coordinator.vote("gone", "a", A)
    # the id can be used again for a fresh ballot
    async with trio.open_nursery() as nursery:
        nursery.start_soon(coordinator.vote, "gone", "a", A)
        nursery.start_soon(coordinator.vote, "gone", "b", A)
        decision = await coordinator.consensus("gone", ["a", "b"], "y")
    assert decision.accepted


async def test_bad_ballots(coordinator: Coordinator) -> None:
    with pytest.raises(ConfigError):
        await coordinator.consensus("b", [], "x")
    with pytest.raises(ConfigError):
        await coordinator.consensus("b", ["a"], "x", quorum=2)
    with pytest.raises(ConfigError):
        await coordinator.consensus("b", ["a", "b"], "x", quorum=1, unanimous=True)


@pytest.mark.local_only  # autojump_clock: mock time cannot drive etcd
async def test_counter_50_concurrent_adders(
    coordinator: Coordinator, autojump_clock: trio.testing.MockClock
) -> None:
    counter = coordinator.counter("jobs")
    assert await counter.get() == 0
    results: list[int] = []

    async def adder(i: int) -> None:
        for _ in range(20):
            await trio.sleep(0.001 * (i % 7))
            results.append(await counter.add(1))
        results.append(await counter.add(-5))
        results.append(await counter.add(5))

    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(adder, i)
    assert await counter.get() == 50 * 20
    assert len(results) == 50 * 22
    assert max(results) == 50 * 20  # the last add saw every other one
    assert await coordinator.counter("other").get() == 0


async def test_counter_add_cancelled_adds_nothing(coordinator: Coordinator) -> None:
    counter = coordinator.counter("c")
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await counter.add(3)
    assert await counter.get() == 0
    with pytest.raises(TypeError):
        await counter.add(1.5)  # type: ignore[arg-type]


async def test_waiting_voters_learn_ballot_decided_before_they_ran(
    coordinator: Coordinator,
) -> None:
    # Both voters wait for the ballot; when it opens, the first to run decides
    # it (quorum=1) and closes it before the other runs again.
    results: list[Decision | None] = []

    async def voter(name: str) -> None:
        results.append(await coordinator.vote("fast", name, A))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(voter, "a")
        nursery.start_soon(voter, "b")
        await trio.testing.wait_all_tasks_blocked()
        decision = await coordinator.consensus("fast", ["a", "b"], "x", quorum=1)
    assert decision.accepted
    assert len(decision.votes) == 1
    assert results == [decision, decision]


@pytest.mark.local_only  # autojump_clock: mock time cannot drive etcd
async def test_cancelled_waiting_vote_leaves_nothing(
    coordinator: Coordinator, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.move_on_after(1):
        await coordinator.vote("never", "a", A)
    snapshot = getattr(coordinator, "_ballot_opened", {})
    assert "never" not in snapshot
