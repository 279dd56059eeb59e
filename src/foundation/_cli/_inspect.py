"""``python -m foundation inspect``: the operator's view of a registry and a running demo.

Two sources:

* ``--state PATH`` (the default; with no path, the current user's newest
  demo run's, as the demo prints at start): the JSON snapshot a demo
  publishes every half second -- its supervision tree, registrations,
  leader and term, lock holder, last round.
* ``--etcd URL``: the cluster itself -- registrations from an etcd registry
  (``open_registry(backend="etcd")``), read-only (one range over its prefix,
  decoded as a registry instance decodes it: no lease, no keepalive, nothing
  written), the leader of each election and the holder of each lock from an
  etcd coordinator, and the supervision tree from the snapshot an etcd-mode
  demo keeps at ``<prefix>state``; all of it through one client, within
  ``--timeout`` seconds (default 5), or one line saying it did not answer.

Registrations can be narrowed with ``--namespace NS`` and ``--where``
filters, which are the registry's own ``select`` criteria (equality,
``!=``, ``<``, ``<=``, ``>``, ``>=``, dotted fields for nested metadata);
for a snapshot they are applied by loading it into a throwaway in-memory
registry, so both sources filter exactly alike. Human output by default,
``--json`` for scripts.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
import time
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import trio

from .._util import describe_owner
from ..coordination import open_etcd_coordinator
from ..demo._snapshot import (
    ELECTION,
    LEDGER_LOCK,
    check_snapshot,
    latest_state_path,
    read_snapshot,
    registrations_json,
    render_tree,
    state_dir,
)
from ..errors import ConfigError, FoundationError
from ..etcd import EtcdClient, open_etcd_client
from ..registry import Registry
from ..registry._etcd_watch import read_prefix
from ..registry._make import make_backend
from ._options import seconds

__all__ = [
    "STALE_AFTER",
    "TIMEOUT",
    "add_arguments",
    "format_report",
    "main",
    "parse_where",
    "select_snapshot",
]

#: A running demo publishes every 0.5 s; a snapshot older than this says it stopped.
STALE_AFTER = 5.0
#: Default bound on reading a cluster with ``--etcd``, in seconds.
TIMEOUT = 5.0

_WHERE = re.compile(r"^\s*([^=!<>\s]+)\s*(==|=|!=|<=|>=|<|>)\s*(.*?)\s*$")
_OPS = {"=": "eq", "==": "eq", "!=": "neq", "<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``inspect`` options to ``parser``."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--state",
        metavar="PATH",
        default=None,
        help=f"a demo's published snapshot (default: your newest run's, in {state_dir()})",
    )
    source.add_argument(
        "--etcd",
        metavar="URL[,URL...]",
        default=None,
        help="read registrations, leaders and locks from this etcd cluster instead",
    )
    parser.add_argument(
        "--prefix",
        default="foundation-demo/",
        help="etcd: the demo's key prefix (registry under PREFIXregistry/, coordinator"
        " under PREFIXcoord/; default foundation-demo/)",
    )
    parser.add_argument(
        "--registry-prefix",
        default=None,
        metavar="P",
        help="etcd: the registry's own prefix (another application's, e.g. foundation/)",
    )
    parser.add_argument(
        "--coordinator-prefix",
        default=None,
        metavar="P",
        help="etcd: the coordinator's own prefix (another application's)",
    )
    parser.add_argument(
        "--namespace", "-n", metavar="NS", default=None, help="only registrations of namespace NS"
    )
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="metadata filter, repeatable (all must hold): FIELD=VALUE, or !=, <, <=, >, >=;"
        ' VALUE is JSON when it parses (2, true, "x"), else text; a.b reaches nested fields',
    )
    parser.add_argument(
        "--election",
        action="append",
        default=None,
        metavar="GROUP",
        help=f"etcd: election groups whose leader to show (default {ELECTION})",
    )
    parser.add_argument(
        "--lock",
        action="append",
        default=None,
        metavar="NAME",
        help=f"etcd: locks whose holder to show (default {LEDGER_LOCK})",
    )
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=TIMEOUT,
        metavar="SECONDS",
        help=f"etcd: give up after this long in all (default {TIMEOUT:g})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def parse_where(items: Sequence[str]) -> dict[str, Any]:
    """``["role=leader", "term>=2"]`` -> ``{"role": "leader", "term": ("gte", 2)}``.

    Raises:
        ConfigError: an item is not ``FIELD<op>VALUE``.
    """
    where: dict[str, Any] = {}
    for item in items:
        m = _WHERE.match(item)
        if m is None:
            raise ConfigError(
                f"--where {item!r}: write FIELD=VALUE (or FIELD!=VALUE, FIELD<VALUE, ...),"
                " e.g. --where role=leader --where 'term>=2'"
            )
        field, op, raw = m.groups()
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        where[field] = value if _OPS[op] == "eq" else (_OPS[op], value)
    return where


def _hashable(value: Any) -> Hashable:
    """JSON lists back to tuples, so keys and owners from a snapshot can key a registry."""
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return repr(value)
    return value  # type: ignore[no-any-return]


def select_snapshot(
    regs: Sequence[Mapping[str, Any]], namespace: str | None, where: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Apply ``select(namespace, where)`` to a snapshot's registrations.

    They are loaded into a throwaway in-memory registry so the filter has
    exactly the registry's semantics (operators, dotted fields, incomparable
    values never matching).
    """
    registry = Registry(backend="python", partitions=1)
    try:
        for r in regs:
            registry.register_nowait(
                _hashable(r.get("namespace")),
                _hashable(r.get("name")),
                r.get("value"),
                r.get("metadata") or None,
                owner=_hashable(r.get("owner")),
            )
        return registrations_json(registry.select(namespace, where=where or None))
    finally:
        registry.close()


