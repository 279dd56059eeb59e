"""One demo worker: registered by name, campaigning, meeting at a barrier, agreeing.

A worker is a supervised child. Each start is a new *instance*
(``worker-2#3``: the third start of worker-2, numbered by a coordinator
counter, so numbers stay unique across restarts and, on etcd, across
processes). Everything an instance holds is scoped to it:

* ``(demo.instances, worker-2#3)`` -- a ``registry.registered()`` block, so
  the entry goes when the instance ends, however it ends;
* ``(demo, worker-2)`` -> ``worker-2#3`` -- the supervisor's ``register_as``
  (owner: the child id), removed by the supervisor when the instance stops
  and registered again for the next one: the name *moves*;
* while leading: the ``demo-ledger`` lock and ``(demo, leader)``, both
  inside the ``campaign()`` block, so a crashed leader releases them and the
  next candidate is elected.

Crashes are real exceptions: the fault injector registers a poison pill
``(demo.chaos, <instance>)``; the instance sees it (``registry.wait_for``),
acknowledges it and raises :class:`InjectedCrash` out of its body, which is
what its supervisor restarts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from .. import errors
from ..cluster import current_fencing_token
from ..coordination import Coordinator
from ..registry import EventKind, Registry
from ._config import DemoConfig, proposal
from ._snapshot import (
    BARRIER,
    CHAOS_NS,
    ELECTION,
    INSTANCES_NS,
    LEADER_NAME,
    LEDGER_LOCK,
    LEDGER_NS,
    NAMES_NS,
    ROUND_NAME,
    ROUNDS_TOPIC,
)

logger = logging.getLogger("foundation.demo")

__all__ = ["InjectedCrash", "Recorder", "World", "one_error", "run_worker", "wait_name_free"]

#: Where a part of the demo reports what happened: one JSON-able event dict.
Recorder = Callable[[dict[str, Any]], None]


class InjectedCrash(Exception):
    """A crash the demo's fault injector ordered; the worker's supervisor restarts it.

    Raised by the worker instance itself, out of its body, when it finds its
    poison pill in the registry. Not a :class:`~foundation.errors.FoundationError`:
    nothing in the library failed.
    """

    #: The worker (child id) that crashed.
    worker: str
    #: The instance that crashed (``worker-2#3``).
    instance: str
    #: The index of the planned fault that hit it.
    fault: int

    def __init__(self, worker: str, instance: str, fault: int) -> None:
        super().__init__(worker, instance, fault)
        self.worker = worker
        self.instance = instance
        self.fault = fault

    def __str__(self) -> str:
        return f"{self.instance} crashed on purpose (fault #{self.fault})"


@dataclass
class World:
    """What every part of one run shares: settings, registry, coordinator, the event sink.

    In local mode there is one; in etcd mode each process has its own, all
    on one etcd registry and coordinator.
    """

    config: DemoConfig
    registry: Registry
    coord: Coordinator
    #: Receives every event (``{"kind": ..., "at": ..., ...}``).
    record: Recorder
    #: The Trio time event times count from (the run's start).
    t0: float = field(default_factory=trio.current_time)
    #: The Trio time the supervision tree was up: the fault plan and
    #: ``config.seconds`` count from here.
    started: float = field(default_factory=trio.current_time)
    #: Called with a pid to kill that OS process (etcd mode's parent), else None.
    kill_process: Callable[[int], Awaitable[bool]] | None = None
    #: The pids whose instances are alive (etcd mode's parent), else None (all are).
    live_pids: Callable[[], set[int]] | None = None

    @property
    def lock_timeout(self) -> float:
        """How long a new leader waits for the ledger lock before it counts as a crash."""
        return 5.0 if self.config.etcd is None else 4.0 * self.config.ttl + 10.0

    @property
    def barrier_timeout(self) -> float:
        """How long a worker waits for the others at the barrier before crashing.

        Generous: a restart (on etcd, a whole process starting again after its
        old leases ran out) must fit in it.
        """
        if self.config.etcd is None:
            return 5.0 + self.config.round_interval
        return 6.0 * self.config.ttl + 15.0

    @property
    def leader_wait(self) -> float:
        """How long a leader fault waits for a live leader (one may be failing over).

        On etcd, a killed leader stays leader until its lease expires.
        """
        return 3.0 if self.config.etcd is None else 2.0 * self.config.ttl + 4.0

    @property
    def name_grace(self) -> float:
        """How long a new instance waits for a dead one's name to vanish.

        Locally the supervisor removes it before the restart; on etcd a killed
        process's entries live until its lease expires (TTL, which etcd may
        raise to its minimum).
        """
        return 2.0 if self.config.etcd is None else 2.0 * self.config.ttl + 8.0

    def now(self) -> float:
        """Seconds since the run's start, on Trio's clock."""
        return trio.current_time() - self.t0

    def event(self, kind: str, **fields: Any) -> None:
        """Record one event, stamped with the run's time."""
        self.record({"kind": kind, "at": round(self.now(), 3), **fields})


