"""Group membership on the etcd coordinator: a key per member, a lease per membership.

Member M of group G is the key ``prefix + "membership/" + G + "/" + M``,
holding JSON ``{"metadata": ...}`` and bound to a lease of the membership's
own (a :class:`~._etcd_session.Session`), so a member whose process dies
leaves the group when its lease expires (at most the coordinator's ``ttl``).

Joining is one txn that creates the key if it is absent and reads the
group. If the id is taken (another membership, or a crashed one whose lease
has not expired yet) the join waits for that key to go, then tries again.
Once joined, a task under the coordinator's
:class:`~foundation.supervision.TaskSupervisor` watches the group from the
revision of that read and keeps this process's view of it (what
``members()``, ``owner_of()`` and ``watch()`` answer from). If the
membership's lease is lost (etcd out of reach for longer than the TTL, or
its key deleted by someone else), the member has left the group in
everyone's eyes: the task logs it, emits
``foundation.coordination.membership.lost`` and joins again with a new
lease as soon as it can; the block is not interrupted. While etcd is out
of reach the task keeps retrying (logged); any other failure (permission
denied...) ends it: the task supervisor logs and records the error, and the
membership's ``watch()`` iterators raise it (as
:class:`~foundation.errors.NodeUnreachable` if it was the cluster being out
of reach). Leaving the block stops the task and revokes the lease, which
deletes the key.

Keys deeper under the group's directory (members of a group ``G/...``) are
not members of G and are ignored; a member key whose value is not JSON
(a foreign writer) counts as a member without metadata.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from .. import telemetry
from ..errors import EtcdUnavailable
from ..etcd import compare_create, op_put, op_range
from ._etcd_reach import as_node_unreachable, unreachable_as_node
from ._etcd_session import Changes, Session, dumps, loads
from ._membership import GroupMembership, MemberView

if TYPE_CHECKING:
    from ..etcd import KeyValue, RangeResult, WatchEvent
    from ._etcd_context import EtcdContext

__all__ = ["membership"]

logger = logging.getLogger("foundation.coordination")
_emit = telemetry.emit

#: Seconds between attempts while etcd is out of reach (following or rejoining).
_RETRY_PAUSE = 0.5


class _Member:
    """One membership: its session, its key, the group's view and the task keeping it."""

    def __init__(
        self, ctx: EtcdContext, group: str, member: str, value: str, view: MemberView
    ) -> None:
        self.ctx = ctx
        self.group = group
        self.member = member
        self.value = value
        self.view = view
        self.dir = f"{ctx.prefix}membership/{group}/"
        self.key = (self.dir + member).encode()
        self.session: Session | None = None
        self.revision = 0  # the view holds every change up to this revision
        self.scope = trio.CancelScope()  # the following task's
        self.following = False  # the following task was started
        self.done = trio.Event()

    # -- joining -------------------------------------------------------------
    async def join(self) -> None:
        """Hold the member key under a new session and read the group into the view."""
        while True:
            session = await self.ctx.open_session(
                f"membership {self.group!r} member {self.member!r}"
            )
            try:
                joined = await self._claim(session)
            except BaseException:
                await session.close()
                raise
            if joined is None:  # the session was lost before the key was ours
                await session.close()
                continue
            create_revision, result = joined
            self.session = session
            self._read(result)
            session.guard(self.key, create_revision)
            _emit(
                "foundation.coordination.membership.join",
                {"members": len(self.view)},
                {"group": self.group, "member": self.member},
            )
            return

    async def _claim(self, session: Session) -> tuple[int, RangeResult] | None:
        """Create the member key with ``session``'s lease, waiting while the id is taken.

        Returns the key's create revision and a read of the group, or None
        if the session was lost meanwhile.
        """
        client = self.ctx.client
        warned = False
        while True:
            # Safe to resend: a second run finds our own key (same lease) and only reads.
            result = await client.txn(
                [compare_create(self.key, "==", 0)],
                [
                    op_put(self.key, self.value, lease=session.lease_id),
                    op_range(self.dir, prefix=True),
                ],
                [op_range(self.key), op_range(self.dir, prefix=True)],
                retry_ambiguous=True,
            )
            group: RangeResult = result.responses[-1]  # type: ignore[assignment]
            if result.succeeded:
                mine = next(kv for kv in group.kvs if kv.key == self.key)
                return mine.create_revision, group
            found: RangeResult = result.responses[0]  # type: ignore[assignment]
            if not found.kvs:
                continue  # gone between the comparison and the read: try again
            holder = found.kvs[0]
            if holder.lease == session.lease_id:
                return holder.create_revision, group  # ours, from a resent txn
            if not warned:
                logger.warning(
                    "membership: %r is already a member of group %r (lease %x); waiting for"
                    " it to leave",
                    self.member,
                    self.group,
                    holder.lease,
                )
                warned = True
            if not await self._wait_gone(session, holder, result.revision):
                return None

    async def _wait_gone(self, session: Session, holder: KeyValue, revision: int) -> bool:
        """Wait until ``holder`` (the member key of someone else) is gone; False if we lost ours."""
        changes = Changes(self.ctx.client, self.key, start_revision=revision + 1)
        try:
            with trio.CancelScope() as scope:
                remove = session.on_lost(lambda _reason: scope.cancel())
                try:
                    while True:
                        events = await changes.next()
                        if not events:  # compacted: look at the key itself
                            now = await self.ctx.client.get(self.key)
                            if now is None or now.create_revision != holder.create_revision:
                                return True
                        elif any(e.type == "DELETE" for e in events):
                            return True
                finally:
                    remove()
            return False
        finally:
            await changes.aclose()

    # -- the view ------------------------------------------------------------
    def _read(self, result: RangeResult) -> None:
        members: dict[str, Any] = {}
        for kv in result.kvs:
            name = self._name(kv.key)
            if name is not None:
                members[name] = _metadata(kv.value)
        self.view.replace(members)
        self.revision = result.header.revision

    def _name(self, key: bytes) -> str | None:
        rest = key[len(self.dir.encode()) :]
        if not rest or b"/" in rest:
            return None
        return rest.decode("utf-8", errors="replace")

    def _apply(self, events: list[WatchEvent]) -> None:
        for event in events:
            name = self._name(event.kv.key)
            if name is None:
                continue
            if event.type == "PUT":
                self.view.set(name, _metadata(event.kv.value))
            else:
                self.view.remove(name)

    # -- the following task ----------------------------------------------------
    async def follow(self) -> None:
        """Keep the view current and the member joined, until :meth:`leave` (a supervised task)."""
        try:
            with self.scope:
                while True:
                    await self._follow_until_lost()
                    # Lost because the coordinator is closing (or the block
                    # left): nothing to report, nothing to join again.
                    await trio.lowlevel.checkpoint_if_cancelled()
                    session = self.session
                    assert session is not None
                    logger.warning(
                        "membership: %r left group %r in etcd (%s); joining again",
                        self.member,
                        self.group,
                        session.reason,
                    )
                    _emit(
                        "foundation.coordination.membership.lost",
                        {},
                        {"group": self.group, "member": self.member, "reason": session.reason},
                    )
                    self.view.remove(self.member)
                    self.session = None
                    await session.close()
                    await self._rejoin()
        except Exception as exc:
            # Recorded and logged by the task supervisor; the watchers raise it too.
            self.view.fail(as_node_unreachable(exc))
            raise
        finally:
            self.done.set()

    async def _rejoin(self) -> None:
        while True:
            try:
                await self.join()
            except EtcdUnavailable as exc:
                logger.info(
                    "membership: %r of group %r cannot join again yet (%s); retrying",
                    self.member,
                    self.group,
                    exc,
                )
                await trio.sleep(_RETRY_PAUSE)
                continue
            return

    async def _follow_until_lost(self) -> None:
        session = self.session
        assert session is not None
        client = self.ctx.client
        changes = Changes(client, self.dir, prefix=True, start_revision=self.revision + 1)
        try:
            while not session.lost.is_set():
                with trio.CancelScope() as wait:
                    remove = session.on_lost(lambda _reason: wait.cancel())
                    try:
                        events = await changes.next()
                    except EtcdUnavailable as exc:
                        # The session's keepalive decides whether we are out; keep watching.
                        logger.info(
                            "membership %r of group %r: watch broke (%s); retrying",
                            self.member,
                            self.group,
                            exc,
                        )
                        await trio.sleep(_RETRY_PAUSE)
                        continue
                    finally:
                        remove()
                if wait.cancelled_caught:
                    break
                if events:
                    self._apply(events)
                else:  # compacted: read the group again
                    self._read(await client.range(self.dir, prefix=True))
                    await changes.aclose()
                    changes = Changes(
                        client, self.dir, prefix=True, start_revision=self.revision + 1
                    )
        finally:
            await changes.aclose()

    # -- leaving ---------------------------------------------------------------
    async def leave(self) -> None:
        """Stop following and revoke the lease (deleting the key). Shielded."""
        self.scope.cancel()
        with trio.CancelScope(shield=True):
            if self.following:
                await self.done.wait()
            if self.session is not None:
                await self.session.close()
                self.session = None


def _metadata(raw: bytes) -> Any:
    data = loads(raw)
    return data.get("metadata") if isinstance(data, dict) else None


@asynccontextmanager
async def membership(
    ctx: EtcdContext, group: str, member: str, metadata: Any
) -> AsyncIterator[GroupMembership]:
    """Join ``group`` as ``member`` for the block (see :meth:`EtcdCoordinator.membership`)."""
    value = dumps({"metadata": metadata}, "membership metadata")
    await trio.lowlevel.checkpoint_if_cancelled()
    view = MemberView()
    me = _Member(ctx, group, member, value, view)
    with unreachable_as_node():
        await me.join()
    joined = GroupMembership(group, member, view)
    try:
        ctx.tasks.start_soon(me.follow, name=f"etcd-coordinator membership: {group}/{member}")
        me.following = True
    except BaseException:
        await me.leave()
        raise
    try:
        yield joined
    finally:
        joined.active = False
        await me.leave()
        view.remove(member)  # and wakes the watchers, which end
        view.bump()
        _emit(
            "foundation.coordination.membership.leave",
            {"members": len(view)},
            {"group": group, "member": member},
        )
