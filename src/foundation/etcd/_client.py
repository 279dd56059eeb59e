"""The etcd v3 client: KV, transactions, leases, watches, elections and locks.

All calls go through :class:`~foundation.etcd._transport.Transport` (one
``httpx.AsyncClient`` on Trio, failover across endpoints, auth tokens). The
client keeps no background task of its own: a lease's keepalive runs in the
nursery of the lease's ``async with`` block, a watch reads its stream in the
caller's task. Blocking RPCs (``campaign``, ``lock``) wait without a
deadline; cancel them with Trio, and mind that etcd's Campaign does not stop
when its lease expires (race it against the lease, as
:mod:`foundation.coordination` does).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from .. import errors
from ._codec import (
    KeyValue,
    b64,
    from_b64,
    int_field,
    parse_header,
    parse_kv,
    prefix_end,
    to_bytes,
)
from ._lease import Lease, open_lease
from ._ops import (
    Compare,
    DeleteResult,
    Op,
    PutResult,
    RangeResult,
    TxnResult,
    op_delete,
    op_put,
    op_range,
    parse_delete,
    parse_put,
    parse_range,
    parse_txn,
    txn_body,
)
from ._transport import Transport
from ._watch import Observe, Watch

__all__ = ["EtcdClient", "LeaderKey", "LeaseInfo", "open_etcd_client"]


@dataclass(frozen=True, slots=True)
class LeaderKey:
    """Proof of leadership returned by :meth:`EtcdClient.campaign` (etcd's LeaderKey)."""

    name: bytes
    key: bytes
    rev: int
    lease: int

    def _json(self) -> dict[str, str]:
        return {
            "name": b64(self.name),
            "key": b64(self.key),
            "rev": str(self.rev),
            "lease": str(self.lease),
        }


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """What :meth:`EtcdClient.lease_time_to_live` reports (ttl -1: not found)."""

    id: int
    ttl: int
    granted_ttl: int
    keys: list[bytes]


class EtcdClient:
    """A Trio-native etcd v3 client over the JSON gateway; open it with :func:`open_etcd_client`."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def __repr__(self) -> str:
        return f"<EtcdClient endpoint={self.current_endpoint!r}>"

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
        path: str,
        body: dict[str, Any],
        *,
        timeout: float | None = -1.0,  # noqa: ASYNC109 -- per-call etcd deadline
        retry_ambiguous: bool = False,
    ) -> dict[str, Any]:
        """A raw gateway call (``path`` like ``/v3/kv/range``), for RPCs not wrapped here."""
        return await self._transport.call(
            path, body, timeout=timeout, retry_ambiguous=retry_ambiguous
        )

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
        """Read ``key``, or every key under it with ``prefix=True`` (at ``revision``, if set)."""
        # The same request a txn's range operation carries, plus the read options.
        body: dict[str, Any] = op_range(
            key,
            prefix=prefix,
            range_end=range_end,
            limit=limit,
            keys_only=keys_only,
            count_only=count_only,
        )["request_range"]
        if revision:
            body["revision"] = str(revision)
        if serializable:
            body["serializable"] = True
        return parse_range(await self._transport.call("/v3/kv/range", body, retry_ambiguous=True))

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
        body = op_put(key, value, lease=lease, prev_kv=prev_kv, ignore_lease=ignore_lease)[
            "request_put"
        ]
        # A put sets an absolute value: sending it twice is harmless.
        return parse_put(await self._transport.call("/v3/kv/put", body, retry_ambiguous=True))

    async def delete(
        self, key: str | bytes, *, prefix: bool = False, prev_kv: bool = False
    ) -> DeleteResult:
        """Delete ``key`` (or every key under it); ``deleted`` says how many went."""
        body = op_delete(key, prefix=prefix, prev_kv=prev_kv)["request_delete_range"]
        return parse_delete(
            await self._transport.call("/v3/kv/deleterange", body, retry_ambiguous=True)
        )

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op] = (),
        *,
        retry_ambiguous: bool = False,
    ) -> TxnResult:
        """Atomically: if every comparison holds run ``success``, else ``failure``.

        ``retry_ambiguous=True`` allows resending after a connection broke
        mid-call; only for txns that are safe to apply twice.
        """
        body = txn_body(compare, success, failure)
        return parse_txn(
            await self._transport.call("/v3/kv/txn", body, retry_ambiguous=retry_ambiguous)
        )

    async def compact(self, revision: int, *, physical: bool = False) -> None:
        """Drop history before ``revision`` (watches from before it get CompactedRevision)."""
        body: dict[str, Any] = {"revision": str(revision)}
        if physical:
            body["physical"] = True
        await self._transport.call("/v3/kv/compaction", body, retry_ambiguous=True)

    def watch(
        self,
        key: str | bytes,
        *,
        prefix: bool = False,
        start_revision: int = 0,
        prev_kv: bool = False,
        progress_notify: bool = False,
    ) -> _WatchContext:
        """``async with client.watch(key, prefix=True, start_revision=r) as events``.

        Iterate ``events`` for :class:`WatchResponse` s; see :class:`Watch`
        for reconnection and its errors.
        """
        raw = to_bytes(key)
        return _WatchContext(
            Watch(
                self._transport,
                raw,
                prefix_end(raw) if prefix else None,
                start_revision=start_revision,
                prev_kv=prev_kv,
                progress_notify=progress_notify,
            )
        )

    # -- leases -----------------------------------------------------------------
    async def lease_grant(self, ttl: int, lease_id: int = 0) -> Lease:
        """Grant a lease of ``ttl`` seconds (not kept alive: see :meth:`lease`)."""
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
            raise errors.ConfigError(f"ttl={ttl!r}: a lease TTL is an int of seconds >= 1")
        result = await self._transport.call(
            "/v3/lease/grant", {"TTL": str(ttl), "ID": str(lease_id)}, retry_ambiguous=True
        )
        if result.get("error"):
            raise errors.EtcdError(str(result["error"]), None, self.current_endpoint)
        return Lease(self, int_field(result, "ID"), int_field(result, "TTL"))

    def lease(self, ttl: int, *, keepalive: bool = True) -> AbstractAsyncContextManager[Lease]:
        """``async with client.lease(ttl) as lease``: granted, kept alive, revoked at exit."""
        return open_lease(self, ttl, keepalive=keepalive)

    async def lease_keepalive_once(self, lease_id: int) -> int:
        """Renew ``lease_id`` once; the TTL left. Raises LeaseExpired if it is gone."""
        result = await self._transport.call(
            "/v3/lease/keepalive", {"ID": str(lease_id)}, retry_ambiguous=True
        )
        ttl = int_field(result, "TTL")
        if ttl <= 0:
            raise errors.LeaseExpired(
                "etcd no longer knows it (TTL 0)", None, self.current_endpoint, lease_id
            )
        return ttl

    async def lease_revoke(self, lease_id: int) -> None:
        """Revoke ``lease_id``: etcd deletes every key bound to it."""
        await self._transport.call("/v3/lease/revoke", {"ID": str(lease_id)}, retry_ambiguous=True)

    async def lease_time_to_live(self, lease_id: int, *, keys: bool = False) -> LeaseInfo:
        """The lease's remaining TTL (-1 when it no longer exists) and, optionally, its keys."""
        body: dict[str, Any] = {"ID": str(lease_id)}
        if keys:
            body["keys"] = True
        result = await self._transport.call("/v3/lease/timetolive", body, retry_ambiguous=True)
        ttl = result.get("TTL")
        return LeaseInfo(
            id=lease_id,
            ttl=int(ttl) if ttl is not None else 0,
            granted_ttl=int_field(result, "grantedTTL"),
            keys=[from_b64(k) for k in result.get("keys", ())],
        )

    async def leases(self) -> list[int]:
        """IDs of every live lease."""
        result = await self._transport.call("/v3/lease/leases", {}, retry_ambiguous=True)
        return [int_field(item, "ID") for item in result.get("leases", ())]

    # -- election ------------------------------------------------------------------
    async def campaign(self, name: str | bytes, lease: int, value: str | bytes) -> LeaderKey:
        """Block until elected leader of ``name``; the candidate key is bound to ``lease``."""
        body = {"name": b64(name), "lease": str(lease), "value": b64(value)}
        # Campaigning again with the same lease is idempotent on the server.
        result = await self._transport.call(
            "/v3/election/campaign", body, timeout=None, retry_ambiguous=True
        )
        leader = result.get("leader") or {}
        return LeaderKey(
            name=from_b64(leader.get("name")),
            key=from_b64(leader.get("key")),
            rev=int_field(leader, "rev"),
            lease=int_field(leader, "lease"),
        )

    async def proclaim(self, leader: LeaderKey, value: str | bytes) -> None:
        """Change the leader's value (fails with EtcdError when no longer leader)."""
        await self._transport.call(
            "/v3/election/proclaim",
            {"leader": leader._json(), "value": b64(value)},
            retry_ambiguous=True,
        )

    async def leader(self, name: str | bytes) -> KeyValue | None:
        """The leader's key-value of election ``name``, or None when nobody leads."""
        try:
            result = await self._transport.call(
                "/v3/election/leader", {"name": b64(name)}, retry_ambiguous=True
            )
        except errors.EtcdError as exc:
            if "no leader" in exc.message and "election" in exc.message:
                return None
            raise
        kv = result.get("kv")
        return parse_kv(kv) if kv else None

    async def resign(self, leader: LeaderKey) -> None:
        """Give up leadership (deletes the leader's key)."""
        await self._transport.call(
            "/v3/election/resign", {"leader": leader._json()}, retry_ambiguous=True
        )

    def observe(self, name: str | bytes) -> _ObserveContext:
        """``async with client.observe(name) as leaders``: the leader's kv, then each change."""
        return _ObserveContext(Observe(self._transport, to_bytes(name)))

    # -- lock -------------------------------------------------------------------------
    async def lock(self, name: str | bytes, lease: int) -> bytes:
        """Block until the lock ``name`` is held with ``lease``; returns the lock's key.

        The key's create revision is a fencing token. The lock is held until
        :meth:`unlock` or until the lease ends.
        """
        result = await self._transport.call(
            "/v3/lock/lock",
            {"name": b64(name), "lease": str(lease)},
            timeout=None,
            retry_ambiguous=True,  # locking twice with the same lease is a no-op
        )
        return from_b64(result.get("key"))

    async def unlock(self, key: bytes) -> None:
        """Release the lock whose key :meth:`lock` returned."""
        await self._transport.call("/v3/lock/unlock", {"key": b64(key)}, retry_ambiguous=True)

    # -- cluster -----------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        """The current member's status (version, leader, raft index...)."""
        return await self._transport.call("/v3/maintenance/status", {}, retry_ambiguous=True)

    async def current_revision(self) -> int:
        """The cluster's current revision (a linearizable read)."""
        result = await self._transport.call(
            "/v3/kv/range", {"key": b64(b"\0"), "count_only": True}, retry_ambiguous=True
        )
        return parse_header(result.get("header")).revision

    async def aclose(self) -> None:
        await self._transport.aclose()


class _WatchContext:
    def __init__(self, watch: Watch) -> None:
        self._watch = watch

    async def __aenter__(self) -> Watch:
        return self._watch

    async def __aexit__(self, *exc_info: object) -> None:
        await self._watch.aclose()


class _ObserveContext:
    def __init__(self, observe: Observe) -> None:
        self._observe = observe

    async def __aenter__(self) -> Observe:
        return self._observe

    async def __aexit__(self, *exc_info: object) -> None:
        await self._observe.aclose()


@asynccontextmanager
async def open_etcd_client(
    endpoints: str | Sequence[str],
    *,
    username: str | None = None,
    password: str | None = None,
    ca_cert: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
    timeout: float = 5.0,  # noqa: ASYNC109 -- the client's per-call default
) -> AsyncIterator[EtcdClient]:
    """Connect to etcd for the duration of an ``async with`` block.

    With ``username``/``password`` a token is fetched at once, so wrong
    credentials fail here (:class:`~foundation.errors.EtcdAuthError`).

    Raises:
        ConfigError: bad endpoints, TLS files or timeout.
        EtcdAuthError: the credentials were refused.
        EtcdUnavailable: (with credentials) no member answered.
    """
    transport = Transport(
        endpoints,
        timeout=timeout,
        username=username,
        password=password,
        ca_cert=ca_cert,
        client_cert=client_cert,
        client_key=client_key,
    )
    try:
        await transport.authenticate()
        yield EtcdClient(transport)
    finally:
        await transport.aclose()
