"""Compiled ``select`` queries, shared by every backend.

``registry.select(ns, where=..., predicate=...)`` builds one :class:`Query`,
which validates the criteria once (so a typo fails loudly with
:class:`~foundation.errors.InvalidQuery` even on an empty registry) and then
tests each registration with :meth:`Query.matches`.

Criteria (``where``) map a metadata field to a condition:

* a plain value means equality: ``{"role": "db"}``;
* a 2-tuple ``(op, operand)`` applies an operator, with ``op`` one of
  ``eq``, ``neq``, ``lt``, ``lte``, ``gt``, ``gte``, ``in``, ``not_in``:
  ``{"load": ("lt", 10), "zone": ("in", ["a", "b"])}``. Every tuple is read as
  an operator form, so to match a tuple literally write
  ``{"pair": ("eq", (1, 2))}``;
* a dotted field ``"a.b"`` reaches into nested mappings
  (``metadata["a"]["b"]``). A dotted field always splits on ``.``: a top-level
  key that itself contains a dot cannot be queried by ``where`` (use a
  ``predicate``).

A missing field, or a comparison that raises (``("lt", 10)`` against a str),
never matches: it is not an error, since metadata is free-form and one odd
entry must not break a query over thousands. ``neq`` and ``not_in`` also need
the field to be present.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from ..errors import InvalidQuery
from ._types import Registration

__all__ = ["OPERATORS", "Query"]

_Compare = Callable[[Any, Any], Any]


def _in(actual: Any, operand: Any) -> bool:
    return actual in operand


def _not_in(actual: Any, operand: Any) -> bool:
    return actual not in operand


#: The operators ``where`` accepts, name -> ``f(actual, operand)``.
OPERATORS: Mapping[str, _Compare] = {
    "eq": operator.eq,
    "neq": operator.ne,
    "lt": operator.lt,
    "lte": operator.le,
    "gt": operator.gt,
    "gte": operator.ge,
    "in": _in,
    "not_in": _not_in,
}

_COLLECTIONS = (list, tuple, set, frozenset)
_MISSING: Any = object()


class _Criterion:
    """One compiled ``field: condition`` pair."""

    __slots__ = ("compare", "field", "op", "operand", "path")

    def __init__(self, field: str, op: str, operand: Any) -> None:
        self.field = field
        self.path = tuple(field.split("."))
        self.op = op
        self.operand = operand
        self.compare = OPERATORS[op]

    def holds(self, metadata: Mapping[Any, Any]) -> bool:
        value: Any = metadata
        for part in self.path:
            if not isinstance(value, Mapping):
                return False
            try:
                value = value.get(part, _MISSING)
            except Exception:
                return False
            if value is _MISSING:
                return False
        try:
            return bool(self.compare(value, self.operand))
        except Exception:
            # Not comparable (TypeError for "lt" between str and int, or a
            # custom __eq__/__lt__ that raises): no match, never an error.
            return False


def _equalities_matcher(pairs: Sequence[tuple[str, Any]]) -> Callable[[Any], bool]:
    """A metadata test for criteria that are all top-level equalities.

    The common query (``where={"role": "db"}``) runs once per entry of a
    scan, so it skips what the general criterion pays for: the ``Mapping``
    ABC check (stored metadata is a ``MappingProxyType``; anything else takes
    the slow check) and one call per criterion. Same answers as
    :meth:`_Criterion.holds`.
    """

    def matches(metadata: Any) -> bool:
        if type(metadata) is not MappingProxyType and not isinstance(metadata, Mapping):
            return False
        for field, operand in pairs:
            try:
                value = metadata.get(field, _MISSING)
                # __eq__ as "eq" means, not __ne__ (a type may define them apart)
                if value is _MISSING or not (value == operand):  # noqa: SIM201
                    return False
            except Exception:
                # as _Criterion.holds: an odd entry never matches, never raises
                return False
        return True

    return matches


def _criteria_matcher(criteria: Sequence[_Criterion]) -> Callable[[Any], bool]:
    """A metadata test for any criteria: each one's :meth:`_Criterion.holds`."""

    def matches(metadata: Any) -> bool:
        return all(crit.holds(metadata) for crit in criteria)

    return matches


def _always(metadata: Any) -> bool:
    return True


