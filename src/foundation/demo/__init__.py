"""The demo: a small self-healing system on trio-foundation.

``python -m foundation demo`` runs, for about ten seconds, a supervision
tree of workers registered by name; they elect a leader, meet at a barrier
each round and agree on a value, while a fault injector crashes a worker and
then the leader on a seeded plan. Supervisors restart them (the names move
to the new instances), leadership fails over, and at the end a summary
checks that it all held: restarts happened, a name moved, leadership failed
over, every round was agreed, and nothing stayed registered by dead workers.
With ``--etcd URL`` the same runs across OS processes sharing one etcd.

It is built only on the public API (``foundation.registry``,
``foundation.supervision``, ``foundation.coordination``,
``foundation.telemetry``), so it doubles as an example. In code and tests::

    summary = await run_demo(DemoConfig(seconds=3, workers=3, seed=1))
    assert summary.ok, summary.problems

Layout: ``_config`` (settings, the seeded fault plan), ``_snapshot`` (what
the demo publishes and ``inspect`` reads: the names it uses, the snapshot
format, where state files live), ``_worker`` (one worker instance),
``_chaos`` (the fault injector), ``_monitor`` (watch, observer, telemetry),
``_observe`` (the tally and the checks), ``_report`` (publishing snapshots),
``_view`` (live view, summary text), ``_local`` and ``_cluster`` (the two
modes). The command (options, exit status) is ``foundation._cli``'s; this
package never imports it.
"""

from ._cluster import WorkerProcessExited as WorkerProcessExited
from ._config import DemoConfig as DemoConfig
from ._observe import DemoSummary as DemoSummary
from ._run import run_demo as run_demo
from ._view import View as View
from ._worker import InjectedCrash as InjectedCrash

__all__ = [
    "DemoConfig",
    "DemoSummary",
    "InjectedCrash",
    "View",
    "WorkerProcessExited",
    "run_demo",
]

from .._util import fixup_module_metadata

fixup_module_metadata(__name__, globals())
del fixup_module_metadata
