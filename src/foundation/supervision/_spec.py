"""Child specifications, strategies, backoff and the frozen records supervisors report."""

from __future__ import annotations

import enum
import functools
import importlib
import inspect
import math
import numbers
import random
import re
import types
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Backoff",
    "ChildCounts",
    "ChildInfo",
    "ChildSpec",
    "ChildState",
    "Restart",
    "Strategy",
    "resolve_target",
    "target_name",
]


class Restart(enum.Enum):
    """When a child is restarted after it exits (OTP restart types)."""

    #: Always: after an error and after a normal return.
    PERMANENT = "permanent"
    #: Only after an error; a normal return stops it for good.
    TRANSIENT = "transient"
    #: Never; the child is dropped from the supervisor when it exits.
    TEMPORARY = "temporary"


class Strategy(enum.Enum):
    """Which children are restarted when one of them must be (OTP strategies)."""

    #: Only the child that exited.
    ONE_FOR_ONE = "one_for_one"
    #: All children: the others are stopped (reverse start order), then all restarted.
    ONE_FOR_ALL = "one_for_all"
    #: The child and every child started after it.
    REST_FOR_ONE = "rest_for_one"


class ChildState(enum.Enum):
    """Where a child is in its life, as :class:`ChildInfo` reports it."""

    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    #: Returned normally and was not restarted (transient), or terminated.
    STOPPED = "stopped"
    #: Raised and was not restarted (its ``last_error`` says why).
    CRASHED = "crashed"


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to run one supervised child.

    ``target`` is an async function called as ``await target(*args)``; when it
    takes a ``task_status`` parameter it is started with ``nursery.start`` and
    counts as started once it calls ``task_status.started(value)``. It may
    also be named by a string ``"package.module:qualname"``, imported each
    time the child starts (a failed import is a crash of the child): that is
    how a spec travels between processes (see :mod:`foundation.cluster`).
    """

    #: Unique among the supervisor's children; the registry owner of ``register_as``.
    id: Hashable
    #: ``async def target(*args, task_status=trio.TASK_STATUS_IGNORED)``, or
    #: its name ``"package.module:qualname"``.
    target: Callable[..., Awaitable[Any]] | str
    #: Positional arguments for ``target``.
    args: tuple[Any, ...] = ()
    #: When to restart it.
    restart: Restart = Restart.PERMANENT
    #: Seconds (a number >= 0, or ``math.inf``) to wait after cancelling it
    #: before reporting ShutdownTimeout.
    shutdown: float = 5.0
    #: ``(namespace, name)`` to register the child's started value under.
    register_as: tuple[Hashable, Hashable] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.target, str):
            if _TARGET_NAME.fullmatch(self.target) is None:
                raise TypeError(
                    f"ChildSpec.target {self.target!r} is not a 'package.module:qualname'"
                    " name; pass the function, or name it like 'myapp.workers:run'"
                )
        elif not callable(self.target):
            raise TypeError(
                "ChildSpec.target must be an async callable or a 'package.module:qualname'"
                f" string, got {self.target!r}"
            )
        if not isinstance(self.args, tuple):
            raise TypeError(f"ChildSpec.args must be a tuple, got {type(self.args).__name__}")
        if not isinstance(self.restart, Restart):
            raise TypeError(f"ChildSpec.restart must be a Restart, got {self.restart!r}")
        _check_shutdown(self.shutdown)
        if self.register_as is not None and (
            not isinstance(self.register_as, tuple) or len(self.register_as) != 2
        ):
            raise TypeError(
                f"ChildSpec.register_as must be a (namespace, name) tuple, got {self.register_as!r}"
            )

    @property
    def takes_task_status(self) -> bool:
        """Whether ``target`` accepts ``task_status`` (then it starts with ``nursery.start``).

        A target given by name is imported to answer.
        """
        return takes_task_status(resolve_target(self.target))


#: ``package.module:qualname``: dotted identifiers on both sides of one colon.
_TARGET_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def resolve_target(target: Callable[..., Any] | str) -> Callable[..., Any]:
    """The function ``target`` names (``"package.module:qualname"``), or ``target`` itself.

    Raises:
        ImportError: the module does not import, or has no such attribute
            (the original error is the ``__cause__``).
        TypeError: the name is not of that form, or names something not callable.
    """
    if not isinstance(target, str):
        return target
    if _TARGET_NAME.fullmatch(target) is None:
        raise TypeError(f"{target!r} is not a 'package.module:qualname' target name")
    module_name, _, qualname = target.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except AttributeError as exc:
        raise ImportError(
            f"target {target!r}: module {module_name!r} has no {qualname!r} ({exc})",
            name=module_name,
        ) from exc
    if not callable(found):
        raise TypeError(f"target {target!r} names {type(found).__name__} {found!r}, not a function")
    return found  # type: ignore[no-any-return]


def target_name(fn: Callable[..., Any]) -> str | None:
    """``"package.module:qualname"`` if that name imports back to ``fn`` itself, else None.

    None for what no other process could find by name: lambdas, closures
    and nested functions (``<locals>`` in the qualname), bound methods,
    ``functools.partial`` objects and other callables without a qualname.
    """
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    name = f"{module}:{qualname}"
    if _TARGET_NAME.fullmatch(name) is None:  # <lambda>, <locals>...
        return None
    try:
        found = resolve_target(name)
    except (ImportError, TypeError):
        return None
    return name if found is fn else None


def _check_shutdown(shutdown: object) -> None:
    """Reject a ``shutdown`` that is not a number >= 0 (``math.inf`` allowed).

    NaN must fail here: every comparison with it is false, so it passed a
    ``< 0`` check and then failed inside Trio when the supervisor computed
    a deadline from it, long after the spec was written.
    """
    if isinstance(shutdown, bool) or not isinstance(shutdown, numbers.Real):
        raise TypeError(
            "ChildSpec.shutdown must be a number of seconds (or math.inf),"
            f" got {type(shutdown).__name__} {shutdown!r}"
        )
    if math.isnan(shutdown) or shutdown < 0:
        raise ValueError(f"ChildSpec.shutdown must be >= 0 seconds (or math.inf), got {shutdown!r}")


def takes_task_status(fn: Callable[..., Any]) -> bool:
    """True if ``fn`` has an explicit ``task_status`` parameter.

    Plain functions and bound methods are answered from a cache:
    ``inspect.signature`` costs ~25 us, a quarter of a whole dynamic child
    start on the 2-core bench machine (profile of ``test_bench_dynamic``).
    """
    func = getattr(fn, "__func__", fn)  # a bound method has its function's parameters
    if isinstance(func, types.FunctionType):
        return _function_takes_task_status(func)
    return _signature_takes_task_status(fn)


@functools.lru_cache(maxsize=4096)
def _function_takes_task_status(func: types.FunctionType) -> bool:
    return _signature_takes_task_status(func)


def _signature_takes_task_status(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "task_status" in params


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential delay before a restart, with jitter, capped at ``maximum``.

    The n-th restart of a child within the supervisor's ``max_seconds``
    window waits ``min(maximum, initial * factor ** (n - 1))``, scaled by a
    random factor in ``[1 - jitter, 1 + jitter]`` (never above ``maximum``).
    """

    initial: float = 0.1
    maximum: float = 5.0
    factor: float = 2.0
    jitter: float = 0.1
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < 0:
            raise ValueError("Backoff delays must be >= 0")
        if self.factor < 1:
            raise ValueError(f"Backoff.factor must be >= 1, got {self.factor!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"Backoff.jitter must be in [0, 1], got {self.jitter!r}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before restart number ``attempt`` (1-based)."""
        base = min(self.maximum, self.initial * self.factor ** max(0, attempt - 1))
        if self.jitter:
            base *= 1 + self.rng.uniform(-self.jitter, self.jitter)
        return max(0.0, min(self.maximum, base))


@dataclass(frozen=True, slots=True)
class ChildInfo:
    """One child, as :meth:`Supervisor.which_children` reports it."""

    id: Hashable
    state: ChildState
    #: How many times it was restarted.
    restarts: int
    #: The error of its last crash (or a ShutdownTimeout), else None.
    last_error: BaseException | None


@dataclass(frozen=True, slots=True)
class ChildCounts:
    """Counts as OTP's ``count_children``: specs, active, supervisors, workers."""

    #: Children known (running or not).
    specs: int
    #: Children running now.
    active: int
    #: Children that are supervisors.
    supervisors: int
    #: Children that are not.
    workers: int
