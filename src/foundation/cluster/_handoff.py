"""Handoff: state a child saves for its next instance, wherever that one runs."""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

import trio

from ..errors import InvalidChildSpec, LockLost
from ..etcd import compare_create, op_put
from ._records import handoff_value
from ._spec import check_json

if TYPE_CHECKING:
    from ..etcd import EtcdClient

__all__ = ["Handoff"]


class Handoff:
    """What a distributed child that takes a ``handoff`` keyword gets.

    ``await handoff.save(state)`` stores ``state`` (JSON) in etcd for the
    child's next instance, which gets it as its ``handoff_state`` keyword,
    on this node or another, after a move, a node's graceful exit, a crash
    or a node's death (then the last state saved before it). Made by the
    distributed supervisor; do not instantiate.
    """

    __slots__ = (
        "_client",
        "_key",
        "_lock_key",
        "_lock_name",
        "_node",
        "_saved",
        "child_id",
        "token",
    )

    def __init__(
        self,
        client: EtcdClient,
        child_id: Hashable,
        key: bytes,
        lock_key: bytes,
        lock_name: str,
        token: int,
        node: str,
    ) -> None:
        self._client = client
        self._key = key
        self._lock_key = lock_key
        self._lock_name = lock_name
        self._node = node
        self._saved = 0
        #: The child's id.
        self.child_id = child_id
        #: The fencing token of this instance.
        self.token = token

    def __repr__(self) -> str:
        return f"<Handoff of child {self.child_id!r} token={self.token} saved {self._saved}x>"

    async def save(self, state: Any) -> None:
        """Store ``state`` for the next instance (one etcd txn; checkpoints).

        The write succeeds only while this instance still holds the child's
        lock (its fencing token is the lock's), so a stale instance can never
        overwrite what a newer one saved. Safe to call from a ``finally``
        block shielded from cancellation, when the child is being moved.

        Raises:
            InvalidChildSpec: ``state`` is not JSON (or nests too deep).
            LockLost: this instance no longer holds the child (it is being
                fenced off, or another instance took over).
            EtcdError: etcd could not be reached (``EtcdUnavailable``...).
        """
        try:
            plain = check_json(state, "the handoff state", self.child_id)
        except InvalidChildSpec:
            await trio.lowlevel.checkpoint()
            raise
        value = handoff_value(plain, self.token, self._node, time.time())
        result = await self._client.txn(
            [compare_create(self._lock_key, "==", self.token)],
            [op_put(self._key, value)],
            retry_ambiguous=True,  # an absolute value, guarded: sending it twice is harmless
        )
        if not result.succeeded:
            raise LockLost(self._lock_name, self.token)
        self._saved += 1
