"""Publishing the demo's state: JSON snapshots every half second, and the live view.

The snapshot is built from public reads only: the supervisor's ``tree()``,
``registry.registrations()``, ``election.leader()`` and
``coord.lock_status()``, plus the tally of events. It goes to the ``--state``
file (atomically, from a worker thread so the Trio loop never waits on the
disk), to an optional extra publisher (etcd mode: a key on the cluster), and
to the live view.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from ._observe import Observations
from ._snapshot import (
    CHAOS_NS,
    ELECTION,
    FORMAT,
    LEDGER_LOCK,
    WATCHED_NAMESPACES,
    jsonable,
    registrations_json,
    write_atomic,
)
from ._view import View
from ._worker import World

__all__ = ["PERIOD", "Reporter"]

#: Seconds between two snapshots (and redraws of the live view).
PERIOD = 0.5


class Reporter:
    """Builds snapshots of one run and publishes them (file, extra publisher, view)."""

    def __init__(
        self,
        world: World,
        obs: Observations,
        view: View | None,
        tree: Callable[[], Mapping[str, Any] | None],
        *,
        publish: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        self.world = world
        self.obs = obs
        self.view = view
        self.tree = tree
        self.publish_extra = publish
        self.last: dict[str, Any] | None = None
        self._scope = trio.CancelScope()

    def registrations(self) -> list[dict[str, Any]]:
        """The demo's registrations now (workers' names, instances, pending pills)."""
        regs = []
        for ns in (*WATCHED_NAMESPACES, CHAOS_NS):
            regs += self.world.registry.registrations(ns)
        return registrations_json(regs)

    async def snapshot(self, *, running: bool) -> dict[str, Any]:
        """The state now, as JSON data (the snapshot ``inspect`` reads; see ``_snapshot``)."""
        world, config = self.world, self.world.config
        leader = await world.coord.election(ELECTION).leader()
        lock = await world.coord.lock_status(LEDGER_LOCK)
        now = trio.current_time()
        regs = self.registrations()
        self.obs.check_stale(regs, world.now())
        return {
            "format": FORMAT,
            "running": running,
            "mode": config.mode,
            "pid": os.getpid(),
            "updated": time.time(),
            "seed": config.seed,
            "workers": config.workers,
            "seconds": config.seconds,
            "elapsed": round(max(0.0, now - world.started), 3),
            "backend": world.registry.backend_name,
            "etcd": (
                {"endpoints": list(config.etcd), "prefix": config.prefix}
                if config.etcd is not None
                else None
            ),
            "tree": jsonable(self.tree()),
            "registrations": regs,
            "leader": (
                {"group": ELECTION, "candidate": leader.candidate, "term": leader.term}
                if leader is not None
                else None
            ),
            "locks": [
                {
                    "name": LEDGER_LOCK,
                    "holder": lock.holder if lock else None,
                    "token": lock.token if lock else None,
                    "held_for": round(now - lock.since, 3) if lock else None,
                }
            ],
            "round": self.obs.last_round(),
            "restarts": dict(sorted(self.obs.restarts.items())),
            "failovers": len(self.obs.failovers()),
            "events": jsonable(list(self.obs.log)[-20:]),
        }

    async def publish(self, snap: dict[str, Any]) -> None:
        """Send ``snap`` to the state file, the extra publisher and the view."""
        self.last = snap
        path = self.world.config.state_path
        if path is not None:
            await trio.to_thread.run_sync(write_atomic, path, snap)
        if self.publish_extra is not None:
            await self.publish_extra(snap)
        if self.view is not None:
            self.view.update(snap)

    def start_in(self, nursery: trio.Nursery) -> None:
        """Publish a snapshot every :data:`PERIOD` seconds in ``nursery`` until :meth:`stop`."""
        nursery.start_soon(self._run, name="demo reporter")

    def stop(self) -> None:
        """Stop publishing (the task ends at its next checkpoint; a file write completes)."""
        self._scope.cancel()

    async def _run(self) -> None:
        with self._scope:
            while True:
                await self.publish(await self.snapshot(running=True))
                await trio.sleep(PERIOD)
