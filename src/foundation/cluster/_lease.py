"""The node lease: one etcd lease for every child lock a node holds, and its self-fencing.

Why one lease per node and not one per child: a lease is renewed at TTL/3,
so a lease per child makes a node's keepalive traffic grow with its
children (the etcd coordinator's ``lock()`` gives each acquisition a lease
of its own, which is right for a few locks and wrong for thousands of
children). etcd's Lock service keys a holder by name *and* lease, so one
lease holds any number of locks of different names, and a node holds each
child's lock at most once: one lease per node keeps the lock semantics and
makes idle children cost no etcd traffic at all.

The price is that the lease's fate is shared: when a node cannot renew it,
all its children stop together, which is what a node cut off from etcd
must do anyway. The rule is the coordinator's (see
:func:`foundation.etcd.Lease.wait_expiring`): etcd may expire the lease at
the send time of the last acknowledged keepalive + the TTL it granted, so
the node cancels its children at that moment minus a margin of
``max(1 s, TTL/5)``, measured on its own clock from a time it knows is no
later than the server's. A child that stops within the margin has stopped
before any other node can take its lock; one that shields itself longer is
reported (``foundation.cluster.child.overrun``).

After fencing, the lease's block is left (which revokes the lease, so the
locks are free at once when etcd can be reached), and a new lease is
granted as soon as etcd answers; the node then takes children again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from .. import telemetry
from ..errors import EtcdError, EtcdUnavailable, LeaseExpired

if TYPE_CHECKING:
    from ..etcd import EtcdClient, Lease

__all__ = ["NodeLease"]

logger = logging.getLogger("foundation.cluster")


class NodeLease:
    """One node's lease for its child locks, granted again after each fencing.

    :meth:`run` is a long-lived task; ``await nursery.start(lease.run)``
    returns once the first lease is granted.
    """

    def __init__(
        self,
        client: EtcdClient,
        ttl: int,
        what: str,
        on_fence: Callable[[str, float], None],
        on_grant: Callable[[], None] = lambda: None,
    ) -> None:
        self._client = client
        self._ttl = ttl
        self._what = what
        self._on_fence = on_fence
        self._on_grant = on_grant
        #: The current lease (the last one granted).
        self.lease: Lease | None = None
        #: Bumped with each lease granted: holds of an older epoch are void.
        self.epoch = 0
        #: True while the current lease is alive and not past its fencing deadline.
        self.ready = False
        self._changed = trio.Event()
        self._stale: list[int] = []  # leases whose revoke failed: revoked when etcd answers

    def __repr__(self) -> str:
        lease = f"{self.lease.id:x}" if self.lease is not None else "-"
        return f"<NodeLease {self._what} lease={lease} epoch={self.epoch} ready={self.ready}>"

    @property
    def id(self) -> int:
        """The current lease's ID (0 before the first grant)."""
        return self.lease.id if self.lease is not None else 0

    @property
    def ttl(self) -> int:
        """The TTL etcd granted (it raises a TTL below its minimum), or the one asked for."""
        return self.lease.ttl if self.lease is not None else self._ttl

    def _bump(self) -> None:
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    async def wait_change(self) -> None:
        """Return at the next grant or fencing."""
        await self._changed.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold a lease, fence when it may expire, grant another; until cancelled.

        Raises:
            EtcdError: the first grant failed (etcd unreachable, permission...).
        """
        try:
            await self._hold(task_status)
        finally:
            self.ready = False

    async def _hold(self, task_status: trio.TaskStatus[None]) -> None:
        started = False
        delay = 0.1
        while True:
            try:
                async with self._client.lease(self._ttl) as lease:
                    self.lease = lease
                    self.epoch += 1
                    self.ready = True
                    self._bump()
                    if not started:
                        started = True
                        task_status.started()
                    self._on_grant()
                    delay = 0.1
                    await self._revoke_stale()
                    await lease.wait_expiring()
                    self.ready = False
                    if lease.alive:
                        reason = (
                            f"lease {lease.id:x} not renewed; etcd may expire it in"
                            f" {lease.expires_at - trio.current_time():.2f} s"
                        )
                    else:
                        reason = f"lease {lease.id:x} ended ({lease.error})"
                    logger.warning("%s: fenced off, stopping its children: %s", self._what, reason)
                    telemetry.emit(
                        "foundation.cluster.node.fenced",
                        {"ttl": float(lease.ttl)},
                        {"node": self._what, "lease": lease.id, "reason": reason},
                    )
                    self._on_fence(reason, lease.expires_at)
                    self._bump()
                    if lease.alive:
                        self._stale.append(lease.id)
                # Leaving the block revoked the lease if etcd answered (its keys,
                # the child locks, are free now); else it expires on its own.
            except EtcdError as exc:
                if not started:
                    raise
                logger.info("%s: cannot get a new lease yet (%s); retrying", self._what, exc)
                await trio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _revoke_stale(self) -> None:
        """Revoke leases whose revoke failed while etcd was out of reach (frees their locks)."""
        while self._stale:
            lease_id = self._stale[0]
            try:
                await self._client.lease_revoke(lease_id)
            except EtcdUnavailable as exc:
                logger.info("%s: old lease %x not revoked yet (%s)", self._what, lease_id, exc)
                return
            except LeaseExpired:
                logger.debug("%s: old lease %x had expired already", self._what, lease_id)
            self._stale.pop(0)
