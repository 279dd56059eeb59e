"""EtcdCoordinator: the coordinator interface on etcd, cluster-wide.

Locks and elections use etcd's own Lock and Election services under the
names ``prefix + name`` (so with ``prefix=""`` they work together with
``etcdctl lock`` and ``etcdctl elect``), with one lease per acquisition or
campaign, raced against that lease (see :mod:`._etcd_lock` and
:mod:`._etcd_election`). Semaphores and read/write locks queue one key per
request, each on a lease of its own, under ``prefix + "semaphore/"`` and
``"rwlock/"`` (:mod:`._etcd_queue`, :mod:`._etcd_semaphore`,
:mod:`._etcd_rwlock`); etcd has no such services, so no other client takes
part in them. Memberships are a key per member under ``"membership/"``
(:mod:`._etcd_membership`). Barriers, agreement, consensus and counters are
recipes on keys under ``"barrier/"``, ``"agree/"``, ``"consensus/"`` and
``"counter/"`` (:mod:`._etcd_barrier`, :mod:`._etcd_consensus`). Lock and
election names share the prefix with those seven subtrees, so do not name a
lock or election after them.

A call that fails because no member answered raises
:class:`~foundation.errors.NodeUnreachable` (:mod:`._etcd_reach`).

Every background task (lease keepalives, key guards, membership watches) runs under the
coordinator's :class:`~foundation.supervision.TaskSupervisor`; a task that
fails is logged and recorded there (``coord.tasks.failures()``), and a lost
lease reaches the holder of the lock or leadership it served as
:class:`LockLost` / :class:`LeadershipLost`.

Differences from :class:`LocalCoordinator`, all from etcd being shared:

* Fencing tokens and term numbers are etcd revisions: strictly increasing
  per name across every client, but not consecutive and not starting at 1.
* ``lock(timeout=)`` bounds the wait in the queue; joining it (a lease
  grant and one txn) always completes first, so ``timeout=0`` takes a free
  lock. ``lock(ttl=)`` revokes the lock's lease ``ttl`` seconds after it
  was granted; without it the lease (``ttl`` of the coordinator) is kept
  alive while held. Leaving a lock block waits for the revoke (one round
  trip, shielded).
* ``lock_status().since`` is exact for this coordinator's holds; see
  :func:`._etcd_lock.lock_status` for the others.
* After ``resign()`` etcd elects the next candidate at once, so ``leader()``
  names it (not None) while the resigned block may still be exiting; only
  blocks of one coordinator are kept from overlapping.
* Values passed to ``agree`` and ``consensus`` must be JSON-able.

Layout: one module per primitive, mirrored by the local side
(``_local_<primitive>.py``). A primitive is given the coordinator's
:class:`~._etcd_context.EtcdContext` (client, prefix, TTL, task supervisor,
holds, sessions, the shared lease), never the coordinator, and keeps any
per-coordinator state of its own in an object of its own class
(``ctx.state(Kind)``). A hold (a lock, and later a semaphore slot or a
read/write hold) subclasses :class:`~._held.HeldLockRecord`. Adding a
primitive is one module here, one on the local side, and one method on
each coordinator (and the :class:`~foundation.coordination.Coordinator`
protocol); argument checks come from :mod:`._checks`.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..etcd import EtcdClient, EtcdSettings
from ..etcd._connect import connection_keywords, resolve_settings, shared_client
from ..supervision import TaskSupervisor, open_task_supervisor
from ._checks import check_limit, check_member, check_name, check_parties, check_seconds
from ._etcd_barrier import EtcdBarrier
from ._etcd_consensus import EtcdCounter, agree, consensus
from ._etcd_consensus import vote as _vote
from ._etcd_context import EtcdContext
from ._etcd_election import EtcdElection, EtcdElections
from ._etcd_lock import EtcdLock, lock_status
from ._etcd_membership import membership
from ._etcd_reach import reaching, unreachable_as_node
from ._etcd_rwlock import EtcdRWLock
from ._etcd_semaphore import EtcdSemaphore
from ._membership import GroupMembership
from ._types import Decision, LockStatus, Vote

__all__ = ["EtcdCoordinator", "open_etcd_coordinator"]


class EtcdCoordinator:
    """Coordination on etcd: locks, semaphores, read/write locks, memberships, elections...

    Implements :class:`~foundation.coordination.Coordinator`. Open it with
    :func:`open_etcd_coordinator`; do not instantiate directly.
    """

    def __init__(self, client: EtcdClient, tasks: TaskSupervisor, *, prefix: str, ttl: int) -> None:
        # Everything the primitives need, and all they see of this coordinator.
        self._ctx = EtcdContext(client, tasks, prefix=prefix, ttl=ttl)

    def __repr__(self) -> str:
        ctx = self._ctx
        return (
            f"<EtcdCoordinator prefix={ctx.prefix!r} at {ctx.client.current_endpoint}:"
            f" {len(ctx.holds)} locks held,"
            f" {len(ctx.state(EtcdElections).candidates)} candidates>"
        )

    @property
    def client(self) -> EtcdClient:
        """The etcd client this coordinator talks through."""
        return self._ctx.client

    @property
    def tasks(self) -> TaskSupervisor:
        """The task supervisor running this coordinator's background work."""
        return self._ctx.tasks

    @property
    def prefix(self) -> str:
        """The key prefix of every name (``""`` -- etcd's names as they are)."""
        return self._ctx.prefix

    @property
    def ttl(self) -> int:
        """The TTL, in seconds, of each lock's and campaign's lease (kept alive at TTL/3)."""
        return self._ctx.ttl

    # -- locks ---------------------------------------------------------------
    def lock(
        self,
        name: str,
        timeout: float | None = None,
        *,
        holder: str | None = None,
        ttl: float | None = None,
    ) -> EtcdLock:
        """A handle on lock ``name`` (etcd's lock ``prefix + name``).

        Args:
            name: The lock's name.
            timeout: Seconds to wait in the queue, then :class:`~foundation.errors.LockTimeout`.
            holder: The name :meth:`lock_status` reports (default: the task's).
            ttl: Take the lock away ``ttl`` seconds after it was granted (the
                block is cancelled and raises :class:`~foundation.errors.LockLost`).

        Raises:
            LockTimeout: on entering, not granted within ``timeout``.
            ConfigError: on entering, a bad name, timeout or ttl.
        """
        check_name("lock name", name)
        if holder is not None:
            check_name("holder", holder)
        timeout = check_seconds("timeout", timeout)
        ttl = check_seconds("ttl", ttl)
        return EtcdLock(self._ctx, name, timeout, holder, ttl)

    async def lock_status(self, name: str) -> LockStatus | None:
        """Who holds lock ``name`` now, or None; see :func:`._etcd_lock.lock_status`."""
        return await lock_status(self._ctx, check_name("lock name", name))

    # -- semaphores and read/write locks -------------------------------------
    def semaphore(
        self,
        name: str,
        limit: int,
        timeout: float | None = None,
        *,
        holder: str | None = None,
    ) -> EtcdSemaphore:
        """A handle on semaphore ``name`` (keys under ``prefix + "semaphore/" + name + "/"``).

        At most ``limit`` holders across every process using the prefix,
        served in arrival order; each holder has a lease of its own, and
        losing it cancels the holder's block, which raises
        :class:`~foundation.errors.LockLost`. ``slot.fencing_token`` is the
        slot key's create revision. etcd has no semaphore service: with
        ``prefix=""`` these keys interoperate with no other client.

        Args:
            name: The semaphore's name.
            limit: The most holders at a time; every holder must give the same.
            timeout: Seconds to wait in the queue, then :class:`~foundation.errors.LockTimeout`.
            holder: A name for logs and telemetry (default: the task's).

        Raises:
            ConfigError: a bad name, limit, timeout or holder; on entering,
                the semaphore is held or waited for with another ``limit``.
            LockTimeout: on entering, no slot within ``timeout``.
            NodeUnreachable: on entering, no etcd member answered.
        """
        check_name("semaphore name", name)
        limit = check_limit(limit)
        if holder is not None:
            check_name("holder", holder)
        timeout = check_seconds("timeout", timeout)
        return EtcdSemaphore(self._ctx, name, limit, timeout, holder)

    def rwlock(self, name: str) -> EtcdRWLock:
        """The read/write lock ``name`` (keys under ``prefix + "rwlock/" + name + "/"``).

        Many readers or one writer across every process using the prefix,
        FIFO; each hold has a lease of its own (see :meth:`semaphore`).
        """
        return EtcdRWLock(self._ctx, check_name("rwlock name", name))

    # -- membership ------------------------------------------------------------
    def membership(
        self, group: str, member: str, metadata: Any = None
    ) -> AbstractAsyncContextManager[GroupMembership]:
        """Join ``group`` as ``member`` for an ``async with`` block; leave on exit.

        The member is a key under ``prefix + "membership/" + group + "/"``
        bound to a lease of its own, so a crashed member leaves after at most
        ``ttl`` seconds. Entering waits while ``member`` is in the group
        already (a member id is there at most once, a crashed one until its
        lease expires). If the lease is lost while joined, the member has
        left the group; it joins again by itself as soon as etcd can be
        reached (``foundation.coordination.membership.lost``), and the block
        goes on. Leaving revokes the lease (shielded).

        Args:
            group: The group's name.
            member: This member's id (non-empty, without ``/``).
            metadata: JSON-able data, shown to the group by ``metadata()``.

        Raises:
            ConfigError: a bad group name or member id.
            TypeError: ``metadata`` is not JSON-able.
            NodeUnreachable: on entering, no etcd member answered.
        """
        check_name("group", group)
        check_member(member)
        return membership(self._ctx, group, member, metadata)

    # -- the rest ---------------------------------------------------------------
    def election(self, group: str) -> EtcdElection:
        """The election of ``group`` (etcd's election ``prefix + group``)."""
        return EtcdElection(self._ctx, check_name("election group", group))

    def barrier(self, name: str, parties: int) -> EtcdBarrier:
        """The reusable barrier ``name`` of ``parties`` parties.

        Raises:
            ConfigError: ``parties`` is not an int >= 1.
        """
        check_name("barrier name", name)
        return EtcdBarrier(self._ctx, name, check_parties(parties))

    @reaching
    async def agree(self, name: str, proposal: Any) -> Any:
        """Single-decree agreement: the first (JSON) proposal for ``name`` wins; all learn it."""
        return await agree(self._ctx, name, proposal)

    @reaching
    async def consensus(
        self,
        consensus_id: str,
        participants: Collection[str],
        proposal: Any,
        quorum: int | None = None,
        unanimous: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 -- the interface takes timeout=
    ) -> Decision:
        """Open ballot ``consensus_id`` on ``proposal`` (JSON) and wait for its decision.

        Same rules as :meth:`LocalCoordinator.consensus`; votes may come from
        any process using the same etcd prefix.

        Raises:
            ConsensusTimeout: no decision within ``timeout`` seconds.
            ConfigError: no participants, a bad quorum, or both ``quorum``
                and ``unanimous`` with different counts.
            TypeError: the proposal is not JSON-able.
        """
        return await consensus(
            self._ctx, consensus_id, participants, proposal, quorum, unanimous, timeout
        )

    @reaching
    async def vote(self, consensus_id: str, participant: str, vote: Vote) -> Decision | None:
        """Cast ``participant``'s vote on ballot ``consensus_id``.

        Raises:
            UnknownParticipant, DuplicateVote, ConsensusTimeout: as on the
                local coordinator.
        """
        return await _vote(self._ctx, consensus_id, participant, vote)

    def counter(self, name: str) -> EtcdCounter:
        """The atomic counter ``name`` (0 until first added to)."""
        return EtcdCounter(self._ctx, check_name("counter name", name))


