"""Elections of the etcd coordinator, on etcd's Election service.

An election group G is etcd's election ``prefix + G``: each campaign writes
the key ``prefix + G + "/" + <lease id in hex>`` holding the candidate as
raw UTF-8 (as ``etcdctl elect`` does), bound to a lease of its own, and the
key with the lowest create revision leads. So ``etcdctl elect G`` and our
campaigns elect together, and ``Term.number`` (the leader key's create
revision) strictly increases per group.

A campaign joins with one txn (leading at once when it is first, as
Campaign would answer without waiting), else waits in etcd's Campaign RPC
raced against its session: Campaign does not stop when its lease ends (etcd
3.4 even answers for a key that is gone), so a lost lease or a deleted key
cancels it and the campaign starts again with a fresh lease; the key is read
back before the campaign counts as won. A cancelled campaign revokes its
lease (shielded) before it returns.

While leading, the session's guard watches the leader key: a deletion (a
``resign()`` from another task or process, ``etcdctl``), the lease ending,
or the session fencing itself (no keepalive acknowledged in time: a leader
cut off from the cluster stops a margin before etcd could expire its lease
and elect another, see :mod:`._etcd_session`) cancels the block, which
raises :class:`LeadershipLost`; a ``resign()`` from inside the block ends
it quietly. Within one coordinator
a newly elected candidate also waits for the previous leader's block of the
same group to exit, so two leaders' blocks never overlap in one process;
across processes the term number is the fencing token.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from .. import telemetry
from .._util import reraise_collapsed
from ..errors import EtcdError, EtcdUnavailable, LeadershipLost
from ..etcd import compare_create, op_delete, op_put, op_range
from ._checks import check_name
from ._etcd_reach import reaching, unreachable_as_node
from ._etcd_session import Changes, Session, session_expired
from ._types import Leader, Term

if TYPE_CHECKING:
    from ..etcd import EtcdClient, KeyValue
    from ._etcd_context import EtcdContext

__all__ = ["EtcdElection", "EtcdElections"]

logger = logging.getLogger("foundation.coordination")
_emit = telemetry.emit


class _Retry(Exception):
    """Internal: the session was lost before the campaign was won; start again."""


class _Candidate:
    __slots__ = (
        "candidate",
        "exited",
        "key",
        "lost",
        "scope",
        "self_resigned",
        "session",
        "task",
        "term",
    )

    def __init__(
        self, task: trio.lowlevel.Task, candidate: str, session: Session, key: bytes, term: int
    ) -> None:
        self.task = task
        self.candidate = candidate
        self.session = session
        self.key = key
        self.term = term
        self.scope = trio.CancelScope()
        self.exited = trio.Event()
        self.lost: str | None = None  # why leadership was taken away
        self.self_resigned = False

    def on_lost(self, reason: str) -> None:
        if not self.self_resigned and self.lost is None:
            self.lost = reason
        self.scope.cancel()


class EtcdElections:
    """One coordinator's campaigns (its :meth:`~._etcd_context.EtcdContext.state`).

    ``candidates``: this coordinator's elected candidates by leader key (so
    ``resign()`` can tell its own leader's block); ``blocks``: per group,
    set once the running leader block has exited.
    """

    __slots__ = ("blocks", "candidates")

    def __init__(self) -> None:
        self.candidates: dict[bytes, _Candidate] = {}
        self.blocks: dict[str, trio.Event] = {}


def _leader_of(kvs: list[KeyValue]) -> Leader | None:
    if not kvs:
        return None
    kv = min(kvs, key=lambda kv: kv.create_revision)
    return Leader(kv.value.decode("utf-8", errors="replace"), kv.create_revision)


class EtcdElection:
    """One election group of an :class:`EtcdCoordinator` (``coord.election(group)``)."""

    __slots__ = ("_book", "_ctx", "_name", "group")

    def __init__(self, ctx: EtcdContext, group: str) -> None:
        self._ctx = ctx
        self._book = ctx.state(EtcdElections)
        #: The election group's name (without the coordinator's prefix).
        self.group = group
        self._name = ctx.prefix + group

    def __repr__(self) -> str:
        return f"<EtcdElection {self.group!r} (etcd name {self._name!r})>"

    @asynccontextmanager
    async def campaign(self, candidate: str) -> AsyncIterator[Term]:
        """Campaign as ``candidate``; the block runs while it leads.

        Entering blocks until elected (FIFO by key creation, across every
        etcd client) and yields the :class:`Term`. Leaving the block
        (normally, by an error or by cancellation) revokes the campaign's
        lease, which ends the term and lets etcd elect the next candidate.
        Cancelled while campaigning, the candidate's key is gone before
        the cancellation propagates.

        Raises:
            LeadershipLost: (out of the block) the leader key was deleted by
                someone else (``resign()`` from another task or process) or
                its lease ended; the block was cancelled.
        """
        check_name("candidate", candidate)
        await trio.lowlevel.checkpoint_if_cancelled()
        with unreachable_as_node():
            me = await self._elect(candidate)
        book = self._book
        book.candidates[me.key] = me
        try:
            # Within this coordinator, the previous leader's block exits first.
            previous = book.blocks.get(self.group)
            while previous is not None and not previous.is_set():
                await previous.wait()
                previous = book.blocks.get(self.group)
            book.blocks[self.group] = me.exited
            me.session.on_lost(me.on_lost)
        except BaseException:
            await self._step_down(me)
            raise
        _emit(
            "foundation.coordination.election.elected",
            {"term": me.term},
            {"group": self.group, "candidate": candidate},
        )
        try:
            with me.scope:
                yield Term(self.group, candidate, me.term)
        finally:
            await self._step_down(me)
        if me.lost is not None:
            error = LeadershipLost(self.group, candidate, me.term)
            logger.warning("%s (%s)", error, me.lost)
            _emit(
                "foundation.coordination.election.lost",
                {"term": me.term},
                {"group": self.group, "candidate": candidate, "reason": me.lost},
            )
            raise error

    async def _elect(self, candidate: str) -> _Candidate:
        task = trio.lowlevel.current_task()
        while True:
            session = await self._ctx.open_session(
                f"election {self.group!r} candidate {candidate!r}", fenced=True
            )
            try:
                key, term = await self._join(session, candidate)
            except _Retry:
                await session.close()
                continue
            except BaseException:
                await session.close()
                raise
            return _Candidate(task, candidate, session, key, term)

    async def _join(self, session: Session, candidate: str) -> tuple[bytes, int]:
        client = self._ctx.client
        queue = self._name + "/"
        key = f"{queue}{session.lease_id:x}".encode()
        value = candidate.encode()
        result = await client.txn(
            [compare_create(key, "==", 0)],
            [
                op_put(key, value, lease=session.lease_id),
                op_range(queue, prefix=True, keys_only=True),
            ],
            [op_range(queue, prefix=True, keys_only=True)],
            retry_ambiguous=True,
        )
        kvs: list[KeyValue] = getattr(result.responses[-1], "kvs", [])
        mine = next((kv for kv in kvs if kv.key == key), None)
        if mine is None:
            raise _Retry
        term = mine.create_revision
        session.guard(key, term)
        if min(kvs, key=lambda kv: kv.create_revision) is mine:
            return key, term
        with trio.CancelScope() as scope:
            remove = session.on_lost(lambda _reason: scope.cancel())
            try:
                await client.campaign(self._name, session.lease_id, value)
            except EtcdError as exc:
                if session.lost.is_set() or session_expired(exc):
                    raise _Retry from exc
                raise
            finally:
                remove()
        if session.lost.is_set():
            logger.info(
                "election %r: candidate %r lost its lease while campaigning (%s); campaigning"
                " again",
                self.group,
                candidate,
                session.reason,
            )
            raise _Retry
        kv = await client.get(key)
        if kv is None or kv.create_revision != term:
            raise _Retry  # a "phantom" win: the key went with its lease
        return key, term

    async def _step_down(self, me: _Candidate) -> None:
        book = self._book
        if book.candidates.get(me.key) is me:
            del book.candidates[me.key]
        was_leading = me.lost is None and not me.self_resigned
        try:
            await me.session.close()  # shielded; revoking deletes the key
        finally:
            me.exited.set()
            if book.blocks.get(self.group) is me.exited:
                del book.blocks[self.group]
        if was_leading:
            _emit(
                "foundation.coordination.election.resigned",
                {"term": me.term},
                {"group": self.group, "candidate": me.candidate, "by": "exit"},
            )

    @reaching
    async def leader(self) -> Leader | None:
        """The current leader (lowest key of the group), or None; one round trip."""
        await trio.lowlevel.checkpoint_if_cancelled()
        kv = await self._ctx.client.leader(self._name)
        if kv is None:
            return None
        return Leader(kv.value.decode("utf-8", errors="replace"), kv.create_revision)

    @reaching
    async def resign(self) -> bool:
        """End the current leader's term (delete its key); False if nobody led.

        Works on any leader, of this coordinator, another one or ``etcdctl
        elect``. The leader's block is cancelled: from another task (or
        process) it raises :class:`LeadershipLost`; from inside the block it
        ends quietly at its next checkpoint. etcd elects the next candidate
        at once; within this coordinator, its block waits for the resigned
        block to exit. The delete is shielded.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        client = self._ctx.client
        kv = await client.leader(self._name)
        if kv is None:
            return False
        caller = trio.lowlevel.current_task()
        me = self._book.candidates.get(kv.key)
        if me is not None:
            if caller is me.task:
                me.self_resigned = True
            elif me.lost is None:
                me.lost = f"resigned by task {caller.name!r}"
        with trio.CancelScope(shield=True):
            result = await client.txn(
                [compare_create(kv.key, "==", kv.create_revision)], [op_delete(kv.key)]
            )
        if me is not None:
            me.scope.cancel()
        if result.succeeded:
            _emit(
                "foundation.coordination.election.resigned",
                {"term": kv.create_revision},
                {
                    "group": self.group,
                    "candidate": kv.value.decode("utf-8", errors="replace"),
                    "by": caller.name,
                },
            )
        return result.succeeded

    def observe(self) -> AsyncIterator[Leader | None]:
        """Iterate over the leadership: the current leader first, then each change.

        Yields a :class:`Leader`, or None whenever nobody leads. Changes
        that happen while the consumer is not waiting are coalesced (it sees
        the latest state); terms only grow (every read is linearizable).
        Each step opens a watch from the revision of the last read and
        closes it before returning, so an abandoned iterator holds no
        connection. While the watch is quiet the step also reads the leader
        every second, so an observer whose member is cut off from the
        majority (still answering, but no longer told of changes) moves to a
        member that knows the new leader within about a second of it being
        elected; a member that stops answering is left by the watch itself.

        Raises:
            NodeUnreachable: (from a step) no member could be reached.
        """
        return _LeaderObserver(self._ctx.client, self._name + "/")