def _compile(field: Any, condition: Any) -> _Criterion:
    if not isinstance(field, str):
        raise InvalidQuery(
            {field: condition},
            f"field names must be str, not {type(field).__name__}; use 'a.b' to reach"
            " into nested metadata",
        )
    if not field or "" in field.split("."):
        raise InvalidQuery(
            {field: condition}, "field names must be non-empty (and so must each dotted part)"
        )
    if not isinstance(condition, tuple):
        return _Criterion(field, "eq", condition)
    if len(condition) != 2:
        raise InvalidQuery(
            {field: condition},
            "a tuple condition must be (op, operand); to match a tuple literally write"
            " ('eq', (...))",
        )
    op, operand = condition
    if not isinstance(op, str) or op not in OPERATORS:
        raise InvalidQuery(
            {field: condition},
            f"unknown operator {op!r}; use one of {', '.join(OPERATORS)}; to match a tuple"
            " literally write ('eq', (...))",
        )
    if op in ("in", "not_in"):
        if not isinstance(operand, _COLLECTIONS):
            raise InvalidQuery(
                {field: condition},
                f"{op!r} needs a list, tuple, set or frozenset operand, not"
                f" {type(operand).__name__}",
            )
        # Freeze the operand so a caller mutating its list cannot change a
        # query that is already compiled (and shared with an index).
        operand = frozenset(operand) if isinstance(operand, (set, frozenset)) else tuple(operand)
    return _Criterion(field, op, operand)


class Query:
    """A validated ``select`` query: metadata criteria and/or a predicate.

    Args:
        where: ``{field: condition}``; see the module docstring for the forms.
        predicate: ``predicate(registration) -> bool``; its exceptions
            propagate to the caller of ``select`` as themselves.

    Raises:
        InvalidQuery: ``where`` is not a mapping, a field is not a non-empty
            str, an operator is unknown, a tuple condition is not a pair, an
            ``in``/``not_in`` operand is not a collection, or ``predicate`` is
            not callable.

    Example::

        q = Query({"role": "db", "load": ("lt", 10), "net.zone": ("in", ["a", "b"])})
        q.matches(registration)
    """

    __slots__ = ("_criteria", "eq_pairs", "equalities", "metadata_matches", "predicate", "where")

    #: The criteria as given (``None`` when there are none).
    where: Mapping[str, Any] | None
    #: The user's predicate, or ``None``.
    predicate: Callable[[Registration], Any] | None
    #: Top-level (non-dotted) fields tested for equality with a hashable
    #: operand: what a metadata index can serve in O(matches).
    equalities: dict[str, Any]
    #: When every criterion is a top-level equality: the ``(field, operand)``
    #: pairs, in the order given (a backend may test them without calling
    #: :attr:`metadata_matches`, with the same answers); else ``None``.
    eq_pairs: tuple[tuple[str, Any], ...] | None
    #: ``metadata_matches(metadata) -> bool``: the ``where`` criteria alone,
    #: never raising; a backend can test stored metadata with it before it
    #: builds a :class:`Registration` for the entry.
    metadata_matches: Callable[[Any], bool]

    def __init__(
        self,
        where: Mapping[str, Any] | None = None,
        predicate: Callable[[Registration], Any] | None = None,
    ) -> None:
        if where is not None and not isinstance(where, Mapping):
            raise InvalidQuery(
                where, f"where must be a mapping of field -> condition, not {type(where).__name__}"
            )
        if predicate is not None and not callable(predicate):
            raise InvalidQuery(
                predicate, f"predicate must be callable, not {type(predicate).__name__}"
            )
        criteria = tuple(_compile(f, c) for f, c in (where or {}).items())
        self.where = where
        self.predicate = predicate
        self._criteria = criteria
        equalities: dict[str, Any] = {}
        for crit in criteria:
            if crit.op != "eq" or len(crit.path) != 1:
                continue
            try:
                hash(crit.operand)
            except Exception:
                continue
            equalities[crit.field] = crit.operand
        self.equalities = equalities
        self.eq_pairs = None
        if not criteria:
            self.metadata_matches = _always
            self.eq_pairs = ()
        elif all(c.op == "eq" and len(c.path) == 1 for c in criteria):
            pairs = tuple((c.field, c.operand) for c in criteria)
            self.metadata_matches = _equalities_matcher(pairs)
            self.eq_pairs = pairs
        else:
            self.metadata_matches = _criteria_matcher(criteria)

    def __repr__(self) -> str:
        return f"Query(where={self.where!r}, predicate={self.predicate!r})"

    def matches(self, reg: Registration) -> bool:
        """True if every criterion holds on ``reg.metadata`` and the predicate agrees.

        Raises:
            Exception: whatever the user's predicate raises, unchanged.
        """
        if not self.metadata_matches(reg.metadata):
            return False
        predicate = self.predicate
        return predicate is None or bool(predicate(reg))