def _check_ttl(ttl: float) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl >= 1:
        raise ConfigError(f"ttl={ttl!r}: use a number of seconds >= 1")
    return math.ceil(ttl)


@asynccontextmanager
async def open_etcd_coordinator(
    endpoints: str | Sequence[str] | None = None,
    *,
    prefix: str = "foundation/",
    ttl: float = 10,
    client: EtcdClient | None = None,
    settings: EtcdSettings | None = None,
    username: str | None = None,
    password: str | None = None,
    ca_cert: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
    timeout: float | None = None,  # noqa: ASYNC109 -- the client's per-call default
) -> AsyncIterator[EtcdCoordinator]:
    """Open an :class:`EtcdCoordinator` on the etcd cluster at ``endpoints``.

    Entering connects (and, with credentials, authenticates) and checks that
    the prefix may be read. Leaving cancels the coordinator's background
    tasks; the leases they kept alive are revoked (each bounded by
    ``timeout``), so locks and leadership still held are released. An
    error of the block is raised as itself.

    Args:
        endpoints: etcd client URLs (``"http://127.0.0.1:2379"``), or one
            comma-separated string; default :envvar:`FOUNDATION_ETCD_ENDPOINTS`.
        prefix: Put before every name; ``""`` uses etcd's names as they are
            (interoperates with ``etcdctl lock``/``elect``).
        ttl: Seconds each lock's and campaign's lease lives without a
            keepalive (it is kept alive at TTL/3); a crashed holder's lock
            is free again after at most this long. etcd may raise a small
            TTL to its own minimum.
        client: An open :class:`~foundation.etcd.EtcdClient` to share (one
            channel for the whole process, a registry's included); the
            caller owns it, and leaving does not close it. Not with
            ``endpoints``, ``settings`` or the keywords below.
        settings: An :class:`~foundation.etcd.EtcdSettings` instead of the
            keywords below (not with them).
        username, password: etcd authentication.
        ca_cert, client_cert, client_key: TLS files.
        timeout: Seconds each etcd call may take, failover included (default 5).

    Raises:
        EtcdAuthError: the credentials were refused.
        EtcdPermissionDenied: the user may not read the prefix.
        NodeUnreachable: no member answered (an ``EtcdUnavailable`` too).
        ConfigError: a bad argument, or two forms of connection mixed.

    Example::

        async with open_etcd_coordinator(["http://127.0.0.1:2379"]) as coord:
            async with coord.lock("resource", timeout=5) as held:
                ...
    """
    if not isinstance(prefix, str):
        raise ConfigError(f'prefix={prefix!r}: use a str ("" for none)')
    lease_ttl = _check_ttl(ttl)
    resolved = resolve_settings(
        endpoints,
        client=client,
        settings=settings,
        keywords=connection_keywords(
            username=username,
            password=password,
            ca_cert=ca_cert,
            client_cert=client_cert,
            client_key=client_key,
            timeout=timeout,
        ),
        what="open_etcd_coordinator",
    )
    async with AsyncExitStack() as stack:
        with unreachable_as_node():
            etcd = await stack.enter_async_context(shared_client(client, resolved))
            if prefix:
                # Fails now (EtcdPermissionDenied) for a prefix the user may not touch.
                await etcd.range(prefix, prefix=True, count_only=True)
            else:
                # One round trip, so an unreachable cluster fails here too.
                await etcd.status()
        tasks = await stack.enter_async_context(open_task_supervisor("etcd-coordinator"))
        coord = EtcdCoordinator(etcd, tasks, prefix=prefix, ttl=lease_ttl)
        try:
            yield coord
        finally:
            tasks.cancel()


if TYPE_CHECKING:
    from ._interface import Coordinator

    def _conforms(coord: EtcdCoordinator) -> Coordinator:
        # mypy checks here that EtcdCoordinator satisfies the Coordinator protocol.
        return coord