def _from_state(path: str, namespace: str | None, where: Mapping[str, Any]) -> dict[str, Any]:
    snap = read_snapshot(path)
    return _report(
        snap, {"state": path}, select_snapshot(snap.get("registrations", []), namespace, where)
    )


def _report(
    snap: Mapping[str, Any] | None,
    source: dict[str, Any],
    regs: list[dict[str, Any]],
    *,
    leaders: list[dict[str, Any]] | None = None,
    locks: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    demo = None
    if snap is not None:
        age = max(0.0, time.time() - float(snap.get("updated", 0.0)))
        demo = {
            "running": bool(snap.get("running")),
            "stale": bool(snap.get("abandoned"))
            or (bool(snap.get("running")) and age > STALE_AFTER),
            "age": round(age, 1),
            **{k: snap.get(k) for k in ("mode", "pid", "seed", "workers", "seconds", "elapsed")},
            "round": snap.get("round"),
            "restarts": snap.get("restarts"),
        }
        summary = snap.get("summary")
        if isinstance(summary, Mapping):
            demo["ok"] = summary.get("ok")
            demo["problems"] = summary.get("problems")
    if leaders is None:
        leader = snap.get("leader") if snap is not None else None
        leaders = [dict(leader)] if isinstance(leader, Mapping) else []
        if not leaders and snap is not None:
            leaders = [{"group": ELECTION, "candidate": None, "term": None}]
    if locks is None:
        locks = [dict(x) for x in (snap.get("locks") or [])] if snap is not None else []
    return {
        "source": source,
        "demo": demo,
        "tree": snap.get("tree") if snap is not None else None,
        "registrations": regs,
        "leaders": leaders,
        "locks": locks,
    }


async def _from_etcd(
    endpoints: list[str], args: argparse.Namespace, where: Mapping[str, Any]
) -> dict[str, Any]:
    registry_prefix = args.registry_prefix
    if registry_prefix is None:
        registry_prefix = args.prefix + "registry/"
    coordinator_prefix = args.coordinator_prefix
    if coordinator_prefix is None:
        coordinator_prefix = args.prefix + "coord/"
    async with open_etcd_client(endpoints, timeout=args.timeout) as client:
        # Read-only: one range over the registry's prefix, decoded as a
        # registry decodes it; no lease, no keepalive, no watch, no writes.
        table = make_backend("auto")
        await read_prefix(client, registry_prefix, table)
        regs = registrations_json(Registry(table).select(args.namespace, where=where or None))
        return await _coordination_state(
            client,
            coordinator_prefix,
            endpoints,
            args,
            regs,
            source={
                "etcd": endpoints,
                "registry_prefix": registry_prefix,
                "coordinator_prefix": coordinator_prefix,
            },
        )


async def _coordination_state(
    client: EtcdClient,
    coordinator_prefix: str,
    endpoints: list[str],
    args: argparse.Namespace,
    regs: list[dict[str, Any]],
    *,
    source: dict[str, Any],
) -> dict[str, Any]:
    """Leaders, lock holders and the demo's snapshot, read through ``client``."""
    async with open_etcd_coordinator(client=client, prefix=coordinator_prefix) as coord:
        leaders = []
        for group in args.election or [ELECTION]:
            leader = await coord.election(group).leader()
            leaders.append(
                {
                    "group": group,
                    "candidate": leader.candidate if leader else None,
                    "term": leader.term if leader else None,
                }
            )
        locks = []
        for name in args.lock or [LEDGER_LOCK]:
            status = await coord.lock_status(name)
            locks.append(
                {
                    "name": name,
                    "holder": status.holder if status else None,
                    "token": status.token if status else None,
                    "held_for": round(trio.current_time() - status.since, 3) if status else None,
                }
            )
        snap: dict[str, Any] | None = None
        state_error: str | None = None
        kv = await coord.client.get(args.prefix + "state")
        if kv is not None:
            try:
                snap = check_snapshot(json.loads(kv.value), args.prefix + "state")
            except (ValueError, ConfigError) as exc:
                # Registrations, leaders and locks are still worth showing.
                state_error = f"key {args.prefix + 'state'!r} holds no demo snapshot: {exc}"
        running = await coord.client.get(args.prefix + "running") is not None
    if snap is not None and snap.get("running") and not running:
        # It said "running" but its lease-bound marker is gone: it died mid-run.
        snap = {**snap, "running": False, "abandoned": True}
    return _report(snap, {**source, "state_error": state_error}, regs, leaders=leaders, locks=locks)


async def _from_etcd_within(
    endpoints: list[str], args: argparse.Namespace, where: Mapping[str, Any]
) -> dict[str, Any] | None:
    """:func:`_from_etcd` under one deadline for the whole read (None: it passed).

    Each etcd call has its own deadline, but a read makes several (the
    registry's snapshot, each leader and lock, the state key), so without
    this the bound ``--timeout`` states would hold per call, not in all.
    """
    with trio.move_on_after(args.timeout):
        return await _from_etcd(endpoints, args, where)
    return None


def _fmt(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=repr)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_report(report: Mapping[str, Any], *, namespace: str | None, where: Sequence[str]) -> str:
    """The human form of an inspect report."""
    src = report["source"]
    if "state" in src:
        where_from = src["state"]
    else:
        where_from = f"etcd {', '.join(src['etcd'])} (registry {src['registry_prefix']!r})"
    lines = [f"source    {where_from}"]
    if src.get("state_error"):
        lines.append(f"          {src['state_error']}")
    demo = report.get("demo")
    if demo is not None:
        if demo["running"]:
            state = f"running ({demo['elapsed']:.1f} s of {float(demo['seconds']):g} s)"
        elif demo.get("ok") is None and demo["stale"]:
            state = "ended without a summary"
        else:
            ok = demo.get("ok")
            state = "finished" + ("" if ok is None else ": OK" if ok else ": FAILED")
        lines.append(
            f"demo      {state}, {demo['mode']} mode, pid {demo['pid']}, seed {demo['seed']},"
            f" {demo['workers']} workers, updated {demo['age']:.1f} s ago"
        )
        if demo.get("stale"):
            lines.append(
                f"          no update for {demo['age']:.0f} s: the demo stopped publishing"
                " (killed?); this state is old, start a new demo"
            )
        for problem in demo.get("problems") or ():
            lines.append(f"          problem: {problem}")
        rnd = demo.get("round")
        if rnd:
            lines.append(
                f"round     {rnd['round']}: agreed {rnd['value']}"
                f" (proposed by {rnd.get('proposer')})"
            )
    tree = report.get("tree")
    if tree:
        lines.append("supervision")
        lines += ["  " + line for line in render_tree(tree)]
    regs = report["registrations"]
    scope = f"namespace {namespace!r}" if namespace is not None else "all namespaces"
    if where:
        scope += ", where " + " and ".join(where)
    lines.append(f"registrations: {len(regs)} ({scope})")
    if regs:
        rows = [
            (
                _fmt(r["namespace"]),
                _fmt(r["name"]),
                _cut(_fmt(r["value"]), 30),
                _cut(describe_owner(r["owner"], quote=False), 40),
                _cut(" ".join(f"{k}={_fmt(v)}" for k, v in (r["metadata"] or {}).items()), 80),
            )
            for r in regs
        ]
        head = ("NAMESPACE", "NAME", "VALUE", "OWNER", "METADATA")
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
        for row in (head, *rows):
            lines.append(
                "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            )
    lines.append("leaders")
    for leader in report["leaders"]:
        who = (
            f"{leader['candidate']} (term {leader['term']})"
            if leader.get("candidate")
            else "nobody (election open)"
        )
        lines.append(f"  {leader['group']}: {who}")
    lines.append("locks")
    for lock in report["locks"]:
        if lock.get("holder"):
            lines.append(
                f"  {lock['name']}: held by {lock['holder']}, fencing token {lock['token']},"
                f" for {float(lock.get('held_for') or 0.0):.1f} s"
            )
        else:
            lines.append(f"  {lock['name']}: free")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """Run ``python -m foundation inspect`` with parsed ``args``; the exit status.

    0 on success, 1 when the source cannot be read (the message says what to
    do), 2 for a malformed ``--where``.
    """
    try:
        where = parse_where(args.where)
    except ConfigError as exc:
        print(f"foundation inspect: {exc}", file=sys.stderr)
        return 2
    try:
        if args.etcd:
            endpoints = [e.strip() for e in args.etcd.split(",") if e.strip()]
            report = trio.run(functools.partial(_from_etcd_within, endpoints, args, where))
            if report is None:
                print(
                    f"foundation inspect: no answer from etcd at {', '.join(endpoints)} within"
                    f" {args.timeout:g} s; check that the members are running and reachable,"
                    " or wait longer with --timeout",
                    file=sys.stderr,
                )
                return 1
        else:
            report = _from_state(args.state or latest_state_path(), args.namespace, where)
    except FoundationError as exc:
        print(f"foundation inspect: {exc}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_report(report, namespace=args.namespace, where=args.where) + "\n")
    sys.stdout.flush()
    return 0
