"""The etcd measurements of ``python -m foundation bench --etcd URL``.

Two numbers, on one member over loopback:

* registrations per second from one client: serial ``await register()``,
  many concurrent ``register()`` tasks (which the backend coalesces into
  batched txns), and ``register_many``;
* watch propagation latency between two registries (two clients): the time
  from just before ``await a.register(...)`` until ``b``'s ``watch()`` yields
  the event, as p50 and p99 over many samples.

Each run uses a fresh key prefix and removes what it wrote. These are
measurements, never assertions: the numbers go to a table or JSON.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Sequence
from typing import Any

import trio

__all__ = ["format_etcd_table", "run_etcd"]


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def _percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def _serial(registry: Any, ns: str, count: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        await registry.register(ns, f"s{i}", i)
    return _rate(count, time.perf_counter() - start)


async def _concurrent(registry: Any, ns: str, count: int, tasks: int) -> float:
    per_task = count // tasks

    async def worker(t: int) -> None:
        for i in range(per_task):
            await registry.register(ns, f"c{t}.{i}", i)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for t in range(tasks):
            nursery.start_soon(worker, t)
    return _rate(per_task * tasks, time.perf_counter() - start)


async def _many(registry: Any, ns: str, count: int) -> float:
    items = [(ns, f"m{i}", i) for i in range(count)]
    start = time.perf_counter()
    results = await registry.register_many(items)
    elapsed = time.perf_counter() - start
    failed = [r for r in results if isinstance(r, Exception)]
    if failed:
        raise RuntimeError(f"register_many failed for {len(failed)} items: {failed[0]!r}")
    return _rate(count, elapsed)


async def _propagation(writer: Any, reader: Any, ns: str, samples: int) -> list[float]:
    latencies: list[float] = []
    async with reader.watch(ns) as events:
        for i in range(samples):
            start = time.perf_counter()
            await writer.register(ns, f"p{i}", i)
            while True:
                event = await events.__anext__()
                if event.registration.name == f"p{i}" and event.kind == "registered":
                    break
            latencies.append(time.perf_counter() - start)
    return latencies


async def run_etcd(
    endpoints: Sequence[str],
    *,
    count: int = 5000,
    tasks: int = 128,
    samples: int = 500,
    ttl: int = 10,
) -> dict[str, Any]:
    """Measure registrations/s and propagation latency against ``endpoints``.

    Returns a JSON-able dict: ``serial_per_s``, ``concurrent_per_s``,
    ``register_many_per_s``, ``propagation_ms`` (``p50``, ``p99``, ``max``,
    ``samples``) and the parameters used.
    """
    from ..registry import open_registry

    prefix = f"bench/{uuid.uuid4().hex}/"
    result: dict[str, Any] = {
        "endpoints": list(endpoints),
        "count": count,
        "tasks": tasks,
        "samples": samples,
    }
    async with (
        open_registry(backend="etcd", endpoints=endpoints, prefix=prefix, ttl=ttl) as a,
        open_registry(backend="etcd", endpoints=endpoints, prefix=prefix, ttl=ttl) as b,
    ):
        serial_count = max(1, min(count // 10, 500))
        result["serial_per_s"] = await _serial(a, "serial", serial_count)
        result["serial_count"] = serial_count
        result["concurrent_per_s"] = await _concurrent(a, "concurrent", count, tasks)
        result["register_many_per_s"] = await _many(a, "many", count)
        await b.sync()
        latencies = await _propagation(a, b, "propagation", samples)
        result["propagation_ms"] = {
            "p50": _percentile(latencies, 0.50) * 1e3,
            "p99": _percentile(latencies, 0.99) * 1e3,
            "max": max(latencies) * 1e3,
            "mean": statistics.fmean(latencies) * 1e3,
            "samples": len(latencies),
        }
    return result


def format_etcd_table(result: dict[str, Any]) -> str:
    """The etcd results as a small text table, with the targets they are read against."""
    prop = result["propagation_ms"]
    rows = [
        ("measure", "result", "target"),
        (
            f"register(), serial ({result['serial_count']})",
            f"{result['serial_per_s']:,.0f} /s",
            "",
        ),
        (
            f"register(), {result['tasks']} concurrent tasks ({result['count']})",
            f"{result['concurrent_per_s']:,.0f} /s",
            ">= 10,000 /s",
        ),
        (
            f"register_many ({result['count']})",
            f"{result['register_many_per_s']:,.0f} /s",
            ">= 10,000 /s",
        ),
        (f"propagation p50 ({prop['samples']} samples)", f"{prop['p50']:.2f} ms", "< 5 ms"),
        ("propagation p99", f"{prop['p99']:.2f} ms", "< 50 ms"),
        ("propagation max", f"{prop['max']:.2f} ms", ""),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "etcd backend, one member: " + ", ".join(result["endpoints"]) + "\n" + "\n".join(lines)
