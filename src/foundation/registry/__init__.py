"""The process/service registry: one facade, pluggable backends.

``NATIVE`` tells whether the compiled table is in use (see ``_compat.py``).
``open_registry(backend="etcd", endpoints=[...])`` (or ``open_etcd_backend``
plus ``Registry(backend)``) runs it on etcd.
"""

from ._backend import AsyncWrites as AsyncWrites
from ._backend import Backend as Backend
from ._compat import NATIVE as NATIVE
from ._etcd import EtcdBackend as EtcdBackend
from ._etcd import open_etcd_backend as open_etcd_backend
from ._facade import Registry as Registry
from ._facade import RegistryWatch as RegistryWatch
from ._facade import ScopeOwner as ScopeOwner
from ._facade import Subscription as Subscription
from ._facade import open_registry as open_registry
from ._types import EMPTY_METADATA as EMPTY_METADATA
from ._types import MISSING as MISSING
from ._types import EventKind as EventKind
from ._types import EventReason as EventReason
from ._types import Health as Health
from ._types import Missing as Missing
from ._types import Registration as Registration
from ._types import RegistryEvent as RegistryEvent
from ._types import RegistryStats as RegistryStats

__all__ = [
    "EMPTY_METADATA",
    "MISSING",
    "NATIVE",
    "AsyncWrites",
    "Backend",
    "EtcdBackend",
    "EventKind",
    "EventReason",
    "Health",
    "Missing",
    "Registration",
    "Registry",
    "RegistryEvent",
    "RegistryStats",
    "RegistryWatch",
    "ScopeOwner",
    "Subscription",
    "open_etcd_backend",
    "open_registry",
]

from .._util import fixup_module_metadata

fixup_module_metadata(__name__, globals())
del fixup_module_metadata
