"""Group membership on the local coordinator: join on entry, leave on exit.

Per group, one :class:`~._membership.MemberView` shared by every
membership of the group, changed synchronously by joins and leaves. A
member id is in a group at most once: joining with an id that is already
there waits until that membership leaves (as on etcd, where a crashed
member's id is free once its lease expires).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from .. import telemetry
from ._membership import GroupMembership, MemberView

__all__ = ["LocalGroups", "membership"]

logger = logging.getLogger("foundation.coordination")
_emit = telemetry.emit


class LocalGroups:
    """The groups of one local coordinator: a member view per group in use."""

    __slots__ = ("views",)

    def __init__(self) -> None:
        self.views: dict[str, MemberView] = {}

    def __len__(self) -> int:
        return len(self.views)

    def snapshot(self) -> dict[str, list[str]]:
        return {group: view.members() for group, view in self.views.items()}


@asynccontextmanager
async def membership(
    groups: LocalGroups, group: str, member: str, metadata: Any
) -> AsyncIterator[GroupMembership]:
    """Join ``group`` as ``member`` for the block (see :meth:`LocalCoordinator.membership`)."""
    await trio.lowlevel.checkpoint_if_cancelled()
    views = groups.views
    waited = False
    while True:
        view = views.get(group)
        if view is None:
            view = views[group] = MemberView()
        if member not in view:
            break
        if not waited:
            logger.warning(
                "membership: %r is already a member of group %r; waiting for it to leave",
                member,
                group,
            )
        waited = True
        await view.wait_change(view.version)
    view.set(member, metadata)
    _emit(
        "foundation.coordination.membership.join",
        {"members": len(view)},
        {"group": group, "member": member},
    )
    joined = GroupMembership(group, member, view)
    try:
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        yield joined
    finally:
        joined.active = False
        view.remove(member)
        if not len(view) and views.get(group) is view:
            del views[group]
        _emit(
            "foundation.coordination.membership.leave",
            {"members": len(view)},
            {"group": group, "member": member},
        )
