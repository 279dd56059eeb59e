"""The coordinator matrix: one conformance suite for every implementation.

``coordinator`` is parametrised over implementations with the ids below:

* ``local`` -- :func:`open_local_coordinator`;
* ``etcd`` -- :func:`open_etcd_coordinator` on the session's etcd member
  (``etcd_endpoints`` from ``_etcd_fixtures``) with a prefix of its own per
  test (``test/<uuid>/``); marked ``etcd`` (deselect with ``-m "not etcd"``),
  skipped when no etcd binary is found (failing under
  ``FOUNDATION_REQUIRE_ETCD=1``).

Tests that control time with ``autojump_clock`` (a MockClock also jumps
while a task waits on a socket, so it cannot drive etcd) or look at local
internals are marked ``local_only`` and skip on etcd; their behaviours are
checked on every coordinator with the real clock in ``test_etcd_realtime.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from foundation.coordination import Coordinator, open_etcd_coordinator, open_local_coordinator

_COORDINATORS = [
    pytest.param("local", id="local"),
    pytest.param("etcd", marks=pytest.mark.etcd, id="etcd"),
]

#: Coordinators whose tests run on the real clock against a server.
_REMOTE = frozenset({"etcd"})


@pytest.fixture(params=_COORDINATORS)
def coordinator_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name in _REMOTE and request.node.get_closest_marker("local_only"):
        pytest.skip(f"local-only behaviour (mock clock or local internals), not on {name}")
    return name


@pytest.fixture
async def coordinator(
    coordinator_name: str, request: pytest.FixtureRequest
) -> AsyncIterator[Coordinator]:
    """A fresh coordinator of the implementation under test, closed after the test."""
    if coordinator_name == "etcd":
        endpoints: list[str] = request.getfixturevalue("etcd_endpoints")
        async with open_etcd_coordinator(
            endpoints, prefix=f"test/{uuid.uuid4().hex}/", ttl=5
        ) as coord:
            yield coord
        return
    assert coordinator_name == "local"
    async with open_local_coordinator("test-coordination") as coord:
        yield coord
