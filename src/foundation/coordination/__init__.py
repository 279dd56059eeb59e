"""Coordination primitives: locks, semaphores, read/write locks, memberships, elections...

:class:`Coordinator` is the interface (a :class:`typing.Protocol`);
:class:`LocalCoordinator` implements it in-process on Trio primitives and
:class:`EtcdCoordinator` (:func:`open_etcd_coordinator`) cluster-wide on etcd,
whose Lock and Election services it shares with ``etcdctl lock``/``elect``.
:func:`open_local_coordinator` gives the local one a
:class:`~foundation.supervision.TaskSupervisor` for its background work (lock
leases); ``LocalCoordinator()`` alone does everything else.

* ``async with coord.lock(name, timeout) as held`` -- FIFO mutual exclusion,
  ``held.fencing_token`` strictly increasing per name; :class:`~foundation.errors.LockTimeout`.
* ``async with coord.semaphore(name, limit, timeout) as slot`` -- at most
  ``limit`` holders, FIFO, a fencing token per acquisition.
* ``async with coord.rwlock(name).read()`` / ``.write()`` -- many readers or
  one writer, FIFO (writers do not starve).
* ``async with coord.membership(group, member) as g`` -- ``g.members()``,
  ``g.owner_of(key)`` (rendezvous hashing), ``async for members in g.watch()``.
* ``async with coord.election(group).campaign(candidate) as term`` -- one leader
  at a time, FIFO hand-over; ``resign()`` from elsewhere raises
  :class:`~foundation.errors.LeadershipLost` in the leader's block.
* ``await coord.barrier(name, parties).wait(timeout)`` -- reusable rounds.
* ``await coord.agree(name, value)``; ``await coord.consensus(...)`` with
  ``await coord.vote(...)``; ``coord.counter(name)``.
* :class:`VectorClock` orders events across nodes.

On etcd, every hold and campaign has a lease of its own, and a holder cut
off from the cluster fences itself: its block is cancelled, and raises
:class:`~foundation.errors.LockLost` / :class:`~foundation.errors.LeadershipLost`,
a margin (``max(1 s, TTL/5)``) before etcd could expire that lease and let
the next holder in (:class:`EtcdHeldLock`; the guarantee and its limits are
in the coordination docs).

Events go to :mod:`foundation.telemetry` as
``foundation.coordination.<primitive>.<event>`` (``lock``, ``semaphore``,
``rwlock``, ``membership``, ``election``, ``barrier``, ``consensus``, ``counter``)
and messages to the ``foundation.coordination`` logger.
"""

from ..errors import BarrierAborted as BarrierAborted
from ..errors import BarrierTimeout as BarrierTimeout
from ..errors import ConsensusTimeout as ConsensusTimeout
from ..errors import CoordinationError as CoordinationError
from ..errors import DuplicateVote as DuplicateVote
from ..errors import LeadershipLost as LeadershipLost
from ..errors import LockLost as LockLost
from ..errors import LockNotHeld as LockNotHeld
from ..errors import LockTimeout as LockTimeout
from ..errors import NodeUnreachable as NodeUnreachable
from ..errors import UnknownParticipant as UnknownParticipant
from ._etcd import EtcdCoordinator as EtcdCoordinator
from ._etcd import open_etcd_coordinator as open_etcd_coordinator
from ._etcd_lock import EtcdHeldLock as EtcdHeldLock
from ._interface import Barrier as Barrier
from ._interface import Coordinator as Coordinator
from ._interface import Counter as Counter
from ._interface import Election as Election
from ._interface import HeldLock as HeldLock
from ._interface import Lock as Lock
from ._interface import Membership as Membership
from ._interface import RWLock as RWLock
from ._interface import Semaphore as Semaphore
from ._local import LocalCoordinator as LocalCoordinator
from ._local import open_local_coordinator as open_local_coordinator
from ._local_barrier import LocalBarrier as LocalBarrier
from ._local_consensus import LocalCounter as LocalCounter
from ._local_election import LocalElection as LocalElection
from ._local_lock import LocalHeldLock as LocalHeldLock
from ._local_lock import LocalLock as LocalLock
from ._local_rwlock import LocalRWLock as LocalRWLock
from ._local_semaphore import LocalSemaphore as LocalSemaphore
from ._membership import GroupMembership as GroupMembership
from ._types import Decision as Decision
from ._types import Leader as Leader
from ._types import LockStatus as LockStatus
from ._types import Ordering as Ordering
from ._types import Term as Term
from ._types import VectorClock as VectorClock
from ._types import Vote as Vote

__all__ = [
    "Barrier",
    "BarrierAborted",
    "BarrierTimeout",
    "ConsensusTimeout",
    "CoordinationError",
    "Coordinator",
    "Counter",
    "Decision",
    "DuplicateVote",
    "Election",
    "EtcdCoordinator",
    "EtcdHeldLock",
    "GroupMembership",
    "HeldLock",
    "Leader",
    "LeadershipLost",
    "LocalBarrier",
    "LocalCoordinator",
    "LocalCounter",
    "LocalElection",
    "LocalHeldLock",
    "LocalLock",
    "LocalRWLock",
    "LocalSemaphore",
    "Lock",
    "LockLost",
    "LockNotHeld",
    "LockStatus",
    "LockTimeout",
    "Membership",
    "NodeUnreachable",
    "Ordering",
    "RWLock",
    "Semaphore",
    "Term",
    "UnknownParticipant",
    "VectorClock",
    "Vote",
    "open_etcd_coordinator",
    "open_local_coordinator",
]

from .._util import fixup_module_metadata

fixup_module_metadata(__name__, globals())
del fixup_module_metadata
