"""The fault injector: crashes workers (and, on etcd, kills a process) on a seeded plan.

It is a supervised child like the workers. At each planned time it picks a
victim from what it can see (the leader via ``election.leader()``, the other
workers via the registry) and orders the crash through the registry itself:
it registers a poison pill ``(demo.chaos, <instance>)`` that the instance is
waiting for. So local and etcd mode crash workers the same way, and the
order is visible to ``inspect`` while it is in flight. In etcd mode a
``process`` fault kills (SIGKILL) the OS process hosting the leader; its
leases then expire and etcd elects a candidate of another process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import trio

from ..registry import Registration
from ._config import Fault
from ._observe import worker_of
from ._snapshot import CHAOS_NS, ELECTION, INSTANCES_NS, LEADER_NAME, NAMES_NS
from ._worker import World

__all__ = ["run_chaos"]


async def run_chaos(
    world: World,
    plan: Sequence[Fault],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Apply ``plan`` (times count from ``world.started``), then idle until stopped.

    Pills it registered and nobody took (the victim died otherwise) are
    owned by this task and removed when it stops.
    """
    owner = ("demo.chaos", os.getpid())
    task_status.started()
    try:
        for fault in plan:
            await trio.sleep_until(world.started + fault.at)
            await _apply(world, fault, owner)
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await world.registry.unregister_owner(owner)


async def _apply(world: World, fault: Fault, owner: tuple[str, int]) -> None:
    victim = await _victim(world, fault)
    if victim is None:
        world.event("fault", index=fault.index, target=fault.kind, victim=None)
        return
    if fault.kind == "process":
        pid = _pid_of(world, victim)
        killed = False
        mono = time.monotonic()  # the machine's one clock: the worker processes stamp theirs
        if world.kill_process is not None and pid is not None:
            killed = await world.kill_process(pid)
        world.event(
            "fault",
            index=fault.index,
            target="process",
            victim=victim,
            pid=pid,
            killed=killed,
            mono=mono,
        )
        return
    await world.registry.register(
        CHAOS_NS, victim, {"fault": fault.index, "kind": fault.kind}, owner=owner
    )
    world.event("fault", index=fault.index, target=fault.kind, victim=victim)


def _pid_of(world: World, instance: str) -> int | None:
    try:
        reg = world.registry.lookup_with_metadata(INSTANCES_NS, instance)
    except LookupError:
        return None
    pid = reg.metadata.get("pid")
    return pid if isinstance(pid, int) else None


def _alive(world: World, instance: str) -> bool:
    """Registered, not already ordered to crash, and (etcd) in a process that still runs."""
    if (INSTANCES_NS, instance) not in world.registry or (CHAOS_NS, instance) in world.registry:
        return False
    if world.live_pids is None:
        return True
    return _pid_of(world, instance) in world.live_pids()


async def _leader(world: World) -> str | None:
    """The current leader's instance, waiting a little for a live one."""
    election = world.coord.election(ELECTION)
    with trio.move_on_after(world.leader_wait):
        while True:
            leader = await election.leader()
            if leader is not None and _alive(world, leader.candidate):
                return leader.candidate
            await trio.sleep(0.05)
    return None


async def _victim(world: World, fault: Fault) -> str | None:
    if fault.kind in ("leader", "process"):
        return await _leader(world)
    current = await world.coord.election(ELECTION).leader()
    leader = current.candidate if current is not None else None
    regs: list[Registration] = world.registry.registrations(NAMES_NS)
    others = sorted(
        (r.value for r in regs if r.name != LEADER_NAME and isinstance(r.value, str)),
        key=lambda inst: (worker_of(inst) or "", inst),
    )
    others = [i for i in others if i != leader and _alive(world, i)]
    if not others:
        return None
    return others[fault.pick % len(others)]