#: Seconds between the observer's own reads of the leader while its watch says
#: nothing. A watch on a member cut off from its peers (stranded with a
#: minority) stays open and silent, and answers its progress probes, until
#: etcd cancels leaderless streams (several election timeouts later); the
#: read is linearizable, so it fails over to a member that knows the leader.
RECHECK_INTERVAL = 1.0


class _LeaderObserver:
    __slots__ = ("_client", "_first", "_last", "_queue", "_reading", "_revision")

    def __init__(self, client: EtcdClient, queue: str) -> None:
        self._client = client
        self._queue = queue
        self._first = True
        self._last: Leader | None = None
        self._revision = 0
        self._reading = trio.Lock()

    def __aiter__(self) -> _LeaderObserver:
        return self

    async def _read(self) -> Leader | None:
        result = await self._client.range(self._queue, prefix=True)
        self._revision = result.header.revision
        return _leader_of(result.kvs)

    async def _changed(self, found: list[Leader | None], done: trio.CancelScope) -> None:
        """Read the leader; if it is not the last one yielded, record it and end the wait."""
        async with self._reading:
            if found:
                return
            current = await self._read()
            if current != self._last:
                found.append(current)
                done.cancel()

    async def _watch(self, found: list[Leader | None], done: trio.CancelScope) -> None:
        changes = Changes(self._client, self._queue, prefix=True, start_revision=self._revision + 1)
        try:
            while True:
                await changes.next()
                await self._changed(found, done)
        finally:
            await changes.aclose()

    async def _recheck(self, found: list[Leader | None], done: trio.CancelScope) -> None:
        while True:
            await trio.sleep(RECHECK_INTERVAL)
            try:
                await self._changed(found, done)
            except EtcdUnavailable as exc:
                # The watch decides when the cluster is out of reach; this only
                # catches what a silent watch would miss.
                logger.info("observing %r: reading the leader failed (%s)", self._queue, exc)

    @reaching
    async def __anext__(self) -> Leader | None:
        if self._first:
            self._first = False
            self._last = await self._read()
            return self._last
        found: list[Leader | None] = []
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch, found, nursery.cancel_scope)
                nursery.start_soon(self._recheck, found, nursery.cancel_scope)
        except BaseExceptionGroup as group:
            reraise_collapsed(group)
        self._last = found[0]
        return self._last
