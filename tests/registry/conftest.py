"""Helpers for the registry conformance suite (tests/registry).

``snapshot(registry)`` captures everything a registry answers (names with
their values, metadata and owners; group memberships in join order) in a form
that compares with ``==``, so a test can assert that a failed write left the
registry exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from foundation.registry import Registration, Registry


def reg_tuple(reg: Registration) -> tuple[Any, Any, Any, dict[Any, Any], Any]:
    """A Registration as a plain comparable tuple (metadata as a dict)."""
    return (reg.namespace, reg.name, reg.value, dict(reg.metadata), reg.owner)


def take_snapshot(registry: Registry) -> dict[str, Any]:
    regs = sorted((reg_tuple(r) for r in registry.registrations()), key=repr)
    members = [reg_tuple(m) for m in registry.backend.memberships()]
    return {
        "registrations": regs,
        "count": registry.count(),
        "len": len(registry),
        # memberships() order is per group; compare as a sorted list
        "memberships": sorted(members, key=repr),
    }


@pytest.fixture
def snapshot() -> Callable[[Registry], dict[str, Any]]:
    """``snapshot(registry)`` -> a comparable picture of the whole registry."""
    return take_snapshot
