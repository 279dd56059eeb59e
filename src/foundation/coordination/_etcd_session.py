"""Building blocks of the etcd coordinator: sessions (one lease each), key guards, change waits.

A :class:`Session` is one etcd lease of one lock acquisition or one
campaign (etcd treats a second Lock or Campaign with the same lease as
already done). Its keepalive runs in a task of the
coordinator's :class:`~foundation.supervision.TaskSupervisor`, so a lock can
be acquired in one call and released in another. A session is *lost* when
its lease ends (keepalive answered TTL 0, or no member renewed it within
its TTL), when its guarded key is deleted by anyone else (``etcdctl del``,
a resign from another process), when a lock's own ``ttl=`` runs out, or,
for a *fenced* session, when it fences itself (below); ``on_lost``
callbacks then run (they cancel the waiting RPC or the holder's block).
Closing a session revokes its lease, which deletes every key bound to it
and makes any later write with it fail, so a Lock or Campaign still in
flight on the server can never create a key after the close.

**Self-fencing.** A holder cut off from the cluster cannot learn that etcd
expired its lease and let the next holder in; it has to stop on its own
clock, first. etcd restarts a lease's TTL when it *receives* a keepalive,
no earlier than the client sent it, so the lease lives on the server at
least until :attr:`Lease.expires_at <foundation.etcd.Lease.expires_at>` =
send time of the last acknowledged keepalive + the granted TTL. A fenced
session (every lock, campaign, semaphore slot and read/write hold) is lost
at ``expires_at - margin``, ``margin = max(1 s, TTL / 5)``
(:attr:`Lease.margin <foundation.etcd.Lease.margin>`), unless a newer
acknowledgement moved ``expires_at`` on first: its holder's block is
cancelled then, before the server can have expired the lease, as long as
the client's monotonic clock runs no slower than the server's by more than
the margin over one TTL. Measured in the partition suite (TTL 5 s, a
holder cut off at the switch or stranded with a minority member): without
the margin the holder's block ended 0.02-0.47 s before the next holder got
in, and once 0.05 s after its key was last seen on the server; with it,
1.0-1.5 s before the next holder got in.

:class:`Changes` waits for the next events under a key or prefix from a
known revision, so a "read state, then wait for a change" loop never misses
a change that happened between the read and the wait.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import trio

from ..errors import CompactedRevision, EtcdError, EtcdUnavailable, MalformedRecord
from ..etcd._json import MAX_NESTING, too_deep

if TYPE_CHECKING:
    from ..etcd import EtcdClient, Lease, Watch, WatchEvent
    from ..supervision import TaskSupervisor

__all__ = ["Changes", "Session", "dumps", "loads", "session_expired"]

logger = logging.getLogger("foundation.coordination")


def dumps(value: Any, what: str) -> str:
    """``value`` as compact JSON (the etcd coordinator stores JSON only, never pickle).

    Raises:
        TypeError: ``value`` is not JSON-able (NaN and infinities included),
            or nested deeper than :data:`~foundation.etcd._json.MAX_NESTING`
            levels, which :func:`loads` would refuse to read back.
    """
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False, sort_keys=True)
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(
            f"{what} must be JSON-able on the etcd coordinator (dict, list, str, int, float,"
            f" bool, None), got {type(value).__name__}: {exc}"
        ) from exc
    if too_deep(text.encode("utf-8")):
        raise TypeError(
            f"{what} is nested deeper than {MAX_NESTING} levels (as stored, with the"
            " coordinator's own record around it), the most the etcd coordinator stores"
        )
    return text


def loads(raw: bytes, default: Any = None) -> Any:
    """Decode a JSON value written by :func:`dumps`; ``default`` if it is not JSON.

    A record nested deeper than anything :func:`dumps` writes (a foreign
    writer's: ``json.loads`` and every walk over its result would recurse)
    is never decoded.

    Raises:
        MalformedRecord: the record is nested deeper than ``MAX_NESTING``.
    """
    if too_deep(raw):
        raise MalformedRecord(None, f"JSON nested deeper than {MAX_NESTING} levels")
    try:
        return json.loads(raw)
    except ValueError:
        return default


def session_expired(exc: EtcdError) -> bool:
    """True for etcd's "session is expired" answers to Lock/Campaign (etcd 3.5+)."""
    low = exc.message.lower()
    return "session" in low and "expired" in low


class Session:
    """One lease, kept alive under the coordinator's task supervisor; see the module docstring.

    Made by :meth:`open`; always :meth:`close` it (shielded; it revokes the lease).
    """

    def __init__(
        self, client: EtcdClient, tasks: TaskSupervisor, ttl: int, what: str, *, fenced: bool
    ) -> None:
        self._client = client
        self._tasks = tasks
        self._ttl = ttl
        #: What the lease is for (logs, task names).
        self.what = what
        #: Whether the session fences itself before its lease can expire on the server.
        self.fenced = fenced
        self._lease: Lease | None = None
        #: Set once the session is lost (not when it is closed).
        self.lost = trio.Event()
        #: Why it was lost (None while it is not).
        self.reason: str | None = None
        self._callbacks: list[Callable[[str], None]] = []
        self._granted = trio.Event()
        self._stop = trio.Event()
        self._done = trio.Event()
        self._error: BaseException | None = None
        self._closing = False
        self._timer = trio.CancelScope()
        self._guard_scope: trio.CancelScope | None = None
        self._fence_scope = trio.CancelScope()

    def __repr__(self) -> str:
        lease = f"{self._lease.id:x}" if self._lease is not None else "-"
        state = "lost" if self.lost.is_set() else "closed" if self._closing else "live"
        return f"<Session {self.what} lease={lease} {state}>"

    @classmethod
    async def open(
        cls, client: EtcdClient, tasks: TaskSupervisor, ttl: int, what: str, *, fenced: bool = False
    ) -> Session:
        """Grant a lease and keep it alive in a task of ``tasks``.

        With ``fenced``, the session also fences itself (see the module
        docstring) from the moment the lease is granted.

        Raises what the grant raised (``EtcdUnavailable``, ``EtcdAuthError``...).
        """
        session = cls(client, tasks, ttl, what, fenced=fenced)
        tasks.start_soon(session._run, name=f"etcd-coordinator lease: {what}")
        try:
            await session._granted.wait()
        except BaseException:
            await session.close()
            raise
        if session._error is not None:
            raise session._error
        if session._lease is None:
            raise trio.ClosedResourceError(f"the etcd coordinator is closing: no lease for {what}")
        if fenced:
            tasks.start_soon(session._fence, name=f"etcd-coordinator fence: {what}")
        return session

    @property
    def lease(self) -> Lease:
        """The session's lease (``expires_at``, ``margin``...); once granted."""
        assert self._lease is not None
        return self._lease

    @property
    def lease_id(self) -> int:
        return self.lease.id

    async def _fence(self) -> None:
        lease = self.lease
        with self._fence_scope:
            await lease.wait_expiring()
            if lease.alive:
                # No keepalive was acknowledged in time: the server may expire
                # the lease within the margin. Stop first.
                self.lose(
                    f"it fenced itself: no keepalive of its lease {lease.id:x} was acknowledged"
                    f" for {trio.current_time() - lease.renewed_at:.2f} s, and etcd may expire"
                    f" it {max(lease.expires_at - trio.current_time(), 0.0):.2f} s from now"
                    f" (TTL {lease.ttl} s, margin {lease.margin:g} s)"
                )

    async def _run(self) -> None:
        try:
            async with self._client.lease(self._ttl) as lease:
                self._lease = lease
                lease.on_lost(self._lease_lost)
                self._granted.set()
                try:
                    with self._timer:
                        await self._stop.wait()
                except trio.Cancelled:
                    # The coordinator is closing: what this lease holds goes with it.
                    self.lose("the etcd coordinator was closed")
                    raise
                if self._timer.cancelled_caught and not self._closing:
                    self.lose(f"its ttl of {self._timer_ttl:g} s ran out")
                # Leaving the lease's block revokes it: its keys go with it.
        except Exception as exc:
            if self._lease is None:
                self._error = exc  # the opener raises it
                return
            self.lose(f"its keepalive failed ({type(exc).__name__}: {exc})")
            raise  # recorded and logged by the task supervisor
        finally:
            self._granted.set()
            self._done.set()

    _timer_ttl = math.inf

    def expire_after(self, seconds: float) -> None:
        """Lose the session (and revoke its lease) ``seconds`` from now (a lock's ``ttl=``)."""
        self._timer_ttl = seconds
        self._timer.deadline = trio.current_time() + seconds

    def _lease_lost(self, error: EtcdError) -> None:
        if not self._closing:
            self.lose(f"its lease {self.lease_id:x} ended ({error.message})")

    def lose(self, reason: str) -> None:
        """Mark the session lost and run the ``on_lost`` callbacks (once; not after close)."""
        if self.lost.is_set() or self._closing:
            return
        self.reason = reason
        self.lost.set()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(reason)

    def on_lost(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(reason)`` when the session is lost (at once if it is)."""
        if self.reason is not None:
            callback(self.reason)
            return lambda: None
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    def guard(self, key: bytes, create_revision: int) -> None:
        """Lose the session when ``key`` (created at ``create_revision``) is deleted.

        Watches from the revision after the key's creation, so a deletion
        that already happened is seen too.
        """
        scope = self._guard_scope = trio.CancelScope()
        self._tasks.start_soon(
            self._guard, key, create_revision, scope, name=f"etcd-coordinator guard: {self.what}"
        )

    async def _guard(self, key: bytes, create_revision: int, scope: trio.CancelScope) -> None:
        with scope:
            changes = Changes(self._client, key, start_revision=create_revision + 1)
            try:
                while True:
                    try:
                        events = await changes.next()
                    except EtcdUnavailable as exc:
                        # The keepalive decides whether the lease is gone; keep watching.
                        logger.info("%s: watch on its key broke (%s); retrying", self.what, exc)
                        await trio.sleep(0.5)
                        continue
                    if not events:  # compacted: look at the key itself
                        kv = await self._client.get(key)
                        gone = kv is None or kv.create_revision != create_revision
                    else:
                        gone = any(e.type == "DELETE" and e.kv.key == key for e in events)
                    if gone:
                        self.lose(f"its key {key.decode(errors='replace')!r} was deleted")
                        return
            finally:
                await changes.aclose()

    async def close(self) -> None:
        """Stop the keepalive and revoke the lease (deleting its keys). Shielded, idempotent.

        Bounded by the client's timeout; if no member takes the revoke, the
        lease runs out its TTL (logged by the client).
        """
        self._closing = True
        self._callbacks.clear()
        self._fence_scope.cancel()
        if self._guard_scope is not None:
            self._guard_scope.cancel()
        self._stop.set()
        with trio.CancelScope(shield=True):
            await self._done.wait()


class Changes:
    """Successive batches of events under a key (or prefix) from a revision on.

    ``await changes.next()`` returns the next non-empty batch; an empty list
    means etcd compacted the history (re-read the state; waiting resumes
    from the current revision). Call :meth:`aclose` when done (shielded).
    """

    def __init__(
        self,
        client: EtcdClient,
        key: str | bytes,
        *,
        prefix: bool = False,
        start_revision: int,
    ) -> None:
        self._client = client
        self._key = key
        self._prefix = prefix
        #: The revision the next batch starts at.
        self.next_revision = start_revision
        self._stack: AsyncExitStack | None = None
        self._watch: Watch | None = None

    async def next(self) -> list[WatchEvent]:
        while True:
            if self._watch is None:
                stack = AsyncExitStack()
                try:
                    self._watch = await stack.enter_async_context(
                        self._client.watch(
                            self._key, prefix=self._prefix, start_revision=self.next_revision
                        )
                    )
                except BaseException:
                    await stack.aclose()
                    raise
                self._stack = stack
            try:
                response = await self._watch.__anext__()
            except CompactedRevision:
                await self.aclose()
                self.next_revision = await self._client.current_revision() + 1
                return []
            except BaseException:
                await self.aclose()
                raise
            self.next_revision = max(self.next_revision, self._watch.next_revision)
            if response.events:
                return response.events

    async def aclose(self) -> None:
        stack, self._stack, self._watch = self._stack, None, None
        if stack is not None:
            with trio.CancelScope(shield=True):
                await stack.aclose()
