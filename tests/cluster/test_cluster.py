"""The distributed supervisor with its nodes in this process, on a real etcd member.

Each node has its own registry and coordinator (its own etcd clients and
leases), as separate processes would; kills and partitions are in
``test_processes.py`` and the partition suite.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
from typing import Any

import pytest
import trio
from _cluster_children import events
from _cluster_nodes import Cluster

from foundation import errors, telemetry
from foundation.cluster import current_fencing_token
from foundation.coordination._membership import owner_of
from foundation.etcd import open_etcd_client
from foundation.supervision import ChildSpec, Restart

pytestmark = [pytest.mark.etcd, pytest.mark.cluster]

M = "_cluster_children"
BOUND = 60


def spec(child_id: Any, target: str = "sleeper", *args: Any, **kw: Any) -> ChildSpec:
    return ChildSpec(id=child_id, target=f"{M}:{target}", args=args or (child_id,), **kw)


async def test_start_child_runs_on_its_owner(cluster: Cluster) -> None:
    with trio.fail_after(BOUND):
        a = await cluster.node("a")
        b = await cluster.node("b")
        await trio.sleep(0.2)  # both see both
        ids = [f"w{i}" for i in range(6)]
        for child_id in ids:
            child = await a.sup.start_child(spec(child_id))
            assert child.state == "running"
            assert child.node == owner_of(["a", "b"], json.dumps(child_id))
            assert child.fencing_token is not None
        await cluster.wait_running(ids, on={i: owner_of(["a", "b"], json.dumps(i)) for i in ids})
        every = await b.sup.cluster_children()
        assert sorted(every) == ids
        assert all(c.state == "running" for c in every.values())
        # The token the child sees is its lock's create revision.
        for child_id, child in every.items():
            (start,) = events("start", child_id)
            assert start[2] == child.fencing_token


async def test_fencing_token_outside_a_child() -> None:
    with pytest.raises(LookupError, match="distributed supervisor"):
        current_fencing_token()


async def test_child_already_exists_and_bad_specs_write_nothing(cluster: Cluster) -> None:
    with trio.fail_after(BOUND):
        a = await cluster.node("a")
        await a.sup.start_child(spec("x"))
        with pytest.raises(errors.ChildAlreadyExists):
            await a.sup.start_child(spec("x", "named"))
        await a.sup.terminate_child("x")
        with pytest.raises(errors.ChildAlreadyExists):  # a stopped spec is still stored
            await a.sup.start_child(spec("x"))

        async def nested() -> None: ...

        bad = [
            ChildSpec(id="l", target=lambda: trio.sleep(1)),  # noqa: ASYNC105 -- never called
            ChildSpec(id="n", target=nested),
            spec("j", "args_echo", {1, 2}),
            spec("k", "args_echo", float("nan")),
            spec("d", "args_echo", {1: "int key"}),
            spec(("ok", 1.5)),
            spec(True),
            spec("r", register_as=("svc", 1.5)),
        ]
        before = await a.sup.cluster_children()
        for bad_spec in bad:
            with pytest.raises(errors.InvalidChildSpec):
                await a.sup.start_child(bad_spec)
        assert await a.sup.cluster_children() == before


async def test_a_bad_static_child_fails_the_open_before_anything_is_written(
    cluster: Cluster,
) -> None:
    with trio.fail_after(BOUND):
        with pytest.raises(errors.InvalidChildSpec):
            await cluster.node("a", children=[spec("ok"), spec("bad", "args_echo", {1})])
        with pytest.raises(errors.ChildAlreadyExists):
            await cluster.node("b", children=[spec("twice"), spec("twice")])
        async with open_etcd_client(cluster.endpoints) as client:
            assert not (await client.range(cluster.prefix, prefix=True)).kvs


async def test_terminate_restart_delete(cluster: Cluster) -> None:
    with trio.fail_after(BOUND):
        a = await cluster.node("a")
        b = await cluster.node("b")
        await a.sup.start_child(spec("t", "named", register_as=("svc", "t")))
        await trio.sleep(0.2)
        assert a.registry.lookup("svc", "t")["tag"] == "t"
        await b.sup.terminate_child("t")
        assert cluster.running_on().get("t") is None
        assert len(events("stop", "t")) == 1
        await a.registry.sync()
        assert a.registry.get("svc", "t") is None
        child = (await a.sup.cluster_children())["t"]
        assert (child.state, child.node, child.fencing_token) == ("stopped", None, None)
        restarted = await b.sup.restart_child("t")
        assert restarted.state == "running"
        (first, second) = events("start", "t")
        assert second[2] > first[2]  # tokens only grow
        await a.sup.delete_child("t")
        assert "t" not in await a.sup.cluster_children()
        with pytest.raises(errors.ChildNotFound):
            await a.sup.terminate_child("t")
        with pytest.raises(errors.ChildNotFound):
            await a.sup.delete_child("t")


async def test_args_round_trip_as_json(cluster: Cluster) -> None:
    with trio.fail_after(BOUND):
        a = await cluster.node("a")
        await a.sup.start_child(
            ChildSpec(
                id=("echo", 1), target=f"{M}:args_echo", args=(1, "two", [3, [4]], {"k": None})
            )
        )
        (start,) = events("start", "echo")
        assert start[4] == (1, "two", (3, (4,)), {"k": None})  # arrays come back as tuples
        assert ("echo", 1) in await a.sup.cluster_children()


def _owners(members: list[str], ids: list[Any]) -> dict[Any, str]:
    return {i: owner_of(members, json.dumps(i)) for i in ids}  # type: ignore[misc]


async def _settle(cluster: Cluster, *node_ids: str) -> None:
    """Until every node's membership view lists exactly ``node_ids``."""
    while any(  # noqa: ASYNC110 -- polling each node's view
        sorted(cluster.nodes[n].sup.members()) != sorted(node_ids) for n in node_ids
    ):
        await trio.sleep(0.02)


