"""Elections: one leader at a time, FIFO hand-over, terms, resign, observe, cancellation."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from foundation.coordination import Coordinator, Leader, LeadershipLost, Term
from foundation.errors import FoundationError


async def test_first_candidate_leads_at_once(coordinator: Coordinator) -> None:
    election = coordinator.election("g")
    assert await election.leader() is None
    async with election.campaign("node-1") as term:
        assert isinstance(term, Term)
        assert term.candidate == "node-1"
        assert term.number >= 1  # 1 on local; an etcd revision on etcd
        assert await election.leader() == Leader("node-1", term.number)
    assert await election.leader() is None


@pytest.mark.local_only  # autojump_clock: mock time cannot drive etcd
async def test_one_leader_at_a_time_5_candidates_10_failovers(
    coordinator: Coordinator, autojump_clock: trio.testing.MockClock
) -> None:
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
                    current = await election.leader()
                    assert current == Leader(name, term.number)
                    try:
                        await trio.sleep_forever()
                    finally:
                        leading.remove(name)
            except LeadershipLost as exc:
                assert exc.candidate == name
                lost.append(exc.term)
            await trio.sleep(0.5)

    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(candidate, f"node-{i}")
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(10):
            # fail the leader over from outside
            assert await election.resign() is True
            await trio.sleep(1)  # the losers campaign again after 0.5 s
            leader = await election.leader()
            assert leader is not None
            assert len(leading) == 1
        nursery.cancel_scope.cancel()
    assert max_leading == 1
    assert terms == sorted(terms)
    assert len(set(terms)) == len(terms) >= 11
    assert lost == terms[: len(lost)]
    assert len(lost) == 10
    assert await election.leader() is None


@pytest.mark.local_only  # autojump_clock: mock time cannot drive etcd
async def test_fifo_handover_on_exit(
    coordinator: Coordinator, autojump_clock: trio.testing.MockClock
) -> None:
    election = coordinator.election("fifo")
    order: list[tuple[str, int]] = []

    async def run(name: str) -> None:
        async with election.campaign(name) as term:
            order.append((name, term.number))
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        for name in ("a", "b", "c", "d"):
            nursery.start_soon(run, name)
            await trio.testing.wait_all_tasks_blocked()
    assert order == [("a", 1), ("b", 2), ("c", 3), ("d", 4)]


@pytest.mark.local_only  # autojump_clock: mock time cannot drive etcd
async def test_resign_from_elsewhere_raises_leadership_lost(
    coordinator: Coordinator, autojump_clock: trio.testing.MockClock
) -> None:
    election = coordinator.election("lost")
    errors: list[BaseException] = []
    reached_after_sleep = False

    async def leader() -> None:
        nonlocal reached_after_sleep
        try:
            async with election.campaign("only") as term:
                assert term.number == 1
                await trio.sleep(1000)
                reached_after_sleep = True
        except LeadershipLost as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(leader)
        await trio.testing.wait_all_tasks_blocked()
        assert await election.resign() is True
        assert await election.leader() is None  # answered at once
    assert not reached_after_sleep
    (exc,) = errors
    assert isinstance(exc, LeadershipLost)
    assert isinstance(exc, FoundationError)
    assert (exc.group, exc.candidate, exc.term) == ("lost", "only", 1)
    assert "campaign again" in str(exc)
    assert await election.resign() is False


async def test_self_resign_ends_block_quietly(coordinator: Coordinator) -> None:
    election = coordinator.election("self")
    went_on = False
    async with election.campaign("me"):
        assert await election.resign() is True
        await trio.sleep(1000)  # cancelled: the block ends here, quietly
        went_on = True
    assert not went_on
    assert await election.leader() is None


@pytest.mark.local_only  # autojump_clock: mock time cannot drive etcd
async def test_next_leader_waits_for_resigned_block_to_exit(
    coordinator: Coordinator, autojump_clock: trio.testing.MockClock
) -> None:
    election = coordinator.election("overlap")
    events: list[str] = []

    async def old() -> None:
        with pytest.raises(LeadershipLost):
            async with election.campaign("old"):
                try:
                    await trio.sleep_forever()
                finally:
                    with trio.CancelScope(shield=True):
                        await trio.sleep(2)  # slow cleanup, still "inside"
                    events.append("old out")

    async def new() -> None:
        async with election.campaign("new"):
            events.append("new in")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(old)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(new)
        await trio.testing.wait_all_tasks_blocked()
        await election.resign()
        assert await election.leader() is None
    assert events == ["old out", "new in"]


@pytest.mark.local_only  # autojump_clock: mock time cannot drive etcd
async def test_observe_yields_current_then_changes(
    coordinator: Coordinator, autojump_clock: trio.testing.MockClock
) -> None:
    election = coordinator.election("obs")
    seen: list[Leader | None] = []

    async def watcher(task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        async for leader in election.observe():
            seen.append(leader)
            if len(seen) == 5:
                return

    async def lead(name: str) -> None:
        async with election.campaign(name):
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        await nursery.start(watcher)
        await trio.testing.wait_all_tasks_blocked()
        await lead("a")
        await trio.testing.wait_all_tasks_blocked()
        await lead("b")
    assert seen == [None, Leader("a", 1), None, Leader("b", 2), None]


@pytest.mark.local_only  # autojump_clock: mock time cannot drive etcd
async def test_cancel_while_campaigning_leaves_no_candidate(
    coordinator: Coordinator, autojump_clock: trio.testing.MockClock
) -> None:
    election = coordinator.election("cancel")
    elected: list[str] = []

    async def run(name: str, scope: trio.CancelScope) -> None:
        with scope:
            async with election.campaign(name):
                elected.append(name)

    scope_b = trio.CancelScope()
    async with trio.open_nursery() as nursery, election.campaign("a"):
        nursery.start_soon(run, "b", scope_b)
        nursery.start_soon(run, "c", trio.CancelScope())
        await trio.testing.wait_all_tasks_blocked()
        scope_b.cancel()
        await trio.testing.wait_all_tasks_blocked()
        # leaving "a" elects "c" (b withdrew), then nobody
    assert elected == ["c"]
    assert await election.leader() is None


@pytest.mark.local_only  # autojump_clock: mock time cannot drive etcd
async def test_cancel_inside_campaign_steps_down(
    coordinator: Coordinator, autojump_clock: trio.testing.MockClock
) -> None:
    election = coordinator.election("inside")
    with trio.move_on_after(1):
        async with election.campaign("a"):
            await trio.sleep_forever()
    assert await election.leader() is None
    async with election.campaign("b") as term:
        assert term.number == 2


async def test_campaign_body_error_raised_as_itself(coordinator: Coordinator) -> None:
    election = coordinator.election("err")
    with pytest.raises(KeyError):
        async with election.campaign("a"):
            raise KeyError("boom")
    assert await election.leader() is None
