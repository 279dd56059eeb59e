"""Histories of operations, a linearizability checker, and the invariants of the promises.

An :class:`Op` is one call as a client saw it: invoked at ``call``, answered
at ``ret`` (``None``: no answer, the outcome is unknown, a *pending* op), with
its ``result``. Times come from one clock for the whole machine
(``time.monotonic()`` in every process), so ops of different processes
compare.

:func:`check_linearizable` decides whether a history of one object (one
registry key, one lock) is linearizable with respect to a sequential model,
by the search of Wing & Gong with the memoisation of Lowe (the algorithm of
Knossos and Porcupine): repeatedly pick an op that may come first (no op
that is still to be placed returned before it was called), apply it to the
model, and backtrack when the model refuses its result; a ``(set of placed
ops, model state)`` pair already explored is never explored again. Completed
ops must all be placed; a pending op may be placed at any point after its
call, or never (it may not have happened), and its result is not checked.
Histories of different keys are independent (linearizability is
compositional), so each key is checked on its own.

The models (:class:`RegisterModel`, :class:`LockModel`) and the invariants
(:func:`check_mutual_exclusion`, :func:`check_tokens_increase`,
:func:`check_acknowledged_kept`) say what the registry and the coordinator
promise under faults.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "History",
    "Interval",
    "LinearizabilityResult",
    "LockModel",
    "Model",
    "Op",
    "RegisterModel",
    "check_acknowledged_kept",
    "check_linearizable",
    "check_mutual_exclusion",
    "check_tokens_increase",
]

#: The result of an ``AlreadyRegistered`` register call.
TAKEN = "taken"


@dataclass(frozen=True)
class Op:
    """One operation on one object (``key``), as its client saw it.

    ``ret`` is None for a pending op (no answer: it may or may not have taken
    effect). ``kind`` and ``arg`` are the model's: ``register``/``unregister``/
    ``read``/``expire``/``reput`` for a registry key, ``acquire``/``release``
    for a lock.
    """

    process: str
    key: str
    kind: str
    arg: Any
    call: float
    ret: float | None
    result: Any = None
    #: Free text for failure messages (command id, event...).
    note: str = ""

    @property
    def pending(self) -> bool:
        return self.ret is None

    def __str__(self) -> str:
        ret = "pending" if self.ret is None else f"{self.ret:.3f}"
        res = "" if self.ret is None else f" -> {self.result!r}"
        return f"{self.process}: {self.kind}({self.arg!r}){res} [{self.call:.3f}, {ret}]" + (
            f" ({self.note})" if self.note else ""
        )


class Model(Protocol):
    """A sequential specification: ``step`` says whether ``op`` may give its result in ``state``."""

    def init(self) -> Hashable: ...

    def step(self, state: Hashable, op: Op) -> tuple[bool, Hashable]:
        """``(ok, next state)``; for a pending op ``ok`` must be True (its result is unknown)."""
        ...


class RegisterModel:
    """One registry key: the state is the registered value (JSON-able, hashable) or None.

    * ``register(v)`` -> ``"ok"`` if the key is free or already holds ``v``
      (a re-registration), the key then holds ``v``; ``"taken"`` if it holds
      another value, nothing changes. Pending: takes the key if it may.
    * ``unregister()`` -> True if the key was held (now free), False if free.
    * ``read()`` -> the value held, or None. The read of a local view after
      ``sync()``: invoked when ``sync()`` was.
    * ``expire(v)``: the lease that bound ``v`` ended; frees the key if it
      holds ``v``. ``reput(v)``: the writer of ``v`` put it back under a new
      lease; takes the key if it is free. Neither has a result to check.
    """

    def init(self) -> Hashable:
        return None

    def step(self, state: Hashable, op: Op) -> tuple[bool, Hashable]:
        kind, arg = op.kind, op.arg
        if kind == "register":
            free = state is None or state == arg
            if op.pending:
                return True, arg if free else state
            if op.result == "ok":
                return free, arg if free else state
            if op.result == TAKEN:
                return not free, state
            return False, state
        if kind == "unregister":
            if op.pending:
                return True, None
            return op.result == (state is not None), None
        if kind == "read":
            return (op.pending or op.result == state), state
        if kind == "expire":
            return True, None if state == arg else state
        if kind == "reput":
            return True, arg if state is None else state
        raise ValueError(f"RegisterModel: unknown op kind {kind!r}")


class LockModel:
    """One lock (or one election): the state is ``(holder, last token)``.

    * ``acquire(p)`` -> token ``t``: only when nobody holds it, and ``t`` must
      be greater than every token given before (fencing); then ``p`` holds it.
      A pending acquire (no answer) is never placed: it had no effect any
      client saw.
    * ``release(p)``: only by the holder ``p``. For a block that ended with
      ``LockLost``/``LeadershipLost`` it is invoked when the block stopped
      running: if the server let another client in before that, no
      linearization exists. Pending (the holder was killed): the lease ends
      some time after the kill.
    """

    def init(self) -> Hashable:
        return (None, -math.inf)

    def step(self, state: Hashable, op: Op) -> tuple[bool, Hashable]:
        holder, last = state  # type: ignore[misc]
        if op.kind == "acquire":
            if op.pending:
                return True, state
            token = op.result
            ok = holder is None and isinstance(token, int) and token > last
            return ok, (op.arg, max(token, last) if isinstance(token, int) else last)
        if op.kind == "release":
            return holder == op.arg, (None, last)
        raise ValueError(f"LockModel: unknown op kind {op.kind!r}")


@dataclass
class LinearizabilityResult:
    """The outcome of :func:`check_linearizable` for one key."""

    key: str
    ok: bool
    #: One linearization (op indices into ``ops``) when ok.
    order: list[int] = field(default_factory=list)
    #: The longest prefix placed, and the ops that could not follow it, when not ok.
    best_prefix: list[int] = field(default_factory=list)
    stuck: list[int] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    explored: int = 0

    def explain(self) -> str:
        if self.ok:
            return f"{self.key}: linearizable ({len(self.ops)} ops, {self.explored} states)"
        lines = [f"{self.key}: NOT linearizable ({len(self.ops)} ops, {self.explored} states)"]
        lines.append("  history:")
        lines += [f"    #{i} {op}" for i, op in enumerate(self.ops)]
        lines.append(
            "  longest linearizable prefix: " + " ".join(f"#{i}" for i in self.best_prefix)
        )
        lines.append("  none of these can come next: " + " ".join(f"#{i}" for i in self.stuck))
        return "\n".join(lines)


class CheckTooBig(RuntimeError):
    """The search explored more states than allowed (the history is too concurrent)."""


def check_linearizable(
    ops: Sequence[Op], model: Model, *, key: str = "", max_states: int = 2_000_000
) -> LinearizabilityResult:
    """Is the history ``ops`` (one object) linearizable with respect to ``model``?

    Raises:
        CheckTooBig: more than ``max_states`` search states were needed.
    """
    ops = sorted(ops, key=lambda op: (op.call, math.inf if op.ret is None else op.ret))
    n = len(ops)
    rets = [math.inf if op.ret is None else op.ret for op in ops]
    required = 0
    for i, op in enumerate(ops):
        if not op.pending:
            required |= 1 << i
    result = LinearizabilityResult(key=key, ok=False, ops=list(ops))
    start = (0, model.init())
    seen: set[tuple[int, Hashable]] = {start}
    # Depth-first: each stack entry is (placed mask, model state, order so far).
    stack: list[tuple[int, Hashable, tuple[int, ...]]] = [(0, start[1], ())]
    best: tuple[int, ...] = ()
    best_stuck: list[int] = []
    while stack:
        mask, state, order = stack.pop()
        if mask & required == required:
            result.ok = True
            result.order = list(order)
            result.explored = len(seen)
            return result
        # An op may come next if no unplaced op returned before it was called.
        horizon = min((rets[j] for j in range(n) if not mask >> j & 1), default=math.inf)
        candidates = [i for i in range(n) if not mask >> i & 1 and ops[i].call <= horizon]
        moved = False
        for i in reversed(candidates):
            ok, nxt = model.step(state, ops[i])
            if not ok:
                continue
            moved = True
            child = (mask | 1 << i, nxt)
            if child in seen:
                continue
            seen.add(child)
            if len(seen) > max_states:
                raise CheckTooBig(f"{key}: more than {max_states} states")
            stack.append((child[0], nxt, (*order, i)))
        if not moved and len(order) >= len(best):
            best = order
            best_stuck = [i for i in candidates if not ops[i].pending]
    result.best_prefix = list(best)
    result.stuck = best_stuck
    result.explored = len(seen)
    return result


# --------------------------------------------------------------------------
# A history of several keys
# --------------------------------------------------------------------------


@dataclass
class History:
    """Ops of many keys; :meth:`check` runs the search per key."""

    ops: list[Op] = field(default_factory=list)

    def add(self, op: Op) -> Op:
        self.ops.append(op)
        return op

    def keys(self) -> list[str]:
        return sorted({op.key for op in self.ops})

    def of(self, key: str) -> list[Op]:
        return [op for op in self.ops if op.key == key]

    def check(self, model_for: Callable[[str], Model]) -> list[LinearizabilityResult]:
        """One result per key (``ok`` false for the keys with no linearization)."""
        return [check_linearizable(self.of(key), model_for(key), key=key) for key in self.keys()]


# --------------------------------------------------------------------------
# Invariants
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A holder inside a lock (or a term) from ``enter`` to ``exit`` with its ``token``."""

    holder: str
    token: int
    enter: float
    exit: float
    note: str = ""

    def __str__(self) -> str:
        return f"{self.holder} token {self.token} inside [{self.enter:.3f}, {self.exit:.3f}]" + (
            f" ({self.note})" if self.note else ""
        )


