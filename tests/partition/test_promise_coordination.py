"""Locks and leadership under partitions: a holder cut off stops before anyone else starts.

Promises checked (three etcd members and the clients each on a host of its
own, TTL 5 s):

* a lock holder (or a leader) cut off from the majority gets ``LockLost``
  (``LeadershipLost``) *before its lease can have expired on the server*:
  the test polls etcd from a host that is never cut and records the last
  moment the holder's key was still there; the holder's block must have
  stopped running by then, and before the next holder got in;
* the next holder's fencing token (term) is greater than every earlier one;
* by the one clock of this machine, no two holders are ever inside at once;
* the lock's (election's) history is linearizable;
* for elections, an observer on the majority side sees the new leader, and
  the terms it sees only grow; in the ``minority`` variant a second observer,
  on the majority side but talking first to the stranded member (which stays
  reachable, answers, and is told of nothing), must see the new leader too,
  while the partition lasts.

Variants: the holder's host is cut at the switch (``host``); the holder is
stranded with a minority member (``minority``: it reaches only a member that
lost its peers); the holder's process is paused longer than its lease
(``pause``: it may run one step after it resumes, before its cancellation
lands, so there the fencing token is checked, not wall-clock overlap); the
holder's link is slow (``delay``, needs ``sch_netem``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
from _history import (
    Interval,
    LockModel,
    check_linearizable,
    check_mutual_exclusion,
    check_tokens_increase,
)
from _lab import DriverClient, Lab, Reply, intervals_text, now
from _netns import netem_unavailable

pytestmark = [pytest.mark.partition, pytest.mark.netns]

TTL = 5
#: Seconds each test may take, setup included.
BOUND = 90

VARIANTS = [
    pytest.param("host", id="host-cut"),
    pytest.param("minority", id="stranded-with-minority"),
    pytest.param("pause", id="paused"),
    pytest.param(
        "delay",
        id="slow-link",
        marks=pytest.mark.skipif(
            netem_unavailable() is not None,
            reason=netem_unavailable() or "",
        ),
    ),
]


@dataclass
class KeyWatch:
    """Polls etcd (from the observer, never cut) for the keys under a lock or election."""

    lab: Lab
    queue: str
    members: list[int]
    #: create_revision -> [latest t_before of a read that saw it,
    #: earliest t_after of a read that did not]
    seen: dict[int, list[float]] = field(default_factory=dict)
    polls: int = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        cluster = self.lab.cluster
        assert cluster is not None
        while True:
            t_before = now()
            try:
                kvs = await cluster.range_prefix(self.queue, members=self.members, timeout=1.0)
            except AssertionError:
                await trio.sleep(0.05)
                continue
            t_after = now()
            self.polls += 1
            present = {kv["create_revision"] for kv in kvs}
            # The read took effect somewhere in [t_before, t_after]: a key it saw
            # existed at some moment after t_before; a key it missed was gone by t_after.
            for rev in present:
                entry = self.seen.setdefault(rev, [t_before, float("inf")])
                entry[0] = max(entry[0], t_before)
            for rev, entry in self.seen.items():
                if rev not in present:
                    entry[1] = min(entry[1], t_after)
            await trio.sleep(0.1)

    def last_present(self, revision: int) -> float | None:
        entry = self.seen.get(revision)
        return None if entry is None else entry[0]

    def first_gone(self, revision: int) -> float | None:
        entry = self.seen.get(revision)
        return None if entry is None or entry[1] == float("inf") else entry[1]


async def _start(lab: Lab) -> tuple[DriverClient, DriverClient, DriverClient, int]:
    """Cluster and clients; returns them and the follower ``a`` talks to first.

    ``a`` talks first to a *follower* (the member the minority variant strands
    it with): a stranded leader would make the majority elect a new leader,
    and etcd extends every lease on a leader change, which hides the race
    this test looks for.
    """
    cluster = await lab.start_cluster()
    leader = await cluster.wait_leader()
    follower = next(i for i in range(3) if i != leader)
    a, b, o = await lab.start_drivers("a", "b", "o")
    await lab.open_coordinator(a, first=follower, ttl=TTL)
    await lab.open_coordinator(b, first=leader, ttl=TTL)
    await lab.open_coordinator(o, first=leader, ttl=TTL)
    return a, b, o, follower


def _fault(lab: Lab, variant: str, a: DriverClient, follower: int) -> tuple[float, Any]:
    """Apply the variant's fault to ``a``; returns (time in place, undo)."""
    net = lab.net
    if variant == "host":
        t = net.cut(a.host)
        return t, lambda: net.heal(a.host)
    if variant == "minority":
        stranded = net.hosts[f"m{follower}"]
        others = [net.hosts[f"m{i}"] for i in range(3) if i != follower]
        t = net.partition([stranded, a.host], others)
        return t, net.heal_all
    if variant == "pause":
        t = a.proc.pause()
        return t, a.proc.resume
    if variant == "delay":
        t = net.delay(a.host, 3000)
        return t, lambda: net.undelay(a.host)
    raise AssertionError(variant)


