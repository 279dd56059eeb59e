"""Leases kept alive over one shared LeaseKeepAlive stream, and told apart from lost ones.

etcd deletes every key bound to a lease when the lease's TTL runs out
without a keepalive. :class:`Lease` renews at TTL/3 and reports, never
hides, the end of the lease: ``lost`` is set, ``error`` says why,
``on_lost`` callbacks run, and ``foundation.etcd.lease.expired`` is emitted.

**When the server may expire it.** etcd restarts a lease's TTL when it
*receives* a keepalive, which is no earlier than when the client *sent* it.
So the last moment the lease is known to live is ``expires_at`` = send time of
the last acknowledged keepalive + the TTL etcd answered with; the lease
counts as lost when that passes without a newer acknowledgement (or when
etcd answers TTL 0). Counting from the time of the last *reply* instead
(as this client once did) lets a partitioned lock holder believe in its
lock for up to a round trip after the server expired it: measured, two
holders overlapped for 0.03-0.2 s. A holder that must stop before anyone
else can take over waits with :meth:`Lease.wait_expiring` (``expires_at``
minus a margin) and cancels its work then.

All leases of a client share one LeaseKeepAlive stream (as etcd's own Go
client does), read by one thread, in the client's nursery. Each renewal
expects its answer within the transport's per-attempt deadline; a member that
misses it (stalled) is skipped and the stream reopened on the next endpoint.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol

import trio

from .. import errors, telemetry
from .._util import reraise_collapsed
from ._codec import pb
from ._transport import Outcome, Transport, classify, map_wire_error
from ._wire import WireError, WireStream

__all__ = ["KeepAliveStream", "Lease", "LeaseCalls", "open_lease"]

logger = logging.getLogger("foundation.etcd")


class LeaseCalls(Protocol):
    """What a :class:`Lease` needs from its client (so this module needs no client import)."""

    @property
    def timeout(self) -> float: ...

    async def lease_grant(self, ttl: int, lease_id: int = 0) -> Lease: ...

    async def lease_revoke(self, lease_id: int) -> None: ...

    async def lease_renew(
        self,
        lease_id: int,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 -- bounds the retries
    ) -> tuple[int, float]: ...


class _Waiter:
    __slots__ = ("done", "error", "ttl")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.ttl: int | None = None
        self.error: WireError | None = None


class KeepAliveStream:
    """The client's one LeaseKeepAlive stream, shared by all its leases."""

    def __init__(self, transport: Transport, nursery: trio.Nursery) -> None:
        self._transport = transport
        self._nursery = nursery
        self._stream: WireStream | None = None
        self._opening = trio.Lock()
        self._waiters: dict[int, collections.deque[_Waiter]] = {}
        self._stream_waiters: dict[WireStream, list[_Waiter]] = {}

    async def _current(self, timeout: float) -> WireStream:  # noqa: ASYNC109
        async with self._opening:
            if self._stream is None:
                stream, _ = await self._transport.open_stream(
                    self._nursery, "Lease.LeaseKeepAlive", None, timeout=timeout
                )
                self._stream = stream
                self._stream_waiters[stream] = []
                self._nursery.start_soon(
                    self._read, stream, name=f"etcd lease keepalive reader ({stream.endpoint})"
                )
            return self._stream

    async def _read(self, stream: WireStream) -> None:
        waiting = self._stream_waiters[stream]
        try:
            while True:
                response = await stream.receive()
                queue = self._waiters.get(response.ID)
                if not queue:
                    continue  # an answer to a renewal that gave up
                waiter = queue.popleft()
                if not queue:
                    del self._waiters[response.ID]
                waiter.ttl = response.TTL
                waiter.done.set()
        except WireError as exc:
            self._drop(stream)
            for waiter in waiting:
                if not waiter.done.is_set():
                    waiter.error = exc
                    waiter.done.set()
        finally:
            del self._stream_waiters[stream]

    def _drop(self, stream: WireStream) -> None:
        stream.cancel()
        if self._stream is stream:
            self._stream = None

    def close(self) -> None:
        if self._stream is not None:
            self._drop(self._stream)

    async def renew(
        self,
        lease_id: int,
        timeout: float,  # noqa: ASYNC109 -- bounds the retries
    ) -> tuple[int, float]:
        """Renew once; ``(TTL etcd answered, trio time the request was sent)``.

        Tries member after member (each attempt within the per-attempt
        deadline) until ``timeout``.

        Raises:
            EtcdUnavailable: no member answered within ``timeout``.
            EtcdError: etcd refused (a subclass says why).
        """
        transport = self._transport
        deadline = trio.current_time() + timeout
        reauthed = False
        last_why = "no attempt made"
        endpoint: str | None = None
        failures = 0
        request = pb.rpc.LeaseKeepAliveRequest(ID=lease_id)
        while True:
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                raise errors.EtcdUnavailable(
                    f"no member renewed lease {lease_id:x} within {timeout:g} s ({last_why})",
                    None,
                    endpoint,
                )
            stream = await self._current(remaining)
            endpoint = stream.endpoint
            if trio.current_time() >= deadline:
                # Opening the stream used up the call's time: nothing sent,
                # the stream is fine; the loop's top says the call timed out.
                last_why = "opening the keepalive stream took the whole timeout"
                continue
            waiter = _Waiter()
            self._waiters.setdefault(lease_id, collections.deque()).append(waiter)
            waiting = self._stream_waiters.get(stream)
            if waiting is not None:
                waiting.append(waiter)
            sent = trio.current_time()
            stream.send(request)
            per = transport.attempt_deadline(deadline - sent, True)
            try:
                with trio.move_on_after(per):
                    await waiter.done.wait()
            finally:
                if waiting is not None and waiter in waiting:
                    waiting.remove(waiter)
                queue = self._waiters.get(lease_id)
                if queue is not None and waiter in queue:
                    queue.remove(waiter)
                    if not queue:
                        del self._waiters[lease_id]
            if waiter.ttl is not None:
                transport.endpoint_succeeded(stream.endpoint)
                return waiter.ttl, sent
            if waiter.error is not None:
                exc = waiter.error
                outcome = classify(exc)
                if outcome is Outcome.REAUTH and not reauthed and transport.settings.username:
                    reauthed = True
                    await transport.authenticate()
                    continue
                if outcome in (Outcome.FAIL, Outcome.REAUTH):
                    raise map_wire_error(exc, stream.endpoint) from exc
                last_why = str(exc)
            else:
                last_why = f"no answer within {per:g} s"
                self._drop(stream)
            transport.endpoint_failed(stream.endpoint, last_why)
            failures += 1
            await transport.pause_after_failures(failures, deadline)


