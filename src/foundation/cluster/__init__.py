"""Supervision across machines: a distributed supervisor on etcd.

:func:`open_distributed_supervisor` runs each child on one live node of a
cluster, at most once at any moment, and moves it when a node dies, leaves
or joins; see docs/cluster.rst for the guarantees, their limits and a
comparison with Horde. Inside a child, :func:`current_fencing_token` is the
instance's fencing token, and a child that takes a ``handoff`` keyword gets
a :class:`Handoff` whose saved state reaches its next instance as
``handoff_state``.

This package needs etcd (the ``etcd`` extra); ``import foundation`` does
not import it.
"""

from ._context import current_fencing_token as current_fencing_token
from ._handoff import Handoff as Handoff
from ._records import ClusterChild as ClusterChild
from ._supervisor import DistributedSupervisor as DistributedSupervisor
from ._supervisor import open_distributed_supervisor as open_distributed_supervisor

__all__ = [
    "ClusterChild",
    "DistributedSupervisor",
    "Handoff",
    "current_fencing_token",
    "open_distributed_supervisor",
]

from .._util import fixup_module_metadata

fixup_module_metadata(__name__, globals())
del fixup_module_metadata
