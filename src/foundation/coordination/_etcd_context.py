"""What the etcd coordinator's primitives need of it, in one narrow object.

Each primitive (:mod:`._etcd_lock`, :mod:`._etcd_semaphore`,
:mod:`._etcd_rwlock`, :mod:`._etcd_membership`, :mod:`._etcd_election`,
:mod:`._etcd_barrier`, :mod:`._etcd_consensus`) is given an
:class:`EtcdContext` by the coordinator, never the coordinator itself, so
the primitives import nothing of :mod:`._etcd` and the coordinator can add
a primitive without exposing its internals. The context carries the etcd
client, the key prefix, the lease TTL, the task supervisor that runs the
background work, this coordinator's lock holds (so ``lock_status`` answers
exactly for them), and the two ways to get a lease: a fresh
:class:`~._etcd_session.Session` per lock acquisition, campaign, semaphore
slot, read or write hold and membership, or the coordinator's shared lease
(barrier arrivals). State one kind of primitive
keeps per coordinator (an election's leading candidates, a counter's local
gates) lives in an object of the primitive's own class, made on first use
by :meth:`EtcdContext.state`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import trio

from ._etcd_session import Session

if TYPE_CHECKING:
    from ..etcd import EtcdClient
    from ..supervision import TaskSupervisor
    from ._held import HeldLockRecord

__all__ = ["EtcdContext"]

logger = logging.getLogger("foundation.coordination")

_S = TypeVar("_S")


class EtcdContext:
    """One etcd coordinator's connection, names, leases and per-primitive state."""

    __slots__ = ("_shared", "_shared_gate", "_states", "client", "holds", "prefix", "tasks", "ttl")

    def __init__(self, client: EtcdClient, tasks: TaskSupervisor, *, prefix: str, ttl: int) -> None:
        #: The etcd client every call goes through.
        self.client = client
        #: Runs the background work (lease keepalives, key guards).
        self.tasks = tasks
        #: Put before every name (``""``: etcd's names as they are).
        self.prefix = prefix
        #: The TTL, in seconds, of each session's lease.
        self.ttl = ttl
        #: The locks this coordinator holds, by etcd key.
        self.holds: dict[bytes, HeldLockRecord] = {}
        self._shared: Session | None = None
        self._shared_gate = trio.Lock()
        self._states: dict[Callable[[], Any], Any] = {}

    async def open_session(self, what: str, *, fenced: bool = False) -> Session:
        """A fresh lease of its own, kept alive under :attr:`tasks` (``what``: for the logs).

        ``fenced``: the session is lost a margin before its lease can expire on
        the server (every hold and campaign; see :mod:`._etcd_session`).
        """
        return await Session.open(self.client, self.tasks, self.ttl, what, fenced=fenced)

    async def shared_lease(self) -> int:
        """The coordinator's shared lease (barrier arrivals), granted again if it was lost."""
        async with self._shared_gate:
            if self._shared is None or self._shared.lost.is_set():
                old, self._shared = self._shared, None
                if old is not None:
                    logger.warning(
                        "etcd coordinator: shared lease lost (%s); granting a new one", old.reason
                    )
                    await old.close()
                self._shared = await self.open_session("shared lease")
            return self._shared.lease_id

    def state(self, kind: Callable[[], _S]) -> _S:
        """This coordinator's one ``kind()``, made on first use (a primitive's own state)."""
        try:
            return cast(_S, self._states[kind])
        except KeyError:
            made = self._states[kind] = kind()
            return made
