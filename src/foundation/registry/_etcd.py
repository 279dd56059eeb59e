"""The etcd registry backend: writes go through etcd, reads come from a local table.

Where things live in etcd (keys, values, the lease, the reserved subtrees)
is documented in ``docs/contract.rst`` ("Keys in etcd"); the encoding is
:mod:`._etcd_codec`. The backend is three parts tied together here:

* :mod:`._etcd_writes`: the write path, registrations queued and coalesced
  into batched txns;
* :mod:`._etcd_mirror` and :mod:`._etcd_watch`: the read side, a local
  table (native when built) kept current by a watch; its read methods ARE
  the backend's (``backend.lookup is table.lookup``), so a lookup on etcd
  costs what it costs locally, and its change events ARE the backend's
  events;
* :mod:`._etcd_lease`: the lease, kept alive, replaced when lost, and this
  instance's entries put back under the new one.

The other writes (unregister, update_metadata, update_value, join, leave...)
are single etcd calls (:mod:`._etcd_writes` too), each sent at once and
shielded (bounded by the client's timeout), and applied to the table when
etcd acknowledged them.

Pub/sub: ``publish`` puts the message at this instance's message key
(``prefix + "msg/" + instance``, bound to its lease, overwritten by the next
one), and every other instance's watch hands each put to its subscribers
(:attr:`Mirror.on_message`); nothing is replayed to a later subscriber.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from .. import errors
from .._util import reraise_collapsed
from ..etcd import EtcdClient, EtcdSettings, RangeResult
from ..etcd._connect import connection_keywords, resolve_settings, shared_client
from . import _compat
from ._backend import Backend
from ._etcd_codec import (
    GRP,
    MSG,
    REG,
    Decoded,
    canonical_value,
    encode_entry,
    encode_key,
    encode_member_key,
    encode_message,
    encode_owner,
    json_value,
)
from ._etcd_health import health
from ._etcd_lease import LeaseKeeper
from ._etcd_link import Link
from ._etcd_mirror import Mirror
from ._etcd_watch import Follower
from ._etcd_writes import Pending, Writer
from ._keys import check_owner, copy_metadata
from ._query import Query
from ._types import MISSING, Health, Missing, Registration, RegistryEvent, RegistryStats

__all__ = ["EtcdBackend", "open_etcd_backend"]

_Listener = Callable[[RegistryEvent], None]
_FaultListener = Callable[[BaseException], None]
_MessageListener = Callable[[Any, Any, Any], None]


class EtcdBackend:
    """The registry backend on etcd; open it with :func:`open_etcd_backend`.

    Reads are the local table's own methods; writes are async (``aregister``
    and the other ``a*`` methods, see :class:`~foundation.registry.AsyncWrites`). The
    synchronous write methods of the :class:`~foundation.registry.Backend` protocol
    raise :class:`~foundation.errors.BackendIsAsync`.
    """

    name: str = "etcd"
    is_async: bool = True
    partitions: int

    # reads, bound to the local table in __init__ (no wrapper frame)
    lookup: Callable[[Hashable, Hashable], Any]
    get: Callable[..., Any]
    lookup_with_metadata: Callable[[Hashable, Hashable], Registration]
    metadata: Callable[[Hashable, Hashable], Mapping[Any, Any]]
    contains: Callable[[Hashable, Hashable], bool]
    names: Callable[[Hashable], list[Any]]
    registrations: Callable[..., list[Registration]]
    list_all: Callable[[], list[Registration]]
    count: Callable[..., int]
    select: Callable[[Hashable | None, Query], list[Registration]]
    count_select: Callable[[Hashable | None, Query], int]
    owned: Callable[[Hashable | None], list[Registration]]
    members: Callable[[Hashable, Hashable], list[Registration]]
    member_count: Callable[[Hashable, Hashable], int]
    memberships: Callable[..., list[Registration]]

    def __init__(self, client: EtcdClient, table: Backend, *, prefix: str, ttl: int) -> None:
        if table.is_async or len(table) or table.memberships():
            raise errors.ConfigError("the read table of an EtcdBackend is an empty local backend")
        self._table = table
        self.partitions = table.partitions
        self.lookup = table.lookup
        self.get = table.get
        self.lookup_with_metadata = table.lookup_with_metadata
        self.metadata = table.metadata
        self.contains = table.contains
        self.names = table.names
        self.registrations = table.registrations
        self.list_all = table.list_all
        self.count = table.count
        self.select = table.select
        self.count_select = table.count_select
        self.owned = table.owned
        self.members = table.members
        self.member_count = table.member_count
        self.memberships = table.memberships

        self._link = link = Link(client, prefix, ttl)
        self._mirror = mirror = Mirror(link, table)
        # The table's events, relayed with their reason (see _etcd_mirror).
        self.subscribe = mirror.subscribe
        self._follower = Follower(link, mirror)
        self._keeper = keeper = LeaseKeeper(link, mirror)
        mirror.lease = keeper
        self._writer = Writer(link, mirror, keeper)
        self._id = link.instance_id
        self._prefix = link.raw_prefix
        self._message_key = link.raw_prefix + MSG + link.instance_id.encode("ascii")
        self._scope_ids = itertools.count(1)
        self._sync_seq = itertools.count(1)
        self._fault_listeners: dict[object, _FaultListener] = {}
        self._scope = trio.CancelScope()
        self._stopped = trio.Event()

    def __repr__(self) -> str:
        state = "closed" if self._link.closed else "open"
        return (
            f"<EtcdBackend prefix={self.prefix!r} endpoint={self._link.endpoint!r}"
            f" count={self.count()} {state}>"
        )

    # -------------------------------------------------------------- properties

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._link.closed

    @property
    def prefix(self) -> str:
        """The key prefix this registry lives under."""
        return self._link.prefix

    @property
    def instance_id(self) -> str:
        """This instance's id (``"i"`` in every entry it wrote)."""
        return self._id

    @property
    def lease_id(self) -> int:
        """The ID of the lease this instance's entries are bound to now (0 before one)."""
        lease = self._keeper.lease
        return lease.id if lease is not None else 0

    @property
    def read_table(self) -> Backend:
        """The local table the reads are bound to (read it; never write to it)."""
        return self._table

    @property
    def client(self) -> EtcdClient:
        """The etcd client this backend talks through."""
        return self._link.client

    def __len__(self) -> int:
        return len(self._table)

    # ------------------------------------------------- sync writes: refused

    def register(
        self,
        ns: Hashable,
        name: Hashable,
        value: Any,
        metadata: Mapping[Any, Any] | None = None,
        *,
        owner: Hashable | None = None,
    ) -> Registration:
        """Refused: etcd writes wait; use ``await registry.register(...)``."""
        raise errors.BackendIsAsync("register", self.name)

    def unregister(self, ns: Hashable, name: Hashable) -> bool:
        """Refused: use ``await registry.unregister(...)``."""
        raise errors.BackendIsAsync("unregister", self.name)

    def update_metadata(
        self, ns: Hashable, name: Hashable, metadata: Mapping[Any, Any] | None
    ) -> Registration:
        """Refused: use ``await registry.update_metadata(...)``."""
        raise errors.BackendIsAsync("update_metadata", self.name)

    def unregister_owner(self, owner: Hashable) -> int:
        """Refused: use ``await registry.unregister_owner(...)``."""
        raise errors.BackendIsAsync("unregister_owner", self.name)

    def join(
        self,
        ns: Hashable,
        group: Hashable,
        value: Any,
        metadata: Mapping[Any, Any] | None = None,
        *,
        owner: Hashable | None = None,
    ) -> Registration:
        """Refused: use ``await registry.join(...)``."""
        raise errors.BackendIsAsync("join", self.name)

    def leave(self, ns: Hashable, group: Hashable, value: Any) -> bool:
        """Refused: use ``await registry.leave(...)``."""
        raise errors.BackendIsAsync("leave", self.name)

    def update_value(
        self, ns: Hashable, name: Hashable, value: Any, expect: Any = MISSING
    ) -> Registration:
        """Refused: use ``await registry.update_value(...)``."""
        raise errors.BackendIsAsync("update_value", self.name)

    def unregister_select(self, ns: Hashable | None, query: Query) -> int:
        """Refused: use ``await registry.unregister_select(...)``."""
        raise errors.BackendIsAsync("unregister_select", self.name)

    # ------------------------------------------------------------ async writes

    def scope_owner(self) -> Hashable:
        """A fresh portable owner token for one ``registered()`` block."""
        return ("foundation.scope", self._id, next(self._scope_ids))

    def _prepare(
        self, ns: Any, name: Any, value: Any, metadata: Mapping[Any, Any] | None, owner: Any
    ) -> Pending:
        if self._link.closed:
            raise errors.RegistryClosed()
        md = copy_metadata(metadata)
        encode_owner(owner)
        key = encode_key(self._prefix, REG, ns, name)
        raw, json_value, json_metadata = encode_entry(key, value, md, owner, self._id)
        return Pending(
            key, raw, Decoded(False, ns, name, json_value, json_metadata, owner, self._id)
        )

    async def aregister(
        self,
        ns: Hashable,
        name: Hashable,
        value: Any,
        metadata: Mapping[Any, Any] | None = None,
        *,
        owner: Hashable | None = None,
    ) -> Registration:
        """Register ``value`` under ``(ns, name)`` unless another value/owner holds it.

        Coalesced with concurrent calls into one txn. Cancelled while queued:
        nothing is written; once sent it completes.

        Raises AlreadyRegistered, InvalidKey, InvalidValue, InvalidMetadata,
        RegistryClosed, EtcdError (EtcdUnavailable, LeaseExpired...).
        """
        item = self._prepare(ns, name, value, metadata, owner)
        await self._writer.submit([item])
        result = item.result
        if isinstance(result, BaseException):
            raise result
        assert result is not None
        return result

    async def aregister_many(
        self, items: Iterable[Sequence[Any]], *, owner: Hashable | None = None
    ) -> list[Registration | errors.FoundationError]:
        """Register many ``(ns, name, value[, metadata])``; one result per item.

        A result is the Registration, or the error that item met (a
        RegistryError, or an EtcdError if its txn could not be sent).

        Raises:
            RegistryClosed: the registry is closed (nothing is written).
        """
        if self._link.closed:
            raise errors.RegistryClosed()
        slots: list[Pending | errors.FoundationError] = []
        pending: list[Pending] = []
        for item in items:
            if not isinstance(item, Sequence) or len(item) not in (3, 4):
                shape = "items are (ns, name, value) or (ns, name, value, metadata)"
                slots.append(errors.InvalidKey(item, shape))
                continue
            metadata = item[3] if len(item) == 4 else None
            try:
                prepared = self._prepare(item[0], item[1], item[2], metadata, owner)
            except errors.RegistryError as exc:
                slots.append(exc)
                continue
            slots.append(prepared)
            pending.append(prepared)
        if pending:
            await self._writer.submit(pending)
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
        results: list[Registration | errors.FoundationError] = []
        for slot in slots:
            if isinstance(slot, Pending):
                result = slot.result
                if isinstance(result, errors.FoundationError | Registration):
                    results.append(result)
                else:
                    assert isinstance(result, BaseException)
                    raise result
            else:
                results.append(slot)
        return results

    async def aunregister(self, ns: Hashable, name: Hashable) -> bool:
        """Delete ``(ns, name)``; False if it was absent (or the registry is closed)."""
        key = encode_key(self._prefix, REG, ns, name)
        return await self._writer.delete_key(key)

    async def aupdate_metadata(
        self, ns: Hashable, name: Hashable, metadata: Mapping[Any, Any] | None
    ) -> Registration:
        """Replace the metadata of ``(ns, name)`` (whoever registered it).

        Raises:
            NotRegistered, InvalidKey, InvalidMetadata, RegistryClosed, EtcdError
        """
        if self._link.closed:
            raise errors.RegistryClosed()
        md = copy_metadata(metadata)
        key = encode_key(self._prefix, REG, ns, name)
        encode_entry(key, None, md, None, self._id)  # JSON and size check before sending

        def change(holder: Decoded) -> tuple[Any, Mapping[str, Any]]:
            return holder.value, md

        return await self._writer.update(key, ns, name, change, "update_metadata")

    async def aupdate_value(
        self, ns: Hashable, name: Hashable, value: Any, expect: Any = MISSING
    ) -> Registration:
        """Replace the value of ``(ns, name)``, keeping its metadata, owner and lease.

        With ``expect``, only if the value etcd holds equals it (both as
        JSON): a compare-and-set on the key's mod_revision, read again from
        etcd when another write came first, never decided on the local view.

        Raises:
            NotRegistered, ValueMismatch, InvalidKey, InvalidValue,
            RegistryClosed, EtcdError
        """
        if self._link.closed:
            raise errors.RegistryClosed()
        key = encode_key(self._prefix, REG, ns, name)
        encode_entry(key, value, {}, None, self._id)  # JSON and size check before sending
        check = not isinstance(expect, Missing)
        expected = json_value(expect) if check else None

        def change(holder: Decoded) -> tuple[Any, Mapping[str, Any]]:
            if check and holder.value != expected:
                raise errors.ValueMismatch((ns, name), expect, holder.value)
            return value, holder.metadata

        return await self._writer.update(key, ns, name, change, "update_value")

    async def aunregister_select(self, ns: Hashable | None, query: Query) -> int:
        """Delete the names of ``ns`` (all for None) that match ``query``; how many.

        The matches come from the local view; each is deleted only if etcd
        still holds it unchanged (its mod_revision), 64 keys (128
        operations) per txn, so a name that changed (or went) meanwhile stays and is not
        counted. One ``unregistered`` event each (reason ``"explicit"``).

        Raises:
            RegistryClosed; EtcdError; whatever the query's predicate raises.
        """
        if self._link.closed:
            raise errors.RegistryClosed()
        revs = self._mirror.revs
        found: list[tuple[bytes, int]] = []
        for reg in self._table.select(ns, query):
            key = encode_key(self._prefix, REG, reg.namespace, reg.name)
            revision = revs.get(key)
            if revision:
                found.append((key, revision))
        return await self._writer.delete_unchanged(found)

    # ------------------------------------------------------------- pub/sub

    def prepare_message(self, ns: Hashable, topic: Hashable, message: Any) -> tuple[Any, bytes]:
        """``(message as subscribers receive it, payload)`` for :meth:`publish_remote`.

        Raises:
            InvalidKey: ``ns`` or ``topic`` is not portable.
            InvalidValue: ``message`` is not JSON, or too large.
            RegistryClosed: the registry is closed.
        """
        if self._link.closed:
            raise errors.RegistryClosed()
        _, raw, json_message = encode_message(self._prefix, self._id, ns, topic, message)
        return json_message, raw

    async def publish_remote(self, payload: bytes) -> None:
        """Write a prepared message where every other instance's watch sees it.

        Sent at once and shielded; the key is this instance's message key,
        bound to its lease (waiting, bounded, for one while a lost lease is
        replaced).

        Raises:
            RegistryClosed, EtcdError
        """
        if self._link.closed:
            raise errors.RegistryClosed()
        await self._writer.publish(self._message_key, payload)

    def subscribe_messages(self, listener: _MessageListener | None) -> None:
        """Hand messages other instances publish to ``listener(ns, topic, message)``.

        One listener (the registry's topics); None stops the delivery (and
        the decoding of messages).
        """
        self._mirror.on_message = listener

    async def aunregister_owner(self, owner: Hashable) -> int:
        """Delete every name and membership this instance wrote with ``owner``; how many.

        Entries written by other registry instances with an equal owner token
        are theirs and stay (owner tokens are local: a child id, a scope).
        """
        check_owner(owner)
        if owner is None or self._link.closed:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return 0
        keys = list(self._mirror.by_owner.get(owner, ()))
        if not keys:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return 0
        return await self._writer.delete_keys(keys, count=True, reason="owner")

    def _member(
        self, ns: Any, group: Any, value: Any, metadata: Mapping[Any, Any] | None, owner: Any
    ) -> tuple[bytes, bytes, Decoded]:
        md = copy_metadata(metadata)
        encode_owner(owner)
        encode_key(self._prefix, GRP, ns, group)  # key errors before value errors
        json_value, canonical = canonical_value(value)
        key = encode_member_key(self._prefix, ns, group, canonical)
        raw, json_value, json_metadata = encode_entry(key, json_value, md, owner, self._id)
        return key, raw, Decoded(True, ns, group, json_value, json_metadata, owner, self._id)

    async def ajoin(
        self,
        ns: Hashable,
        group: Hashable,
        value: Any,
        metadata: Mapping[Any, Any] | None = None,
        *,
        owner: Hashable | None = None,
    ) -> Registration:
        """Add ``value`` to group ``(ns, group)``; again: replace its metadata and owner.

        The member is then this instance's (bound to its lease).
        """
        if self._link.closed:
            raise errors.RegistryClosed()
        return await self._writer.put_member(*self._member(ns, group, value, metadata, owner))

    async def aleave(self, ns: Hashable, group: Hashable, value: Any) -> bool:
        """Remove ``value`` from group ``(ns, group)``; False if it was not a member."""
        encode_key(self._prefix, GRP, ns, group)
        try:
            _, canonical = canonical_value(value)
        except errors.InvalidValue:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return False  # not JSON (or nested too deep): cannot be a member
        key = encode_member_key(self._prefix, ns, group, canonical)
        return await self._writer.delete_key(key)

    async def sync(self) -> None:
        """Wait until the table reflects every write to the prefix made before this call.

        Writes a sentinel key under ``prefix + "sync/"`` (bound to the lease)
        and waits for the watch to deliver it: writes elsewhere in the
        cluster move its revision without any event here. A watch on a
        member that does not deliver it within the client's per-attempt
        deadline (a member cut off with a minority, or stalled) is moved to
        the member that took the sentinel. On a closed registry it returns at
        once (the view is final).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        link, mirror, follower = self._link, self._mirror, self._follower
        if link.closed:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        started = trio.current_time()
        result, _ = await self._keeper.put_with_lease(
            self._keeper.sync_key, str(next(self._sync_seq))
        )
        target = result.header.revision
        await follower.wait_applied(target)
        await mirror.wait_settled(target)
        follower.confirm(started)

    async def aload(
        self, registrations: Sequence[Registration], memberships: Sequence[Registration]
    ) -> None:
        """Write a whole registry's entries (``migrate()`` into etcd).

        Everything is checked first (portable keys and owners, JSON values):
        a bad entry raises before anything is written. Names go in batches;
        members one by one, in order, so join order is kept for every reader.

        Raises InvalidKey, InvalidValue, InvalidMetadata, AlreadyRegistered
        (the name is taken here), RegistryClosed, EtcdError.
        """
        items = [
            self._prepare(r.namespace, r.name, r.value, r.metadata, r.owner) for r in registrations
        ]
        members = [
            self._member(m.namespace, m.name, m.value, m.metadata, m.owner) for m in memberships
        ]
        if items:
            await self._writer.submit(items)
            for item in items:
                if isinstance(item.result, BaseException):
                    raise item.result
        for key, raw, entry in members:
            await self._writer.put_member(key, raw, entry)
        await trio.lowlevel.checkpoint()

    async def adiscard(self) -> int:
        """Delete every entry this instance wrote (undoing a failed ``aload``); how many."""
        return await self._writer.delete_keys(list(self._mirror.mine))

    # ------------------------------------------------------- events, admin

    def subscribe_faults(self, listener: _FaultListener) -> Callable[[], None]:
        """Call ``listener(error)`` on a fault that ends the view (never, on etcd).

        A lost lease is not one any more: the entries are put back under a
        new lease and watchers see only what could not be put back; the loss
        shows in :meth:`health_check` and telemetry. Kept for the
        :class:`~foundation.registry.AsyncWrites` protocol.
        """
        token = object()
        self._fault_listeners[token] = listener

        def unsubscribe() -> None:
            self._fault_listeners.pop(token, None)

        return unsubscribe

    def stats(self) -> RegistryStats:
        """The table's counters, with this instance's etcd writes and conflicts."""
        return dataclasses.replace(
            self._table.stats(),
            backend=self.name,
            writes=self._writer.writes,
            conflicts=self._writer.conflicts,
            closed=self._link.closed,
        )

    def health_check(self) -> Health:
        """Whether the lease is alive and etcd answers; details say why not, and if stale.

        ``details["stale_since"]`` is the wall-clock time (``time.time()``)
        since which the view may be stale (a watch that lags or is down, a
        lost lease), None while it is known current: reads keep answering
        from the view either way, and staleness alone keeps ``ok`` true.
        ``details["foreign_skipped"]`` counts records under the prefix this
        registry could not read and skipped. See :func:`._etcd_health.health`.
        """
        return health(self._link, self._mirror, self._follower, self._keeper)

    def close(self) -> None:
        """Refuse further writes and stop the background tasks (the lease is revoked).

        Idempotent, does not block. Reads keep answering from the last state.
        A txn already sent completes; queued registrations get RegistryClosed.
        """
        link = self._link
        if link.closed:
            return
        link.closed = True
        self._writer.close()
        self._mirror.close()
        self._follower.close()
        self._keeper.close()
        self._scope.cancel()
        self._table.close()

    async def aclose(self) -> None:
        """:meth:`close`, then wait until the background tasks (and the revoke) are done."""
        self.close()
        await self._stopped.wait()

    # ------------------------------------------------------ background tasks

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load, get a lease, then keep watching, flushing and renewing until closed."""
        follower, keeper = self._follower, self._keeper
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    revision = await follower.resync()
                    await nursery.start(keeper.run)
                    nursery.start_soon(
                        follower.watch_loop, revision + 1, name="etcd registry watch"
                    )
                    nursery.start_soon(self._writer.flusher, name="etcd registry flusher")
                    nursery.start_soon(keeper.check_loop, name="etcd registry suspects")
                    nursery.start_soon(
                        follower.probe_loop, keeper.sync_key, name="etcd registry freshness"
                    )
                    self._link.started = True
                    task_status.started()
        finally:
            self._stopped.set()


