"""Barriers of the etcd coordinator: the double-barrier recipe, in rounds.

Keys of barrier B live under ``prefix + "barrier/" + B + "/"``:

* ``state`` -- JSON ``{"generation": g}``, the round now gathering (absent: 0).
  It changes only when a round ends, so "the round is still g" is the txn
  comparison ``mod_revision(state) == seen``.
* ``arrivals/<g>/<uuid>`` -- one key per arrival of round g, bound to the
  coordinator's shared lease (a party whose process dies is withdrawn).
* ``done/<g>`` -- how round g ended: JSON ``{"aborted": false|true}``.

An arrival is one txn (still round g? then create my key and read round g's
arrivals). Whoever sees ``parties`` arrivals ends the round with one txn
guarded by the state and by those arrival keys (so an arrival withdrawn in
between stops it): state g+1, ``done/g``, round g's arrivals deleted. Every
waiter watches the barrier's keys from the revision of its arrival and
returns (or raises :class:`BarrierAborted`) when ``done/g`` appears. A
timeout or cancellation withdraws the arrival with a txn guarded by the
state; if that fails the round had already ended, and a timed-out waiter
returns its outcome instead. Rounds are numbered from 0, and a waiter only
ever looks at its own round's keys, so generations never mix.
"""

from __future__ import annotations

import logging
import math
import uuid
from typing import TYPE_CHECKING, Any

import trio

from .. import telemetry
from ..errors import BarrierAborted, BarrierTimeout, EtcdError
from ..etcd import compare_create, compare_mod, op_delete, op_put, op_range
from ._checks import check_seconds
from ._etcd_reach import reaching
from ._etcd_session import Changes, dumps, loads

if TYPE_CHECKING:
    from ..etcd import KeyValue, RangeResult
    from ._etcd_context import EtcdContext

__all__ = ["EtcdBarrier"]

logger = logging.getLogger("foundation.coordination")
_emit = telemetry.emit

#: Rounds whose ``done/<g>`` marker is kept (older ones are deleted as rounds end).
_KEEP_DONE = 64


def _g(generation: int) -> str:
    return f"{generation:012d}"


class _Round:
    """What one read of a round's keys found."""

    __slots__ = ("arrivals", "done", "generation", "state_mod")

    def __init__(self, generation: int, state_mod: int) -> None:
        self.generation = generation
        self.state_mod = state_mod
        self.arrivals: list[KeyValue] = []
        self.done: dict[str, Any] | None = None


