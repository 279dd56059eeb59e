"""The pure-Python registry backend: the typed reference twin of ``_native``.

It behaves exactly like the native backend (the conformance suite runs on
both) and is what ``FOUNDATION_NO_EXTENSIONS=1`` and PyPy use. It is slower
than the native table (every read is a Python frame, ~100 ns before any
work), so prefer the native backend where it is built.

Layout: one dict ``(ns, name) -> Registration`` in registration order (so
``registrations()`` and ``select()`` answer in that order with no sort), a
namespace index (``ns -> bucket of its Registrations``, also in registration
order, so ``names(ns)``/``count(ns)`` cost O(entries of ns)) and, per
partition, a write lock and an owner index (``owner -> bucket``, so
``unregister_owner`` costs O(its entries)). A key is written under the lock
of partition ``hash(name) % partitions``; reads take no lock (a single
dict operation, or a copy of a dict view made in C, is atomic under the GIL,
and in a free-threaded build each dict locks itself).

Keys are user objects whose ``__eq__`` may run any code, including another
write to this registry from the same thread (the locks are re-entrant). So
the indexes are keyed by the *identity* of an entry (the id of its stored
name object in a namespace's bucket, of its stored namespace and name
objects in an owner's), never by user objects: once a write has put
its entry into (or taken it out of) the main dict, finishing the indexes
runs no user code, and a re-entrant write cannot leave a name indexed that
is not registered, or unindex one that is. An emptied bucket is marked
dead as it is dropped, so a writer holding it looks again.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from ..errors import AlreadyRegistered, ConfigError, NotRegistered, RegistryClosed, ValueMismatch
from ._events import Listeners
from ._groups import GroupTable
from ._keys import check_owner, copy_metadata, invalid_key, same_owner, same_value
from ._mdindex import MetadataIndex
from ._query import Query
from ._types import (
    EMPTY_METADATA,
    MISSING,
    EventKind,
    Health,
    Registration,
    RegistryEvent,
    RegistryStats,
)

__all__ = ["PythonBackend"]

# Registration(...) goes through the NamedTuple's Python-level __new__
# (~300 ns here); tuple.__new__ bound by partial builds the same object in C.
_new_registration = functools.partial(tuple.__new__, Registration)
_new_event = functools.partial(tuple.__new__, RegistryEvent)

_Key = tuple[Any, Any]
# An entry's identity in an owner's bucket: the ids of its stored namespace
# and name objects (both alive while it is registered; no two live entries
# share both). In a namespace's bucket the id of the name object suffices.
_Ident = tuple[int, int]

_NO_ENTRY = (0, None)

_REGISTERED = EventKind.REGISTERED
_UPDATED = EventKind.UPDATED
_UNREGISTERED = EventKind.UNREGISTERED
_LEFT = EventKind.LEFT


class _Bucket(dict[Any, Any]):
    """The entries of one namespace (or of one owner in one partition),
    keyed by identity, in the order they were written. ``dead``: dropped
    from its index (empty); a writer that finds it so looks again. Made by
    :func:`_new_bucket` (no Python ``__init__``: a namespace that holds one
    entry at a time makes one per registration)."""

    __slots__ = ("dead",)
    dead: bool


def _new_bucket() -> _Bucket:
    bucket = _Bucket()
    bucket.dead = False
    return bucket


class _Shard:
    """One partition: its write lock and its owner index."""

    __slots__ = ("acquire", "by_owner", "lock", "release")

    def __init__(self) -> None:
        self.lock = threading.RLock()
        # bound once: a call each is half the cost of a ``with`` statement
        self.acquire = self.lock.acquire
        self.release = self.lock.release
        # owner -> bucket of (write sequence, Registration) of its entries
        self.by_owner: dict[Hashable, _Bucket] = {}


def _check_partitions(partitions: int | None) -> int:
    if partitions is None:
        return os.cpu_count() or 1
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise ConfigError(
            f"partitions must be an int >= 1 (or None for os.cpu_count()), not {partitions!r}"
        )
    return partitions


def _bucket_of(index: dict[Any, _Bucket], key: Any) -> _Bucket:
    """The live bucket of ``key`` in ``index``, made if there is none.

    Looking ``key`` up may run its ``__eq__`` (and through it anything);
    what comes back is a bucket that was live when it was handed out.
    """
    while True:
        bucket = index.get(key)
        if bucket is None:
            bucket = index.setdefault(key, _new_bucket())
        elif bucket.dead:
            fresh = _new_bucket()
            index[key] = fresh
            bucket = fresh
        if not bucket.dead:
            return bucket


def _drop_bucket(index: dict[Any, _Bucket], key: Any, bucket: _Bucket) -> None:
    """Drop an emptied ``bucket`` (filed under ``key``) from ``index``.

    A writer of another partition may be filling it at the same moment (the
    namespace index is shared): it checks ``dead`` before and after its
    insert (see :meth:`PythonBackend.register`), and this re-files a bucket
    that is no longer empty once dropped, so an entry is never left in a
    bucket no index holds.
    """
    bucket.dead = True
    try:
        current = index.pop(key, None)
    except Exception:
        # A key whose __eq__ raises: the dead bucket stays filed, and is
        # replaced by the next writer that finds it (see _bucket_of).
        return
    if current is not None and current is not bucket:
        # Someone filed another bucket meanwhile (a key's __eq__ wrote): keep it.
        index.setdefault(key, current)
        return
    if bucket:
        # filled meanwhile: file it again
        bucket.dead = False
        other = index.setdefault(key, bucket)
        if other is not bucket:
            other.update(bucket)


class PythonBackend:
    """Sharded in-process registry table in pure Python.

    See :mod:`foundation.registry._backend` for the contract every method
    follows; the facade binds its reads and ``*_nowait`` writes straight to
    these methods.

    Args:
        partitions: number of write locks (and owner indexes); default
            ``os.cpu_count()``.
        indexes: top-level metadata fields to index, so equality ``select``
            on them costs O(matches).

    Raises:
        ConfigError: ``partitions`` is not an int >= 1, or an index field is
            not a non-empty str.
    """

    name: str = "python"
    is_async: bool = False
    partitions: int

    def __init__(self, partitions: int | None = None, indexes: Sequence[str] = ()) -> None:
        self.partitions = _check_partitions(partitions)
        self._index: MetadataIndex | None = MetadataIndex(indexes) if indexes else None
        self._shards: tuple[_Shard, ...] = tuple(_Shard() for _ in range(self.partitions))
        self._n = self.partitions
        # (ns, name) -> Registration, in registration order
        self._table: dict[_Key, Registration] = {}
        # ns -> bucket of its Registrations, in registration order
        self._by_ns: dict[Any, _Bucket] = {}
        # One write sequence for names and memberships: the order of
        # unregister_owner's events (and of an owner's entries).
        self._seq = itertools.count(1)
        # With a metadata index only: identity -> sequence, to put an
        # indexed select's candidates into registration order.
        self._order: dict[_Ident, int] | None = {} if indexes else None
        self._listeners = Listeners()
        self._groups = GroupTable(self._listeners.notify, seq=self._seq)
        self._closed = False
        # Plain int counters: an unlocked += may lose a count under threads,
        # which stats() tolerates; a lock here would cost more than the read.
        self._hits = 0
        self._misses = 0
        self._writes = 0
        self._conflicts = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<PythonBackend partitions={self.partitions} count={self.count()} {state}>"

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    # ------------------------------------------------------------------ reads

    def lookup(self, ns: Hashable, name: Hashable) -> Any:
        """Return the value registered under ``(ns, name)``.

        Raises:
            NotRegistered: nothing is registered there.
            InvalidKey: the key cannot be hashed or compared.
        """
        key = (ns, name)
        try:
            # .get, not [key]: a KeyError raised by the key's own __hash__ or
            # __eq__ must surface as InvalidKey, not pass for a miss.
            reg = self._table.get(key)
        except Exception as exc:
            raise invalid_key(ns, name, exc) from exc
        if reg is None:
            self._misses += 1
            raise NotRegistered(key)
        self._hits += 1
        return reg[2]

    def get(self, ns: Hashable, name: Hashable, default: Any = None) -> Any:
        """Return the value under ``(ns, name)``, or ``default``.

        Raises:
            InvalidKey: the key cannot be hashed or compared.
        """
        try:
            reg = self._table.get((ns, name))
        except Exception as exc:
            raise invalid_key(ns, name, exc) from exc
        if reg is None:
            self._misses += 1
            return default
        self._hits += 1
        return reg[2]

    def _find(self, ns: Hashable, name: Hashable) -> Registration:
        key = (ns, name)
        try:
            reg = self._table.get(key)
        except Exception as exc:
            raise invalid_key(ns, name, exc) from exc
        if reg is None:
            raise NotRegistered(key)
        return reg

    def lookup_with_metadata(self, ns: Hashable, name: Hashable) -> Registration:
        """Return the whole :class:`Registration` under ``(ns, name)``.

        Raises:
            NotRegistered: nothing is registered there.
            InvalidKey: the key cannot be hashed or compared.
        """
        return self._find(ns, name)

    def metadata(self, ns: Hashable, name: Hashable) -> Mapping[Any, Any]:
        """Return the read-only metadata under ``(ns, name)``.

        Raises:
            NotRegistered: nothing is registered there.
            InvalidKey: the key cannot be hashed or compared.
        """
        return self._find(ns, name).metadata

    def contains(self, ns: Hashable, name: Hashable) -> bool:
        """True if ``(ns, name)`` is registered (a unique name, not a group)."""
        try:
            return (ns, name) in self._table
        except Exception as exc:
            raise invalid_key(ns, name, exc) from exc

    def _ns_bucket(self, ns: Hashable) -> _Bucket | None:
        try:
            return self._by_ns.get(ns)
        except Exception as exc:
            raise invalid_key(ns, None, exc) from exc

    def names(self, ns: Hashable) -> list[Any]:
        """The unique names registered in ``ns`` (groups excluded), in
        registration order; O(entries of ns)."""
        bucket = self._ns_bucket(ns)
        if not bucket:
            return []
        return [reg[1] for reg in list(bucket.values())]

    def registrations(self, ns: Hashable | None = None) -> list[Registration]:
        """Every registration of ``ns`` (``None``: of every namespace), in
        registration order."""
        if ns is None:
            return list(self._table.values())
        bucket = self._ns_bucket(ns)
        return list(bucket.values()) if bucket else []

    def list_all(self) -> list[Registration]:
        """Every registration (Elixir Foundation's backend callback name)."""
        return self.registrations(None)

    def count(self, ns: Hashable | None = None) -> int:
        """How many unique names ``ns`` has (``None``: all namespaces)."""
        if ns is None:
            return len(self._table)
        bucket = self._ns_bucket(ns)
        return len(bucket) if bucket else 0

    def __len__(self) -> int:
        return len(self._table)

    def select(self, ns: Hashable | None, query: Query) -> list[Registration]:
        """Registrations of ``ns`` (``None``: all) whose metadata matches
        ``query``, in registration order.

        Uses a metadata index when ``query`` tests an indexed field for
        equality (O(matches)); otherwise scans the namespace. Exceptions from
        the query's predicate propagate.
        """
        index = self._index
        if index is not None:
            keys = index.candidates(ns, query)
            if keys is not None:
                return self._select_keys(keys, query)
        if query.predicate is None:
            matches = query.metadata_matches
            return [reg for reg in self.registrations(ns) if matches(reg[3])]
        return [reg for reg in self.registrations(ns) if query.matches(reg)]

    def count_select(self, ns: Hashable | None, query: Query) -> int:
        """How many registrations ``select(ns, query)`` would return,
        without building that list."""
        index = self._index
        if index is not None:
            keys = index.candidates(ns, query)
            if keys is not None:
                table = self._table
                n = 0
                for key in keys:
                    reg = table.get(key)
                    if reg is not None and query.matches(reg):
                        n += 1
                return n
        if ns is None:
            regs: list[Registration] = list(self._table.values())
        else:
            bucket = self._ns_bucket(ns)
            regs = list(bucket.values()) if bucket else []
        if query.predicate is None:
            matches = query.metadata_matches
            return sum(1 for reg in regs if matches(reg[3]))
        test = query.matches
        return sum(1 for reg in regs if test(reg))

    def owned(self, owner: Hashable | None) -> list[Registration]:
        """The names and memberships of ``owner``, in write order;
        O(partitions + its entries). ``[]`` for None or an unknown owner.

        Raises:
            InvalidKey: ``owner`` is not hashable.
        """
        check_owner(owner)
        if owner is None:
            return []
        found: list[tuple[int, Registration]] = []
        for shard in self._shards:
            if not shard.by_owner:
                continue
            try:
                bucket = shard.by_owner.get(owner)
            except Exception:
                continue  # an owner whose __eq__ raises owns nothing here
            if bucket:
                found.extend(list(bucket.values()))
        found.extend(self._groups.owned(owner))
        found.sort(key=_first)
        return [reg for _, reg in found]

    def _select_keys(self, keys: set[_Key], query: Query) -> list[Registration]:
        table, order = self._table, self._order
        found: list[tuple[int, Registration]] = []
        for key in keys:
            reg = table.get(key)
            if reg is not None and query.matches(reg):
                seq = order.get((id(reg[0]), id(reg[1])), 0) if order is not None else 0
                found.append((seq, reg))
        found.sort(key=_first)
        return [reg for _, reg in found]

    def members(self, ns: Hashable, group: Hashable) -> list[Registration]:
        """The members of group ``(ns, group)``, in join order."""
        return self._groups.members(ns, group)

    def member_count(self, ns: Hashable, group: Hashable) -> int:
        """How many members group ``(ns, group)`` has."""
        return self._groups.member_count(ns, group)

    def memberships(self, ns: Hashable | None = None) -> list[Registration]:
        """Every group membership of ``ns`` (``None``: all), in join order;
        used by ``migrate``.

        Part of the Backend protocol.
        """
        return self._groups.all(ns)

    # ----------------------------------------------------------------- writes

    def register(
        self,
        ns: Hashable,
        name: Hashable,
        value: Any,
        metadata: Mapping[Any, Any] | None = None,
        *,
        owner: Hashable | None = None,
    ) -> Registration:
        """Register ``value`` under ``(ns, name)``; atomic check-and-insert.

        Re-registering the same value (``is``/``==``) by the same owner
        replaces the metadata (an ``updated`` event); the stored key, value
        and owner stay as first registered.

        Returns:
            The registration now stored.

        Raises:
            AlreadyRegistered: another value or owner holds the key.
            InvalidKey: the key or the owner cannot be hashed or compared.
            InvalidMetadata: ``metadata`` is not a mapping.
            RegistryClosed: after :meth:`close`.
        """
        if self._closed:
            raise RegistryClosed()
        md = EMPTY_METADATA if metadata is None else copy_metadata(metadata)
        if owner is not None:
            check_owner(owner)
        key = (ns, name)
        try:
            # the key's lock by its name alone: equal keys have equal names,
            # and a (cached) str hash costs a third of a tuple's
            shard = self._shards[hash(name) % self._n]
        except Exception as exc:
            raise invalid_key(ns, name, exc) from exc
        new = _new_registration((ns, name, value, md, owner))
        table = self._table
        by_ns = self._by_ns
        owned: _Bucket | None = None
        shard.acquire()
        try:
            while True:
                if self._closed:
                    raise RegistryClosed()
                try:
                    # the indexes' buckets first: finding them may run user
                    # code, which must not come between the table and them
                    names = by_ns.get(ns)
                    if names is None or names.dead:
                        names = _bucket_of(by_ns, ns)
                    if owner is not None:
                        owned = _bucket_of(shard.by_owner, owner)
                    current = table.setdefault(key, new)
                except Exception as exc:
                    raise invalid_key(ns, name, exc) from exc
                if current is new:
                    # no user code from here on: the entry and its indexes
                    # change together
                    names[id(name)] = new
                    if names.dead or (owned is not None and owned.dead):
                        # a bucket was dropped while setdefault ran a key's
                        # __eq__, or (the namespace's) just now by a writer
                        # of another partition: find the live ones again
                        del names[id(name)]
                        self._untable(key, new)
                        continue
                    if owned is not None:
                        owned[(id(ns), id(name))] = (next(self._seq), new)
                    if self._index is not None:
                        self._indexed(new)
                    kind = _REGISTERED
                    reg = new
                    break
                same = same_value(current[2], value) and same_owner(current[4], owner)
                if table.get(key) is not current:
                    continue  # an __eq__ re-entered and changed the key: retry
                if not same:
                    self._conflicts += 1
                    raise AlreadyRegistered(key, current)
                reg = _new_registration((current[0], current[1], current[2], md, current[4]))
                self._replace(shard, key, current, reg)
                kind = _UPDATED
                break
            self._writes += 1
        finally:
            if owned is not None and not owned and not owned.dead:
                # made for an insert that did not happen
                _drop_bucket(shard.by_owner, owner, owned)
            shard.release()
        if self._listeners.subscriptions:
            self._listeners.notify(
                _new_event((kind, reg, "explicit" if kind is _REGISTERED else "replaced"))
            )
        return reg

    def _indexed(self, reg: Registration) -> None:
        """Add a new entry to the metadata index (and its place in order)."""
        assert self._order is not None
        assert self._index is not None
        self._order[(id(reg[0]), id(reg[1]))] = next(self._seq)
        self._index.add(reg[0], reg[1], reg[3])

    def _untable(self, key: _Key, reg: Registration) -> None:
        """Take ``reg`` (just put under ``key``) out of the table again."""
        current = self._table.pop(key, None)
        if current is not None and current is not reg:
            self._table.setdefault(key, current)  # someone else's: put it back

    def _replace(self, shard: _Shard, key: _Key, old: Registration, new: Registration) -> None:
        """Swap ``old`` for ``new`` (same key and owner) in the table and indexes.

        Writing the table may run a key's ``__eq__``, which may unregister
        the entry meanwhile; the table write then puts it back, so then the
        update is taken as having come first and the removal second.
        """
        try:
            names = self._by_ns.get(old[0])
            owned = None if old[4] is None else shard.by_owner.get(old[4])
        except Exception:
            names = owned = None
        self._table[key] = new
        # no user code from here on, until the index (which is user-keyed)
        if names is None or names.dead or names.get(id(old[1])) is not old:
            self._untable(key, new)  # unregistered while the table was written
            return
        names[id(old[1])] = new
        if owned is not None:
            ident = (id(old[0]), id(old[1]))
            entry = owned.get(ident)
            if entry is not None:
                owned[ident] = (entry[0], new)
        if self._index is not None:
            self._index.remove(old[0], old[1], old[3])
            self._index.add(new[0], new[1], new[3])

    def _unindex(self, reg: Registration, shard: _Shard | None) -> None:
        """Remove ``reg`` (already popped from the table) from the indexes;
        ``shard``: also from its owner's bucket there."""
        # Only ever remove reg itself: a key's __eq__ run by a lookup below
        # may register the same key (the same objects, the same identity)
        # anew meanwhile.
        try:
            names = self._by_ns.get(reg[0])
        except Exception:
            names = None
        name_id = id(reg[1])
        if names is not None and names.get(name_id) is reg:
            del names[name_id]
            if not names:
                _drop_bucket(self._by_ns, reg[0], names)
        if shard is not None and reg[4] is not None:
            try:
                owned = shard.by_owner.get(reg[4])
            except Exception:
                owned = None
            ident = (id(reg[0]), id(reg[1]))
            if owned is not None and owned.get(ident, _NO_ENTRY)[1] is reg:
                del owned[ident]
                if not owned:
                    _drop_bucket(shard.by_owner, reg[4], owned)
        if self._index is not None:
            assert self._order is not None
            self._order.pop((id(reg[0]), id(reg[1])), None)
            self._index.remove(reg[0], reg[1], reg[3])

    def unregister(self, ns: Hashable, name: Hashable) -> bool:
        """Remove ``(ns, name)``.

        Returns:
            True if it was registered; False if absent or closed.

        Raises:
            InvalidKey: the key cannot be hashed or compared (only then).
        """
        key = (ns, name)
        try:
            # the key's lock by its name (equal keys have equal names), but
            # the whole key hashed: an empty dict's pop() hashes nothing, and
            # an unhashable namespace must still be refused
            hash(ns)
            shard = self._shards[hash(name) % self._n]
        except Exception as exc:
            raise invalid_key(ns, name, exc) from exc
        shard.acquire()
        try:
            if self._closed:
                return False
            try:
                reg = self._table.pop(key, None)
            except Exception as exc:
                raise invalid_key(ns, name, exc) from exc
            if reg is None:
                return False
            if reg[4] is None and self._index is None:
                # the common case inline (see _unindex)
                try:
                    names = self._by_ns.get(reg[0])
                except Exception:
                    names = None
                ident = id(reg[1])
                if names is not None and names.get(ident) is reg:
                    del names[ident]
                    if not names:
                        _drop_bucket(self._by_ns, ns, names)
            else:
                self._unindex(reg, shard)
            self._writes += 1
        finally:
            shard.release()
        if self._listeners.subscriptions:
            self._listeners.notify(_new_event((_UNREGISTERED, reg, "explicit")))
        return True

    def update_metadata(
        self, ns: Hashable, name: Hashable, metadata: Mapping[Any, Any] | None
    ) -> Registration:
        """Replace (not merge) the metadata of ``(ns, name)``.

        Raises:
            NotRegistered: nothing is registered there.
            InvalidKey: the key cannot be hashed or compared.
            InvalidMetadata: ``metadata`` is not a mapping.
            RegistryClosed: after :meth:`close`.
        """
        if self._closed:
            raise RegistryClosed()
        md = copy_metadata(metadata)
        key = (ns, name)
        try:
            # the key's lock by its name alone: equal keys have equal names,
            # and a (cached) str hash costs a third of a tuple's
            shard = self._shards[hash(name) % self._n]
        except Exception as exc:
            raise invalid_key(ns, name, exc) from exc
        shard.acquire()
        try:
            if self._closed:
                raise RegistryClosed()
            try:
                current = self._table.get(key)
            except Exception as exc:
                raise invalid_key(ns, name, exc) from exc
            if current is None:
                raise NotRegistered(key)
            reg = _new_registration((current[0], current[1], current[2], md, current[4]))
            self._replace(shard, key, current, reg)
            self._writes += 1
        finally:
            shard.release()
        if self._listeners.subscriptions:
            self._listeners.notify(_new_event((_UPDATED, reg, "replaced")))
        return reg

    def update_value(
        self, ns: Hashable, name: Hashable, value: Any, expect: Any = MISSING
    ) -> Registration:
        """Replace the value of ``(ns, name)``, keeping its owner and metadata.

        With ``expect`` (anything but ``MISSING``), only if the current value
        is it or equals it (an ``__eq__`` that raises means "not equal"),
        checked and written atomically.

        Raises:
            NotRegistered: nothing is registered there.
            ValueMismatch: ``expect`` does not match the current value.
            InvalidKey: the key cannot be hashed or compared.
            RegistryClosed: after :meth:`close`.
        """
        if self._closed:
            raise RegistryClosed()
        key = (ns, name)
        try:
            hash(ns)
            shard = self._shards[hash(name) % self._n]
        except Exception as exc:
            raise invalid_key(ns, name, exc) from exc
        table = self._table
        shard.acquire()
        try:
            while True:
                if self._closed:
                    raise RegistryClosed()
                try:
                    current = table.get(key)
                except Exception as exc:
                    raise invalid_key(ns, name, exc) from exc
                if current is None:
                    raise NotRegistered(key)
                if expect is not MISSING:
                    same = same_value(current[2], expect)
                    if table.get(key) is not current:
                        continue  # an __eq__ re-entered and changed the key: retry
                    if not same:
                        raise ValueMismatch(key, expect, current[2])
                reg = _new_registration((current[0], current[1], value, current[3], current[4]))
                self._replace(shard, key, current, reg)
                break
            self._writes += 1
        finally:
            shard.release()
        if self._listeners.subscriptions:
            self._listeners.notify(_new_event((_UPDATED, reg, "replaced")))
        return reg

    def unregister_owner(self, owner: Hashable) -> int:
        """Remove every registration and membership of ``owner``.

        O(partitions + its entries). ``owner=None`` removes nothing: unowned
        entries belong to no one. One event per removed entry, in the order
        they were written.

        Returns:
            How many entries were removed (0 when closed).

        Raises:
            InvalidKey: ``owner`` is not hashable.
        """
        check_owner(owner)
        if owner is None or self._closed:
            return 0
        removed: list[tuple[int, EventKind, Registration]] = []
        table = self._table
        for shard in self._shards:
            if not shard.by_owner:
                continue
            shard.acquire()
            try:
                if self.closed:  # close() raced us (a property: mypy must not narrow)
                    break
                try:
                    owned = shard.by_owner.pop(owner, None)
                except Exception:
                    owned = None
                if not owned:
                    continue
                owned.dead = True
                before = len(removed)
                entry: tuple[int, Registration]
                for entry in list(owned.values()):
                    seq, reg = entry
                    key = (reg[0], reg[1])
                    try:
                        current = table.pop(key, None)
                    except Exception:
                        continue
                    if current is not reg:
                        if current is not None:
                            table.setdefault(key, current)  # not ours: put it back
                        continue
                    self._unindex(reg, None)
                    removed.append((seq, _UNREGISTERED, reg))
                self._writes += len(removed) - before
            finally:
                shard.release()
        for seq, reg in self._groups.take_owner(owner):
            removed.append((seq, _LEFT, reg))
            self._writes += 1
        removed.sort(key=_first)
        if self._listeners.subscriptions:
            for _, kind, reg in removed:
                self._listeners.notify(_new_event((kind, reg, "owner")))
        return len(removed)

    def unregister_select(self, ns: Hashable | None, query: Query) -> int:
        """Remove the names of ``ns`` (``None``: of every namespace) that
        ``select(ns, query)`` returns; one ``unregistered`` event each.

        An entry that another writer changed between the match and its
        removal stays.

        Returns:
            How many were removed.

        Raises:
            RegistryClosed: after :meth:`close`.
            InvalidKey: ``ns`` cannot be hashed or compared.
        """
        if self._closed:
            raise RegistryClosed()
        removed = 0
        for reg in self.select(ns, query):
            if self._unregister_if(reg):
                removed += 1
        return removed

    def _unregister_if(self, reg: Registration) -> bool:
        """Remove ``reg`` if it is still the entry under its key."""
        key = (reg[0], reg[1])
        shard = self._shards[hash(reg[1]) % self._n]
        shard.acquire()
        try:
            if self._closed:
                return False
            try:
                if self._table.get(key) is not reg:
                    return False
                current = self._table.pop(key, None)
            except Exception:
                return False
            if current is not reg:
                if current is not None:
                    self._table.setdefault(key, current)  # not ours: put it back
                return False
            self._unindex(reg, shard)
            self._writes += 1
        finally:
            shard.release()
        if self._listeners.subscriptions:
            self._listeners.notify(_new_event((_UNREGISTERED, reg, "explicit")))
        return True

    def join(
        self,
        ns: Hashable,
        group: Hashable,
        value: Any,
        metadata: Mapping[Any, Any] | None = None,
        *,
        owner: Hashable | None = None,
    ) -> Registration:
        """Add ``value`` to group ``(ns, group)`` (or update it if a member).

        Raises:
            InvalidKey: the group key or the owner cannot be hashed.
            InvalidMetadata: ``metadata`` is not a mapping.
            RegistryClosed: after :meth:`close`.
        """
        if self._closed:
            raise RegistryClosed()
        md = EMPTY_METADATA if metadata is None else copy_metadata(metadata)
        if owner is not None:
            check_owner(owner)
        reg = self._groups.join(ns, group, value, md, owner)
        self._writes += 1
        return reg

    def leave(self, ns: Hashable, group: Hashable, value: Any) -> bool:
        """Remove ``value`` from group ``(ns, group)``.

        Returns:
            True if it was a member; False if not, or when closed.

        Raises:
            InvalidKey: the group key cannot be hashed or compared.
        """
        left = self._groups.leave(ns, group, value)
        if left:
            self._writes += 1
        return left

    # --------------------------------------------------------- events, admin

    def subscribe(self, listener: Callable[[RegistryEvent], None]) -> Callable[[], None]:
        """Call ``listener(event)`` after each write; returns an unsubscribe."""
        return self._listeners.add(listener)

    def stats(self) -> RegistryStats:
        """A snapshot of the counters (hits/misses may undercount under threads)."""
        namespaces: set[Any] = {ns for ns, bucket in list(self._by_ns.items()) if bucket}
        namespaces |= self._groups.namespaces()
        return RegistryStats(
            backend=self.name,
            partitions=self.partitions,
            registrations=len(self._table),
            memberships=self._groups.count(),
            namespaces=len(namespaces),
            hits=self._hits,
            misses=self._misses,
            writes=self._writes,
            conflicts=self._conflicts,
            closed=self._closed,
        )

    def health_check(self) -> Health:
        """Healthy while open; a closed backend reports ``ok=False``."""
        if self._closed:
            return Health(ok=False, backend=self.name, detail="closed")
        return Health(
            ok=True,
            backend=self.name,
            detail=f"{len(self._table)} registrations in {self.partitions} partitions",
        )

    def close(self) -> None:
        """Refuse further writes; idempotent. Reads keep the last state.

        Returns once writes already inside a shard lock have finished.
        """
        self._closed = True
        self._groups.close()
        for shard in self._shards:
            with shard.lock:
                pass


def _first(item: tuple[Any, ...]) -> Any:
    return item[0]
