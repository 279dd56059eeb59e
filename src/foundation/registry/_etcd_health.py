"""What ``health_check()`` of an etcd registry reports, gathered from its parts.

``ok`` is false for what stops writes: the registry is closed, its lease is
lost and not replaced yet, etcd did not answer the last call, or etcd
refused the watch. A view that may be stale is not one of them (reads keep
answering from it): ``details["stale_since"]`` says since when, as a
wall-clock time (``time.time()``), or None while the view is known current.
"""

from __future__ import annotations

import time
from typing import Any

import trio

from .. import errors
from ._etcd_lease import LeaseKeeper
from ._etcd_link import Link
from ._etcd_mirror import Mirror
from ._etcd_watch import Follower
from ._types import Health

__all__ = ["health"]


def health(link: Link, mirror: Mirror, follower: Follower, keeper: LeaseKeeper) -> Health:
    """The backend's :class:`~foundation.registry.Health` now."""
    lease = keeper.lease
    stale = follower.stale_since()
    now = trio.current_time()
    details: dict[str, Any] = {
        "endpoint": link.endpoint,
        "prefix": link.prefix,
        "instance": link.instance_id,
        "lease_id": lease.id if lease is not None else 0,
        "lease_ttl": link.ttl,
        "lease_losses": keeper.losses,
        "watch_revision": mirror.applied,
        "entries_owned": len(mirror.mine),
        "entries_to_put_back": keeper.unbound(),
        "conflicts": mirror.conflicts,
        "stale_since": None if stale is None else time.time() - (now - stale),
        "watch_moves": follower.watch_moves,
        "foreign_skipped": mirror.foreign,
        "last_foreign_key": mirror.foreign_last,
        "last_error": repr(link.last_error) if link.last_error is not None else None,
    }
    problems = []
    if link.closed:
        problems.append("closed")
    else:
        if not keeper.ready:
            cause = keeper.error
            problems.append(
                "lease lost"
                + (f" ({cause.message})" if cause is not None else "")
                + "; re-establishing"
            )
        watch_error = follower.watch_error
        if watch_error is not None and not isinstance(watch_error, errors.EtcdUnavailable):
            problems.append(f"watch refused ({watch_error})")
        if link.unavailable is not None:
            problems.append(f"etcd unavailable ({link.unavailable})")
    summary = (
        f"{mirror.table.count()} registrations, lease {details['lease_id']:x},"
        f" watch at revision {mirror.applied}, via {details['endpoint']}"
    )
    if stale is not None:
        summary += f", view may be stale since {now - stale:.1f} s ago"
        if follower.watch_error is not None:
            summary += f" (watch down: {follower.watch_error})"
    if keeper.losses:
        summary += f", lease lost {keeper.losses} time(s)"
    if mirror.foreign:
        summary += f", {mirror.foreign} foreign record(s) skipped"
    detail = "; ".join([*problems, summary])
    return Health(ok=not problems, backend="etcd", detail=detail, details=details)
