"""pytest-benchmark: the etcd registry backend against one real member on loopback.

The measured numbers (registrations/s and watch propagation p50/p99, as
``python -m foundation bench --etcd`` reports them) go to ``benchmark.extra_info``
and are printed; nothing here
asserts a speed. The small case runs in the normal suite (once, as a plain
test, to keep the measurement code working); the full one is ``slow``::

    python -m pytest tests/benchmarks/test_bench_etcd.py -m slow --benchmark-enable -s

or, against any cluster: ``python -m foundation bench --etcd http://127.0.0.1:2379``.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import trio

from foundation._cli._bench_etcd import format_etcd_table, run_etcd

pytestmark = pytest.mark.etcd


def _measure(benchmark: Any, endpoints: list[str], **sizes: int) -> dict[str, Any]:
    result: dict[str, Any] = benchmark.pedantic(
        trio.run, (functools.partial(run_etcd, endpoints, **sizes),), rounds=1, iterations=1
    )
    benchmark.extra_info.update(
        {k: v for k, v in result.items() if k.endswith("_per_s") or k == "propagation_ms"}
    )
    print("\n" + format_etcd_table(result))
    return result


def _check(result: dict[str, Any], samples: int) -> None:
    for key in ("serial_per_s", "concurrent_per_s", "register_many_per_s"):
        assert result[key] > 0
    prop = result["propagation_ms"]
    assert prop["samples"] == samples
    assert 0 < prop["p50"] <= prop["p99"] <= prop["max"]


def test_etcd_registrations_and_propagation_small(
    benchmark: Any, etcd_endpoints: list[str]
) -> None:
    benchmark.group = "etcd registry (small)"
    result = _measure(benchmark, etcd_endpoints, count=512, tasks=32, samples=50)
    _check(result, 50)


@pytest.mark.slow
def test_etcd_registrations_and_propagation_full(benchmark: Any, etcd_endpoints: list[str]) -> None:
    benchmark.group = "etcd registry"
    result = _measure(benchmark, etcd_endpoints, count=5000, tasks=128, samples=500)
    _check(result, 500)
