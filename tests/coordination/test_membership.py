"""Group membership on every coordinator: join, leave, watch, rendezvous hashing.

On etcd a membership's view is fed by a watch, so tests wait for changes
through ``watch()`` (bounded) rather than expecting them at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
import trio

from foundation.coordination import Coordinator, GroupMembership
from foundation.errors import ConfigError

LIMIT = 30  # seconds: the bound of every wait in these tests
MEMBERS = ["node-a", "node-b", "node-c", "node-d"]
KEYS = [json.dumps(["child", i]) for i in range(200)] + ["", "ключ", "a\0b"]


async def until(watch: AsyncIterator[list[str]], expected: list[str]) -> None:
    """Consume ``watch`` until it yields ``expected``."""
    with trio.fail_after(LIMIT):
        async for members in watch:
            if members == expected:
                return
    pytest.fail(f"the watch ended before showing {expected}")


async def test_join_and_leave(coordinator: Coordinator) -> None:
    async with coordinator.membership("workers", "node-a", {"slots": 4}) as a:
        assert isinstance(a, GroupMembership)
        assert (a.group, a.member) == ("workers", "node-a")
        assert a.members() == ["node-a"]
        watch = a.watch()
        await until(watch, ["node-a"])
        async with coordinator.membership("workers", "node-b") as b:
            await until(watch, ["node-a", "node-b"])
            await until(b.watch(), ["node-a", "node-b"])
            assert dict(a.metadata()) == {"node-a": {"slots": 4}, "node-b": None}
        await until(watch, ["node-a"])
        assert a.members() == ["node-a"]
    # Left: the watch ends and the view has no member left.
    with trio.fail_after(LIMIT):
        assert [m async for m in watch] == []
    assert a.members() == []
    assert a.owner_of("anything") is None


async def test_watch_yields_the_current_list_first_then_changes(
    coordinator: Coordinator,
) -> None:
    seen: list[list[str]] = []
    async with coordinator.membership("g", "m1") as m1:
        watch = m1.watch()
        with trio.fail_after(LIMIT):
            seen.append(await watch.__anext__())
            async with coordinator.membership("g", "m2"):
                seen.append(await watch.__anext__())
            seen.append(await watch.__anext__())
    assert seen == [["m1"], ["m1", "m2"], ["m1"]]


async def test_slow_watcher_skips_to_the_latest(coordinator: Coordinator) -> None:
    async with coordinator.membership("g", "m0") as m0:
        watch = m0.watch()
        with trio.fail_after(LIMIT):
            assert await watch.__anext__() == ["m0"]
            async with (
                coordinator.membership("g", "m1"),
                coordinator.membership("g", "m2"),
                coordinator.membership("g", "m3"),
            ):
                await until(m0.watch(), ["m0", "m1", "m2", "m3"])
                # The slow watcher missed the steps in between: it gets the latest.
                assert await watch.__anext__() == ["m0", "m1", "m2", "m3"]


async def test_owner_of_is_rendezvous_hashing(coordinator: Coordinator) -> None:
    async with coordinator.membership("shards", MEMBERS[0]) as group:
        async with (
            coordinator.membership("shards", MEMBERS[1]),
            coordinator.membership("shards", MEMBERS[2]),
            coordinator.membership("shards", MEMBERS[3]),
        ):
            await until(group.watch(), MEMBERS)
            owners = {key: group.owner_of(key) for key in KEYS}
            assert set(owners.values()) == set(MEMBERS)  # every member owns some
        await until(group.watch(), [MEMBERS[0]])
        # Alone in the group: it owns everything.
        assert {group.owner_of(key) for key in KEYS} == {MEMBERS[0]}
    assert _owners_elsewhere(MEMBERS, KEYS) == owners


async def test_removing_a_member_moves_only_its_keys(coordinator: Coordinator) -> None:
    async with (
        coordinator.membership("shards", MEMBERS[0]) as group,
        coordinator.membership("shards", MEMBERS[1]),
    ):
        async with coordinator.membership("shards", MEMBERS[2]):
            await until(group.watch(), MEMBERS[:3])
            before = {key: group.owner_of(key) for key in KEYS}
        await until(group.watch(), MEMBERS[:2])
        after = {key: group.owner_of(key) for key in KEYS}
    moved = {key for key in KEYS if before[key] != after[key]}
    assert moved == {key for key in KEYS if before[key] == MEMBERS[2]}
    assert moved  # node-c owned some keys


def _owners_elsewhere(members: list[str], keys: list[str]) -> dict[str, str | None]:
    """owner_of computed by another process, with another hash seed, on a local coordinator."""
    script = """
import json, sys, trio
from foundation.coordination import LocalCoordinator
members, keys = json.load(sys.stdin)
async def main():
    coord = LocalCoordinator()
    async with coord.membership("shards", members[0]) as group:
        for m in members[1:]:
            await stack.enter_async_context(coord.membership("shards", m))
        json.dump({k: group.owner_of(k) for k in keys}, sys.stdout)
from contextlib import AsyncExitStack
async def run():
    global stack
    async with AsyncExitStack() as stack:
        await main()
trio.run(run)
"""
    env = dict(os.environ, PYTHONHASHSEED="12345")
    proc = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps([members, keys]),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    owners: dict[str, str | None] = json.loads(proc.stdout)
    return owners


async def test_owner_of_takes_str_keys(coordinator: Coordinator) -> None:
    async with coordinator.membership("g", "m") as group:
        for key in (1, ("a", 1), b"bytes", None):
            with pytest.raises(ConfigError, match=r"json\.dumps"):
                group.owner_of(key)  # type: ignore[arg-type]
        assert group.owner_of(json.dumps(["a", 1])) == "m"


async def test_a_member_id_is_in_a_group_once(coordinator: Coordinator) -> None:
    joined_again = trio.Event()

    async def second() -> None:
        async with coordinator.membership("g", "same", "second") as again:
            assert again.members() == ["same"]
            joined_again.set()

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            async with coordinator.membership("g", "same", "first") as first:
                nursery.start_soon(second)
                # It waits while the first one is in; a short real-time look.
                with trio.move_on_after(0.3):
                    await joined_again.wait()
                assert not joined_again.is_set()
                assert dict(first.metadata()) == {"same": "first"}
            await joined_again.wait()


async def test_groups_are_separate(coordinator: Coordinator) -> None:
    async with (
        coordinator.membership("g1", "a") as a,
        coordinator.membership("g2", "b") as b,
        coordinator.membership("g1/sub", "c") as c,
        coordinator.membership("g1", "d"),
    ):
        # d joined after the others: once a sees d, it has seen what came before.
        await until(a.watch(), ["a", "d"])
        await until(c.watch(), ["c"])
        assert b.members() == ["b"]


@pytest.mark.parametrize("member", ["", "a/b", 7, None])
async def test_bad_member_ids(coordinator: Coordinator, member: object) -> None:
    with pytest.raises(ConfigError):
        coordinator.membership("g", member)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        coordinator.membership("", "m")
