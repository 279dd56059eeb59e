"""The etcd demo: the same scenario across OS processes sharing one etcd cluster.

The workers are the children of a distributed supervisor (``foundation.cluster``)
whose nodes are the worker processes; the parent supervises those processes
like any other children::

    demo (one_for_one)                       the parent (python -m foundation demo --etcd URL)
    ├── proc-1      python -m foundation demo --role worker ...   node proc-1 of the cluster
    ├── proc-2      python -m foundation demo --role worker ...   node proc-2
    └── chaos       crashes a worker, the leader, and kills the leader's process

Every worker process opens the same etcd registry (``<prefix>registry/``),
coordinator (``<prefix>coord/``) and distributed supervisor ``workers``
with the workers as static children: each worker runs on the process that
owns it by rendezvous hashing, at most once at any moment. When the
leader's process is killed (SIGKILL), its workers run again on the other
process once etcd expires its leases (within the TTL), and the parent
restarts the process, which takes its workers back one at a time. A worker
crash is restarted where it happened, by the worker's own supervisor.

A worker process reports its events as JSON lines on its stdout, each
stamped with ``time.monotonic()`` (one clock for the whole machine), so the
parent can check that no worker ever ran twice at once and that the killed
process's workers ran again within T + 2 s (T: the TTL as etcd granted it).
The parent adds the events to its own tally, grafts each process's part of
the tree under its node, and publishes the whole state to the ``--state``
file and to the key ``<prefix>state``. A worker process stops cleanly on
SIGTERM (the supervisor's cancellation; its workers are handed over first)
and also when its stdin reaches end of file, so it never outlives a parent
that was killed.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any, TextIO

import trio

from .. import telemetry
from ..cluster import open_distributed_supervisor
from ..coordination import open_etcd_coordinator
from ..errors import ConfigError
from ..etcd import EtcdClient, compare_create, op_put
from ..registry import Registry, open_registry
from ..supervision import ChildSpec, Restart, Supervisor, open_supervisor
from ._chaos import run_chaos
from ._config import DemoConfig, plan_faults, worker_names
from ._local import ROOT
from ._monitor import (
    cluster_handler,
    observe_leader,
    supervisor_handler,
    watch_names,
    watch_rounds,
)
from ._observe import DemoSummary, Observations
from ._report import PERIOD, Reporter
from ._snapshot import NAMES_NS, WATCHED_NAMESPACES, registrations_json, settled_tree, tree_json
from ._view import View
from ._worker import World, one_error, run_worker

__all__ = [
    "CLUSTER",
    "STOP_TIMEOUT",
    "WorkerProcessExited",
    "cluster_worker",
    "run_cluster",
    "run_worker_process",
]

logger = logging.getLogger("foundation.demo")

#: Seconds a worker process gets to stop after SIGTERM before it is killed
#: (it hands its workers over first, which takes up to the TTL).
STOP_TIMEOUT = 15.0

#: The name of the distributed supervisor the worker processes share.
CLUSTER = "workers"


class WorkerProcessExited(Exception):
    """A demo worker process ended although nobody asked it to; its supervisor restarts it."""

    #: The child id of the process (``proc-2``).
    proc: str
    #: Its OS process id.
    pid: int
    #: Its exit status (negative: killed by that signal).
    returncode: int | None

    def __init__(self, proc: str, pid: int, returncode: int | None) -> None:
        super().__init__(proc, pid, returncode)
        self.proc = proc
        self.pid = pid
        self.returncode = returncode

    def __str__(self) -> str:
        how = (
            f"was killed by signal {-self.returncode}"
            if self.returncode is not None and self.returncode < 0
            else f"exited with status {self.returncode}"
        )
        return (
            f"worker process {self.proc} (pid {self.pid}) {how}; see its messages on stderr"
            " or in the log file"
        )


class _Processes:
    """The worker processes now running, for the fault injector."""

    def __init__(self) -> None:
        self.by_pid: dict[int, trio.Process] = {}
        self.killed: set[int] = set()

    def live_pids(self) -> set[int]:
        return {pid for pid, p in self.by_pid.items() if p.returncode is None}

    async def kill(self, pid: int) -> bool:
        await trio.lowlevel.checkpoint()
        proc = self.by_pid.get(pid)
        if proc is None or proc.returncode is not None:
            return False
        self.killed.add(pid)
        proc.kill()
        return True


async def _stop_process(proc: trio.Process) -> None:
    """SIGTERM (a worker process then stops its tree and revokes its leases), then SIGKILL."""
    proc.terminate()
    with trio.move_on_after(STOP_TIMEOUT):
        await proc.wait()
        return
    logger.warning("demo: pid %d ignored SIGTERM for %g s; killing it", proc.pid, STOP_TIMEOUT)
    proc.kill()


def _worker_command(config: DemoConfig, proc_id: str) -> list[str]:
    assert config.etcd is not None
    cmd = [
        sys.executable,
        "-m",
        "foundation",
        "demo",
        "--role=worker",
        f"--proc={proc_id}",
        f"--etcd={','.join(config.etcd)}",
        f"--prefix={config.prefix}",
        f"--ttl={config.ttl}",
        f"--workers={config.workers}",
        f"--seed={config.seed}",
        f"--seconds={config.seconds}",
        f"--round-interval={config.round_interval}",
    ]
    if config.log_file:
        cmd.append(f"--log-file={config.log_file}")
    return cmd


async def _lines(stream: trio.abc.ReceiveStream) -> Any:
    """Yield the lines of ``stream`` (bytes, without the newline) until end of file."""
    buffer = b""
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            if buffer:
                yield buffer
            return
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line


async def _supervise_process(
    world: World,
    procs: _Processes,
    proc_id: str,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The target of ``proc-N``: one worker process, until it exits or is stopped.

    Started once the process says it is ready (its workers are up); returns
    its pid to the supervisor. If the process ends by itself (crash, killed)
    this raises :class:`WorkerProcessExited`, which the supervisor restarts.
    """
    command = _worker_command(world.config, proc_id)
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            functools.partial(
                trio.run_process,
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                check=False,
                deliver_cancel=_stop_process,
            )
        )
        procs.by_pid[proc.pid] = proc
        world.event("process", event="started", proc=proc_id, pid=proc.pid)
        assert proc.stdout is not None
        # Shielded: while the supervisor stops this child (run_process sends
        # SIGTERM), the process's last events (its workers stopping) still
        # arrive. The loop ends at end of file, i.e. when the process is gone,
        # which _stop_process makes sure of.
        with trio.CancelScope(shield=True):
            async for line in _lines(proc.stdout):
                try:
                    ev = json.loads(line)
                except ValueError:
                    logger.warning("demo: %s printed a non-JSON line: %r", proc_id, line[:200])
                    continue
                if not isinstance(ev, dict):
                    continue
                if ev.get("kind") == "ready":
                    world.event("node", proc=proc_id, pid=proc.pid, ttl=ev.get("ttl"))
                    task_status.started(proc.pid)
                    continue
                ev["at"] = round(world.now(), 3)  # the parent's clock, for one timeline
                ev.setdefault("proc", proc_id)
                world.record(ev)
    returncode = proc.returncode
    injected = proc.pid in procs.killed
    world.event(
        "process",
        event="exited",
        proc=proc_id,
        pid=proc.pid,
        returncode=returncode,
        injected=injected,
        mono=time.monotonic(),
    )
    raise WorkerProcessExited(proc_id, proc.pid, returncode)


