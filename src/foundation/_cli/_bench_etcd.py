"""The etcd measurements of ``python -m foundation bench --etcd URL`` (and ``--peer``).

Two numbers, on one member over loopback:

* registrations per second from one client: serial ``await register()``,
  many concurrent ``register()`` tasks (which the backend coalesces into
  batched txns), and ``register_many``;
* watch propagation latency between two registries (two clients): the time
  from just before ``await a.register(...)`` until ``b``'s ``watch()`` yields
  the event, as p50 and p99 over many samples.

With ``--peer`` the same workloads run side by side with aetcd (asyncio,
gRPC), in alternating rounds, each in a fresh process: the raw client
against aetcd's (serial put+get, puts from 128 tasks, txns of 100 puts), and
the registry against aetcd doing the registry's etcd work with no client
logic (txns of 100 create-if-absent puts on a lease); the targets are the
ratios in ``docs/contract.rst``.

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

__all__ = ["format_etcd_table", "format_peer_table", "run_etcd", "run_peer"]


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
    timeout: float = 5.0,  # noqa: ASYNC109 -- each etcd call's deadline
) -> dict[str, Any]:
    """Measure registrations/s and propagation latency against ``endpoints``.

    Returns a JSON-able dict: ``serial_per_s``, ``concurrent_per_s``,
    ``register_many_per_s``, ``propagation_ms`` (``p50``, ``p99``, ``max``,
    ``samples``) and the parameters used. An etcd that does not answer
    raises EtcdUnavailable within ``timeout``.
    """
    from ..registry import open_registry

    prefix = f"bench/{uuid.uuid4().hex}/"
    result: dict[str, Any] = {
        "endpoints": list(endpoints),
        "count": count,
        "tasks": tasks,
        "samples": samples,
    }
    options: dict[str, Any] = {"prefix": prefix, "ttl": ttl, "timeout": timeout}
    async with (
        open_registry(backend="etcd", endpoints=endpoints, **options) as a,
        open_registry(backend="etcd", endpoints=endpoints, **options) as b,
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
            "0.3x aetcd (--peer)",
        ),
        (
            f"register_many ({result['count']})",
            f"{result['register_many_per_s']:,.0f} /s",
            "0.4x aetcd (--peer)",
        ),
        (f"propagation p50 ({prop['samples']} samples)", f"{prop['p50']:.2f} ms", "< 2 ms"),
        ("propagation p99", f"{prop['p99']:.2f} ms", "< 20 ms"),
        ("propagation max", f"{prop['max']:.2f} ms", ""),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "etcd backend, one member: " + ", ".join(result["endpoints"]) + "\n" + "\n".join(lines)


# -- the raw client side by side with aetcd (``bench --etcd URL --peer``) ------------------
#
# Three workloads on both clients, against the same member, in alternating
# rounds (ours, aetcd, ours, aetcd, ...; medians reported):
#
# * serial put+get: one put then one get of the same key, one at a time
#   (ops/s counts each call);
# * 5,000 puts from 128 tasks: puts/s, and each call's latency (p99, max:
#   none may come near the client's timeout);
# * txns of 100 puts: puts/s through sequential txns of 100 puts each.
#
# Each round of each client runs in a fresh subprocess (aetcd's on asyncio,
# ours on Trio), so both start from the same state and have the process to
# themselves: neither pays for the other's imports, threads or garbage.

_AETCD_SCRIPT = r"""
import asyncio, json, sys, time

import aetcd


async def main(args):
    host, port = args["target"].rsplit(":", 1)
    prefix = args["prefix"].encode()
    client = aetcd.Client(host=host, port=int(port), timeout=args["timeout"])
    out = {}
    try:
        await client.put(prefix + b"warm", b"0")
        start = time.perf_counter()
        for i in range(args["serial"]):
            key = prefix + b"s%d" % i
            await client.put(key, b"v")
            await client.get(key)
        out["serial_s"] = time.perf_counter() - start
        latencies = []
        per_task = args["puts"] // args["tasks"]

        async def worker(t):
            for i in range(per_task):
                began = time.perf_counter()
                await client.put(prefix + b"c%d.%d" % (t, i), b"v")
                latencies.append(time.perf_counter() - began)

        start = time.perf_counter()
        await asyncio.gather(*(worker(t) for t in range(args["tasks"])))
        out["concurrent_s"] = time.perf_counter() - start
        out["latencies"] = latencies
        ops = client.transactions
        start = time.perf_counter()
        for t in range(args["txns"]):
            await client.transaction(
                compare=[],
                success=[
                    ops.put(prefix + b"t%d.%d" % (t, i), b"v") for i in range(args["txn_size"])
                ],
                failure=[],
            )
        out["txn_s"] = time.perf_counter() - start
        await client.delete_prefix(prefix)
    finally:
        await client.close()
    print(json.dumps(out))


