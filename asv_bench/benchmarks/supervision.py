"""Supervisor restart latency and dynamic children (``docs/performance.rst``).

Real clock and real Trio runs, as ``tests/benchmarks/test_bench_supervision.py``:

* ``RestartLatency``: a one_for_one supervisor whose child crashes when told
  to; ``RESTARTS`` times: crash it, wait until it runs again. With
  ``register_as`` the restart also unregisters and re-registers its name.
* ``DynamicChildren``: start n children of a dynamic supervisor (each reports
  ``task_status.started``), then stop them: one by one (``terminate_child`` +
  ``delete_child``), or all at once by leaving the block.

Every crash is logged at ERROR with its traceback; the ``foundation`` logger
gets a ``NullHandler`` (and stops propagating) while these run, so the log
call is measured but not the formatting of ``RESTARTS`` tracebacks to stderr.
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

import trio

from foundation.registry import Registry
from foundation.supervision import ChildSpec, open_dynamic_supervisor, open_supervisor

#: Crash/restart cycles per measurement.
RESTARTS = 200


class _QuietLogs:
    """Route ``foundation`` logs to a NullHandler between setup and teardown."""

    def setup(self, *params: Any) -> None:
        self._logger = logging.getLogger("foundation")
        self._handler = logging.NullHandler()
        self._propagate = self._logger.propagate
        self._logger.addHandler(self._handler)
        self._logger.propagate = False

    def teardown(self, *params: Any) -> None:
        self._logger.removeHandler(self._handler)
        self._logger.propagate = self._propagate


class _Crashy:
    """A child that crashes when told to; ``started`` is set on each start."""

    def __init__(self) -> None:
        self.crash = trio.Event()
        self.started = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.crash = trio.Event()
        task_status.started()
        self.started.set()
        await self.crash.wait()
        raise RuntimeError("crash")


class RestartLatency(_QuietLogs):
    """Crash to child running again, one_for_one, ``RESTARTS`` times per call.

    ``time_restarts`` is one ``trio.run`` (supervisor start and stop
    included; per restart ~ time / ``RESTARTS``); the ``track_*`` are
    percentiles of the per-restart times alone.
    """

    params = (["plain", "register_as"],)
    param_names = ("mode",)

    def setup(self, mode: str) -> None:
        super().setup(mode)
        self.registry = Registry() if mode == "register_as" else None

    def teardown(self, mode: str) -> None:
        if self.registry is not None:
            self.registry.close()
        super().teardown(mode)

    def _restarts(self) -> list[float]:
        registry = self.registry
        latencies: list[float] = []

        async def main() -> None:
            child = _Crashy()
            spec = ChildSpec(
                "crashy",
                child.run,
                register_as=("bench", "crashy") if registry is not None else None,
            )
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
                restarts = sup.which_children()[0].restarts
                if restarts != RESTARTS:
                    raise AssertionError(f"{restarts} restarts, expected {RESTARTS}")

        trio.run(main)
        return latencies

    def time_restarts(self, mode: str) -> None:
        self._restarts()

    def track_restart_p50_us(self, mode: str) -> float:
        return statistics.median(self._restarts()) * 1e6

    track_restart_p50_us.unit = "us"  # type: ignore[attr-defined]

    def track_restart_p99_us(self, mode: str) -> float:
        samples = sorted(self._restarts())
        return samples[round(0.99 * (len(samples) - 1))] * 1e6

    track_restart_p99_us.unit = "us"  # type: ignore[attr-defined]


async def _child(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    await trio.sleep_forever()


class DynamicChildren(_QuietLogs):
    """Start n dynamic children, then stop them (a supervisor is to handle 10,000).

    One ``trio.run`` per call; per child ~ time / n.
    """

    params = ([1_000, 10_000],)
    param_names = ("n",)
    timeout = 180.0

    def _cycle(self, n: int, stop_each: bool) -> None:
        async def main() -> None:
            async with open_dynamic_supervisor(ChildSpec("tpl", _child)) as dsup:
                ids = [await dsup.start_new() for _ in range(n)]
                if dsup.count_children().active != n:
                    raise AssertionError("not every child is running")
                if stop_each:
                    for cid in ids:
                        await dsup.terminate_child(cid)
                        await dsup.delete_child(cid)
                    if dsup.count_children().specs != 0:
                        raise AssertionError("children left after deleting them all")

        trio.run(main)

    def time_start_then_stop_each(self, n: int) -> None:
        """``start_new`` n times, then ``terminate_child`` + ``delete_child`` each."""
        self._cycle(n, stop_each=True)

    def time_start_then_shutdown(self, n: int) -> None:
        """``start_new`` n times, then leave the block (the supervisor stops them all)."""
        self._cycle(n, stop_each=False)