class EtcdBarrier:
    """A reusable barrier of an :class:`EtcdCoordinator` (``coord.barrier(name, parties)``).

    The parties may be in any processes using the same etcd prefix; each
    ``wait()`` releases its round when it sees ``parties`` arrivals (give
    every party the same ``parties``).
    """

    __slots__ = ("_ctx", "_dir", "name", "parties")

    def __init__(self, ctx: EtcdContext, name: str, parties: int) -> None:
        self._ctx = ctx
        #: The barrier's name.
        self.name = name
        #: Arrivals that release a round.
        self.parties = parties
        self._dir = f"{ctx.prefix}barrier/{name}/"

    def __repr__(self) -> str:
        return f"<EtcdBarrier {self.name!r} parties={self.parties}>"

    @property
    def _state_key(self) -> str:
        return self._dir + "state"

    def _arrivals(self, generation: int) -> str:
        return f"{self._dir}arrivals/{_g(generation)}/"

    def _done_key(self, generation: int) -> str:
        return f"{self._dir}done/{_g(generation)}"

    async def _read_state(self) -> tuple[int, int]:
        kv = await self._ctx.client.get(self._state_key)
        return self._parse_state(kv)

    @staticmethod
    def _parse_state(kv: KeyValue | None) -> tuple[int, int]:
        if kv is None:
            return 0, 0
        data = loads(kv.value, {})
        generation = data.get("generation", 0) if isinstance(data, dict) else 0
        return int(generation), kv.mod_revision

    async def _read_round(self, generation: int) -> _Round:
        client = self._ctx.client
        result = await client.txn(
            [],
            [
                op_range(self._state_key),
                op_range(self._done_key(generation)),
                op_range(self._arrivals(generation), prefix=True, keys_only=True),
            ],
        )
        state: RangeResult = result.responses[0]  # type: ignore[assignment]
        done: RangeResult = result.responses[1]  # type: ignore[assignment]
        arrivals: RangeResult = result.responses[2]  # type: ignore[assignment]
        _, mod = self._parse_state(state.kvs[0] if state.kvs else None)
        rnd = _Round(generation, mod)
        rnd.arrivals = arrivals.kvs
        if done.kvs:
            data = loads(done.kvs[0].value, {})
            rnd.done = data if isinstance(data, dict) else {}
        return rnd

    async def _arrive(self, key: str) -> tuple[int, int, int, list[KeyValue]]:
        """Join the round now gathering; (generation, state mod, revision, arrivals)."""
        client = self._ctx.client
        lease = await self._ctx.shared_lease()
        generation, mod = await self._read_state()
        while True:
            arrivals = self._arrivals(generation)
            mine = arrivals + key
            result = await client.txn(
                [compare_mod(self._state_key, "==", mod)],
                [
                    op_put(mine, dumps({"parties": self.parties}, "arrival"), lease=lease),
                    op_range(arrivals, prefix=True, keys_only=True),
                ],
                [op_range(self._state_key)],
            )
            if result.succeeded:
                kvs: list[KeyValue] = result.responses[1].kvs  # type: ignore[union-attr]
                return generation, mod, result.revision, kvs
            state: RangeResult = result.responses[0]  # type: ignore[assignment]
            generation, mod = self._parse_state(state.kvs[0] if state.kvs else None)

    async def _try_release(self, generation: int, mod: int, arrivals: list[KeyValue]) -> bool:
        """End round ``generation`` (released) if those arrivals are all still there."""
        counted = sorted(arrivals, key=lambda kv: kv.create_revision)[: self.parties]
        result = await self._ctx.client.txn(
            [compare_mod(self._state_key, "==", mod)]
            + [compare_create(kv.key, "==", kv.create_revision) for kv in counted],
            self._end_round(generation, aborted=False),
        )
        if result.succeeded:
            _emit(
                "foundation.coordination.barrier.round",
                {"generation": generation, "parties": self.parties},
                {"barrier": self.name},
            )
        return result.succeeded

    def _end_round(self, generation: int, *, aborted: bool) -> list[Any]:
        ops = [
            op_put(self._state_key, dumps({"generation": generation + 1}, "state")),
            op_put(self._done_key(generation), dumps({"aborted": aborted}, "done")),
            op_delete(self._arrivals(generation), prefix=True),
        ]
        if generation >= _KEEP_DONE:
            ops.append(op_delete(self._done_key(generation - _KEEP_DONE)))
        return ops

    def _outcome(self, rnd: _Round) -> int:
        assert rnd.done is not None
        if rnd.done.get("aborted"):
            raise BarrierAborted(self.name, rnd.generation)
        return rnd.generation

    @reaching
    async def wait(self, timeout: float | None = None) -> int:  # noqa: ASYNC109 -- the interface takes timeout=
        """Arrive and wait until ``parties`` have arrived in this round.

        All parties of a round are released together; the next ``wait()``
        joins the next round. Cancelled or timed out while waiting, the
        arrival is withdrawn (shielded) before this returns.

        Returns:
            The generation (round number, from 0) this call passed.

        Raises:
            BarrierTimeout: not released within ``timeout`` seconds; ``reached``
                counts this round's arrivals, this one included.
            BarrierAborted: :meth:`abort` broke the round while waiting.
        """
        timeout = check_seconds("timeout", timeout)
        await trio.lowlevel.checkpoint_if_cancelled()
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        key = uuid.uuid4().hex
        with trio.CancelScope(shield=True):
            # Arriving is one txn; shielded so an arrival is never left half-known.
            generation, mod, revision, arrivals = await self._arrive(key)
        mine = self._arrivals(generation) + key
        changes = Changes(self._ctx.client, self._dir, prefix=True, start_revision=revision + 1)
        try:
            with trio.CancelScope(deadline=deadline) as scope:
                while True:
                    if len(arrivals) >= self.parties and await self._try_release(
                        generation, mod, arrivals
                    ):
                        return generation
                    await changes.next()
                    rnd = await self._read_round(generation)
                    if rnd.done is not None:
                        return self._outcome(rnd)
                    if rnd.state_mod != mod:  # ended, and its marker already cleaned up
                        raise BarrierAborted(self.name, generation)
                    arrivals = rnd.arrivals
                    if not any(kv.key.decode() == mine for kv in arrivals):
                        # Our shared lease ended (etcd was out of reach): arrive again.
                        lease = await self._ctx.shared_lease()
                        await self._ctx.client.put(
                            mine, dumps({"parties": self.parties}, "arrival"), lease=lease
                        )
        except BaseException:
            # Cancelled, aborted or failed: withdraw if the round still gathers.
            with trio.CancelScope(shield=True):
                try:
                    await self._withdraw(generation, mod, mine)
                except EtcdError as exc:
                    logger.warning(
                        "barrier %r round %d: could not withdraw an arrival (%s); it goes"
                        " with the coordinator's lease",
                        self.name,
                        generation,
                        exc,
                    )
            raise
        finally:
            await changes.aclose()
        # Timed out: withdraw unless the round ended meanwhile.
        assert scope.cancelled_caught
        with trio.CancelScope(shield=True):
            reached = await self._withdraw(generation, mod, mine)
            ended = await self._read_round(generation) if reached is None else None
        if reached is None:
            assert ended is not None
            return self._outcome(ended)
        assert timeout is not None
        error = BarrierTimeout(reached, self.parties)
        logger.warning("barrier %r round %d: %s", self.name, generation, error)
        _emit(
            "foundation.coordination.barrier.timeout",
            {"reached": reached, "parties": self.parties, "timeout": timeout},
            {"barrier": self.name, "generation": generation},
        )
        raise error

    async def _withdraw(self, generation: int, mod: int, mine: str) -> int | None:
        """Delete our arrival if round ``generation`` still gathers; the arrivals it had."""
        result = await self._ctx.client.txn(
            [compare_mod(self._state_key, "==", mod)],
            [op_range(self._arrivals(generation), prefix=True, count_only=True), op_delete(mine)],
        )
        if not result.succeeded:
            return None
        return result.responses[0].count  # type: ignore[union-attr]

    @reaching
    async def abort(self) -> int:
        """Break the current round: its waiters raise :class:`BarrierAborted`.

        The next ``wait()`` starts a fresh round. Shielded.

        Returns:
            How many waiters were broken (0: nothing to abort, no new round).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        with trio.CancelScope(shield=True):
            broken = await self._abort()
        return broken

    async def _abort(self) -> int:
        generation, mod = await self._read_state()
        while True:
            rnd = await self._read_round(generation)
            if rnd.state_mod != mod:
                generation, mod = await self._read_state()
                continue
            if not rnd.arrivals:
                return 0
            result = await self._ctx.client.txn(
                [compare_mod(self._state_key, "==", mod)],
                [
                    op_range(self._arrivals(generation), prefix=True, count_only=True),
                    *self._end_round(generation, aborted=True),
                ],
            )
            if result.succeeded:
                broken: int = result.responses[0].count  # type: ignore[union-attr]
                logger.warning(
                    "barrier %r round %d aborted with %d of %d parties waiting",
                    self.name,
                    generation,
                    broken,
                    self.parties,
                )
                _emit(
                    "foundation.coordination.barrier.abort",
                    {"generation": generation, "waiting": broken},
                    {"barrier": self.name},
                )
                return broken
            generation, mod = await self._read_state()
