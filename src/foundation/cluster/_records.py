"""The JSON records of a distributed supervisor, and what it reports about its children.

Values in etcd are JSON, never pickles. A spec key holds a
:class:`SpecRecord` (``{"spec": ..., "state": ..., "since": ..., ...}``), a
lock key a :class:`LockEntry`'s value (``{"holder", "since", "state"}``, the
``holder``/``since`` fields as the coordinator's own locks write them, so
``lock_status`` reads them too), a move key a :class:`MoveRecord`. A value
that does not decode (a foreign writer) is skipped and logged by whoever
reads it, never fatal.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Literal

from ..supervision import ChildSpec
from ._spec import decode_spec, id_json

__all__ = [
    "ACTIVE",
    "FAILED",
    "STOPPED",
    "ClusterChild",
    "LockEntry",
    "MoveRecord",
    "SpecRecord",
    "dump",
    "handoff_state",
    "handoff_value",
    "load",
]

#: A spec's desired states: run it somewhere; stopped (terminated, or it
#: finished); failed (over its restart intensity on some node).
ACTIVE = "active"
STOPPED = "stopped"
FAILED = "failed"

State = Literal["starting", "running", "stopped", "failed"]


def dump(value: Any) -> str:
    """Compact JSON (NaN refused: JSON has none)."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False, sort_keys=True)


def load(raw: bytes) -> Any:
    """Decoded JSON, or None when it is not JSON (a foreign value; nested too deep)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


@dataclass(frozen=True, slots=True)
class ClusterChild:
    """One child of a distributed supervisor, as :meth:`cluster_children` reads it from etcd."""

    #: The child's id.
    id: Hashable
    #: The node running (or starting) it; None when no node holds it. For a
    #: failed child, the node where it failed.
    node: str | None
    #: ``"starting"`` (stored, no node runs it yet, or its node is starting
    #: it), ``"running"``, ``"stopped"`` (terminated, or it finished) or ``"failed"``.
    state: State
    #: When it entered this state, as :func:`time.time` on the node that wrote it.
    since: float
    #: The fencing token of the instance holding it (its lock's create
    #: revision, strictly increasing per child); None when no node holds it.
    fencing_token: int | None
    #: Why it stopped or failed, when it did.
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class SpecRecord:
    """A stored spec and its desired state (the value of ``cluster/NAME/spec/SEG``)."""

    seg: str
    #: The child's id (arrays as tuples).
    id: Hashable
    #: The spec as stored (JSON), compared when static specs disagree.
    data: dict[str, Any]
    spec: ChildSpec
    #: :data:`ACTIVE`, :data:`STOPPED` or :data:`FAILED`.
    state: str
    since: float
    #: The node that wrote this state.
    by: str | None
    reason: str | None
    #: For a failed child: restarts counted and the window, as
    #: :exc:`~foundation.errors.RestartIntensityExceeded` reports them.
    restarts: int
    window: float
    #: The key's mod revision (compare-and-swap of state changes).
    mod_revision: int
    #: A random tag of the write that stored it (to recognise a resent create).
    nonce: str

    @property
    def key(self) -> str:
        """The id as rendezvous hashing places it (:func:`~._spec.id_json`)."""
        return id_json(self.id)

    @staticmethod
    def value(
        data: dict[str, Any],
        state: str,
        since: float,
        by: str | None,
        reason: str | None = None,
        restarts: int = 0,
        window: float = 0.0,
    ) -> str:
        return dump(
            {
                "spec": data,
                "state": state,
                "since": since,
                "by": by,
                "reason": reason,
                "restarts": restarts,
                "window": window,
                "nonce": uuid.uuid4().hex,
            }
        )

    @classmethod
    def decode(cls, seg: str, raw: bytes, mod_revision: int) -> SpecRecord:
        """Raises ValueError for a value this module did not write."""
        body = load(raw)
        if not isinstance(body, dict):
            raise ValueError(f"not a spec record: {raw[:80]!r}")
        spec = decode_spec(body.get("spec"))
        state = body.get("state")
        if state not in (ACTIVE, STOPPED, FAILED):
            raise ValueError(f"unknown state {state!r}")
        since = body.get("since")
        by = body.get("by")
        reason = body.get("reason")
        restarts = body.get("restarts", 0)
        window = body.get("window", 0.0)
        return cls(
            seg,
            spec.id,
            body["spec"],
            spec,
            state,
            float(since) if isinstance(since, int | float) else 0.0,
            by if isinstance(by, str) else None,
            reason if isinstance(reason, str) else None,
            restarts if isinstance(restarts, int) else 0,
            float(window) if isinstance(window, int | float) else 0.0,
            mod_revision,
            str(body.get("nonce", "")),
        )

    def replaced(
        self,
        state: str,
        since: float,
        by: str | None,
        reason: str | None = None,
        restarts: int = 0,
        window: float = 0.0,
    ) -> str:
        """The value of this spec in another state."""
        return self.value(self.data, state, since, by, reason, restarts, window)


@dataclass(frozen=True, slots=True)
class LockEntry:
    """One key in a child's lock queue: a node holding (or racing for) the child."""

    key: bytes
    lease: int
    #: Its create revision: the fencing token when it holds the lock.
    token: int
    #: The node (the ``holder`` field); None for a foreign key (``etcdctl lock``).
    node: str | None
    #: ``"starting"`` or ``"running"``.
    state: str
    since: float

    @staticmethod
    def value(node: str, state: str, since: float) -> str:
        return dump({"holder": node, "since": since, "state": state})

    @classmethod
    def decode(cls, key: bytes, raw: bytes, lease: int, token: int) -> LockEntry:
        body = load(raw)
        if not isinstance(body, dict):
            body = {}
        node = body.get("holder")
        state = body.get("state")
        since = body.get("since")
        return cls(
            key,
            lease,
            token,
            node if isinstance(node, str) else None,
            state if state in ("starting", "running") else "starting",
            float(since) if isinstance(since, int | float) else 0.0,
        )


@dataclass(frozen=True, slots=True)
class MoveRecord:
    """A node asking the holder of a child to hand it over (``cluster/NAME/move/SEG``)."""

    #: The node that wants it (the one that owns it now).
    to: str
    #: The node asked to let it go.
    frm: str
    #: The token of the instance asked to stop.
    token: int
    lease: int

    @staticmethod
    def value(to: str, frm: str, token: int, since: float) -> str:
        return dump({"to": to, "from": frm, "token": token, "since": since})

    @classmethod
    def decode(cls, raw: bytes, lease: int) -> MoveRecord:
        body = load(raw)
        if not isinstance(body, dict):
            raise ValueError(f"not a move record: {raw[:80]!r}")
        to, frm, token = body.get("to"), body.get("from"), body.get("token")
        if not isinstance(to, str) or not isinstance(frm, str) or not isinstance(token, int):
            raise ValueError(f"not a move record: {raw[:80]!r}")
        return cls(to, frm, token, lease)


def handoff_value(state: Any, token: int, node: str, at: float) -> str:
    """The value of a handoff key (``state`` already checked as JSON)."""
    return dump({"state": state, "token": token, "node": node, "at": at})


def handoff_state(raw: bytes) -> Any:
    """The state a handoff key holds, as JSON gives it back (tuples saved come back as lists)."""
    body = load(raw)
    if not isinstance(body, dict):
        return None
    return body.get("state")
