"""Nodes of a distributed supervisor in this process, for the cluster tests.

``Cluster.node("a")`` opens a node (its own etcd registry and coordinator,
like a separate process would, on the session's etcd member, under a prefix
of the test) and returns it once its supervisor is open; ``await
node.leave()`` exits its block gracefully, ``await node.cancel()`` cancels
it from outside. The ``cluster`` fixture (conftest) closes every node left.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import trio

from foundation.cluster import DistributedSupervisor, open_distributed_supervisor
from foundation.coordination import EtcdCoordinator, open_etcd_coordinator
from foundation.registry import Registry, open_registry
from foundation.supervision import ChildSpec

#: The TTL of test nodes (etcd raises smaller ones to 4 s with the suite's timing).
TTL = 5


class Node:
    """One node: registry, coordinator and distributed supervisor, in a task of its own."""

    def __init__(self, cluster: Cluster, node_id: str, kwargs: dict[str, Any]) -> None:
        self.cluster = cluster
        self.id = node_id
        self.kwargs = kwargs
        self.sup: DistributedSupervisor
        self.registry: Registry
        self.coordinator: EtcdCoordinator
        self._leave = trio.Event()
        self.scope = trio.CancelScope()
        self.left = trio.Event()
        #: Seconds the graceful exit took.
        self.exit_took: float | None = None

    def __repr__(self) -> str:
        return f"<Node {self.id}>"

    async def run(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with self.scope:
                await self._open(task_status)
        finally:
            self.left.set()

    async def _open(self, task_status: trio.TaskStatus[Node]) -> None:
        c = self.cluster
        async with (
            open_registry(
                backend="etcd", endpoints=c.endpoints, prefix=c.prefix + "reg/", ttl=TTL
            ) as registry,
            open_etcd_coordinator(c.endpoints, prefix=c.prefix + "coord/", ttl=TTL) as coord,
        ):
            self.registry = registry
            self.coordinator = coord
            try:
                async with open_distributed_supervisor(
                    c.name, registry=registry, coordinator=coord, node=self.id, **self.kwargs
                ) as sup:
                    self.sup = sup
                    task_status.started(self)
                    try:
                        await self._leave.wait()
                    finally:
                        self._t0 = trio.current_time()
            finally:
                # The supervisor's exit: its graceful leave, also when cancelled.
                self.exit_took = trio.current_time() - self._t0

    _t0 = 0.0

    async def cancel(self) -> float:
        """Cancel the node's task from outside; returns how long the exit took."""
        self.scope.cancel()
        await self.left.wait()
        assert self.exit_took is not None
        return self.exit_took

    async def leave(self) -> float:
        """Exit the supervisor's block; returns how long the exit took."""
        self._leave.set()
        await self.left.wait()
        assert self.exit_took is not None
        return self.exit_took


class Cluster:
    def __init__(self, nursery: trio.Nursery, endpoints: list[str], prefix: str) -> None:
        self.nursery = nursery
        self.endpoints = endpoints
        self.prefix = prefix
        self.name = "workers"
        self.nodes: dict[str, Node] = {}

    async def node(self, node_id: str, *, children: Iterable[ChildSpec] = (), **kw: Any) -> Node:
        node = Node(self, node_id, {"children": list(children), **kw})
        self.nodes[node_id] = node
        started: Node = await self.nursery.start(node.run)
        return started

    def running_on(self) -> dict[Any, list[str]]:
        """child id -> the nodes whose which_children() lists it as running."""
        out: dict[Any, list[str]] = {}
        for node in self.nodes.values():
            if node.left.is_set():
                continue
            for info in node.sup.which_children():
                if info.state.value == "running":
                    out.setdefault(info.id, []).append(node.id)
        return out

    async def wait_running(self, ids: Iterable[Any], *, on: dict[Any, str] | None = None) -> None:
        """Until each id runs on exactly one node (on ``on[id]`` when given)."""
        wanted = list(ids)
        while True:
            now = self.running_on()
            if all(len(now.get(i, [])) == 1 and (on is None or now[i] == [on[i]]) for i in wanted):
                return
            await trio.sleep(0.05)
