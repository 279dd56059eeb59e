"""trio-foundation: BEAM-grade infrastructure for Trio applications.

General layout: each area is a subpackage whose implementation lives in
underscore modules and whose public names are re-exported from its
``__init__`` (the most used ones also from here).

* :mod:`foundation.errors` -- every typed error, one tree.
* :mod:`foundation.telemetry` -- attach/emit events, like Elixir's ``:telemetry``.
* :mod:`foundation.config` -- the ``FOUNDATION_*`` environment variables.
* :mod:`foundation.etcd` -- a Trio-native etcd v3 client (kv, txn, leases,
  watch, election, lock), used by the etcd backends below.
* :mod:`foundation.registry` -- the process/service registry: native (C +
  Cython, sharded) and pure-Python backends, and an etcd backend for a
  cluster, behind one Backend interface.
* :mod:`foundation.supervision` -- OTP-style supervisors, dynamic
  supervisors and the task supervisor on Trio nurseries.
* :mod:`foundation.coordination` -- locks with fencing tokens, elections,
  barriers, agreement, consensus, counters and vector clocks, in-process
  (``LocalCoordinator``) or cluster-wide on etcd (``open_etcd_coordinator``).
* ``foundation.demo`` and ``python -m foundation`` -- the demo and the
  command line (bench, demo, inspect); the library never imports them.

Imports go one way, lowest layer first: _util, errors, telemetry,
_endpoints, config <- etcd <- registry <- supervision <- coordination <-
cluster <- demo, _cli. This module sits above them all and does not import
``cluster``, so ``import foundation`` needs no etcd. ``tests/test_layers.py``
checks the order (no upward import, no import circle, type-only ones
included); docs/contract.rst explains it.
"""

from . import coordination as coordination
from . import errors as errors
from . import supervision as supervision
from . import telemetry as telemetry
from .registry import NATIVE as NATIVE
from .registry import Registration as Registration
from .registry import Registry as Registry
from .registry import RegistryEvent as RegistryEvent
from .registry import open_registry as open_registry

__version__ = "0.1.0.dev0"

__all__ = [
    "NATIVE",
    "Registration",
    "Registry",
    "RegistryEvent",
    "coordination",
    "errors",
    "open_registry",
    "supervision",
    "telemetry",
]
