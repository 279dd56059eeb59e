"""The watch that feeds the etcd backend's table, and how fresh the view is.

The prefix is read whole at one revision (paginated), then watched from the
revision after it; each response is applied to the :class:`~._etcd_mirror.Mirror`.
A compacted watch is answered by reading the prefix again and applying the
difference; a broken one resumes from the revision after its last event
(the client's :class:`~foundation.etcd.Watch` reopens on another member by
itself when its member breaks or stalls).

**A member that cannot keep up.** A member cut off with a minority, or one
that lags, still answers the watch's own keepalive probes, so the stream
looks healthy while no event arrives. Two things notice it: ``sync()``
(its sentinel, acknowledged by the majority, does not arrive within the
client's per-attempt deadline) and the freshness probe (every
:data:`PROBE_INTERVAL` s, a linearizable read of the cluster's revision,
then a progress request on the watch, which must reach that revision within
the same deadline). Either then moves the watch: it is reopened from where
it was, on the endpoint that just answered (the one the client uses now).

**Fresh or stale.** ``confirmed_at`` is the last moment the view was known
to hold everything the cluster had acknowledged (a probe, a ``sync()``
that returned, a full read). ``stale_since()`` is that moment once it is
older than a probe round and its deadline, or while the watch is down, or
the time the lease was lost (this instance's own entries may be gone from
etcd until they are put back); None while the view is known current. Reads
answer from the view either way.
"""

from __future__ import annotations

import math

import trio

from .. import errors, telemetry
from ..etcd import EtcdClient, KeyValue, RangeResult, Watch, prefix_end
from ._backend import Backend
from ._etcd_link import Link, logger
from ._etcd_mirror import Mirror

__all__ = ["PROBE_INTERVAL", "Follower", "read_prefix"]

#: Keys per page of a range of the whole prefix.
RANGE_PAGE = 1000
#: Seconds between probes of the view's freshness (skipped while something
#: else, such as a ``sync()``, confirmed it more recently).
PROBE_INTERVAL = 1.0


