"""What a demo run is: its settings and its seeded fault plan.

Everything the demo *decides* (which fault comes when, which worker it hits,
what each worker proposes) is derived here from ``--seed``, so two runs with
the same seed make the same decisions; *when* things happen is left to
Trio's real clock.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = [
    "DemoConfig",
    "Fault",
    "plan_faults",
    "proposal",
    "worker_names",
]

# The names the demo registers, campaigns and locks under live in
# ``_snapshot``, which ``python -m foundation inspect`` shares.


def worker_names(count: int) -> list[str]:
    """``worker-1`` .. ``worker-<count>``: the ids of the supervised workers."""
    return [f"worker-{i}" for i in range(1, count + 1)]


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """Settings of one demo run (the ``python -m foundation demo`` options).

    Build it directly in code and tests; :meth:`checked` validates it and is
    called by :func:`~foundation.demo.run_demo`.
    """

    #: How long the scenario runs once the supervision tree is up.
    seconds: float = 10.0
    #: How many supervised workers (barrier parties, election candidates).
    workers: int = 4
    #: Seeds every decision: the fault plan and the workers' proposals.
    seed: int = 0
    #: Where to publish JSON snapshots (None: publish nothing).
    state_path: str | None = None
    #: Pause between two rounds, in seconds.
    round_interval: float = 0.4
    #: Registry backend of the local mode: ``auto``, ``native`` or ``python``.
    backend: str = "auto"
    #: etcd endpoints: run across OS processes on this cluster (None: local mode).
    etcd: tuple[str, ...] | None = None
    #: etcd mode: how many worker processes share the workers.
    processes: int = 2
    #: etcd mode: the key prefix of everything the demo writes.
    prefix: str = "foundation-demo/"
    #: etcd mode: lease TTL of the registries and the coordinators, in seconds.
    ttl: int = 3
    #: Where the library's log records go (None: the caller decides).
    log_file: str | None = None

    def checked(self) -> DemoConfig:
        """Return self if every setting makes sense; raise ConfigError saying which does not."""
        if not (isinstance(self.seconds, int | float) and math.isfinite(self.seconds)):
            raise ConfigError(f"seconds={self.seconds!r}: give a number of seconds, e.g. 10")
        if self.seconds < 2:
            raise ConfigError(
                f"seconds={self.seconds!r} is too short for a leader crash, a worker crash"
                " and their restarts; use --seconds 2 or more"
            )
        if isinstance(self.workers, bool) or not isinstance(self.workers, int):
            raise ConfigError(f"workers={self.workers!r}: give a whole number, e.g. 4")
        if not 2 <= self.workers <= 64:
            raise ConfigError(
                f"workers={self.workers}: use 2 to 64 (a failover needs a second candidate)"
            )
        if not 0.05 <= self.round_interval <= self.seconds / 2:
            raise ConfigError(
                f"round_interval={self.round_interval!r}: use 0.05 s up to half of --seconds"
            )
        if self.etcd is not None:
            if not self.etcd:
                raise ConfigError(
                    "etcd mode needs at least one endpoint, e.g. http://127.0.0.1:2379"
                )
            if not 2 <= self.processes <= self.workers:
                raise ConfigError(
                    f"processes={self.processes}: use 2 up to --workers ({self.workers}), so"
                    " every process hosts a worker and leadership can move between them"
                )
            if self.seconds < 8:
                raise ConfigError(
                    f"seconds={self.seconds!r} is too short for etcd mode: a killed process's"
                    " leases take --ttl seconds (or etcd's minimum) to expire before its"
                    " names move and leadership fails over; use --seconds 8 or more"
                )
            if not self.prefix or not self.prefix.endswith("/"):
                raise ConfigError(f"prefix={self.prefix!r}: use a non-empty prefix ending in '/'")
            if isinstance(self.ttl, bool) or not isinstance(self.ttl, int) or self.ttl < 1:
                raise ConfigError(f"ttl={self.ttl!r}: use a whole number of seconds >= 1")
        return self

    def replace(self, **changes: object) -> DemoConfig:
        """A copy with ``changes`` applied (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @property
    def mode(self) -> str:
        """``"local"`` (one process, no server) or ``"etcd"`` (processes sharing etcd)."""
        return "local" if self.etcd is None else "etcd"

    @property
    def registry_prefix(self) -> str:
        """etcd mode: the prefix of the shared registry."""
        return self.prefix + "registry/"

    @property
    def coordinator_prefix(self) -> str:
        """etcd mode: the prefix of the shared coordinator (wiped at the start of a run)."""
        return self.prefix + "coord/"

    @property
    def state_key(self) -> str:
        """etcd mode: the key holding the last published snapshot."""
        return self.prefix + "state"

    @property
    def running_key(self) -> str:
        """etcd mode: a key bound to the running parent's lease (present while it runs)."""
        return self.prefix + "running"


@dataclass(frozen=True, slots=True)
class Fault:
    """One planned fault: at ``at`` seconds into the run, hit a ``kind`` target.

    Kinds: ``leader`` (crash the current leader), ``worker`` (crash another
    worker), ``process`` (etcd mode: kill the OS process hosting the leader).

    ``pick`` chooses among several possible victims (the non-leader workers,
    ordered by name), so the choice is seeded too.
    """

    index: int
    at: float
    kind: str
    pick: int


def plan_faults(seconds: float, seed: int, *, processes: bool = False) -> tuple[Fault, ...]:
    """The seeded fault plan of a run of ``seconds``.

    At least one worker crash and one leader crash (and in etcd mode one
    leader-process kill), one more fault per further 2.5 s, each in its own
    slot of the middle of the run (15% to 75% of it), so every crash has time
    to be restarted and seen before the end.
    """
    rng = random.Random(f"foundation-demo/{seed}")
    kinds = ["leader", "worker"]
    if processes:
        kinds.append("process")
    count = max(len(kinds), int(seconds // 2.5))
    kinds += [rng.choice(("leader", "worker")) for _ in range(count - len(kinds))]
    rng.shuffle(kinds)
    if processes:
        # A killed process's leases outlive it by the TTL: kill early, so the
        # failover it causes happens well inside the run.
        kinds.remove("process")
        kinds.insert(0, "process")
    start, span = 0.15 * seconds, 0.6 * seconds
    width = span / count
    return tuple(
        Fault(
            index=i,
            at=round(start + width * (i + 0.2 + 0.6 * rng.random()), 3),
            kind=kind,
            pick=rng.randrange(1 << 16),
        )
        for i, kind in enumerate(kinds)
    )


def proposal(seed: int, round_: int, worker: str) -> dict[str, str]:
    """What ``worker`` proposes in round ``round_``: a seeded value, tagged with its proposer.

    Every worker proposes its own value; ``agree`` makes them all learn the
    first one, which is what the summary checks.
    """
    value = random.Random(f"{seed}/{round_}/{worker}").randrange(1 << 16)
    return {"value": f"{value:04x}", "by": worker}
