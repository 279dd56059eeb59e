"""The descriptor pool the generated etcd messages live in (not protobuf's default one).

See ``tools/gen_protos.py``: another etcd client library in the same process
registers the same message names, which the default pool refuses twice.
"""

from google.protobuf import descriptor_pool

__all__ = ["POOL"]

POOL = descriptor_pool.DescriptorPool()
