"""The etcd registry under partitions: nothing acknowledged lost, stale views said, heals honest.

Three etcd members and each registry instance on a host of its own. The
histories of the keys (registers, ``sync()``-then-lookup reads, and the lease
ends and re-puts an always-connected watcher saw) are checked for
linearizability, key by key, besides each promise's own checks:

* nothing acknowledged is lost: ``register()`` calls running while the
  writer is cut off and healed again and again, and while the member it
  talks to is cut off; every call that returned is in etcd at the end,
  unless its lease ended and then the writer's watchers saw the
  unregistration with ``reason="lease"``;
* a minority member: a client connected to it moves to the majority within
  its call timeout; a client stranded with it keeps answering reads from its
  local view, and ``health_check()`` says the view may be stale, and since
  when;
* healing: names that expired while the writer was cut off are put back
  under a new lease, except one another instance took meanwhile, which the
  writer reports (an ``unregistered`` event with ``reason="lease"`` and
  ``foundation.registry.conflict`` telemetry) and never overwrites.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import trio
from _history import RegisterModel, check_acknowledged_kept, check_linearizable
from _lab import DriverClient, Lab, Reply, now

pytestmark = [pytest.mark.partition, pytest.mark.netns]

#: Seconds each test may take, setup included.
BOUND = 90
#: The clients' per-call timeout (the library's default).
CALL_TIMEOUT = 5.0


def key(ns: str, name: str) -> str:
    return json.dumps([ns, name])


async def _cluster_and_leader(lab: Lab) -> tuple[int, int]:
    """Start the cluster; returns (leader index, a follower index)."""
    cluster = await lab.start_cluster()
    leader = await cluster.wait_leader()
    return leader, next(i for i in range(3) if i != leader)


def _linearizability(lab: Lab) -> list[str]:
    problems = []
    for k in lab.history.keys():  # noqa: SIM118 -- History.keys(), not a dict
        result = check_linearizable(lab.history.of(k), RegisterModel(), key=k)
        if not result.ok:
            problems.append(result.explain())
    return problems


def _lease_reasons(client: DriverClient, registry: str = "r") -> tuple[set[str], list[str]]:
    """Keys the client's watchers saw unregistered with reason "lease"; and problems.

    A problem is an event with no ``reason`` field at all (the field is part
    of the contract of registry events).
    """
    lost = set()
    problems = []
    for e in client.find("watch", registry=registry):
        if e["kind"] != "unregistered":
            continue
        reg = e["registration"]
        k = key(reg["ns"], reg["name"])
        if e.get("reason_missing"):
            problems.append(
                f"{client.name}: an unregistered event of {k} has no 'reason' field"
                " (RegistryEvent.reason is missing), so a lease loss cannot be told apart"
            )
        elif e.get("reason") == "lease":
            lost.add(k)
    return lost, problems


async def _wait_healthy(client: DriverClient, timeout: float) -> dict[str, Any] | None:
    """Poll ``health`` until ok; the last health seen."""
    last = None
    with trio.move_on_after(timeout):
        while True:
            reply = await client.call("health")
            last = reply.result
            if reply.ok and last and last["ok"]:
                return last
            await trio.sleep(0.25)
    return last


# --------------------------------------------------------------------------
# 1. Nothing acknowledged is lost
# --------------------------------------------------------------------------


async def test_nothing_acknowledged_is_lost(lab: Lab) -> None:
    """Concurrent registers through repeated cuts of the writer and of its member."""
    with trio.fail_after(BOUND):
        leader, follower = await _cluster_and_leader(lab)
        a, o = await lab.start_drivers("a", "o")
        ttl = 5
        await lab.open_registry(a, first=follower, ttl=ttl, timeout=CALL_TIMEOUT)
        await lab.open_registry(o, first=leader, ttl=ttl, timeout=CALL_TIMEOUT)
        ns = "p1"
        replies: list[tuple[str, str, Reply]] = []
        stop = trio.Event()

        async def writer(worker: int) -> None:
            for j in range(10_000):
                if stop.is_set():
                    return
                name = f"w{worker}-{j}"
                value = f"a:{worker}:{j}"
                reply = await a.send("register", ns=ns, name=name, value=value)
                replies.append((key(ns, name), value, reply))
                await reply.wait(3 * CALL_TIMEOUT)
                if reply.message is None:
                    return  # no answer yet: this worker stops; the call stays recorded
                await trio.sleep(0.05)

        async def reader() -> None:
            # Linearizable reads of recent keys from the always-connected instance.
            while not stop.is_set():
                recent = [json.loads(k) for k, _v, _r in replies[-6:]]
                if recent:
                    reply = await o.call("sync_lookup", keys=recent, timeout=3 * CALL_TIMEOUT)
                    lab.record_sync_reads("o", reply)
                await trio.sleep(0.5)

        schedule: list[str] = []
        t_start = now()

        def mark(what: str) -> None:
            schedule.append(f"+{now() - t_start:.2f} s {what}")

        net = lab.net
        member = net.hosts[f"m{follower}"]
        others = [net.hosts[f"m{i}"] for i in range(3) if i != follower]
        async with trio.open_nursery() as nursery:
            for worker in range(6):
                nursery.start_soon(writer, worker)
            nursery.start_soon(reader)
            await trio.sleep(2)
            for _ in range(2):  # short cuts of the writer: its lease survives
                net.cut(a.host)
                mark("writer cut off")
                await trio.sleep(2.0)
                net.heal(a.host)
                mark("writer healed")
                await trio.sleep(2.0)
            net.partition([member], others)  # the member the writer talks to
            mark(f"its member m{follower} cut off from the others")
            await trio.sleep(5.0)
            net.heal_all()
            mark("member healed")
            await trio.sleep(2.0)
            net.cut(a.host)  # longer than the TTL: the lease ends on the server
            mark("writer cut off for TTL + 3 s")
            await trio.sleep(ttl + 3.0)
            net.heal(a.host)
            mark("writer healed")
            await trio.sleep(3.0)
            stop.set()
            mark("writers stopped")
        # Let the writer re-establish its lease and put its names back.
        health = await _wait_healthy(a, 4 * ttl)
        mark(f"writer healthy again: {bool(health and health['ok'])}")
        await a.ok("sync", timeout=3 * CALL_TIMEOUT)
        # Every call that returned ok, whenever its answer came (before the final reads).
        acknowledged = {k: v for k, v, r in replies if r.ok}
        final_reply = await o.ok(
            "sync_lookup",
            keys=[json.loads(k) for k in {k for k, _v, _r in replies}],
            timeout=3 * CALL_TIMEOUT,
        )
        await trio.sleep(0.5)  # the observer's watch events of the end
        in_etcd = {k: e["value"] for k, e in (await lab.registry_entries()).items()}

        for k, value, reply in replies:
            lab.record_register("a", k, value, reply)
        lab.record_sync_reads("o", final_reply)
        lab.lease_evidence(o)

        lease_lost, reason_problems = _lease_reasons(a)
        problems = check_acknowledged_kept(acknowledged, in_etcd, lease_lost)
        if problems and reason_problems:
            problems += reason_problems[:3]
        # A name the writer put back under its new lease was never lost to its
        # users: its watchers get an unregistration only for names it could not
        # put back (reason "lease"); other instances see the expiry as "remote".
        acked_at = {k: r.t1 for k, _v, r in replies if r.ok}
        flapped = sorted(
            {
                key(e["registration"]["ns"], e["registration"]["name"])
                for e in a.find("watch", kind="unregistered")
                if in_etcd.get(key(e["registration"]["ns"], e["registration"]["name"]))
                == e["registration"]["value"]
                and e["t"]
                > acked_at.get(key(e["registration"]["ns"], e["registration"]["name"]), 0)
            }
        )
        if flapped:
            problems.append(
                f"the writer's watchers saw {len(flapped)} of its names unregistered although it"
                f" put them back under its new lease (e.g. {flapped[:3]})"
            )
        remote = [e for e in o.find("watch", kind="unregistered") if e.get("reason") != "remote"]
        if remote:
            why = "no reason field" if remote[0].get("reason_missing") else remote[0].get("reason")
            problems.append(
                f"the observer saw {len(remote)} expiries of the writer's names not as"
                f" reason='remote' ({why})"
            )
        problems += _linearizability(lab)
        outcomes: dict[str, int] = {}
        for _k, _v, reply in replies:
            label = "ok" if reply.ok else (reply.error or "no answer")
            outcomes[label] = outcomes.get(label, 0) + 1
        lab.notes += schedule
        lab.notes += [
            f"register calls: {len(replies)} ({outcomes}); acknowledged {len(acknowledged)};"
            f" in etcd at the end {len([k for k in acknowledged if k in in_etcd])}",
            f"the writer's watchers saw {len(lease_lost)} lease losses;"
            f" {len(reason_problems)} unregistered events without a reason",
            f"keys checked for linearizability: {len(lab.history.keys())}"
            f" ({len(lab.history.ops)} ops)",
        ]
        if len(problems) > 12:
            problems[12:] = [f"... and {len(problems) - 12} more"]
        assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------
# 3. A minority member
# --------------------------------------------------------------------------

#: The field of ``health_check().details`` that says since when the view may be stale.
STALE_FIELD = "stale_since"


def _stale_since(health: dict[str, Any]) -> float | None:
    """``details["stale_since"]`` converted to ``time.monotonic()``; None if absent or null.

    The field is a wall-clock time (``time.time()``); the driver's health
    reply carries both clocks read at the same moment.
    """
    details = health.get("details") or {}
    value = details.get(STALE_FIELD)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value - health["wall"] + health["mono"]
    return None


async def test_minority_member_clients_move_and_stranded_views_say_stale(lab: Lab) -> None:
    with trio.fail_after(BOUND):
        leader, follower = await _cluster_and_leader(lab)
        c1, c2, c3 = await lab.start_drivers("c1", "c2", "c3")
        ttl = 15  # the stranded client's lease must outlive the cut (healed at about +7 s)
        for client, first in ((c1, follower), (c2, leader), (c3, follower)):
            await lab.open_registry(client, first=first, ttl=ttl, timeout=CALL_TIMEOUT)
        ns = "p3"
        for client in (c1, c2, c3):
            r = await client.ok("register", ns=ns, name=f"before-{client.name}", value=client.name)
            lab.record_register(client.name, key(ns, f"before-{client.name}"), client.name, r)
        befores = [[ns, f"before-{c}"] for c in ("c1", "c2", "c3")]
        for client in (c1, c2, c3):
            lab.record_sync_reads(client.name, await client.ok("sync_lookup", keys=befores))

        net = lab.net
        stranded = net.hosts[f"m{follower}"]
        majority = [net.hosts[f"m{i}"] for i in range(3) if i != follower]
        # The member loses its peers; c1 still reaches every member, c3 only the stranded one.
        # Everything below runs on a fixed schedule from the cut, however long c1 takes.
        t_cut = net.partition([stranded, c3.host], majority)
        problems: list[str] = []

        async def at(offset: float) -> None:
            await trio.sleep(max(0.0, t_cut + offset - now()))

        r1 = await c1.send("register", ns=ns, name="during-c1", value="c1")
        s1 = await c1.send("sync_lookup", keys=befores)
        r2 = await c2.send("register", ns=ns, name="during-c2", value="c2")
        during = [[ns, "during-c1"], [ns, "during-c2"]]
        # c3, stranded: its reads answer from its view, its writes cannot succeed.
        await at(0.5)
        read_times = []
        for name in ("before-c1", "before-c2", "before-c3"):
            lk = await c3.call("lookup", ns=ns, name=name, timeout=2)
            read_times.append(lk.t1 - lk.t0)  # type: ignore[operator]
            if lk.result != name.split("-")[1]:
                problems.append(f"c3's local read of {name} answered {lk.result!r} during the cut")
        r3 = await c3.send("register", ns=ns, name="during-c3", value="c3")
        await r2.wait(CALL_TIMEOUT)
        # A sync after c2's write returned must show it (c1 reads through the majority).
        s1b = await c1.send("sync_lookup", keys=during + befores)
        await at(4.0)
        h3 = (await c3.ok("health")).result
        h1 = (await c1.ok("health")).result
        await at(max(s1b.sent - t_cut, 0.0) + CALL_TIMEOUT + 0.6)

        # c1 (talking to the stranded member) moved to the majority within its call timeout.
        for what, reply in (("register", r1), ("sync", s1), ("sync after c2's write", s1b)):
            took = (reply.t1 or math.inf) - reply.t0
            if not reply.ok or took > CALL_TIMEOUT + 0.5:
                problems.append(
                    f"c1's {what} during the cut (invoked at +{reply.t0 - t_cut:.2f} s):"
                    f" {reply.error or 'no answer'} after {min(took, now() - reply.t0):.2f} s"
                    f" (call timeout {CALL_TIMEOUT} s): it did not move to the majority in time"
                )
        if s1b.ok and s1b.result.get(key(ns, "during-c2")) != "c2":
            problems.append(f"c1's sync after c2's write does not show it: {s1b.result}")
        stale3 = _stale_since(h3)
        if stale3 is None:
            problems.append(
                "c3 is stranded with a minority member (its view cannot be current) but"
                " health_check() does not say the view may be stale, nor since when:"
                f" ok={h3['ok']}, detail={h3['detail']!r}, details fields"
                f" {sorted(h3['details'])} (expected {STALE_FIELD!r})"
            )
        elif not (t_cut - 2 * CALL_TIMEOUT <= stale3 <= h3["mono"]):
            problems.append(
                f"c3's view is said stale since {stale3 - t_cut:+.2f} s from the cut, not around it"
            )
        if r1.ok and s1.ok and _stale_since(h1) is not None:
            problems.append(f"c1 moved to the majority but its health says stale: {h1['details']}")

        t_heal = net.heal_all()
        for reply in (r1, r2, r3, s1, s1b):
            await reply.wait(4 * CALL_TIMEOUT)
        lab.record_register("c1", key(ns, "during-c1"), "c1", r1)
        lab.record_register("c2", key(ns, "during-c2"), "c2", r2)
        lab.record_register("c3", key(ns, "during-c3"), "c3", r3)
        lab.record_sync_reads("c1", s1)
        lab.record_sync_reads("c1", s1b)
        s3 = await c3.call("sync_lookup", keys=during + befores, timeout=4 * CALL_TIMEOUT)
        lab.record_sync_reads("c3", s3)
        if not s3.ok:
            problems.append(f"c3 could not sync after healing: {s3.message}")
        h3_after = await _wait_healthy(c3, 2 * CALL_TIMEOUT)
        if h3_after is None or not h3_after["ok"] or _stale_since(h3_after) is not None:
            problems.append(f"c3's health after healing and sync: {h3_after}")
        final = await c2.ok("sync_lookup", keys=during + befores + [[ns, "during-c3"]])
        lab.record_sync_reads("c2", final)
        lab.lease_evidence(c2)
        problems += _linearizability(lab)
        lab.notes += [
            "c1 during the cut: "
            + "; ".join(
                f"{w} {r.error or 'ok'} in {((r.t1 or math.inf) - r.t0):.3f} s"
                for w, r in (("register", r1), ("sync", s1), ("sync after c2", s1b))
            ),
            f"c3 stranded: register {r3.error or 'ok'} after {((r3.t1 or math.inf) - r3.t0):.2f} s;"
            f" local reads took {max(read_times) * 1000:.2f} ms at most",
            f"c3 health during the cut: ok={h3['ok']} detail={h3['detail']!r}",
            "c3 stale since: "
            + ("absent" if stale3 is None else f"{stale3 - t_cut:+.2f} s from the cut"),
            f"c3 sync after heal: {s3.error or 'ok'} in {((s3.t1 or math.inf) - s3.t0):.2f} s"
            f" (healed at +{t_heal - t_cut:.2f} s)",
        ]
        assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------
# 4. Healing
# --------------------------------------------------------------------------


async def test_healing_puts_names_back_and_reports_a_conflict(lab: Lab) -> None:
    with trio.fail_after(BOUND):
        leader, follower = await _cluster_and_leader(lab)
        a, b, o = await lab.start_drivers("a", "b", "o")
        ttl = 5
        await lab.open_registry(a, first=follower, ttl=ttl, timeout=CALL_TIMEOUT)
        await lab.open_registry(b, first=leader, ttl=ttl, timeout=CALL_TIMEOUT)
        await lab.open_registry(o, first=leader, ttl=ttl, timeout=CALL_TIMEOUT)
        await a.ok("telemetry", prefix="foundation.registry")
        await a.ok("telemetry", prefix="foundation.etcd")
        ns = "p4"
        names = ["n1", "n2", "n3"]
        for name in names:
            r = await a.ok("register", ns=ns, name=name, value=f"a-{name}")
            lab.record_register("a", key(ns, name), f"a-{name}", r)
        before = await lab.registry_entries()
        old_lease = before[key(ns, "n1")]["lease"]
        assert old_lease
        assert all(before[key(ns, n)]["lease"] == old_lease for n in names)

        t_cut = lab.net.cut(a.host)
        gone = await o.wait_event(
            lambda e: (
                e.get("event") == "watch"
                and e["kind"] == "unregistered"
                and e["registration"]["name"] == "n2"
            ),
            3 * ttl + 5,
        )
        assert gone is not None, "the observer never saw a's names expire while a was cut off"
        t_expired = gone["t"]
        # b takes n2 while a is away (retrying while etcd has not yet deleted it).
        rb = None
        with trio.fail_after(2 * ttl):
            while True:
                rb = await b.call("register", ns=ns, name="n2", value="b-n2")
                lab.record_register("b", key(ns, "n2"), "b-n2", rb)
                if rb.ok:
                    break
                await trio.sleep(0.2)
        await trio.sleep(1.0)
        t_heal = lab.net.heal(a.host)

        # a re-establishes its lease and puts n1, n3 back; it must not take n2 from b.
        back = {}
        for name in ("n1", "n3"):
            ev = await o.wait_event(
                lambda e, name=name: (
                    e.get("event") == "watch"
                    and e["kind"] == "registered"
                    and e["registration"]["name"] == name
                    and e["t"] > t_heal - 1
                ),
                4 * ttl,
            )
            back[name] = ev
        reported = await a.wait_event(
            lambda e: (
                e.get("event") == "watch"
                and e["kind"] == "unregistered"
                and e["registration"]["name"] == "n2"
                and e["t"] > t_cut
            ),
            3 * ttl,
        )
        await trio.sleep(1.0)  # anything a would still do wrongly, let it show
        health = await _wait_healthy(a, 2 * ttl)
        sa = await a.call("sync_lookup", keys=[[ns, n] for n in names], timeout=4 * CALL_TIMEOUT)
        lab.record_sync_reads("a", sa)
        so = await o.ok("sync_lookup", keys=[[ns, n] for n in names])
        lab.record_sync_reads("o", so)
        after = await lab.registry_entries()
        lab.lease_evidence(o)

        problems: list[str] = []
        for name in ("n1", "n3"):
            entry = after.get(key(ns, name))
            if back[name] is None or entry is None or entry["value"] != f"a-{name}":
                problems.append(f"{name} was not put back after healing: etcd has {entry}")
            elif entry["lease"] == old_lease:
                problems.append(f"{name} is still bound to the old lease {old_lease:x}")
            elif await lab.cluster.lease_ttl(entry["lease"]) <= 0:  # type: ignore[union-attr]
                problems.append(f"{name}'s new lease {entry['lease']:x} is not alive")
        n2 = after.get(key(ns, "n2"))
        if n2 is None or n2["value"] != "b-n2":
            problems.append(f"n2 should hold b's value, etcd has {n2}")
        # After b's own registration of n2 (its event may be stamped after the call
        # returned), b's view never sees n2 change: a did not overwrite it.
        b_events = [e for e in b.find("watch") if e["registration"]["name"] == "n2"]
        mine = [
            i
            for i, e in enumerate(b_events)
            if e["kind"] == "registered" and e["registration"]["value"] == "b-n2"
        ]
        b_n2 = b_events[mine[0] + 1 :] if mine else b_events
        if b_n2:
            problems.append(f"b saw its n2 change after registering it: {b_n2}")
        if sa.ok and sa.result.get(key(ns, "n2")) != "b-n2":
            problems.append(f"a's view after sync says n2 = {sa.result.get(key(ns, 'n2'))!r}")
        if reported is None:
            problems.append(
                "a's watchers saw no unregistration of n2 (the conflict went unreported)"
            )
        elif reported.get("reason_missing"):
            problems.append(
                "a reported n2's unregistration without a reason field"
                " (RegistryEvent.reason is missing; expected reason='lease')"
            )
        elif reported.get("reason") != "lease":
            problems.append(
                f"a reported n2's unregistration with reason {reported.get('reason')!r}"
            )
        wrong = [
            e
            for e in a.find("watch")
            if e["kind"] == "unregistered"
            and e["registration"]["name"] in ("n1", "n3")
            and e.get("reason") == "lease"
        ]
        if wrong:
            problems.append(f"a reported names it put back as lost: {wrong}")
        conflicts = [e for e in a.find("telemetry") if e["name"] == "foundation.registry.conflict"]
        if not conflicts:
            problems.append(
                "no foundation.registry.conflict telemetry from a for n2; a emitted: "
                + str(sorted({e["name"] for e in a.find("telemetry")}))
            )
        elif not any("n2" in json.dumps(e["metadata"]) for e in conflicts):
            problems.append(f"the conflict telemetry does not name n2: {conflicts}")
        problems += _linearizability(lab)
        lab.notes += [
            f"a cut at 0; observer saw n2 expire at +{t_expired - t_cut:.2f} s;"
            f" b took n2 at +{((rb.t1 if rb else 0) or 0) - t_cut:.2f} s; healed at"
            f" +{t_heal - t_cut:.2f} s",
            "put back: "
            + ", ".join(
                f"{n} at +{ev['t'] - t_cut:.2f} s" if ev else f"{n} never" for n, ev in back.items()
            ),
            "a's report of n2: "
            + str(reported and {k: reported.get(k) for k in ("kind", "reason", "reason_missing")}),
            f"a's telemetry: {sorted({e['name'] for e in a.find('telemetry')})}",
            f"a healthy again: {bool(health and health['ok'])}; watch errors seen by a:"
            f" {[e.get('error') for e in a.find('watch_error')]}",
            f"old lease {old_lease:x}; n1 now on {after.get(key(ns, 'n1'), {}).get('lease', 0):x}",
        ]
        assert not problems, "\n".join(problems)
