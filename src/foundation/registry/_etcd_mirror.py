"""The etcd backend's read side: a local table kept equal to the prefix by a watch.

The table (native when built) is filled by a range of the whole prefix at
one revision, then kept current by a watch from the revision after it
(:mod:`._etcd_watch`); after a compaction the difference to a new range is
applied (:meth:`Mirror.diff_apply`). Every entry in
the table is recorded as ``key -> mod_revision``, which makes the watch's
echo of this instance's own writes, and any event older than what the table
holds, a no-op; a delete newer than anything known leaves a *tomb*, so a
write acknowledged after it never resurrects the key.

**What is skipped.** ``sync/`` (the sentinels of ``sync()``) and
``cluster/`` (reserved for the distributed supervisor, whose keys carry no
lease) are passed over silently. Anything else that does not decode (a
foreign writer's key or value, JSON nested deeper than the library writes)
is skipped with a warning and counted (``foreign_skipped`` in
``health_check().details``): one bad record must never take the watch down.

**This instance's own entries** (``mine``; the lease each is bound to in
``lease_of``) are not dropped from the view when etcd deletes them with a
lease this instance lost: they stay (``orphans``) until the lease keeper
(:mod:`._etcd_lease`) has put them back under a new lease, so their watchers
see nothing at all; only an entry that cannot be put back (another instance
took the name meanwhile: a *conflict*) is dropped, with an unregistration
event and ``foundation.registry.conflict`` telemetry. A delete of an entry
bound to the lease that seems alive is a *suspect* until a keepalive tells
a deliberate delete (dropped now) from a lease that just ended (an orphan).

**Why an entry changed.** The table's change events ARE the backend's,
relayed with the reason the mirror knows (``RegistryEvent.reason``): a write
of this instance gives ``"explicit"`` (an update: ``"replaced"``), or the
reason its writer gave (``"owner"`` for ``unregister_owner``); anything the
watch brings is ``"remote"``, another instance's lease ending included; an
own entry that could not be put back under a new lease is dropped with
``"lease"``. The table builds events only while someone listens, and so
does the relay.

**Pub/sub messages** (``prefix + "msg/" + instance``) are not entries: the
watch hands each put of another instance to :attr:`Mirror.on_message`
(while the registry has subscribers), and reads pass over them.

The watch that feeds the table, and how fresh the view is, are
:mod:`._etcd_watch`'s.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable, Iterable, Sequence
from operator import attrgetter
from types import MappingProxyType
from typing import Any, Protocol

import trio

from .. import errors, telemetry
from ..etcd import KeyValue
from ._backend import Backend
from ._etcd_codec import (
    CLUSTER,
    GRP,
    MSG,
    SYNC,
    Decoded,
    decode_entry,
    decode_key,
    decode_message,
)
from ._etcd_link import Link, logger
from ._events import Listeners
from ._keys import same_owner
from ._types import EMPTY_METADATA, EventKind, EventReason, Registration, RegistryEvent

__all__ = ["LeaseState", "Mirror", "registration"]

#: Tombs kept before the ones the watch has passed are pruned.
MAX_TOMBS = 4096

#: ``on_message(ns, topic, message)``: a message another instance published.
MessageListener = Callable[[Any, Any, Any], None]
_UPDATED = EventKind.UPDATED


class LeaseState(Protocol):
    """What the mirror needs from the lease keeper."""

    def live_lease_id(self) -> int:
        """The lease believed alive now (0 while a lost one is being replaced)."""
        ...

    def check_suspects(self) -> None:
        """Find out, with a keepalive, whether the suspects' lease is still alive."""
        ...

    def rebind_needed(self) -> None:
        """Some own entries are not bound to the live lease: put them back under it."""
        ...


def registration(entry: Decoded) -> Registration:
    metadata = MappingProxyType(dict(entry.metadata)) if entry.metadata else EMPTY_METADATA
    return Registration(entry.ns, entry.name, entry.value, metadata, entry.owner)