class Lease:
    """A granted lease; made by :meth:`EtcdClient.lease` or :meth:`EtcdClient.lease_grant`."""

    def __init__(
        self, client: LeaseCalls, lease_id: int, ttl: int, *, sent_at: float | None = None
    ) -> None:
        now = trio.current_time()
        #: The lease ID (bind keys to it with ``lease=lease.id``).
        self.id = lease_id
        #: Its TTL in seconds, as granted (etcd may raise a small TTL to its minimum).
        self.ttl = ttl
        #: Set once the lease is lost; see :attr:`error`.
        self.lost = trio.Event()
        #: Why it was lost (None while alive).
        self.error: errors.LeaseExpired | None = None
        #: Trio time of the last successful renewal's answer.
        self.renewed_at = now
        #: Trio time by which etcd may expire the lease: the send time of the
        #: last acknowledged grant or keepalive plus the TTL etcd answered.
        self.expires_at = (now if sent_at is None else sent_at) + ttl
        self._client = client
        self._callbacks: list[Callable[[errors.LeaseExpired], None]] = []
        self._changed = trio.Event()

    def __repr__(self) -> str:
        state = "lost" if self.lost.is_set() else "alive"
        return f"<Lease {self.id:x} ttl={self.ttl} {state}>"

    @property
    def alive(self) -> bool:
        return not self.lost.is_set()

    @property
    def margin(self) -> float:
        """The default safety margin before :attr:`expires_at`: ``max(1 s, TTL / 5)``."""
        return max(1.0, self.ttl / 5.0)

    async def wait_expiring(self, margin: float | None = None) -> None:
        """Return once :attr:`expires_at` is ``margin`` seconds away (or the lease is lost).

        ``margin`` defaults to :attr:`margin`. Every acknowledged keepalive
        moves the deadline on, so this waits as long as renewals keep
        arriving in time; a lock or leadership holder cancels its work when
        it returns, so it has stopped before etcd can expire the lease and
        let someone else in.
        """
        margin = self.margin if margin is None else margin
        while self.alive:
            at = self.expires_at - margin
            if trio.current_time() >= at:
                break
            changed = self._changed
            with trio.move_on_at(at):
                await changed.wait()
        await trio.lowlevel.checkpoint()

    def on_lost(self, callback: Callable[[errors.LeaseExpired], None]) -> Callable[[], None]:
        """Call ``callback(error)`` when the lease is lost (at once if it already is)."""
        if self.error is not None:
            callback(self.error)
            return lambda: None
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    def _renewed(self, ttl: int, sent: float) -> None:
        self.renewed_at = trio.current_time()
        self.expires_at = max(self.expires_at, sent + ttl)
        self._changed.set()
        self._changed = trio.Event()

    def _lose(self, error: errors.LeaseExpired, *, revoked: bool = False) -> None:
        if self.error is not None:
            return
        self.error = error
        self.lost.set()
        self._changed.set()
        if revoked:
            logger.debug("etcd lease %x revoked", self.id)
        else:
            logger.warning("etcd lease %x lost: %s", self.id, error.message)
            telemetry.emit(
                "foundation.etcd.lease.expired",
                {"ttl": float(self.ttl)},
                {"lease": self.id, "reason": error.message},
            )
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(error)

    def _expired(self, ttl: int, endpoint: str | None) -> errors.LeaseExpired:
        return errors.LeaseExpired(f"etcd no longer knows it (TTL {ttl})", None, endpoint, self.id)

    async def keepalive_once(self) -> int:
        """Renew now; returns the TTL left. Raises LeaseExpired (and marks it lost)."""
        try:
            ttl, sent = await self._client.lease_renew(self.id)
        except errors.LeaseExpired as exc:
            self._lose(exc)
            raise
        self._renewed(ttl, sent)
        return ttl

    async def _keep_alive(self) -> None:
        interval = max(self.ttl / 3.0, 0.2)
        last_sent = self.expires_at - self.ttl
        while True:
            await trio.sleep_until(last_sent + interval)
            now = trio.current_time()
            try:
                ttl, sent = await self._client.lease_renew(
                    self.id, timeout=max(self.expires_at - now, 0.05)
                )
            except errors.LeaseExpired as exc:
                self._lose(exc)
                return
            except errors.EtcdError as exc:
                if trio.current_time() >= self.expires_at:
                    self._lose(
                        errors.LeaseExpired(
                            f"no member renewed it within its TTL of {self.ttl} s ({exc})",
                            None,
                            exc.endpoint,
                            self.id,
                        )
                    )
                    return
                logger.info("etcd lease %x keepalive failed (%s); retrying", self.id, exc)
                await trio.sleep(min(0.25, interval))
                last_sent = trio.current_time() - interval
                continue
            self._renewed(ttl, sent)
            last_sent = sent

    async def revoke(self) -> None:
        """Revoke now: etcd deletes every key bound to it."""
        await self._client.lease_revoke(self.id)
        self._lose(errors.LeaseExpired("revoked", None, None, self.id), revoked=True)


@asynccontextmanager
async def open_lease(
    client: LeaseCalls, ttl: int, *, keepalive: bool = True
) -> AsyncIterator[Lease]:
    """Grant a lease, keep it alive while the block runs, revoke it after.

    Revoking is shielded and bounded by the client's timeout; if no member
    takes it (the cluster is down) the lease simply runs out its TTL, which
    is logged, not raised over the block's own outcome.
    """
    lease = await client.lease_grant(ttl)
    try:
        try:
            async with trio.open_nursery() as nursery:
                if keepalive:
                    nursery.start_soon(lease._keep_alive, name=f"etcd lease {lease.id:x} keepalive")
                try:
                    yield lease
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The keepalive task never raises, so an error here is the block's
            # own: give it back as itself, not wrapped by our nursery.
            reraise_collapsed(group)
    finally:
        if lease.alive:
            with trio.CancelScope(shield=True):
                try:
                    await lease.revoke()
                except errors.EtcdError as exc:
                    logger.warning(
                        "could not revoke etcd lease %x (%s); it expires in %s s",
                        lease.id,
                        exc,
                        lease.ttl,
                    )
