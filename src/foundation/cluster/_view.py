"""One node's view of a distributed supervisor's keys: specs, locks and move requests.

Fed by watches from a known revision (the specs and moves under the
registry's prefix; the locks under the coordinator's, one watch when one
prefix holds the other), so no change between the first read and the watch
is missed. While etcd is out of reach the watches retry (the node lease
decides when the node must stop); after a compaction the subtree is read
again. Decisions that must be exact (``start_child`` returning, a
terminate or delete waiting for the child to stop) confirm with a
linearizable read; the view is what they wait on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import trio

from ..errors import CompactedRevision, EtcdUnavailable
from ._records import LockEntry, MoveRecord, SpecRecord

if TYPE_CHECKING:
    from ..etcd import EtcdClient, KeyValue, WatchEvent
    from ._keys import ClusterKeys

__all__ = ["ClusterView"]

logger = logging.getLogger("foundation.cluster")

#: Seconds between attempts while etcd is out of reach.
_RETRY_PAUSE = 0.5


class ClusterView:
    """Specs, locks and moves of one distributed supervisor, as this node last saw them."""

    def __init__(
        self,
        keys: ClusterKeys,
        spec_client: EtcdClient,
        lock_client: EtcdClient,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.keys = keys
        self._on_change = on_change
        self._spec_client = spec_client
        self._lock_client = lock_client
        #: seg -> the stored spec.
        self.specs: dict[str, SpecRecord] = {}
        #: seg -> {lease: entry} of the keys in the child's lock queue.
        self.locks: dict[str, dict[int, LockEntry]] = {}
        #: seg -> the pending move request.
        self.moves: dict[str, MoveRecord] = {}
        #: The revision each subtree's view reflects, by base.
        self.revisions: dict[str, int] = {}
        #: Bumped on every change.
        self.version = 0
        self._changed = trio.Event()
        self._seg_events: dict[str, trio.Event] = {}
        self._foreign = 0
        # One watch per subtree, or one for both when one prefix holds the other.
        self._bases: list[tuple[str, EtcdClient]] = [(keys.base, spec_client)]
        if not keys.lock_base.startswith(keys.base):
            self._bases.append((keys.lock_base, lock_client))

    # -- reading ---------------------------------------------------------------
    def holder(self, seg: str) -> LockEntry | None:
        """The entry holding the child's lock (lowest create revision), or None."""
        queue = self.locks.get(seg)
        if not queue:
            return None
        return min(queue.values(), key=lambda entry: entry.token)

    def lock_revision(self) -> int:
        """The revision the lock view reflects."""
        return self.revisions.get(self._base_of_locks(), 0)

    def spec_revision(self) -> int:
        return self.revisions.get(self.keys.base, 0)

    def _base_of_locks(self) -> str:
        return self.keys.lock_base if len(self._bases) > 1 else self.keys.base

    # -- waiting ---------------------------------------------------------------
    def _bump(self, segs: Iterable[str]) -> None:
        self.version += 1
        changed, self._changed = self._changed, trio.Event()
        changed.set()
        for seg in segs:
            event = self._seg_events.pop(seg, None)
            if event is not None:
                event.set()
        self._on_change()

    async def wait_change(self, version: int) -> None:
        """Return once :attr:`version` differs from ``version``."""
        while self.version == version:
            await self._changed.wait()

    async def wait_seg(self, seg: str) -> None:
        """Return at the next change of one child's spec, lock or move."""
        event = self._seg_events.get(seg)
        if event is None:
            event = self._seg_events[seg] = trio.Event()
        await event.wait()

    async def wait_until(self, predicate: Callable[[], bool], seg: str | None = None) -> None:
        """Return once ``predicate()`` is true (checked at each change of ``seg``, or any)."""
        while not predicate():
            if seg is None:
                await self.wait_change(self.version)
            else:
                await self.wait_seg(seg)

    # -- following -------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read every subtree, then follow it; ``nursery.start`` returns after the reads.

        Raises:
            EtcdError: the first read failed.
        """
        starts = []
        for base, client in self._bases:
            starts.append(await self._load(base, client))
        task_status.started()
        async with trio.open_nursery() as nursery:
            for (base, client), start in zip(self._bases, starts, strict=True):
                nursery.start_soon(self._follow, base, client, start, name=f"cluster watch {base}")

    async def _load(self, base: str, client: EtcdClient) -> int:
        """Read ``base`` afresh into the view; returns the revision to watch from."""
        result = await client.range(base, prefix=True)
        touched = self._clear(base)
        for kv in result.kvs:
            seg = self._apply_put(kv)
            if seg is not None:
                touched.add(seg)
        self.revisions[base] = result.header.revision
        self._bump(touched)
        return result.header.revision + 1

    def _clear(self, base: str) -> set[str]:
        touched: set[str] = set()
        if base == self.keys.base:
            touched.update(self.specs, self.moves)
            self.specs.clear()
            self.moves.clear()
        if base == self._base_of_locks():
            touched.update(self.locks)
            self.locks.clear()
        return touched

    async def _follow(self, base: str, client: EtcdClient, start: int) -> None:
        while True:
            try:
                async with client.watch(base, prefix=True, start_revision=start) as watch:
                    async for response in watch:
                        touched = self._apply(response.events)
                        start = max(start, watch.next_revision)
                        self.revisions[base] = max(self.revisions.get(base, 0), response.revision)
                        self._bump(touched)
            except CompactedRevision:
                logger.info("cluster %s: watch compacted; reading again", self.keys.name)
                start = await self._reload(base, client)
            except EtcdUnavailable as exc:
                logger.info("cluster %s: watch broke (%s); retrying", self.keys.name, exc)
                await trio.sleep(_RETRY_PAUSE)

    async def _reload(self, base: str, client: EtcdClient) -> int:
        while True:
            try:
                return await self._load(base, client)
            except EtcdUnavailable as exc:
                logger.info("cluster %s: cannot read again yet (%s)", self.keys.name, exc)
                await trio.sleep(_RETRY_PAUSE)

    # -- applying events ---------------------------------------------------------
    def _apply(self, events: list[WatchEvent]) -> set[str]:
        touched: set[str] = set()
        for event in events:
            if event.type == "PUT":
                seg = self._apply_put(event.kv)
            else:
                seg = self._apply_delete(event.kv.key)
            if seg is not None:
                touched.add(seg)
        return touched

    def _apply_put(self, kv: KeyValue) -> str | None:
        parsed = self.keys.parse(kv.key)
        if parsed is None:
            return None
        kind, seg, _rest = parsed
        if kind == "spec":
            try:
                self.specs[seg] = SpecRecord.decode(seg, kv.value, kv.mod_revision)
            except ValueError as exc:
                self._skip(kv.key, exc)
                self.specs.pop(seg, None)
        elif kind == "lock":
            self.locks.setdefault(seg, {})[kv.lease] = LockEntry.decode(
                kv.key, kv.value, kv.lease, kv.create_revision
            )
        elif kind == "move":
            try:
                self.moves[seg] = MoveRecord.decode(kv.value, kv.lease)
            except ValueError as exc:
                self._skip(kv.key, exc)
                self.moves.pop(seg, None)
        else:
            return None  # handoff state: read when a child starts, not followed
        return seg

    def _apply_delete(self, key: bytes) -> str | None:
        parsed = self.keys.parse(key)
        if parsed is None:
            return None
        kind, seg, _ = parsed
        if kind == "spec":
            self.specs.pop(seg, None)
        elif kind == "move":
            self.moves.pop(seg, None)
        elif kind == "lock":
            queue = self.locks.get(seg)
            if queue is not None:
                for lease, entry in list(queue.items()):
                    if entry.key == key:
                        del queue[lease]
                if not queue:
                    del self.locks[seg]
        else:
            return None
        return seg

    def _skip(self, key: bytes, error: Exception) -> None:
        self._foreign += 1
        logger.warning(
            "cluster %s: skipping key %r, which it did not write (%s)",
            self.keys.name,
            key.decode(errors="replace"),
            error,
        )