class Mirror:
    """The local table, how it is updated, and which of its entries are this instance's."""

    def __init__(self, link: Link, table: Backend) -> None:
        self.link = link
        self.table = table
        self.lease: LeaseState | None = None  # set by the backend once the keeper exists
        prefix = link.raw_prefix
        self._sync_prefix = prefix + SYNC
        self._cluster_prefix = prefix + CLUSTER
        self._msg_prefix = prefix + MSG
        #: Why the table changes now (set by each write before it touches the table).
        self.reason: EventReason = "remote"
        self._listeners = Listeners()
        self._unsubscribe_table: Callable[[], None] | None = None
        #: Where messages of other instances go (None: nobody subscribed here).
        self.on_message: MessageListener | None = None
        #: key -> mod_revision of every entry in the table
        self.revs: dict[bytes, int] = {}
        #: key -> revision of the newest delete known (events older than it are stale)
        self.tombs: dict[bytes, int] = {}
        #: member key -> (ns, group, value, metadata, owner)
        self.members: dict[bytes, tuple[Any, Any, Any, dict[str, Any], Any]] = {}
        #: key -> the registration being written in a batch now (the writer's)
        self.in_flight: dict[bytes, Any] = {}
        #: keys with another write in flight: their tombs are kept
        self.writing: dict[bytes, int] = {}
        #: key -> (raw value, reason) of a write of this instance in flight (raw
        #: None: a delete), so the watch's echo of it, when it comes before
        #: etcd's answer, is told as this instance's write, not a remote one
        self.echoes: dict[bytes, tuple[bytes | None, EventReason]] = {}
        self._released = trio.Event()

        #: entries this instance wrote, the lease each is bound to, and by owner
        self.mine: dict[bytes, Decoded] = {}
        self.lease_of: dict[bytes, int] = {}
        self.by_owner: dict[Hashable, dict[bytes, None]] = {}
        #: own entries etcd deleted with a lost lease: kept in the view, put back
        self.orphans: dict[bytes, None] = {}
        #: own entries deleted while their lease seemed alive: key -> delete revision
        self.suspects: dict[bytes, int] = {}
        self.suspects_changed = trio.Event()
        self.conflicts = 0

        self.applied = 0  # highest revision the table reflects
        self._sync_waiters: list[tuple[int, int, trio.Event]] = []

        self.foreign = 0
        self.foreign_last: str | None = None
        #: trio time the lease was lost (own entries may be gone), None while bound
        self.lease_lost_at: float | None = None

    # ------------------------------------------------------------ applying

    # ------------------------------------------------------------ events

    def subscribe(self, listener: Callable[[RegistryEvent], None]) -> Callable[[], None]:
        """The backend's ``subscribe``: the table's events, with their reason.

        The relay is subscribed to the table only while someone listens, so
        writes build no events otherwise (as on a local backend).
        """
        unsubscribe = self._listeners.add(listener)
        if self._unsubscribe_table is None:
            self._unsubscribe_table = self.table.subscribe(self._relay)

        def undo() -> None:
            unsubscribe()
            if not self._listeners.subscriptions and self._unsubscribe_table is not None:
                self._unsubscribe_table()
                self._unsubscribe_table = None

        return undo

    def _relay(self, event: RegistryEvent) -> None:
        reason = self.reason
        kind = event[0]
        if reason == "explicit" and kind == _UPDATED:
            reason = "replaced"
        self._listeners.notify(RegistryEvent(kind, event[1], reason))

    # ------------------------------------------------------------ applying

    def apply_put(
        self,
        key: bytes,
        entry: Decoded,
        revision: int,
        lease: int | None = None,
        *,
        reason: EventReason = "remote",
    ) -> Registration | None:
        """Apply an entry as of ``revision`` (``lease``: the one it is bound to, if known).

        ``reason``: why, for the events (an update by this instance reads
        ``"replaced"`` when ``reason`` is ``"explicit"``). Returns the new
        Registration; None if the table knows newer, or already held exactly
        this entry (nothing changed, no event).
        """
        if revision <= self.revs.get(key, 0) or revision <= self.tombs.get(key, 0):
            return None
        if self.link.closed:
            return None
        self.tombs.pop(key, None)
        self.revs[key] = revision
        old = self.mine.get(key)
        if (
            old is not None
            and entry.instance != self.link.instance_id
            and self._lost_with_lease(key)
        ):
            # Another instance took one of ours while our lease was lost: ours
            # goes first (reason "lease"), then theirs comes (never merged
            # into one "updated" event that would hide the loss).
            self.report_conflict(old, entry)
            self._forget(key, old)
            self.reason = "lease"
            self._remove_table(key, old)
        self.reason = reason
        reg = self._put_table(key, entry)
        self._track(key, entry, lease)
        return reg

    def _put_table(self, key: bytes, entry: Decoded) -> Registration | None:
        table = self.table
        if entry.is_member:
            old = self.members.get(key)
            if (
                old is not None
                and old[2] == entry.value
                and old[3] == entry.metadata
                and same_owner(old[4], entry.owner)
            ):
                return None
            self.members[key] = (entry.ns, entry.name, entry.value, entry.metadata, entry.owner)
            return table.join(entry.ns, entry.name, entry.value, entry.metadata, owner=entry.owner)
        current: Registration | None = None
        if table.contains(entry.ns, entry.name):  # (a miss would build an exception)
            current = table.lookup_with_metadata(entry.ns, entry.name)
        if current is None:
            return table.register(
                entry.ns, entry.name, entry.value, entry.metadata, owner=entry.owner
            )
        if same_owner(current.owner, entry.owner):
            same_metadata = dict(current.metadata) == entry.metadata
            if current.value == entry.value:
                if same_metadata:
                    return None  # put back as it was (a new lease): nothing to tell
                return table.update_metadata(entry.ns, entry.name, entry.metadata)
            # A new value (update_value, here or elsewhere): one "updated"
            # event, as locally, not an unregistration and a registration.
            reg = table.update_value(entry.ns, entry.name, entry.value)
            if not same_metadata:
                reg = table.update_metadata(entry.ns, entry.name, entry.metadata)
            return reg
        table.unregister(entry.ns, entry.name)
        return table.register(entry.ns, entry.name, entry.value, entry.metadata, owner=entry.owner)

    def _track(self, key: bytes, entry: Decoded, lease: int | None) -> None:
        mine = self.mine
        old = mine.get(key)
        if entry.instance == self.link.instance_id:
            if old is not None and old.owner is not None:
                self._unindex(key, old.owner)
            mine[key] = entry
            if lease is not None:
                self.lease_of[key] = lease
            if key in self.orphans:
                del self.orphans[key]
            if key in self.suspects:
                del self.suspects[key]
                self._suspects_changed()
            if entry.owner is not None:
                self.by_owner.setdefault(entry.owner, {})[key] = None
        elif old is not None:
            # Another instance holds the name now (it overwrote ours while
            # our lease was alive: a join of the same member; a conflict was
            # handled by apply_put).
            self._forget(key, old)

    def _lost_with_lease(self, key: bytes) -> bool:
        live = self.lease.live_lease_id() if self.lease is not None else 0
        return key in self.orphans or self.lease_of.get(key, 0) != live

    def _forget(self, key: bytes, entry: Decoded) -> None:
        """``key`` is no longer this instance's (the table is the caller's business)."""
        self.mine.pop(key, None)
        self.lease_of.pop(key, None)
        self.orphans.pop(key, None)
        if self.suspects.pop(key, None) is not None:
            self._suspects_changed()
        if entry.owner is not None:
            self._unindex(key, entry.owner)

    def _unindex(self, key: bytes, owner: Hashable) -> None:
        keys = self.by_owner.get(owner)
        if keys is not None:
            keys.pop(key, None)
            if not keys:
                del self.by_owner[owner]

    def apply_delete(
        self, key: bytes, revision: int, *, ours: bool, reason: EventReason = "remote"
    ) -> bool:
        """Apply a delete as of ``revision``; ``ours``: this instance deleted it.

        ``reason``: why, for the event. True if an entry left the view.
        """
        if self.link.closed:
            return False
        if revision > self.tombs.get(key, 0):
            self.tombs[key] = revision  # a write acknowledged before it is stale now
        current = self.revs.get(key)
        if current is None or revision <= current:
            return False
        entry = self.mine.get(key)
        if entry is not None and not ours:
            live = self.lease.live_lease_id() if self.lease is not None else 0
            if live == 0 or self.lease_of.get(key, 0) != live:
                # Gone with a lease this instance lost: keep it, put it back.
                self.orphans[key] = None
                if self.lease is not None and live:
                    self.lease.rebind_needed()
            else:
                self.suspects[key] = revision
                if self.lease is not None:
                    self.lease.check_suspects()
            return False
        self._drop(key, reason)
        return True

    def _drop(self, key: bytes, reason: EventReason) -> None:
        """Remove ``key`` from the view (an unregistered/left event) and from ``mine``."""
        self.revs.pop(key, None)
        entry = self.mine.get(key)
        if entry is not None:
            self._forget(key, entry)
        self.reason = reason
        self._remove_table(key, None)

    def _remove_table(self, key: bytes, entry: Decoded | None) -> None:
        """Take ``key``'s entry out of the table (its event has ``self.reason``)."""
        member = self.members.pop(key, None)
        if member is not None:
            self.table.leave(member[0], member[1], member[2])
        elif entry is not None and not entry.is_member:
            self.table.unregister(entry.ns, entry.name)
        else:
            decoded = decode_key(self.link.plen, key)
            if decoded is not None and decoded[0] != GRP:
                self.table.unregister(decoded[1], decoded[2])

    def deleted_deliberately(self, checked: dict[bytes, int]) -> None:
        """The lease outlived these suspects' deletes: someone deleted them; drop them."""
        for key, revision in checked.items():
            if self.suspects.get(key) == revision:
                self._drop(key, "remote")

    def lease_lost(self) -> None:
        """The lease ended: every suspect went with it, and the view may be stale now."""
        if self.lease_lost_at is None:
            self.lease_lost_at = trio.current_time()
        for key in self.suspects:
            self.orphans[key] = None
        if self.suspects:
            self.suspects.clear()
            self._suspects_changed()

    def lease_restored(self) -> None:
        self.lease_lost_at = None

    def rebound(self, key: bytes, written: Decoded, revision: int, lease: int) -> bool:
        """``written`` was put back at ``revision`` under ``lease``; False if no longer wanted.

        False means the entry left ``mine`` (unregistered) while it was being
        put back: the caller deletes the copy it just wrote.
        """
        if self.link.closed:
            return True
        if key not in self.mine:
            return False
        tomb = self.tombs.get(key, 0)
        if revision <= tomb:
            # Deleted again after it was put back, before the answer came.
            self.lease_of[key] = lease
            self.orphans.pop(key, None)
            self.suspects[key] = tomb
            if self.lease is not None:
                self.lease.check_suspects()
            return True
        if revision > self.revs.get(key, 0):
            self.apply_put(key, written, revision, lease, reason="explicit")
        return True

    def report_conflict(self, ours: Decoded, holder: Decoded | None) -> None:
        """Another instance took one of ours while the lease was lost; say so (never overwrite)."""
        self.conflicts += 1
        taken = registration(holder) if holder is not None else None
        logger.warning(
            "etcd registry %s: %r was taken by another instance while this one's lease was"
            " lost; dropped from this instance (held now by %r)",
            self.link.prefix,
            (ours.ns, ours.name),
            taken,
        )
        if not telemetry.has_handler("foundation.registry.conflict"):
            return
        telemetry.emit(
            "foundation.registry.conflict",
            {"conflicts": float(self.conflicts)},
            {
                "prefix": self.link.prefix,
                "instance": self.link.instance_id,
                "key": (ours.ns, ours.name),
                "member": ours.is_member,
                "value": ours.value,
                "holder": taken,
                "holder_instance": holder.instance if holder is not None else None,
            },
        )

    def conflict(self, key: bytes, entry: Decoded, holder: Decoded | None) -> None:
        """Put-back of ``key`` failed: another instance holds it. Report, then drop ours."""
        if self.mine.get(key) is not entry:
            return
        self.report_conflict(entry, holder)
        self._drop(key, "lease")

    def apply_events(self, events: Sequence[Any]) -> None:
        revs, tombs, in_flight = self.revs, self.tombs, self.in_flight
        sync_prefix, cluster_prefix = self._sync_prefix, self._cluster_prefix
        msg_prefix = self._msg_prefix
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
                if key.startswith(sync_prefix) or key.startswith(cluster_prefix):
                    continue
                if key.startswith(msg_prefix):
                    if self.on_message is not None:
                        self._message(kv)
                    continue
                pending = in_flight.get(key)
                if pending is not None and pending.raw == kv.value:
                    # our own write, echoed before its txn answered: no decoding
                    self.apply_put(key, pending.entry, revision, kv.lease, reason="explicit")
                    continue
                entry = self.decode_or_none(kv)
                if entry is not None:
                    echo = self.echoes.get(key)
                    if echo is not None and echo[0] == kv.value:
                        self.apply_put(key, entry, revision, kv.lease, reason=echo[1])
                    else:
                        self.apply_put(key, entry, revision, kv.lease)
                elif key in revs:
                    self.apply_delete(key, revision, ours=False)  # overwritten with garbage
            elif not (
                key.startswith(sync_prefix)
                or key.startswith(cluster_prefix)
                or key.startswith(msg_prefix)
            ):
                echo = self.echoes.get(key)
                if echo is not None and echo[0] is None:
                    self.apply_delete(key, revision, ours=True, reason=echo[1])
                else:
                    self.apply_delete(key, revision, ours=False)
        self._advance(top)

    def _message(self, kv: KeyValue) -> None:
        """Hand a message another instance published to :attr:`on_message`."""
        try:
            instance, ns, topic, message = decode_message(self.link.plen, kv.key, kv.value)
        except (ValueError, TypeError, RecursionError) as exc:
            self._foreign(kv.key, exc)
            return
        if instance == self.link.instance_id:
            return  # our own echo: our subscribers had it when it was published
        listener = self.on_message
        if listener is not None:
            listener(ns, topic, message)

    def _advance(self, revision: int) -> None:
        if revision <= self.applied:
            return
        self.applied = revision
        waiters = self._sync_waiters
        while waiters and waiters[0][0] <= revision:
            heapq.heappop(waiters)[2].set()
        if len(self.tombs) > MAX_TOMBS:
            self._prune_tombs(revision)

    def _prune_tombs(self, revision: int) -> None:
        keep = self.in_flight.keys() | self.writing.keys()
        self.tombs = {k: r for k, r in self.tombs.items() if r > revision or k in keep}

    def diff_apply(self, kvs: list[KeyValue], revision: int) -> None:
        """Make the table what etcd held at ``revision`` (initial load, after compaction)."""
        present: set[bytes] = set()
        skipped = (self._sync_prefix, self._cluster_prefix, self._msg_prefix)
        for kv in sorted(kvs, key=attrgetter("create_revision")):  # join order
            key = kv.key
            if key.startswith(skipped):  # no replay of messages, either
                continue
            present.add(key)
            if self.revs.get(key) == kv.mod_revision:
                continue
            entry = self.decode_or_none(kv)
            if entry is not None:
                self.apply_put(key, entry, kv.mod_revision, kv.lease)
            elif key in self.revs:
                self.apply_delete(key, revision, ours=False)
        for key, known in list(self.revs.items()):
            if key not in present and known <= revision:
                self.apply_delete(key, revision, ours=False)
        self._prune_tombs(revision)
        self._advance(revision)

    def decode_or_none(self, kv: KeyValue) -> Decoded | None:
        try:
            return decode_entry(self.link.plen, kv.key, kv.value)
        except (ValueError, TypeError, RecursionError) as exc:
            self._foreign(kv.key, exc)
            return None

    def _foreign(self, key: bytes, exc: BaseException) -> None:
        self.foreign += 1
        shown = key[:200].decode("utf-8", "replace")
        self.foreign_last = shown
        # The first few in full; a flood (a hostile writer) at debug level.
        level = 30 if self.foreign <= 10 else 10  # WARNING, DEBUG
        logger.log(
            level,
            "etcd registry: ignoring key %r under prefix %r that this registry did not write"
            " (%s); %d skipped so far",
            shown,
            self.link.prefix,
            str(exc)[:200],
            self.foreign,
        )

    # ------------------------------------------------------ sync

    def add_waiter(self, target: int) -> trio.Event:
        """An event set once the table reflects revision ``target`` (or the mirror closes)."""
        event = trio.Event()
        if self.applied >= target:
            event.set()
        else:
            heapq.heappush(self._sync_waiters, (target, id(event), event))
        return event

    async def wait_settled(self, target: int) -> None:
        """Wait until no delete of an own entry up to ``target`` is still being told apart."""
        while any(revision <= target for revision in self.suspects.values()):
            if self.link.closed:
                raise errors.RegistryClosed()
            await self.suspects_changed.wait()

    def _suspects_changed(self) -> None:
        self.suspects_changed.set()
        self.suspects_changed = trio.Event()

    # ------------------------------------------------------------- close

    def close(self) -> None:
        for _, _, event in self._sync_waiters:
            event.set()
        self._sync_waiters.clear()
        self._suspects_changed()

    def expect_echo(self, key: bytes, raw: bytes | None, reason: EventReason) -> None:
        """This instance is about to write ``raw`` at ``key`` (None: delete it); see ``echoes``.

        The writer calls :meth:`forget_echo` once etcd answered.
        """
        self.echoes[key] = (raw, reason)

    def forget_echo(self, key: bytes, raw: bytes | None) -> None:
        echo = self.echoes.get(key)
        if echo is not None and echo[0] == raw:
            del self.echoes[key]

    def hold(self, keys: Iterable[bytes]) -> Callable[[], None]:
        """Keep the tombs of ``keys`` while a write to them is in flight; returns the release."""
        writing = self.writing
        held = list(keys)
        for key in held:
            writing[key] = writing.get(key, 0) + 1

        def release() -> None:
            for key in held:
                count = writing[key] - 1
                if count:
                    writing[key] = count
                else:
                    del writing[key]
            self._released.set()
            self._released = trio.Event()

        return release

    async def wait_unheld(self, keys: Iterable[bytes]) -> None:
        """Wait until no write holds any of ``keys`` (a delete waits for a put-back of them).

        Otherwise a put-back sent before the delete could land after it and
        bring the entry back. Cancellable: nothing is sent yet.
        """
        while any(key in self.writing for key in keys):
            await self._released.wait()
