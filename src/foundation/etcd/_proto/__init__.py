"""Generated protobuf/gRPC modules for the part of etcd's API the client uses.

Regenerate with ``python tools/gen_protos.py`` after editing a ``.proto``
here; ``tests/etcd/test_protos.py`` fails while the committed modules differ
from what the script makes. Importing these needs ``protobuf`` and ``grpcio``
(the ``etcd`` extra).
"""

__all__: list[str] = []
