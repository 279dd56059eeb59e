"""Elections of the local coordinator: one leader at a time, FIFO hand-over.

Per group, the leader, the FIFO queue of candidates and the term counter.
Stepping down (the block exits) elects the next candidate synchronously;
``resign()`` cancels the leader's block and keeps its slot until the block
has exited, so two leaders' blocks never overlap. A candidate cancelled
while campaigning withdraws before the exception leaves.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from .. import telemetry
from ..errors import LeadershipLost
from ._checks import check_name
from ._types import Leader, Term

__all__ = ["ElectionStates", "LocalElection", "election_snapshot"]

logger = logging.getLogger("foundation.coordination")

_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_cancel_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint
_emit = telemetry.emit


class _Candidate:
    __slots__ = ("event", "name", "resigned_by_other", "scope", "task", "term")

    def __init__(self, task: trio.lowlevel.Task, name: str) -> None:
        self.task = task
        self.name = name
        self.event = trio.Event()
        self.term = 0
        self.scope = trio.CancelScope()
        self.resigned_by_other = False


class _ElectionState:
    __slots__ = ("changed", "leader", "queue", "resigned", "term")

    def __init__(self) -> None:
        # The candidate whose campaign block runs. After resign() it keeps
        # this slot (``resigned`` is True, leader() answers None) until its
        # block has exited, so two leaders' blocks never overlap.
        self.leader: _Candidate | None = None
        self.resigned = False
        self.queue: collections.deque[_Candidate] = collections.deque()
        self.term = 0
        self.changed = trio.Event()

    def current(self) -> Leader | None:
        c = self.leader
        if c is None or self.resigned:
            return None
        return Leader(c.name, c.term)


class LocalElection:
    """One election group of a local coordinator (``coord.election(group)``)."""

    __slots__ = ("_elections", "group")

    def __init__(self, elections: ElectionStates, group: str) -> None:
        self._elections = elections
        #: The election group's name.
        self.group = group

    def __repr__(self) -> str:
        return f"<LocalElection {self.group!r}: {self._state().current()!r}>"

    def _state(self) -> _ElectionState:
        state = self._elections.get(self.group)
        if state is None:
            state = self._elections[self.group] = _ElectionState()
        return state

    @asynccontextmanager
    async def campaign(self, candidate: str) -> AsyncIterator[Term]:
        """Campaign as ``candidate``; the block runs while it leads.

        Entering blocks until elected (candidates are elected in FIFO order,
        one at a time) and yields the :class:`Term`; ``term.number`` strictly
        increases per group. Leaving the block (normally, by an error or by
        cancellation) ends the term and elects the next candidate; leaving
        does not block. Cancelled while campaigning, the candidate withdraws.

        :meth:`resign` called by another task cancels the block, which then
        raises :class:`~foundation.errors.LeadershipLost`; called from inside the block, it
        ends the block quietly at its next checkpoint. The block's own error
        is raised as itself.
        """
        check_name("candidate", candidate)
        await _checkpoint_if_cancelled()
        state = self._state()
        me = _Candidate(trio.lowlevel.current_task(), candidate)
        if state.leader is None and not state.queue:
            self._elect(state, me)
            await _cancel_shielded_checkpoint()
        else:
            state.queue.append(me)
            try:
                await me.event.wait()
            except BaseException:
                if state.leader is me:  # elected in the same tick it was cancelled
                    self._step_down(state, me)
                else:
                    state.queue.remove(me)
                raise
        try:
            with me.scope:
                yield Term(self.group, candidate, me.term)
        finally:
            self._step_down(state, me)
        if me.scope.cancelled_caught and me.resigned_by_other:
            error = LeadershipLost(self.group, candidate, me.term)
            logger.warning("%s", error)
            _emit(
                "foundation.coordination.election.lost",
                {"term": me.term},
                {"group": self.group, "candidate": candidate},
            )
            raise error

    def _elect(self, state: _ElectionState, c: _Candidate) -> None:
        state.term += 1
        c.term = state.term
        state.leader = c
        state.resigned = False
        c.event.set()
        self._changed(state)
        _emit(
            "foundation.coordination.election.elected",
            {"term": c.term},
            {"group": self.group, "candidate": c.name},
        )

    def _step_down(self, state: _ElectionState, c: _Candidate) -> None:
        if state.leader is not c:
            return
        was_resigned = state.resigned
        state.leader = None
        state.resigned = False
        if not was_resigned:
            _emit(
                "foundation.coordination.election.resigned",
                {"term": c.term},
                {"group": self.group, "candidate": c.name, "by": "exit"},
            )
        if state.queue:
            self._elect(state, state.queue.popleft())
        else:
            self._changed(state)

    @staticmethod
    def _changed(state: _ElectionState) -> None:
        state.changed.set()
        state.changed = trio.Event()

    async def leader(self) -> Leader | None:
        """The current leader, or None; answers at once (one checkpoint)."""
        await trio.lowlevel.checkpoint()
        return self._state().current()

    async def resign(self) -> bool:
        """End the current leader's term; False (and nothing done) if nobody leads.

        The leader's block is cancelled: from another task it then raises
        :class:`~foundation.errors.LeadershipLost`; from inside the block it ends quietly.
        ``leader()`` answers None at once; the next candidate is elected as
        soon as the resigned leader's block has exited (so two leaders' blocks
        never run at the same time). Shielded checkpoint.
        """
        state = self._state()
        c = state.leader
        if c is None or state.resigned:
            await trio.lowlevel.checkpoint()
            return False
        caller = trio.lowlevel.current_task()
        c.resigned_by_other = caller is not c.task
        state.resigned = True
        c.scope.cancel()
        self._changed(state)
        _emit(
            "foundation.coordination.election.resigned",
            {"term": c.term},
            {"group": self.group, "candidate": c.name, "by": caller.name},
        )
        await _cancel_shielded_checkpoint()
        return True

    def observe(self) -> AsyncIterator[Leader | None]:
        """Iterate over the leadership: the current leader first, then each change.

        Yields a :class:`Leader`, or None whenever nobody leads (also as the
        first item if nobody leads yet). A slow consumer sees the latest
        state, not every intermediate one: changes that happen while it is
        not waiting are coalesced. Each iteration step blocks until a change.
        """
        return _LeaderObserver(self._state())


class _LeaderObserver:
    __slots__ = ("_first", "_last", "_state")

    def __init__(self, state: _ElectionState) -> None:
        self._state = state
        self._first = True
        self._last: Leader | None = None

    def __aiter__(self) -> _LeaderObserver:
        return self

    async def __anext__(self) -> Leader | None:
        state = self._state
        if self._first:
            self._first = False
            await trio.lowlevel.checkpoint()
            self._last = state.current()
            return self._last
        while True:
            await state.changed.wait()
            current = state.current()
            if current != self._last:
                self._last = current
                return current


#: One coordinator's elections, by group (shared by every handle on a group).
ElectionStates = dict[str, _ElectionState]


def election_snapshot(elections: ElectionStates) -> dict[str, Any]:
    """Plain data on every group: leader, waiting candidates, last term."""
    return {
        group: {
            "leader": s.current(),
            "candidates": [c.name for c in s.queue],
            "term": s.term,
        }
        for group, s in elections.items()
    }
