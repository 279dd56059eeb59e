"""Helpers of the supervision package: exception-group collapsing, task names."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NoReturn

import trio

__all__ = ["collapse_group", "reraise_collapsed", "task_name"]


def _leaves(exc: BaseException, out: list[BaseException]) -> None:
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            _leaves(sub, out)
    else:
        out.append(exc)


def collapse_group(group: BaseExceptionGroup[Any]) -> BaseException | None:
    """The one non-``Cancelled`` error in ``group``, or None if not exactly one.

    The same exception object met twice counts once: an escalation raised
    both to the caller of ``start_child`` and out of the supervisor's own task
    is one error, not two.
    """
    leaves: list[BaseException] = []
    _leaves(group, leaves)
    seen: dict[int, BaseException] = {}
    for leaf in leaves:
        if not isinstance(leaf, trio.Cancelled):
            seen.setdefault(id(leaf), leaf)
    if len(seen) == 1:
        return next(iter(seen.values()))
    return None


def reraise_collapsed(group: BaseExceptionGroup[Any]) -> NoReturn:
    """Raise the group's single non-Cancelled error as itself, else the group.

    Scoped APIs promise "exactly one error ends the block -> raised as
    itself; several -> ExceptionGroup" (DESIGN section 3), as trio-websocket's
    ``open_websocket`` does. The error keeps its own ``__cause__`` and
    ``__context__`` (the group does not become its context).
    """
    exc = collapse_group(group)
    if exc is None:
        raise group
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc


def task_name(fn: Callable[..., Any]) -> str:
    """A readable name for a task function (unwrapping ``functools.partial``)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return name if isinstance(name, str) else repr(fn)
