"""The pure-Python registry backend: the typed reference twin of ``_native``.

It behaves exactly like the native backend (the conformance suite runs on
both) and is what ``FOUNDATION_NO_EXTENSIONS=1`` and PyPy use. It is slower
than the native table (every read is a Python frame, ~100 ns before any
work), so prefer the native backend where it is built.

Layout: ``partitions`` shards, each a dict ``(ns, name) -> Registration`` with
its own write lock, a namespace index (``ns -> {name: Registration}``, so
``names(ns)``/``count(ns)`` cost O(entries of ns)) and an owner index
(``owner -> {key: None}``, so ``unregister_owner`` costs O(its entries)). A key
lives in shard ``hash((ns, name)) % partitions``.

Reads take no lock: a single dict operation, or a copy of a dict view made in
C, is atomic under the GIL, and in a free-threaded build each dict locks
itself. Writes take their shard's ``threading.RLock``: re-entrant, because a
key's or value's ``__eq__`` is Python code that may call back into the
registry from the same thread. Separate shards let free-threaded writers
proceed in parallel (DESIGN section 2 measured 1.3x from 1 to 2 threads).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from ..errors import AlreadyRegistered, ConfigError, NotRegistered, RegistryClosed
from ._events import Listeners
from ._groups import GroupTable
from ._keys import check_owner, copy_metadata, invalid_key, same_owner, same_value
from ._mdindex import MetadataIndex
from ._query import Query
from ._types import EventKind, Health, Registration, RegistryEvent, RegistryStats

__all__ = ["PythonBackend"]

_log = logging.getLogger("foundation.registry")

# Registration(...) goes through the NamedTuple's Python-level __new__
# (~300 ns here); tuple.__new__ bound by partial builds the same object in C.
_new_registration = functools.partial(tuple.__new__, Registration)

_Key = tuple[Any, Any]


class _Shard:
    """One partition: its table, its indexes and its write lock."""

    __slots__ = ("by_ns", "by_owner", "lock", "table")

    def __init__(self) -> None:
        self.table: dict[_Key, Registration] = {}
        self.by_ns: dict[Any, dict[Any, Registration]] = {}
        self.by_owner: dict[Hashable, dict[_Key, None]] = {}
        self.lock = threading.RLock()


def _check_partitions(partitions: int | None) -> int:
    if partitions is None:
        return os.cpu_count() or 1
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise ConfigError(
            f"partitions must be an int >= 1 (or None for os.cpu_count()), not {partitions!r}"
        )
    return partitions


class PythonBackend:
    """Sharded in-process registry table in pure Python.

    See :mod:`foundation.registry._backend` for the contract every method
    follows; the facade binds its reads and ``*_nowait`` writes straight to
    these methods.

    Args:
        partitions: number of shards; default ``os.cpu_count()``.
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
        # The read path indexes this tuple directly: one attribute load fewer.
        self._tables: tuple[dict[_Key, Registration], ...] = tuple(s.table for s in self._shards)
        self._n = self.partitions
        self._listeners = Listeners()
        self._groups = GroupTable(self._listeners.notify)
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
            reg = self._tables[hash(key) % self._n].get(key)
        except Exception as exc:
            raise invalid_key(ns, name, exc) from exc
        if reg is None:
            self._misses += 1
            raise NotRegistered(key)
        self._hits += 1
        return reg.value

    def get(self, ns: Hashable, name: Hashable, default: Any = None) -> Any:
        """Return the value under ``(ns, name)``, or ``default``.

        Raises:
            InvalidKey: the key cannot be hashed or compared.
        """
        key = (ns, name)
        try:
            reg = self._tables[hash(key) % self._n].get(key)
        except Exception as exc:
            raise invalid_key(ns, name, exc) from exc
        if reg is None:
            self._misses += 1
            return default
        self._hits += 1
        return reg.value

    def _find(self, ns: Hashable, name: Hashable) -> Registration:
        key = (ns, name)
        try:
            reg = self._tables[hash(key) % self._n].get(key)
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
        key = (ns, name)
        try:
            return key in self._tables[hash(key) % self._n]
        except Exception as exc:
            raise invalid_key(ns, name, exc) from exc

    def _ns_dicts(self, ns: Hashable) -> list[dict[Any, Registration]]:
        out = []
        for shard in self._shards:
            try:
                names = shard.by_ns.get(ns)
            except Exception as exc:
                raise invalid_key(ns, None, exc) from exc
            if names:
                out.append(names)
        return out

    def names(self, ns: Hashable) -> list[Any]:
        """The unique names registered in ``ns`` (groups excluded); O(entries of ns).

        Order: by shard, then registration order within a shard.
        """
        out: list[Any] = []
        for names in self._ns_dicts(ns):
            out.extend(names)  # copied in C: atomic under the GIL
        return out

    def registrations(self, ns: Hashable | None = None) -> list[Registration]:
        """Every registration of ``ns`` (``None``: of every namespace)."""
        out: list[Registration] = []
        if ns is None:
            for table in self._tables:
                out.extend(table.values())
        else:
            for names in self._ns_dicts(ns):
                out.extend(names.values())
        return out

    def list_all(self) -> list[Registration]:
        """Every registration (the seed system's callback name)."""
        return self.registrations(None)

    def count(self, ns: Hashable | None = None) -> int:
        """How many unique names ``ns`` has (``None``: all namespaces)."""
        if ns is None:
            return sum(len(table) for table in self._tables)
        return sum(len(names) for names in self._ns_dicts(ns))

    def __len__(self) -> int:
        return self.count()

    def select(self, ns: Hashable | None, query: Query) -> list[Registration]:
        """Registrations of ``ns`` (``None``: all) whose metadata matches ``query``.

        Uses a metadata index when ``query`` tests an indexed field for
        equality (O(matches)); otherwise scans the namespace. Exceptions from
        the query's predicate propagate.
        """
        index = self._index
        if index is not None:
            keys = index.candidates(ns, query)
            if keys is not None:
                out: list[Registration] = []
                tables, n = self._tables, self._n
                for key in keys:
                    reg = tables[hash(key) % n].get(key)
                    if reg is not None and query.matches(reg):
                        out.append(reg)
                return out
        if query.predicate is None:
            matches = query.metadata_matches
            return [reg for reg in self.registrations(ns) if matches(reg.metadata)]
        return [reg for reg in self.registrations(ns) if query.matches(reg)]

    def members(self, ns: Hashable, group: Hashable) -> list[Registration]:
        """The members of group ``(ns, group)``, in join order."""
        return self._groups.members(ns, group)

    def member_count(self, ns: Hashable, group: Hashable) -> int:
        """How many members group ``(ns, group)`` has."""
        return self._groups.member_count(ns, group)

    def memberships(self, ns: Hashable | None = None) -> list[Registration]:
        """Every group membership of ``ns`` (``None``: all); used by ``migrate``.

        Part of the Backend protocol.
        """
        return self._groups.all(ns)

    # ----------------------------------------------------------------- writes

    def _shard(self, ns: Hashable, name: Hashable) -> tuple[_Key, _Shard]:
        key = (ns, name)
        try:
            return key, self._shards[hash(key) % self._n]
        except Exception as exc:
            raise invalid_key(ns, name, exc) from exc

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
        md = copy_metadata(metadata)
        check_owner(owner)
        key, shard = self._shard(ns, name)
        new = _new_registration((ns, name, value, md, owner))
        table = shard.table
        with shard.lock:
            while True:
                if self._closed:
                    raise RegistryClosed()
                try:
                    if owner is not None:
                        shard.by_owner.get(owner)  # fail before writing, not after
                    current = table.setdefault(key, new)
                except Exception as exc:
                    raise invalid_key(ns, name, exc) from exc
                if current is new:
                    try:
                        shard.by_ns.setdefault(ns, {})[name] = new
                        if owner is not None:
                            shard.by_owner.setdefault(owner, {})[key] = None
                    except Exception as exc:
                        self._rollback(shard, key, new)
                        raise invalid_key(ns, name, exc) from exc
                    if self._index is not None:
                        self._index.add(ns, name, md)
                    kind = EventKind.REGISTERED
                    reg = new
                    break
                same = same_value(current.value, value) and same_owner(current.owner, owner)
                if table.get(key) is not current:
                    continue  # an __eq__ re-entered and changed the key: retry
                if not same:
                    self._conflicts += 1
                    raise AlreadyRegistered(key, current)
                reg = Registration(
                    current.namespace, current.name, current.value, md, current.owner
                )
                self._replace(shard, key, current, reg)
                kind = EventKind.UPDATED
                break
            self._writes += 1
        if self._listeners.subscriptions:
            self._listeners.notify(RegistryEvent(kind, reg))
        return reg

    def _rollback(self, shard: _Shard, key: _Key, reg: Registration) -> None:
        """Undo a half-done insert (an index probe raised); best effort."""
        try:
            if shard.table.get(key) is reg:
                del shard.table[key]
            names = shard.by_ns.get(key[0])
            if names is not None and names.get(key[1]) is reg:
                del names[key[1]]
                if not names:
                    del shard.by_ns[key[0]]
        except Exception:
            # The key's own __eq__ raised again while undoing; the error the
            # caller gets is the first one, so record this one here.
            _log.exception("could not roll back a failed register of %r", key)

    def _replace(self, shard: _Shard, key: _Key, old: Registration, new: Registration) -> None:
        """Swap ``old`` for ``new`` (same key and owner) in the table and indexes."""
        shard.table[key] = new
        shard.by_ns[old.namespace][old.name] = new
        if self._index is not None:
            self._index.remove(old.namespace, old.name, old.metadata)
            self._index.add(new.namespace, new.name, new.metadata)

    def _drop(self, shard: _Shard, key: _Key, reg: Registration, *, owner_too: bool) -> None:
        """Remove ``reg`` (already popped from the table) from the indexes."""
        names = shard.by_ns.get(reg.namespace)
        if names is not None:
            names.pop(reg.name, None)
            if not names:
                del shard.by_ns[reg.namespace]
        if owner_too and reg.owner is not None:
            keys = shard.by_owner.get(reg.owner)
            if keys is not None:
                keys.pop(key, None)
                if not keys:
                    del shard.by_owner[reg.owner]
        if self._index is not None:
            self._index.remove(reg.namespace, reg.name, reg.metadata)

    def unregister(self, ns: Hashable, name: Hashable) -> bool:
        """Remove ``(ns, name)``.

        Returns:
            True if it was registered; False if absent or closed.

        Raises:
            InvalidKey: the key cannot be hashed or compared (only then).
        """
        key, shard = self._shard(ns, name)
        with shard.lock:
            if self._closed:
                return False
            try:
                reg = shard.table.pop(key, None)
            except Exception as exc:
                raise invalid_key(ns, name, exc) from exc
            if reg is None:
                return False
            self._drop(shard, key, reg, owner_too=True)
            self._writes += 1
        if self._listeners.subscriptions:
            self._listeners.notify(RegistryEvent(EventKind.UNREGISTERED, reg))
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
        key, shard = self._shard(ns, name)
        with shard.lock:
            if self._closed:
                raise RegistryClosed()
            try:
                current = shard.table.get(key)
            except Exception as exc:
                raise invalid_key(ns, name, exc) from exc
            if current is None:
                raise NotRegistered(key)
            reg = Registration(current.namespace, current.name, current.value, md, current.owner)
            self._replace(shard, key, current, reg)
            self._writes += 1
        if self._listeners.subscriptions:
            self._listeners.notify(RegistryEvent(EventKind.UPDATED, reg))
        return reg

    def unregister_owner(self, owner: Hashable) -> int:
        """Remove every registration and membership of ``owner``.

        O(partitions + its entries). ``owner=None`` removes nothing: unowned
        entries belong to no one. One event per removed entry.

        Returns:
            How many entries were removed (0 when closed).

        Raises:
            InvalidKey: ``owner`` is not hashable.
        """
        check_owner(owner)
        if owner is None or self._closed:
            return 0
        removed: list[Registration] = []
        for shard in self._shards:
            if not shard.by_owner:
                continue
            with shard.lock:
                if self.closed:  # close() raced us (a property: mypy must not narrow)
                    break
                try:
                    keys = shard.by_owner.pop(owner, None)
                except Exception:
                    keys = None
                if not keys:
                    continue
                before = len(removed)
                for key in keys:
                    reg = shard.table.pop(key, None)
                    if reg is None:
                        continue
                    self._drop(shard, key, reg, owner_too=False)
                    removed.append(reg)
                self._writes += len(removed) - before
        if self._listeners.subscriptions:
            for reg in removed:
                self._listeners.notify(RegistryEvent(EventKind.UNREGISTERED, reg))
        left = self._groups.unregister_owner(owner)
        self._writes += left
        return len(removed) + left

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
        md = copy_metadata(metadata)
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
        namespaces: set[Any] = set()
        for shard in self._shards:
            namespaces.update(list(shard.by_ns))
        namespaces |= self._groups.namespaces()
        return RegistryStats(
            backend=self.name,
            partitions=self.partitions,
            registrations=self.count(),
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
            detail=f"{self.count()} registrations in {self.partitions} partitions",
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
