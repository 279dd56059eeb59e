"""Barriers of the local coordinator: reusable rounds, released by the last arrival.

Per name, the party count and the round now gathering. The arrival that
completes a round releases every waiter of it synchronously and opens the
next round; a waiter that times out or is cancelled withdraws its arrival
first (the round needs one more party again). ``abort()`` breaks the round.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from .. import telemetry
from ..errors import BarrierAborted, BarrierTimeout, ConfigError
from ._checks import check_seconds, deadline

__all__ = ["BarrierStates", "LocalBarrier", "barrier_snapshot", "barrier_state"]

logger = logging.getLogger("foundation.coordination")

_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_cancel_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint
_emit = telemetry.emit


class _Round:
    __slots__ = ("aborted", "arrived", "event", "generation", "released")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.arrived = 0
        self.event = trio.Event()
        self.released = False
        self.aborted = False


class _BarrierState:
    __slots__ = ("parties", "round")

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.round = _Round(0)


class LocalBarrier:
    """A reusable barrier of a local coordinator (``coord.barrier(name, parties)``)."""

    __slots__ = ("_state", "name")

    def __init__(self, name: str, state: _BarrierState) -> None:
        #: The barrier's name.
        self.name = name
        self._state = state

    @property
    def parties(self) -> int:
        """Arrivals that release a round."""
        return self._state.parties

    @property
    def generation(self) -> int:
        """The number of the round now gathering (0 for the first)."""
        return self._state.round.generation

    @property
    def waiting(self) -> int:
        """Parties waiting in the current round."""
        return self._state.round.arrived

    def __repr__(self) -> str:
        return (
            f"<LocalBarrier {self.name!r} round {self.generation}:"
            f" {self.waiting}/{self.parties} waiting>"
        )

    async def wait(self, timeout: float | None = None) -> int:  # noqa: ASYNC109 -- the interface takes timeout=
        """Arrive and wait until ``parties`` have arrived in this round.

        All parties of a round are released together; the next ``wait()``
        joins the next round (generation). Always checkpoints. Cancelled or
        timed out while waiting, the arrival is withdrawn (the round needs
        one more party again).

        Returns:
            The generation (round number, from 0) this call passed.

        Raises:
            BarrierTimeout: not released within ``timeout`` seconds; ``reached``
                counts this round's arrivals, this one included.
            BarrierAborted: :meth:`abort` broke the round while waiting.
        """
        timeout = check_seconds("timeout", timeout)
        await _checkpoint_if_cancelled()
        state = self._state
        rnd = state.round
        rnd.arrived += 1
        if rnd.arrived >= state.parties:
            rnd.released = True
            state.round = _Round(rnd.generation + 1)
            rnd.event.set()
            _emit(
                "foundation.coordination.barrier.round",
                {"generation": rnd.generation, "parties": state.parties},
                {"barrier": self.name},
            )
            await _cancel_shielded_checkpoint()
            return rnd.generation
        try:
            with trio.CancelScope(deadline=deadline(timeout)) as scope:
                await rnd.event.wait()
        except BaseException:
            if not rnd.event.is_set():
                rnd.arrived -= 1
            raise
        if scope.cancelled_caught and not rnd.event.is_set():
            reached = rnd.arrived
            rnd.arrived -= 1
            assert timeout is not None
            error = BarrierTimeout(reached, state.parties)
            logger.warning("barrier %r round %d: %s", self.name, rnd.generation, error)
            _emit(
                "foundation.coordination.barrier.timeout",
                {"reached": reached, "parties": state.parties, "timeout": timeout},
                {"barrier": self.name, "generation": rnd.generation},
            )
            raise error
        if rnd.aborted:
            raise BarrierAborted(self.name, rnd.generation)
        return rnd.generation

    async def abort(self) -> int:
        """Break the current round: its waiters raise :class:`~foundation.errors.BarrierAborted`.

        The next ``wait()`` starts a fresh round. Shielded checkpoint.

        Returns:
            How many waiters were broken (0 -- nothing to abort, no new round).
        """
        state = self._state
        rnd = state.round
        broken = rnd.arrived
        if broken:
            rnd.aborted = True
            state.round = _Round(rnd.generation + 1)
            rnd.event.set()
            logger.warning(
                "barrier %r round %d aborted with %d of %d parties waiting",
                self.name,
                rnd.generation,
                broken,
                state.parties,
            )
            _emit(
                "foundation.coordination.barrier.abort",
                {"generation": rnd.generation, "waiting": broken},
                {"barrier": self.name},
            )
        await _cancel_shielded_checkpoint()
        return broken


#: One coordinator's barriers, by name.
BarrierStates = dict[str, _BarrierState]


def barrier_state(barriers: BarrierStates, name: str, parties: int) -> _BarrierState:
    """The state of barrier ``name`` (made on first use) for ``parties`` parties.

    Raises:
        ConfigError: ``parties`` differs from the one this name was used
            with while a round gathers.
    """
    state = barriers.get(name)
    if state is None:
        state = barriers[name] = _BarrierState(parties)
    elif state.parties != parties:
        if state.round.arrived:
            raise ConfigError(
                f"barrier {name!r} has {state.parties} parties and a round gathering;"
                f" cannot use it with parties={parties}"
            )
        state.parties = parties
    return state


def barrier_snapshot(barriers: BarrierStates) -> dict[str, Any]:
    """Plain data on every barrier: parties, current round, arrivals waiting."""
    return {
        name: {
            "parties": s.parties,
            "generation": s.round.generation,
            "waiting": s.round.arrived,
        }
        for name, s in barriers.items()
    }
