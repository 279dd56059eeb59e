"""Where a distributed supervisor keeps its state in etcd.

Under the registry's prefix, in the subtree ``<registry prefix>cluster/``
that the etcd registry reserves (its watch skips it), supervisor ``NAME``
keeps keys *without* a lease, which outlive the node that wrote them:

``cluster/NAME/spec/SEG``
    the child's spec and its desired state (JSON, see :mod:`._records`);
``cluster/NAME/handoff/SEG``
    the last state the child saved with ``handoff.save()``;
``cluster/NAME/move/SEG``
    a node asking the child's holder to hand it over (bound to the asking
    node's lease, so it goes away with that node).

``SEG`` is the child id's :func:`~._spec.id_segment`. Under the
coordinator's prefix, each child has a lock in the layout of etcd's Lock
service, named ``cluster/NAME/lock/SEG``: the key
``<coordinator prefix>cluster/NAME/lock/SEG/<lease id in hex>``, bound to
the holding node's lease. The key with the lowest create revision holds the
lock (so ``coord.lock_status("cluster/NAME/lock/SEG")`` names the holder),
its create revision is the child's fencing token, and its value is the
child's run record (holder node, since, starting or running).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ClusterKeys"]


@dataclass(frozen=True, slots=True)
class ClusterKeys:
    """The key layout of one distributed supervisor (see the module docstring)."""

    #: ``<registry prefix>cluster/NAME/``: specs, handoff state, move requests.
    base: str
    #: ``<coordinator prefix>cluster/NAME/lock/``: the children's locks.
    lock_base: str
    #: The supervisor's name.
    name: str

    @classmethod
    def make(cls, registry_prefix: str, coordinator_prefix: str, name: str) -> ClusterKeys:
        return cls(
            f"{registry_prefix}cluster/{name}/", f"{coordinator_prefix}cluster/{name}/lock/", name
        )

    @property
    def spec_dir(self) -> str:
        return self.base + "spec/"

    def spec(self, seg: str) -> bytes:
        return f"{self.base}spec/{seg}".encode()

    def handoff(self, seg: str) -> bytes:
        return f"{self.base}handoff/{seg}".encode()

    def move(self, seg: str) -> bytes:
        return f"{self.base}move/{seg}".encode()

    def lock_name(self, seg: str) -> str:
        """The child's lock name, relative to the coordinator's prefix."""
        return f"cluster/{self.name}/lock/{seg}"

    def lock_queue(self, seg: str) -> bytes:
        return f"{self.lock_base}{seg}/".encode()

    def lock_key(self, seg: str, lease_id: int) -> bytes:
        return f"{self.lock_base}{seg}/{lease_id:x}".encode()

    def parse(self, key: bytes) -> tuple[str, str, str] | None:
        """``(kind, seg, rest)`` of one of our keys, or None for anything else.

        ``kind`` is ``"spec"``, ``"handoff"``, ``"move"`` or ``"lock"`` (then
        ``rest`` is the lease id in hex).
        """
        text = key.decode("utf-8", "replace")
        if text.startswith(self.lock_base):
            seg, sep, lease = text[len(self.lock_base) :].partition("/")
            if not seg or not sep or not lease or "/" in lease:
                return None
            return "lock", seg, lease
        if text.startswith(self.base):
            kind, sep, seg = text[len(self.base) :].partition("/")
            if kind in ("spec", "handoff", "move") and sep and seg and "/" not in seg:
                return kind, seg, ""
        return None
