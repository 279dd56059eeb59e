"""Node processes (``_node.py``) for the cluster tests: start, command, kill, always clean up."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

NODE = str(Path(__file__).with_name("_node.py"))


class NodeProc:
    """The test's end of one node process."""

    def __init__(self, node: str, proc: trio.Process) -> None:
        self.node = node
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self.replies: dict[int, dict[str, Any]] = {}
        self._changed = trio.Event()
        self._ids = itertools.count(1)
        self.killed_at: float | None = None
        self.eof = False

    def __repr__(self) -> str:
        return f"<NodeProc {self.node} pid {self.proc.pid}>"

    async def read(self) -> None:
        assert self.proc.stdout is not None
        buffer = b""
        try:
            while True:
                chunk = await self.proc.stdout.receive_some(65536)
                if not chunk:
                    return
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    try:
                        msg = json.loads(line)
                    except ValueError:
                        continue
                    if "id" in msg and "event" not in msg:
                        self.replies[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                    self._notify()
        finally:
            self.eof = True
            self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    async def wait_event(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while True:
                for event in self.events:
                    if pred(event):
                        return event
                if self.eof:
                    raise AssertionError(f"node {self.node} exited; events: {self.events[-10:]}")
                await self._changed.wait()

    async def call(self, op: str, timeout: float = 60, **fields: Any) -> dict[str, Any]:
        ident = next(self._ids)
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all(
            (json.dumps({"id": ident, "op": op, **fields}) + "\n").encode()
        )
        with trio.fail_after(timeout):
            while ident not in self.replies:
                if self.eof:
                    raise AssertionError(f"node {self.node} exited before answering {op}")
                await self._changed.wait()
        reply = self.replies[ident]
        if not reply.get("ok"):
            raise AssertionError(f"node {self.node}: {op} failed: {reply}")
        return reply

    def kill(self) -> float:
        """SIGKILL; returns the monotonic time just before the signal."""
        t = time.monotonic()
        self.killed_at = t
        self.proc.send_signal(signal.SIGKILL)
        return t

    async def leave(self, timeout: float = 60) -> float:
        """Exit gracefully (SIGTERM); returns how long the supervisor's exit took."""
        self.proc.send_signal(signal.SIGTERM)
        event = await self.wait_event(lambda e: e.get("event") == "left", timeout)
        return float(event["took"])

    def telemetry(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == "telemetry" and e["name"] == name]


class Nodes:
    """Start node processes; every one is killed at the end of the block, also on failure."""

    def __init__(
        self,
        nursery: trio.Nursery,
        endpoints: Sequence[str],
        prefix: str,
        beats: str | None,
        stderr: Any = None,
    ):
        self.nursery = nursery
        self.endpoints = list(endpoints)
        self.prefix = prefix
        self.beats = beats
        self.stderr = stderr
        self.procs: dict[str, NodeProc] = {}

    async def start(
        self,
        node: str,
        *,
        children: int = 0,
        target: str = "beater",
        ttl: int = 5,
        rebalance: bool = True,
        argv_prefix: Sequence[str] = (),
        endpoints: Sequence[str] | None = None,
        spawn: Callable[[list[str]], Any] | None = None,
    ) -> NodeProc:
        argv = [
            sys.executable,
            "-u",
            NODE,
            f"--endpoints={','.join(endpoints or self.endpoints)}",
            f"--prefix={self.prefix}",
            f"--node={node}",
            f"--ttl={ttl}",
            f"--children={children}",
            f"--target={target}",
        ]
        if self.beats is not None:
            argv.append(f"--beats={self.beats}")
        if not rebalance:
            argv.append("--no-rebalance")
        env = {
            k: v for k, v in os.environ.items() if not k.upper().startswith(("ETCD_", "ETCDCTL_"))
        }
        env["PYTHONUNBUFFERED"] = "1"
        proc = await trio.lowlevel.open_process(
            [*argv_prefix, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
            start_new_session=True,
        )
        node_proc = NodeProc(node, proc)
        self.procs[node] = node_proc
        self.nursery.start_soon(node_proc.read)
        await node_proc.wait_event(lambda e: e.get("event") == "ready", 60)
        return node_proc

    def live(self) -> list[str]:
        return sorted(
            n for n, p in self.procs.items() if p.proc.returncode is None and p.killed_at is None
        )

    async def close(self) -> None:
        for p in self.procs.values():
            if p.proc.returncode is None:
                p.proc.send_signal(signal.SIGKILL)
        with trio.move_on_after(10):
            for p in self.procs.values():
                await p.proc.wait()


@asynccontextmanager
async def node_processes(
    endpoints: Sequence[str], prefix: str, beats: str | None, stderr: Any = None
) -> AsyncIterator[Nodes]:
    """Node processes (``stderr``: where their logs go, default ours)."""
    async with trio.open_nursery() as nursery:
        nodes = Nodes(nursery, endpoints, prefix, beats, stderr)
        try:
            yield nodes
        finally:
            with trio.CancelScope(shield=True):
                await nodes.close()
            nursery.cancel_scope.cancel()
