"""The etcd v3 client: KV, transactions, leases, watches, elections and locks.

Each method builds etcd's request message, hands it to the
:class:`~foundation.etcd._transport.Transport` (failover, per-attempt
deadlines, auth, error mapping) and turns the answer into the typed results
of :mod:`._ops`. Background work lives in nurseries: the LeaseKeepAlive
stream every lease of this client shares runs in the client's own (the
``async with open_etcd_client(...)`` block), a lease's renewal loop in the
``async with client.lease(...)`` block, a watch's reader in the client's
nursery too, for as long as its ``async with client.watch(...)`` block
runs. Blocking RPCs (``campaign``, ``lock``) wait without a deadline;
cancel them with Trio, and mind that etcd's Campaign does not stop when its
lease expires (race it against the lease, as :mod:`foundation.coordination`
does).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from .. import errors
from .._util import reraise_collapsed
from ._codec import KeyValue, header_of, kv_of, load_protos, pb, prefix_end, to_bytes
from ._lease import KeepAliveStream, Lease, open_lease
from ._ops import (
    Compare,
    DeleteResult,
    Op,
    PutResult,
    RangeResult,
    TxnResult,
    delete_request,
    parse_delete,
    parse_put,
    parse_range,
    parse_txn,
    put_request,
    range_request,
    txn_request,
)
from ._settings import EtcdSettings
from ._transport import DEFAULT, Transport, _Default
from ._watch import Observe, Watch
from ._wire import Wire

__all__ = ["EtcdClient", "LeaderKey", "LeaseInfo", "open_etcd_client"]


@dataclass(frozen=True, slots=True)
class LeaderKey:
    """Proof of leadership returned by :meth:`EtcdClient.campaign` (etcd's LeaderKey)."""

    name: bytes
    key: bytes
    rev: int
    lease: int

    def _pb(self) -> Any:
        return pb.election.LeaderKey(name=self.name, key=self.key, rev=self.rev, lease=self.lease)


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """What :meth:`EtcdClient.lease_time_to_live` reports (ttl -1: not found)."""

    id: int
    ttl: int
    granted_ttl: int
    keys: list[bytes]


class EtcdClient:
    """A Trio-native etcd v3 client over gRPC; open it with :func:`open_etcd_client`."""

    def __init__(self, transport: Transport, nursery: trio.Nursery) -> None:
        self._transport = transport
        self._nursery = nursery
        self._keepalives = KeepAliveStream(transport, nursery)

    def __repr__(self) -> str:
        return f"<EtcdClient endpoint={self.current_endpoint!r}>"

    @property
    def settings(self) -> EtcdSettings:
        """The settings this client was opened with."""
        return self._transport.settings

    @property
    def endpoints(self) -> list[str]:
        return list(self._transport.endpoints)

    @property
    def current_endpoint(self) -> str:
        """The endpoint calls go to now (it moves on failover)."""
        return self._transport.current_endpoint

    @property
    def timeout(self) -> float:
        """Seconds a unary call may take, failover included."""
        return self._transport.timeout

    async def call(
        self,
        method: str,
        request: Any,
        *,
        timeout: float | _Default | None = DEFAULT,  # noqa: ASYNC109 -- per-call etcd deadline
        idempotent: bool = False,
    ) -> Any:
        """A raw unary call (``method`` like ``"KV.Range"``, ``request`` etcd's protobuf message).

        For RPCs not wrapped here; returns the response message.
        """
        return await self._transport.unary(method, request, timeout=timeout, idempotent=idempotent)

    # -- KV ----------------------------------------------------------------------
    async def get(self, key: str | bytes) -> KeyValue | None:
        """The key's current value, or None."""
        result = await self.range(key)
        return result.kvs[0] if result.kvs else None

    async def range(
        self,
        key: str | bytes,
        *,
        prefix: bool = False,
        range_end: str | bytes | None = None,
        revision: int = 0,
        limit: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
        serializable: bool = False,
    ) -> RangeResult:
        """Read ``key``, or every key under it with ``prefix=True`` (at ``revision``, if set).

        ``serializable=True`` reads from whichever member answers, without
        asking the leader (possibly stale; works on a member without one).
        """
        request = range_request(
            key,
            prefix=prefix,
            range_end=range_end,
            limit=limit,
            keys_only=keys_only,
            count_only=count_only,
            revision=revision,
            serializable=serializable,
        )
        response = await self._transport.unary(
            "KV.Range", request, idempotent=True, require_leader=not serializable
        )
        return parse_range(response)

    async def put(
        self,
        key: str | bytes,
        value: str | bytes,
        *,
        lease: int = 0,
        prev_kv: bool = False,
        ignore_lease: bool = False,
    ) -> PutResult:
        """Set ``key`` to ``value`` (bound to ``lease`` when non-zero)."""
        request = put_request(key, value, lease=lease, prev_kv=prev_kv, ignore_lease=ignore_lease)
        # A put sets an absolute value: sending it twice is harmless.
        return parse_put(await self._transport.unary("KV.Put", request, idempotent=True))

    async def delete(
        self, key: str | bytes, *, prefix: bool = False, prev_kv: bool = False
    ) -> DeleteResult:
        """Delete ``key`` (or every key under it); ``deleted`` says how many went."""
        request = delete_request(key, prefix=prefix, prev_kv=prev_kv)
        return parse_delete(await self._transport.unary("KV.DeleteRange", request, idempotent=True))

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op] = (),
        *,
        retry_ambiguous: bool = False,
    ) -> TxnResult:
        """Atomically: if every comparison holds run ``success``, else ``failure``.

        ``retry_ambiguous=True`` allows resending when the outcome of an
        attempt is unknown (a member stalled or the connection broke after
        the request went out); only for txns that are safe to apply twice,
        such as CAS-guarded ones.
        """
        request = txn_request(compare, success, failure)
        response = await self._transport.unary("KV.Txn", request, idempotent=retry_ambiguous)
        return parse_txn(response)

    async def compact(self, revision: int, *, physical: bool = False) -> None:
        """Drop history before ``revision`` (watches from before it get CompactedRevision)."""
        request = pb.rpc.CompactionRequest(revision=revision, physical=physical)
        await self._transport.unary("KV.Compact", request, idempotent=True)

    def watch(
        self,
        key: str | bytes,
        *,
        prefix: bool = False,
        start_revision: int = 0,
        prev_kv: bool = False,
        progress_notify: bool = False,
    ) -> AbstractAsyncContextManager[Watch]:
        """``async with client.watch(key, prefix=True, start_revision=r) as events``.

        Iterate ``events`` for :class:`WatchResponse` s; see :class:`Watch`
        for reconnection and its errors. The stream's reader runs in the
        client's nursery until the block ends.
        """
        raw = to_bytes(key)
        end = prefix_end(raw) if prefix else None
        return self._stream_context(
            lambda nursery: Watch(
                self._transport,
                nursery,
                raw,
                end,
                start_revision=start_revision,
                prev_kv=prev_kv,
                progress_notify=progress_notify,
            )
        )

    @asynccontextmanager
    async def _stream_context(self, make: Any) -> AsyncIterator[Any]:
        # The stream's reader task runs in the client's nursery, not in one
        # of this block: the block opens no cancel scope, so callers may
        # hold it open across calls (an AsyncExitStack entered in one call
        # and closed in another, as the coordinator's key guards do).
        load_protos()
        stream = make(self._nursery)
        try:
            yield stream
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    # -- leases -----------------------------------------------------------------
    async def lease_grant(self, ttl: int, lease_id: int = 0) -> Lease:
        """Grant a lease of ``ttl`` seconds (not kept alive: see :meth:`lease`)."""
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
            raise errors.ConfigError(f"ttl={ttl!r}: a lease TTL is an int of seconds >= 1")
        sent = trio.current_time()
        response = await self._transport.unary(
            "Lease.LeaseGrant", pb.rpc.LeaseGrantRequest(TTL=ttl, ID=lease_id), idempotent=True
        )
        if response.error:
            raise errors.EtcdError(response.error, None, self.current_endpoint)
        return Lease(self, response.ID, response.TTL, sent_at=sent)

    def lease(self, ttl: int, *, keepalive: bool = True) -> AbstractAsyncContextManager[Lease]:
        """``async with client.lease(ttl) as lease``: granted, kept alive, revoked at exit."""
        return open_lease(self, ttl, keepalive=keepalive)

    async def lease_renew(
        self,
        lease_id: int,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 -- bounds the retries
    ) -> tuple[int, float]:
        """Renew ``lease_id`` once over the shared keepalive stream.

        Returns ``(TTL left, trio time the renewal was sent)``: etcd restarts
        the TTL no earlier than that send time.

        Raises:
            LeaseExpired: etcd no longer knows the lease (TTL 0).
            EtcdUnavailable: no member renewed it within ``timeout`` (default:
                the client's).
        """
        ttl, sent = await self._keepalives.renew(
            lease_id, self.timeout if timeout is None else timeout
        )
        if ttl <= 0:
            raise errors.LeaseExpired(
                "etcd no longer knows it (TTL 0)", None, self.current_endpoint, lease_id
            )
        return ttl, sent

    async def lease_keepalive_once(self, lease_id: int) -> int:
        """Renew ``lease_id`` once; the TTL left. Raises LeaseExpired if it is gone."""
        ttl, _ = await self.lease_renew(lease_id)
        return ttl

    async def lease_revoke(self, lease_id: int) -> None:
        """Revoke ``lease_id``: etcd deletes every key bound to it."""
        await self._transport.unary(
            "Lease.LeaseRevoke", pb.rpc.LeaseRevokeRequest(ID=lease_id), idempotent=True
        )

    async def lease_time_to_live(self, lease_id: int, *, keys: bool = False) -> LeaseInfo:
        """The lease's remaining TTL (-1 when it no longer exists) and, optionally, its keys."""
        response = await self._transport.unary(
            "Lease.LeaseTimeToLive",
            pb.rpc.LeaseTimeToLiveRequest(ID=lease_id, keys=keys),
            idempotent=True,
        )
        return LeaseInfo(lease_id, response.TTL, response.grantedTTL, list(response.keys))

    async def leases(self) -> list[int]:
        """IDs of every live lease."""
        response = await self._transport.unary(
            "Lease.LeaseLeases", pb.rpc.LeaseLeasesRequest(), idempotent=True
        )
        return [item.ID for item in response.leases]

    # -- election ------------------------------------------------------------------
    async def campaign(self, name: str | bytes, lease: int, value: str | bytes) -> LeaderKey:
        """Block until elected leader of ``name``; the candidate key is bound to ``lease``."""
        request = pb.election.CampaignRequest(
            name=to_bytes(name), lease=lease, value=to_bytes(value)
        )
        # Campaigning again with the same lease is idempotent on the server.
        response = await self._transport.unary(
            "Election.Campaign", request, timeout=None, idempotent=True
        )
        leader = response.leader
        return LeaderKey(leader.name, leader.key, leader.rev, leader.lease)

    async def proclaim(self, leader: LeaderKey, value: str | bytes) -> None:
        """Change the leader's value (fails with EtcdError when no longer leader)."""
        request = pb.election.ProclaimRequest(leader=leader._pb(), value=to_bytes(value))
        await self._transport.unary("Election.Proclaim", request, idempotent=True)

    async def leader(self, name: str | bytes) -> KeyValue | None:
        """The leader's key-value of election ``name``, or None when nobody leads."""
        try:
            response = await self._transport.unary(
                "Election.Leader", pb.election.LeaderRequest(name=to_bytes(name)), idempotent=True
            )
        except errors.EtcdError as exc:
            if "no leader" in exc.message and "election" in exc.message:
                return None
            raise
        return kv_of(response.kv) if response.HasField("kv") else None

    async def resign(self, leader: LeaderKey) -> None:
        """Give up leadership (deletes the leader's key)."""
        request = pb.election.ResignRequest(leader=leader._pb())
        await self._transport.unary("Election.Resign", request, idempotent=True)

    def observe(self, name: str | bytes) -> AbstractAsyncContextManager[Observe]:
        """``async with client.observe(name) as leaders``: the leader's kv, then each change."""
        raw = to_bytes(name)
        return self._stream_context(lambda nursery: Observe(self._transport, nursery, raw))

    # -- lock -------------------------------------------------------------------------
    async def lock(self, name: str | bytes, lease: int) -> bytes:
        """Block until the lock ``name`` is held with ``lease``; returns the lock's key.

        The key's create revision is a fencing token. The lock is held until
        :meth:`unlock` or until the lease ends.
        """
        request = pb.lock.LockRequest(name=to_bytes(name), lease=lease)
        # Locking twice with the same lease is a no-op on the server.
        response = await self._transport.unary("Lock.Lock", request, timeout=None, idempotent=True)
        return bytes(response.key)

    async def unlock(self, key: bytes) -> None:
        """Release the lock whose key :meth:`lock` returned."""
        request = pb.lock.UnlockRequest(key=to_bytes(key))
        await self._transport.unary("Lock.Unlock", request, idempotent=True)

    # -- cluster -----------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        """The current member's status: version, leader, raft index and term, db size..."""
        response = await self._transport.unary(
            "Maintenance.Status", pb.rpc.StatusRequest(), idempotent=True, require_leader=False
        )
        header = header_of(response.header)
        return {
            "header": {
                "cluster_id": header.cluster_id,
                "member_id": header.member_id,
                "revision": header.revision,
                "raft_term": header.raft_term,
            },
            "version": response.version,
            "dbSize": response.dbSize,
            "dbSizeInUse": response.dbSizeInUse,
            "leader": response.leader,
            "raftIndex": response.raftIndex,
            "raftTerm": response.raftTerm,
            "raftAppliedIndex": response.raftAppliedIndex,
            "errors": list(response.errors),
            "isLearner": response.isLearner,
        }

    async def current_revision(self) -> int:
        """The cluster's current revision (a linearizable read)."""
        result = await self.range(b"\0", count_only=True)
        return result.header.revision

    async def aclose(self) -> None:
        self._keepalives.close()
        self._transport.close()
        await trio.lowlevel.checkpoint()


