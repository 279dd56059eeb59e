"""The behaviours of the ``autojump_clock`` tests, on the real clock, on every coordinator.

The mock-clock tests (marked ``local_only``) cannot drive etcd: autojump
also fires while a task waits on a socket. These run the same behaviours
(mutual exclusion, FIFO, timeouts, cancellation, leases, failover, observe,
barrier rounds, consensus outcomes, counters) with real sleeps of a few
hundred milliseconds and generous ``trio.fail_after`` bounds. "A waiter is
queued" is observed through the coordinator (its snapshot on local, its
keys on etcd) instead of ``wait_all_tasks_blocked``, which returns while a
task still waits for etcd's answer.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import pytest
import trio

from foundation.coordination import (
    BarrierAborted,
    BarrierTimeout,
    ConsensusTimeout,
    Coordinator,
    Decision,
    EtcdCoordinator,
    Leader,
    LeadershipLost,
    LocalCoordinator,
    LockLost,
    LockTimeout,
    Vote,
)

A, R, X = Vote.ACCEPT, Vote.REJECT, Vote.ABSTAIN

#: Upper bound of every test here (they take well under a few seconds).
LIMIT = 30


async def eventually(probe: Callable[[], Awaitable[bool]], what: str, within: float = 10) -> None:
    """Poll ``probe`` until it is true (every 10 ms), or fail after ``within`` seconds."""
    for _ in range(round(within / 0.01)):
        if await probe():
            return
        await trio.sleep(0.01)
    pytest.fail(f"timed out waiting until {what}")


async def keys_under(coord: Coordinator, path: str) -> int:
    """How many etcd keys of this coordinator live under ``prefix + path``."""
    assert isinstance(coord, EtcdCoordinator)
    result = await coord.client.range(coord.prefix + path, prefix=True, count_only=True)
    return result.count


async def lock_queue(coord: Coordinator, name: str) -> int:
    """Holder plus waiters of lock ``name``."""
    if isinstance(coord, LocalCoordinator):
        state = coord.snapshot()["locks"].get(name)
        return 0 if state is None else (state["holder"] is not None) + len(state["waiting"])
    return await keys_under(coord, name + "/")


async def candidates(coord: Coordinator, group: str) -> int:
    """Leader plus candidates waiting in election ``group``."""
    if isinstance(coord, LocalCoordinator):
        state = coord.snapshot()["elections"].get(group)
        return 0 if state is None else (state["leader"] is not None) + len(state["candidates"])
    return await keys_under(coord, group + "/")


async def arrivals(coord: Coordinator, name: str) -> int:
    """Parties waiting at barrier ``name`` in its current round."""
    if isinstance(coord, LocalCoordinator):
        state = coord.snapshot()["barriers"].get(name)
        return 0 if state is None else int(state["waiting"])
    return await keys_under(coord, f"barrier/{name}/arrivals/")


# ---------------------------------------------------------------------------
# Locks
# ---------------------------------------------------------------------------
async def test_mutual_exclusion_and_increasing_tokens(coordinator: Coordinator) -> None:
    inside: list[int] = []
    tokens: list[int] = []
    max_inside = 0

    async def worker(i: int) -> None:
        nonlocal max_inside
        for _ in range(4):
            async with coordinator.lock("res") as held:
                inside.append(i)
                max_inside = max(max_inside, len(inside))
                tokens.append(held.fencing_token)
                status = await coordinator.lock_status("res")
                assert status is not None
                assert status.token == held.fencing_token
                await trio.sleep(0.005 * (i % 3))
                inside.remove(i)

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(worker, i)
    assert max_inside == 1
    assert len(tokens) == 24
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == 24
    assert await coordinator.lock_status("res") is None


async def test_fifo_order(coordinator: Coordinator) -> None:
    order: list[int] = []

    async def waiter(i: int) -> None:
        async with coordinator.lock("fifo"):
            order.append(i)

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery, coordinator.lock("fifo"):
            for i in range(6):
                nursery.start_soon(waiter, i)
                await eventually(
                    lambda i=i: _is(lock_queue(coordinator, "fifo"), i + 2),  # type: ignore[misc]
                    f"waiter {i} is queued",
                )
    assert order == list(range(6))


async def _is(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def test_lock_status_holder_and_since(coordinator: Coordinator) -> None:
    with trio.fail_after(LIMIT):
        assert await coordinator.lock_status("s") is None
        before = trio.current_time()
        async with coordinator.lock("s", holder="me") as held:
            after = trio.current_time()
            status = await coordinator.lock_status("s")
            assert status is not None
            assert status.holder == "me"
            assert before <= status.since <= after
            assert status.token == held.fencing_token
        assert await coordinator.lock_status("s") is None
        async with coordinator.lock("s") as again:
            assert again.fencing_token > held.fencing_token
            status = await coordinator.lock_status("s")
            assert status is not None
            assert status.holder == trio.lowlevel.current_task().name


async def test_timeout_leaves_no_trace(coordinator: Coordinator) -> None:
    with trio.fail_after(LIMIT):
        async with coordinator.lock("t") as held:
            start = trio.current_time()
            with pytest.raises(LockTimeout) as info:
                async with coordinator.lock("t", timeout=0.5):
                    pytest.fail("acquired a held lock")
            assert 0.5 <= trio.current_time() - start < 3
            assert (info.value.name, info.value.timeout) == ("t", 0.5)
            status = await coordinator.lock_status("t")
            assert status is not None
            assert status.token == held.fencing_token
            assert await lock_queue(coordinator, "t") == 1  # the timed-out waiter is gone
        assert await coordinator.lock_status("t") is None
        async with coordinator.lock("t", timeout=0):  # a free lock needs no waiting
            pass


async def test_cancel_while_waiting_leaves_no_waiter(coordinator: Coordinator) -> None:
    got: list[str] = []

    async def waiter(name: str, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            async with coordinator.lock("c"):
                got.append(name)

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery, coordinator.lock("c"):
            scope_a = await nursery.start(waiter, "a")
            await eventually(lambda: _is(lock_queue(coordinator, "c"), 2), "a is queued")
            await nursery.start(waiter, "b")
            await eventually(lambda: _is(lock_queue(coordinator, "c"), 3), "b is queued")
            scope_a.cancel()
            await eventually(lambda: _is(lock_queue(coordinator, "c"), 2), "a has left")
    assert got == ["b"]
    assert await coordinator.lock_status("c") is None


async def test_cancel_inside_lock_releases(coordinator: Coordinator) -> None:
    with trio.fail_after(LIMIT):
        with trio.move_on_after(0.2):
            async with coordinator.lock("x"):
                await trio.sleep_forever()
        assert await coordinator.lock_status("x") is None
        async with coordinator.lock("x", timeout=0):
            pass


async def test_lock_ttl_takes_the_lock_away(coordinator: Coordinator) -> None:
    got: list[tuple[str, int]] = []
    errors: list[LockLost] = []

    async def holder() -> None:
        try:
            async with coordinator.lock("leased", ttl=0.5) as held:
                got.append(("first", held.fencing_token))
                await trio.sleep_forever()
        except LockLost as exc:
            errors.append(exc)

    async def next_one() -> None:
        async with coordinator.lock("leased") as held:
            got.append(("second", held.fencing_token))

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(holder)
            await eventually(lambda: _is(lock_queue(coordinator, "leased"), 1), "first holds")
            nursery.start_soon(next_one)
    assert [who for who, _ in got] == ["first", "second"]
    assert got[0][1] < got[1][1]
    (exc,) = errors
    assert (exc.name, exc.token) == ("leased", got[0][1])
    assert await coordinator.lock_status("leased") is None


# ---------------------------------------------------------------------------
# Elections
# ---------------------------------------------------------------------------
async def test_failovers_one_leader_at_a_time(coordinator: Coordinator) -> None:
    election = coordinator.election("cluster")
    leading: list[str] = []
    terms: list[int] = []
    lost: list[int] = []
    max_leading = 0

    async def candidate(name: str) -> None:
        nonlocal max_leading
        while True:
            try:
                async with election.campaign(name) as term:
                    leading.append(name)
                    max_leading = max(max_leading, len(leading))
                    terms.append(term.number)
                    try:
                        await trio.sleep_forever()
                    finally:
                        leading.remove(name)
            except LeadershipLost as exc:
                assert exc.candidate == name
                lost.append(exc.term)
            await trio.sleep(0.05)

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(candidate, f"node-{i}")
            await eventually(lambda: _is(candidates(coordinator, "cluster"), 3), "all campaign")
            for _ in range(4):
                before = len(terms)
                assert await election.resign() is True
                await eventually(lambda before=before: _true(len(terms) > before), "a new term")  # type: ignore[misc]
                leader = await election.leader()
                assert leader is not None
                assert leader.term == terms[-1]
            nursery.cancel_scope.cancel()
    assert max_leading == 1
    assert terms == sorted(terms)
    assert len(set(terms)) == len(terms) >= 5
    assert lost == terms[: len(lost)]
    assert len(lost) == 4
    assert await election.leader() is None


async def _true(value: bool) -> bool:
    return value


async def test_fifo_handover_on_exit(coordinator: Coordinator) -> None:
    election = coordinator.election("fifo")
    order: list[str] = []
    terms: list[int] = []
    all_in = trio.Event()

    async def run(name: str) -> None:
        async with election.campaign(name) as term:
            order.append(name)
            terms.append(term.number)
            if name == "a":
                await all_in.wait()

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            for i, name in enumerate("abcd"):
                nursery.start_soon(run, name)
                await eventually(
                    lambda i=i: _is(candidates(coordinator, "fifo"), i + 1),  # type: ignore[misc]
                    f"{name} campaigns",
                )
            all_in.set()
    assert order == list("abcd")
    assert terms == sorted(terms)
    assert len(set(terms)) == 4


async def test_resign_from_elsewhere_raises_leadership_lost(coordinator: Coordinator) -> None:
    election = coordinator.election("lost")
    errors: list[LeadershipLost] = []
    elected = trio.Event()
    reached_after_sleep = False

    async def leader() -> None:
        nonlocal reached_after_sleep
        try:
            async with election.campaign("only"):
                elected.set()
                await trio.sleep(1000)
                reached_after_sleep = True
        except LeadershipLost as exc:
            errors.append(exc)

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(leader)
            await elected.wait()
            current = await election.leader()
            assert current is not None
            assert await election.resign() is True
            assert await election.leader() is None
    assert not reached_after_sleep
    (exc,) = errors
    assert (exc.group, exc.candidate, exc.term) == ("lost", "only", current.term)
    assert await election.resign() is False


async def test_next_leader_waits_for_resigned_block_to_exit(coordinator: Coordinator) -> None:
    election = coordinator.election("overlap")
    events: list[str] = []
    old_in = trio.Event()

    async def old() -> None:
        with pytest.raises(LeadershipLost):
            async with election.campaign("old"):
                old_in.set()
                try:
                    await trio.sleep_forever()
                finally:
                    with trio.CancelScope(shield=True):
                        await trio.sleep(0.3)  # slow cleanup, still "inside"
                    events.append("old out")

    async def new() -> None:
        async with election.campaign("new"):
            events.append("new in")

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(old)
            await old_in.wait()
            nursery.start_soon(new)
            await eventually(lambda: _is(candidates(coordinator, "overlap"), 2), "new campaigns")
            await election.resign()
    assert events == ["old out", "new in"]


async def test_observe_yields_current_then_changes(coordinator: Coordinator) -> None:
    election = coordinator.election("obs")
    seen: list[Leader | None] = []
    terms: list[int] = []

    async def watcher(task_status: trio.TaskStatus[None]) -> None:
        observer = election.observe()
        seen.append(await observer.__anext__())
        task_status.started()
        async for leader in observer:
            seen.append(leader)
            if len(seen) == 5:
                return

    async def lead(name: str) -> None:
        async with election.campaign(name) as term:
            terms.append(term.number)
            await trio.sleep(0.3)

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            await nursery.start(watcher)
            await lead("a")
            await trio.sleep(0.3)
            await lead("b")
    assert seen == [None, Leader("a", terms[0]), None, Leader("b", terms[1]), None]


async def test_cancel_while_campaigning_leaves_no_candidate(coordinator: Coordinator) -> None:
    election = coordinator.election("cancel")
    elected: list[str] = []

    async def run(name: str, scope: trio.CancelScope) -> None:
        with scope:
            async with election.campaign(name):
                elected.append(name)

    scope_b = trio.CancelScope()
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery, election.campaign("a"):
            nursery.start_soon(run, "b", scope_b)
            await eventually(lambda: _is(candidates(coordinator, "cancel"), 2), "b campaigns")
            nursery.start_soon(run, "c", trio.CancelScope())
            await eventually(lambda: _is(candidates(coordinator, "cancel"), 3), "c campaigns")
            scope_b.cancel()
            await eventually(lambda: _is(candidates(coordinator, "cancel"), 2), "b withdrew")
    assert elected == ["c"]
    assert await election.leader() is None


async def test_cancel_inside_campaign_steps_down(coordinator: Coordinator) -> None:
    election = coordinator.election("inside")
    with trio.fail_after(LIMIT):
        with trio.move_on_after(0.2):
            async with election.campaign("a") as first:
                await trio.sleep_forever()
        assert await election.leader() is None
        async with election.campaign("b") as term:
            assert term.number > first.number


# ---------------------------------------------------------------------------
# Barriers
# ---------------------------------------------------------------------------
async def test_barrier_rounds_never_mix(coordinator: Coordinator) -> None:
    parties, rounds = 3, 5
    barrier = coordinator.barrier("phase", parties)
    passed: dict[int, list[int]] = {}
    rnd = random.Random(7)

    async def party(i: int) -> None:
        for r in range(rounds):
            await trio.sleep(rnd.random() * 0.05)
            generation = await barrier.wait()
            assert generation == r
            passed.setdefault(generation, []).append(i)

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            for i in range(parties):
                nursery.start_soon(party, i)
    assert sorted(passed) == list(range(rounds))
    for members in passed.values():
        assert sorted(members) == list(range(parties))


async def test_barrier_timeout_reports_reached_and_withdraws(coordinator: Coordinator) -> None:
    barrier = coordinator.barrier("t", 3)
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(barrier.wait)
            await eventually(lambda: _is(arrivals(coordinator, "t"), 1), "one arrived")
            with pytest.raises(BarrierTimeout) as info:
                await barrier.wait(timeout=0.3)
            assert (info.value.reached, info.value.parties) == (2, 3)
            assert await arrivals(coordinator, "t") == 1  # withdrawn
            nursery.start_soon(barrier.wait)
            await eventually(lambda: _is(arrivals(coordinator, "t"), 2), "two arrived")
            assert await barrier.wait() == 0


async def test_barrier_cancel_withdraws_and_abort_breaks(coordinator: Coordinator) -> None:
    barrier = coordinator.barrier("a", 3)
    errors: list[BarrierAborted] = []

    async def party() -> None:
        try:
            await barrier.wait()
        except BarrierAborted as exc:
            errors.append(exc)

    with trio.fail_after(LIMIT):
        with trio.move_on_after(0.2):
            await barrier.wait()
        assert await arrivals(coordinator, "a") == 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(party)
            nursery.start_soon(party)
            await eventually(lambda: _is(arrivals(coordinator, "a"), 2), "two arrived")
            assert await barrier.abort() == 2
        assert {(e.name, e.generation) for e in errors} == {("a", 0)}
        assert await barrier.abort() == 0
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(barrier.wait)


# ---------------------------------------------------------------------------
# Agreement, consensus, counters
# ---------------------------------------------------------------------------
async def test_agree_first_proposal_wins(coordinator: Coordinator) -> None:
    learned: dict[int, object] = {}

    async def proposer(i: int) -> None:
        await trio.sleep(0.01 * (i % 4))
        learned[i] = await coordinator.agree("config", {"from": i})

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(proposer, i)
        assert len({repr(v) for v in learned.values()}) == 1
        assert await coordinator.agree("config", "late") in learned.values()


@pytest.mark.parametrize(
    ("votes", "kwargs", "accepted"),
    [
        ("AAARR", {}, True),
        ("AARRR", {}, False),
        ("AAXXR", {}, False),
        ("AAAAX", {"unanimous": True}, False),
        ("AARRR", {"quorum": 2}, True),
    ],
)
async def test_consensus_outcomes(
    coordinator: Coordinator, votes: str, kwargs: dict[str, object], accepted: bool
) -> None:
    by_name = {f"p{i}": {"A": A, "R": R, "X": X}[c] for i, c in enumerate(votes)}
    result: list[Decision] = []

    async def propose() -> None:
        result.append(await coordinator.consensus("c", list(by_name), "proposal", **kwargs))  # type: ignore[arg-type]

    async def cast(name: str, vote: Vote) -> None:
        await trio.sleep(0.05)
        await coordinator.vote("c", name, vote)

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(propose)
            for name, vote in by_name.items():
                nursery.start_soon(cast, name, vote)
    (decision,) = result
    assert decision.accepted is accepted
    assert decision.proposal == "proposal"
    for name, vote in decision.votes.items():
        assert by_name[name] is vote


async def test_vote_before_ballot_opens_waits(coordinator: Coordinator) -> None:
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(coordinator.vote, "later", "a", A)
            nursery.start_soon(coordinator.vote, "later", "b", A)
            await trio.sleep(0.2)
            decision = await coordinator.consensus("later", ["a", "b"], "go", timeout=5)
    assert decision.accepted


async def test_consensus_timeout_closes_the_ballot(coordinator: Coordinator) -> None:
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:

            async def one_vote() -> None:
                await trio.sleep(0.1)
                await coordinator.vote("slow", "a", A)

            nursery.start_soon(one_vote)
            start = trio.current_time()
            with pytest.raises(ConsensusTimeout) as info:
                await coordinator.consensus("slow", ["a", "b", "c"], "x", timeout=0.5)
        assert 0.5 <= trio.current_time() - start < 3
        exc = info.value
        assert (exc.consensus_id, exc.timeout, exc.received, exc.participants) == (
            "slow",
            0.5,
            1,
            3,
        )
        with pytest.raises(ConsensusTimeout):
            await coordinator.vote("slow", "b", A)
        # a cancelled ballot closes too, and the id can be used again
        with trio.move_on_after(0.2):
            await coordinator.consensus("slow", ["a", "b"], "y")
        with pytest.raises(ConsensusTimeout):
            await coordinator.vote("slow", "a", A)
        async with trio.open_nursery() as nursery:

            async def opened() -> None:
                await trio.sleep(0.2)
                await coordinator.vote("slow", "a", A)
                await coordinator.vote("slow", "b", A)

            nursery.start_soon(opened)
            decision = await coordinator.consensus("slow", ["a", "b"], "z")
        assert decision.accepted
        assert decision.proposal == "z"


async def test_counter_concurrent_adders(coordinator: Coordinator) -> None:
    counter = coordinator.counter("jobs")
    results: list[int] = []

    async def adder(i: int) -> None:
        for _ in range(5):
            await trio.sleep(0.001 * (i % 3))
            results.append(await counter.add(1))
        results.append(await counter.add(-2))
        results.append(await counter.add(2))

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(adder, i)
        assert await counter.get() == 40
    assert len(results) == 8 * 7
    assert max(results) == 40
