"""The distributed supervisor: each child runs on one live node of the cluster, at most once.

Layout of one node's supervisor (every task has a nursery and an owner)::

    open_distributed_supervisor()    caller's task; owns the nursery below
      ├── node lease                 one lease for all this node's child locks; fences
      ├── view                       watches specs, locks and moves (:mod:`._view`)
      ├── reconcile loop             starts what this node owns, stops what it must let go
      ├── members                    wakes the reconcile loop when the membership changes
      ├── rebalance loop             (rebalance=True) pulls owned children, one at a time
      └── one task per child held    lock -> one-child supervisor -> release

Placement: the children's owners are computed by rendezvous hashing over
the live members of the coordinator's membership ``cluster/NAME``
(``group.owner_of(json.dumps(id, sort_keys=True))``). A node starts a child
when its spec is active, nobody holds its lock, and the node owns it; with a
superset of the live members (a dead node not yet gone from the view) the
owner is either that dead node (nobody starts it yet) or the true owner, so
a child is never started on the wrong node just because a view lags.

Exclusion: a node runs a child only while its lock key (bound to the node
lease, see :mod:`._lease`) is the lowest in the child's lock queue. The key
is created by one txn that succeeds only if the queue is empty *and* the
spec has not changed since the node decided to start it, so a child
terminated or deleted meanwhile is never started. Each child runs under a
one-child :class:`~foundation.supervision.Supervisor` (its restart policy,
``register_as`` names, crash logs and shutdown deadlines), so restart
intensity is counted per child per node; over it, the child is marked
failed in etcd (guarded by the lock) and stopped everywhere.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from .. import errors, telemetry
from .._util import reraise_collapsed
from ..coordination import EtcdCoordinator, GroupMembership
from ..errors import ConfigError, EtcdError, EtcdUnavailable
from ..etcd import compare_create, compare_mod, op_delete, op_put, op_range, prefix_end
from ..supervision import (
    ChildInfo,
    ChildNode,
    ChildSpec,
    ChildState,
    Restart,
    Supervisor,
    SupervisorTree,
    open_supervisor,
)
from ..supervision._spec import resolve_target, takes_task_status
from ._context import set_fencing_token
from ._handoff import Handoff
from ._keys import ClusterKeys
from ._lease import NodeLease
from ._records import (
    ACTIVE,
    FAILED,
    STOPPED,
    ClusterChild,
    LockEntry,
    MoveRecord,
    SpecRecord,
    handoff_state,
)
from ._spec import check_portable_id, encode_spec, id_json, id_segment
from ._view import ClusterView

if TYPE_CHECKING:
    from ..etcd import Compare, EtcdClient, Op
    from ..registry import Registry

__all__ = ["DistributedSupervisor", "open_distributed_supervisor"]

logger = logging.getLogger("foundation.cluster")

#: Children acquiring and starting at once on one node (a burst of start_child
#: calls is queued, not thrown at etcd all together).
_START_CONCURRENCY = 64
#: Seconds before a node tries again a child whose acquisition failed on an
#: etcd error, and between retries of a release or of marking a child running.
_RETRY_PAUSE = 0.5
#: Seconds between reconcile passes when nothing changes (retries are due).
_TICK = 1.0


def _compare_empty(prefix: bytes) -> Compare:
    """A comparison that holds when no key exists under ``prefix``.

    etcd compares every key in ``[key, range_end)``; with none there, a
    create revision compares as 0 (etcd >= 3.3).
    """
    comparison = compare_create(prefix, "==", 0)
    comparison.pb.range_end = prefix_end(prefix)
    return comparison


@functools.lru_cache(maxsize=1024)
def _keywords(fn: Callable[..., Any]) -> frozenset[str]:
    """Which of ``handoff``/``handoff_state`` the target takes (explicitly)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return frozenset()
    return frozenset(name for name in ("handoff", "handoff_state") if name in params)


class _Local:
    """One child this node holds, or is acquiring: from the try-lock to the release."""

    __slots__ = (
        "done",
        "epoch",
        "failure",
        "finished",
        "finished_how",
        "instances",
        "lease_id",
        "lock_key",
        "phase",
        "record",
        "scope",
        "seg",
        "stop_reason",
        "sup",
        "token",
    )

    def __init__(self, seg: str, record: SpecRecord) -> None:
        self.seg = seg
        #: The spec record the node decided to run (the try-lock compares it).
        self.record = record
        self.scope = trio.CancelScope()
        #: "acquiring", "starting", "running", "stopping".
        self.phase = "acquiring"
        self.stop_reason: str | None = None
        self.token: int | None = None
        self.lock_key: bytes | None = None
        self.epoch = 0
        self.lease_id = 0
        self.sup: Supervisor | None = None
        #: Set when the child ended and its restart type says it is done.
        self.finished = trio.Event()
        self.finished_how: str | None = None
        #: Instances of the child's target running now (0 or 1; what fencing must stop).
        self.instances = 0
        self.failure: errors.RestartIntensityExceeded | None = None
        self.done = trio.Event()

    @property
    def child_id(self) -> Hashable:
        return self.record.id

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            if self.phase == "running":
                self.phase = "stopping"
        self.scope.cancel()

    def info(self) -> ChildInfo:
        if self.sup is not None:
            infos = self.sup.which_children()
            if infos:
                return infos[0]
        state = ChildState.STOPPING if self.stop_reason is not None else ChildState.STARTING
        return ChildInfo(self.child_id, state, 0, None)


