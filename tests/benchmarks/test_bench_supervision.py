"""pytest-benchmark: supervisor restart latency and dynamic children (docs/performance.rst).

Real clock (these time the scheduler and the supervisor, not virtual time)::

    python -m pytest tests/benchmarks/test_bench_supervision.py --benchmark-enable
    python -m pytest tests/benchmarks/test_bench_supervision.py --benchmark-enable -m benchmark

* ``restart``: one crash -> the child running again, ``RESTARTS`` times per
  round; per restart = reported time / ``RESTARTS``. The median and p99 of
  the single restarts (crash to child running, all rounds) are in
  ``extra_info`` (``--benchmark-json``). Each runs with the ``foundation``
  logs ``silenced`` (a NullHandler, no propagation) and with logging at
  Python's ``default`` (no handler configured anywhere: the first crash's
  traceback and the summary of its repeats reach the last-resort handler,
  stderr), side by side in one group.
* ``dynamic``: start N children of a DynamicSupervisor (each waits for
  ``task_status.started``), then terminate and delete each one
  (``terminate_child`` + ``delete_child``); N = 1,000 (10,000 is ``slow``).
  ``dynamic-shutdown`` starts N and leaves the block (concurrent shutdown).

In the normal test run (``--benchmark-disable``) each body runs once.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


def _restart_loop(registry: Registry | None, latencies: list[float]) -> None:
    async def main() -> None:
        child = Crashy()
        reg_as = ("bench", "crashy") if registry is not None else None
        spec = ChildSpec("c", child.run, register_as=reg_as)
        async with open_supervisor(
            [spec], max_restarts=RESTARTS * 10, max_seconds=1, registry=registry
        ) as sup:
            clock = time.perf_counter
            for _ in range(RESTARTS):
                child.started = trio.Event()
                start = clock()
                child.crash.set()
                await child.started.wait()
                latencies.append(clock() - start)
            assert sup.which_children()[0].restarts == RESTARTS

    trio.run(main)


@contextmanager
def logging_as(mode: str) -> Iterator[None]:
    """``silenced``: a NullHandler on ``foundation``; ``default``: Python's defaults.

    Python's defaults: no handler on ``foundation`` or the root logger, root
    at WARNING, so an ERROR record goes to ``logging.lastResort`` (stderr).
    pytest's own capture handlers on the root logger are set aside meanwhile
    (they would format every record, which a plain program does not).
    """
    root, lib = logging.getLogger(), logging.getLogger("foundation")
    saved = (root.handlers[:], root.level, lib.handlers[:], lib.level, lib.propagate)
    if mode == "silenced":
        lib.handlers = [logging.NullHandler()]
        lib.propagate = False
    else:
        root.handlers, lib.handlers = [], []
        root.setLevel(logging.WARNING)
        lib.setLevel(logging.NOTSET)
        lib.propagate = True
    try:
        yield
    finally:
        root.handlers, root.level, lib.handlers, lib.level, lib.propagate = saved


@pytest.mark.parametrize("logs", ["silenced", "default"])
@pytest.mark.parametrize("with_registry", [False, True], ids=["plain", "register_as"])
def test_bench_restart_latency(benchmark: Any, with_registry: bool, logs: str) -> None:
    benchmark.group = "supervisor-restart"
    benchmark.extra_info["restarts_per_round"] = RESTARTS
    registry = Registry("auto") if with_registry else None
    latencies: list[float] = []
    try:
        with logging_as(logs):
            benchmark(_restart_loop, registry, latencies)
    finally:
        if registry is not None:
            registry.close()
    latencies.sort()
    benchmark.extra_info["restart_p50_us"] = round(statistics.median(latencies) * 1e6, 1)
    benchmark.extra_info["restart_p99_us"] = round(
        latencies[round(0.99 * (len(latencies) - 1))] * 1e6, 1
    )


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