async def test_graceful_leave_hands_children_over(cluster: Cluster) -> None:
    with trio.fail_after(BOUND):
        a = await cluster.node("a")
        await cluster.node("b")
        c = await cluster.node("c")
        await _settle(cluster, "a", "b", "c")
        ids = [f"g{i}" for i in range(9)]
        for child_id in ids:
            await a.sup.start_child(spec(child_id, "named", register_as=("svc", child_id)))
        await cluster.wait_running(ids, on=_owners(["a", "b", "c"], ids))
        on_c = [i for i, n in _owners(["a", "b", "c"], ids).items() if n == "c"]
        assert on_c, "pick ids so that c owns some"
        took = await c.leave()
        assert took < a.sup.ttl + 1
        # Each of c's children runs on its new owner already when leave() returns.
        now = cluster.running_on()
        after = _owners(["a", "b"], ids)
        for child_id in ids:
            assert now.get(child_id) == [after[child_id]], (child_id, now)
        for child_id in on_c:
            first, second = events("start", child_id)
            (stop,) = events("stop", child_id)
            assert first[3] <= stop[3] <= second[3]  # stopped there before started here
            assert second[2] > first[2]
            assert a.registry.lookup("svc", child_id)["token"] == second[2]  # the name moved


async def test_a_cancelled_block_hands_children_over_in_order(cluster: Cluster) -> None:
    """Cancelling the block from outside still leaves first, then stops, then releases."""
    with trio.fail_after(BOUND):
        a = await cluster.node("a")
        b = await cluster.node("b")
        await _settle(cluster, "a", "b")
        ids = [f"x{i}" for i in range(6)]
        for child_id in ids:
            await a.sup.start_child(spec(child_id))
        owners = _owners(["a", "b"], ids)
        await cluster.wait_running(ids, on=owners)
        on_b = [i for i in ids if owners[i] == "b"]
        assert on_b
        took = await b.cancel()
        assert took < a.sup.ttl  # did not wait out T: the handover was seen
        assert cluster.running_on() == {i: ["a"] for i in ids}
        for child_id in on_b:
            first, second = events("start", child_id)
            (stop,) = events("stop", child_id)
            assert first[3] <= stop[3] <= second[3]
            assert second[2] > first[2]


async def test_the_last_node_stops_its_children_and_forgets_them(cluster: Cluster) -> None:
    with trio.fail_after(BOUND):
        a = await cluster.node("a", children=[spec("s1"), spec("s2")])
        await cluster.wait_running(["s1", "s2"])
        base = f"{cluster.prefix}reg/cluster/{cluster.name}/"
        async with open_etcd_client(cluster.endpoints) as client:
            assert (await client.range(base, prefix=True)).kvs
            await a.leave()
            assert len(events("stop")) == 2
            assert not (await client.range(base, prefix=True)).kvs
            assert not (await client.range(f"{cluster.prefix}coord/cluster/", prefix=True)).kvs