asyncio.run(main(json.loads(sys.argv[1])))
"""


async def _ours_round(endpoints: Sequence[str], args: dict[str, Any]) -> dict[str, Any]:
    from ..etcd import op_put, open_etcd_client

    prefix = args["prefix"]
    out: dict[str, Any] = {}
    async with open_etcd_client(endpoints, timeout=args["timeout"]) as etcd:
        await etcd.put(prefix + "warm", "0")
        start = time.perf_counter()
        for i in range(args["serial"]):
            key = f"{prefix}s{i}"
            await etcd.put(key, "v")
            await etcd.get(key)
        out["serial_s"] = time.perf_counter() - start
        latencies: list[float] = []
        per_task = args["puts"] // args["tasks"]

        async def worker(t: int) -> None:
            for i in range(per_task):
                began = time.perf_counter()
                await etcd.put(f"{prefix}c{t}.{i}", "v")
                latencies.append(time.perf_counter() - began)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for t in range(args["tasks"]):
                nursery.start_soon(worker, t)
        out["concurrent_s"] = time.perf_counter() - start
        out["latencies"] = latencies
        start = time.perf_counter()
        for t in range(args["txns"]):
            await etcd.txn([], [op_put(f"{prefix}t{t}.{i}", "v") for i in range(args["txn_size"])])
        out["txn_s"] = time.perf_counter() - start
        await etcd.delete(prefix, prefix=True)
    return out


_OURS_SCRIPT = r"""
import json, sys

import trio

from foundation._cli._bench_etcd import _ours_round

args = json.loads(sys.argv[1])
print(json.dumps(trio.run(_ours_round, args["endpoints"], args)))
"""


# The registry against the same etcd work done by aetcd with no client logic
# at all: txns of 100 create-if-absent puts (compare create_revision == 0) of
# registry-sized values, on a lease. The registry adds the queue, coalescing,
# JSON encoding, the local table and its watch to that.
_AETCD_REGISTRY_SCRIPT = r"""
import asyncio, json, sys, time

import aetcd


