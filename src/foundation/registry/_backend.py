"""The Backend interface every registry backend implements.

The facade (:class:`foundation.registry.Registry`) binds its read methods and
its ``*_nowait`` writes straight to the backend's own methods, so a backend's
methods ARE the public API for those calls: same names, same signatures,
same errors. Hence the rules below are the contract the conformance suite
(``tests/registry``) checks on every backend.

Keys
    Every method takes ``(ns, name)`` as two arguments, never a key tuple, so
    the native read path builds none. ``ns`` and ``name`` may be any hashable
    (local backends). A key that cannot be hashed, or whose ``__hash__`` or
    ``__eq__`` raises, gives ``errors.InvalidKey`` (original error as
    ``__cause__``), never a crash or a half-written table. Keys are returned
    exactly as given at registration.

Values and metadata
    ``metadata`` is ``None`` or a ``Mapping``; anything else gives
    ``errors.InvalidMetadata`` before anything is written. The backend stores
    its own shallow copy (``dict(metadata)``) and hands out read-only
    ``MappingProxyType`` views; an empty or ``None`` metadata is stored as
    :data:`~foundation.registry.EMPTY_METADATA`.

Writes (local backends: synchronous, atomic per call, thread-safe)
    * ``register(ns, name, value, metadata=None, *, owner=None) -> Registration``:
      Check-and-insert is atomic, also across OS threads. A key held with
      the same value (``is`` or ``==``) and the same owner (``None`` equals
      only ``None``) is a re-registration: metadata is replaced, an
      ``updated`` event is emitted, the new Registration returned. Any
      other holder gives ``errors.AlreadyRegistered(key, holder)``.
      ``owner`` must be hashable (``errors.InvalidKey`` otherwise).
    * ``unregister(ns, name) -> bool``: False if absent or closed; never raises
      (except ``InvalidKey`` for an unusable key).
    * ``update_metadata(ns, name, metadata) -> Registration``: replaces;
      ``errors.NotRegistered`` if absent.
    * ``update_value(ns, name, value, expect=MISSING) -> Registration``:
      replaces the value, keeps owner and metadata (one ``updated`` event);
      with ``expect`` (anything but :data:`~foundation.registry.MISSING`)
      only if the current value equals it (``is`` or ``==``), atomically,
      else ``errors.ValueMismatch(key, expect, actual)``;
      ``errors.NotRegistered`` if absent.
    * ``unregister_select(ns, query) -> int``: removes the names of ``ns``
      (all for None) that ``select(ns, query)`` would return, one
      ``unregistered`` event each; how many. An entry that changed between
      the match and its removal (another thread) stays.
    * ``unregister_owner(owner) -> int``: removes every registration and group
      membership of ``owner`` in O(its entries); returns how many.
    * ``join(ns, group, value, metadata=None, *, owner=None) -> Registration``:
      adds a member (``joined`` event); joining the same value (``is`` or
      ``==``; unhashable values are allowed) again replaces its metadata
      and owner (``updated`` event). Groups are their own key space.
    * ``leave(ns, group, value) -> bool``: False if not a member.

    After ``close()`` every write raises ``errors.RegistryClosed`` except
    ``unregister``/``leave``/``unregister_owner``, which return False/0.

Reads (never block, take no lock on GIL builds, never call back into trio)
    * ``lookup(ns, name)`` -> value, or ``errors.NotRegistered``.
    * ``get(ns, name, default=None)`` -> value or default.
    * ``lookup_with_metadata(ns, name) -> Registration`` / ``NotRegistered``.
    * ``metadata(ns, name) -> Mapping`` / ``NotRegistered``.
    * ``contains(ns, name) -> bool``.
    * ``names(ns) -> list``: unique names of ``ns`` (not groups), O(entries of ns).
    * ``registrations(ns=None) -> list[Registration]``; ``list_all()`` is
      ``registrations(None)`` (the callback name of Elixir Foundation's backend behaviour).
    * ``count(ns=None) -> int`` unique names only; ``__len__`` is ``count()``.
    * ``select(ns, query) -> list[Registration]``: ``query`` is a compiled
      :class:`foundation.registry._query.Query`; ``ns=None`` means all.
    * ``count_select(ns, query) -> int``: ``len(select(ns, query))`` without
      building the list.
    * ``owned(owner) -> list[Registration]``: the names and memberships of
      ``owner``, in O(its entries), in write order (registrations and joins
      as one sequence); ``[]`` for None or an unknown owner.
    * ``members(ns, group) -> list[Registration]`` (join order);
      ``member_count(ns, group) -> int``; ``memberships() -> list[Registration]``
      (every membership of every group, for ``migrate``).

    ``registrations()``, ``select()``, ``members()`` and ``owned()`` answer
    in registration (join) order, across namespaces and shards.
    Reads keep answering after ``close()`` from the last state.

Events
    ``subscribe(listener) -> unsubscribe``: ``listener(RegistryEvent)`` is
    called synchronously by the writing thread after each successful write,
    once the table is consistent and outside any shard lock; an
    ``unregister_owner`` emits one event per removed entry. A listener that
    raises is logged (logger ``foundation.registry``) and the write still
    stands. Each event carries its ``reason``: ``"explicit"`` (register,
    unregister, join, leave, unregister_select), ``"owner"``
    (unregister_owner), ``"replaced"`` (update_value, update_metadata, a
    re-register or re-join); on etcd also ``"remote"`` (learnt from the
    watch) and ``"lease"`` (an own entry that could not be put back under a
    new lease). A backend builds no events while nobody is subscribed.

Admin
    ``stats() -> RegistryStats``; ``health_check() -> Health``;
    ``close()`` (idempotent); ``closed`` (bool attribute/property);
    ``name`` (``"native"``, ``"python"``, ``"etcd"``); ``partitions`` (int);
    ``is_async`` (False for local backends).

Async writes (``is_async = True``: the etcd backend)
    A backend whose writes must wait for a server declares ``is_async =
    True`` and implements :class:`~foundation.registry.AsyncWrites` as well.
    Its synchronous write methods above raise
    :class:`~foundation.errors.BackendIsAsync` (so the facade's ``*_nowait``
    do), and the facade's async writes call the
    ``a*`` twins instead (after its own ``checkpoint_if_cancelled()``):
    ``aregister``, ``aunregister``, ``aupdate_metadata``, ``aupdate_value``,
    ``aunregister_owner``, ``aunregister_select``, ``ajoin``, ``aleave``,
    ``aregister_many``, with the same arguments, results and errors as the
    synchronous forms, plus:

    * Cancellation: a write cancelled before it is sent
      writes nothing; once sent it is shielded (bounded by the backend's own
      timeouts) and completes, so a finished call never reports
      ``Cancelled``. Writes are checkpoints.
    * After ``await aregister(...)`` returns, this instance's reads see the
      write at once (the backend applies it to its read side itself);
      other instances see it after their ``sync()`` (and, on etcd, within
      milliseconds without it).
    * Values and metadata may be restricted (etcd: JSON only,
      ``errors.InvalidValue`` / ``errors.InvalidMetadata``), keys and owners
      too (etcd: portable only, ``errors.InvalidKey``); reads return values
      as stored (etcd: after a JSON round trip, the writer's own reads too).
      Network failures raise :class:`~foundation.errors.EtcdError`
      subclasses; ``aregister_many`` puts them in the per-item results.
    * ``aunregister_owner(owner)`` removes what THIS instance wrote with
      ``owner`` (owner tokens are local: a supervised child id, a scope).
    * ``sync()`` returns once every write made before the call, by any
      instance, is in this instance's reads; ``aclose()`` closes and waits
      for the background work (on etcd: revoking the lease).
    * ``scope_owner()`` gives a fresh portable owner token for one
      ``registered()`` block; ``subscribe_faults(listener)`` reports errors
      that may have made the view stale (etcd: ``LeaseExpired``), which the
      facade hands to every active ``watch()``.
    * ``aload(registrations, memberships)`` / ``adiscard()``: bulk copy into
      an empty backend for ``migrate()`` (everything checked before anything
      is written), and its undo (delete every entry this instance wrote).
    * Pub/sub across instances: ``prepare_message(ns, topic, message) ->
      (message as received, payload)`` checks and encodes (``InvalidKey``,
      ``InvalidValue``, ``RegistryClosed``; nothing sent);
      ``publish_remote(payload)`` carries it to every other instance (not
      back to this one), and ``subscribe_messages(listener)`` hands what
      the others publish to ``listener(ns, topic, message)`` (None: stop).
      (``subscribe(listener)`` keeps meaning change events.)
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ._types import MISSING, Health, Registration, RegistryEvent, RegistryStats

if TYPE_CHECKING:
    from ..errors import FoundationError
    from ._query import Query

__all__ = ["AsyncWrites", "Backend", "Listener"]

Listener = Callable[[RegistryEvent], None]


@runtime_checkable
class Backend(Protocol):
    """What a registry backend provides; see the module docstring for the rules."""

    name: str
    partitions: int
    is_async: bool

    @property
    def closed(self) -> bool: ...

    # reads
    def lookup(self, ns: Hashable, name: Hashable) -> Any: ...
    def get(self, ns: Hashable, name: Hashable, default: Any = None) -> Any: ...
    def lookup_with_metadata(self, ns: Hashable, name: Hashable) -> Registration: ...
    def metadata(self, ns: Hashable, name: Hashable) -> Mapping[Any, Any]: ...
    def contains(self, ns: Hashable, name: Hashable) -> bool: ...
    def names(self, ns: Hashable) -> list[Any]: ...
    def registrations(self, ns: Hashable | None = None) -> list[Registration]: ...
    def list_all(self) -> list[Registration]: ...
    def count(self, ns: Hashable | None = None) -> int: ...
    def select(self, ns: Hashable | None, query: Query) -> list[Registration]: ...
    def count_select(self, ns: Hashable | None, query: Query) -> int: ...
    def owned(self, owner: Hashable | None) -> list[Registration]: ...
    def members(self, ns: Hashable, group: Hashable) -> list[Registration]: ...
    def member_count(self, ns: Hashable, group: Hashable) -> int: ...
    def memberships(self) -> list[Registration]: ...
    def __len__(self) -> int: ...

    # writes
    def register(
        self,
        ns: Hashable,
        name: Hashable,
        value: Any,
        metadata: Mapping[Any, Any] | None = None,
        *,
        owner: Hashable | None = None,
    ) -> Registration: ...
    def unregister(self, ns: Hashable, name: Hashable) -> bool: ...
    def update_metadata(
        self, ns: Hashable, name: Hashable, metadata: Mapping[Any, Any] | None
    ) -> Registration: ...
    def update_value(
        self, ns: Hashable, name: Hashable, value: Any, expect: Any = MISSING
    ) -> Registration: ...
    def unregister_owner(self, owner: Hashable) -> int: ...
    def unregister_select(self, ns: Hashable | None, query: Query) -> int: ...
    def join(
        self,
        ns: Hashable,
        group: Hashable,
        value: Any,
        metadata: Mapping[Any, Any] | None = None,
        *,
        owner: Hashable | None = None,
    ) -> Registration: ...
    def leave(self, ns: Hashable, group: Hashable, value: Any) -> bool: ...

    # events and admin
    def subscribe(self, listener: Listener) -> Callable[[], None]: ...
    def stats(self) -> RegistryStats: ...
    def health_check(self) -> Health: ...
    def close(self) -> None: ...


@runtime_checkable
class AsyncWrites(Protocol):
    """The async writes of a backend with ``is_async = True``; see the module docstring."""

    async def aregister(
        self,
        ns: Hashable,
        name: Hashable,
        value: Any,
        metadata: Mapping[Any, Any] | None = None,
        *,
        owner: Hashable | None = None,
    ) -> Registration: ...
    async def aunregister(self, ns: Hashable, name: Hashable) -> bool: ...
    async def aupdate_metadata(
        self, ns: Hashable, name: Hashable, metadata: Mapping[Any, Any] | None
    ) -> Registration: ...
    async def aupdate_value(
        self, ns: Hashable, name: Hashable, value: Any, expect: Any = MISSING
    ) -> Registration: ...
    async def aunregister_owner(self, owner: Hashable) -> int: ...
    async def aunregister_select(self, ns: Hashable | None, query: Query) -> int: ...
    async def ajoin(
        self,
        ns: Hashable,
        group: Hashable,
        value: Any,
        metadata: Mapping[Any, Any] | None = None,
        *,
        owner: Hashable | None = None,
    ) -> Registration: ...
    async def aleave(self, ns: Hashable, group: Hashable, value: Any) -> bool: ...
    async def aregister_many(
        self, items: Iterable[Sequence[Any]], *, owner: Hashable | None = None
    ) -> list[Registration | FoundationError]: ...
    async def sync(self) -> None: ...
    async def aclose(self) -> None: ...
    async def aload(
        self, registrations: Sequence[Registration], memberships: Sequence[Registration]
    ) -> None: ...
    async def adiscard(self) -> int: ...
    def scope_owner(self) -> Hashable: ...
    def subscribe_faults(self, listener: Callable[[BaseException], None]) -> Callable[[], None]: ...
    def prepare_message(self, ns: Hashable, topic: Hashable, message: Any) -> tuple[Any, bytes]: ...
    async def publish_remote(self, payload: bytes) -> None: ...
    def subscribe_messages(self, listener: Callable[[Any, Any, Any], None] | None) -> None: ...
