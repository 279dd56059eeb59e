"""A Trio-native etcd v3 client over gRPC (``grpcio``, the ``etcd`` extra).

etcd is the distributed engine under the etcd registry backend and the etcd
coordinator: Raft consensus, leases, transactions, watches, and its own
Election and Lock services. This package imports nothing from the registry,
supervision or coordination; it works against etcd 3.4 and 3.5.

::

    async with open_etcd_client(["127.0.0.1:2379"]) as etcd:
        await etcd.put("config/x", "1")
        async with etcd.lease(10) as lease:          # kept alive at TTL/3
            ok = await etcd.txn(
                [compare_create("svc/db", "==", 0)],
                [op_put("svc/db", "10.0.0.7", lease=lease.id)],
            )
        async with etcd.watch("svc/", prefix=True, start_revision=rev) as events:
            async for response in events: ...

Failover: calls move to the next endpoint when a member cannot serve (down,
no leader) or stalls (each attempt has its own deadline inside the call's).
Errors are :class:`~foundation.errors.EtcdError` subclasses:
``EtcdUnavailable``, ``EtcdAuthError``, ``EtcdPermissionDenied``,
``EtcdRequestError``, ``LeaseExpired``, ``CompactedRevision``.

Values the library stores in etcd are JSON nested at most :data:`MAX_NESTING`
levels deep; deeper records under its prefixes are not decoded (the registry
skips them, a coordinator call raises
:class:`~foundation.errors.MalformedRecord`).

This package imports ``grpc`` and ``protobuf`` only when a client opens (or a
txn builder is first used): without the ``etcd`` extra, that raises
:class:`~foundation.errors.ConfigError` naming it.
"""

from .._util import fixup_module_metadata
from ..errors import CompactedRevision as CompactedRevision
from ..errors import EtcdAuthError as EtcdAuthError
from ..errors import EtcdError as EtcdError
from ..errors import EtcdPermissionDenied as EtcdPermissionDenied
from ..errors import EtcdRequestError as EtcdRequestError
from ..errors import EtcdUnavailable as EtcdUnavailable
from ..errors import LeaseExpired as LeaseExpired
from ._client import EtcdClient as EtcdClient
from ._client import LeaderKey as LeaderKey
from ._client import LeaseInfo as LeaseInfo
from ._client import open_etcd_client as open_etcd_client
from ._codec import KeyValue as KeyValue
from ._codec import ResponseHeader as ResponseHeader
from ._codec import prefix_end as prefix_end
from ._json import MAX_NESTING as MAX_NESTING
from ._lease import Lease as Lease
from ._ops import Compare as Compare
from ._ops import DeleteResult as DeleteResult
from ._ops import Op as Op
from ._ops import PutResult as PutResult
from ._ops import RangeResult as RangeResult
from ._ops import TxnResult as TxnResult
from ._ops import compare_create as compare_create
from ._ops import compare_lease as compare_lease
from ._ops import compare_mod as compare_mod
from ._ops import compare_value as compare_value
from ._ops import compare_version as compare_version
from ._ops import op_delete as op_delete
from ._ops import op_put as op_put
from ._ops import op_range as op_range
from ._ops import op_txn as op_txn
from ._settings import EtcdSettings as EtcdSettings
from ._watch import Observe as Observe
from ._watch import Watch as Watch
from ._watch import WatchEvent as WatchEvent
from ._watch import WatchResponse as WatchResponse

__all__ = [
    "MAX_NESTING",
    "CompactedRevision",
    "Compare",
    "DeleteResult",
    "EtcdAuthError",
    "EtcdClient",
    "EtcdError",
    "EtcdPermissionDenied",
    "EtcdRequestError",
    "EtcdSettings",
    "EtcdUnavailable",
    "KeyValue",
    "LeaderKey",
    "Lease",
    "LeaseExpired",
    "LeaseInfo",
    "Observe",
    "Op",
    "PutResult",
    "RangeResult",
    "ResponseHeader",
    "TxnResult",
    "Watch",
    "WatchEvent",
    "WatchResponse",
    "compare_create",
    "compare_lease",
    "compare_mod",
    "compare_value",
    "compare_version",
    "op_delete",
    "op_put",
    "op_range",
    "op_txn",
    "open_etcd_client",
    "prefix_end",
]

fixup_module_metadata(__name__, globals())
del fixup_module_metadata