async def _claim_prefix(client: EtcdClient, config: DemoConfig, lease_id: int) -> None:
    """Mark the prefix as in use (bound to our lease) and wipe the last run's coordination keys.

    Raises:
        ConfigError: another demo runs on this prefix now.
    """
    info = json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "started": time.time()})
    result = await client.txn(
        [compare_create(config.running_key, "==", 0)],
        [op_put(config.running_key, info, lease=lease_id)],
    )
    if not result.succeeded:
        kv = await client.get(config.running_key)
        who = kv.value.decode(errors="replace") if kv is not None else "?"
        raise ConfigError(
            f"a demo is already running on etcd prefix {config.prefix!r} ({who}); wait for"
            " it to finish, or pass another --prefix"
        )
    # Agreement, barrier and counter keys of an earlier run would be taken for
    # this run's (agree() keeps the first value for ever).
    await client.delete(config.coordinator_prefix, prefix=True)


async def _wait_gone(registry: Registry, within: float) -> list[dict[str, Any]]:
    """The workers' registrations still there after up to ``within`` seconds.

    Worker processes that stopped cleanly revoked their leases; a killed
    one's entries last until its lease expires, which is what this waits for.
    """
    with trio.move_on_after(within):
        while True:
            await registry.sync()
            if not any(registry.count(ns) for ns in WATCHED_NAMESPACES):
                break
            await trio.sleep(0.2)
    return registrations_json(r for ns in WATCHED_NAMESPACES for r in registry.registrations(ns))