async def main(args):
    host, port = args["target"].rsplit(":", 1)
    prefix = args["prefix"]
    client = aetcd.Client(host=host, port=int(port), timeout=args["timeout"])
    out = {}
    try:
        lease = await client.lease(10)
        ops = client.transactions
        value = json.dumps(
            {"v": 1, "m": {}, "o": None, "i": "0123456789abcdef0123456789abcdef"},
            separators=(",", ":"),
        ).encode()
        size = args["txn_size"]
        start = time.perf_counter()
        for t in range(args["count"] // size):
            keys = [
                (prefix + 'reg/["c",%s]' % json.dumps("%d.%d" % (t, i))).encode()
                for i in range(size)
            ]
            ok, _ = await client.transaction(
                compare=[ops.create(k) == 0 for k in keys],
                success=[ops.put(k, value, lease=lease) for k in keys],
                failure=[],
            )
            assert ok
        out["create_s"] = time.perf_counter() - start
        out["created"] = (args["count"] // size) * size
        await lease.revoke()
    finally:
        await client.close()
    print(json.dumps(out))


asyncio.run(main(json.loads(sys.argv[1])))
"""


async def _registry_round(endpoints: Sequence[str], args: dict[str, Any]) -> dict[str, Any]:
    """The registry's side of ``--peer``: one round, in its own process."""
    from ..etcd import open_etcd_client
    from ..registry import open_registry

    prefix = args["prefix"]
    options: dict[str, Any] = {"prefix": prefix, "ttl": 10}
    out: dict[str, Any] = {}
    async with (
        open_etcd_client(endpoints, timeout=args["timeout"]) as one,
        open_etcd_client(endpoints, timeout=args["timeout"]) as other,
        open_registry(backend="etcd", client=one, **options) as a,
        open_registry(backend="etcd", client=other, **options) as b,
    ):
        out["concurrent_per_s"] = await _concurrent(a, "concurrent", args["count"], args["tasks"])
        out["register_many_per_s"] = await _many(a, "many", args["count"])
        await b.sync()
        out["latencies"] = await _propagation(a, b, "propagation", args["samples"])
    return out


_REGISTRY_SCRIPT = r"""
import json, sys

import trio

from foundation._cli._bench_etcd import _registry_round

args = json.loads(sys.argv[1])
print(json.dumps(trio.run(_registry_round, args["endpoints"], args)))
"""


async def _in_subprocess(script: str, args: dict[str, Any]) -> dict[str, Any]:
    import json
    import sys

    proc = await trio.run_process(
        [sys.executable, "-c", script, json.dumps(args)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"a bench round failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return result


async def _aetcd_round(
    endpoints: Sequence[str], args: dict[str, Any], script: str = _AETCD_SCRIPT
) -> dict[str, Any]:
    from .._endpoints import check_endpoints, split_endpoint

    target, _tls = split_endpoint(check_endpoints(endpoints)[0])
    return await _in_subprocess(script, {**args, "target": target})


def _summarise(rounds: list[dict[str, Any]], args: dict[str, Any]) -> dict[str, Any]:
    serial_ops = 2 * args["serial"]
    puts = (args["puts"] // args["tasks"]) * args["tasks"]
    txn_puts = args["txns"] * args["txn_size"]
    lat = [max(r["latencies"]) for r in rounds]
    p99 = [_percentile(r["latencies"], 0.99) for r in rounds]
    return {
        "serial_ops_per_s": statistics.median(_rate(serial_ops, r["serial_s"]) for r in rounds),
        "concurrent_puts_per_s": statistics.median(_rate(puts, r["concurrent_s"]) for r in rounds),
        "concurrent_p99_ms": statistics.median(p99) * 1e3,
        "concurrent_max_ms": max(lat) * 1e3,
        "txn_puts_per_s": statistics.median(_rate(txn_puts, r["txn_s"]) for r in rounds),
        "rounds": [
            {
                "serial_ops_per_s": _rate(serial_ops, r["serial_s"]),
                "concurrent_puts_per_s": _rate(puts, r["concurrent_s"]),
                "txn_puts_per_s": _rate(txn_puts, r["txn_s"]),
            }
            for r in rounds
        ],
    }


async def run_peer(
    endpoints: Sequence[str],
    *,
    serial: int = 500,
    puts: int = 5000,
    tasks: int = 128,
    txns: int = 50,
    txn_size: int = 100,
    count: int = 5000,
    samples: int = 200,
    rounds: int = 3,
    timeout: float = 5.0,  # noqa: ASYNC109 -- the clients' per-call timeout
) -> dict[str, Any]:
    """Our etcd client and registry beside aetcd on the same workloads, alternating rounds.

    The raw client against aetcd: serial put+get, ``puts`` puts from
    ``tasks`` tasks, ``txns`` txns of ``txn_size`` puts. The registry
    (``register()`` of ``count`` names from ``tasks`` tasks, and
    ``register_many`` of ``count``) against aetcd's txns of ``txn_size``
    create-if-absent puts on a lease; and the watch propagation between two
    registries (``samples`` samples). Every round of every side runs in a
    fresh subprocess, in the order ours, aetcd, our registry, aetcd's
    creates, ``rounds`` times.

    Returns a JSON-able dict: ``ours`` and ``aetcd`` (medians over the
    rounds), their ``ratio`` per throughput, ``registry`` (our registry's
    medians, its ``ratio`` to aetcd's creates, and the propagation p50/p99
    over all samples) and the parameters.
    """
    args: dict[str, Any] = {
        "serial": serial,
        "puts": puts,
        "tasks": tasks,
        "txns": txns,
        "txn_size": txn_size,
        "count": count,
        "samples": samples,
        "timeout": timeout,
    }
    ours: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    registry: list[dict[str, Any]] = []
    creates: list[dict[str, Any]] = []
    for _ in range(rounds):
        prefix = f"bench/peer/{uuid.uuid4().hex}/"
        ours.append(
            await _in_subprocess(
                _OURS_SCRIPT, {**args, "prefix": prefix + "ours/", "endpoints": list(endpoints)}
            )
        )
        theirs.append(await _aetcd_round(endpoints, {**args, "prefix": prefix + "aetcd/"}))
        registry.append(
            await _in_subprocess(
                _REGISTRY_SCRIPT,
                {**args, "prefix": prefix + "registry/", "endpoints": list(endpoints)},
            )
        )
        creates.append(
            await _aetcd_round(
                endpoints, {**args, "prefix": prefix + "creates/"}, _AETCD_REGISTRY_SCRIPT
            )
        )
    mine, peer = _summarise(ours, args), _summarise(theirs, args)
    keys = ("serial_ops_per_s", "concurrent_puts_per_s", "txn_puts_per_s")
    create_rates = [_rate(r["created"], r["create_s"]) for r in creates]
    peer_creates = statistics.median(create_rates)
    latencies = [x for r in registry for x in r["latencies"]]
    reg = {
        "concurrent_per_s": statistics.median(r["concurrent_per_s"] for r in registry),
        "register_many_per_s": statistics.median(r["register_many_per_s"] for r in registry),
        "aetcd_creates_per_s": peer_creates,
        "propagation_ms": {
            "p50": _percentile(latencies, 0.50) * 1e3,
            "p99": _percentile(latencies, 0.99) * 1e3,
            "max": max(latencies) * 1e3,
            "samples": len(latencies),
        },
        "rounds": [
            {
                "concurrent_per_s": r["concurrent_per_s"],
                "register_many_per_s": r["register_many_per_s"],
                "aetcd_creates_per_s": c,
            }
            for r, c in zip(registry, create_rates, strict=True)
        ],
    }
    reg["ratio"] = {
        "concurrent_per_s": reg["concurrent_per_s"] / peer_creates,
        "register_many_per_s": reg["register_many_per_s"] / peer_creates,
    }
    return {
        "endpoints": list(endpoints),
        **args,
        "rounds": rounds,
        "ours": mine,
        "aetcd": peer,
        "ratio": {k: mine[k] / peer[k] for k in keys},
        "registry": reg,
    }


def format_peer_table(result: dict[str, Any]) -> str:
    """The side-by-side results as a text table (target: ratio >= 0.8 on each row)."""
    ours, peer, ratio = result["ours"], result["aetcd"], result["ratio"]
    rows = [
        ("workload", "foundation.etcd", "aetcd", "ratio"),
        (
            f"serial put+get ({result['serial']} pairs), ops/s",
            f"{ours['serial_ops_per_s']:,.0f}",
            f"{peer['serial_ops_per_s']:,.0f}",
            f"{ratio['serial_ops_per_s']:.2f}",
        ),
        (
            f"{result['puts']:,} puts from {result['tasks']} tasks, puts/s",
            f"{ours['concurrent_puts_per_s']:,.0f}",
            f"{peer['concurrent_puts_per_s']:,.0f}",
            f"{ratio['concurrent_puts_per_s']:.2f}",
        ),
        (
            "  per put: p99 / max ms",
            f"{ours['concurrent_p99_ms']:.1f} / {ours['concurrent_max_ms']:.1f}",
            f"{peer['concurrent_p99_ms']:.1f} / {peer['concurrent_max_ms']:.1f}",
            f"timeout {result['timeout'] * 1e3:,.0f} ms",
        ),
        (
            f"txns of {result['txn_size']} puts ({result['txns']} txns), puts/s",
            f"{ours['txn_puts_per_s']:,.0f}",
            f"{peer['txn_puts_per_s']:,.0f}",
            f"{ratio['txn_puts_per_s']:.2f}",
        ),
    ]
    reg = result.get("registry")
    if reg is not None:
        prop = reg["propagation_ms"]
        rows += [
            (
                f"registry register(), {result['tasks']} tasks ({result['count']:,}), /s",
                f"{reg['concurrent_per_s']:,.0f}",
                f"{reg['aetcd_creates_per_s']:,.0f} *",
                f"{reg['ratio']['concurrent_per_s']:.2f} (>= 0.3)",
            ),
            (
                f"registry register_many ({result['count']:,}), /s",
                f"{reg['register_many_per_s']:,.0f}",
                f"{reg['aetcd_creates_per_s']:,.0f} *",
                f"{reg['ratio']['register_many_per_s']:.2f} (>= 0.4)",
            ),
            (
                f"watch propagation p50 / p99 ({prop['samples']} samples)",
                f"{prop['p50']:.2f} / {prop['p99']:.2f} ms",
                "",
                "< 2 / < 20 ms",
            ),
        ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    head = (
        f"etcd clients side by side, {', '.join(result['endpoints'])}; medians of"
        f" {result['rounds']} alternating rounds (target: ratio >= 0.8)"
    )
    foot = (
        f"\n* aetcd: txns of {result['txn_size']} create-if-absent puts on a lease (the"
        " registry's etcd work, without its client logic)"
        if reg is not None
        else ""
    )
    return head + "\n" + "\n".join(lines) + foot
