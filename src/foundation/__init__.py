"""trio-foundation: BEAM-grade infrastructure for Trio applications.

General layout: each area is a subpackage whose implementation lives in
underscore modules and whose public names are re-exported from its
``__init__`` (and the most used ones from here). Imports go one way:
errors/config <- registry <- (supervision <- coordination, later issues).

* :mod:`foundation.errors`   -- every typed error, one tree.
* :mod:`foundation.registry` -- the process/service registry; native (C +
  Cython, sharded) and pure-Python backends behind one Backend interface.
* :mod:`foundation.supervision` -- OTP-style supervisors and the task
  supervisor on Trio nurseries.
* :mod:`foundation.coordination` -- locks with fencing tokens, elections,
  barriers, agreement, consensus, counters, vector clocks.
* :mod:`foundation.telemetry` -- attach/emit events, like Elixir's ``:telemetry``.
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
