"""The distributed supervisor under a partition: a node cut off stops before anyone takes over.

Three etcd members and three node processes (``tests/cluster/_node.py``),
each on a host of its own, run nine ``beater`` children that append a
heartbeat (node, fencing token, ``time.monotonic()``) every 50 ms to a file
per child (the file system is not cut, and the monotonic clock is one clock
for every namespace). The node owning the most children is cut off at the
switch, then healed. Promises checked on the beats:

* every child of the cut-off node stopped there (its ``stop`` line) before
  its next instance started elsewhere: the node fenced itself before etcd
  could expire its lease;
* those children run again on their new owners within T + 2 s of the cut
  (T: the larger TTL as granted, 5 s);
* after healing, the node rejoins and takes back the children it owns (one
  at a time), and at no sampled moment did two nodes run one child; tokens
  only grew; each instance counted on from the count its predecessor saved
  (handoff).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import trio
from _lab import DriverClient, Lab, LabError, _clean_env

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cluster"))

from _beats import (
    check_exclusive,
    check_tokens_grow,
    read_runs,
    sampled_overlaps,
)

from foundation.coordination._membership import owner_of

pytestmark = [pytest.mark.partition, pytest.mark.netns, pytest.mark.cluster]

NODE = str(Path(__file__).resolve().parents[1] / "cluster" / "_node.py")
TTL = 5
IDS = [f"c{i}" for i in range(9)]
NAMES = ("n0", "n1", "n2")
#: Seconds the test may take, setup included.
BOUND = 150


def owners(members: list[str]) -> dict[str, str]:
    return {i: owner_of(members, json.dumps(i)) or "" for i in IDS}


def current(beats: str, within: float = 0.5) -> dict[str, str]:
    """child -> the node whose run of it is beating now."""
    now = time.monotonic()
    out = {}
    for child, runs in read_runs(beats).items():
        live = [r for r in runs if not r.stopped and now - r.end < within]
        if len(live) == 1:
            out[child] = live[0].node
    return out


async def wait_placed(beats: str, placement: dict[str, str], timeout: float, what: str) -> None:
    with trio.move_on_after(timeout):
        while current(beats) != placement:  # noqa: ASYNC110 -- polling the beat files
            await trio.sleep(0.1)
        return
    raise LabError(f"{what}: wanted {placement}, beating now: {current(beats)}")


async def start_node(lab: Lab, name: str, beats: str) -> DriverClient:
    host = lab.net.add_host(name)
    proc = lab.net.spawn(
        host,
        [
            sys.executable,
            "-u",
            NODE,
            f"--endpoints={','.join(lab.endpoints)}",
            f"--prefix={lab.prefix}",
            f"--node={name}",
            f"--ttl={TTL}",
            f"--children={len(IDS)}",
            "--target=beater",
            f"--beats={beats}",
            "--log-level=INFO",
        ],
        name=f"node-{name}",
        stdin=-1,  # subprocess.PIPE
        stdout=-1,
        env=_clean_env(),
    )
    client = DriverClient(name, proc)
    await lab.nursery.start(client.run)
    lab.drivers[name] = client
    if await client.wait_event(lambda e: e.get("event") == "ready", 60) is None:
        raise LabError(f"node {name} did not start:\n{proc.tail_log(40)}")
    return client


async def test_a_cut_off_node_stops_its_children_before_anyone_takes_them(lab: Lab) -> None:
    beats = str(Path(lab.net.base_dir) / "beats")
    Path(beats).mkdir()
    with trio.fail_after(BOUND):
        await lab.start_cluster()
        nodes = {name: await start_node(lab, name, beats) for name in NAMES}
        everyone = owners(list(NAMES))
        await wait_placed(beats, everyone, 60, "placement at start")
        victim = max(NAMES, key=lambda n: list(everyone.values()).count(n))
        orphans = [c for c, n in everyone.items() if n == victim]
        survivors = [n for n in NAMES if n != victim]
        cut_at = lab.net.cut(victim)
        await wait_placed(beats, owners(survivors), TTL + 10, "after the cut")
        taken_at = time.monotonic()
        healed_at = lab.net.heal(victim)
        await wait_placed(beats, everyone, 30, "after healing")
        await trio.sleep(1.0)  # time for a duplicate to show
        runs = read_runs(beats)
    lab.notes.append(f"victim {victim} with {len(orphans)} children; cut at {cut_at:.3f}")
    for child in orphans:
        rs = runs[child]
        cut_run = [r for r in rs if r.node == victim and r.start < cut_at][-1]
        (moved,) = [r for r in rs if cut_at < r.start < healed_at]
        (back,) = [r for r in rs if r.start > healed_at]
        lab.notes.append(
            f"{child}: stopped on {victim} at cut+{cut_run.end - cut_at:.3f} s, ran on"
            f" {moved.node} at cut+{moved.start - cut_at:.3f} s, back on {back.node} at"
            f" heal+{back.start - healed_at:.3f} s"
        )
        assert cut_run.stopped, f"{child} has no stop line on {victim}: it did not fence"
        assert cut_run.end < moved.start, f"{child}: {cut_run} overlaps {moved}"
        assert moved.node == owners(survivors)[child]
        assert moved.start - cut_at <= TTL + 2
        assert back.node == victim
        # The handed-over count: the last one the cut-off instance saved (its
        # last save may have reached etcd with the answer lost in the cut).
        assert cut_run.last_n is not None
        assert moved.handed in (cut_run.last_n, cut_run.last_n + 1)
        assert back.handed is not None
        assert back.handed >= (moved.last_n or 0)
    for child in IDS:
        if child not in orphans:
            assert not [r for r in runs[child] if r.start > cut_at], f"{child} moved"
    assert check_exclusive(runs) == []
    assert sampled_overlaps(runs) == []
    assert check_tokens_grow(runs) == []
    fenced = nodes[victim].find("telemetry", name="foundation.cluster.node.fenced")
    assert fenced, "the cut-off node reported no fencing"
    assert fenced[0]["t"] < min(r.start for c in orphans for r in runs[c] if r.start > cut_at)
    assert taken_at - cut_at <= TTL + 10
    # Its children honour cancellation: none ran past the fencing deadline.
    assert not nodes[victim].find("telemetry", name="foundation.cluster.child.overrun")