class DistributedSupervisor:
    """This node's handle on a cluster-wide supervisor; made by :func:`open_distributed_supervisor`.

    Sync methods never block and answer for this node. Async methods talk to
    etcd (each checkpoints) and act cluster-wide.
    """

    def __init__(
        self,
        name: str,
        node: str,
        registry: Registry,
        coordinator: EtcdCoordinator,
        *,
        rebalance: bool,
        max_restarts: int,
        max_seconds: float,
    ) -> None:
        self._name = name
        self._node = node
        self._registry = registry
        self._coordinator = coordinator
        self._rebalance = rebalance
        self._max_restarts = max_restarts
        self._max_seconds = max_seconds
        self._spec_client = _registry_client(registry)
        self._lock_client = coordinator.client
        self._keys = ClusterKeys.make(_registry_prefix(registry), coordinator.prefix, name)
        self._view = ClusterView(self._keys, self._spec_client, self._lock_client, self._kick)
        self._lease = NodeLease(
            self._lock_client,
            coordinator.ttl,
            f"cluster {name!r} node {node!r}",
            self._on_fence,
            self._kick,
        )
        details = registry.health_check().details
        self._registry_ttl = float(details.get("lease_ttl") or 0)
        self._local: dict[str, _Local] = {}
        self._group: GroupMembership | None = None
        self._membership = AsyncExitStack()
        self._nursery: trio.Nursery | None = None
        self._open = False
        self._leaving = False
        self._wake = trio.Event()
        self._retry_at: dict[str, float] = {}
        self._pull_paused: dict[str, float] = {}
        self._limiter = trio.CapacityLimiter(_START_CONCURRENCY)

    def __repr__(self) -> str:
        return (
            f"<DistributedSupervisor {self._name!r} node {self._node!r}:"
            f" {len(self._local)} children here, {len(self._view.specs)} in the cluster>"
        )

    # -- introspection -----------------------------------------------------------
    @property
    def name(self) -> str:
        """The cluster-wide name (every node opens the same one)."""
        return self._name

    @property
    def node(self) -> str:
        """This node's id."""
        return self._node

    @property
    def ttl(self) -> float:
        """T: the larger of the registry's and the node lease's TTL, as etcd granted them.

        A dead node's children run again within about T (+ 2 s); a graceful
        exit waits at most T for its children to run on their new nodes.
        The registry's TTL counts as asked for: etcd grants it at most
        ``max(asked, etcd's minimum)``, and the node lease's granted TTL is
        at least that minimum, so this is never below the true larger TTL.
        """
        return max(float(self._lease.ttl), self._registry_ttl)

    def members(self) -> list[str]:
        """The live nodes, as this node sees them (sorted)."""
        return self._group.members() if self._group is not None else []

    def owner_of(self, child_id: Hashable) -> str | None:
        """The live node that owns ``child_id`` by rendezvous hashing, as this node sees it."""
        if self._group is None:
            return None
        return self._group.owner_of(id_json(child_id))

    def which_children(self) -> list[ChildInfo]:
        """The children running (or starting, or stopping) on this node, as ChildInfo records."""
        return [local.info() for local in self._local.values() if local.token is not None]

    def tree(self) -> SupervisorTree:
        """This node's part of the tree, rendered like a dynamic supervisor's."""
        nodes = []
        for local in self._local.values():
            if local.token is None:
                continue
            info = local.info()
            nodes.append(ChildNode(info.id, info.state, info.restarts, info.last_error))
        return SupervisorTree(f"{self._name}@{self._node}", "one_for_one", True, tuple(nodes))

    # -- cluster-wide operations ------------------------------------------------------
    async def start_child(self, spec: ChildSpec) -> ClusterChild:
        """Store ``spec`` and return once its child runs on the node that owns it.

        The child is placed by rendezvous hashing of its id over the live
        nodes; returns once it has started there (its ``register_as`` name
        registered) and its run record is in etcd.

        Returns:
            The child as :meth:`cluster_children` reports it (``"stopped"``
            if it already finished).

        Raises:
            InvalidChildSpec: the spec cannot travel (nothing was written).
            ChildAlreadyExists: a spec with this id is stored (running,
                stopped or failed).
            RestartIntensityExceeded: the child kept crashing on its node
                and was marked failed (before this call saw it run).
            ChildNotFound: it was deleted before it ran.
            EtcdError: etcd refused or could not be reached.
        """
        self._check_open()
        data = encode_spec(spec)
        seg = id_segment(spec.id)
        key = self._keys.spec(seg)
        value = SpecRecord.value(data, ACTIVE, time.time(), self._node)
        result = await self._spec_client.txn(
            [compare_create(key, "==", 0)],
            [op_put(key, value)],
            [op_range(key)],
            retry_ambiguous=True,
        )
        if not result.succeeded:
            found = getattr(result.responses[0], "kvs", [])
            if not found or found[0].value != value.encode():  # not our own resent write
                raise errors.ChildAlreadyExists(spec.id)
        logger.debug("cluster %r: child %r stored", self._name, spec.id)
        return await self._wait_started(seg, spec.id, result.revision)

    async def terminate_child(self, child_id: Hashable) -> None:
        """Stop the child wherever it runs; its spec stays (state ``"stopped"``).

        Returns once no node holds it (its name unregistered).

        Raises:
            ChildNotFound: no spec with this id.
        """
        self._check_open()
        seg = self._seg(child_id)
        await self._set_state(seg, child_id, STOPPED, "terminated", only_from=None)
        await self._wait_released(seg)

    async def restart_child(self, child_id: Hashable) -> ClusterChild:
        """Start a stopped or failed child again (a running one is stopped first).

        Its intensity count starts afresh. Returns as :meth:`start_child` does.

        Raises:
            ChildNotFound: no spec with this id.
        """
        self._check_open()
        seg = self._seg(child_id)
        await self._set_state(seg, child_id, STOPPED, "restarting", only_from=ACTIVE)
        await self._wait_released(seg)
        revision = await self._set_state(seg, child_id, ACTIVE, None, only_from=None)
        return await self._wait_started(seg, child_id, revision)

    async def delete_child(self, child_id: Hashable) -> None:
        """Forget the child everywhere (its spec and handoff state); stop it first.

        Returns once no node holds it.

        Raises:
            ChildNotFound: no spec with this id.
        """
        self._check_open()
        seg = self._seg(child_id)
        key = self._keys.spec(seg)
        result = await self._spec_client.txn(
            [compare_create(key, "!=", 0)],
            [op_delete(key), op_delete(self._keys.handoff(seg)), op_delete(self._keys.move(seg))],
            retry_ambiguous=True,
        )
        if not result.succeeded:
            raise errors.ChildNotFound(child_id)
        await self._wait_released(seg)

    async def cluster_children(self) -> dict[Hashable, ClusterChild]:
        """Every child of the cluster, read from etcd (two linearizable reads).

        A stored spec with no holder shows ``state="starting"``, ``node=None``.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        specs = await self._spec_client.range(self._keys.spec_dir, prefix=True)
        locks = await self._lock_client.range(self._keys.lock_base, prefix=True)
        holders: dict[str, LockEntry] = {}
        for kv in locks.kvs:
            parsed = self._keys.parse(kv.key)
            if parsed is None or parsed[0] != "lock":
                continue
            entry = LockEntry.decode(kv.key, kv.value, kv.lease, kv.create_revision)
            best = holders.get(parsed[1])
            if best is None or entry.token < best.token:
                holders[parsed[1]] = entry
        out: dict[Hashable, ClusterChild] = {}
        for kv in specs.kvs:
            parsed = self._keys.parse(kv.key)
            if parsed is None or parsed[0] != "spec":
                continue
            try:
                record = SpecRecord.decode(parsed[1], kv.value, kv.mod_revision)
            except ValueError:
                continue  # a foreign key: the view logs it
            out[record.id] = _describe(record, holders.get(parsed[1]))
        return out

    # -- helpers of the operations ---------------------------------------------------------
    def _check_open(self) -> None:
        if not self._open or self._leaving:
            raise trio.ClosedResourceError(
                f"distributed supervisor {self._name!r} is not running on this node; open a new one"
            )

    def _seg(self, child_id: Hashable) -> str:
        try:
            check_portable_id(child_id)
        except errors.InvalidChildSpec:
            raise errors.ChildNotFound(child_id) from None
        return id_segment(child_id)

    async def _set_state(
        self, seg: str, child_id: Hashable, state: str, reason: str | None, *, only_from: str | None
    ) -> int:
        """Compare-and-swap the spec's state; returns the revision it was done at.

        ``only_from``: change it only from that state (else leave it).
        """
        key = self._keys.spec(seg)
        while True:
            kv = await self._spec_client.get(key)
            if kv is None:
                raise errors.ChildNotFound(child_id)
            record = SpecRecord.decode(seg, kv.value, kv.mod_revision)
            if record.state == state or (only_from is not None and record.state != only_from):
                return kv.mod_revision
            result = await self._spec_client.txn(
                [compare_mod(key, "==", kv.mod_revision)],
                [op_put(key, record.replaced(state, time.time(), self._node, reason))],
            )
            if result.succeeded:
                return result.revision

    async def _wait_started(self, seg: str, child_id: Hashable, revision: int) -> ClusterChild:
        view = self._view
        while True:
            await view.wait_until(
                lambda: view.spec_revision() >= revision and self._settled(seg), seg
            )
            record = view.specs.get(seg)
            if record is None:
                raise errors.ChildNotFound(child_id)
            if record.state == FAILED:
                raise errors.RestartIntensityExceeded(
                    child_id, record.restarts, record.window, self._name
                )
            # Confirm what the view says with a linearizable read of the lock queue.
            holder = await self._read_holder(seg)
            if record.state == STOPPED or (holder is not None and holder.state == "running"):
                return _describe(record, holder)
            with trio.move_on_after(_TICK):  # the view lags the read: wait for it
                await view.wait_seg(seg)

    def _settled(self, seg: str) -> bool:
        record = self._view.specs.get(seg)
        if record is None or record.state != ACTIVE:
            return True
        holder = self._view.holder(seg)
        return holder is not None and holder.state == "running"

    async def _read_holder(self, seg: str) -> LockEntry | None:
        result = await self._lock_client.range(self._keys.lock_queue(seg), prefix=True)
        if not result.kvs:
            return None
        kv = min(result.kvs, key=lambda kv: kv.create_revision)
        return LockEntry.decode(kv.key, kv.value, kv.lease, kv.create_revision)

    async def _wait_released(self, seg: str) -> None:
        """Return once no key is left in the child's lock queue (confirmed by a read)."""
        while True:
            result = await self._lock_client.range(
                self._keys.lock_queue(seg), prefix=True, keys_only=True
            )
            if not result.kvs:
                return
            with trio.move_on_after(_TICK):
                await self._view.wait_until(lambda: seg not in self._view.locks, seg)

    # -- opening and closing ------------------------------------------------------------
    async def _start(self, nursery: trio.Nursery, children: Sequence[ChildSpec]) -> None:
        encoded = []
        seen: set[str] = set()
        for spec in children:
            data = encode_spec(spec)
            seg = id_segment(spec.id)
            if seg in seen:
                raise errors.ChildAlreadyExists(spec.id)
            seen.add(seg)
            encoded.append((spec, seg, data))
        self._nursery = nursery
        await nursery.start(self._lease.run)
        try:
            self._group = await self._membership.enter_async_context(
                self._coordinator.membership(f"cluster/{self._name}", self._node)
            )
            await nursery.start(self._view.run)
            for spec, seg, data in encoded:
                await self._store_static(spec, seg, data)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._membership.aclose()
            raise
        self._open = True
        nursery.start_soon(self._reconcile_loop, name=f"cluster {self._name}: reconcile")
        nursery.start_soon(self._follow_members, name=f"cluster {self._name}: members")
        if self._rebalance:
            nursery.start_soon(self._rebalance_loop, name=f"cluster {self._name}: rebalance")
        telemetry.emit(
            "foundation.cluster.node.join",
            {"members": len(self.members())},
            {"supervisor": self._name, "node": self._node},
        )

    async def _store_static(self, spec: ChildSpec, seg: str, data: dict[str, Any]) -> None:
        """Store a static child's spec unless one is stored (the first stored wins)."""
        key = self._keys.spec(seg)
        value = SpecRecord.value(data, ACTIVE, time.time(), self._node)
        result = await self._spec_client.txn(
            [compare_create(key, "==", 0)], [op_put(key, value)], [op_range(key)]
        )
        if result.succeeded:
            return
        found = getattr(result.responses[0], "kvs", [])
        if not found:
            return
        try:
            stored = SpecRecord.decode(seg, found[0].value, found[0].mod_revision)
        except ValueError:
            return
        if stored.data != data:
            logger.warning(
                "cluster %r: node %r opened with a static child %r that differs from the one"
                " stored (the first stored wins): stored %s, here %s",
                self._name,
                self._node,
                spec.id,
                stored.data,
                data,
            )

    async def _close(self) -> None:
        """Graceful exit: hand the children over (or, as the last node, stop and forget them)."""
        if self._nursery is None:
            return
        if self._nursery.cancel_scope.cancel_called:
            # A background task failed: the children and the lease are gone already.
            await self._membership.aclose()
            return
        self._leaving = True
        self._kick()
        members = self.members()
        last = self._group is not None and not [m for m in members if m != self._node]
        await self._membership.aclose()  # the others stop counting this node
        handed = [
            local.seg
            for local in self._local.values()
            if local.token is not None and local.phase in ("starting", "running")
        ]
        for local in list(self._local.values()):
            local.stop("leaving")
        for local in list(self._local.values()):
            await local.done.wait()
        if last:
            await self._forget_all()
        elif handed:
            missing = await self._wait_taken_over(handed)
            if missing:
                logger.warning(
                    "cluster %r: node %r left; %d of its children did not run elsewhere"
                    " within %g s",
                    self._name,
                    self._node,
                    len(missing),
                    self.ttl,
                )
        telemetry.emit(
            "foundation.cluster.node.leave",
            {"handed_over": len(handed), "last": float(last)},
            {"supervisor": self._name, "node": self._node},
        )
        self._nursery.cancel_scope.cancel()

    async def _wait_taken_over(self, segs: list[str]) -> list[str]:
        """Wait up to T until each child runs on another node; returns those that do not.

        Polls etcd (a read of every lock every 0.1 s) rather than the view:
        when the caller cancelled a scope around the etcd clients too, their
        watch streams are gone, while single calls still go through.
        """
        missing = list(segs)
        with trio.move_on_after(self.ttl):
            while missing:
                try:
                    result = await self._lock_client.range(self._keys.lock_base, prefix=True)
                except EtcdUnavailable:
                    await trio.sleep(_RETRY_PAUSE)
                    continue
                holders: dict[str, LockEntry] = {}
                for kv in result.kvs:
                    parsed = self._keys.parse(kv.key)
                    if parsed is None or parsed[0] != "lock":
                        continue
                    entry = LockEntry.decode(kv.key, kv.value, kv.lease, kv.create_revision)
                    best = holders.get(parsed[1])
                    if best is None or entry.token < best.token:
                        holders[parsed[1]] = entry
                missing = [
                    seg
                    for seg in missing
                    if not (
                        (holder := holders.get(seg)) is not None
                        and holder.node != self._node
                        and holder.state == "running"
                    )
                    and self._view.specs.get(seg, _NO_SPEC).state == ACTIVE
                ]
                if missing:
                    await trio.sleep(0.1)
        return missing

    async def _forget_all(self) -> None:
        """The last node leaving: remove every spec, handoff state and move request."""
        try:
            await self._spec_client.delete(self._keys.base, prefix=True)
        except EtcdError as exc:
            logger.warning(
                "cluster %r: the last node %r could not remove the stored specs (%s)",
                self._name,
                self._node,
                exc,
            )

    # -- the node lease's fencing ------------------------------------------------------------
    def _on_fence(self, reason: str, expires_at: float) -> None:
        stopping = [local for local in self._local.values() if local.token is not None]
        for local in list(self._local.values()):
            local.stop("fenced")
        if stopping and self._nursery is not None:
            self._nursery.start_soon(self._watch_overrun, stopping, expires_at)
        self._kick()

    async def _watch_overrun(self, stopping: list[_Local], expires_at: float) -> None:
        """Report children still running when etcd may already have freed their locks."""
        await trio.sleep_until(expires_at)
        for local in stopping:
            # The target itself: its supervisor may still be unregistering its
            # name (etcd is out of reach), which overlaps with nothing.
            if local.instances:
                logger.error(
                    "cluster %r: child %r on node %r has not stopped although its lock may be"
                    " taken now: it shields itself from cancellation longer than the fencing"
                    " margin, so it may overlap with its next instance (use its fencing token)",
                    self._name,
                    local.child_id,
                    self._node,
                )
                telemetry.emit(
                    "foundation.cluster.child.overrun",
                    {"token": float(local.token or 0)},
                    self._meta(local),
                )

    # -- reconciling -------------------------------------------------------------------------
    def _kick(self) -> None:
        wake, self._wake = self._wake, trio.Event()
        wake.set()

    async def _follow_members(self) -> None:
        assert self._group is not None
        async for _ in self._group.watch():
            self._kick()

    async def _reconcile_loop(self) -> None:
        while True:
            wake = self._wake
            self._reconcile()
            with trio.move_on_after(_TICK):
                await wake.wait()

    def _reconcile(self) -> None:
        """One pass: stop what this node must let go, start what it owns and nobody holds."""
        view = self._view
        group = self._group
        me = self._node
        members = set(group.members()) if group is not None else set()
        for seg, local in list(self._local.items()):
            record = view.specs.get(seg)
            if local.stop_reason is not None:
                continue
            if record is None:
                local.stop("deleted")
                continue
            if record.state != ACTIVE:
                local.stop("terminated" if record.state == STOPPED else "failed")
                continue
            move = view.moves.get(seg)
            if (
                move is not None
                and move.frm == me
                and move.to != me
                and move.to in members
                and local.phase == "running"
            ):
                local.stop("moved")
                continue
            if local.token is not None and view.lock_revision() >= local.token:
                holder = view.holder(seg)
                if holder is None or holder.token != local.token:
                    logger.warning(
                        "cluster %r: the lock of child %r (token %d) is gone; stopping it",
                        self._name,
                        local.child_id,
                        local.token,
                    )
                    local.stop("lost")
        if self._leaving or not self._lease.ready or me not in members or group is None:
            return
        now = trio.current_time()
        for seg, record in view.specs.items():
            if record.state != ACTIVE or seg in self._local or seg in view.locks:
                continue
            if self._retry_at.get(seg, 0.0) > now:
                continue
            if group.owner_of(record.key) != me:
                continue
            self._begin(seg, record)

    def _begin(self, seg: str, record: SpecRecord) -> None:
        assert self._nursery is not None
        local = self._local[seg] = _Local(seg, record)
        self._nursery.start_soon(self._run_local, local, name=f"cluster child {record.id!r}")

    # -- rebalancing -------------------------------------------------------------------------
    async def _rebalance_loop(self) -> None:
        while True:
            wake = self._wake
            seg = self._next_pull()
            if seg is None:
                with trio.move_on_after(_TICK):
                    await wake.wait()
                continue
            await self._pull(seg)

    def _next_pull(self) -> str | None:
        """A child this node owns that runs on another live node (the first by id), or None."""
        group = self._group
        if group is None or self._leaving or not self._lease.ready:
            return None
        members = set(group.members())
        if self._node not in members:
            return None
        now = trio.current_time()
        for seg in sorted(self._view.specs):
            record = self._view.specs[seg]
            if record.state != ACTIVE or seg in self._local:
                continue
            if self._pull_paused.get(seg, 0.0) > now:
                continue
            holder = self._view.holder(seg)
            if holder is None or holder.node == self._node or holder.node not in members:
                continue
            if holder.state != "running" or group.owner_of(record.key) != self._node:
                continue
            return seg
        return None

    async def _pull(self, seg: str) -> None:
        """Ask the holder of ``seg`` to hand it over; wait until it runs here (or give up)."""
        holder = self._view.holder(seg)
        record = self._view.specs.get(seg)
        if holder is None or holder.node is None or record is None:
            return
        key = self._keys.move(seg)
        lease_id = self._lease.id
        try:
            await self._spec_client.put(
                key,
                _move_value(self._node, holder.node, holder.token),
                lease=lease_id,
            )
        except EtcdUnavailable as exc:
            logger.info("cluster %r: cannot ask for child %r yet (%s)", self._name, record.id, exc)
            self._pull_paused[seg] = trio.current_time() + _RETRY_PAUSE
            return
        logger.info(
            "cluster %r: node %r takes over child %r from %r",
            self._name,
            self._node,
            record.id,
            holder.node,
        )
        telemetry.emit(
            "foundation.cluster.child.move",
            {"token": float(holder.token)},
            {
                "supervisor": self._name,
                "child_id": record.id,
                "node": self._node,
                "from": holder.node,
            },
        )
        try:
            with trio.move_on_after(self.ttl + 2) as waited:
                # Woken by the view and by this node's own children (phase changes).
                while not self._pull_settled(seg, holder):
                    wake = self._wake
                    with trio.move_on_after(_TICK):
                        await wake.wait()
            if waited.cancelled_caught:
                logger.warning(
                    "cluster %r: child %r did not move from %r to %r within %g s",
                    self._name,
                    record.id,
                    holder.node,
                    self._node,
                    self.ttl + 2,
                )
                self._pull_paused[seg] = trio.current_time() + 2 * self.ttl
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await self._spec_client.txn(
                        [compare_create(key, "!=", 0)],
                        [op_delete(key)],
                    )
                except EtcdError as exc:
                    # Bound to this node's lease: it goes when the lease does.
                    logger.info("cluster %r: move request not removed (%s)", self._name, exc)

    def _pull_settled(self, seg: str, was: LockEntry) -> bool:
        """The pull of ``seg`` from ``was`` is over: it runs here, or the situation changed."""
        record = self._view.specs.get(seg)
        if record is None or record.state != ACTIVE or self._leaving:
            return True
        local = self._local.get(seg)
        if local is not None and local.phase == "running":
            return True
        holder = self._view.holder(seg)
        if holder is not None and holder.token != was.token and holder.node != self._node:
            return True  # someone else has it now
        group = self._group
        return group is None or group.owner_of(record.key) != self._node

    # -- one child: acquire, run, release -------------------------------------------------------
    async def _run_local(self, local: _Local) -> None:
        try:
            with local.scope:
                async with self._limiter:
                    if not await self._acquire(local):
                        return
                    await self._prepare(local)
                await self._serve(local)
        except errors.RestartIntensityExceeded as exc:
            local.failure = exc
        except EtcdError as exc:
            # etcd failed under the child's supervisor itself (its name could not be
            # unregistered while etcd was out of reach): the child has stopped; the
            # registry puts the name right when etcd answers again.
            logger.warning(
                "cluster %r: child %r on node %r stopped with an etcd error (%s: %s)",
                self._name,
                local.child_id,
                self._node,
                type(exc).__name__,
                exc,
            )
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await self._finish(local)
                finally:
                    if self._local.get(local.seg) is local:
                        del self._local[local.seg]
                    local.done.set()
                    self._kick()

    async def _acquire(self, local: _Local) -> bool:
        """Try-lock: one txn creates the lock key if the queue is empty and the spec unchanged."""
        lease = self._lease
        if not lease.ready:
            return False
        lease_id = lease.id
        epoch = lease.epoch
        seg = local.seg
        queue = self._keys.lock_queue(seg)
        key = self._keys.lock_key(seg, lease_id)
        value = LockEntry.value(self._node, "starting", time.time())
        try:
            # Shielded: a txn cancelled after it was sent may still create the
            # key, and a lock nobody knows it holds would block the child
            # until this node's lease ends. Bounded by the client's timeout.
            with trio.CancelScope(shield=True):
                result = await self._lock_client.txn(
                    [
                        _compare_empty(queue),
                        compare_mod(self._keys.spec(seg), "==", local.record.mod_revision),
                    ],
                    [op_put(key, value, lease=lease_id)],
                    [op_range(queue, prefix=True)],
                    retry_ambiguous=True,  # a resend finds its own key, below
                )
        except EtcdUnavailable as exc:
            logger.info(
                "cluster %r: cannot take child %r yet (%s)", self._name, local.child_id, exc
            )
            self._retry_at[seg] = trio.current_time() + _RETRY_PAUSE
            return False
        if result.succeeded:
            token = result.revision
        else:
            kvs = getattr(result.responses[0], "kvs", [])
            mine = [kv for kv in kvs if kv.key == key]
            if not mine or min(kvs, key=lambda kv: kv.create_revision) is not mine[0]:
                return False  # held by someone, or the spec changed: the view will tell
            token = mine[0].create_revision  # our own resent txn had succeeded
        local.token = token
        local.lock_key = key
        local.epoch = epoch
        local.lease_id = lease_id
        local.phase = "starting"
        self._retry_at.pop(seg, None)
        if epoch != lease.epoch or not lease.ready:
            local.stop("fenced")
        return True

    async def _prepare(self, local: _Local) -> None:
        """Before the first start here: wait (bounded) for the child's name to be free.

        A node that died keeps its registrations until its registry lease
        ends, which can be a little after its child locks are free.
        """
        register_as = local.record.spec.register_as
        if register_as is None:
            return
        ns, name = register_as
        with trio.move_on_after(self.ttl + 1):
            while True:
                try:
                    reg = self._registry.lookup_with_metadata(ns, name)
                except errors.NotRegistered:
                    return
                if reg.owner != local.child_id:
                    return  # someone else's name: registering it fails as a start failure
                await trio.sleep(0.05)

    async def _serve(self, local: _Local) -> None:
        """Run the child under a one-child supervisor until it must stop, or finishes."""
        record = local.record
        spec = record.spec
        token = local.token
        assert token is not None
        child = ChildSpec(
            id=record.id,
            target=self._instance(local),
            restart=spec.restart,
            shutdown=spec.shutdown,
            register_as=spec.register_as,
        )
        async with open_supervisor(
            [child],
            max_restarts=self._max_restarts,
            max_seconds=self._max_seconds,
            registry=self._registry if spec.register_as is not None else None,
            name=f"{self._name}/{record.id}",
        ) as sup:
            local.sup = sup
            await self._mark_running(local)
            if local.stop_reason is None:
                local.phase = "running"
            logger.info(
                "cluster %r: child %r runs on node %r (token %d)",
                self._name,
                record.id,
                self._node,
                token,
            )
            telemetry.emit(
                "foundation.cluster.child.start", {"token": float(token)}, self._meta(local)
            )
            self._kick()
            await local.finished.wait()

    def _instance(self, local: _Local) -> Callable[..., Any]:
        """The target of the local child: sets the token and the handoff, runs the real target."""
        record = local.record
        spec = record.spec
        token = local.token
        assert token is not None
        assert local.lock_key is not None
        lock_key = local.lock_key
        restart = spec.restart

        async def instance(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
            set_fencing_token(token)
            target = resolve_target(spec.target)
            wants = _keywords(target)
            kwargs: dict[str, Any] = {}
            if "handoff" in wants:
                kwargs["handoff"] = Handoff(
                    self._spec_client,
                    record.id,
                    self._keys.handoff(local.seg),
                    lock_key,
                    self._keys.lock_name(local.seg),
                    token,
                    self._node,
                )
            if "handoff_state" in wants:
                kv = await self._spec_client.get(self._keys.handoff(local.seg))
                kwargs["handoff_state"] = handoff_state(kv.value) if kv is not None else None
            local.instances += 1
            try:
                if takes_task_status(target):
                    await target(*spec.args, task_status=task_status, **kwargs)
                else:
                    task_status.started()
                    await target(*spec.args, **kwargs)
            except Exception:
                if restart is Restart.TEMPORARY:
                    local.finished_how = "crashed"
                    local.finished.set()
                raise
            finally:
                local.instances -= 1
            if restart is not Restart.PERMANENT:
                local.finished_how = "exited"
                local.finished.set()

        return instance

    async def _mark_running(self, local: _Local) -> None:
        """Write ``state: running`` into the child's lock value (guarded by the lock)."""
        assert local.lock_key is not None
        assert local.token is not None
        value = LockEntry.value(self._node, "running", time.time())
        while local.stop_reason is None:
            try:
                result = await self._lock_client.txn(
                    [compare_create(local.lock_key, "==", local.token)],
                    [op_put(local.lock_key, value, lease=local.lease_id)],
                    retry_ambiguous=True,
                )
            except EtcdUnavailable as exc:
                logger.info(
                    "cluster %r: cannot mark %r running yet (%s)", self._name, local.child_id, exc
                )
                await trio.sleep(_RETRY_PAUSE)
                continue
            if not result.succeeded:
                local.stop("lost")
            return

    async def _finish(self, local: _Local) -> None:
        """After the child stopped: record why in its spec, and release its lock."""
        if local.token is None or local.lock_key is None:
            return
        reason = local.stop_reason
        how = local.finished_how
        if local.failure is not None:
            reason = "failed"
            self._report_failure(local, local.failure)
        elif how is not None and reason is None:
            reason = how
        telemetry.emit(
            "foundation.cluster.child.stop",
            {"token": float(local.token)},
            self._meta(local, reason=reason),
        )
        if reason in ("fenced", "lost"):
            return  # the lease (or the key) is gone: nothing to release
        update: Callable[[SpecRecord], list[Op] | None] | None = None
        if local.failure is not None:
            failure = local.failure

            def update(record: SpecRecord) -> list[Op] | None:
                if record.state != ACTIVE:
                    return None
                value = record.replaced(
                    FAILED,
                    time.time(),
                    self._node,
                    f"{type(failure.__cause__).__name__}: {failure.__cause__}"
                    if failure.__cause__ is not None
                    else str(failure),
                    failure.restarts,
                    failure.window,
                )
                return [op_put(self._keys.spec(record.seg), value)]

        elif how is not None and reason == how:
            temporary = local.record.spec.restart is Restart.TEMPORARY

            def update(record: SpecRecord) -> list[Op] | None:
                if record.state != ACTIVE:
                    return None
                if temporary:
                    return [
                        op_delete(self._keys.spec(record.seg)),
                        op_delete(self._keys.handoff(record.seg)),
                    ]
                value = record.replaced(STOPPED, time.time(), self._node, f"child {how}")
                return [op_put(self._keys.spec(record.seg), value)]

        await self._release(local, update)

    async def _release(
        self, local: _Local, update: Callable[[SpecRecord], list[Op] | None] | None
    ) -> None:
        """Delete the lock key (and apply ``update`` to the spec in the same txn), retrying."""
        assert local.lock_key is not None
        assert local.token is not None
        spec_key = self._keys.spec(local.seg)
        give_up = trio.current_time() + 2 * self.ttl
        while self._lease.epoch == local.epoch and self._lease.ready:
            if trio.current_time() > give_up:
                # Its lease keeps the key; revoked when this node leaves, else it expires.
                logger.error(
                    "cluster %r: could not release child %r for %g s",
                    self._name,
                    local.child_id,
                    2 * self.ttl,
                )
                return
            try:
                compares: list[Compare] = [compare_create(local.lock_key, "==", local.token)]
                ops: list[Op] = [op_delete(local.lock_key)]
                if update is not None:
                    kv = await self._spec_client.get(spec_key)
                    if kv is not None:
                        extra = update(SpecRecord.decode(local.seg, kv.value, kv.mod_revision))
                        if extra:
                            compares.append(compare_mod(spec_key, "==", kv.mod_revision))
                            ops.extend(extra)
                result = await self._lock_client.txn(compares, ops)
                if not result.succeeded and len(compares) > 1:
                    continue  # the spec changed meanwhile: look again
                return
            except EtcdUnavailable as exc:
                logger.info(
                    "cluster %r: cannot release child %r yet (%s)", self._name, local.child_id, exc
                )
                await trio.sleep(_RETRY_PAUSE)

    def _report_failure(self, local: _Local, failure: errors.RestartIntensityExceeded) -> None:
        logger.error(
            "cluster %r: child %r exceeded its restart intensity on node %r (%s); it is"
            " stopped cluster-wide and marked failed",
            self._name,
            local.child_id,
            self._node,
            failure,
        )
        telemetry.emit(
            "foundation.cluster.child.failed",
            {"restarts": float(failure.restarts), "window": failure.window},
            self._meta(local, error=failure.__cause__ or failure),
        )

    def _meta(self, local: _Local, **extra: Any) -> dict[str, Any]:
        return {"supervisor": self._name, "node": self._node, "child_id": local.child_id, **extra}


class _NoSpec:
    state = "absent"


_NO_SPEC: Any = _NoSpec()


def _move_value(to: str, frm: str, token: int) -> str:
    return MoveRecord.value(to, frm, token, time.time())


def _describe(record: SpecRecord, holder: LockEntry | None) -> ClusterChild:
    """What :meth:`DistributedSupervisor.cluster_children` reports for one spec."""
    if record.state == FAILED:
        return ClusterChild(record.id, record.by, "failed", record.since, None, record.reason)
    if record.state == STOPPED:
        node = holder.node if holder is not None else None
        token = holder.token if holder is not None else None
        return ClusterChild(record.id, node, "stopped", record.since, token, record.reason)
    if holder is None:
        return ClusterChild(record.id, None, "starting", record.since, None)
    if holder.state == "running":
        return ClusterChild(record.id, holder.node, "running", holder.since, holder.token)
    return ClusterChild(record.id, holder.node, "starting", holder.since, holder.token)


def _registry_prefix(registry: Registry) -> str:
    prefix = getattr(registry.backend, "prefix", None)
    if not isinstance(prefix, str):
        raise ConfigError(
            "the distributed supervisor needs an etcd registry (one with a key prefix)"
        )
    return prefix


def _registry_client(registry: Registry) -> EtcdClient:
    """The etcd client an etcd registry writes through."""
    client = getattr(registry, "etcd_client", None)
    if client is None:
        client = getattr(registry.backend, "client", None)
    if client is None:
        raise ConfigError(
            f"the distributed supervisor needs an etcd registry, got a {registry.backend_name!r}"
            " one; open it with open_registry(backend='etcd', ...)"
        )
    return client  # type: ignore[no-any-return]


def _default_node() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _check_args(
    name: object,
    node: object,
    registry: object,
    coordinator: object,
    max_restarts: object,
    max_seconds: object,
) -> None:
    if not isinstance(name, str) or not name or "/" in name:
        raise ConfigError(f"name={name!r}: use a non-empty str without '/'")
    if not isinstance(node, str) or not node or "/" in node:
        raise ConfigError(f"node={node!r}: use a non-empty str without '/'")
    if not isinstance(coordinator, EtcdCoordinator):
        raise ConfigError(
            f"coordinator={coordinator!r}: the distributed supervisor needs an EtcdCoordinator"
            " (open_etcd_coordinator)"
        )
    if getattr(registry, "backend_name", None) != "etcd":
        raise ConfigError(
            f"registry={registry!r}: the distributed supervisor needs an etcd registry"
            " (open_registry(backend='etcd', ...))"
        )
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        raise ConfigError(f"max_restarts={max_restarts!r}: use an int >= 0")
    if (
        isinstance(max_seconds, bool)
        or not isinstance(max_seconds, int | float)
        or not math.isfinite(max_seconds)
        or max_seconds <= 0
    ):
        raise ConfigError(f"max_seconds={max_seconds!r}: use a number of seconds > 0")


@asynccontextmanager
async def open_distributed_supervisor(
    name: str,
    *,
    registry: Registry,
    coordinator: EtcdCoordinator,
    node: str | None = None,
    children: Iterable[ChildSpec] = (),
    rebalance: bool = True,
    max_restarts: int = 3,
    max_seconds: float = 5,
) -> AsyncIterator[DistributedSupervisor]:
    """Join the cluster-wide supervisor ``name`` as this node; an async context manager.

    Every node opens the same ``name`` with the same registry and
    coordinator prefixes. Children are placed on the live node that owns
    their id by rendezvous hashing, run there at most once at any moment,
    and move when nodes die, leave or (with ``rebalance``) join; see
    docs/cluster.rst for the guarantees and their limits.

    Entering grants this node's lease, joins the membership
    ``cluster/NAME``, reads the stored specs and stores ``children`` (the
    first stored spec of an id wins; a different one here is logged), then
    returns; this node starts the children it owns in the background.
    Leaving hands this node's children over (stopped here, then started on
    their new owners) and returns once each runs there, or after
    :attr:`~DistributedSupervisor.ttl` seconds; the last node leaving stops
    them and removes every stored spec and handoff state. An error of the
    block is raised as itself.

    Args:
        name: The cluster-wide name (no ``/``).
        registry: An etcd registry: ``register_as`` names, and where specs live.
        coordinator: An :class:`~foundation.coordination.EtcdCoordinator`:
            membership, and the client of the node lease and child locks.
        node: This node's id (no ``/``); default ``"<hostname>:<pid>"``.
        children: Static children: each runs once in the cluster.
        rebalance: Take over, one at a time, the children this node owns
            that run on other nodes (after this node joins).
        max_restarts, max_seconds: Restart intensity, per child per node;
            over it the child is marked failed and stopped cluster-wide.

    Raises:
        ConfigError: a bad argument, a registry not on etcd, a coordinator
            not an EtcdCoordinator.
        InvalidChildSpec: a static child cannot travel (nothing was written).
        ChildAlreadyExists: two static children share an id.
        EtcdError: etcd could not be reached, or refused.
    """
    node = _default_node() if node is None else node
    _check_args(name, node, registry, coordinator, max_restarts, max_seconds)
    specs = list(children)
    sup = DistributedSupervisor(
        name,
        node,
        registry,
        coordinator,
        rebalance=bool(rebalance),
        max_restarts=max_restarts,
        max_seconds=max_seconds,
    )
    try:
        async with trio.open_nursery() as nursery:
            inner: trio.Nursery = await nursery.start(_shielded_nursery)
            try:
                await sup._start(inner, specs)
            except BaseException:
                inner.cancel_scope.cancel()
                raise
            try:
                yield sup
            finally:
                with trio.CancelScope(shield=True):
                    await sup._close()
    except BaseExceptionGroup as group:
        reraise_collapsed(group)


async def _shielded_nursery(*, task_status: trio.TaskStatus[trio.Nursery]) -> None:
    """A nursery an outer cancellation does not reach: only the supervisor ends it.

    The node lease, the view and the children must outlive a cancelled
    block until the supervisor has left the membership and handed its
    children over, in that order (cancelling them all at once would revoke
    the node lease, freeing the children's locks, while the children still
    run). As :func:`~foundation.supervision.open_supervisor` shields its
    children once started. A background task's error still ends it.
    """
    with trio.CancelScope(shield=True):
        async with trio.open_nursery() as inner:
            task_status.started(inner)
            await trio.sleep_forever()
