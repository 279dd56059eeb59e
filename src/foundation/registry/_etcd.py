"""The etcd registry backend: writes go through etcd, reads come from a local table.

Layout (DESIGN sections 2 and 5):

* **Read side.** A local table (native when built, else the python twin)
  private to the backend holds the registry's view. Its read methods ARE the
  backend's (``backend.lookup is table.lookup``), so a lookup on etcd costs
  what it costs locally, and its change events ARE the backend's events
  (``subscribe`` is the table's). The table is filled by a range of the whole
  prefix at one revision, then kept current by a watch from the revision
  after it. A compacted watch is answered by ranging again and applying the
  difference; a broken one resumes from the revision after its last event.
* **Write side.** Writes are etcd transactions; each one that succeeds is
  applied to the table at once (so ``lookup`` right after ``await
  register()`` sees it) and recorded as ``key -> mod_revision``, which makes
  the watch's echo of it, and any event older than it, a no-op.
  Concurrent ``register()`` calls are queued and coalesced by a flusher task
  into one txn of up to 100 create-if-absent puts (etcd allows 128 operations
  and 1.5 MiB per txn); a txn that fails reports, in its failure branch,
  which keys exist, so only those are resolved one by one (re-registration
  or ``AlreadyRegistered``) and the rest go again.
* **Lease.** One lease per backend instance, kept alive at TTL/3 by the
  client's keepalive task; every entry this instance writes is bound to it,
  so when the instance dies (or closes: the lease is revoked) its entries
  vanish for every other instance. A lost lease is never silent: watchers
  get :class:`~foundation.errors.LeaseExpired`, ``health_check()`` says so,
  and the backend grants a new lease and re-puts its own entries
  (``create_revision == 0``; a name taken meanwhile by another instance is
  dropped and logged). If that keeps failing the registry closes.
* **Cancellation.** A ``register()`` cancelled while still queued writes
  nothing; once its txn is sent it completes and returns (Trio's abort
  protocol: ``wait_task_rescheduled`` refuses the cancel). The other writes
  send at once, shielded (each etcd call is bounded by the client's timeout).

The encoding of keys and values is in :mod:`._etcd_codec`.
"""

from __future__ import annotations

import copy
import dataclasses
import heapq
import itertools
import logging
import uuid
from collections import deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from operator import attrgetter
from types import MappingProxyType
from typing import Any, TypeVar

import trio

from .. import errors
from .._util import reraise_collapsed
from ..etcd import (
    Compare,
    EtcdClient,
    KeyValue,
    Lease,
    Op,
    PutResult,
    RangeResult,
    compare_create,
    compare_mod,
    op_delete,
    op_put,
    op_range,
    open_etcd_client,
    prefix_end,
)
from . import _compat
from ._backend import Backend
from ._etcd_codec import (
    GRP,
    REG,
    SYNC,
    Decoded,
    canonical_value,
    decode_entry,
    decode_key,
    encode_entry,
    encode_key,
    encode_member_key,
    encode_owner,
    reencode,
)
from ._keys import check_owner, copy_metadata, same_owner
from ._query import Query
from ._types import EMPTY_METADATA, Health, Registration, RegistryEvent, RegistryStats

__all__ = ["EtcdBackend", "open_etcd_backend"]

logger = logging.getLogger("foundation.registry")

#: Operations per txn: etcd's default --max-txn-ops (lowered at run time if etcd says so).
MAX_TXN_OPS = 128
#: Bytes of entries coalesced into one txn (etcd's default request limit is 1.5 MiB).
MAX_BATCH_BYTES = 1_000_000
#: Keys per page of the initial range.
RANGE_PAGE = 1000
#: Batched rounds before a batch that keeps losing races goes item by item.
MAX_BATCH_ROUNDS = 3
#: Batches sent at once (a new one is built while etcd applies the others).
MAX_BATCHES_IN_FLIGHT = 2

_T = TypeVar("_T")
_Listener = Callable[[RegistryEvent], None]
_FaultListener = Callable[[BaseException], None]


class _Call:
    """One waiting ``register()``/``register_many()`` caller and its items."""

    __slots__ = ("cancelled", "remaining", "sent", "task")

    def __init__(self, task: trio.lowlevel.Task, remaining: int) -> None:
        self.task = task
        self.remaining = remaining
        #: Set once any item is in a txn: from then on the call cannot be cancelled.
        self.sent = False
        self.cancelled = False


class _Pending:
    """One queued registration."""

    __slots__ = (
        "call",
        "entry",
        "key",
        "raw",
        "result",
        "seen",
        "size",
        "updating",
    )

    def __init__(self, key: bytes, raw: bytes, entry: Decoded) -> None:
        self.key = key
        #: What a successful write stores: the raw etcd value and its decoded entry.
        self.raw = raw
        self.entry = entry
        self.size = len(key) + len(raw)
        self.call: _Call | None = None
        self.result: Registration | BaseException | None = None
        #: True once the key was found held by the same value and owner: then
        #: ``raw`` is the re-registration, put if mod_revision is still ``seen``.
        self.updating = False
        self.seen = 0


def _answered(item: _Pending) -> None:
    """``item`` has its result: wake its caller once all of the call's items have one."""
    call = item.call
    assert call is not None
    call.remaining -= 1
    if call.remaining == 0:
        trio.lowlevel.reschedule(call.task)


def _range_op(item: _Pending) -> Op:
    return op_range(item.key)


def _registration(entry: Decoded) -> Registration:
    metadata = MappingProxyType(dict(entry.metadata)) if entry.metadata else EMPTY_METADATA
    return Registration(entry.ns, entry.name, entry.value, metadata, entry.owner)


