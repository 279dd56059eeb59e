"""The coordinator matrix: one conformance suite for every implementation.

``coordinator`` is parametrised over implementations with the ids below.
Only ``local`` exists so far. The etcd coordinator joins as one more param,
``pytest.param("etcd", marks=pytest.mark.etcd, id="etcd")`` (register the
marker in pyproject.toml, skip when no etcd binary is found), opened in
``coordinator`` with ``open_etcd_coordinator(endpoints=[...], prefix=f"test/{uuid}/")``;
tests that control time with ``autojump_clock`` are then marked ``local_only``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from foundation.coordination import Coordinator, open_local_coordinator

_COORDINATORS = [
    pytest.param("local", id="local"),
    # etcd joins here: pytest.param("etcd", marks=pytest.mark.etcd, id="etcd"),
]


@pytest.fixture(params=_COORDINATORS)
def coordinator_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def coordinator(coordinator_name: str) -> AsyncIterator[Coordinator]:
    """A fresh coordinator of the implementation under test, closed after the test."""
    assert coordinator_name == "local"
    # etcd: async with open_etcd_coordinator(endpoints=..., prefix=...) as coord: yield coord
    async with open_local_coordinator("test-coordination") as coord:
        yield coord
