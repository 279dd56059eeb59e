"""The demo's live view and its summary, as text.

On a terminal the view is one compact block redrawn in place every half
second (supervision tree, names, leader and lock, last round, restarts,
recent events). When the output is not a terminal (a pipe, a CI log) there
are no escape codes: one line per event and per round, which reads well
afterwards. Both render from the same JSON snapshot the demo publishes, so
what ``inspect`` shows is what the view showed.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from ._observe import CHECKS, DemoSummary
from ._snapshot import INSTANCES_NS, LEADER_NAME, LEDGER_LOCK, NAMES_NS, render_tree

__all__ = ["View", "format_event", "format_summary", "render_status"]


def format_event(ev: Mapping[str, Any]) -> str | None:
    """One line for an event, or None for events the log does not show."""
    kind = ev.get("kind")
    text: str | None
    if kind == "start":
        text = f"{ev['instance']} started"
        if ev.get("proc"):
            text += f" in {ev['proc']} (pid {ev.get('pid')})"
    elif kind == "exit":
        error = ev.get("error")
        text = f"{ev['instance']} crashed: {error}" if error else f"{ev['instance']} stopped"
    elif kind == "restart":
        text = f"{ev['supervisor']} restarted {ev['child']} (restart {ev['restarts']})"
    elif kind == "escalate":
        text = f"{ev['supervisor']} gave up on {ev['child']}: {ev.get('error')}"
    elif kind == "elected":
        text = (
            f"{ev['instance']} leads: term {ev['term']},"
            f" holds lock {LEDGER_LOCK} (fencing token {ev['token']})"
        )
    elif kind == "name":
        old, new = ev.get("old"), ev.get("new")
        where = f"{NAMES_NS}/{ev['name']}"
        text = f"name {where} -> {new}" if old is None else f"name {where} moved: {old} -> {new}"
    elif kind == "stopping":
        text = f"{ev.get('seconds')} s are up: stopping the supervision tree (reverse start order)"
    elif kind == "fault":
        text = _fault_text(ev)
    elif kind == "process":
        if ev.get("event") == "started":
            text = f"process {ev['proc']} started (pid {ev.get('pid')})"
        else:
            text = (
                f"process {ev['proc']} (pid {ev.get('pid')}) exited, status {ev.get('returncode')}"
            )
    else:
        text = None
    if text is None:
        return None
    return f"{float(ev.get('at', 0.0)):7.2f}s  {text}"


def _fault_text(ev: Mapping[str, Any]) -> str:
    head = f"fault #{ev['index']}"
    if ev.get("victim") is None:
        return f"{head} ({ev['target']}): no live victim, skipped"
    if ev["target"] == "process":
        verb = "killed" if ev.get("killed") else "could not kill"
        return f"{head}: {verb} pid {ev.get('pid')}, the process of leader {ev['victim']}"
    if ev["target"] == "leader":
        return f"{head}: crash the leader {ev['victim']}"
    return f"{head}: crash {ev['victim']}"


def _round_text(rnd: Mapping[str, Any]) -> str:
    return f"round {rnd['round']}: agreed {rnd['value']} (proposed by {rnd.get('proposer')})"


def render_status(snap: Mapping[str, Any], *, events: int = 6) -> list[str]:
    """The status block of a snapshot: what the live view draws and ``inspect`` prints."""
    elapsed = float(snap.get("elapsed", 0.0))
    state = "running" if snap.get("running") else "finished"
    where = snap.get("mode", "?")
    if snap.get("etcd"):
        where += f" on {', '.join(snap['etcd'].get('endpoints', []))}"
    lines = [
        f"trio-foundation demo ({state}) · {where} · {snap.get('backend')} registry"
        f" · seed {snap.get('seed')} · {snap.get('workers')} workers"
        f" · {elapsed:.1f} s of {float(snap.get('seconds', 0.0)):.0f} s",
        "supervision",
    ]
    tree = snap.get("tree")
    lines += ["  " + line for line in (render_tree(tree) if tree else ["(not started)"])]
    lines.append("names")
    lines += ["  " + line for line in _names(snap.get("registrations", ()))] or ["  (none)"]
    lines.append(f"leader    {_leader(snap)}")
    rnd = snap.get("round")
    if rnd:
        lines.append(
            f"round     {rnd['round']} · agreed {rnd['value']} (proposed by"
            f" {rnd.get('proposer')}) · learned by {rnd.get('learners')}"
        )
    restarts = snap.get("restarts") or {}
    text = " · ".join(f"{k}: {v}" for k, v in restarts.items()) or "none yet"
    lines.append(f"restarts  {text}   failovers: {snap.get('failovers', 0)}")
    recent = [line for ev in snap.get("events", ()) if (line := format_event(ev))]
    if recent and events:
        lines.append("recent")
        lines += ["  " + line.strip() for line in recent[-events:]]
    return lines


def _names(regs: Sequence[Mapping[str, Any]]) -> list[str]:
    roles = {
        r["name"]: r.get("metadata", {}).get("role")
        for r in regs
        if r.get("namespace") == INSTANCES_NS
    }
    out = []
    for r in regs:
        if r.get("namespace") != NAMES_NS:
            continue
        role = roles.get(r.get("value"))
        suffix = "" if r["name"] == LEADER_NAME or role is None else f" ({role})"
        out.append(f"{NAMES_NS}/{r['name']} -> {r.get('value')}{suffix}")
    pills = [r for r in regs if r.get("namespace") not in (NAMES_NS, INSTANCES_NS)]
    for r in pills:
        out.append(f"{r['namespace']}/{r['name']} (crash ordered)")
    return out


def _leader(snap: Mapping[str, Any]) -> str:
    leader = snap.get("leader")
    text = f"{leader['candidate']} · term {leader['term']}" if leader else "none (election open)"
    for lock in snap.get("locks", ()):
        if lock.get("holder"):
            text += (
                f" · lock {lock['name']} held by {lock['holder']}"
                f" (token {lock['token']}, {float(lock.get('held_for') or 0):.1f} s)"
            )
        else:
            text += f" · lock {lock['name']} free"
    return text


class View:
    """Where the live view goes: a terminal (redrawn block) or a log (one line per event).

    Args:
        stream: The text stream to write to.
        tty: Redraw in place; default: whether ``stream`` is a terminal.
    """

    def __init__(self, stream: TextIO, *, tty: bool | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self._drawn = 0
        self._rounds_shown = -1
        self._shown_status = False

    def say(self, text: str) -> None:
        """Print a line (above the live block on a terminal)."""
        self._clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def on_event(self, ev: Mapping[str, Any]) -> None:
        """Line mode: print the event's line (and a line per new round)."""
        if self.tty:
            return
        if ev.get("kind") == "round":
            if ev["round"] > self._rounds_shown:
                self._rounds_shown = ev["round"]
                self.say(f"{float(ev['at']):7.2f}s  {_round_text(ev)}")
            return
        line = format_event(ev)
        if line is not None:
            self.say(line)

    def update(self, snap: Mapping[str, Any]) -> None:
        """Redraw the status block from ``snap`` (terminal); in line mode, print it once.

        A log gets the first status (the tree as it started, who leads) and
        then one line per event; the summary at the end has the final tree.
        """
        if not self.tty:
            if not self._shown_status:
                self._shown_status = True
                self.say("\n".join(render_status(snap, events=0)))
            return
        size = shutil.get_terminal_size((100, 40))
        width = max(40, size.columns - 1)
        lines = [
            line if len(line) <= width else line[: width - 1] + "…" for line in render_status(snap)
        ]
        # A block taller than the screen scrolls, and the cursor cannot go back
        # up over it: keep it inside (the recent events go first).
        lines = lines[: max(10, size.lines - 1)]
        self._clear()
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
        self._drawn = len(lines)

    def close(self) -> None:
        """Leave the last block on screen."""
        self._drawn = 0

    def _clear(self) -> None:
        if self.tty and self._drawn:
            # Up to the block's first line, then clear to the end of the screen.
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0


