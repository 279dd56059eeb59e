"""Keys that are str: the native table compares exact str in C.

A lookup, get or write with a name equal to the stored one but another
object (a name read from a message), or one whose hash was never computed,
answers as with the stored object itself; a stored key that is a str
subclass keeps its own ``__eq__``. Checked against the python twin.
"""

from __future__ import annotations

from typing import Any

import pytest

from foundation import errors
from foundation.registry import Registry

try:
    from foundation.registry import _native  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the build
    pytest.skip(
        f"the native registry is not built ({exc}); run 'python setup.py build_ext --inplace'",
        allow_module_level=True,
    )

pytestmark = pytest.mark.native

BACKENDS = ["native", "python"]


def _fresh(s: str) -> str:
    """An equal str, another object, its hash not computed yet."""
    out = "".join([s[:1], s[1:]])
    assert out == s
    assert out is not s
    return out


class Fussy(str):
    """A str whose equality is its own: equal only to Fussy, and counted."""

    calls = 0

    __hash__ = str.__hash__

    def __eq__(self, other: object) -> bool:
        Fussy.calls += 1
        return type(other) is Fussy and str.__eq__(self, other)


@pytest.mark.parametrize("backend", BACKENDS)
def test_equal_names_that_are_other_objects(backend: str) -> None:
    registry = Registry(backend=backend, partitions=3)
    names = [f"svc-{i:05d}" for i in range(500)]
    for i, name in enumerate(names):
        registry.register_nowait("ns", name, i)
    for i, name in enumerate(names):
        assert registry.lookup(_fresh("ns"), _fresh(name)) == i
        assert registry.get("ns", _fresh(name)) == i
        assert registry.lookup_with_metadata("ns", _fresh(name)).value == i
    # equal length, other text; another namespace: misses
    assert registry.get("ns", _fresh("svc-99999"), "no") == "no"
    assert registry.get(_fresh("nz"), _fresh(names[0]), "no") == "no"
    with pytest.raises(errors.NotRegistered):
        registry.lookup("ns", "svc-0000")
    # the writes find them too
    for name in names[::2]:
        assert registry.unregister_nowait("ns", _fresh(name))
    assert registry.names("ns") == names[1::2]
    registry.update_metadata_nowait(_fresh("ns"), _fresh(names[1]), {"k": 1})
    assert registry.lookup_with_metadata("ns", names[1]).metadata == {"k": 1}
    with pytest.raises(errors.AlreadyRegistered):
        registry.register_nowait("ns", _fresh(names[1]), "another value")


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_ascii_names(backend: str) -> None:
    registry = Registry(backend=backend, partitions=2)
    names = ["café", "日本", "naïve-\U0001d518", "ascii"]
    for i, name in enumerate(names):
        registry.register_nowait("ns", name, i)
    for i, name in enumerate(names):
        assert registry.lookup("ns", _fresh(name)) == i
    # the same code points in another width, or a prefix: not equal
    assert registry.get("ns", _fresh("caf"), None) is None
    assert registry.get("ns", "日本x", None) is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_str_subclass_keeps_its_equality(backend: str) -> None:
    registry = Registry(backend=backend, partitions=1)
    stored = Fussy("svc")
    registry.register_nowait("ns", stored, 1)
    Fussy.calls = 0
    # an exact str equal in text: the stored key's __eq__ decides (False)
    assert registry.get("ns", _fresh("svc"), "no") == "no"
    assert Fussy.calls >= 1
    assert registry.lookup("ns", Fussy("svc")) == 1
    assert registry.lookup("ns", stored) == 1
    # and the other way round: a Fussy probe of an exact str key
    registry.register_nowait("ns", "plain", 2)
    got: Any = registry.get("ns", Fussy("plain"), "no")
    assert got == "no"
    assert registry.lookup("ns", _fresh("plain")) == 2
