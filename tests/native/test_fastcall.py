"""The METH_FASTCALL fronts of NativeBackend.lookup/get agree with the defs behind them.

The fronts answer exact-``str`` keys from the table and hand everything else
to the general def; these cases sit on the border between the two paths.
"""

from __future__ import annotations

import inspect

import pytest

from foundation.errors import InvalidKey, NotRegistered
from foundation.registry import NATIVE, Registry

pytestmark = [
    pytest.mark.native,
    pytest.mark.skipif(not NATIVE, reason="the native extension is not compiled"),
]


class StrLike:
    """Equal to (and hashed like) one str, but not a str: takes the general path."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __hash__(self) -> int:
        return hash(self.text)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StrLike):
            return self.text == other.text
        return other == self.text


class SubStr(str):
    pass


@pytest.fixture
def registry() -> Registry:
    return Registry(backend="native")


def test_equal_but_not_identical_str_is_found(registry: Registry) -> None:
    registry.register_nowait("svc", "worker-1", "v")
    probe = "".join(["worker", "-", "1"])  # a distinct object, equal
    assert probe is not "worker-1"  # noqa: F632 -- identity is the point
    assert registry.lookup("svc", probe) == "v"
    assert registry.get("svc", probe) == "v"


def test_str_probe_finds_a_non_str_key_stored_under_an_equal_hash(registry: Registry) -> None:
    registry.register_nowait("svc", StrLike("worker"), "v")
    assert registry.lookup("svc", "worker") == "v"
    assert registry.get("svc", "worker", "d") == "v"
    assert registry.lookup("svc", SubStr("worker")) == "v"


def test_misses_answer_like_the_def(registry: Registry) -> None:
    registry.register_nowait("svc", "a", 1)
    with pytest.raises(NotRegistered):
        registry.lookup("svc", "b")
    assert registry.get("svc", "b") is None
    assert registry.get("svc", "b", 7) == 7
    assert registry.get("other", "a", default=8) == 8


def test_keywords_and_wrong_arity_go_to_the_def(registry: Registry) -> None:
    registry.register_nowait("svc", "a", 1)
    assert registry.lookup(ns="svc", name="a") == 1
    assert registry.lookup("svc", name="a") == 1
    assert registry.get("svc", "zz", default=3) == 3
    with pytest.raises(TypeError):
        registry.lookup("svc")
    with pytest.raises(TypeError):
        registry.lookup("svc", "a", "extra")
    with pytest.raises(TypeError):
        registry.get("svc", "a", None, "extra")
    with pytest.raises(TypeError):
        registry.lookup("svc", "a", bogus=1)


def test_unhashable_keys_still_raise_invalid_key(registry: Registry) -> None:
    with pytest.raises(InvalidKey):
        registry.lookup([], "a")
    with pytest.raises(InvalidKey):
        registry.get("svc", {})


def test_each_call_counts_once(registry: Registry) -> None:
    registry.register_nowait("svc", "a", 1)
    registry.lookup("svc", "a")
    registry.get("svc", "a")
    with pytest.raises(NotRegistered):
        registry.lookup("svc", "missing")
    registry.get("svc", "missing")
    registry.get("svc", StrLike("missing"))
    stats = registry.stats()
    assert (stats.hits, stats.misses) == (2, 3)


def test_signatures_and_docs_survive(registry: Registry) -> None:
    assert str(inspect.signature(registry.lookup)) == "(ns, name)"
    assert str(inspect.signature(registry.get)) == "(ns, name, default=None)"
    assert registry.lookup.__doc__ is not None
    assert "NotRegistered" in registry.lookup.__doc__


def test_closed_registry_reads_like_the_python_twin(registry: Registry) -> None:
    twin = Registry(backend="python")
    for r in (registry, twin):
        r.register_nowait("svc", "a", 1)
        r.close()
    outcomes = []
    for r in (registry, twin):
        try:
            outcomes.append(("value", r.get("svc", "a")))
        except Exception as exc:  # compared below, not swallowed
            outcomes.append(("error", type(exc).__name__))
    assert outcomes[0] == outcomes[1]
