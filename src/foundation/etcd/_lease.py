"""A lease kept alive by a task of its own, and told apart from a lost one.

etcd deletes every key bound to a lease when the lease's TTL runs out
without a keepalive. :class:`Lease` renews at TTL/3 (one POST per refresh:
a keepalive stream over plain HTTP buffers and lets the lease die, etcd
#8237) and reports, never hides, the end of the lease: ``lost`` is set,
``error`` says why, ``on_lost`` callbacks run, and
``foundation.etcd.lease.expired`` is emitted. The lease counts as lost when
etcd answers TTL 0 or when no member renewed it within its TTL (etcd may
have expired it by then, and a lock holder must assume it did).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol

import trio

from .. import errors, telemetry
from .._util import reraise_collapsed

__all__ = ["Lease", "LeaseCalls", "open_lease"]

logger = logging.getLogger("foundation.etcd")


class LeaseCalls(Protocol):
    """The calls a :class:`Lease` makes: what :class:`~foundation.etcd.EtcdClient` provides.

    Typed by what it uses, so this module needs nothing from the client's.
    """

    async def lease_grant(self, ttl: int, lease_id: int = 0) -> Lease: ...
    async def lease_keepalive_once(self, lease_id: int) -> int: ...
    async def lease_revoke(self, lease_id: int) -> None: ...


class Lease:
    """A granted lease; made by :meth:`EtcdClient.lease`."""

    def __init__(self, client: LeaseCalls, lease_id: int, ttl: int) -> None:
        #: The lease ID (bind keys to it with ``lease=lease.id``).
        self.id = lease_id
        #: Its TTL in seconds, as granted (etcd may raise a small TTL to its minimum).
        self.ttl = ttl
        #: Set once the lease is lost; see :attr:`error`.
        self.lost = trio.Event()
        #: Why it was lost (None while alive).
        self.error: errors.LeaseExpired | None = None
        #: Trio time of the last successful renewal.
        self.renewed_at = trio.current_time()
        self._client = client
        self._callbacks: list[Callable[[errors.LeaseExpired], None]] = []

    def __repr__(self) -> str:
        state = "lost" if self.lost.is_set() else "alive"
        return f"<Lease {self.id:x} ttl={self.ttl} {state}>"

    @property
    def alive(self) -> bool:
        return not self.lost.is_set()

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

    def _lose(self, error: errors.LeaseExpired, *, revoked: bool = False) -> None:
        if self.error is not None:
            return
        self.error = error
        self.lost.set()
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

    async def keepalive_once(self) -> int:
        """Renew now; returns the TTL left. Raises LeaseExpired (and marks it lost)."""
        try:
            ttl = await self._client.lease_keepalive_once(self.id)
        except errors.LeaseExpired as exc:
            self._lose(exc)
            raise
        self.renewed_at = trio.current_time()
        return ttl

    async def _keep_alive(self) -> None:
        interval = max(self.ttl / 3.0, 0.2)
        while True:
            await trio.sleep_until(self.renewed_at + interval)
            try:
                with trio.fail_after(max(interval, 0.5)):
                    await self.keepalive_once()
            except errors.LeaseExpired:
                return
            except (errors.EtcdUnavailable, trio.TooSlowError) as exc:
                if trio.current_time() - self.renewed_at >= self.ttl:
                    self._lose(
                        errors.LeaseExpired(
                            f"no member renewed it within its TTL of {self.ttl} s ({exc})",
                            None,
                            getattr(exc, "endpoint", None),
                            self.id,
                        )
                    )
                    return
                logger.info("etcd lease %x keepalive failed (%s); retrying", self.id, exc)
                await trio.sleep(min(0.5, interval))

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
