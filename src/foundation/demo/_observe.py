"""What the demo saw, and whether it adds up: the event log, the summary and its checks.

Every part of a run reports events (plain dicts, so worker processes can
send them as JSON lines): instances starting and exiting, restarts, rounds,
leaders, names moving, faults. :class:`Observations` folds them into the
state the live view shows and, at the end, into a :class:`DemoSummary` whose
checks are the scenario's claims: restarts happened, a name moved to a new
instance, leadership failed over, every round was agreed, only planned
crashes happened, and nothing stayed registered by dead workers. In etcd
mode, where the workers are children of a distributed supervisor, two more:
no worker ever ran twice at once (by the machine's monotonic clock, which
every process stamps its events with) and fencing tokens only grew; and the
workers of the killed process ran again within T + 2 s of the kill.
"""

from __future__ import annotations

import collections
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._config import DemoConfig, Fault
from ._snapshot import LEADER_NAME, NAMES_NS

__all__ = ["CHECKS", "DemoSummary", "Observations", "worker_of"]

#: The scenario's checks, in the order the summary lists them.
CHECKS = {
    "restarts": "crashed workers were restarted",
    "name_moved": "a worker's name moved to its new instance",
    "failover": "leadership failed over to another worker (higher term)",
    "agreement": "every round was agreed (all workers learned one value)",
    "planned_crashes_only": "no crash other than the planned ones",
    "no_leftovers": "nothing stayed registered by dead workers",
    "at_most_once": "no worker ran twice at once, and fencing tokens only grew",
    "moved_after_kill": "the killed process's workers ran again within T + 2 s",
}


def worker_of(instance: str | None) -> str | None:
    """``worker-2`` of instance ``worker-2#3`` (None stays None)."""
    return None if instance is None else instance.split("#", 1)[0]


@dataclass(frozen=True)
class DemoSummary:
    """The outcome of a demo run: what happened, and the checks over it.

    ``ok`` is true when every check holds; ``problems`` says why not, one
    sentence per failed check. :meth:`to_json` is what ``--json`` prints.
    """

    ok: bool
    problems: tuple[str, ...]
    checks: Mapping[str, bool]
    mode: str
    backend: str
    seed: int
    workers: int
    seconds: float
    elapsed: float
    #: Rounds agreed: ``{"round", "value", "proposer", "learners", "recorded_by",
    #: "consistent"}`` (``recorded_by``: the instance that won the round
    #: ledger's compare-and-set, as announced over pub/sub; None if unseen).
    agreed: tuple[Mapping[str, Any], ...]
    #: Restarts per supervised child (workers; in etcd mode also processes).
    restarts: Mapping[str, int]
    crashes: tuple[Mapping[str, Any], ...]
    faults: tuple[Mapping[str, Any], ...]
    #: ``{"at", "name", "old", "new"}``: a name moved from one instance to another.
    names_moved: tuple[Mapping[str, Any], ...]
    #: Every leader seen, in term order: ``{"at", "candidate", "term"}``, plus
    #: ``"shutdown": True`` for those elected while the tree was stopping.
    leaders: tuple[Mapping[str, Any], ...]
    #: ``{"at", "old", "new", "from_term", "to_term"}``: leadership moved to another worker.
    failovers: tuple[Mapping[str, Any], ...]
    #: Registrations still there once every worker had stopped.
    leftovers: tuple[Mapping[str, Any], ...]
    #: Registrations seen pointing at an instance dead for longer than the grace.
    stale: tuple[Mapping[str, Any], ...]
    #: Every instance seen: ``{instance: {"worker", "pid", "started", "ended"}}``.
    instances: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    state_path: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def rounds(self) -> int:
        """How many rounds were agreed."""
        return len(self.agreed)

    def to_json(self) -> dict[str, Any]:
        """The summary as JSON data."""
        return {
            "ok": self.ok,
            "problems": list(self.problems),
            "checks": dict(self.checks),
            "mode": self.mode,
            "backend": self.backend,
            "seed": self.seed,
            "workers": self.workers,
            "seconds": self.seconds,
            "elapsed": round(self.elapsed, 3),
            "rounds": self.rounds,
            "agreed": [dict(a) for a in self.agreed],
            "restarts": dict(self.restarts),
            "crashes": [dict(c) for c in self.crashes],
            "faults": [dict(f) for f in self.faults],
            "names_moved": [dict(m) for m in self.names_moved],
            "leaders": [dict(x) for x in self.leaders],
            "failovers": [dict(f) for f in self.failovers],
            "leftovers": [dict(x) for x in self.leftovers],
            "stale": [dict(x) for x in self.stale],
            "instances": {k: dict(v) for k, v in self.instances.items()},
            "state_path": self.state_path,
            **dict(self.extra),
        }


