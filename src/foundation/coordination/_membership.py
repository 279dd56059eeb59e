"""What every coordinator's membership shares: the member view, its watch, rendezvous hashing.

:class:`MemberView` is one group's live members with their metadata, and a
version that changes with them; :class:`MemberWatch` iterates over it the
way ``group.watch()`` promises (the current list first, then the list after
each change, a slow consumer skipping to the latest). :func:`owner_of` is
rendezvous (highest-random-weight) hashing: every member scores the key,
the highest score owns it, so adding or removing a member moves only the
keys it wins or held. The score is the first 8 bytes of
``blake2b(member + "\\0" + key)`` (UTF-8), big-endian: the same in every
process and on every platform, unlike :func:`hash`, which is salted per
process for ``str``. Equal scores (never seen in practice) go to the
greater member id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import trio

from ..errors import ConfigError

__all__ = ["GroupMembership", "MemberView", "MemberWatch", "owner_of"]


def _score(member: str, key: bytes) -> int:
    digest = hashlib.blake2b(
        member.encode("utf-8", "surrogatepass") + b"\0" + key, digest_size=8
    ).digest()
    return int.from_bytes(digest, "big")


def owner_of(members: Iterable[str], key: str) -> str | None:
    """The member that owns ``key`` by rendezvous hashing, or None when there are none.

    Raises:
        ConfigError: ``key`` is not a str (encode other keys first, e.g.
            ``json.dumps(key, sort_keys=True)``).
    """
    if not isinstance(key, str):
        raise ConfigError(
            f"owner_of() takes a str key, got {type(key).__name__} {key!r}: encode it first,"
            " e.g. owner_of(json.dumps(key, sort_keys=True))"
        )
    raw = key.encode("utf-8", "surrogatepass")
    best: str | None = None
    best_score = -1
    for member in members:
        score = _score(member, raw)
        if score > best_score or (score == best_score and best is not None and member > best):
            best, best_score = member, score
    return best


class MemberView:
    """One group's live members (id -> metadata) and a version bumped on each change."""

    __slots__ = ("_changed", "_members", "_sorted", "error", "version")

    def __init__(self) -> None:
        self._members: dict[str, Any] = {}
        self._sorted: list[str] = []
        #: Bumped on every change of the members (or when the view ends).
        self.version = 0
        #: Set when the view stopped following the group (raised by its watchers).
        self.error: BaseException | None = None
        self._changed = trio.Event()

    def __contains__(self, member: object) -> bool:
        return member in self._members

    def __len__(self) -> int:
        return len(self._members)

    def members(self) -> list[str]:
        """The member ids, sorted (a new list)."""
        return list(self._sorted)

    def metadata(self) -> Mapping[str, Any]:
        """``{member: metadata}`` in member order (a read-only copy)."""
        return MappingProxyType({m: self._members[m] for m in self._sorted})

    def set(self, member: str, metadata: Any) -> None:
        """Add ``member`` (or give it new metadata)."""
        known = member in self._members
        if known and self._members[member] == metadata:
            return
        self._members[member] = metadata
        if not known:
            self._sorted = sorted(self._members)
        self.bump()

    def remove(self, member: str) -> None:
        """Remove ``member`` if present."""
        if self._members.pop(member, _ABSENT) is not _ABSENT:
            self._sorted = sorted(self._members)
            self.bump()

    def replace(self, members: Mapping[str, Any]) -> None:
        """Make the view ``members`` (after a fresh read of the group)."""
        if dict(members) != self._members:
            self._members = dict(members)
            self._sorted = sorted(self._members)
            self.bump()

    def fail(self, error: BaseException) -> None:
        """The view stopped following the group: its watchers raise ``error``."""
        self.error = error
        self.bump()

    def bump(self) -> None:
        """A change: wake every waiter."""
        self.version += 1
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    async def wait_change(self, version: int) -> None:
        """Return once :attr:`version` differs from ``version``."""
        while self.version == version:
            await self._changed.wait()


_ABSENT = object()


class MemberWatch:
    """``async for members in group.watch()``: the current list, then each change.

    Changes that happen while the consumer is busy are coalesced: it gets
    the latest list, never the same list twice in a row. Ends when the
    membership is left (``active()`` turns false); raises the view's error
    if it stopped following the group.
    """

    __slots__ = ("_active", "_last", "_view")

    def __init__(self, view: MemberView, active: Callable[[], bool]) -> None:
        self._view = view
        self._active = active
        self._last: list[str] | None = None  # None: nothing yielded yet

    def __aiter__(self) -> MemberWatch:
        return self

    async def __anext__(self) -> list[str]:
        await trio.lowlevel.checkpoint()
        view = self._view
        while True:
            if view.error is not None:
                raise view.error
            if not self._active():
                raise StopAsyncIteration
            current = view.members()
            if current != self._last:
                self._last = current
                return current
            # Nothing new since the last list: wait for the next change.
            await view.wait_change(view.version)


class GroupMembership:
    """A joined membership, as ``async with coord.membership(group, member) as g`` yields it.

    The same on every coordinator. Sync methods never block; they answer
    from this process's view of the group (on etcd, fed by a watch, so
    another process's join or leave shows up a moment later). Once the
    ``async with`` block has been left, :meth:`watch` iterators end and
    the view is no longer kept up to date.
    """

    __slots__ = ("_view", "active", "group", "member")

    def __init__(self, group: str, member: str, view: MemberView) -> None:
        #: The group's name.
        self.group = group
        #: This member's id.
        self.member = member
        #: True while the membership's block runs.
        self.active = True
        self._view = view

    def __repr__(self) -> str:
        state = "joined" if self.active else "left"
        size = len(self._view)
        return f"<GroupMembership {self.member!r} of {self.group!r} {state}, {size} members>"

    def members(self) -> list[str]:
        """The live members' ids, sorted (this one included while it is joined)."""
        return self._view.members()

    def metadata(self) -> Mapping[str, Any]:
        """``{member: metadata}`` of the live members, in member order (read-only)."""
        return self._view.metadata()

    def owner_of(self, key: str) -> str | None:
        """The live member that owns ``key`` by rendezvous hashing; None if there are none.

        Every process computes the same owner from the same member list (the
        hash is ``blake2b``, not :func:`hash`). Keys are str: encode other
        keys first, the same way everywhere, e.g.
        ``owner_of(json.dumps(child_id, sort_keys=True))``.

        Raises:
            ConfigError: ``key`` is not a str.
        """
        return owner_of(self._view.members(), key)

    def watch(self) -> MemberWatch:
        """Iterate over the member list: the current list first, then the list after each change.

        A consumer slower than the changes skips to the latest list (it never
        gets the same list twice in a row). Each step checkpoints. The
        iteration ends when the membership is left.
        """
        return MemberWatch(self._view, lambda: self.active)
