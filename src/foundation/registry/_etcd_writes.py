"""The etcd backend's write path: registrations queued, coalesced and sent in batched txns.

(The other writes, single etcd calls, are at the end: :meth:`Writer.delete_key`,
:meth:`Writer.update`, :meth:`Writer.put_member`, :meth:`Writer.delete_unchanged`,
:meth:`Writer.publish`.)

Concurrent ``register()`` calls are queued and coalesced by a flusher task
into one txn of up to 100 create-if-absent puts (etcd allows 128 operations
and 1.5 MiB per txn), built with the client's own compare and op builders,
a few batches in flight while the next one is built. A txn that fails learns
which keys exist (a second read the first time, the failure branch's ranges
after that), so only those are resolved (re-registration, or
``AlreadyRegistered``) and the rest go again; a batch that keeps losing
races goes one key per txn, so the key that lost is the one refused.
Each txn that succeeds is applied to the mirror's table at once, so
``lookup`` right after ``await register()`` sees it.

**Cancellation.** A ``register()`` cancelled while still queued writes
nothing; once its txn is sent it completes and returns (Trio's abort
protocol: ``wait_task_rescheduled`` refuses the cancel).
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import trio

from .. import errors
from ..etcd import (
    Compare,
    Op,
    RangeResult,
    compare_create,
    compare_mod,
    op_delete,
    op_put,
    op_range,
    op_txn,
)
from ._etcd_codec import Decoded, encode_entry, reencode
from ._etcd_lease import MAX_TXN_OPS, LeaseKeeper
from ._etcd_link import Link, logger
from ._etcd_mirror import Mirror, registration
from ._keys import same_owner
from ._types import EventReason, Registration

__all__ = ["Pending", "Writer"]

#: Bytes of entries coalesced into one txn (etcd's default request limit is 1.5 MiB).
MAX_BATCH_BYTES = 1_000_000
#: Batched rounds before a batch that keeps losing races goes item by item.
MAX_BATCH_ROUNDS = 3
#: Batches sent at once (a new one is built while etcd applies the others).
MAX_BATCHES_IN_FLIGHT = 2
#: Items looked at past keys already in flight before a batch is sent as it is.
MAX_DEFERRED = 1000


class _Call:
    """One waiting ``register()``/``register_many()`` caller and its items."""

    __slots__ = ("cancelled", "remaining", "sent", "task")

    def __init__(self, task: trio.lowlevel.Task, remaining: int) -> None:
        self.task = task
        self.remaining = remaining
        #: Set once any item is in a txn: from then on the call cannot be cancelled.
        self.sent = False
        self.cancelled = False


class Pending:
    """One queued registration."""

    __slots__ = ("call", "entry", "key", "raw", "result", "seen", "size", "updating")

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


def _answered(item: Pending) -> None:
    """``item`` has its result: wake its caller once all of the call's items have one."""
    call = item.call
    assert call is not None
    call.remaining -= 1
    if call.remaining == 0:
        trio.lowlevel.reschedule(call.task)


def _fresh(exc: BaseException) -> BaseException:
    """A copy of ``exc`` to raise in one more task (each raise gets its own traceback)."""
    return copy.copy(exc).with_traceback(None)


