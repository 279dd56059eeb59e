"""The etcd coordinator's calls raise NodeUnreachable when the cluster is out of reach.

The etcd client raises :class:`~foundation.errors.EtcdUnavailable` when no
member answered within a call's timeout. At the coordinator's boundary
(every public call, opening the coordinator included) that becomes
:class:`~foundation.errors.NodeUnreachable`, with the same fields and the
client's error as its ``__cause__``: still an ``EtcdUnavailable`` to code
that catches those, and a :class:`~foundation.errors.CoordinationError` to
code that catches coordination errors. Only the coordinator's own work is
translated: an error raised by the body of a user's ``async with`` block
passes as itself.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from ..errors import EtcdUnavailable, NodeUnreachable

__all__ = ["as_node_unreachable", "reaching", "unreachable_as_node"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


def as_node_unreachable(exc: Exception) -> Exception:
    """``exc`` as a coordinator call raises it: an ``EtcdUnavailable`` becomes NodeUnreachable."""
    if isinstance(exc, EtcdUnavailable) and not isinstance(exc, NodeUnreachable):
        error = NodeUnreachable(exc.message, exc.code, exc.endpoint)
        error.__cause__ = exc
        return error
    return exc


@contextmanager
def unreachable_as_node() -> Iterator[None]:
    """Raise :class:`NodeUnreachable` (from it) for an ``EtcdUnavailable`` raised inside."""
    try:
        yield
    except NodeUnreachable:
        raise
    except EtcdUnavailable as exc:
        raise NodeUnreachable(exc.message, exc.code, exc.endpoint) from exc


def reaching(fn: Callable[_P, Awaitable[_T]]) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """Decorate a coordinator call so that it raises :class:`NodeUnreachable` (see above)."""

    @functools.wraps(fn)
    async def call(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        with unreachable_as_node():
            return await fn(*args, **kwargs)

    return call
