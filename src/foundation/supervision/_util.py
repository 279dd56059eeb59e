"""Helpers of the supervision package: task names (and the shared group collapsing)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .._util import collapse_group, reraise_collapsed

__all__ = ["collapse_group", "reraise_collapsed", "task_name"]


def task_name(fn: Callable[..., Any]) -> str:
    """A readable name for a task function (unwrapping ``functools.partial``)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return name if isinstance(name, str) else repr(fn)
