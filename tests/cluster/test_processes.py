"""The distributed supervisor across OS processes: a node killed with SIGKILL.

Three node processes (``_node.py``) on the session's etcd member run nine
static ``beater`` children, each appending a heartbeat (node, fencing token,
``time.monotonic()``, a count handed from instance to instance) every 50 ms
to a file of its own. One node is killed with SIGKILL; the beats then must
show that every child of the dead node ran again exactly once, on the node
that owns it among the survivors, within T + 2 s of the kill (T: the larger
TTL as granted, 5 s here), counting on from the count its dead instance
saved last, and, at every moment, that no child ran on two nodes and that
tokens only grew; their names moved with them.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import trio
from _beats import check_exclusive, check_tokens_grow, read_runs, sampled_overlaps
from _procs import Nodes, node_processes

from foundation.coordination._membership import owner_of
from foundation.etcd import open_etcd_client

pytestmark = [pytest.mark.etcd, pytest.mark.cluster]

TTL = 5
IDS = [f"c{i}" for i in range(9)]
#: Seconds each test may take, process start-ups included.
BOUND = 120


def owners(members: list[str], ids: list[str] = IDS) -> dict[str, str]:
    found = {i: owner_of(members, json.dumps(i)) for i in ids}
    assert all(v is not None for v in found.values())
    return found  # type: ignore[return-value]


def current(beats: str, within: float = 0.5) -> dict[str, str]:
    """child -> the node whose run of it is beating now (beat within ``within`` s)."""
    now = time.monotonic()
    out = {}
    for child, runs in read_runs(beats).items():
        live = [r for r in runs if not r.stopped and now - r.end < within]
        if len(live) == 1:
            out[child] = live[0].node
    return out


async def name_holders(endpoints: list[str], prefix: str) -> dict[str, str]:
    """child -> the registry instance holding its ``("beaters", child)`` name in etcd.

    The etcd registry stores a name at ``<prefix>reg/`` + compact JSON of
    ``[ns, name]``, its value JSON with the writer's instance id as ``"i"``.
    """
    base = f"{prefix}reg/reg/"
    async with open_etcd_client(endpoints) as client:
        result = await client.range(base, prefix=True)
    out = {}
    for kv in result.kvs:
        ns, name = json.loads(kv.key.decode()[len(base) :])
        if ns == "beaters":
            out[name] = json.loads(kv.value)["i"]
    return out


async def wait_placed(beats: str, placement: dict[str, str], timeout: float) -> None:
    with trio.fail_after(timeout):
        while current(beats) != placement:  # noqa: ASYNC110 -- polling the beat files
            await trio.sleep(0.1)


async def start_three(nodes: Nodes) -> None:
    for name in ("n0", "n1", "n2"):
        await nodes.start(name, children=len(IDS), ttl=TTL)


async def test_kill_a_node_every_child_runs_again_once_on_its_owner(
    etcd_endpoints: list[str], tmp_path: Path
) -> None:
    beats = str(tmp_path / "beats")
    Path(beats).mkdir()
    prefix = f"test/{uuid.uuid4().hex}/"
    with trio.fail_after(BOUND):
        async with node_processes(etcd_endpoints, prefix, beats) as nodes:
            await start_three(nodes)
            before = owners(["n0", "n1", "n2"])
            await wait_placed(beats, before, 60)
            # The victim: the node owning the most children.
            victim = max(("n0", "n1", "n2"), key=lambda n: list(before.values()).count(n))
            orphans = [i for i, n in before.items() if n == victim]
            survivors = [n for n in ("n0", "n1", "n2") if n != victim]
            after = owners(survivors)
            names_before = await name_holders(etcd_endpoints, prefix)
            killed = nodes.procs[victim].kill()
            await wait_placed(beats, after, TTL + 10)
            await trio.sleep(1.0)  # time for a duplicate or a second move to show
            runs = read_runs(beats)
            names_after = await name_holders(etcd_endpoints, prefix)
    # Every child's register_as name is there, the orphans' held by their new nodes.
    assert sorted(names_after) == IDS
    for child in IDS:
        if child in orphans:
            assert names_after[child] != names_before[child]
        else:
            assert names_after[child] == names_before[child]
    moved_to = {names_after[c] for c in orphans}
    assert moved_to <= {names_before[c] for c in IDS if c not in orphans}
    assert check_exclusive(runs) == []
    assert sampled_overlaps(runs) == []
    assert check_tokens_grow(runs) == []
    for child in IDS:
        new = [r for r in runs[child] if r.start > killed]
        if child in orphans:
            assert len(new) == 1, f"{child} ran {len(new)} times after the kill: {new}"
            (run,) = new
            assert run.node == after[child]
            delay = run.start - killed
            assert delay <= TTL + 2, f"{child} took {delay:.2f} s to run again"
            old = [r for r in runs[child] if r.start < killed]
            assert old[-1].node == victim
            assert not old[-1].stopped  # killed: no stop line
            assert old[-1].end <= killed
            # Handoff across the crash: it counts on from the last count saved
            # (saved before each beat is written: the kill may fall in between).
            assert old[-1].last_n is not None
            assert run.handed in (old[-1].last_n, old[-1].last_n + 1)
        else:
            assert new == [], f"{child} of a survivor moved after the kill: {new}"


async def test_graceful_leave_across_processes(etcd_endpoints: list[str], tmp_path: Path) -> None:
    beats = str(tmp_path / "beats")
    Path(beats).mkdir()
    prefix = f"test/{uuid.uuid4().hex}/"
    with trio.fail_after(BOUND):
        async with node_processes(etcd_endpoints, prefix, beats) as nodes:
            await start_three(nodes)
            before = owners(["n0", "n1", "n2"])
            await wait_placed(beats, before, 60)
            leaver = max(("n0", "n1", "n2"), key=lambda n: list(before.values()).count(n))
            moved = [i for i, n in before.items() if n == leaver]
            after = owners([n for n in ("n0", "n1", "n2") if n != leaver])
            t_leave = time.monotonic()
            took = await nodes.procs[leaver].leave()
            assert took < TTL + 1
            # When the leaver's exit returned, its children beat on their new owners.
            assert {c: n for c, n in current(beats).items() if c in moved} == {
                c: after[c] for c in moved
            }
            await trio.sleep(0.5)
            runs = read_runs(beats)
    assert check_exclusive(runs) == []
    assert check_tokens_grow(runs) == []
    for child in moved:
        old = [r for r in runs[child] if r.start < t_leave][-1]
        (new,) = [r for r in runs[child] if r.start > t_leave]
        assert old.stopped  # stopped here, then started there
        assert old.end <= new.start
        assert new.node == after[child]
