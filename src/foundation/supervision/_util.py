"""Helpers of the supervision package: task names, limits, error unwrapping."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .._util import collapse_group, reraise_collapsed

__all__ = [
    "check_max_children",
    "collapse_group",
    "reraise_collapsed",
    "task_name",
    "unwrap_single",
]


def task_name(fn: Callable[..., Any]) -> str:
    """A readable name for a task function (unwrapping ``functools.partial``)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return name if isinstance(name, str) else repr(fn)


def check_max_children(max_children: object) -> int | None:
    """Validate a ``max_children`` argument: an int >= 1, or None for no limit."""
    if max_children is None:
        return None
    if isinstance(max_children, bool) or not isinstance(max_children, int):
        raise TypeError(
            "max_children must be an int >= 1 or None (no limit),"
            f" got {type(max_children).__name__} {max_children!r}"
        )
    if max_children < 1:
        raise ValueError(f"max_children must be >= 1 or None (no limit), got {max_children!r}")
    return max_children


def unwrap_single(exc: Exception) -> Exception:
    """The error inside one-member exception groups (recursively); else ``exc``.

    A child whose own nursery fails raises ``ExceptionGroup([err])``; what
    crashed it is ``err``, and that is what its ``last_error``, telemetry and
    logs should name. A group of several errors is kept as it is. The error
    keeps its own traceback (where it was raised, in the child's inner task).
    """
    while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