class Writer:
    """The queue of registrations and the flusher that sends them."""

    def __init__(self, link: Link, mirror: Mirror, keeper: LeaseKeeper) -> None:
        self.link = link
        self.mirror = mirror
        self.keeper = keeper
        self._queue: deque[Pending] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        # key -> the registration being written in a batch now (the mirror's
        # watch recognises their echoes without decoding them)
        self._in_flight = mirror.in_flight
        self._batches_in_flight = 0
        self._max_ops = MAX_TXN_OPS
        self._max_bytes = MAX_BATCH_BYTES
        #: Successful writes, and register calls refused with AlreadyRegistered.
        self.writes = 0
        self.conflicts = 0

    async def submit(self, items: list[Pending]) -> None:
        """Queue ``items`` for the flusher and wait until each has a result."""
        call = _Call(trio.lowlevel.current_task(), len(items))
        for item in items:
            item.call = call
        self._queue.extend(items)
        self._lot.unpark_all()

        def abort(_: Any) -> trio.lowlevel.Abort:
            if call.sent:
                return trio.lowlevel.Abort.FAILED  # in a txn already: it completes
            call.cancelled = True  # the flusher skips its items
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def close(self) -> None:
        """Answer every queued registration with RegistryClosed (nothing of them was sent)."""
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

    async def flusher(self) -> None:
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
                await self._lot.park()
                # Woken by the first new item (or a finished batch): let every
                # task that is runnable now queue its item too, so they share a txn.
                await trio.lowlevel.cancel_shielded_checkpoint()

    def _take_batch(self) -> list[Pending]:
        """Up to the txn limit of queued items with distinct keys, none in flight; FIFO per key."""
        queue = self._queue
        in_flight = self._in_flight
        batch: list[Pending] = []
        deferred: list[Pending] = []
        size = 0
        max_ops, max_bytes = self._max_ops, self._max_bytes
        while queue and len(batch) < max_ops and len(deferred) < MAX_DEFERRED:
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

    async def _send_batch(self, batch: list[Pending]) -> None:
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

    def _finish(self, batch: list[Pending]) -> None:
        in_flight = self._in_flight
        for item in batch:
            if in_flight.get(item.key) is item:
                del in_flight[item.key]
            _answered(item)
        self._batches_in_flight -= 1
        self._lot.unpark_all()

    async def _register_batch(self, pending: list[Pending]) -> None:
        """Create (or re-register) every item, in as few txns as the races allow."""
        link, mirror = self.link, self.mirror
        rounds = 0
        lease_retries = 0
        while pending:
            if rounds >= MAX_BATCH_ROUNDS and len(pending) > 1:
                for item in pending:  # contended: one key per txn
                    await self._register_batch([item])
                return
            rounds += 1
            lease = await self.keeper.live_lease()
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
            ranges = [op_range(item.key) for item in pending] if rounds > 1 else []
            try:
                # Resending after a broken connection is safe: a create that
                # was applied fails its compare the second time, and is then
                # found held by the same value and owner.
                result = await link.call(
                    link.client.txn, compares, success, ranges, retry_ambiguous=True
                )
                if not result.succeeded and rounds == 1:
                    ranges = [op_range(item.key) for item in pending]
                    holders = await link.call(link.client.txn, [], ranges, retry_ambiguous=True)
                    responses = holders.responses
                else:
                    responses = result.responses
            except errors.LeaseExpired:
                lease_retries += 1
                if lease_retries > 3:
                    raise
                await self.keeper.confirm_lease(lease)
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
                logger.info("etcd registry %s: %s; batches now smaller", link.prefix, exc)
                await self._register_batch(pending[:half])
                await self._register_batch(pending[half:])
                return
            if result.succeeded:
                revision = result.revision
                for item in pending:
                    entry = item.entry
                    bound = None if item.updating else lease.id
                    item.result = mirror.apply_put(
                        item.key, entry, revision, bound, reason="explicit"
                    ) or registration(entry)
                self.writes += len(pending)
                return
            pending = self._resolve(pending, responses)

    def _resolve(self, pending: list[Pending], responses: list[Any]) -> list[Pending]:
        """After a failed txn: the items to send again; the others get their answer."""
        instance = self.link.instance_id
        retry: list[Pending] = []
        for item, response in zip(pending, responses, strict=True):
            kvs = response.kvs if isinstance(response, RangeResult) else []
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
                        instance,
                    )
                    item.raw = reencode(entry.value, entry.metadata, entry.owner, instance)
                retry.append(item)
                continue
            kv = kvs[0]
            holder = self.mirror.decode_or_none(kv)
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
            self.conflicts += 1
            taken = registration(holder) if holder is not None else None
            item.result = errors.AlreadyRegistered((entry.ns, entry.name), taken)
        return retry

    # -- the other writes: one etcd call each, shielded once sent -------------------------
    async def delete_key(self, key: bytes) -> bool:
        """Delete one name or membership key; False if absent or closed."""
        link = self.link
        if link.closed:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return False
        mirror = self.mirror
        await mirror.wait_unheld((key,))
        with trio.CancelScope(shield=True):
            mirror.expect_echo(key, None, "explicit")
            try:
                result = await link.call(link.client.delete, key)
            finally:
                mirror.forget_echo(key, None)
            mirror.apply_delete(key, result.header.revision, ours=True, reason="explicit")
        if result.deleted:
            self.writes += 1
        return result.deleted > 0

    async def delete_keys(
        self, keys: list[bytes], *, count: bool = False, reason: EventReason = "explicit"
    ) -> int:
        """Delete ``keys`` (at most MAX_TXN_OPS per txn); how many were there.

        ``count``: add them to :attr:`writes`; ``reason``: of their events.
        """
        link = self.link
        removed = 0
        await self.mirror.wait_unheld(keys)
        with trio.CancelScope(shield=True):
            for start in range(0, len(keys), MAX_TXN_OPS):
                chunk = keys[start : start + MAX_TXN_OPS]
                for key in chunk:
                    self.mirror.expect_echo(key, None, reason)
                try:
                    result = await link.call(link.client.txn, [], [op_delete(k) for k in chunk])
                finally:
                    for key in chunk:
                        self.mirror.forget_echo(key, None)
                for key, response in zip(chunk, result.responses, strict=False):
                    self.mirror.apply_delete(key, result.revision, ours=True, reason=reason)
                    removed += getattr(response, "deleted", 0)
        if count:
            self.writes += removed
        return removed

    async def update(
        self,
        key: bytes,
        ns: Any,
        name: Any,
        change: Callable[[Decoded], tuple[Any, Mapping[str, Any]]],
        what: str,
    ) -> Registration:
        """Replace what ``change(holder) -> (json value, metadata)`` says at ``key``.

        A compare-and-set on the key's mod_revision, read again from etcd
        (never the local view) when another write came first; ``change`` may
        raise to refuse (``update_value``'s ``expect=``), and then nothing is
        written. The entry keeps its owner, instance and lease, whoever wrote
        it. ``what`` names the operation in errors.

        Raises:
            NotRegistered: the key is absent in etcd.
            EtcdError: etcd failed, or 20 races were lost in a row.
        """
        link, mirror = self.link, self.mirror
        release = mirror.hold([key])
        try:
            with trio.CancelScope(shield=True):
                kvs = _kvs(await link.call(link.client.range, key))
                for _ in range(20):
                    holder = mirror.decode_or_none(kvs[0]) if kvs else None
                    if holder is None:
                        raise errors.NotRegistered((ns, name))
                    value, metadata = change(holder)
                    raw, json_value, json_metadata = encode_entry(
                        key, value, metadata, holder.owner, holder.instance
                    )
                    mirror.expect_echo(key, raw, "explicit")
                    try:
                        result = await link.call(
                            link.client.txn,
                            [compare_mod(key, "==", kvs[0].mod_revision)],
                            [op_put(key, raw, ignore_lease=True)],
                            [op_range(key)],
                        )
                    finally:
                        mirror.forget_echo(key, raw)
                    if result.succeeded:
                        entry = Decoded(
                            False,
                            ns,
                            name,
                            json_value,
                            json_metadata,
                            holder.owner,
                            holder.instance,
                        )
                        self.writes += 1
                        reg = mirror.apply_put(key, entry, result.revision, reason="explicit")
                        return reg or registration(entry)
                    kvs = _kvs(result.responses[0]) if result.responses else []
        finally:
            release()
        raise errors.EtcdError(
            f"{what} of {(ns, name)!r} lost 20 races in a row; try again",
            None,
            link.endpoint,
        )

    async def put_member(self, key: bytes, raw: bytes, entry: Decoded) -> Registration:
        """Put a group member, bound to the live lease (join: new, or its metadata again)."""
        mirror = self.mirror
        release = mirror.hold([key])
        try:
            with trio.CancelScope(shield=True):
                mirror.expect_echo(key, raw, "explicit")
                try:
                    result, lease_id = await self.keeper.put_with_lease(key, raw)
                finally:
                    mirror.forget_echo(key, raw)
                reg = mirror.apply_put(
                    key, entry, result.header.revision, lease_id, reason="explicit"
                )
        finally:
            release()
        self.writes += 1
        return reg or registration(entry)

    async def delete_unchanged(self, found: Sequence[tuple[bytes, int]]) -> int:
        """Delete each ``(key, mod_revision)`` only if etcd still holds that revision.

        Each key is a nested txn with its own compare, so a key that changed
        meanwhile stays and the others still go; etcd counts a nested txn's
        operations against what the outer one leaves of --max-txn-ops, so
        one txn takes MAX_TXN_OPS // 2 keys (128 operations in all). Returns
        how many were deleted (events: reason ``"explicit"``).
        """
        link, mirror = self.link, self.mirror
        if not found:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return 0
        keys = [key for key, _ in found]
        await mirror.wait_unheld(keys)
        removed = 0
        with trio.CancelScope(shield=True):
            per_txn = MAX_TXN_OPS // 2
            for start in range(0, len(found), per_txn):
                chunk = found[start : start + per_txn]
                ops = [op_txn([compare_mod(k, "==", rev)], [op_delete(k)]) for k, rev in chunk]
                for key, _ in chunk:
                    mirror.expect_echo(key, None, "explicit")
                try:
                    result = await link.call(link.client.txn, [], ops)
                finally:
                    for key, _ in chunk:
                        mirror.forget_echo(key, None)
                for (key, _), response in zip(chunk, result.responses, strict=True):
                    if getattr(response, "succeeded", False) and _deleted(response):
                        mirror.apply_delete(key, result.revision, ours=True, reason="explicit")
                        removed += 1
        self.writes += removed
        return removed

    async def publish(self, key: bytes, raw: bytes) -> None:
        """Put a pub/sub message at this instance's message key (bound to the lease)."""
        with trio.CancelScope(shield=True):
            await self.keeper.put_with_lease(key, raw)


def _deleted(response: Any) -> bool:
    inner = response.responses
    return bool(inner) and getattr(inner[0], "deleted", 0) > 0


def _kvs(response: object) -> list[Any]:
    return response.kvs if isinstance(response, RangeResult) else []
