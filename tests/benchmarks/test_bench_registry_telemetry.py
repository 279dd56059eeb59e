"""pytest-benchmark: what registry writes pay for events, telemetry and subscribers.

A batch of 1,000 write cycles (``register_nowait`` + ``unregister_nowait`` of
a fresh key, or one ``update_value_nowait``) per call, on the native and the
python backend, in four settings side by side (``benchmark.group``):

* ``quiet``: nobody listens (the baseline);
* ``other-handler``: a telemetry handler attached to another prefix
  (``foundation.supervisor``): the registry must not pay for it;
* ``registry-handler``: a handler on ``foundation.registry`` (events built
  and emitted: the price of asking for them);
* ``listener``: a backend subscriber that does nothing (what a ``watch()``
  costs the writer, before any Trio hop).

::

    python -m pytest tests/benchmarks/test_bench_registry_telemetry.py --benchmark-enable

In the normal test run (``--benchmark-disable``) each body runs once as a
plain test, and the settings' effects are asserted (events or none).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest

from foundation import telemetry
from foundation.registry import Registry, RegistryEvent

pytestmark = pytest.mark.benchmark(disable_gc=True, warmup=True)

IMPLS = ["native", "python"]
BATCH = 1_000
VALUE = object()  # one shared value: no allocation is timed
SETTINGS = ["quiet", "other-handler", "registry-handler", "listener"]


def cycle(registry: Registry, names: list[str]) -> None:
    reg = registry.register_nowait
    unreg = registry.unregister_nowait
    for name in names:
        reg("bench", name, VALUE)
        unreg("bench", name)


def updates(registry: Registry, names: list[str]) -> None:
    update = registry.update_value_nowait
    for name in names:
        update("bench", "counter", name)


@contextmanager
def setting(registry: Registry, which: str, seen: list[Any]) -> Iterator[None]:
    def handler(event: str, measurements: Mapping[str, float], metadata: Mapping[str, Any]) -> None:
        seen.append(event)

    def listener(event: RegistryEvent) -> None:
        seen.append(event)

    if which == "quiet":
        yield
    elif which == "other-handler":
        with telemetry.attached("bench-other", "foundation.supervisor", handler):
            yield
    elif which == "registry-handler":
        with telemetry.attached("bench-registry", "foundation.registry", handler):
            yield
    else:
        unsubscribe = registry.backend.subscribe(listener)
        try:
            yield
        finally:
            unsubscribe()


@pytest.mark.parametrize("which", SETTINGS)
@pytest.mark.parametrize("impl", IMPLS)
def test_write_cycle(benchmark: Any, require: Callable[[str], None], impl: str, which: str) -> None:
    require(impl)
    registry = Registry(impl, partitions=4)
    names = [f"name-{i}" for i in range(BATCH)]
    seen: list[Any] = []
    benchmark.group = f"write cycle {impl}"
    with setting(registry, which, seen):
        benchmark(cycle, registry, names)
    assert registry.count() == 0
    if which in ("quiet", "other-handler"):
        assert seen == []
    else:
        assert len(seen) >= 2 * BATCH
    registry.close()


@pytest.mark.parametrize("which", SETTINGS)
@pytest.mark.parametrize("impl", IMPLS)
def test_update_value(
    benchmark: Any, require: Callable[[str], None], impl: str, which: str
) -> None:
    require(impl)
    registry = Registry(impl, partitions=4)
    registry.register_nowait("bench", "counter", "start")
    names = [f"value-{i}" for i in range(BATCH)]
    seen: list[Any] = []
    benchmark.group = f"update_value {impl}"
    with setting(registry, which, seen):
        benchmark(updates, registry, names)
    assert registry.lookup("bench", "counter") == names[-1]
    if which in ("quiet", "other-handler"):
        assert seen == []
    else:
        assert len(seen) >= BATCH
    registry.close()
