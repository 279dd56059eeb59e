"""select() whose criteria run code that changes the registry mid-scan.

The native scan tests metadata without holding references to the entries
and re-reads a shard that changed meanwhile; these pin that path (and its
fallback) to the python twin's answers.
"""

from __future__ import annotations

from typing import Any

import pytest

from foundation.registry import NATIVE, Registry

BACKENDS = [
    pytest.param("native", marks=pytest.mark.skipif(not NATIVE, reason="native not built")),
    "python",
]


class Meddler:
    """A metadata value whose __eq__ registers (or removes) entries."""

    def __init__(self, registry: Registry, budget: int, label: str) -> None:
        self.registry = registry
        self.budget = budget
        self.label = label
        self.calls = 0

    def __eq__(self, other: object) -> bool:
        self.calls += 1
        if self.budget > 0:
            self.budget -= 1
            self.registry.register_nowait("extra", f"{self.label}-{self.budget}", 0)
        return other == "hot"

    __hash__ = object.__hash__


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("budget", [1, 2, 1_000])
def test_select_survives_registrations_made_by_criteria(backend: str, budget: int) -> None:
    registry = Registry(backend)
    meddlers = []
    for i in range(200):
        m = Meddler(registry, budget if i == 7 else 0, f"m{i}")
        meddlers.append(m)
        tier: Any = m if i % 10 == 0 or i == 7 else "cold"
        registry.register_nowait("svc", f"n{i}", i, {"tier": tier})
    found = registry.select("svc", where={"tier": "hot"})
    # Meddler.__eq__ says "hot" matches, so the tier-Meddler entries match
    want = sorted([*range(0, 200, 10), 7])
    assert sorted(r.value for r in found) == want
    assert meddlers[7].calls >= 1  # the scan did run the mutating __eq__
    everything = registry.select(None, where={"tier": "hot"})
    assert sorted(r.value for r in everything) == want
    assert registry.count("extra") == min(budget, meddlers[7].calls)
    registry.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_select_with_no_matches_and_no_metadata(backend: str) -> None:
    registry = Registry(backend)
    for i in range(50):
        registry.register_nowait("svc", f"n{i}", i)
    assert registry.select(None, where={"tier": "hot"}) == []
    assert len(registry.select(None)) == 50
    registry.close()
