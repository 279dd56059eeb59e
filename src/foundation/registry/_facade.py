"""The registry facade: one public API over any :class:`Backend`.

Reads and ``*_nowait`` writes are the backend's own bound methods, stored on
the instance (``registry.names is backend.names``), so a read is one call
with no Python frame in between (a Python wrapper frame costs ~100 ns, more
than a lookup; see "Why the read path looks as it does" in docs/contract.rst).
``lookup()`` and ``get()``, most of what a registry does, go
one step further when the extension is built: they are C methods of the
registry's base class (``_native.RegistryFront``), which CPython specialises
where it cannot specialise a call through an instance attribute, and which
answer from a native table directly. The facade adds what a table cannot
know about: Trio checkpoints on the async writes, scoped registrations,
waiting, watching and migration.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from .. import errors
from .._util import reraise_collapsed
from ..config import backend_from_env
from . import _compat
from ._backend import AsyncWrites, Backend
from ._events import Listeners
from ._keys import same_value
from ._make import make_backend
from ._pubsub import Subscription, Topics, topic_key
from ._query import Query
from ._telemetry import RegistryTelemetry
from ._types import MISSING, EventKind, Health, Registration, RegistryEvent, RegistryStats

if TYPE_CHECKING:
    from ..etcd import EtcdClient, EtcdSettings

__all__ = ["Registry", "RegistryWatch", "ScopeOwner", "Subscription", "open_registry"]

# The base class that gives Registry its C lookup()/get() (see the module
# docstring); a plain object when the extension is not in use.
if TYPE_CHECKING:
    _ReadFront = object
elif _compat.NATIVE:
    from ._native import RegistryFront as _ReadFront
    from ._native import install_front as _install_front
else:
    _ReadFront = object

_WAKE_KINDS = (EventKind.REGISTERED, EventKind.UPDATED)

logger = logging.getLogger("foundation.registry")


def _fresh(error: BaseException) -> BaseException:
    """A copy of ``error`` to raise once more (each raise gets its own traceback)."""
    return copy.copy(error).with_traceback(None)


class _TrioWaker:
    """Runs a callback in the Trio thread that created it, from any thread.

    Backends call listeners in the writing thread, which may be a worker
    thread of ``trio.to_thread``; Trio objects may only be touched from the
    thread running Trio, so foreign calls are posted with ``run_sync_soon``.
    """

    __slots__ = ("_thread", "_token")

    def __init__(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.get_ident()

    def call(self, fn: Callable[..., None], *args: Any) -> None:
        if threading.get_ident() == self._thread:
            fn(*args)
            return
        try:
            self._token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            # The Trio run that was waiting has ended; nobody is left to wake.
            return


class ScopeOwner:
    """The fresh owner token of one ``registered()`` block.

    Hashable by identity, so it can never collide with a user's owner value.
    """

    __slots__ = ("_id",)
    _ids = itertools.count(1)

    def __init__(self) -> None:
        self._id = next(self._ids)

    def __repr__(self) -> str:
        return f"<ScopeOwner #{self._id}>"


class RegistryWatch:
    """An async iterator over the :class:`RegistryEvent` s of one ``watch()``.

    Events are buffered (at most ``max_buffer``) so a write never waits for a
    slow consumer; a consumer that falls further behind gets the buffered
    events and then :class:`~foundation.errors.WatchOverflow`, because the
    dropped events make its view stale. Likewise, when an asynchronous
    backend reports a fault that ends its view, the consumer gets the
    buffered events and then that error; open a new watch with
    ``initial=True`` to re-sync. (On etcd a lost lease is not such a fault:
    the backend puts its entries back under a new lease, and its watchers see
    an unregistration only for an entry it could not put back; the loss shows
    in ``health_check()`` and telemetry.)
    """

    def __init__(self, ns: Hashable | None, max_buffer: int, *, filtered: bool) -> None:
        self._ns = ns
        self._filtered = filtered
        self._max_buffer = max_buffer
        self._buffer: deque[RegistryEvent] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._overflowed = False
        self._ended = False
        self._error: BaseException | None = None
        self._waker = _TrioWaker()

    # -- producer side (any thread; hops to the Trio thread) ------------------
    def _on_event(self, event: RegistryEvent) -> None:
        if self._filtered and event.registration.namespace != self._ns:
            return
        self._waker.call(self._push, event)

    def _push(self, event: RegistryEvent) -> None:
        if self._overflowed or self._ended or self._error is not None:
            return
        if len(self._buffer) >= self._max_buffer:
            self._overflowed = True
        else:
            self._buffer.append(event)
        self._lot.unpark_all()

    def _end(self) -> None:
        self._ended = True
        self._lot.unpark_all()

    def _fail(self, error: BaseException) -> None:
        if self._error is None and not self._ended:
            self._error = error
            self._lot.unpark_all()

    # -- consumer side --------------------------------------------------------
    def __aiter__(self) -> RegistryWatch:
        return self

    async def __anext__(self) -> RegistryEvent:
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while not self._buffer:
            if self._overflowed:
                raise errors.WatchOverflow(self._max_buffer)
            if self._error is not None:
                raise _fresh(self._error)
            if self._ended:
                raise StopAsyncIteration
            parked = True
            await self._lot.park()
        if not parked:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return self._buffer.popleft()


class _Waiter:
    """One ``wait_for`` call: woken by the matching registration or by close."""

    __slots__ = ("_event", "_waker", "closed", "key", "registration")

    def __init__(self, ns: Hashable, name: Hashable) -> None:
        self.key = (ns, name)
        self.registration: Registration | None = None
        self.closed = False
        self._event = trio.Event()
        self._waker = _TrioWaker()

    def _on_event(self, event: RegistryEvent) -> None:
        reg = event.registration
        if event.kind in _WAKE_KINDS and (reg.namespace, reg.name) == self.key:
            self._waker.call(self._wake, reg)

    def _wake(self, reg: Registration) -> None:
        if self.registration is None:
            self.registration = reg
        self._event.set()

    def _end(self) -> None:
        self.closed = True
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()


class Registry(_ReadFront):
    """A process/service registry keyed by ``(namespace, name)``.

    Args:
        backend: ``"auto"`` (native when compiled, else python; honours
            :envvar:`FOUNDATION_BACKEND`), ``"native"``, ``"python"``, or a
            :class:`Backend` instance.
        partitions: number of shards; default ``os.cpu_count()``.
        indexes: metadata fields to index, so equality ``select`` on them
            costs O(matches).

    Reads are synchronous and never block; they are the backend's own methods
    (see the class attributes below). Async writes always checkpoint: a write
    cancelled before it runs writes nothing, and a write that ran never
    reports ``Cancelled``. ``*_nowait`` writes are synchronous, for hot
    loops; on an asynchronous backend (etcd) they raise
    :class:`~foundation.errors.BackendIsAsync`.

    Example::

        registry = Registry()
        await registry.register("services", "db", conn, {"role": "primary"})
        registry.lookup("services", "db")   # -> conn
    """

    if TYPE_CHECKING:
        # What type checkers see of the methods _bind() stores on each
        # instance: the backend's own bound methods (``registry.lookup is
        # backend.lookup``), so a read runs no Python frame of the facade.
        # Stubs only: at run time the class defines none of them. The rules
        # are the Backend contract (_backend.py).

        # reads
        def lookup(self, ns: Hashable, name: Hashable) -> Any: ...
        def get(self, ns: Hashable, name: Hashable, default: Any = None) -> Any: ...
        def lookup_with_metadata(self, ns: Hashable, name: Hashable) -> Registration: ...
        def metadata(self, ns: Hashable, name: Hashable) -> Mapping[Any, Any]: ...
        def names(self, ns: Hashable) -> list[Any]: ...
        def registrations(self, ns: Hashable | None = None) -> list[Registration]: ...
        def count(self, ns: Hashable | None = None) -> int: ...
        def members(self, ns: Hashable, group: Hashable) -> list[Registration]: ...
        def member_count(self, ns: Hashable, group: Hashable) -> int: ...
        def owned(self, owner: Hashable | None) -> list[Registration]: ...

        # synchronous writes (BackendIsAsync on an async backend)
        def register_nowait(
            self,
            ns: Hashable,
            name: Hashable,
            value: Any,
            metadata: Mapping[Any, Any] | None = None,
            *,
            owner: Hashable | None = None,
        ) -> Registration: ...
        def unregister_nowait(self, ns: Hashable, name: Hashable) -> bool: ...
        def update_metadata_nowait(
            self, ns: Hashable, name: Hashable, metadata: Mapping[Any, Any] | None
        ) -> Registration: ...
        def update_value_nowait(
            self, ns: Hashable, name: Hashable, value: Any, expect: Any = MISSING
        ) -> Registration: ...
        def unregister_owner_nowait(self, owner: Hashable) -> int: ...
        def join_nowait(
            self,
            ns: Hashable,
            group: Hashable,
            value: Any,
            metadata: Mapping[Any, Any] | None = None,
            *,
            owner: Hashable | None = None,
        ) -> Registration: ...
        def leave_nowait(self, ns: Hashable, group: Hashable, value: Any) -> bool: ...

    def __init__(
        self,
        backend: str | Backend = "auto",
        *,
        partitions: int | None = None,
        indexes: Sequence[str] = (),
    ) -> None:
        if isinstance(indexes, str):
            raise errors.ConfigError(
                f"indexes={indexes!r} is a str; pass a sequence of field names,"
                f" e.g. indexes=({indexes!r},)"
            )
        self._indexes = tuple(indexes)
        self._backend = make_backend(backend, partitions=partitions, indexes=self._indexes)
        # Watches and waiters hang off one fan-out that is subscribed to the
        # backend only while someone listens, so writes without listeners
        # build no events at all.
        self._fanout = Listeners()
        # consumer -> its unsubscribe from the fan-out
        self._consumers: dict[RegistryWatch | _Waiter, Callable[[], None]] = {}
        self._unsubscribe_backend: Callable[[], None] | None = None
        self._unsubscribe_faults: Callable[[], None] | None = None
        # Set while migrate() finishes its copy into an async backend: writes wait.
        self._gate: trio.Event | None = None
        # pub/sub: this instance's subscriptions
        self._topics = Topics()
        self._bind()
        # Telemetry listens to the events only while a handler is attached.
        self._telemetry = RegistryTelemetry(self._listen, self._backend_name)

    def _bind(self) -> None:
        b = self._backend
        if _ReadFront is not object:
            # The class's C lookup()/get() answer (from a native table
            # directly, else through the backend's own methods). No instance
            # may ever hold attributes of those names: one such instance
            # anywhere keeps CPython from specialising the call on all.
            self._bind_reads(b.lookup, b.get)  # type: ignore[attr-defined]
            reads: tuple[str, ...] = _BOUND_READS[2:]
        else:
            reads = _BOUND_READS
        # The other reads, and the *_nowait writes (an async backend's
        # synchronous writes raise BackendIsAsync themselves): the backend's
        # own methods.
        for name in reads:
            setattr(self, name, getattr(b, name))
        for name in _NOWAIT_WRITES:
            setattr(self, f"{name}_nowait", getattr(b, name))
        if self._unsubscribe_faults is not None:
            self._unsubscribe_faults()
            self._unsubscribe_faults = None
        if b.is_async:
            if not isinstance(b, AsyncWrites):
                raise errors.ConfigError(
                    f"backend {b!r} says is_async=True but lacks the async writes"
                    " (aregister, ...) of foundation.registry._backend.AsyncWrites"
                )
            self._awrites: AsyncWrites | None = b
            self._unsubscribe_faults = b.subscribe_faults(self._on_fault)
            # what other instances publish reaches this instance's subscribers
            b.subscribe_messages(self._on_remote_message)
        else:
            self._awrites = None

    def _backend_name(self) -> str:
        return self._backend.name

    def _on_remote_message(self, ns: Any, topic: Any, message: Any) -> None:
        """A message another instance published (the etcd watch hands it over)."""
        self._topics.deliver(ns, topic, message)

    def _on_fault(self, error: BaseException) -> None:
        """The backend's view may have gone stale: every watch raises ``error``.

        If the backend closed itself over it, waiters wake with
        RegistryClosed, and watches and subscriptions end.
        """
        closed = self._backend.closed
        if closed:
            self._topics.end_all()
        for consumer in list(self._consumers):
            if isinstance(consumer, RegistryWatch):
                consumer._waker.call(consumer._fail, error)
            if closed:
                consumer._waker.call(consumer._end)

    # -- introspection ------------------------------------------------------
    @property
    def backend(self) -> Backend:
        """The backend in use now (it changes on :meth:`migrate`)."""
        return self._backend

    @property
    def etcd_client(self) -> EtcdClient | None:
        """The etcd client this registry writes through; None on a local backend.

        With ``open_registry(backend="etcd", client=...)`` it is that shared
        client. The distributed tier uses it to talk to the same cluster.
        """
        from ..etcd import EtcdClient

        client = getattr(self._backend, "client", None)
        return client if isinstance(client, EtcdClient) else None

    @property
    def backend_name(self) -> str:
        """``"native"``, ``"python"`` (or ``"etcd"``)."""
        return self._backend.name

    @property
    def partitions(self) -> int:
        return self._backend.partitions

    @property
    def closed(self) -> bool:
        return self._backend.closed

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self)} registrations"
        return f"<Registry backend={self.backend_name!r} partitions={self.partitions} {state}>"

    def __len__(self) -> int:
        return len(self._backend)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple) or len(key) != 2:
            raise errors.InvalidKey(key, "membership tests take a (namespace, name) tuple")
        return self._backend.contains(key[0], key[1])

    def select(
        self,
        ns: Hashable | None,
        where: Mapping[str, Any] | None = None,
        predicate: Callable[[Registration], bool] | None = None,
    ) -> list[Registration]:
        """Registrations of ``ns`` (all namespaces for None) matching ``where`` and ``predicate``.

        ``where`` maps a metadata field (dotted for nested mappings) to a value
        (equality) or ``(op, operand)`` with op in ``eq neq lt lte gt gte in
        not_in``. A missing field or an incomparable value never matches.
        The matches come in registration order.

        Raises:
            InvalidQuery: a malformed criterion (unknown operator, ...).
        """
        return self._backend.select(ns, Query(where, predicate))

    def count_select(
        self,
        ns: Hashable | None,
        where: Mapping[str, Any] | None = None,
        predicate: Callable[[Registration], bool] | None = None,
    ) -> int:
        """How many registrations :meth:`select` would return, without building them.

        Same criteria as :meth:`select` (Elixir's ``Registry.count_select``).

        Raises:
            InvalidQuery: a malformed criterion.
        """
        return self._backend.count_select(ns, Query(where, predicate))

    def dispatch(self, ns: Hashable, group: Hashable, fn: Callable[..., object], *args: Any) -> int:
        """Call ``fn(registration, *args)`` for each member of group ``(ns, group)``.

        Members as this registry sees them, in join order (Elixir's
        ``Registry.dispatch``). Synchronous: ``fn`` runs in the caller.
        An exception raised by ``fn`` propagates once every member was
        called: itself if it was the only one, else an ``ExceptionGroup`` of
        them all. Returns how many members were called.

        Raises:
            ConfigError: ``fn`` is not callable.
            InvalidKey: the group key cannot be hashed or compared.
        """
        if not callable(fn):
            raise errors.ConfigError(
                f"dispatch() needs a callable fn(registration, *args), not {type(fn).__name__}"
            )
        members = self._backend.members(ns, group)
        failures: list[Exception] = []
        for reg in members:
            try:
                fn(reg, *args)
            except Exception as exc:
                failures.append(exc)
        if len(failures) == 1:
            raise failures[0]
        if failures:
            raise ExceptionGroup(
                f"dispatch() to group {group!r} of namespace {ns!r}:"
                f" {len(failures)} of {len(members)} calls raised",
                failures,
            )
        return len(members)

    def stats(self) -> RegistryStats:
        """Counters of the backend in use (lookups, writes, conflicts, sizes),
        and the pub/sub messages full subscriber buffers dropped."""
        stats = self._backend.stats()
        dropped = self._topics.dropped
        if dropped:
            stats = dataclasses.replace(stats, dropped_messages=stats.dropped_messages + dropped)
        return stats

    def health_check(self) -> Health:
        """Whether the backend can serve reads and writes now."""
        return self._backend.health_check()

    # -- async writes ---------------------------------------------------------
    async def register(
        self,
        ns: Hashable,
        name: Hashable,
        value: Any,
        metadata: Mapping[Any, Any] | None = None,
        *,
        owner: Hashable | None = None,
    ) -> Registration:
        """Register ``value`` under ``(ns, name)``; see :meth:`register_nowait`.

        Checkpoints. Raises AlreadyRegistered, InvalidKey, InvalidMetadata,
        RegistryClosed; on etcd also InvalidValue (not JSON) and EtcdError.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._gate is not None:
            await self._gate.wait()  # a migration is switching backends
        aw = self._awrites
        if aw is not None:
            return await aw.aregister(ns, name, value, metadata, owner=owner)
        reg = self._backend.register(ns, name, value, metadata, owner=owner)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return reg

    async def unregister(self, ns: Hashable, name: Hashable) -> bool:
        """Remove ``(ns, name)``; False if it was absent. Checkpoints."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._gate is not None:
            await self._gate.wait()  # a migration is switching backends
        aw = self._awrites
        if aw is not None:
            return await aw.aunregister(ns, name)
        removed = self._backend.unregister(ns, name)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return removed

    async def update_metadata(
        self, ns: Hashable, name: Hashable, metadata: Mapping[Any, Any] | None
    ) -> Registration:
        """Replace the metadata of ``(ns, name)`` (NotRegistered if absent). Checkpoints."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._gate is not None:
            await self._gate.wait()  # a migration is switching backends
        aw = self._awrites
        if aw is not None:
            return await aw.aupdate_metadata(ns, name, metadata)
        reg = self._backend.update_metadata(ns, name, metadata)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return reg

    async def update_value(
        self, ns: Hashable, name: Hashable, value: Any, *, expect: Any = MISSING
    ) -> Registration:
        """Replace the value of ``(ns, name)``, keeping its owner and metadata.

        With ``expect=`` (anything but :data:`~foundation.registry.MISSING`;
        ``None`` is a value too) it is a compare-and-set: the value is
        replaced only if the current one is ``expect`` or equals it, else
        :class:`~foundation.errors.ValueMismatch` (carrying the actual
        value) and nothing is written. On etcd, etcd decides (one txn on the
        key's revision); the entry keeps its lease and owner. One
        ``updated`` event (reason ``"replaced"``). Checkpoints.

        Raises:
            NotRegistered, ValueMismatch, InvalidKey, RegistryClosed; on etcd
            also InvalidValue (not JSON) and EtcdError.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._gate is not None:
            await self._gate.wait()  # a migration is switching backends
        aw = self._awrites
        if aw is not None:
            return await aw.aupdate_value(ns, name, value, expect)
        reg = self._backend.update_value(ns, name, value, expect)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return reg

    async def unregister_select(
        self,
        ns: Hashable | None,
        where: Mapping[str, Any] | None = None,
        predicate: Callable[[Registration], bool] | None = None,
    ) -> int:
        """Remove the names :meth:`select` matches (Elixir's ``unregister_match``); how many.

        One ``unregistered`` event each (reason ``"explicit"``). An entry
        that changed after it matched (another writer) stays. On etcd each
        match is deleted only if unchanged there, at most 128 per txn.
        Checkpoints.

        Raises:
            InvalidQuery: a malformed criterion (nothing removed).
            RegistryClosed: after :meth:`close`.
        """
        query = Query(where, predicate)
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._gate is not None:
            await self._gate.wait()  # a migration is switching backends
        aw = self._awrites
        if aw is not None:
            return await aw.aunregister_select(ns, query)
        removed = self._backend.unregister_select(ns, query)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return removed

    async def unregister_owner(self, owner: Hashable) -> int:
        """Remove every registration and membership of ``owner``; how many. Checkpoints."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._gate is not None:
            await self._gate.wait()  # a migration is switching backends
        aw = self._awrites
        if aw is not None:
            return await aw.aunregister_owner(owner)
        removed = self._backend.unregister_owner(owner)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return removed

    async def join(
        self,
        ns: Hashable,
        group: Hashable,
        value: Any,
        metadata: Mapping[Any, Any] | None = None,
        *,
        owner: Hashable | None = None,
    ) -> Registration:
        """Add ``value`` to group ``(ns, group)`` (again: update metadata). Checkpoints."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._gate is not None:
            await self._gate.wait()  # a migration is switching backends
        aw = self._awrites
        if aw is not None:
            return await aw.ajoin(ns, group, value, metadata, owner=owner)
        reg = self._backend.join(ns, group, value, metadata, owner=owner)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return reg

    async def leave(self, ns: Hashable, group: Hashable, value: Any) -> bool:
        """Remove ``value`` from group ``(ns, group)``; False if not a member. Checkpoints."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._gate is not None:
            await self._gate.wait()  # a migration is switching backends
        aw = self._awrites
        if aw is not None:
            return await aw.aleave(ns, group, value)
        left = self._backend.leave(ns, group, value)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return left

    async def register_many(
        self, items: Iterable[Sequence[Any]], *, owner: Hashable | None = None
    ) -> list[Registration | errors.FoundationError]:
        """Register many ``(ns, name, value[, metadata])`` items; one result per item.

        Each result is the :class:`Registration` or the
        :class:`~foundation.errors.RegistryError` that item met (on etcd also
        an :class:`~foundation.errors.EtcdError` when its txn could not be
        sent); one item's failure does not stop the others. Checkpoints once.
        On etcd the items are written in batched txns.

        Raises:
            RegistryClosed: the registry is closed (nothing is written).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._backend.closed:
            raise errors.RegistryClosed()
        if self._gate is not None:
            await self._gate.wait()  # a migration is switching backends
        aw = self._awrites
        if aw is not None:
            return await aw.aregister_many(items, owner=owner)
        register = self._backend.register
        results: list[Registration | errors.FoundationError] = []
        for item in items:
            if not isinstance(item, Sequence) or len(item) not in (3, 4):
                shape = "items are (ns, name, value) or (ns, name, value, metadata)"
                results.append(errors.InvalidKey(item, shape))
                continue
            metadata = item[3] if len(item) == 4 else None
            try:
                results.append(register(item[0], item[1], item[2], metadata, owner=owner))
            except errors.RegistryError as exc:
                results.append(exc)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return results

    async def sync(self) -> None:
        """Wait until this registry's view has caught up; local backends are always current.

        On etcd: returns once every write made to the registry's prefix before
        the call (by any instance) is in the local view. No timeout: wrap it
        in ``trio.fail_after``.
        """
        aw = self._awrites
        if aw is not None:
            await aw.sync()
            return
        await trio.lowlevel.checkpoint()

    # -- scoped, waiting and watching -------------------------------------
    @asynccontextmanager
    async def registered(
        self,
        ns: Hashable,
        name: Hashable,
        value: Any,
        metadata: Mapping[Any, Any] | None = None,
    ) -> AsyncIterator[Registration]:
        """Hold a registration for the duration of an ``async with`` block.

        The entry is owned by a fresh :class:`ScopeOwner` (``reg.owner``; on
        etcd a portable token ``("foundation.scope", instance, n)``); leaving
        the block for any reason (normal exit, error, cancellation) removes
        everything registered with that owner. Entering checkpoints; leaving
        does not block on a local backend, and on etcd waits (shielded,
        bounded by the client's timeout) for the delete. Errors from the block
        propagate as themselves.
        """
        aw = self._awrites
        token: Hashable = aw.scope_owner() if aw is not None else ScopeOwner()
        reg = await self.register(ns, name, value, metadata, owner=token)
        try:
            yield reg
        except BaseException:
            await self._release_owner(token, quiet=True)
            raise
        await self._release_owner(token, quiet=False)

    async def _release_owner(self, token: Hashable, *, quiet: bool) -> None:
        aw = self._awrites
        if aw is None:
            # Synchronous on purpose: it must run even inside a cancelled scope.
            self._backend.unregister_owner(token)
            return
        with trio.CancelScope(shield=True):
            try:
                await aw.aunregister_owner(token)
            except errors.FoundationError:
                if not quiet:
                    raise
                # The block's own error is what the caller must see; this one
                # would only hide it.
                logger.exception("could not remove the registrations of %r", token)

    async def wait_for(self, ns: Hashable, name: Hashable) -> Registration:
        """Return the registration of ``(ns, name)``, waiting until there is one.

        Returns at once (after a checkpoint) when the key is registered. Has
        no timeout: wrap it in ``trio.fail_after``.

        Raises:
            RegistryClosed: the registry is closed, or closes while waiting.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._backend.closed:
            raise errors.RegistryClosed()
        waiter = _Waiter(ns, name)
        # Subscribe before looking, so a registration made by another thread
        # between the look and the wait is not missed.
        self._add_consumer(waiter)
        try:
            try:
                reg: Registration | None = self._backend.lookup_with_metadata(ns, name)
            except errors.NotRegistered:
                reg = None
            if reg is not None:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return reg
            await waiter.wait()
            if waiter.registration is not None:
                return waiter.registration
            raise errors.RegistryClosed()
        finally:
            self._remove_consumer(waiter)

    @asynccontextmanager
    async def watch(
        self,
        ns: Hashable | None = None,
        *,
        initial: bool = False,
        max_buffer: int = 1000,
    ) -> AsyncIterator[RegistryWatch]:
        """Receive :class:`RegistryEvent` s for ``ns`` (all namespaces for None).

        With ``initial=True`` the current registrations come first, as
        ``registered`` events. Entering and leaving do not block; iterating
        blocks until an event arrives. Iteration ends when the registry
        closes; a consumer more than ``max_buffer`` events behind gets
        :class:`~foundation.errors.WatchOverflow`.
        """
        if isinstance(max_buffer, bool) or not isinstance(max_buffer, int) or max_buffer < 1:
            raise errors.ConfigError(f"max_buffer={max_buffer!r}: use an int >= 1")
        watch = RegistryWatch(ns, max_buffer, filtered=ns is not None)
        self._add_consumer(watch)
        try:
            if initial:
                for reg in self._backend.registrations(ns):
                    watch._push(RegistryEvent(EventKind.REGISTERED, reg))
            if self._backend.closed:
                watch._end()
            yield watch
        finally:
            self._remove_consumer(watch)

    # -- pub/sub -------------------------------------------------------------
    @asynccontextmanager
    async def subscribe(
        self, ns: Hashable, topic: Hashable, *, max_buffer: int = 100
    ) -> AsyncIterator[Subscription]:
        """Receive the messages published to ``(ns, topic)`` while the block runs.

        An async iterator of messages: each once, as published (after a JSON
        round trip on etcd), in publish order per publisher. Subscriptions
        are this registry instance's own: they are not group members and
        write nothing (on etcd neither). A subscriber that falls more than
        ``max_buffer`` messages behind misses the newer ones (counted in
        ``sub.dropped`` and ``stats().dropped_messages``): a publisher never
        waits for it. There is no replay: a message published before the
        block was entered is not received. Iteration ends when the registry
        closes. Entering and leaving do not block.

        Raises:
            InvalidKey: ``ns`` or ``topic`` is not hashable (on etcd: not portable).
            ConfigError: ``max_buffer`` is not an int >= 1.
            RegistryClosed: the registry is closed.
        """
        topic_key(ns, topic)
        aw = self._awrites
        if aw is not None:
            aw.prepare_message(ns, topic, None)  # a portable key (and open)
        if self._backend.closed:
            raise errors.RegistryClosed()
        sub = self._topics.open(ns, topic, max_buffer)
        try:
            yield sub
        finally:
            self._topics.close(sub)

    async def publish(self, ns: Hashable, topic: Hashable, message: Any) -> int:
        """Hand ``message`` to every subscriber of ``(ns, topic)``; how many local ones took it.

        Never waits for a subscriber: a full buffer drops the message for
        that subscriber only. On etcd the message (JSON) is also written
        under the registry's prefix, bound to this instance's lease, and
        every other instance's watch hands it to its own subscribers (the
        return value counts only this instance's). That is an etcd write per
        message: control-plane rates (hundreds per second), not a data bus.
        Checkpoints.

        Raises:
            InvalidKey: ``ns`` or ``topic`` is not hashable (on etcd: not portable).
            InvalidValue: on etcd, ``message`` is not JSON.
            RegistryClosed: the registry is closed.
            EtcdError: on etcd, the message could not be written (then no
                local subscriber got it either).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        topic_key(ns, topic)
        aw = self._awrites
        if aw is not None:
            received, payload = aw.prepare_message(ns, topic, message)
            await aw.publish_remote(payload)
            return self._topics.deliver(ns, topic, received)
        if self._backend.closed:
            raise errors.RegistryClosed()
        taken = self._topics.deliver(ns, topic, message)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return taken

    def publish_nowait(self, ns: Hashable, topic: Hashable, message: Any) -> int:
        """:meth:`publish`, synchronously: local backends only.

        Raises:
            BackendIsAsync: on etcd (use ``await publish(...)``).
            InvalidKey, RegistryClosed: as :meth:`publish`.
        """
        if self._awrites is not None:
            raise errors.BackendIsAsync("publish", self._backend.name)
        topic_key(ns, topic)
        if self._backend.closed:
            raise errors.RegistryClosed()
        return self._topics.deliver(ns, topic, message)

    # -- listeners -------------------------------------------------------------
    def _listen(self, listener: Callable[[RegistryEvent], None]) -> Callable[[], None]:
        """Receive the backend's events until the returned stop() is called;
        the backend is subscribed only while someone listens."""
        unsubscribe = self._fanout.add(listener)
        if self._unsubscribe_backend is None:
            self._unsubscribe_backend = self._backend.subscribe(self._fanout.notify)
        stopped = False

        def stop() -> None:
            nonlocal stopped
            if stopped:
                return
            stopped = True
            unsubscribe()
            if not self._fanout and self._unsubscribe_backend is not None:
                self._unsubscribe_backend()
                self._unsubscribe_backend = None

        return stop

    def _add_consumer(self, consumer: RegistryWatch | _Waiter) -> None:
        self._consumers[consumer] = self._listen(consumer._on_event)

    def _remove_consumer(self, consumer: RegistryWatch | _Waiter) -> None:
        stop = self._consumers.pop(consumer, None)
        if stop is not None:
            stop()

    # -- migration and closing -----------------------------------------------
    async def migrate(self, other: str | Backend) -> None:
        """Move every registration and membership to another backend, then switch.

        ``other`` is ``"native"``, ``"python"`` or an empty Backend instance
        (an etcd one comes from ``open_etcd_backend(...)``). The switch
        happens without a checkpoint after the last copy step, so no write
        from this Trio run is lost: into a local backend the copy is
        synchronous; into etcd it is awaited, and meanwhile the registry's
        async writes wait for the switch (``*_nowait`` writes raise
        BackendIsAsync) while reads keep answering from the old backend;
        writes that reach the old backend anyway (another thread) are copied
        again until none is left (after one round the old backend is
        closed to writes so this ends). Watches keep working. On failure the
        registry stays on its current backend, unchanged (what was copied
        into an etcd target is deleted again).

        Raises:
            ConfigError: ``other`` is not empty.
            BackendUnavailable: ``other`` cannot be built here.
            InvalidKey, InvalidValue, InvalidMetadata: into etcd, an entry
                that is not portable or not JSON (nothing is copied).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._backend.closed:
            raise errors.RegistryClosed()
        old = self._backend
        new = make_backend(other, partitions=old.partitions, indexes=self._indexes)
        if new is old:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        if new.closed:
            raise errors.RegistryClosed("migrate() target backend is closed; open a new one")
        if len(new) or new.memberships():
            raise errors.ConfigError("migrate() needs an empty target backend")
        if new.is_async:
            if not isinstance(new, AsyncWrites):
                raise errors.ConfigError(f"backend {new!r} is_async but has no async writes")
            await self._copy_async(old, new, new)
        else:
            try:
                for reg in old.registrations():
                    new.register(reg.namespace, reg.name, reg.value, reg.metadata, owner=reg.owner)
                for member in old.memberships():
                    new.join(
                        member.namespace,
                        member.name,
                        member.value,
                        member.metadata,
                        owner=member.owner,
                    )
            except BaseException:
                if other is not new:  # we built it, so we dispose of it
                    new.close()
                raise
        # No checkpoint from here to the switch.
        if self._unsubscribe_backend is not None:
            self._unsubscribe_backend()
            self._unsubscribe_backend = new.subscribe(self._fanout.notify)
        self._backend = new
        self._bind()
        old.close()
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def _copy_async(self, old: Backend, new: Backend, writes: AsyncWrites) -> None:
        """Copy ``old`` into the async backend ``new``, then catch up until quiet."""
        dirty: list[tuple[Any, ...]] = []

        def record(event: RegistryEvent) -> None:
            reg = event.registration
            if event.kind in (EventKind.REGISTERED, EventKind.UNREGISTERED, EventKind.UPDATED):
                dirty.append(("name", reg.namespace, reg.name))
            if event.kind in (EventKind.JOINED, EventKind.LEFT, EventKind.UPDATED):
                dirty.append(("member", reg.namespace, reg.name, reg.value))

        limiter = trio.CapacityLimiter(64)

        async def reconcile(item: tuple[Any, ...]) -> None:
            async with limiter:
                if item[0] == "name":
                    await _reconcile_name(old, new, writes, item[1], item[2])
                else:
                    await _reconcile_member(old, new, writes, item[1], item[2], item[3])

        async def catch_up() -> None:
            todo = {repr(item): item for item in dirty}  # once per key (values may not hash)
            dirty.clear()
            # keys are independent: reconcile them at once (the backend batches)
            try:
                async with trio.open_nursery() as nursery:
                    for item in todo.values():
                        nursery.start_soon(reconcile, item)
            except BaseExceptionGroup as group:
                reraise_collapsed(group)

        unsubscribe = old.subscribe(record)
        gate = trio.Event()
        try:
            try:
                # Writes wait until the switch (as a synchronous copy would
                # make them): async ones at the gate, *_nowait ones would block.
                self._gate = gate
                for name in _NOWAIT_WRITES:
                    setattr(self, f"{name}_nowait", _would_block(name, new.name))
                await writes.aload(old.registrations(), old.memberships())
                # Writes that still reached the old backend (a *_nowait bound
                # earlier, another thread) are copied again until none is left;
                # if they keep coming, the old backend stops taking writes
                # (closed, its reads still answer) so the last round ends.
                rounds = 0
                while dirty:
                    rounds += 1
                    if rounds > 1:
                        old.close()
                    await catch_up()
            finally:
                unsubscribe()
        except BaseException:
            with trio.CancelScope(shield=True):
                try:
                    await writes.adiscard()
                except errors.FoundationError:
                    logger.exception("migrate(): could not remove what was copied to %r", new)
            self._bind()
            raise
        finally:
            self._gate = None
            gate.set()

    def close(self) -> None:
        """Close the registry: writes raise RegistryClosed, waiters wake, watches end.

        Reads keep answering from the last state. Idempotent; does not block
        (on etcd the lease is revoked in the background: ``aclose()`` waits).
        """
        self._backend.close()
        self._telemetry.close()
        self._topics.end_all()
        for consumer in list(self._consumers):
            consumer._waker.call(consumer._end)

    async def aclose(self) -> None:
        """:meth:`close`, as a checkpoint; on etcd, waits until the lease is revoked."""
        self.close()
        aw = self._awrites
        if aw is not None:
            await aw.aclose()
        else:
            await trio.lowlevel.checkpoint()


if not TYPE_CHECKING and _ReadFront is not object:
    _install_front(Registry)


#: Reads the facade takes straight from its backend (same names); ``lookup``
#: and ``get`` first: with the extension they are the class's C methods.
_BOUND_READS = (
    "lookup",
    "get",
    "lookup_with_metadata",
    "metadata",
    "names",
    "registrations",
    "count",
    "members",
    "member_count",
    "owned",
)
#: Writes whose backend method is the facade's ``<name>_nowait``.
_NOWAIT_WRITES = (
    "register",
    "unregister",
    "update_metadata",
    "update_value",
    "unregister_owner",
    "join",
    "leave",
)


def _would_block(operation: str, backend: str) -> Callable[..., Any]:
    def nowait(*args: Any, **kwargs: Any) -> Any:
        raise errors.BackendIsAsync(operation, backend)

    nowait.__name__ = f"{operation}_nowait"
    return nowait


async def _reconcile_name(
    old: Backend, new: Backend, writes: AsyncWrites, ns: Hashable, name: Hashable
) -> None:
    """Make ``(ns, name)`` in ``new`` what it is in ``old`` (migrate's catch-up)."""
    try:
        want: Registration | None = old.lookup_with_metadata(ns, name)
    except errors.NotRegistered:
        want = None
    try:
        have: Registration | None = new.lookup_with_metadata(ns, name)
    except errors.NotRegistered:
        have = None
    if want is None:
        if have is not None:
            await writes.aunregister(ns, name)
        return
    if have is not None:
        if have.value == want.value and have.owner == want.owner:
            await writes.aupdate_metadata(ns, name, want.metadata)
            return
        await writes.aunregister(ns, name)
    await writes.aregister(ns, name, want.value, want.metadata, owner=want.owner)


async def _reconcile_member(
    old: Backend, new: Backend, writes: AsyncWrites, ns: Hashable, group: Hashable, value: Any
) -> None:
    """Make member ``value`` of ``(ns, group)`` in ``new`` what it is in ``old``."""
    want = next((m for m in old.members(ns, group) if same_value(m.value, value)), None)
    if want is None:
        await writes.aleave(ns, group, value)
    else:
        await writes.ajoin(ns, group, want.value, want.metadata, owner=want.owner)


@asynccontextmanager
async def open_registry(
    backend: str | Backend = "auto",
    *,
    partitions: int | None = None,
    indexes: Sequence[str] = (),
    endpoints: str | Sequence[str] | None = None,
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
) -> AsyncIterator[Registry]:
    """Open a :class:`Registry` for the duration of an ``async with`` block.

    Local backends (``auto``, ``native``, ``python``) open at once. With
    ``backend="etcd"`` (or ``auto`` with :envvar:`FOUNDATION_BACKEND` ``=etcd``)
    the registry lives under ``prefix`` and holds one lease of ``ttl``
    seconds. Where etcd is, one form only: ``client=`` (an open
    :class:`~foundation.etcd.EtcdClient`, shared with the rest of the
    process; the registry leaves it open), ``settings=`` (an
    :class:`~foundation.etcd.EtcdSettings`), or the connection keywords
    ``endpoints`` (default: :envvar:`FOUNDATION_ETCD_ENDPOINTS`),
    ``username``/``password`` (etcd auth), ``ca_cert``/``client_cert``/
    ``client_key`` (TLS) and ``timeout`` (each etcd call, default 5 s).
    ``partitions``/``indexes`` shape its local read table. The registry is
    closed when the block exits (on etcd: its lease is revoked, so its
    entries vanish for every other instance).

    Raises:
        ConfigError: bad arguments (connection keywords without etcd, two
            forms of connection mixed, ...).
        EtcdAuthError, EtcdPermissionDenied, EtcdUnavailable: etcd refused
            or did not answer (nothing was written).
    """
    name = backend.strip().lower() if isinstance(backend, str) else None
    if name == "auto" and backend_from_env("auto") == "etcd":
        name = "etcd"
    if name == "etcd":
        from ._etcd import open_etcd_backend

        async with open_etcd_backend(
            endpoints,
            prefix=prefix,
            ttl=ttl,
            client=client,
            settings=settings,
            username=username,
            password=password,
            ca_cert=ca_cert,
            client_cert=client_cert,
            client_key=client_key,
            timeout=timeout,
            partitions=partitions,
            indexes=indexes,
        ) as etcd_backend:
            registry = Registry(etcd_backend, indexes=indexes)
            try:
                yield registry
            finally:
                registry.close()
        return
    given = {
        "endpoints": endpoints,
        "client": client,
        "settings": settings,
        "username": username,
        "password": password,
        "ca_cert": ca_cert,
        "client_cert": client_cert,
        "client_key": client_key,
        "timeout": timeout,
    }
    extra = sorted(k for k, v in given.items() if v is not None)
    if extra:
        raise errors.ConfigError(
            f"{', '.join(extra)} only apply to backend='etcd' (backend={backend!r})"
        )
    registry = Registry(backend, partitions=partitions, indexes=indexes)
    try:
        yield registry
    finally:
        registry.close()