def format_summary(summary: DemoSummary, tree: Mapping[str, Any] | None = None) -> str:
    """The end-of-run summary as readable text."""
    s = summary
    lines = [
        f"summary: {s.mode} demo, {s.backend} registry, seed {s.seed}, {s.workers} workers,"
        f" {s.elapsed:.1f} s"
    ]
    if tree:
        lines.append("  final supervision tree")
        lines += ["    " + line for line in render_tree(tree)]
    consistent = all(a["consistent"] for a in s.agreed)
    lines.append(
        f"  rounds      {s.rounds} agreed"
        + (" (every worker learned the same value each round)" if consistent else " (SPLIT!)")
    )
    if s.agreed:
        values = " ".join(str(a["value"]) for a in s.agreed[-8:])
        lines.append(f"              last values: {values}")
        recorded = sum(1 for a in s.agreed if a.get("recorded_by") is not None)
        lines.append(
            f"              {recorded} recorded in the round ledger by compare-and-set"
            " (update_value) and announced over pub/sub"
        )
    restarts = ", ".join(f"{k}: {v}" for k, v in s.restarts.items()) or "none"
    lines.append(f"  restarts    {restarts}")
    for c in s.crashes:
        tag = "planned" if c["injected"] else "UNPLANNED"
        lines.append(f"  crash       {c['at']:.2f}s {c['instance']} ({tag}): {c['error']}")
    for m in s.names_moved:
        lines.append(
            f"  name moved  {m['at']:.2f}s {NAMES_NS}/{m['name']}: {m['old']} -> {m['new']}"
        )

    def terms(leaders: Sequence[Mapping[str, Any]]) -> str:
        return " -> ".join(f"{x['candidate']} (term {x['term']})" for x in leaders)

    running = [x for x in s.leaders if not x.get("shutdown")]
    shutdown = [x for x in s.leaders if x.get("shutdown")]
    lines.append(f"  leaders     {terms(running) or 'none'}")
    if shutdown:
        lines.append(f"              then, while the tree stopped: {terms(shutdown)}")
    lines.append(f"  failovers   {len(s.failovers)}")
    lines.append(
        f"  leftovers   {len(s.leftovers)} registration(s) left by dead workers,"
        f" {len(s.stale)} stale during the run"
    )
    for name, ok in s.checks.items():
        lines.append(f"  [{'ok' if ok else 'FAILED'}] {CHECKS.get(name, name)}")
    if s.state_path:
        lines.append(f"  state       {s.state_path}")
    lines.append("result: OK" if s.ok else "result: FAILED: " + "; ".join(s.problems))
    return "\n".join(lines)
