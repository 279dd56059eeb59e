"""The etcd backend's lease: kept alive, replaced when lost, and the entries put back.

One lease per backend instance, kept alive at TTL/3 by the client's
keepalive; every entry this instance writes is bound to it, so when the
instance dies (or closes: the lease is revoked) its entries vanish for every
other instance.

**A lost lease is never silent, and never the end.** When the lease is lost
(etcd answered TTL 0, or no member renewed it before the deadline counted
from the last acknowledged renewal's send time) ``health_check()`` says so,
``foundation.registry.lease.lost`` is emitted, and this keeper grants a new
lease and puts back, under it, every entry of this instance not bound to it
yet (``create_revision == 0``, or a rebind of an entry that outlived the old
lease on the server: ``mod_revision`` unchanged). An entry leaves the set to
put back only once its put succeeded, or once another instance is found
holding the name (a conflict, reported, never overwritten): a put-back cut
short by an error or by the new lease ending resumes with what is left.
Granting keeps being retried, with a bounded back-off, for as long as the
registry is open (a long partition heals into a working registry, not a
closed one); meanwhile writes wait for the lease (at most ``timeout + ttl``
seconds, then :class:`~foundation.errors.LeaseExpired`) and reads answer
from the view.

Watchers of this instance see nothing of a lease loss whose entries all
came back; an entry that could not be put back gives one unregistration.
"""

from __future__ import annotations

import trio

from .. import errors, telemetry
from ..etcd import (
    Lease,
    PutResult,
    RangeResult,
    compare_create,
    compare_mod,
    op_delete,
    op_put,
    op_range,
)
from ._etcd_codec import SYNC, Decoded, reencode
from ._etcd_link import Link, logger
from ._etcd_mirror import Mirror

__all__ = ["MAX_TXN_OPS", "LeaseKeeper"]

#: Operations per txn: etcd's default --max-txn-ops.
MAX_TXN_OPS = 128
#: Longest pause between attempts to grant a new lease.
RETRY_MAX = 2.0
#: Rounds of one chunk's put-back before it gives up (to be retried whole).
PUT_BACK_ROUNDS = 10


