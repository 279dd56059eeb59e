"""Bad input on an empty registry: an unhashable key is refused even when
there is nothing stored to compare it with (an empty table must not answer
"absent" for a key it could never hold)."""

from __future__ import annotations

from typing import Any

import pytest

from foundation import errors
from foundation.registry import Registry


@pytest.mark.parametrize("where", ["ns", "name"])
async def test_unhashable_key_refused_by_an_empty_registry(
    registry: Registry, ns: Any, where: str
) -> None:
    key = (["bad"], "x") if where == "ns" else (ns, ["bad"])
    with pytest.raises(errors.InvalidKey):
        await registry.unregister(*key)
    with pytest.raises(errors.InvalidKey):
        await registry.update_metadata(*key, {})
    with pytest.raises(errors.InvalidKey):
        await registry.leave(*key, 1)
    for read in (registry.lookup, registry.get, registry.metadata):
        with pytest.raises(errors.InvalidKey):
            read(*key)
    with pytest.raises(errors.InvalidKey):
        await registry.register(*key, 1)
    assert registry.registrations() == []
