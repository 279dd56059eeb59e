"""VectorClock laws (hypothesis): a join semilattice, compare consistent with merge."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foundation.coordination import Ordering, VectorClock

nodes = st.sampled_from(["a", "b", "c", "d"])
clocks = st.dictionaries(nodes, st.integers(min_value=0, max_value=5)).map(VectorClock)


@given(clocks, clocks)
def test_merge_commutative(x: VectorClock, y: VectorClock) -> None:
    assert x.merge(y) == y.merge(x)


@given(clocks, clocks, clocks)
def test_merge_associative(x: VectorClock, y: VectorClock, z: VectorClock) -> None:
    assert x.merge(y).merge(z) == x.merge(y.merge(z))


@given(clocks)
def test_merge_idempotent(x: VectorClock) -> None:
    assert x.merge(x) == x
    assert x.compare(x) is Ordering.EQUAL


@given(clocks, clocks)
def test_merge_is_upper_bound(x: VectorClock, y: VectorClock) -> None:
    m = x.merge(y)
    assert x.compare(m) in (Ordering.BEFORE, Ordering.EQUAL)
    assert y.compare(m) in (Ordering.BEFORE, Ordering.EQUAL)


_FLIP = {
    Ordering.BEFORE: Ordering.AFTER,
    Ordering.AFTER: Ordering.BEFORE,
    Ordering.EQUAL: Ordering.EQUAL,
    Ordering.CONCURRENT: Ordering.CONCURRENT,
}


@given(clocks, clocks)
def test_compare_antisymmetric_and_consistent(x: VectorClock, y: VectorClock) -> None:
    order = x.compare(y)
    assert y.compare(x) is _FLIP[order]
    assert (order is Ordering.EQUAL) == (x == y)
    m = x.merge(y)
    if order is Ordering.BEFORE:
        assert m == y
    elif order is Ordering.AFTER:
        assert m == x
    elif order is Ordering.CONCURRENT:
        assert m != x
        assert m != y


@given(clocks, nodes)
def test_increment_happens_after(x: VectorClock, node: str) -> None:
    later = x.increment(node)
    assert x.compare(later) is Ordering.BEFORE
    assert later[node] == x[node] + 1


@given(clocks, clocks, clocks)
def test_before_is_transitive(x: VectorClock, y: VectorClock, z: VectorClock) -> None:
    if x.compare(y) is Ordering.BEFORE and y.compare(z) is Ordering.BEFORE:
        assert x.compare(z) is Ordering.BEFORE


@given(clocks)
def test_hash_dict_and_pickle_round_trip(x: VectorClock) -> None:
    assert VectorClock(dict(x)) == x
    assert VectorClock.from_dict(x.to_dict()) == x
    assert hash(VectorClock(dict(x))) == hash(x)
    assert pickle.loads(pickle.dumps(x)) == x


def test_examples() -> None:
    a = VectorClock().increment("a")
    b = a.increment("b")
    assert a.compare(b) is Ordering.BEFORE
    assert b.compare(a) is Ordering.AFTER
    assert a.increment("a").compare(b) is Ordering.CONCURRENT
    assert VectorClock({"a": 0}) == VectorClock()
    assert VectorClock().merge(b) == b
    assert dict(b) == {"a": 1, "b": 1}
    assert b["zzz"] == 0
    assert len({VectorClock({"a": 1}), VectorClock([("a", 1)])}) == 1
    with pytest.raises(ValueError, match="int >= 0"):
        VectorClock({"a": -1})