async def run_cluster(config: DemoConfig, view: View | None = None) -> DemoSummary:
    """Run the scenario across ``config.processes`` worker processes on etcd."""
    assert config.etcd is not None
    endpoints = list(config.etcd)
    plan = plan_faults(config.seconds, config.seed, processes=True)
    obs = Observations(config, plan)
    if view is not None:
        obs.listeners.append(view.on_event)
    procs = _Processes()
    async with (
        open_etcd_coordinator(endpoints, prefix=config.coordinator_prefix, ttl=config.ttl) as coord,
        open_registry(
            backend="etcd", endpoints=endpoints, prefix=config.registry_prefix, ttl=config.ttl
        ) as registry,
    ):
        client = coord.client
        async with client.lease(config.ttl) as lease:
            await _claim_prefix(client, config, lease.id)
            world = World(
                config,
                registry,
                coord,
                obs.apply,
                kill_process=procs.kill,
                live_pids=procs.live_pids,
            )
            root: Supervisor | None = None
            final_tree: dict[str, Any] | None = None

            def tree() -> dict[str, Any] | None:
                return tree_json(root.tree(), obs.trees) if root is not None else None

            async def publish(snap: dict[str, Any]) -> None:
                await client.put(config.state_key, json.dumps(snap))

            reporter = Reporter(world, obs, view, tree, publish=publish)
            specs = [
                ChildSpec(
                    id=f"proc-{k + 1}",
                    target=_supervise_process,
                    args=(world, procs, f"proc-{k + 1}"),
                    restart=Restart.PERMANENT,
                    shutdown=STOP_TIMEOUT + 5,
                )
                for k in range(config.processes)
            ]
            handler = supervisor_handler(world, {ROOT})
            attached = telemetry.attached(
                f"foundation.demo.{id(world):x}", "foundation.supervisor", handler
            )
            with attached, one_error():
                async with trio.open_nursery() as nursery:
                    await nursery.start(watch_names, world)
                    await nursery.start(observe_leader, world)
                    await nursery.start(watch_rounds, world)
                    async with open_supervisor(
                        specs, name=ROOT, max_restarts=len(plan) + 3, max_seconds=10
                    ) as sup:
                        root = sup
                        world.started = trio.current_time()
                        chaos = ChildSpec(
                            id="chaos",
                            target=run_chaos,
                            args=(world, plan),
                            restart=Restart.TRANSIENT,
                        )
                        await sup.start_child(chaos)
                        reporter.start_in(nursery)
                        await trio.sleep_until(world.started + config.seconds)
                        # The summary checks that a killed process's workers ran
                        # again within T + 2 s: leave that long after the kill.
                        await trio.sleep_until(obs.kill_window_end(world.t0))
                        reporter.stop()
                        before = tree()
                        world.event("stopping", seconds=config.seconds)
                    # The tree as it ended: every child stopped (or crashed).
                    final_tree = settled_tree(before, sup.tree())
                    leftovers = await _wait_gone(registry, world.name_grace)
                    elapsed = world.now()
                    nursery.cancel_scope.cancel()
            summary = obs.summary(
                backend=registry.backend_name,
                elapsed=elapsed,
                leftovers=leftovers,
                state_path=config.state_path,
                extra={"tree": final_tree, "processes": config.processes, "prefix": config.prefix},
            )
            snap = await reporter.snapshot(running=False)
            snap["tree"] = final_tree
            snap["summary"] = summary.to_json()
            await reporter.publish(snap)
        # The run is over: its coordination keys (agreed values, counters) go too.
        with trio.CancelScope(shield=True):
            await client.delete(config.coordinator_prefix, prefix=True)
    return summary