class Follower:
    """Keeps the mirror's table following the prefix; knows how fresh it is."""

    def __init__(self, link: Link, mirror: Mirror) -> None:
        self.link = link
        self.mirror = mirror
        self.watch_error: errors.EtcdError | None = None
        self.watch_moves = 0
        self._watch: Watch | None = None
        self._watch_scope: trio.CancelScope | None = None
        self._watch_opened_at = -math.inf
        self.progress_revision = 0
        self._progress = trio.Event()
        #: trio time the view was last known to hold everything acknowledged
        self.confirmed_at = trio.current_time()
        self.stale_after = PROBE_INTERVAL + link.attempt_window + 1.0

    # ------------------------------------------------------------ reading
    async def range_all(self) -> tuple[int, list[KeyValue]]:
        """Every key under the prefix, paginated at one revision."""
        link = self.link
        start = link.raw_prefix
        end = prefix_end(link.raw_prefix)
        revision = 0
        kvs: list[KeyValue] = []
        while True:
            result: RangeResult = await link.call(
                link.client.range, start, range_end=end, revision=revision, limit=RANGE_PAGE
            )
            if not revision:
                revision = result.header.revision
            kvs.extend(result.kvs)
            if not result.more or not result.kvs:
                return revision, kvs
            start = result.kvs[-1].key + b"\0"

    async def resync(self) -> int:
        """Read the prefix whole and make the table what it holds; the revision read."""
        started = trio.current_time()
        revision, kvs = await self.range_all()
        self.mirror.diff_apply(kvs, revision)
        self.confirm(started)
        return revision

    # ------------------------------------------------------------ watching
    async def watch_loop(self, start_revision: int) -> None:
        """Keep the table current until cancelled; reopen, resync, back off as needed."""
        link, mirror = self.link, self.mirror
        next_revision = start_revision
        need_resync = False
        delay = 0.05
        while True:
            try:
                if need_resync:
                    next_revision = await self.resync() + 1
                    need_resync = False
                    self.watch_error = None  # the view is current again
                with trio.CancelScope() as scope:
                    async with link.client.watch(
                        link.raw_prefix, prefix=True, start_revision=next_revision
                    ) as watch:
                        self._watch, self._watch_scope = watch, scope
                        self._watch_opened_at = trio.current_time()
                        async for response in watch:
                            if response.events:
                                mirror.apply_events(response.events)
                            else:  # a progress notification we asked for
                                self._progressed(response.revision)
                            next_revision = watch.next_revision
                            self.watch_error = None
                            delay = 0.05
                if scope.cancelled_caught:
                    continue  # moved on purpose: reopen at once
            except errors.CompactedRevision as exc:
                logger.info("etcd registry %s: %s; reading the prefix again", link.prefix, exc)
                need_resync = True
                continue
            except errors.EtcdError as exc:
                # Unavailable (every member tried), or refused (auth, a watch
                # cancelled by etcd): keep trying, degraded, from where it was.
                self.watch_error = exc
                link.last_error = exc
                if isinstance(exc, errors.EtcdUnavailable):
                    link.unavailable = exc
                    logger.info("etcd registry %s: watch down (%s); retrying", link.prefix, exc)
                else:
                    logger.warning(
                        "etcd registry %s: watch failed (%s); retrying", link.prefix, exc
                    )
            finally:
                self._watch = self._watch_scope = None
            await trio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def move_watch(self, why: str) -> None:
        """The watch's member lags behind the cluster: reopen the watch on the current endpoint.

        At most once per per-attempt deadline, so a burst of ``sync()`` calls
        moves it once. The current endpoint is the one that just answered the
        write or read whose revision the watch did not show.
        """
        scope = self._watch_scope
        now = trio.current_time()
        if scope is None or now - self._watch_opened_at < self.link.attempt_window:
            return
        self.watch_moves += 1
        logger.info("etcd registry %s: moving its watch (%s)", self.link.prefix, why)
        telemetry.emit(
            "foundation.registry.watch.moved",
            {"moves": float(self.watch_moves)},
            {"prefix": self.link.prefix, "reason": why},
        )
        self._watch_opened_at = now
        scope.cancel()

    def _progressed(self, revision: int) -> None:
        if revision > self.progress_revision:
            self.progress_revision = revision
        self._progress.set()
        self._progress = trio.Event()

    async def wait_applied(self, target: int) -> None:
        """Wait until the table reflects revision ``target``; move a watch that lags.

        Raises:
            RegistryClosed: closed while waiting.
        """
        mirror = self.mirror
        event = mirror.add_waiter(target)
        window = self.link.attempt_window
        while not event.is_set():
            with trio.move_on_after(window):
                await event.wait()
            if not event.is_set():
                self.move_watch(f"revision {target} not delivered within {window:g} s")
        if mirror.applied < target:
            raise errors.RegistryClosed()

    # ------------------------------------------------------------ freshness
    def confirm(self, at: float) -> None:
        """The view held everything the cluster acknowledged before trio time ``at``."""
        if at > self.confirmed_at:
            self.confirmed_at = at

    async def probe_loop(self, probe_key: bytes) -> None:
        """Confirm the view is current every PROBE_INTERVAL s (move a watch that lags)."""
        link = self.link
        again = False
        while True:
            if not again:
                await trio.sleep_until(max(self.confirmed_at, trio.current_time()) + PROBE_INTERVAL)
                if trio.current_time() - self.confirmed_at < PROBE_INTERVAL:
                    continue  # something else confirmed it meanwhile
            started = trio.current_time()
            try:
                # A linearizable read: the cluster's revision now (a key of
                # our own, so a user confined to the prefix may read it).
                result = await link.client.range(probe_key, count_only=True)
            except errors.EtcdError as exc:
                link.last_error = exc
                again = False
                continue
            if await self._progress_reaches(result.header.revision):
                self.confirm(started)
                again = False
            else:
                # The watch was moved: read again now, to confirm it on its new member.
                again = not again

    async def _progress_reaches(self, target: int) -> bool:
        mirror = self.mirror
        window = self.link.attempt_window
        deadline = trio.current_time() + window
        while max(mirror.applied, self.progress_revision) < target:
            watch = self._watch
            now = trio.current_time()
            if now >= deadline or self.link.closed:
                self.move_watch(f"no progress to revision {target} within {window:g} s")
                return False
            if watch is not None:
                watch.request_progress()
            with trio.move_on_at(min(deadline, now + 0.25)):
                await self._progress.wait()
        return True

    def stale_since(self) -> float | None:
        """Trio time since which the view may be stale, or None while it is known current."""
        causes = []
        if (
            self.watch_error is not None
            or trio.current_time() - self.confirmed_at > self.stale_after
        ):
            causes.append(self.confirmed_at)
        lost_at = self.mirror.lease_lost_at
        if lost_at is not None:
            causes.append(lost_at)
        return min(causes) if causes else None

    def close(self) -> None:
        self._progress.set()


async def read_prefix(client: EtcdClient, prefix: str, table: Backend) -> tuple[int, int]:
    """Fill ``table`` with what the etcd registry under ``prefix`` holds now, read-only.

    One paginated range at one revision, decoded as a registry instance
    decodes it (foreign records skipped and counted, ``sync/`` and
    ``cluster/`` passed over), without a lease, a keepalive or a watch:
    nothing is written. Returns ``(revision read, records skipped)``.
    """
    link = Link(client, prefix, 1)
    link.started = True  # a read may be sent twice
    mirror = Mirror(link, table)
    follower = Follower(link, mirror)
    revision, kvs = await follower.range_all()
    mirror.diff_apply(kvs, revision)
    return revision, mirror.foreign