@contextmanager
def one_error() -> Iterator[None]:
    """Raise the single non-Cancelled error of a nursery's group as itself.

    Trio wraps every error out of a nursery in an ExceptionGroup; a
    supervisor would then record ``ExceptionGroup(...)`` as the crash. As the
    library's scoped APIs do (``registered()``, ``campaign()``, ``lock()``),
    exactly one error is raised as itself, several stay a group.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = [e for e in _leaves(group) if not isinstance(e, trio.Cancelled)]
        if len(leaves) != 1:
            raise
        error = leaves[0]
        context = error.__context__
        try:
            raise error
        finally:
            error.__context__ = context
            del error


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            yield from _leaves(sub)
    else:
        yield exc


async def wait_name_free(world: World, ns: str, name: str) -> None:
    """Wait (up to ``world.name_grace``) until ``(ns, name)`` is registered by nobody.

    Locally a name is always free by the time its owner restarts; on etcd a
    killed process's names outlive it until its lease expires. If the name
    is still taken after the grace, the caller's ``register`` raises
    ``AlreadyRegistered``, which crashes the instance (and is reported).
    """
    await trio.lowlevel.checkpoint()
    with trio.move_on_after(world.name_grace):
        # Subscribe first, then look: an unregistration in between is not missed.
        async with world.registry.watch(ns) as events:
            if (ns, name) not in world.registry:
                return
            async for ev in events:
                if ev.name == name and ev.kind is EventKind.UNREGISTERED:
                    return


async def run_worker(
    world: World, name: str, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """The target of worker ``name``'s ChildSpec: one instance, until it crashes or stops.

    ``await nursery.start(...)`` (the supervisor's) returns the instance id
    once the instance is registered under ``demo.instances``; the supervisor
    then registers ``(demo, name)`` -> that id.
    """
    incarnation = await world.coord.counter(f"incarnation/{name}").add(1)
    instance = f"{name}#{incarnation}"
    try:
        token: int | None = current_fencing_token()  # a child of the distributed supervisor
    except LookupError:
        token = None
    metadata = {"worker": name, "role": "follower", "incarnation": incarnation, "pid": os.getpid()}
    try:
        await wait_name_free(world, NAMES_NS, name)
        async with world.registry.registered(INSTANCES_NS, instance, name, metadata):
            world.event("start", worker=name, instance=instance, pid=os.getpid(), token=token)
            task_status.started(instance)
            await _serve(world, name, instance, metadata)
    except InjectedCrash as exc:
        world.event("exit", worker=name, instance=instance, injected=True, error=_text(exc))
        raise
    except Exception as exc:
        world.event("exit", worker=name, instance=instance, injected=False, error=_text(exc))
        raise
    except BaseException:
        world.event("exit", worker=name, instance=instance, injected=False, error=None)
        raise


def _text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def _serve(world: World, name: str, instance: str, metadata: Mapping[str, Any]) -> None:
    with one_error():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_rounds, world, name, instance, name=f"{instance} rounds")
            nursery.start_soon(_campaign, world, instance, metadata, name=f"{instance} campaign")
            pill = await world.registry.wait_for(CHAOS_NS, instance)
            await world.registry.unregister(CHAOS_NS, instance)  # acknowledged
            fault = pill.value.get("fault", -1) if isinstance(pill.value, Mapping) else -1
            raise InjectedCrash(name, instance, int(fault))


async def _rounds(world: World, name: str, instance: str) -> None:
    """Meet the others at the barrier, then agree on the round's value; forever.

    The barrier's generation numbers the round, so a restarted instance
    simply joins the round that is gathering.
    """
    barrier = world.coord.barrier(BARRIER, world.config.workers)
    while True:
        generation = await barrier.wait(timeout=world.barrier_timeout)
        mine = proposal(world.config.seed, generation, name)
        learned = await world.coord.agree(f"round-{generation}", mine)
        value = learned.get("value") if isinstance(learned, Mapping) else repr(learned)
        world.event(
            "round",
            round=generation,
            worker=name,
            instance=instance,
            value=value,
            proposer=learned.get("by") if isinstance(learned, Mapping) else None,
        )
        await record_round(world, generation, value, instance)
        await trio.sleep(world.config.round_interval)


async def record_round(world: World, generation: int, value: Any, instance: str) -> bool:
    """Move the round ledger to ``generation``; the one worker that does announces it.

    Every worker learns each round's value and tries to record it: a
    compare-and-set on ``(LEDGER_NS, ROUND_NAME)`` against the entry it saw
    (``update_value(..., expect=seen)``), so two workers never both record a
    round, and none overwrites a later one, without any lock. The loser gets
    the value that won (``ValueMismatch.actual``) and stops once it shows
    the round recorded. The winner publishes the entry on the ledger's
    topic (the demo's monitor subscribes). Returns True if this worker
    recorded the round.
    """
    registry = world.registry
    entry = {"round": generation, "value": value, "by": instance}
    seen = registry.get(LEDGER_NS, ROUND_NAME)
    for _ in range(10):  # each failed attempt means another worker moved it
        if isinstance(seen, Mapping) and seen.get("round", -1) >= generation:
            return False
        try:
            if seen is None:
                await registry.register(LEDGER_NS, ROUND_NAME, entry)
            else:
                await registry.update_value(LEDGER_NS, ROUND_NAME, entry, expect=seen)
        except errors.ValueMismatch as exc:
            seen = exc.actual
            continue
        except errors.AlreadyRegistered as exc:
            seen = getattr(exc.holder, "value", None)
            continue
        except errors.NotRegistered:
            seen = None  # its registrant's lease ended (etcd): start it again
            continue
        try:
            await registry.publish(LEDGER_NS, ROUNDS_TOPIC, entry)
        except errors.EtcdError as exc:
            logger.warning("demo: round %d recorded, not announced: %s", generation, exc)
        return True
    return False


async def _campaign(world: World, instance: str, metadata: Mapping[str, Any]) -> None:
    """Campaign; once elected, hold the ledger lock and the ``leader`` name until the end.

    Leaving the campaign block (this instance crashes or stops) releases the
    lock and the name first, then hands leadership to the next candidate.
    """
    election = world.coord.election(ELECTION)
    async with election.campaign(instance) as term:
        lock = world.coord.lock(LEDGER_LOCK, timeout=world.lock_timeout, holder=instance)
        async with lock as held:
            token = held.fencing_token
            await world.registry.update_metadata(
                INSTANCES_NS,
                instance,
                {**metadata, "role": "leader", "term": term.number, "token": token},
            )
            await wait_name_free(world, NAMES_NS, LEADER_NAME)
            info = {"role": "leader", "term": term.number, "token": token}
            async with world.registry.registered(NAMES_NS, LEADER_NAME, instance, info):
                world.event("elected", instance=instance, term=term.number, token=token)
                await trio.sleep_forever()