@asynccontextmanager
async def open_etcd_client(
    endpoints: str | Sequence[str] | None = None,
    *,
    settings: EtcdSettings | None = None,
    username: str | None = None,
    password: str | None = None,
    ca_cert: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
    timeout: float | None = None,  # noqa: ASYNC109 -- the client's per-call default
    _wire: Wire | None = None,
) -> AsyncIterator[EtcdClient]:
    """Connect to etcd for the duration of an ``async with`` block.

    Give ``settings=`` (an :class:`EtcdSettings`), or the same fields as
    keywords (``endpoints`` first; the keywords override fields of
    ``settings`` when both are given). With ``username``/``password`` a token
    is fetched at once, so wrong credentials fail here
    (:class:`~foundation.errors.EtcdAuthError`). Channels are made on first
    use, one per endpoint. The client's own background task (the lease
    keepalive stream) runs in a nursery of this block.

    Raises:
        ConfigError: bad endpoints, TLS files or timeout; or grpcio/protobuf
            missing (``pip install 'trio-foundation[etcd]'``).
        EtcdAuthError: the credentials were refused.
        EtcdUnavailable: (with credentials) no member answered.
    """
    changes: dict[str, Any] = {
        name: value
        for name, value in (
            ("username", username),
            ("password", password),
            ("ca_cert", ca_cert),
            ("client_cert", client_cert),
            ("client_key", client_key),
            ("timeout", timeout),
        )
        if value is not None
    }
    if settings is None:
        if endpoints is None:
            from ..config import etcd_endpoints_from_env

            endpoints = etcd_endpoints_from_env()
            if endpoints is None:
                raise errors.ConfigError(
                    "no etcd endpoints: pass endpoints=[...] or settings=, or set"
                    " FOUNDATION_ETCD_ENDPOINTS"
                )
        settings = EtcdSettings(endpoints, **changes)
    elif endpoints is not None or changes:
        if endpoints is not None:
            changes["endpoints"] = endpoints
        settings = settings.replace(**changes)
    if _wire is None:
        load_protos()
        from ._grpc import GrpcWire

        _wire = GrpcWire(settings)
    transport = Transport(settings, _wire)
    try:
        async with trio.open_nursery() as nursery:
            client = EtcdClient(transport, nursery)
            try:
                await transport.authenticate()
                yield client
            finally:
                with trio.CancelScope(shield=True):
                    await client.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The client's tasks never raise: an error here is the block's own.
        reraise_collapsed(group)
    finally:
        transport.close()