def _fresh(exc: BaseException) -> BaseException:
    """A copy of ``exc`` to raise in one more task (each raise gets its own traceback)."""
    clone = copy.copy(exc)
    return clone.with_traceback(None)


def _range_kvs(response: object) -> list[KeyValue]:
    return response.kvs if isinstance(response, RangeResult) else []


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
    members: Callable[[Hashable, Hashable], list[Registration]]
    member_count: Callable[[Hashable, Hashable], int]
    memberships: Callable[..., list[Registration]]
    subscribe: Callable[[_Listener], Callable[[], None]]

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
        self.members = table.members
        self.member_count = table.member_count
        self.memberships = table.memberships
        self.subscribe = table.subscribe

        self._client = client
        self._prefix = prefix.encode("utf-8")
        self._plen = len(self._prefix)
        self._sync_prefix = self._prefix + SYNC
        self._ttl = ttl
        self._timeout = client.timeout
        #: This instance's id: written into every entry as ``"i"``.
        self._id = uuid.uuid4().hex
        self._sync_key = self._sync_prefix + self._id.encode("ascii")
        self._scope_ids = itertools.count(1)
        self._sync_seq = itertools.count(1)

        # key -> mod_revision of every entry in the table
        self._revs: dict[bytes, int] = {}
        # key -> revision of a delete applied ahead of the watch
        self._tombs: dict[bytes, int] = {}
        # member key -> (ns, group, value), to leave on a delete event
        self._members: dict[bytes, tuple[Any, Any, Any]] = {}
        # entries this instance wrote (bound to its lease), and by owner
        self._mine: dict[bytes, Decoded] = {}
        self._by_owner: dict[Hashable, dict[bytes, None]] = {}
        # own entries deleted by someone else (or by the lease ending): kept
        # until a keepalive proves the lease alive, to re-put if it was not
        self._orphans: dict[bytes, Decoded] = {}
        self._orphan_event = trio.Event()

        self._queue: deque[_Pending] = deque()
        self._queue_lot = trio.lowlevel.ParkingLot()
        # key -> the registration being written in a batch now
        self._in_flight: dict[bytes, _Pending] = {}
        self._batches_in_flight = 0
        self._max_ops = MAX_TXN_OPS
        self._max_bytes = MAX_BATCH_BYTES

        self._lease: Lease | None = None
        self._lease_ready = trio.Event()
        self._lease_error: errors.LeaseExpired | None = None
        self._lease_losses = 0

        self._applied = 0  # highest revision the table reflects
        self._sync_waiters: list[tuple[int, int, trio.Event]] = []
        self._watch_error: errors.EtcdError | None = None
        self._unavailable: errors.EtcdError | None = None
        self._last_error: BaseException | None = None
        self._fatal: BaseException | None = None
        self._fault_listeners: dict[object, _FaultListener] = {}
        self._foreign_keys = 0

        self._writes = 0
        self._conflicts = 0
        self._closed = False
        self._scope = trio.CancelScope()
        self._stopped = trio.Event()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<EtcdBackend prefix={self._prefix.decode('utf-8', 'replace')!r}"
            f" endpoint={self._client.current_endpoint!r} count={self.count()} {state}>"
        )

    # -------------------------------------------------------------- properties

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (or the lease could not be re-established)."""
        return self._closed

    @property
    def prefix(self) -> str:
        """The key prefix this registry lives under."""
        return self._prefix.decode("utf-8")

    @property
    def instance_id(self) -> str:
        """This instance's id (``"i"`` in every entry it wrote)."""
        return self._id

    @property
    def lease_id(self) -> int:
        """The ID of the lease this instance's entries are bound to now (0 before one)."""
        return self._lease.id if self._lease is not None else 0

    @property
    def read_table(self) -> Backend:
        """The local table the reads are bound to (read it; never write to it)."""
        return self._table

    @property
    def client(self) -> EtcdClient:
        """The etcd client this backend talks through."""
        return self._client

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

    # ------------------------------------------------------------ async writes

    def scope_owner(self) -> Hashable:
        """A fresh portable owner token for one ``registered()`` block."""
        return ("foundation.scope", self._id, next(self._scope_ids))

    def _prepare(
        self, ns: Any, name: Any, value: Any, metadata: Mapping[Any, Any] | None, owner: Any
    ) -> _Pending:
        if self._closed:
            raise errors.RegistryClosed()
        md = copy_metadata(metadata)
        encode_owner(owner)
        key = encode_key(self._prefix, REG, ns, name)
        raw, json_value, json_metadata = encode_entry(key, value, md, owner, self._id)
        return _Pending(
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
        await self._submit([item])
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
        if self._closed:
            raise errors.RegistryClosed()
        slots: list[_Pending | errors.FoundationError] = []
        pending: list[_Pending] = []
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
            await self._submit(pending)
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
        results: list[Registration | errors.FoundationError] = []
        for slot in slots:
            if isinstance(slot, _Pending):
                result = slot.result
                if isinstance(result, errors.FoundationError | Registration):
                    results.append(result)
                else:
                    assert isinstance(result, BaseException)
                    raise result
            else:
                results.append(slot)
        return results

    async def _submit(self, items: list[_Pending]) -> None:
        """Queue ``items`` for the flusher and wait until each has a result."""
        call = _Call(trio.lowlevel.current_task(), len(items))
        for item in items:
            item.call = call
        self._queue.extend(items)
        self._queue_lot.unpark_all()

        def abort(_: Any) -> trio.lowlevel.Abort:
            if call.sent:
                return trio.lowlevel.Abort.FAILED  # in a txn already: it completes
            call.cancelled = True  # the flusher skips its items
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def aunregister(self, ns: Hashable, name: Hashable) -> bool:
        """Delete ``(ns, name)``; False if it was absent (or the registry is closed)."""
        key = encode_key(self._prefix, REG, ns, name)
        return await self._delete_key(key)

    async def _delete_key(self, key: bytes) -> bool:
        """Delete one name or membership key (shielded once sent); False if absent or closed."""
        if self._closed:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return False
        with trio.CancelScope(shield=True):
            result = await self._call(self._client.delete, key)
            self._apply_delete(key, result.header.revision, ours=True)
        if result.deleted:
            self._writes += 1
        return result.deleted > 0

    async def aupdate_metadata(
        self, ns: Hashable, name: Hashable, metadata: Mapping[Any, Any] | None
    ) -> Registration:
        """Replace the metadata of ``(ns, name)`` (whoever registered it).

        Raises:
            NotRegistered, InvalidKey, InvalidMetadata, RegistryClosed, EtcdError
        """
        if self._closed:
            raise errors.RegistryClosed()
        md = copy_metadata(metadata)
        key = encode_key(self._prefix, REG, ns, name)
        encode_entry(key, None, md, None, self._id)  # JSON and size check before sending
        with trio.CancelScope(shield=True):
            kvs = _range_kvs(await self._call(self._client.range, key))
            for _ in range(20):
                if not kvs:
                    raise errors.NotRegistered((ns, name))
                kv = kvs[0]
                holder = self._decode_or_none(kv)
                if holder is None:
                    raise errors.NotRegistered((ns, name))
                raw, _, json_metadata = encode_entry(
                    key, holder.value, md, holder.owner, holder.instance
                )
                result = await self._call(
                    self._client.txn,
                    [compare_mod(key, "==", kv.mod_revision)],
                    [op_put(key, raw, ignore_lease=True)],
                    [op_range(key)],
                )
                if result.succeeded:
                    entry = Decoded(
                        False, ns, name, holder.value, json_metadata, holder.owner, holder.instance
                    )
                    self._writes += 1
                    return self._apply_put(key, entry, result.revision) or _registration(entry)
                kvs = _range_kvs(result.responses[0]) if result.responses else []
        raise errors.EtcdError(
            f"update_metadata of {(ns, name)!r} lost 20 races in a row; try again",
            None,
            self._client.current_endpoint,
        )

    async def aunregister_owner(self, owner: Hashable) -> int:
        """Delete every name and membership this instance wrote with ``owner``; how many.

        Entries written by other registry instances with an equal owner token
        are theirs and stay (owner tokens are local: a child id, a scope).
        """
        check_owner(owner)
        if owner is None or self._closed:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return 0
        keys = list(self._by_owner.get(owner, ()))
        if not keys:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return 0
        removed = 0
        with trio.CancelScope(shield=True):
            for start in range(0, len(keys), MAX_TXN_OPS):
                chunk = keys[start : start + MAX_TXN_OPS]
                result = await self._call(self._client.txn, [], [op_delete(k) for k in chunk])
                for key, response in zip(chunk, result.responses, strict=False):
                    self._apply_delete(key, result.revision, ours=True)
                    removed += getattr(response, "deleted", 0)
        self._writes += removed
        return removed

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
        if self._closed:
            raise errors.RegistryClosed()
        md = copy_metadata(metadata)
        encode_owner(owner)
        encode_key(self._prefix, GRP, ns, group)  # key errors before value errors
        json_value, canonical = canonical_value(value)
        key = encode_member_key(self._prefix, ns, group, canonical)
        raw, json_value, json_metadata = encode_entry(key, json_value, md, owner, self._id)
        with trio.CancelScope(shield=True):
            result = await self._put_with_lease(key, raw)
            entry = Decoded(True, ns, group, json_value, json_metadata, owner, self._id)
            reg = self._apply_put(key, entry, result.header.revision)
        self._writes += 1
        return reg or _registration(entry)

    async def aleave(self, ns: Hashable, group: Hashable, value: Any) -> bool:
        """Remove ``value`` from group ``(ns, group)``; False if it was not a member."""
        encode_key(self._prefix, GRP, ns, group)
        try:
            _, canonical = canonical_value(value)
        except errors.InvalidValue:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return False  # not JSON: cannot be a member
        key = encode_member_key(self._prefix, ns, group, canonical)
        return await self._delete_key(key)

    async def sync(self) -> None:
        """Wait until the table reflects every write to the prefix made before this call.

        Writes a sentinel key under ``prefix + "sync/"`` (bound to the lease)
        and waits for the watch to deliver it: a progress request cannot be
        sent over the HTTP gateway, and writes elsewhere in the cluster move
        its revision without any event here. On a closed registry it returns
        at once (the view is final).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        result = await self._put_with_lease(self._sync_key, str(next(self._sync_seq)))
        target = result.header.revision
        if self._applied >= target:
            return
        event = trio.Event()
        heapq.heappush(self._sync_waiters, (target, id(event), event))
        await event.wait()
        if self._applied < target:
            raise errors.RegistryClosed()

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
        members = []
        for m in memberships:
            md = copy_metadata(m.metadata)
            encode_owner(m.owner)
            encode_key(self._prefix, GRP, m.namespace, m.name)
            json_value, canonical = canonical_value(m.value)
            key = encode_member_key(self._prefix, m.namespace, m.name, canonical)
            raw, json_value, json_metadata = encode_entry(key, json_value, md, m.owner, self._id)
            entry = Decoded(True, m.namespace, m.name, json_value, json_metadata, m.owner, self._id)
            members.append((key, raw, entry))
        if items:
            await self._submit(items)
            for item in items:
                if isinstance(item.result, BaseException):
                    raise item.result
        with trio.CancelScope(shield=True):
            for key, raw, entry in members:
                result = await self._put_with_lease(key, raw)
                self._apply_put(key, entry, result.header.revision)
                self._writes += 1
        await trio.lowlevel.checkpoint()

    async def adiscard(self) -> int:
        """Delete every entry this instance wrote (undoing a failed ``aload``); how many."""
        keys = list(self._mine)
        removed = 0
        with trio.CancelScope(shield=True):
            for start in range(0, len(keys), MAX_TXN_OPS):
                chunk = keys[start : start + MAX_TXN_OPS]
                result = await self._call(self._client.txn, [], [op_delete(k) for k in chunk])
                for key, response in zip(chunk, result.responses, strict=False):
                    self._apply_delete(key, result.revision, ours=True)
                    removed += getattr(response, "deleted", 0)
        return removed

    # ------------------------------------------------------------ etcd calls

    async def _call(self, call: Callable[..., Awaitable[_T]], *args: Any, **kwargs: Any) -> _T:
        """Run an etcd call, once more if no member answered in time.

        Every call made here is safe to send twice (reads, absolute puts,
        deletes, txns guarded by their compares). The second try gives a
        cluster that is electing a new leader (which can take longer than
        one call's timeout) a second budget before EtcdUnavailable is raised.
        """
        for attempt in (1, 2):
            try:
                result = await call(*args, **kwargs)
            except errors.EtcdUnavailable as exc:
                self._unavailable = exc
                self._last_error = exc
                if attempt == 2 or self._closed:
                    raise
                logger.info("etcd registry %s: %s; trying once more", self.prefix, exc)
                continue
            self._unavailable = None
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _live_lease(self) -> Lease:
        """The current lease, waiting (bounded) while a lost one is being replaced."""
        deadline = trio.current_time() + self._timeout + self._ttl
        while True:
            if self._closed:
                raise errors.RegistryClosed()
            ready = self._lease_ready
            if ready.is_set():
                assert self._lease is not None
                return self._lease
            with trio.move_on_at(deadline):
                await ready.wait()
            if not self._lease_ready.is_set() and trio.current_time() >= deadline:
                cause = self._lease_error
                raise errors.LeaseExpired(
                    "no live lease: the lost one is still being replaced"
                    + (f" ({cause.message})" if cause else ""),
                    None,
                    self._client.current_endpoint,
                    cause.lease_id if cause else 0,
                )

    async def _confirm_lease(self, lease: Lease) -> None:
        """etcd refused ``lease``: find out with a keepalive (which reports a loss)."""
        try:
            await lease.keepalive_once()
        except errors.LeaseExpired:
            return  # reported by lease.on_lost; _live_lease now waits for the next
        except errors.EtcdUnavailable as exc:
            self._unavailable = exc

    async def _put_with_lease(self, key: bytes, raw: bytes | str) -> PutResult:
        for attempt in range(3):
            lease = await self._live_lease()
            try:
                result: PutResult = await self._call(self._client.put, key, raw, lease=lease.id)
            except errors.LeaseExpired:
                if attempt == 2:
                    raise
                await self._confirm_lease(lease)
                continue
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _decode_or_none(self, kv: KeyValue) -> Decoded | None:
        try:
            return decode_entry(self._plen, kv.key, kv.value)
        except (ValueError, TypeError):
            self._foreign(kv.key)
            return None

    def _foreign(self, key: bytes) -> None:
        self._foreign_keys += 1
        level = logging.WARNING if self._foreign_keys <= 10 else logging.DEBUG
        logger.log(
            level,
            "etcd registry: ignoring key %r under prefix %r that this registry did not write",
            key[:200],
            self.prefix,
        )

    # ------------------------------------------------------------- flusher

    async def _flusher(self) -> None:
        """Send queued registrations in batched txns, a few batches in flight."""
        queue = self._queue
        async with trio.open_nursery() as nursery:
            while True:
                if queue and self._batches_in_flight < MAX_BATCHES_IN_FLIGHT:
                    batch = self._take_batch()
                    if batch:
                        self._batches_in_flight += 1
                        nursery.start_soon(self._send_batch, batch)
                        continue
                await self._queue_lot.park()
                # Woken by the first new item (or a finished batch): let every
                # task that is runnable now queue its item too, so they share a txn.
                await trio.lowlevel.cancel_shielded_checkpoint()

    def _take_batch(self) -> list[_Pending]:
        """Up to MAX_TXN_OPS queued items with distinct keys, none in flight; FIFO per key."""
        queue = self._queue
        in_flight = self._in_flight
        batch: list[_Pending] = []
        deferred: list[_Pending] = []
        size = 0
        max_ops, max_bytes = self._max_ops, self._max_bytes
        while queue and len(batch) < max_ops and len(deferred) < 1000:
            item = queue.popleft()
            call = item.call
            assert call is not None
            if call.cancelled:
                continue
            if item.key in in_flight:  # etcd refuses a txn that puts one key twice
                deferred.append(item)
                continue
            if batch and size + item.size > max_bytes:
                deferred.append(item)
                break
            in_flight[item.key] = item
            batch.append(item)
            size += item.size
            call.sent = True
        if deferred:
            queue.extendleft(reversed(deferred))
        return batch

    async def _send_batch(self, batch: list[_Pending]) -> None:
        try:
            with trio.CancelScope(shield=True):
                await self._register_batch(batch)
        except (errors.EtcdError, errors.RegistryClosed) as exc:
            for item in batch:
                if item.result is None:
                    item.result = _fresh(exc)
        except BaseException as exc:
            # A bug: hand it to the callers too, so none of them hangs.
            for item in batch:
                if item.result is None:
                    item.result = exc
            self._finish(batch)
            raise
        self._finish(batch)

    def _finish(self, batch: list[_Pending]) -> None:
        in_flight = self._in_flight
        for item in batch:
            if in_flight.get(item.key) is item:
                del in_flight[item.key]
            _answered(item)
        self._batches_in_flight -= 1
        self._queue_lot.unpark_all()

    async def _register_batch(self, pending: list[_Pending]) -> None:
        """Create (or re-register) every item, in as few txns as the races allow."""
        rounds = 0
        lease_retries = 0
        while pending:
            if rounds >= MAX_BATCH_ROUNDS and len(pending) > 1:
                for item in pending:  # contended: one key per txn
                    await self._register_batch([item])
                return
            rounds += 1
            lease = await self._live_lease()
            compares: list[Compare] = []
            success: list[Op] = []
            for item in pending:
                if item.updating:
                    compares.append(compare_mod(item.key, "==", item.seen))
                    success.append(op_put(item.key, item.raw, ignore_lease=True))
                else:
                    compares.append(compare_create(item.key, "==", 0))
                    success.append(op_put(item.key, item.raw, lease=lease.id))
            # Only a batch that lost a race before asks for the holders in the
            # same txn; a first failure reads them with one more request.
            ranges = [_range_op(item) for item in pending] if rounds > 1 else []
            try:
                # Resending after a broken connection is safe: a create that
                # was applied fails its compare the second time, and is then
                # found held by the same value and owner.
                result = await self._call(
                    self._client.txn, compares, success, ranges, retry_ambiguous=True
                )
                if not result.succeeded and rounds == 1:
                    ranges = [_range_op(item) for item in pending]
                    holders = await self._call(self._client.txn, [], ranges, retry_ambiguous=True)
                    responses = holders.responses
                else:
                    responses = result.responses
            except errors.LeaseExpired:
                lease_retries += 1
                if lease_retries > 3:
                    raise
                await self._confirm_lease(lease)
                rounds -= 1
                continue
            except errors.EtcdRequestError as exc:
                # etcd configured below its defaults (--max-txn-ops,
                # --max-request-bytes): learn its limit, send halves.
                text = exc.message.lower()
                if len(pending) < 2 or not ("too many operations" in text or "too large" in text):
                    raise
                half = len(pending) // 2
                if "too many operations" in text:
                    self._max_ops = max(1, min(self._max_ops, half))
                else:
                    self._max_bytes = max(1, sum(item.size for item in pending) // 2)
                logger.info("etcd registry %s: %s; batches now smaller", self.prefix, exc)
                await self._register_batch(pending[:half])
                await self._register_batch(pending[half:])
                return
            if result.succeeded:
                revision = result.revision
                for item in pending:
                    entry = item.entry
                    item.result = self._apply_put(item.key, entry, revision) or _registration(entry)
                self._writes += len(pending)
                return
            retry: list[_Pending] = []
            for item, response in zip(pending, responses, strict=True):
                kvs = _range_kvs(response)
                entry = item.entry
                if not kvs:
                    if item.updating:  # the holder went away meanwhile: create it
                        item.updating = False
                        item.entry = entry = Decoded(
                            False,
                            entry.ns,
                            entry.name,
                            entry.value,
                            entry.metadata,
                            entry.owner,
                            self._id,
                        )
                        item.raw = reencode(entry.value, entry.metadata, entry.owner, self._id)
                    retry.append(item)
                    continue
                kv = kvs[0]
                holder = self._decode_or_none(kv)
                if (
                    holder is not None
                    and holder.value == entry.value
                    and same_owner(holder.owner, entry.owner)
                ):
                    # same value, same owner: a re-registration (keeps the holder's lease)
                    item.entry = Decoded(
                        False,
                        entry.ns,
                        entry.name,
                        holder.value,
                        entry.metadata,
                        holder.owner,
                        holder.instance,
                    )
                    item.raw = reencode(holder.value, entry.metadata, holder.owner, holder.instance)
                    item.updating = True
                    item.seen = kv.mod_revision
                    retry.append(item)
                    continue
                self._conflicts += 1
                taken = _registration(holder) if holder is not None else None
                item.result = errors.AlreadyRegistered((entry.ns, entry.name), taken)
            pending = retry

    # ------------------------------------------------- applying to the table

    def _apply_put(self, key: bytes, entry: Decoded, revision: int) -> Registration | None:
        """Apply an entry as of ``revision``; None if the table already knows newer."""
        if revision <= self._revs.get(key, 0) or revision <= self._tombs.get(key, 0):
            return None
        if self._closed:
            return None
        self._tombs.pop(key, None)
        self._revs[key] = revision
        table = self._table
        if entry.is_member:
            self._members[key] = (entry.ns, entry.name, entry.value)
            reg = table.join(entry.ns, entry.name, entry.value, entry.metadata, owner=entry.owner)
        else:
            current: Registration | None = None
            if table.contains(entry.ns, entry.name):  # (a miss would build an exception)
                current = table.lookup_with_metadata(entry.ns, entry.name)
            if current is None:
                reg = table.register(
                    entry.ns, entry.name, entry.value, entry.metadata, owner=entry.owner
                )
            elif current.value == entry.value and same_owner(current.owner, entry.owner):
                reg = table.update_metadata(entry.ns, entry.name, entry.metadata)
            else:
                table.unregister(entry.ns, entry.name)
                reg = table.register(
                    entry.ns, entry.name, entry.value, entry.metadata, owner=entry.owner
                )
        self._track(key, entry)
        return reg

    def _track(self, key: bytes, entry: Decoded) -> None:
        old = self._mine.get(key)
        if old is not None and old.owner is not None:
            self._unindex(key, old.owner)
        if entry.instance == self._id:
            self._mine[key] = entry
            self._orphans.pop(key, None)
            if entry.owner is not None:
                self._by_owner.setdefault(entry.owner, {})[key] = None
        elif old is not None:
            del self._mine[key]

    def _unindex(self, key: bytes, owner: Hashable) -> None:
        keys = self._by_owner.get(owner)
        if keys is not None:
            keys.pop(key, None)
            if not keys:
                del self._by_owner[owner]

    def _apply_delete(self, key: bytes, revision: int, *, ours: bool) -> bool:
        """Apply a delete as of ``revision``; ``ours``: this instance deleted it."""
        if self._closed:
            return False
        current = self._revs.get(key)
        if current is None:
            if ours and revision > self._tombs.get(key, 0):
                self._tombs[key] = revision  # older events for the key are stale now
            return False
        if revision <= current:
            return False
        del self._revs[key]
        if ours:
            self._tombs[key] = revision
        entry = self._mine.pop(key, None)
        if entry is not None:
            if entry.owner is not None:
                self._unindex(key, entry.owner)
            if not ours:
                # Deleted by someone else, or by the lease ending: find out.
                self._orphans[key] = entry
                self._orphan_event.set()
        member = self._members.pop(key, None)
        if member is not None:
            self._table.leave(*member)
        else:
            decoded = decode_key(self._plen, key)
            if decoded is not None:
                self._table.unregister(decoded[1], decoded[2])
        return True

    def _apply_events(self, events: Sequence[Any]) -> None:
        revs, tombs, in_flight = self._revs, self._tombs, self._in_flight
        sync_prefix = self._sync_prefix
        top = 0
        for event in events:
            kv = event.kv
            key = kv.key
            revision = kv.mod_revision
            if revision > top:
                top = revision
            if event.type == "PUT":
                if revision <= revs.get(key, 0) or revision <= tombs.get(key, 0):
                    continue  # our own write (applied already) or older than it
                if key.startswith(sync_prefix):
                    continue
                mine = in_flight.get(key)
                if mine is not None and mine.raw == kv.value:
                    # our own write, echoed before its txn answered: no decoding
                    self._apply_put(key, mine.entry, revision)
                    continue
                entry = self._decode_or_none(kv)
                if entry is not None:
                    self._apply_put(key, entry, revision)
            else:
                self._apply_delete(key, revision, ours=False)
                tomb = tombs.get(key)
                if tomb is not None and revision >= tomb:
                    del tombs[key]
        self._advance(top)

    def _advance(self, revision: int) -> None:
        if revision <= self._applied:
            return
        self._applied = revision
        waiters = self._sync_waiters
        while waiters and waiters[0][0] <= revision:
            heapq.heappop(waiters)[2].set()
        if len(self._tombs) > 4096:
            self._tombs = {k: r for k, r in self._tombs.items() if r > revision}

    def _diff_apply(self, kvs: list[KeyValue], revision: int) -> None:
        """Make the table what etcd held at ``revision`` (initial load, after compaction)."""
        present: set[bytes] = set()
        sync_prefix = self._sync_prefix
        for kv in sorted(kvs, key=attrgetter("create_revision")):  # join order
            key = kv.key
            present.add(key)
            if self._revs.get(key) == kv.mod_revision or key.startswith(sync_prefix):
                continue
            entry = self._decode_or_none(kv)
            if entry is not None:
                self._apply_put(key, entry, kv.mod_revision)
        for key, known in list(self._revs.items()):
            if key not in present and known <= revision:
                self._apply_delete(key, revision, ours=False)
        self._tombs = {k: r for k, r in self._tombs.items() if r > revision}
        self._advance(revision)

    async def _range_all(self) -> tuple[int, list[KeyValue]]:
        """Every key under the prefix, paginated at one revision."""
        start = self._prefix
        end = prefix_end(self._prefix)
        revision = 0
        kvs: list[KeyValue] = []
        while True:
            result: RangeResult = await self._call(
                self._client.range, start, range_end=end, revision=revision, limit=RANGE_PAGE
            )
            if not revision:
                revision = result.header.revision
            kvs.extend(result.kvs)
            if not result.more or not result.kvs:
                return revision, kvs
            start = result.kvs[-1].key + b"\0"

    async def _resync(self) -> int:
        revision, kvs = await self._range_all()
        self._diff_apply(kvs, revision)
        return revision

    # ------------------------------------------------------ background tasks

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load, get a lease, then keep watching, flushing and renewing until closed."""
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    revision = await self._resync()
                    await nursery.start(self._lease_loop)
                    nursery.start_soon(self._watch_loop, revision + 1, name="etcd registry watch")
                    nursery.start_soon(self._flusher, name="etcd registry flusher")
                    nursery.start_soon(self._orphan_checker, name="etcd registry orphans")
                    task_status.started()
        finally:
            self._stopped.set()

    async def _lease_loop(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        started = False
        give_up_at: float | None = None
        delay = 0.1
        while True:
            try:
                async with self._client.lease(self._ttl) as lease:
                    remove = lease.on_lost(self._on_lease_lost)
                    try:
                        if started:
                            await self._reestablish(lease)
                        else:
                            # Proves write permission on the prefix at open.
                            await self._client.put(self._sync_key, "0", lease=lease.id)
                        self._lease = lease
                        self._lease_error = None
                        self._lease_ready.set()
                        if not started:
                            started = True
                            task_status.started()
                        give_up_at = None
                        delay = 0.1
                        await lease.lost.wait()
                    finally:
                        remove()
            except errors.EtcdError as exc:
                if not started:
                    raise
                self._last_error = exc
                now = trio.current_time()
                if give_up_at is None:
                    give_up_at = now + 2 * max(self._ttl, self._timeout)
                if now >= give_up_at:
                    self._give_up(exc)
                    return
                logger.warning(
                    "etcd registry %s: could not re-establish its lease (%s); retrying",
                    self.prefix,
                    exc,
                )
                await trio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _on_lease_lost(self, error: errors.LeaseExpired) -> None:
        if self._closed:
            return
        if self._lease_ready.is_set():
            self._lease_ready = trio.Event()
        self._lease_error = error
        self._last_error = error
        self._lease_losses += 1
        logger.warning(
            "etcd registry %s: lease %x lost (%s); re-registering %d entries",
            self.prefix,
            error.lease_id,
            error.message,
            len(self._mine) + len(self._orphans),
        )
        self._notify_fault(error)

    def _give_up(self, error: BaseException) -> None:
        self._fatal = error
        logger.error(
            "etcd registry %s: its entries could not be re-established (%s); closing it",
            self.prefix,
            error,
        )
        self.close()
        self._notify_fault(error)  # closed now: the facade ends watches and waiters

    async def _reestablish(self, lease: Lease) -> None:
        """Put this instance's entries again under ``lease`` (create_revision == 0)."""
        entries = dict(self._orphans)
        entries.update(self._mine)
        self._orphans.clear()
        items = list(entries.items())
        kept = dropped = 0
        for start in range(0, len(items), MAX_TXN_OPS):
            pending = [(key, entry, 0) for key, entry in items[start : start + MAX_TXN_OPS]]
            for _ in range(10):
                if not pending:
                    break
                raws = [reencode(e.value, e.metadata, e.owner, e.instance) for _, e, _ in pending]
                compares = [
                    compare_create(key, "==", 0) if seen == 0 else compare_mod(key, "==", seen)
                    for key, _, seen in pending
                ]
                success = [
                    op_put(key, raw, lease=lease.id)
                    for (key, _, _), raw in zip(pending, raws, strict=True)
                ]
                failure = [op_range(key) for key, _, _ in pending]
                result = await self._call(self._client.txn, compares, success, failure)
                if result.succeeded:
                    for key, entry, _ in pending:
                        self._apply_put(key, entry, result.revision)
                    kept += len(pending)
                    break
                retry = []
                for (key, entry, _), response in zip(pending, result.responses, strict=True):
                    kvs = _range_kvs(response)
                    if not kvs:
                        retry.append((key, entry, 0))
                        continue
                    holder = self._decode_or_none(kvs[0])
                    if holder is not None and holder.instance == self._id:
                        # Still there (the old lease was not gone after all): rebind it.
                        retry.append((key, entry, kvs[0].mod_revision))
                        continue
                    dropped += 1
                    self._mine.pop(key, None)
                    if entry.owner is not None:
                        self._unindex(key, entry.owner)
                    logger.warning(
                        "etcd registry %s: %r was taken by another instance while the lease"
                        " was lost; dropped",
                        self.prefix,
                        (entry.ns, entry.name),
                    )
                pending = retry
            else:
                raise errors.EtcdError(
                    "re-registering after a lost lease kept losing races", None, None
                )
        logger.info(
            "etcd registry %s: new lease %x, %d entries re-registered, %d dropped",
            self.prefix,
            lease.id,
            kept,
            dropped,
        )

    async def _watch_loop(self, start_revision: int) -> None:
        next_revision = start_revision
        need_resync = False
        delay = 0.05
        while True:
            try:
                if need_resync:
                    next_revision = await self._resync() + 1
                    need_resync = False
                    self._watch_error = None  # the view is current again
                async with self._client.watch(
                    self._prefix, prefix=True, start_revision=next_revision
                ) as watch:
                    async for response in watch:
                        self._apply_events(response.events)
                        next_revision = watch.next_revision
                        self._watch_error = None
                        delay = 0.05
            except errors.CompactedRevision as exc:
                logger.info("etcd registry %s: %s; reading the prefix again", self.prefix, exc)
                need_resync = True
                continue
            except errors.EtcdError as exc:
                # Unavailable (every member tried), or refused (auth, a watch
                # cancelled by etcd): keep trying, degraded, from where it was.
                self._watch_error = exc
                self._last_error = exc
                if isinstance(exc, errors.EtcdUnavailable):
                    self._unavailable = exc
                    logger.info("etcd registry %s: watch down (%s); retrying", self.prefix, exc)
                else:
                    logger.warning(
                        "etcd registry %s: watch failed (%s); retrying", self.prefix, exc
                    )
            await trio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _orphan_checker(self) -> None:
        """Tell own entries deleted by someone (drop) from ones the lease took (re-put)."""
        while True:
            await self._orphan_event.wait()
            self._orphan_event = trio.Event()
            lease = self._lease
            if not self._orphans or lease is None or not self._lease_ready.is_set():
                continue  # a lease being replaced re-puts the orphans itself
            checked = list(self._orphans)
            try:
                # A lease that is alive now was alive when those keys went:
                # they were deleted on purpose. A dead one reports itself.
                await lease.keepalive_once()
            except errors.LeaseExpired:
                continue
            except errors.EtcdError as exc:
                self._last_error = exc
                await trio.sleep(min(1.0, self._ttl / 3))
                self._orphan_event.set()
                continue
            if lease is self._lease:
                for key in checked:
                    self._orphans.pop(key, None)

    # ------------------------------------------------------- events, admin

    def subscribe_faults(self, listener: _FaultListener) -> Callable[[], None]:
        """Call ``listener(error)`` when the view may have missed changes (lease lost)."""
        token = object()
        self._fault_listeners[token] = listener

        def unsubscribe() -> None:
            self._fault_listeners.pop(token, None)

        return unsubscribe

    def _notify_fault(self, error: BaseException) -> None:
        for listener in list(self._fault_listeners.values()):
            try:
                listener(error)
            except Exception:
                logger.exception("etcd registry fault listener %r raised", listener)

    def stats(self) -> RegistryStats:
        """The table's counters, with this instance's etcd writes and conflicts."""
        return dataclasses.replace(
            self._table.stats(),
            backend=self.name,
            writes=self._writes,
            conflicts=self._conflicts,
            closed=self._closed,
        )

    def health_check(self) -> Health:
        """Whether the lease is alive and the watch and etcd answer; details say why not."""
        lease = self._lease
        details: dict[str, Any] = {
            "endpoint": self._client.current_endpoint,
            "prefix": self.prefix,
            "instance": self._id,
            "lease_id": lease.id if lease is not None else 0,
            "lease_ttl": self._ttl,
            "lease_losses": self._lease_losses,
            "watch_revision": self._applied,
            "entries_owned": len(self._mine),
            "last_error": repr(self._last_error) if self._last_error is not None else None,
        }
        problems = []
        if self._closed:
            why = f" ({self._fatal})" if self._fatal is not None else ""
            problems.append("closed" + why)
        else:
            if not self._lease_ready.is_set():
                cause = self._lease_error
                problems.append(
                    "lease lost"
                    + (f" ({cause.message})" if cause is not None else "")
                    + "; re-establishing"
                )
            if self._watch_error is not None:
                problems.append(f"watch down ({self._watch_error})")
            if self._unavailable is not None:
                problems.append(f"etcd unavailable ({self._unavailable})")
        summary = (
            f"{self.count()} registrations, lease {details['lease_id']:x},"
            f" watch at revision {self._applied}, via {details['endpoint']}"
        )
        if self._lease_losses:
            summary += f", lease lost {self._lease_losses} time(s)"
        detail = "; ".join([*problems, summary])
        return Health(ok=not problems, backend=self.name, detail=detail, details=details)

    def close(self) -> None:
        """Refuse further writes and stop the background tasks (the lease is revoked).

        Idempotent, does not block. Reads keep answering from the last state.
        A txn already sent completes; queued registrations get RegistryClosed.
        """
        if self._closed:
            return
        self._closed = True
        queue = self._queue
        while queue:
            item = queue.popleft()
            call = item.call
            assert call is not None
            if call.cancelled:
                continue
            call.sent = True  # answered here, no longer cancellable
            item.result = errors.RegistryClosed()
            _answered(item)
        for _, _, event in self._sync_waiters:
            event.set()
        self._sync_waiters.clear()
        self._lease_ready.set()  # wakes writers waiting for a lease: they see closed
        self._scope.cancel()
        self._table.close()

    async def aclose(self) -> None:
        """:meth:`close`, then wait until the background tasks (and the revoke) are done."""
        self.close()
        await self._stopped.wait()


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
    endpoints: str | Sequence[str],
    *,
    prefix: str = "foundation/",
    ttl: int = 10,
    username: str | None = None,
    password: str | None = None,
    ca_cert: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
    timeout: float = 5.0,  # noqa: ASYNC109 -- the etcd client's per-call deadline
    partitions: int | None = None,
    indexes: Sequence[str] = (),
) -> AsyncIterator[EtcdBackend]:
    """Connect, load the prefix, take a lease; yield the backend; close and revoke at exit.

    ``partitions`` and ``indexes`` shape the local table (as for a local
    registry). Use it as ``Registry(backend)``, or migrate a local registry
    onto it with ``await registry.migrate(backend)``; ``open_registry(
    backend="etcd", ...)`` does both steps for you.

    Raises:
        ConfigError: bad endpoints, prefix, TTL, timeout or TLS files.
        EtcdAuthError: wrong username or password.
        EtcdPermissionDenied: the user may not read and write the prefix.
        EtcdUnavailable: no member answered.
    """
    from ._make import make_backend

    _check_options(prefix, ttl, indexes)
    # The read table first: bad partitions/indexes fail before any connection.
    # Native when built; not "auto", which FOUNDATION_BACKEND=etcd points back here.
    local = "native" if _compat.NATIVE else "python"
    table = make_backend(local, partitions=partitions, indexes=indexes)
    try:
        async with open_etcd_client(
            endpoints,
            username=username,
            password=password,
            ca_cert=ca_cert,
            client_cert=client_cert,
            client_key=client_key,
            timeout=timeout,
        ) as client:
            backend = EtcdBackend(client, table, prefix=prefix, ttl=ttl)
            async with trio.open_nursery() as nursery:
                try:
                    await nursery.start(backend._run)
                    yield backend
                finally:
                    backend.close()
    except BaseExceptionGroup as group:
        reraise_collapsed(group)