async def test_static_children_first_stored_wins(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(BOUND):
        a = await cluster.node("a", children=[spec("s", "sleeper", "first")])
        await cluster.wait_running(["s"])
        with caplog.at_level(logging.WARNING, "foundation.cluster"):
            await cluster.node("b", children=[spec("s", "sleeper", "second")])
        assert "first stored wins" in caplog.text
        await trio.sleep(0.5)
        # It may have moved to b (rebalance), but every instance runs the first spec.
        assert {e[1] for e in events("start")} == {"first"}
        assert list(await a.sup.cluster_children()) == ["s"]


async def test_join_with_rebalance_moves_owned_children_one_at_a_time(cluster: Cluster) -> None:
    with trio.fail_after(BOUND):
        a = await cluster.node("a")
        ids = [f"r{i}" for i in range(8)]
        for child_id in ids:
            await a.sup.start_child(spec(child_id))
        moves: list[tuple[str, dict[str, Any]]] = []
        with telemetry.attached(
            "test-moves", "foundation.cluster.child", lambda e, m, md: moves.append((e, dict(md)))
        ):
            b = await cluster.node("b")
            owners = _owners(["a", "b"], ids)
            to_b = [i for i in ids if owners[i] == "b"]
            assert to_b
            await cluster.wait_running(ids, on=owners)
        # One at a time: each move's instance started only after the previous one ran.
        starts = sorted(
            (e[3], e[1])
            for e in events("start")
            if e[1] in to_b and e[2] != min(x[2] for x in events("start", e[1]))
        )
        stops = {e[1]: e[3] for e in events("stop")}
        assert len(starts) == len(to_b)
        for (t_prev, prev), (_, nxt) in itertools.pairwise(starts):
            assert stops[nxt] >= t_prev, f"{nxt} was stopped before {prev} ran on b"
        asked = [md["child_id"] for e, md in moves if e.endswith(".move")]
        assert sorted(asked) == sorted(to_b)
        assert b.sup.which_children()


async def test_no_rebalance_leaves_running_children_where_they_are(cluster: Cluster) -> None:
    with trio.fail_after(BOUND):
        a = await cluster.node("a")
        ids = [f"n{i}" for i in range(6)]
        for child_id in ids:
            await a.sup.start_child(spec(child_id))
        b = await cluster.node("b", rebalance=False)
        await _settle(cluster, "a", "b")
        await trio.sleep(1.0)
        assert all(on == ["a"] for on in cluster.running_on().values())
        assert not b.sup.which_children()
        # A new child goes to its owner, b included.
        owners = _owners(["a", "b"], ["late1", "late2", "late3", "late4"])
        for child_id, owner in owners.items():
            child = await a.sup.start_child(spec(child_id))
            assert child.node == owner


async def test_handoff_across_a_move_and_a_crash(cluster: Cluster) -> None:
    with trio.fail_after(BOUND):
        a = await cluster.node("a")
        b = await cluster.node("b")
        await _settle(cluster, "a", "b")
        # An id a owns; the counter saves its count every 50 ms.
        child_id = next(
            f"h{i}" for i in range(50) if owner_of(["a", "b"], json.dumps(f"h{i}")) == "a"
        )
        await b.sup.start_child(spec(child_id, "counter"))
        await trio.sleep(0.5)
        await a.leave()  # moves it to b, which starts from the last saved count
        await cluster.wait_running([child_id], on={child_id: "b"})
        first, second = events("start", child_id)
        (stop,) = events("stop", child_id)
        assert first[4] == 0
        assert second[4] == stop[4] >= 5  # the count it stopped at, saved before it stopped
        # Across a crash: the next instance (same node) gets what was saved before it.
        await b.sup.start_child(spec("c", "crash_after_save"))
        await trio.sleep(0.5)
        assert [e[4] for e in events("start", "c")] == [None, 1]


async def test_a_crash_looping_child_fails_cluster_wide(cluster: Cluster) -> None:
    with trio.fail_after(BOUND):
        a = await cluster.node("a", max_restarts=2, max_seconds=5)
        b = await cluster.node("b", max_restarts=2, max_seconds=5)
        await _settle(cluster, "a", "b")
        failed: list[dict[str, Any]] = []
        with telemetry.attached(
            "test-failed",
            "foundation.cluster.child.failed",
            lambda e, m, md: failed.append(dict(md)),
        ):
            # It starts, then crashes: start_child returns once it ran (or raises,
            # if the crash loop failed it before start_child looked), and the loop fails it.
            with contextlib.suppress(errors.RestartIntensityExceeded):
                await a.sup.start_child(spec("loop", "crasher"))
            while (await b.sup.cluster_children())["loop"].state != "failed":  # noqa: ASYNC110
                await trio.sleep(0.05)
            await trio.sleep(1.5)  # nothing restarts it anywhere
            # One that never gets started: start_child raises.
            with pytest.raises(errors.RestartIntensityExceeded) as info:
                await b.sup.start_child(spec("never", "start_crasher"))
            assert info.value.child_id == "never"
        # The first start and 2 restarts, on one node; then never again.
        assert len(events("start", "loop")) == len(events("start", "never")) == 3
        assert [md["child_id"] for md in failed] == ["loop", "never"]
        assert all(isinstance(md["error"], RuntimeError) for md in failed)
        child = (await b.sup.cluster_children())["loop"]
        assert child.state == "failed"
        assert child.node == owner_of(["a", "b"], json.dumps("loop"))
        assert "RuntimeError" in (child.reason or "")
        # Others run on; a failed child starts again only when asked.
        await a.sup.start_child(spec("fine"))
        with pytest.raises(errors.RestartIntensityExceeded):
            await b.sup.restart_child("never")
        assert len(events("start", "never")) == 6


async def test_transient_and_temporary_children_that_finish(cluster: Cluster) -> None:
    with trio.fail_after(BOUND):
        a = await cluster.node("a")
        done = await a.sup.start_child(spec("tr", "finishes", restart=Restart.TRANSIENT))
        assert done.state in ("running", "stopped")
        await trio.sleep(0.3)
        children = await a.sup.cluster_children()
        assert children["tr"].state == "stopped"
        await a.sup.start_child(spec("tm", "finishes", restart=Restart.TEMPORARY))
        await trio.sleep(0.3)
        assert "tm" not in await a.sup.cluster_children()  # temporary: forgotten, as in OTP
        assert len(events("start", "tr")) == len(events("start", "tm")) == 1
