"""Supervision for Trio: OTP-style supervisors, dynamic supervisors, task supervisors.

* :func:`open_supervisor` -- children from :class:`ChildSpec`\\ s, restarted by
  a :class:`Strategy` within a restart intensity, stopped in reverse order.
* :func:`run_supervisor` -- the same under a nursery you own:
  ``sup = await nursery.start(run_supervisor, specs)`` returns the running
  :class:`Supervisor` once its children have started; cancel it to stop
  them. :func:`supervisor_spec` nests one as a child of another.
* :func:`open_dynamic_supervisor` -- many children started at run time,
  at most ``max_children`` at once.
* :func:`open_task_supervisor` -- supervised fire-and-forget tasks whose
  failures are recorded, not propagated; ``await tasks.start(fn)`` waits
  for a free slot under ``max_children``.

Events go to :mod:`foundation.telemetry` (``foundation.supervisor.*``,
``foundation.task.*``) and logs to the ``foundation.supervision`` logger.
"""

from ._dynamic import DynamicSupervisor as DynamicSupervisor
from ._dynamic import open_dynamic_supervisor as open_dynamic_supervisor
from ._spec import Backoff as Backoff
from ._spec import ChildCounts as ChildCounts
from ._spec import ChildInfo as ChildInfo
from ._spec import ChildSpec as ChildSpec
from ._spec import ChildState as ChildState
from ._spec import Restart as Restart
from ._spec import Strategy as Strategy
from ._supervisor import Supervisor as Supervisor
from ._supervisor import open_supervisor as open_supervisor
from ._supervisor import run_supervisor as run_supervisor
from ._supervisor import supervisor_spec as supervisor_spec
from ._tasks import TaskFailure as TaskFailure
from ._tasks import TaskSupervisor as TaskSupervisor
from ._tasks import open_task_supervisor as open_task_supervisor
from ._tree import ChildNode as ChildNode
from ._tree import SupervisorTree as SupervisorTree

__all__ = [
    "Backoff",
    "ChildCounts",
    "ChildInfo",
    "ChildNode",
    "ChildSpec",
    "ChildState",
    "DynamicSupervisor",
    "Restart",
    "Strategy",
    "Supervisor",
    "SupervisorTree",
    "TaskFailure",
    "TaskSupervisor",
    "open_dynamic_supervisor",
    "open_supervisor",
    "open_task_supervisor",
    "run_supervisor",
    "supervisor_spec",
]

from .._util import fixup_module_metadata

fixup_module_metadata(__name__, globals())
del fixup_module_metadata