# ---------------------------------------------------------------------------
# The worker process (python -m foundation demo --role worker ...)
# ---------------------------------------------------------------------------
class _JsonLines:
    """Events to the parent: one JSON object per line on stdout, flushed at once.

    Each is stamped with ``mono`` (``time.monotonic()``), the machine's one
    clock, so the parent can compare times of several processes.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, event: dict[str, Any]) -> None:
        event.setdefault("mono", time.monotonic())
        self.stream.write(json.dumps(event, default=repr) + "\n")
        self.stream.flush()


# The World of this worker process: the distributed children find it here
# (a child spec carries only JSON, so the world cannot travel in its args).
_world: World | None = None


async def cluster_worker(
    name: str, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """The target of a worker of the distributed supervisor: :func:`run_worker` here.

    Named ``"foundation.demo._cluster:cluster_worker"`` in the spec, so every
    process can start it.
    """
    if _world is None:
        raise RuntimeError("cluster_worker runs only in a demo worker process")
    await run_worker(_world, name, task_status=task_status)


def cluster_specs(config: DemoConfig) -> list[ChildSpec]:
    """The workers as children of the distributed supervisor (JSON, the target by name)."""
    return [
        ChildSpec(
            id=name,
            target=f"{__name__}:cluster_worker",
            args=(name,),
            restart=Restart.PERMANENT,
            shutdown=5.0,
            register_as=(NAMES_NS, name),
        )
        for name in worker_names(config.workers)
    ]


async def _until_stdin_closes(scope: trio.CancelScope) -> None:
    """End the process's run when the parent goes away (its end of our stdin closes)."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stream:
        while await stream.receive_some(4096):
            pass
    scope.cancel()


async def _until_sigterm(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def run_worker_process(config: DemoConfig, proc_id: str) -> None:
    """Run node ``proc_id`` of an etcd demo's workers, until SIGTERM or stdin EOF.

    Prints ``{"kind": "ready", "ttl": T}`` once this node has joined the
    distributed supervisor, then its events and (every half second) its part
    of the tree, as JSON lines on stdout. Leaving hands its workers over.
    """
    global _world
    assert config.etcd is not None
    out = _JsonLines(sys.stdout)
    async with (
        open_etcd_coordinator(
            list(config.etcd), prefix=config.coordinator_prefix, ttl=config.ttl
        ) as coord,
        open_registry(
            backend="etcd",
            endpoints=list(config.etcd),
            prefix=config.registry_prefix,
            ttl=config.ttl,
        ) as registry,
    ):
        world = World(config, registry, coord, out)
        _world = world
        names = {f"{CLUSTER}/{name}" for name in worker_names(config.workers)}
        with (
            telemetry.attached(
                f"foundation.demo.{proc_id}",
                "foundation.supervisor",
                supervisor_handler(world, names),
            ),
            telemetry.attached(
                f"foundation.demo.{proc_id}.cluster", "foundation.cluster", cluster_handler(world)
            ),
            one_error(),
        ):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_until_stdin_closes, nursery.cancel_scope)
                nursery.start_soon(_until_sigterm, nursery.cancel_scope)
                async with open_distributed_supervisor(
                    CLUSTER,
                    registry=registry,
                    coordinator=coord,
                    node=proc_id,
                    children=cluster_specs(config),
                    max_restarts=10,
                    max_seconds=10,
                ) as sup:
                    out({"kind": "ready", "pid": os.getpid(), "ttl": sup.ttl})
                    while True:
                        out({"kind": "tree", "proc": proc_id, "tree": tree_json(sup.tree())})
                        await trio.sleep(PERIOD)