def check_mutual_exclusion(intervals: Iterable[Interval]) -> list[str]:
    """Every pair of holders inside at once, by the one clock (empty: none)."""
    ordered = sorted(intervals, key=lambda iv: iv.enter)
    problems = []
    for i, a in enumerate(ordered):
        for b in ordered[i + 1 :]:
            if b.enter >= a.exit:
                break
            problems.append(
                f"two holders inside at once for {min(a.exit, b.exit) - b.enter:.3f} s: {a} and {b}"
            )
    return problems


def check_tokens_increase(intervals: Iterable[Interval]) -> list[str]:
    """Tokens in the order holders entered must strictly increase (empty: they do)."""
    ordered = sorted(intervals, key=lambda iv: iv.enter)
    return [
        f"fencing token did not increase: {a} then {b}"
        for a, b in itertools.pairwise(ordered)
        if not b.token > a.token
    ]


def check_acknowledged_kept(
    acknowledged: Mapping[str, Any],
    final: Mapping[str, Any],
    lease_lost: Iterable[str] = (),
) -> list[str]:
    """Each acknowledged ``key -> value`` is in ``final``, unless its loss was reported.

    ``lease_lost`` holds the keys for which the writer's watchers saw an
    unregistration with ``reason="lease"``.
    """
    reported = set(lease_lost)
    problems = []
    for key, value in sorted(acknowledged.items()):
        if key in reported:
            continue
        if key not in final:
            problems.append(
                f"acknowledged {key} = {value!r} is gone, and no lease loss was reported"
            )
        elif final[key] != value:
            problems.append(
                f"acknowledged {key} = {value!r} now holds {final[key]!r},"
                " and no lease loss was reported"
            )
    return problems