class _Round:
    __slots__ = ("learners", "proposer", "value")

    def __init__(self, value: Any, proposer: Any) -> None:
        self.value = value
        self.proposer = proposer
        self.learners: dict[str, Any] = {}


class Observations:
    """The running tally of one demo run, fed with events by :meth:`apply`.

    Sync and cheap: events come from workers, telemetry handlers and watch
    loops in the same Trio run (or, in etcd mode, from the worker processes'
    JSON lines), and listeners (the live view) are called for each.
    """

    def __init__(self, config: DemoConfig, plan: Sequence[Fault]) -> None:
        self.config = config
        self.plan = tuple(plan)
        self.log: collections.deque[dict[str, Any]] = collections.deque(maxlen=200)
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self.rounds: dict[int, _Round] = {}
        #: round -> (value, instance) the round ledger recorded (announced over pub/sub)
        self.recorded: dict[int, tuple[Any, Any]] = {}
        self.restarts: collections.Counter[str] = collections.Counter()
        self._restart_counts: dict[tuple[str, str, str], int] = {}
        self.crashes: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []
        self.moves: list[dict[str, Any]] = []
        self.names: dict[str, Any] = {}
        self.leaders: list[dict[str, Any]] = []
        self.leader: dict[str, Any] | None = None
        #: instance -> {"worker", "pid", "started", "ended" (None while alive)}
        self.instances: dict[str, dict[str, Any]] = {}
        #: etcd mode: the latest supervision tree each worker process reported.
        self.trees: dict[str, dict[str, Any]] = {}
        self.stale: dict[tuple[str, str], dict[str, Any]] = {}
        self.escalations: list[dict[str, Any]] = []
        #: etcd mode: process kills, ``{"pid", "mono", "at"}``.
        self.kills: list[dict[str, Any]] = []
        #: etcd mode: the largest TTL a node reported as granted (T).
        self.cluster_ttl: float | None = None
        #: Set by the ``stopping`` event: the tree is shutting down, so leader
        #: and name changes from here on are the shutdown's, not failovers
        #: (its leaders are still listed, marked ``shutdown``).
        self.stopping = False

    # -- feeding -----------------------------------------------------------------
    def apply(self, event: dict[str, Any]) -> None:
        """Fold one event in and tell the listeners (never blocks)."""
        kind = event.get("kind")
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(event)
        if kind != "tree":
            self.log.append(event)
            for listener in self.listeners:
                listener(event)

    def _on_start(self, ev: dict[str, Any]) -> None:
        self.instances[ev["instance"]] = {
            "worker": ev["worker"],
            "pid": ev.get("pid"),
            "started": ev["at"],
            "ended": None,
            "token": ev.get("token"),
            "mono_start": ev.get("mono"),
            "mono_end": None,
        }

    def _on_exit(self, ev: dict[str, Any]) -> None:
        info = self.instances.get(ev["instance"])
        if info is not None and info["ended"] is None:
            info["ended"] = ev["at"]
            info["mono_end"] = ev.get("mono")
        if ev.get("error") is not None:
            self.crashes.append(
                {
                    "at": ev["at"],
                    "worker": ev["worker"],
                    "instance": ev["instance"],
                    "error": ev["error"],
                    "injected": bool(ev.get("injected")),
                }
            )

    def _on_restart(self, ev: dict[str, Any]) -> None:
        # ``restarts`` is the child's count in the supervisor that restarted
        # it. Under the distributed supervisor a worker that crashes on one
        # process and later on another is restarted by two supervisors, each
        # counting from 1: sum the per-process counts, or the second restart
        # would hide behind the first.
        child = str(ev["child"])
        where = (child, str(ev.get("proc", "")), str(ev.get("supervisor", "")))
        self._restart_counts[where] = max(self._restart_counts.get(where, 0), int(ev["restarts"]))
        self.restarts[child] = sum(n for (c, _, _), n in self._restart_counts.items() if c == child)

    def _on_escalate(self, ev: dict[str, Any]) -> None:
        self.escalations.append(ev)

    def _on_round(self, ev: dict[str, Any]) -> None:
        rnd = self.rounds.get(ev["round"])
        if rnd is None:
            rnd = self.rounds[ev["round"]] = _Round(ev["value"], ev.get("proposer"))
        rnd.learners[ev["instance"]] = ev["value"]

    def _on_recorded(self, ev: dict[str, Any]) -> None:
        if isinstance(ev.get("round"), int):
            self.recorded.setdefault(ev["round"], (ev.get("value"), ev.get("by")))

    def _on_fault(self, ev: dict[str, Any]) -> None:
        self.faults.append({k: v for k, v in ev.items() if k != "kind"})
        if ev.get("target") == "process" and ev.get("killed") and ev.get("mono") is not None:
            self.kills.append({"pid": ev.get("pid"), "mono": ev["mono"], "at": ev["at"]})

    def _on_node(self, ev: dict[str, Any]) -> None:
        ttl = ev.get("ttl")
        if isinstance(ttl, int | float):
            self.cluster_ttl = max(self.cluster_ttl or 0.0, float(ttl))

    def _on_name(self, ev: dict[str, Any]) -> None:
        if self.stopping:
            return
        old, new = ev.get("old"), ev.get("new")
        self.names[ev["name"]] = new
        if old is not None and old != new:
            self.moves.append({"at": ev["at"], "name": ev["name"], "old": old, "new": new})

    def _on_stopping(self, ev: dict[str, Any]) -> None:
        self.stopping = True

    def _on_leader(self, ev: dict[str, Any]) -> None:
        if ev.get("candidate") is None:
            if not self.stopping:
                self.leader = None
            return
        leader = self._note_leader(ev["at"], ev["candidate"], ev["term"])
        if not self.stopping:
            self.leader = leader

    def _on_elected(self, ev: dict[str, Any]) -> None:
        # The winner's own report: a term the observer's latest-value view
        # can miss (the shutdown's handovers follow each other quickly).
        self._note_leader(ev["at"], ev["instance"], ev["term"])

    def _note_leader(self, at: float, candidate: Any, term: Any) -> dict[str, Any]:
        """Add a term to :attr:`leaders` once, in term order (shutdown's terms marked)."""
        for known in self.leaders:
            if known["term"] == term:
                return known
        leader = {"at": at, "candidate": candidate, "term": term}
        if self.stopping:
            leader["shutdown"] = True
        self.leaders.append(leader)
        self.leaders.sort(key=lambda x: x["term"])
        return leader

    def _on_tree(self, ev: dict[str, Any]) -> None:
        self.trees[str(ev["proc"])] = ev["tree"]

    def _on_process(self, ev: dict[str, Any]) -> None:
        """A worker process ended: its instances that did not report an exit are dead."""
        if ev.get("event") != "exited":
            return
        self.trees.pop(str(ev.get("proc")), None)  # its workers' tree died with it
        killed = [k["mono"] for k in self.kills if k["pid"] == ev.get("pid")]
        for info in self.instances.values():
            if info["pid"] == ev.get("pid") and info["ended"] is None:
                info["ended"] = ev["at"]
                # Killed: it ran until the kill at the latest.
                info["mono_end"] = min(killed) if killed else ev.get("mono")
        if ev.get("returncode") not in (0, None):
            code = ev.get("returncode")
            how = f"killed by signal {-code}" if isinstance(code, int) and code < 0 else None
            self.crashes.append(
                {
                    "at": ev["at"],
                    "worker": ev["proc"],
                    "instance": f"{ev['proc']} (pid {ev.get('pid')})",
                    "error": f"process {how or f'exited with status {code}'}",
                    "injected": bool(ev.get("injected")),
                }
            )

    # -- questions -----------------------------------------------------------------
    def dead(self, instance: Any, now: float, grace: float) -> bool:
        """True if ``instance`` ended more than ``grace`` seconds before ``now``."""
        info = self.instances.get(instance) if isinstance(instance, str) else None
        return info is not None and info["ended"] is not None and now - info["ended"] > grace

    def check_stale(self, registrations: Sequence[Mapping[str, Any]], now: float) -> None:
        """Note registrations that point at an instance dead for longer than the grace.

        A name pointing at a dead instance is what the owner-scoped
        registrations exist to prevent. Locally a dead instance's entries are
        gone in the same scheduling step it ends in; on etcd an instance of a
        killed process keeps them until its lease expires, hence the grace.
        """
        grace = 0.5 if self.config.etcd is None else 2.0 * self.config.ttl + 8.0
        for reg in registrations:
            for instance in (reg.get("value"), reg.get("name")):
                if self.dead(instance, now, grace):
                    key = (str(reg.get("namespace")), str(reg.get("name")))
                    self.stale.setdefault(key, {"at": round(now, 3), **reg})

    def last_round(self) -> dict[str, Any] | None:
        """The newest round: ``{"round", "value", "proposer", "learners"}``."""
        if not self.rounds:
            return None
        n = max(self.rounds)
        rnd = self.rounds[n]
        return {
            "round": n,
            "value": rnd.value,
            "proposer": rnd.proposer,
            "learners": len(rnd.learners),
        }

    def failovers(self) -> list[dict[str, Any]]:
        """Each change of leader to another worker, with a higher term (before shutdown).

        The handovers of the shutdown (the tree stops its workers one by one)
        are in :attr:`leaders` but are no failovers.
        """
        out = []
        running = [x for x in self.leaders if not x.get("shutdown")]
        for a, b in itertools.pairwise(running):
            if b["term"] > a["term"] and worker_of(a["candidate"]) != worker_of(b["candidate"]):
                out.append(
                    {
                        "at": b["at"],
                        "old": a["candidate"],
                        "new": b["candidate"],
                        "from_term": a["term"],
                        "to_term": b["term"],
                    }
                )
        return out

    def kill_window_end(self, t0: float) -> float:
        """The Trio time until which a run must last to see the last kill's recovery.

        T + 2 s (and a little) after the last process kill; ``t0`` is the
        run's start, which event times (``at``) count from.
        """
        if not self.kills:
            return t0
        ttl = self.cluster_ttl if self.cluster_ttl is not None else float(self.config.ttl)
        last: float = max(k["at"] for k in self.kills)
        return t0 + last + ttl + 2.5

    def overlaps(self) -> list[str]:
        """etcd mode: instances of one worker alive at once, or a token that went down."""
        problems = []
        by_worker: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for instance, info in self.instances.items():
            if info.get("mono_start") is not None:
                by_worker[info["worker"]].append({"instance": instance, **info})
        for worker, runs in sorted(by_worker.items()):
            runs.sort(key=lambda r: r["mono_start"])
            for a, b in itertools.pairwise(runs):
                end = a["mono_end"] if a["mono_end"] is not None else math.inf
                if b["mono_start"] < end:
                    problems.append(
                        f"{worker}: {b['instance']} started before {a['instance']} ended"
                    )
                ta, tb = a.get("token"), b.get("token")
                # A restart where it runs keeps its lock (and token); a move takes a new one.
                if (
                    ta is not None
                    and tb is not None
                    and (tb < ta or (tb == ta and a["pid"] != b["pid"]))
                ):
                    problems.append(
                        f"{worker}: token {tb} of {b['instance']} after {ta} of {a['instance']}"
                    )
        return problems

    def recoveries(self) -> list[dict[str, Any]]:
        """etcd mode: for each worker of a killed process, how long until it ran again.

        ``after`` is None when it did not run again before the end.
        """
        out = []
        for kill in self.kills:
            hit = [
                info
                for info in self.instances.values()
                if info["pid"] == kill["pid"]
                and info.get("mono_start") is not None
                and info["mono_start"] < kill["mono"]
                and (info.get("mono_end") is None or info["mono_end"] >= kill["mono"] - 0.001)
            ]
            for info in hit:
                later = [
                    other["mono_start"]
                    for other in self.instances.values()
                    if other["worker"] == info["worker"]
                    and other.get("mono_start") is not None
                    and other["mono_start"] > kill["mono"]
                ]
                after = min(later) - kill["mono"] if later else None
                out.append(
                    {"worker": info["worker"], "pid": kill["pid"], "after": after, "at": kill["at"]}
                )
        return out

    # -- the end ---------------------------------------------------------------------
    def summary(
        self,
        *,
        backend: str,
        elapsed: float,
        leftovers: Sequence[Mapping[str, Any]],
        state_path: str | None,
        extra: Mapping[str, Any] | None = None,
    ) -> DemoSummary:
        """Fold everything seen into the :class:`DemoSummary` and run the checks."""
        agreed = []
        for n in sorted(self.rounds):
            rnd = self.rounds[n]
            values = set(map(repr, rnd.learners.values()))
            recorded = self.recorded.get(n)
            agreed.append(
                {
                    "round": n,
                    "value": rnd.value,
                    "proposer": rnd.proposer,
                    "learners": len(rnd.learners),
                    "recorded_by": recorded[1] if recorded is not None else None,
                    # every learner has the value, and the ledger recorded that one
                    "consistent": len(values) == 1
                    and (recorded is None or repr(recorded[0]) in values),
                }
            )
        failovers = self.failovers()
        moved_workers = [
            m
            for m in self.moves
            if m["name"] != LEADER_NAME and worker_of(m["old"]) == worker_of(m["new"]) == m["name"]
        ]
        injected = [c for c in self.crashes if c["injected"]]
        unplanned = [c for c in self.crashes if not c["injected"]]
        total_restarts = sum(self.restarts.values())
        checks: dict[str, bool] = {
            "restarts": total_restarts >= 1 and total_restarts >= len(injected),
            "name_moved": bool(moved_workers),
            "failover": bool(failovers),
            "agreement": len(agreed) >= 2 and all(a["consistent"] for a in agreed),
            "planned_crashes_only": not unplanned and not self.escalations,
            "no_leftovers": not leftovers and not self.stale,
        }
        extra = dict(extra or {})
        if self.config.etcd is not None:
            overlaps = self.overlaps()
            recoveries = self.recoveries()
            ttl = self.cluster_ttl if self.cluster_ttl is not None else float(self.config.ttl)
            late = [r for r in recoveries if r["after"] is None or r["after"] > ttl + 2]
            checks["at_most_once"] = not overlaps
            checks["moved_after_kill"] = bool(recoveries) and not late
            extra["recoveries"] = recoveries
            extra["ttl_granted"] = ttl
        problems = []
        if not checks["restarts"]:
            problems.append(
                f"{total_restarts} restart(s) for {len(injected)} planned crash(es);"
                " every crashed worker should have been restarted"
            )
        if not checks["name_moved"]:
            problems.append(
                f"no name under {NAMES_NS!r} moved from a dead instance to its successor"
            )
        if not checks["failover"]:
            seen = ", ".join(f"{x['candidate']} (term {x['term']})" for x in self.leaders)
            problems.append(f"leadership never moved to another worker (leaders: {seen or 'none'})")
        if not checks["agreement"]:
            split = [a["round"] for a in agreed if not a["consistent"]]
            problems.append(
                f"{len(agreed)} round(s) agreed, split rounds: {split or 'none'}"
                " (need 2 or more rounds, each learned alike by every worker)"
            )
        if not checks["planned_crashes_only"]:
            what = [f"{c['instance']}: {c['error']}" for c in unplanned]
            what += [f"escalation: {e.get('error')}" for e in self.escalations]
            problems.append("unplanned crash(es): " + "; ".join(what))
        if not checks["no_leftovers"]:
            names = [f"{r['namespace']}/{r['name']}" for r in leftovers]
            names += [f"{ns}/{name} (stale)" for ns, name in self.stale]
            problems.append("registrations left by dead workers: " + ", ".join(names))
        if not checks.get("at_most_once", True):
            problems.append("a worker ran twice at once: " + "; ".join(self.overlaps()))
        if not checks.get("moved_after_kill", True):
            recoveries = extra.get("recoveries") or []
            if not recoveries:
                problems.append("no process hosting a worker was killed (nothing to recover)")
            else:
                what = [
                    f"{r['worker']}: "
                    + ("never" if r["after"] is None else f"after {r['after']:.2f} s")
                    for r in recoveries
                ]
                problems.append(
                    f"the killed process's workers ran again later than T + 2 s"
                    f" (T = {extra.get('ttl_granted')} s): " + ", ".join(what)
                )
        return DemoSummary(
            ok=all(checks.values()),
            problems=tuple(problems),
            checks=checks,
            mode=self.config.mode,
            backend=backend,
            seed=self.config.seed,
            workers=self.config.workers,
            seconds=float(self.config.seconds),
            elapsed=elapsed,
            agreed=tuple(agreed),
            restarts=dict(sorted(self.restarts.items())),
            crashes=tuple(self.crashes),
            faults=tuple(self.faults),
            names_moved=tuple(self.moves),
            leaders=tuple(self.leaders),
            failovers=tuple(failovers),
            leftovers=tuple(leftovers),
            stale=tuple(self.stale.values()),
            instances={k: dict(v) for k, v in self.instances.items()},
            state_path=state_path,
            extra=extra,
        )
