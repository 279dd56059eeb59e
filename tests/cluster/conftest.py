"""Fixtures of the cluster tests: ``cluster``, nodes of a distributed supervisor in this process.

See ``_cluster_nodes.py``. Tests with separate OS processes use ``_node.py``
(``test_processes.py``) and the partition lab (``tests/partition``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import trio
from _cluster_nodes import Cluster


@pytest.fixture(autouse=True)
def _clear_events() -> None:
    import _cluster_children

    _cluster_children.EVENTS.clear()


@pytest.fixture
async def cluster(etcd_endpoints: list[str]) -> AsyncIterator[Cluster]:
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, etcd_endpoints, f"test/{uuid.uuid4().hex}/")
        try:
            yield c
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(30):
                for node in list(c.nodes.values()):
                    await node.leave()
            nursery.cancel_scope.cancel()
