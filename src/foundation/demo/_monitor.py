"""The demo's eyes: a registry watch, an election observer and a telemetry handler.

They only read (the public ``watch()``, ``election.observe()`` and
:mod:`foundation.telemetry`), so what the summary claims is seen from the
outside, the way an operator would see it, not reported by the workers
about themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import trio

from .. import telemetry
from ..errors import WatchOverflow
from ..registry import EventKind
from ._snapshot import ELECTION, LEDGER_NS, NAMES_NS, ROUNDS_TOPIC
from ._worker import World

__all__ = [
    "cluster_handler",
    "observe_leader",
    "supervisor_handler",
    "watch_names",
    "watch_rounds",
]

logger = logging.getLogger("foundation.demo")


async def watch_names(
    world: World, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Report every registration under ``demo`` as a ``name`` event (old -> new holder).

    Started with ``nursery.start``: returns once the watch is subscribed, so
    no registration made afterwards is missed. A watch that overflows is
    opened again from the current entries (nothing else to do: the view only
    needs the latest holder of each name).
    """
    last: dict[Any, Any] = {}
    started = False
    while True:
        try:
            async with world.registry.watch(NAMES_NS, initial=True) as events:
                if not started:
                    started = True
                    task_status.started()
                async for ev in events:
                    if ev.kind is EventKind.REGISTERED and last.get(ev.name) != ev.value:
                        world.event("name", name=ev.name, old=last.get(ev.name), new=ev.value)
                        last[ev.name] = ev.value
                return  # the registry closed
        except WatchOverflow:
            logger.warning("demo: the name watch fell behind; reading the names again")


async def watch_rounds(
    world: World, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Report each round the ledger records, as announced on its pub/sub topic.

    One ``recorded`` event per message (``round``, ``value``, ``by``: the
    worker that won the ledger's compare-and-set). Started with
    ``nursery.start``: subscribed before it returns. A message this
    subscriber could not buffer in time is dropped for it alone (the
    publisher never waits); the rounds themselves are counted from the
    workers' own ``round`` events.
    """
    async with world.registry.subscribe(LEDGER_NS, ROUNDS_TOPIC, max_buffer=1000) as messages:
        task_status.started()
        async for entry in messages:
            if isinstance(entry, Mapping):
                world.event(
                    "recorded",
                    round=entry.get("round"),
                    value=entry.get("value"),
                    by=entry.get("by"),
                )


async def observe_leader(
    world: World, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Report the leader of the demo's election, and each change, as ``leader`` events."""
    election = world.coord.election(ELECTION)
    task_status.started()
    async for leader in election.observe():
        if leader is None:
            world.event("leader", candidate=None, term=None)
        else:
            world.event("leader", candidate=leader.candidate, term=leader.term)


def supervisor_handler(world: World, supervisors: set[str]) -> telemetry.Handler:
    """A telemetry handler turning the named supervisors' restarts into events.

    Restarts are counted from ``foundation.supervisor.child.restart`` (whose
    ``restarts`` measurement is the child's new count), escalations from
    ``foundation.supervisor.escalate``; other supervisors in the process
    (tests running beside the demo) are ignored.
    """

    def handle(event: str, measurements: Mapping[str, float], metadata: Mapping[str, Any]) -> None:
        supervisor = metadata.get("supervisor")
        if supervisor not in supervisors:
            return
        if event == "foundation.supervisor.child.restart":
            world.event(
                "restart",
                supervisor=supervisor,
                child=str(metadata.get("child_id")),
                restarts=int(measurements.get("restarts", 0)),
            )
        elif event == "foundation.supervisor.escalate":
            error = metadata.get("error")
            world.event(
                "escalate",
                supervisor=supervisor,
                child=str(metadata.get("child_id")),
                error=f"{type(error).__name__}: {error}" if error is not None else None,
            )

    return handle


def cluster_handler(world: World) -> telemetry.Handler:
    """A telemetry handler turning the distributed supervisor's events into ``cluster`` events.

    ``foundation.cluster.child.{start,stop,move,failed,overrun}`` and
    ``foundation.cluster.node.{join,leave,fenced}`` become ``{"kind":
    "cluster", "event": "child.start", "worker": ..., "node": ...}``.
    """

    def handle(event: str, measurements: Mapping[str, float], metadata: Mapping[str, Any]) -> None:
        short = event.removeprefix("foundation.cluster.")
        reason = metadata.get("reason")
        error = metadata.get("error")
        world.event(
            "cluster",
            event=short,
            worker=metadata.get("child_id"),
            node=metadata.get("node"),
            reason=str(reason) if reason is not None else None,
            error=f"{type(error).__name__}: {error}" if error is not None else None,
            token=measurements.get("token"),
        )

    return handle
