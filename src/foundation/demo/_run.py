"""``run_demo``: the scenario as a function, for the command line and for tests."""

from __future__ import annotations

from ._config import DemoConfig
from ._observe import DemoSummary
from ._view import View

__all__ = ["run_demo"]


async def run_demo(config: DemoConfig, *, view: View | None = None) -> DemoSummary:
    """Run the demo scenario under Trio and return its summary.

    Local mode (``config.etcd`` is None) runs everything in this process on
    the embedded registry and a LocalCoordinator; etcd mode starts
    ``config.processes`` worker processes sharing the cluster and supervises
    them. Blocks for about ``config.seconds`` plus start and shutdown, on
    Trio's real clock (an autojump clock would race through the plan).

    Args:
        config: The run's settings (checked first).
        view: Where to draw the live view; None draws nothing.

    Returns:
        The :class:`DemoSummary`; ``summary.ok`` tells whether the
        scenario's checks held, ``summary.problems`` why not.

    Raises:
        ConfigError: a setting makes no sense (the message says which).
        RestartIntensityExceeded: the supervision tree gave up (workers kept
            crashing faster than planned).
        EtcdError: etcd mode, the cluster refused or did not answer.
    """
    config = config.checked()
    if config.etcd is None:
        from ._local import run_local

        return await run_local(config, view)
    from ._cluster import run_cluster

    return await run_cluster(config, view)