def _kvs(response: object) -> list[Any]:
    return response.kvs if isinstance(response, RangeResult) else []


def _check_options(prefix: object, ttl: object, indexes: object) -> None:
    if isinstance(indexes, str):
        raise errors.ConfigError(
            f"indexes={indexes!r} is a str; pass a sequence of field names,"
            f" e.g. indexes=({indexes!r},)"
        )
    if not isinstance(prefix, str):
        raise errors.ConfigError(f"prefix={prefix!r}: use a str such as 'foundation/'")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
        raise errors.ConfigError(f"ttl={ttl!r}: the lease TTL is an int of seconds >= 1")


@asynccontextmanager
async def open_etcd_backend(
    endpoints: str | Sequence[str] | None = None,
    *,
    prefix: str = "foundation/",
    ttl: int = 10,
    client: EtcdClient | None = None,
    settings: EtcdSettings | None = None,
    username: str | None = None,
    password: str | None = None,
    ca_cert: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
    timeout: float | None = None,  # noqa: ASYNC109 -- the etcd client's per-call deadline
    partitions: int | None = None,
    indexes: Sequence[str] = (),
) -> AsyncIterator[EtcdBackend]:
    """Connect, load the prefix, take a lease; yield the backend; close and revoke at exit.

    Where etcd is: ``client=`` (an open client, shared and left open at
    exit), ``settings=``, or the connection keywords (``endpoints`` first;
    ``timeout``, default 5 s, bounds each etcd call); one form only.
    ``partitions`` and ``indexes`` shape the local table (as for a local
    registry). Use it as ``Registry(backend)``, or migrate a local registry
    onto it with ``await registry.migrate(backend)``; ``open_registry(
    backend="etcd", ...)`` does both steps for you.

    Raises:
        ConfigError: bad endpoints, prefix, TTL, timeout or TLS files; two
            forms of connection mixed.
        EtcdAuthError: wrong username or password.
        EtcdPermissionDenied: the user may not read and write the prefix.
        EtcdUnavailable: no member answered.
    """
    from ._make import make_backend

    _check_options(prefix, ttl, indexes)
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
        what="the etcd registry",
    )
    # The read table first: bad partitions/indexes fail before any connection.
    # Native when built; not "auto", which FOUNDATION_BACKEND=etcd points back here.
    local = "native" if _compat.NATIVE else "python"
    table = make_backend(local, partitions=partitions, indexes=indexes)
    try:
        async with shared_client(client, resolved) as etcd:
            backend = EtcdBackend(etcd, table, prefix=prefix, ttl=ttl)
            async with trio.open_nursery() as nursery:
                try:
                    await nursery.start(backend._run)
                    yield backend
                finally:
                    backend.close()
    except BaseExceptionGroup as group:
        reraise_collapsed(group)
