"""The local demo: one process, the embedded registry and a LocalCoordinator.

The supervision tree::

    demo (one_for_one)
    ├── workers (one_for_one)      nested supervisor, registry=the registry
    │   ├── worker-1               register_as=("demo", "worker-1")
    │   └── ...
    └── chaos                      started once the workers are up (transient)

Beside it, outside the tree: a registry watch, an election observer and the
reporter (snapshots and the live view), all in one nursery whose scope ends
the run.
"""

from __future__ import annotations

from typing import Any

import trio

from .. import telemetry
from ..coordination import open_local_coordinator
from ..registry import open_registry
from ..supervision import ChildSpec, Restart, Supervisor, open_supervisor, supervisor_spec
from ._chaos import run_chaos
from ._config import DemoConfig, plan_faults, worker_names
from ._monitor import observe_leader, supervisor_handler, watch_names, watch_rounds
from ._observe import DemoSummary, Observations
from ._report import Reporter
from ._snapshot import (
    NAMES_NS,
    WATCHED_NAMESPACES,
    registrations_json,
    settled_tree,
    tree_json,
)
from ._view import View
from ._worker import World, one_error, run_worker

__all__ = ["ROOT", "WORKERS", "run_local", "worker_specs"]

#: Names of the demo's two supervisors (shown in the tree, filtered in telemetry).
ROOT = "demo"
WORKERS = "workers"


def worker_specs(world: World, names: list[str]) -> list[ChildSpec]:
    """One permanent child per worker name, registered under ``demo/<name>``."""
    return [
        ChildSpec(
            id=name,
            target=run_worker,
            args=(world, name),
            restart=Restart.PERMANENT,
            shutdown=5.0,
            register_as=(NAMES_NS, name),
        )
        for name in names
    ]


async def run_local(config: DemoConfig, view: View | None = None) -> DemoSummary:
    """Run the scenario in this process; see :func:`foundation.demo.run_demo`."""
    plan = plan_faults(config.seconds, config.seed)
    obs = Observations(config, plan)
    if view is not None:
        obs.listeners.append(view.on_event)
    async with (
        open_registry(backend=config.backend) as registry,
        open_local_coordinator("demo-coordination") as coord,
    ):
        world = World(config, registry, coord, obs.apply)
        root: Supervisor | None = None
        final_tree: dict[str, Any] | None = None

        def tree() -> dict[str, Any] | None:
            return tree_json(root.tree()) if root is not None else None

        reporter = Reporter(world, obs, view, tree)
        handler = supervisor_handler(world, {ROOT, WORKERS})
        attached = telemetry.attached(
            f"foundation.demo.{id(world):x}", "foundation.supervisor", handler
        )
        with attached, one_error():
            async with trio.open_nursery() as nursery:
                await nursery.start(watch_names, world)
                await nursery.start(observe_leader, world)
                await nursery.start(watch_rounds, world)
                workers = supervisor_spec(
                    WORKERS,
                    worker_specs(world, worker_names(config.workers)),
                    max_restarts=len(plan) + 3,
                    max_seconds=5,
                    registry=registry,
                    name=WORKERS,
                )
                async with open_supervisor([workers], name=ROOT, registry=registry) as sup:
                    root = sup
                    # The plan and the run's length count from the tree being up.
                    world.started = trio.current_time()
                    chaos = ChildSpec(
                        id="chaos", target=run_chaos, args=(world, plan), restart=Restart.TRANSIENT
                    )
                    await sup.start_child(chaos)
                    reporter.start_in(nursery)
                    await trio.sleep_until(world.started + config.seconds)
                    reporter.stop()
                    before = tree()
                    world.event("stopping", seconds=config.seconds)
                # The tree as it ended: every child stopped (or crashed).
                final_tree = settled_tree(before, sup.tree())
                # Every worker has stopped: nothing of theirs may remain.
                leftovers = registrations_json(
                    r for ns in WATCHED_NAMESPACES for r in registry.registrations(ns)
                )
                elapsed = world.now()
                nursery.cancel_scope.cancel()
        summary = obs.summary(
            backend=registry.backend_name,
            elapsed=elapsed,
            leftovers=leftovers,
            state_path=config.state_path,
            extra={"tree": final_tree},
        )
        snap = await reporter.snapshot(running=False)
        snap["tree"] = final_tree
        snap["summary"] = summary.to_json()
        await reporter.publish(snap)
    return summary
