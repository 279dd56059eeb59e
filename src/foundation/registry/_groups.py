"""Process groups: duplicate keys, shared by every local backend.

A group is a key ``(ns, group)`` with any number of members, like Erlang's
``pg`` or Elixir's ``Registry`` with ``keys: :duplicate``. Groups are their own
key space: a group and a unique name may share a key without clashing.

Members are identified by their value (``is`` or ``==``, see
:func:`~foundation.registry._keys.same_value`), and values may be unhashable
(a dict, a list, a trio channel wrapper). Hashable values are found through a
dict (O(1) join/leave, so 1e5 members in one group stay cheap); the rest live
in a side table scanned linearly, which costs only the callers who use
unhashable values.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any

from ..errors import RegistryClosed
from ._keys import invalid_key, same_value
from ._types import EventKind, EventReason, Registration, RegistryEvent

__all__ = ["GroupTable"]

_Notify = Callable[[RegistryEvent], None]
_GroupKey = tuple[Any, Any]
# A membership handle in the owner index: the group's key and the member's
# sequence number inside that group.
_Handle = tuple[_GroupKey, int]


class _Group:
    """The members of one ``(ns, group)`` key, in join order.

    ``ns`` and ``name`` are the key objects exactly as the group's first
    joiner gave them; every member's registration carries these. They are
    kept here rather than read off the first member, because finding the
    first live entry of ``entries`` scans past every slot its deleted members
    left at the front of the dict: under FIFO churn (the oldest member
    leaves, a new one joins) that made a join O(group size), and a churn
    cycle cost ~30 us at 1e5 members instead of ~5.5 us (``bench --scale``).
    """

    __slots__ = ("by_value", "entries", "loose", "name", "ns", "seq")

    def __init__(self, ns: Any, name: Any, seq: Iterator[int]) -> None:
        self.ns = ns
        self.name = name
        # seq -> Registration; a dict keeps join order and removes in O(1).
        # The seqs come from the backend's one write sequence, so members of
        # every group (and names) sort into one join order.
        self.entries: dict[int, Registration] = {}
        # hashable value -> seq. May hold stale seqs (see _forget); a seq
        # found here counts only if it is still in ``entries``.
        self.by_value: dict[Any, int] = {}
        # seqs of members that could not go into by_value (unhashable, or
        # whose __eq__ raised while inserting); scanned with same_value.
        self.loose: dict[int, None] = {}
        self.seq = seq

    def find(self, value: Any) -> int | None:
        """Return the seq of the member whose value is ``value``, or None."""
        scan_all = False
        try:
            hash(value)
            hashable = True
        except Exception:
            # Unhashable (or a raising __hash__): such members live in
            # ``loose`` only, scanned below.
            hashable = False
        if hashable:
            try:
                seq = self.by_value.get(value)
            except Exception:
                # A member's (or the value's) __eq__ raised during the probe;
                # fall back to a linear scan that treats that as "different".
                seq = None
                scan_all = True
            if seq is not None and seq in self.entries:
                return seq
        entries = self.entries
        for seq in tuple(self.loose):
            reg = entries.get(seq)
            if reg is not None and same_value(reg.value, value):
                return seq
        if scan_all:
            for seq, reg in tuple(entries.items()):
                if same_value(reg.value, value):
                    return seq
        return None

    def add(self, reg: Registration) -> int:
        """Append a new member; return its seq."""
        seq = next(self.seq)
        value = reg.value
        try:
            hash(value)
            self.by_value[value] = seq
        except Exception:
            self.loose[seq] = None
        self.entries[seq] = reg
        return seq

    def forget(self, seq: int) -> Registration:
        """Remove member ``seq`` (which must exist); return its registration."""
        reg = self.entries.pop(seq)
        if self.loose.pop(seq, 0) is None:
            return reg
        try:
            if self.by_value.get(reg.value) == seq:
                del self.by_value[reg.value]
        except Exception:
            # The probe ran a raising __eq__; leave a stale by_value entry,
            # which find() ignores because its seq is gone from entries.
            pass
        return reg


class GroupTable:
    """Every group of one backend, with an owner index.

    Thread-safe: writes hold one internal ``threading.RLock`` (re-entrant,
    because a value's or key's ``__eq__`` is Python code that may call back
    into the registry) and emit their events after releasing it. Reads take
    no lock: they copy dict views in C, which is atomic under the GIL.

    Args:
        notify: called with each :class:`RegistryEvent` after the change, from
            the writing thread and outside the lock (usually
            :meth:`Listeners.notify <foundation.registry._events.Listeners.notify>`).
        seq: where members' join sequence numbers come from: the backend's
            one write sequence, so that memberships and names sort into one
            order (a counter of its own by default).
    """

    __slots__ = ("_closed", "_count", "_groups", "_lock", "_notify", "_owners", "_seq")

    def __init__(self, notify: _Notify, seq: Iterator[int] | None = None) -> None:
        self._notify = notify
        self._seq = seq if seq is not None else itertools.count(1)
        self._lock = threading.RLock()
        self._groups: dict[_GroupKey, _Group] = {}
        # owner -> {handle: None}; owner None (unowned) is not indexed.
        self._owners: dict[Hashable, dict[_Handle, None]] = {}
        self._count = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _group(self, ns: Any, group: Any) -> _Group | None:
        key = (ns, group)
        try:
            return self._groups.get(key)
        except Exception as exc:
            raise invalid_key(ns, group, exc) from exc

    def join(
        self,
        ns: Any,
        group: Any,
        value: Any,
        metadata: Mapping[Any, Any],
        owner: Hashable | None,
    ) -> Registration:
        """Add ``value`` to the group, or update it if already a member.

        Args:
            ns: the namespace.
            group: the group's name.
            value: the member; any object (``is``/``==`` identifies it).
            metadata: already copied and read-only (see ``copy_metadata``).
            owner: already checked hashable (see ``check_owner``).

        Returns:
            The member's registration (``name`` is the group).

        Raises:
            InvalidKey: ``(ns, group)`` cannot be hashed or compared.
            RegistryClosed: after :meth:`close`.
        """
        key = (ns, group)
        with self._lock:
            if self._closed:
                raise RegistryClosed()
            try:
                grp = self._groups.get(key)
            except Exception as exc:
                raise invalid_key(ns, group, exc) from exc
            if owner is not None:
                # Probe the owner index before writing: an owner whose __eq__
                # raises must fail here, not half-way through.
                try:
                    self._owners.get(owner)
                except Exception as exc:
                    raise invalid_key(ns, group, exc) from exc
            seq = None if grp is None else grp.find(value)
            if grp is None or seq is None:
                if grp is None:
                    # Keep the key exactly as given by the first joiner.
                    grp = _Group(ns, group, self._seq)
                    self._groups[key] = grp
                reg = Registration(grp.ns, grp.name, value, metadata, owner)
                seq = grp.add(reg)
                self._count += 1
                if owner is not None:
                    self._owners.setdefault(owner, {})[(key, seq)] = None
                kind = EventKind.JOINED
            else:
                old = grp.entries[seq]
                reg = Registration(old.namespace, old.name, old.value, metadata, owner)
                grp.entries[seq] = reg
                if old.owner is not owner:
                    self._unindex_owner(old.owner, (key, seq))
                    if owner is not None:
                        self._owners.setdefault(owner, {})[(key, seq)] = None
                kind = EventKind.UPDATED
        reason: EventReason = "explicit" if kind is EventKind.JOINED else "replaced"
        self._notify(RegistryEvent(kind, reg, reason))
        return reg

    def _unindex_owner(self, owner: Hashable | None, handle: _Handle) -> None:
        if owner is None:
            return
        handles = self._owners.get(owner)
        if handles is not None:
            handles.pop(handle, None)
            if not handles:
                del self._owners[owner]

    def leave(self, ns: Any, group: Any, value: Any) -> bool:
        """Remove ``value`` from the group.

        Returns:
            True if it was a member; False if not, or after :meth:`close`.

        Raises:
            InvalidKey: ``(ns, group)`` cannot be hashed or compared.
        """
        key = (ns, group)
        with self._lock:
            if self._closed:
                return False
            try:
                grp = self._groups.get(key)
            except Exception as exc:
                raise invalid_key(ns, group, exc) from exc
            if grp is None:
                return False
            seq = grp.find(value)
            if seq is None:
                return False
            reg = self._remove(key, grp, seq)
            self._unindex_owner(reg.owner, (key, seq))
        self._notify(RegistryEvent(EventKind.LEFT, reg))
        return True

    def _remove(self, key: _GroupKey, grp: _Group, seq: int) -> Registration:
        reg = grp.forget(seq)
        self._count -= 1
        if not grp.entries:
            self._groups.pop(key, None)
        return reg

    def unregister_owner(self, owner: Hashable | None) -> int:
        """Remove every membership of ``owner``; O(its memberships).

        ``owner=None`` removes nothing: unowned members belong to no one.

        Returns:
            How many memberships were removed (0 after :meth:`close`).
        """
        removed = self.take_owner(owner)
        for _, reg in removed:
            self._notify(RegistryEvent(EventKind.LEFT, reg, "owner"))
        return len(removed)

    def take_owner(self, owner: Hashable | None) -> list[tuple[int, Registration]]:
        """Remove every membership of ``owner`` without notifying; returns
        them as ``(join sequence, registration)``, in join order (the caller
        emits the ``left`` events, in order with its own)."""
        if owner is None:
            return []
        removed: list[tuple[int, Registration]] = []
        with self._lock:
            if self._closed:
                return []
            try:
                handles = self._owners.pop(owner, None)
            except Exception:
                return []
            if not handles:
                return []
            for key, seq in handles:
                grp = self._groups.get(key)
                if grp is None or seq not in grp.entries:
                    continue
                removed.append((seq, self._remove(key, grp, seq)))
        removed.sort(key=_first)
        return removed

    def owned(self, owner: Hashable | None) -> list[tuple[int, Registration]]:
        """The memberships of ``owner`` as ``(join sequence, registration)``
        (unsorted); O(its memberships)."""
        if owner is None:
            return []
        try:
            handles = self._owners.get(owner)
        except Exception:
            return []
        if not handles:
            return []
        found: list[tuple[int, Registration]] = []
        for key, seq in list(handles):
            grp = self._groups.get(key)
            reg = None if grp is None else grp.entries.get(seq)
            if reg is not None:
                found.append((seq, reg))
        return found

    def members(self, ns: Any, group: Any) -> list[Registration]:
        """The group's members in join order (an empty list if none)."""
        grp = self._group(ns, group)
        if grp is None:
            return []
        return list(grp.entries.values())

    def member_count(self, ns: Any, group: Any) -> int:
        """How many members the group has."""
        grp = self._group(ns, group)
        return 0 if grp is None else len(grp.entries)

    def count(self) -> int:
        """All memberships of all groups."""
        return self._count

    def all(self, ns: Any = None) -> list[Registration]:
        """Every membership (of ``ns``; ``None``: of every namespace), in
        join order across groups."""
        found: list[tuple[int, Registration]] = []
        for (gns, _group), grp in list(self._groups.items()):
            if ns is None or same_value(gns, ns):
                found.extend(list(grp.entries.items()))
        found.sort(key=_first)
        return [reg for _, reg in found]

    def namespaces(self) -> set[Any]:
        """The namespaces that have at least one group."""
        return {key[0] for key in list(self._groups)}

    def close(self) -> None:
        """Refuse further joins; ``leave``/``unregister_owner`` become no-ops.

        Reads keep answering from the last state.
        """
        with self._lock:
            self._closed = True


def _first(item: tuple[int, Registration]) -> int:
    return item[0]