class LeaseKeeper:
    """Holds the backend's lease and puts its entries back under a new one; see the module."""

    def __init__(self, link: Link, mirror: Mirror) -> None:
        self.link = link
        self.mirror = mirror
        self.sync_key = link.raw_prefix + SYNC + link.instance_id.encode("ascii")
        self.lease: Lease | None = None
        self._ready = trio.Event()
        #: Why the last lease was lost (None while bound).
        self.error: errors.LeaseExpired | None = None
        self.losses = 0
        self.grant_failures = 0
        self._suspects = trio.Event()
        self._rebind = trio.Event()

    # -- what the mirror asks ----------------------------------------------------------
    def live_lease_id(self) -> int:
        lease = self.lease
        if lease is None or not self._ready.is_set() or lease.lost.is_set():
            return 0
        return lease.id

    def check_suspects(self) -> None:
        self._suspects.set()

    def rebind_needed(self) -> None:
        self._rebind.set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def unbound(self) -> int:
        """How many own entries are not bound to the live lease (still to put back)."""
        live = self.live_lease_id()
        lease_of = self.mirror.lease_of
        return sum(1 for key in self.mirror.mine if lease_of.get(key) != live)

    def close(self) -> None:
        """Wake writers waiting for a lease (they find the registry closed)."""
        self._ready.set()

    # -- what writers use --------------------------------------------------------------
    async def live_lease(self) -> Lease:
        """The current lease, waiting (bounded) while a lost one is being replaced.

        Raises:
            RegistryClosed: closed meanwhile.
            LeaseExpired: no new lease within ``timeout + ttl`` seconds.
        """
        link = self.link
        deadline = trio.current_time() + link.timeout + link.ttl
        while True:
            if link.closed:
                raise errors.RegistryClosed()
            ready = self._ready
            if ready.is_set():
                assert self.lease is not None
                return self.lease
            with trio.move_on_at(deadline):
                await ready.wait()
            if not self._ready.is_set() and trio.current_time() >= deadline:
                cause = self.error
                raise errors.LeaseExpired(
                    "no live lease: the lost one is still being replaced"
                    + (f" ({cause.message})" if cause else ""),
                    None,
                    link.endpoint,
                    cause.lease_id if cause else 0,
                )

    async def confirm_lease(self, lease: Lease) -> None:
        """etcd refused ``lease``: find out with a keepalive (which reports a loss)."""
        try:
            await lease.keepalive_once()
        except errors.LeaseExpired:
            return  # reported by lease.on_lost; live_lease now waits for the next
        except errors.EtcdUnavailable as exc:
            self.link.unavailable = exc

    async def put_with_lease(self, key: bytes, raw: bytes | str) -> tuple[PutResult, int]:
        """Put ``key`` bound to the live lease; ``(result, lease id)``."""
        link = self.link
        for attempt in range(3):
            lease = await self.live_lease()
            try:
                result: PutResult = await link.call(link.client.put, key, raw, lease=lease.id)
            except errors.LeaseExpired:
                if attempt == 2:
                    raise
                await self.confirm_lease(lease)
                continue
            return result, lease.id
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the loop ----------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold a lease until cancelled: grant, put back, keep alive, and again when lost."""
        link = self.link
        started = False
        delay = 0.1
        while True:
            try:
                async with link.client.lease(link.ttl) as lease:
                    remove = lease.on_lost(self._on_lost)
                    try:
                        if started:
                            await self._put_back(lease)
                        else:
                            # Proves write permission on the prefix at open.
                            await link.call(link.client.put, self.sync_key, "0", lease=lease.id)
                        self._bound(lease)
                        if not started:
                            started = True
                            task_status.started()
                        delay = 0.1
                        await self._hold(lease)
                    finally:
                        remove()
            except errors.EtcdError as exc:
                if not started:
                    raise
                link.last_error = exc
                self.grant_failures += 1
                logger.warning(
                    "etcd registry %s: could not re-establish its lease (%s); retrying in %.1f s",
                    link.prefix,
                    exc,
                    delay,
                )
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    def _bound(self, lease: Lease) -> None:
        lost_at = self.mirror.lease_lost_at
        self.lease = lease
        self.error = None
        self._ready.set()
        self.mirror.lease_restored()
        if lost_at is not None:
            seconds = trio.current_time() - lost_at
            logger.info(
                "etcd registry %s: bound to lease %x again after %.1f s, %d entries",
                self.link.prefix,
                lease.id,
                seconds,
                len(self.mirror.mine),
            )
            telemetry.emit(
                "foundation.registry.lease.restored",
                {"seconds": seconds, "entries": float(len(self.mirror.mine))},
                {"prefix": self.link.prefix, "lease": lease.id},
            )

    async def _hold(self, lease: Lease) -> None:
        """While ``lease`` lives: put back whatever own entry is not bound to it."""
        with trio.CancelScope() as scope:
            remove = lease.on_lost(lambda _error: scope.cancel())
            try:
                while True:
                    await self._rebind.wait()
                    self._rebind = trio.Event()
                    await self._put_back(lease)
            finally:
                remove()

    def _on_lost(self, error: errors.LeaseExpired) -> None:
        link = self.link
        if link.closed:
            return
        if self._ready.is_set():
            self._ready = trio.Event()
        self.error = error
        link.last_error = error
        self.losses += 1
        self.mirror.lease_lost()
        logger.warning(
            "etcd registry %s: lease %x lost (%s); putting %d entries back under a new one",
            link.prefix,
            error.lease_id,
            error.message,
            len(self.mirror.mine),
        )
        telemetry.emit(
            "foundation.registry.lease.lost",
            {"entries": float(len(self.mirror.mine)), "losses": float(self.losses)},
            {"prefix": link.prefix, "lease": error.lease_id, "reason": error.message},
        )

    # -- putting entries back ----------------------------------------------------------
    async def _put_back(self, lease: Lease) -> None:
        """Bind every own entry to ``lease``; each leaves the to-do only once done."""
        mirror = self.mirror
        for _ in range(3):  # entries that turn up meanwhile get another pass
            todo = [key for key in mirror.mine if mirror.lease_of.get(key) != lease.id]
            if not todo:
                return
            for start in range(0, len(todo), MAX_TXN_OPS):
                await self._put_back_chunk(lease, todo[start : start + MAX_TXN_OPS])

    async def _put_back_chunk(self, lease: Lease, keys: list[bytes]) -> None:
        link, mirror = self.link, self.mirror
        #: key -> mod_revision of our copy that outlived the old lease (0: create it)
        seen = dict.fromkeys(keys, 0)
        #: key -> (raw, entry) of that copy: rebound as it is in etcd
        found: dict[bytes, tuple[bytes, Decoded]] = {}
        release = mirror.hold(keys)
        try:
            for _ in range(PUT_BACK_ROUNDS):
                pending = [
                    key
                    for key in seen
                    if key in mirror.mine and mirror.lease_of.get(key) != lease.id
                ]
                if not pending:
                    return
                written: list[tuple[bytes, Decoded]] = []
                for key in pending:
                    if seen[key]:
                        written.append(found[key])
                    else:
                        e = mirror.mine[key]
                        written.append((reencode(e.value, e.metadata, e.owner, e.instance), e))
                compares = [
                    compare_mod(k, "==", seen[k]) if seen[k] else compare_create(k, "==", 0)
                    for k in pending
                ]
                success = [
                    op_put(k, raw, lease=lease.id)
                    for k, (raw, _) in zip(pending, written, strict=True)
                ]
                failure = [op_range(k) for k in pending]
                # CAS-guarded: safe to resend when an attempt's outcome is unknown.
                result = await link.call(
                    link.client.txn, compares, success, failure, retry_ambiguous=True
                )
                if result.succeeded:
                    gone = [
                        k
                        for k, (_, entry) in zip(pending, written, strict=True)
                        if not mirror.rebound(k, entry, result.revision, lease.id)
                    ]
                    if gone:
                        await self._delete_copies(gone, result.revision)
                    return
                for key, response in zip(pending, result.responses, strict=True):
                    kvs = response.kvs if isinstance(response, RangeResult) else []
                    if not kvs:
                        seen[key] = 0
                        continue
                    holder = mirror.decode_or_none(kvs[0])
                    if holder is not None and holder.instance == link.instance_id:
                        # Our copy outlived the old lease on the server: rebind it.
                        seen[key] = kvs[0].mod_revision
                        found[key] = (kvs[0].value, holder)
                        continue
                    mirror.conflict(key, mirror.mine[key], holder)
            raise errors.EtcdError(
                "putting entries back under a new lease kept losing races", None, link.endpoint
            )
        finally:
            release()

    async def _delete_copies(self, keys: list[bytes], revision: int) -> None:
        """Delete copies just put back of entries unregistered meanwhile (if still ours)."""
        link = self.link
        for key in keys:
            await link.call(link.client.txn, [compare_mod(key, "==", revision)], [op_delete(key)])

    # -- suspects --------------------------------------------------------------------------
    async def check_loop(self) -> None:
        """Tell own entries deleted by someone (drop) from ones the lease took (put back)."""
        mirror = self.mirror
        while True:
            await self._suspects.wait()
            self._suspects = trio.Event()
            lease = self.lease
            if not mirror.suspects or lease is None or not self._ready.is_set():
                continue  # a lease being replaced turns them into orphans itself
            checked = dict(mirror.suspects)
            try:
                # A lease that is alive now was alive when those keys went:
                # they were deleted on purpose. A dead one reports itself.
                await lease.keepalive_once()
            except errors.LeaseExpired:
                continue
            except errors.EtcdError as exc:
                self.link.last_error = exc
                await trio.sleep(min(1.0, self.link.ttl / 3))
                self._suspects.set()
                continue
            if lease is self.lease and self._ready.is_set():
                mirror.deleted_deliberately(checked)
