"""Query's fast equality matcher answers exactly like the general criteria."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from foundation.registry._query import Query, _compile, _criteria_matcher


class RaisingEq:
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no comparing me")

    __hash__ = object.__hash__


FIELDS = st.sampled_from(["role", "zone", "tier"])
VALUES = st.one_of(
    st.integers(-2, 2), st.sampled_from(["a", "b", 1.0, True, None]), st.just(RaisingEq())
)
METADATA = st.one_of(
    st.dictionaries(FIELDS, VALUES, max_size=3).map(MappingProxyType),
    st.dictionaries(FIELDS, VALUES, max_size=3),
    st.just([("role", "a")]),  # not a mapping: never matches
)


@given(where=st.dictionaries(FIELDS, VALUES, min_size=1, max_size=3), metadata=METADATA)
def test_equalities_matcher_agrees_with_the_criteria(where: dict[str, Any], metadata: Any) -> None:
    query = Query(where)
    general = _criteria_matcher([_compile(f, c) for f, c in where.items()])
    assert query.metadata_matches(metadata) == general(metadata)


def test_the_fast_matcher_is_the_one_chosen_for_plain_equalities() -> None:
    assert Query({"role": "db"}).metadata_matches.__qualname__.startswith("_equalities_matcher")
    assert Query({"load": ("lt", 3)}).metadata_matches.__qualname__.startswith("_criteria_matcher")
    assert Query({"net.zone": "a"}).metadata_matches.__qualname__.startswith("_criteria_matcher")
    assert Query().metadata_matches(MappingProxyType({})) is True
