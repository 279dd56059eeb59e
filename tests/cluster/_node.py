"""One node of a distributed supervisor in a process of its own (the cluster tests' driver).

``python _node.py --endpoints URL[,URL] --prefix P --node NAME [--children N]
[--target beater|idle] [--beats DIR] [--ttl 5] [--no-rebalance]`` opens an
etcd registry (``P + "reg/"``) and coordinator (``P + "coord/"``) and the
distributed supervisor ``workers`` with ``N`` static children ``c0..cN-1``
(``beater`` children write heartbeats under ``DIR``). It prints JSON lines on
stdout: ``{"event": "ready"}`` once open, the supervisor's telemetry
(``{"event": "telemetry", ...}``), replies to commands, and ``{"event":
"left", "took": s}`` after a graceful exit. Commands, one JSON object per
stdin line: ``{"id": 1, "op": "start_children", "n": 1000, "target":
"idle"}`` (start_child of ``n`` children concurrently; answered once all
run), ``{"id": 2, "op": "children"}`` (cluster_children, counted), ``{"id":
3, "op": "leave"}`` (exit gracefully). SIGTERM or the end of stdin exits
gracefully too; the tests kill it with SIGKILL for a crash. Every time is
``time.monotonic()``.

A test tool, not library code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from typing import Any

import trio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _cluster_children

from foundation import telemetry
from foundation.cluster import DistributedSupervisor, open_distributed_supervisor
from foundation.coordination import open_etcd_coordinator
from foundation.registry import open_registry
from foundation.supervision import ChildSpec


def out(message: dict[str, Any]) -> None:
    message.setdefault("t", time.monotonic())
    sys.stdout.write(json.dumps(message, default=repr) + "\n")
    sys.stdout.flush()


def child_specs(n: int, target: str, beats: str | None, first: int = 0) -> list[ChildSpec]:
    specs = []
    for i in range(first, first + n):
        tag = f"c{i}"
        args: tuple[Any, ...] = (tag, beats) if target == "beater" else (tag,)
        specs.append(
            ChildSpec(
                id=tag,
                target=f"_cluster_children:{target}",
                args=args,
                register_as=("beaters", tag) if target == "beater" else None,
                shutdown=1.0,
            )
        )
    return specs


async def start_children(sup: DistributedSupervisor, cmd: dict[str, Any]) -> dict[str, Any]:
    specs = child_specs(cmd["n"], cmd.get("target", "idle"), cmd.get("beats"), cmd.get("first", 0))
    limiter = trio.CapacityLimiter(cmd.get("concurrency", 200))
    t0 = time.monotonic()

    async def one(spec: ChildSpec) -> None:
        async with limiter:
            await sup.start_child(spec)

    async with trio.open_nursery() as nursery:
        for spec in specs:
            nursery.start_soon(one, spec)
    return {"took": time.monotonic() - t0}


async def children(sup: DistributedSupervisor, cmd: dict[str, Any]) -> dict[str, Any]:
    found = await sup.cluster_children()
    states: dict[str, int] = {}
    nodes: dict[str, int] = {}
    for child in found.values():
        states[child.state] = states.get(child.state, 0) + 1
        nodes[str(child.node)] = nodes.get(str(child.node), 0) + 1
    return {"states": states, "nodes": nodes, "count": len(found)}


async def serve_commands(sup: DistributedSupervisor, leave: trio.CancelScope) -> None:
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buffer = b""
    async with stream, trio.open_nursery() as nursery:
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                leave.cancel()
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                cmd = json.loads(line)
                if cmd["op"] == "leave":
                    leave.cancel()
                    continue
                nursery.start_soon(run_command, sup, cmd)


async def run_command(sup: DistributedSupervisor, cmd: dict[str, Any]) -> None:
    handler = {"start_children": start_children, "children": children}[cmd["op"]]
    t0 = time.monotonic()
    try:
        result = await handler(sup, cmd)
    except Exception as exc:
        out({"id": cmd["id"], "ok": False, "error": f"{type(exc).__name__}: {exc}", "t0": t0})
    else:
        out({"id": cmd["id"], "ok": True, "result": result, "t0": t0})


async def until_sigterm(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def main(args: argparse.Namespace) -> None:
    _cluster_children.NODE = args.node
    endpoints = args.endpoints.split(",")

    def on_event(event: str, measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
        out({"event": "telemetry", "name": event, "m": measurements, "md": metadata})

    telemetry.attach(f"node-{args.node}", "foundation.cluster", on_event)
    async with (
        open_registry(
            backend="etcd", endpoints=endpoints, prefix=args.prefix + "reg/", ttl=args.ttl
        ) as registry,
        open_etcd_coordinator(endpoints, prefix=args.prefix + "coord/", ttl=args.ttl) as coord,
    ):
        specs = child_specs(args.children, args.target, args.beats)
        async with open_distributed_supervisor(
            "workers",
            registry=registry,
            coordinator=coord,
            node=args.node,
            children=specs,
            rebalance=args.rebalance,
        ) as sup:
            out({"event": "ready", "pid": os.getpid(), "ttl": sup.ttl})
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve_commands, sup, nursery.cancel_scope)
                nursery.start_soon(until_sigterm, nursery.cancel_scope)
            t0 = time.monotonic()
        out({"event": "left", "took": time.monotonic() - t0})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoints", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--ttl", type=int, default=5)
    parser.add_argument("--children", type=int, default=0)
    parser.add_argument("--target", default="beater")
    parser.add_argument("--beats", default=None)
    parser.add_argument("--no-rebalance", dest="rebalance", action="store_false")
    parser.add_argument("--log-level", default="WARNING")
    ns = parser.parse_args()
    logging.basicConfig(
        level=ns.log_level, stream=sys.stderr, format=f"%(asctime)s {ns.node} %(name)s %(message)s"
    )
    trio.run(main, ns)
