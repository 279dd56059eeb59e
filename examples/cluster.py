import os

import trio

from foundation.cluster import open_distributed_supervisor
from foundation.coordination import open_etcd_coordinator
from foundation.registry import open_registry
from foundation.supervision import ChildSpec

ETCD = os.environ.get("FOUNDATION_ETCD_ENDPOINTS", "http://127.0.0.1:2379")
RUN = f"example-{os.getpid()}/"  # a cluster of its own for each run of this script


async def shard(n: int, *, handoff, handoff_state=None) -> None:
    count = handoff_state or 0  # where its last instance stopped, on whichever node
    print(f"shard {n} starts at {count}")
    while True:
        count += 1
        await handoff.save(count)  # for the next instance, wherever it runs
        await trio.sleep(0.05)


async def node(name: str, leave: trio.Event, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    shards = [ChildSpec(id=n, target=shard, args=(n,)) for n in range(4)]
    async with (
        open_registry(backend="etcd", endpoints=ETCD, prefix=RUN + "reg/", ttl=5) as registry,
        open_etcd_coordinator(ETCD, prefix=RUN + "coord/", ttl=5) as coord,
        open_distributed_supervisor(
            "shards", registry=registry, coordinator=coord, node=name, children=shards
        ) as dsup,
    ):
        task_status.started(dsup)
        await leave.wait()  # leaving hands this node's shards over first


async def main() -> None:
    leave = {name: trio.Event() for name in "abc"}
    async with trio.open_nursery() as nursery:
        nodes = [await nursery.start(node, name, leave[name]) for name in "abc"]
        await trio.sleep(2)  # b and c take over the shards they own, one at a time
        for name in "cba":  # c's shards move on, then b's; the last node stops them
            children = await nodes[0].cluster_children()
            print("nodes:", sorted(c.node for c in children.values()), f"- {name} leaves")
            leave[name].set()
            await trio.sleep(1)


trio.run(main)