async def _wait_reply(reply: Reply, timeout: float, what: str) -> Reply:
    await reply.wait(timeout)
    assert reply.message is not None, f"{what}: no answer within {timeout} s"
    return reply


async def _holder_cut_off(lab: Lab, variant: str, what: str) -> None:
    """The scenario shared by locks (``what="lock"``) and elections (``what="term"``)."""
    a, b, o, follower = await _start(lab)
    name = "res" if what == "lock" else "grp"
    queue = lab.prefix + name + "/"
    entered_kind = "lock_entered" if what == "lock" else "elected"
    token_field = "token" if what == "lock" else "term"
    lost_error = "LockLost" if what == "lock" else "LeadershipLost"

    def hold(client: DriverClient, tag: str) -> dict[str, Any]:
        if what == "lock":
            return {"op": "lock", "lock": name, "tag": tag, "timeout": 60}
        return {"op": "campaign", "group": name, "candidate": f"{client.name}", "tag": tag}

    observers = []
    if what == "term":
        observers.append(o)
        if variant == "minority":
            # On the majority side, but its coordinator talks first to the member
            # that will be stranded with a.
            (p,) = await lab.start_drivers("p")
            await lab.open_coordinator(p, first=follower, ttl=TTL)
            observers.append(p)
    for observer in observers:
        await observer.send("observe", group=name, tag="obs")

    reply_a1 = await a.send(**hold(a, "a1"))
    entered = await a.wait_event(lambda e: e.get("event") == entered_kind, 20)
    assert entered is not None, f"a never got in: {reply_a1}"
    reply_b1 = await b.send(**hold(b, "b1"))
    await trio.sleep(1.0)  # b is queued behind a
    assert not b.find(entered_kind), "b got in while a held it"

    watch = KeyWatch(lab, queue, members=[i for i in range(3) if i != follower])
    await lab.nursery.start(watch.run)
    await trio.sleep(0.5)

    t_fault, undo = _fault(lab, variant, a, follower)
    b_in = await b.wait_event(lambda e: e.get("event") == entered_kind, 4 * TTL)
    assert b_in is not None, f"b never got in after a was cut off (fault at {t_fault:.3f})"
    # Every observer sees b lead while the fault lasts (bounded: a second to
    # notice, a second to fail over from a stranded member, and slack).
    observed_b: dict[str, dict[str, Any] | None] = {}
    for observer in observers:
        observed_b[observer.name] = await observer.wait_event(
            lambda e: e.get("event") == "leader" and e.get("term") == b_in["term"], 5.0
        )
    t_undo = undo()
    await _wait_reply(reply_a1, 3 * TTL, "a's holder block")
    # a comes back: it queues again and gets in once b leaves.
    await trio.sleep(0.5)
    reply_a2 = await a.send(**hold(a, "a2"))
    await trio.sleep(1.0)
    await b.call("release", tag="b1")
    await _wait_reply(reply_b1, 10, "b's holder block")
    a2_in = await a.wait_event(
        lambda e: e.get("event") == entered_kind and e.get("tag") == "a2", 3 * TTL
    )
    assert a2_in is not None, "a never got in again after healing"
    await a.call("release", tag="a2")
    await _wait_reply(reply_a2, 10, "a's second block")
    if observers:
        await trio.sleep(0.5)
        for observer in observers:
            await observer.call("release", tag="obs")

    # ---- what happened -------------------------------------------------------------
    a_in = entered
    a_exit = a.find(f"{what}_exited", tag="a1")
    assert a_exit, f"a's block never ended: {reply_a1}"
    t_a_exit = a_exit[0]["t"]
    t_b_in = b_in["t"]
    token_a, token_b = a_in[token_field], b_in[token_field]
    last_present = watch.last_present(token_a)
    first_gone = watch.first_gone(token_a)
    steps_after = [
        e
        for e in a.find(f"{what}_step", tag="a1")
        if e["t"] > (t_undo if variant == "pause" else t_fault)
    ]
    lab.notes += [
        f"variant {variant}: fault at 0 (t={t_fault:.3f}), undone at +{t_undo - t_fault:.3f} s",
        f"a's block stopped at +{t_a_exit - t_fault:.3f} s ({a_exit[0]['how']},"
        f" reply {reply_a1.error or 'ok'})",
        f"a's key last seen on the server at +{(last_present or 0) - t_fault:.3f} s,"
        f" seen gone at +{(first_gone or 0) - t_fault:.3f} s ({watch.polls} polls)",
        f"b got in at +{t_b_in - t_fault:.3f} s; margin b_in - a_exit = {t_b_in - t_a_exit:.3f} s",
        f"tokens: a {token_a}, b {token_b}, a again {a2_in[token_field]}",
        f"a's steps after {'resuming' if variant == 'pause' else 'the fault'}: {len(steps_after)}",
    ]

    problems: list[str] = []
    if reply_a1.error != lost_error:
        problems.append(f"a's block ended with {reply_a1.error or 'no error'}, not {lost_error}")
    intervals: list[Interval] = []
    for client in (a, b):
        intervals += lab.holder_intervals(client, what)
    problems += check_tokens_increase(intervals)
    if not token_b > token_a:
        problems.append(f"b's token {token_b} is not greater than a's {token_a}")
    if variant == "pause":
        # A paused holder may run one step after it resumes; the token guards that.
        if len(steps_after) > 1:
            problems.append(f"a ran {len(steps_after)} steps after resuming (at most 1 allowed)")
        fenced = [e for e in steps_after if e[token_field] >= token_b]
        if fenced:
            problems.append(f"a's steps after resuming carry a token not below b's: {fenced}")
    else:
        if not t_a_exit < t_b_in:
            problems.append(f"a was still inside {t_a_exit - t_b_in:.3f} s after b got in")
        if last_present is None:
            problems.append("the observer never saw a's key on the server")
        elif not t_a_exit <= last_present:
            problems.append(
                f"a's block ran until +{t_a_exit - t_fault:.3f} s, after its key was last seen"
                f" on the server (+{last_present - t_fault:.3f} s): the lease may have expired"
                " on the server while a was still inside"
            )
        problems += check_mutual_exclusion(intervals)
        history = lab.record_holds(a, name, what, [reply_a1, reply_a2])
        history += lab.record_holds(b, name, what, [reply_b1])
        result = check_linearizable(history, LockModel(), key=name)
        if not result.ok:
            problems.append(result.explain())

    for observer in observers:
        leaders = observer.find("leader", tag="obs")
        terms = [e["term"] for e in leaders if e["term"] is not None]
        if any(y < x for x, y in itertools.pairwise(terms)):
            problems.append(f"observer {observer.name} saw terms go backwards: {terms}")
        if not any(e["candidate"] == "b" and e["term"] == token_b for e in leaders):
            problems.append(f"observer {observer.name} never saw b lead term {token_b}: {leaders}")
        seen = observed_b[observer.name]
        if seen is None:
            problems.append(
                f"observer {observer.name} did not see b lead term {token_b} while the fault"
                " lasted (5 s after b was elected)"
            )
        lag = "never" if seen is None else f"{seen['t'] - t_b_in:+.2f} s after it was elected"
        lab.notes.append(
            f"observer {observer.name} saw b {lag}; all it saw: "
            + ", ".join(f"{e['candidate']}@{e['term']} (+{e['t'] - t_fault:.2f})" for e in leaders)
        )
    assert not problems, "\n".join(problems) + "\nholders:\n" + intervals_text(intervals)


@pytest.mark.parametrize("variant", VARIANTS)
async def test_lock_holder_cut_off_stops_before_its_lease_can_expire(
    lab: Lab, variant: str
) -> None:
    with trio.fail_after(BOUND):
        await _holder_cut_off(lab, variant, "lock")


@pytest.mark.parametrize(
    "variant", [p for p in VARIANTS if p.id in ("host-cut", "stranded-with-minority")]
)
async def test_leader_cut_off_stops_leading_before_another_is_elected(
    lab: Lab, variant: str
) -> None:
    with trio.fail_after(BOUND):
        await _holder_cut_off(lab, variant, "term")
