"""pytest-benchmark: supervisor restart latency and dynamic children (docs/performance.rst).

Real clock (these time the scheduler and the supervisor, not virtual time)::

    python -m pytest tests/benchmarks/test_bench_supervision.py --benchmark-enable
    python -m pytest tests/benchmarks/test_bench_supervision.py --benchmark-enable -m benchmark

* ``restart``: one crash -> the child running again, ``RESTARTS`` times per
  round; per restart = reported time / ``RESTARTS``.
* ``dynamic``: start N children of a DynamicSupervisor (each waits for
  ``task_status.started``), then terminate and delete each one
  (``terminate_child`` + ``delete_child``); N = 1,000 (10,000 is ``slow``).
  ``dynamic-shutdown`` starts N and leaves the block (concurrent shutdown).

In the normal test run (``--benchmark-disable``) each body runs once.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from foundation.registry import Registry
from foundation.supervision import ChildSpec, open_dynamic_supervisor, open_supervisor

pytestmark = pytest.mark.benchmark(disable_gc=False, warmup=False)

RESTARTS = 200


class Crashy:
    """A child that crashes when told to; reports each start."""

    def __init__(self) -> None:
        self.crash = trio.Event()
        self.started = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.crash = trio.Event()
        task_status.started()
        self.started.set()
        await self.crash.wait()
        raise RuntimeError("crash")


def _restart_loop(registry: Registry | None) -> None:
    async def main() -> None:
        child = Crashy()
        reg_as = ("bench", "crashy") if registry is not None else None
        spec = ChildSpec("c", child.run, register_as=reg_as)
        async with open_supervisor(
            [spec], max_restarts=RESTARTS * 10, max_seconds=1, registry=registry
        ) as sup:
            for _ in range(RESTARTS):
                child.started = trio.Event()
                child.crash.set()
                await child.started.wait()
            assert sup.which_children()[0].restarts == RESTARTS

    trio.run(main)


@pytest.mark.parametrize("with_registry", [False, True], ids=["plain", "register_as"])
def test_bench_restart_latency(benchmark: Any, with_registry: bool) -> None:
    benchmark.group = "supervisor-restart"
    benchmark.extra_info["restarts_per_round"] = RESTARTS
    registry = Registry("auto") if with_registry else None
    try:
        benchmark(_restart_loop, registry)
    finally:
        if registry is not None:
            registry.close()


async def _child(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    await trio.sleep_forever()


def _dynamic_cycle(n: int, terminate_each: bool) -> None:
    async def main() -> None:
        async with open_dynamic_supervisor(ChildSpec("tpl", _child)) as dsup:
            ids = [await dsup.start_new() for _ in range(n)]
            assert dsup.count_children().active == n
            if terminate_each:
                for cid in ids:
                    await dsup.terminate_child(cid)
                    await dsup.delete_child(cid)
                assert dsup.count_children().specs == 0

    trio.run(main)


SIZES = [
    pytest.param(1_000, id="1e3"),
    pytest.param(10_000, id="1e4", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("n", SIZES)
def test_bench_dynamic_start_stop(benchmark: Any, n: int) -> None:
    benchmark.group = f"dynamic-{n}"
    benchmark.extra_info["children"] = n
    benchmark.pedantic(_dynamic_cycle, args=(n, True), rounds=5, iterations=1)


@pytest.mark.parametrize("n", SIZES)
def test_bench_dynamic_start_then_shutdown(benchmark: Any, n: int) -> None:
    benchmark.group = f"dynamic-{n}"
    benchmark.extra_info["children"] = n
    benchmark.pedantic(_dynamic_cycle, args=(n, False), rounds=5, iterations=1)
