"""Small internal helpers shared across subpackages."""

from __future__ import annotations

import re
from typing import Any, NoReturn

import trio

__all__ = ["collapse_group", "describe_owner", "fixup_module_metadata", "reraise_collapsed"]


def fixup_module_metadata(module_name: str, namespace: dict[str, Any]) -> None:
    """Point ``__module__`` of the public names in ``namespace`` at ``module_name``.

    Implementations live in underscore modules; rewriting ``__module__`` once
    in each public ``__init__`` makes tracebacks, pickles and docs show the
    public path (``foundation.registry.Registry``), as trio does.
    """
    for objname in namespace.get("__all__", ()):
        obj = namespace[objname]
        mod = getattr(obj, "__module__", None)
        if not isinstance(mod, str) or not mod.startswith("foundation."):
            continue
        if "._" not in mod:  # already public (e.g. foundation.errors)
            continue
        try:
            obj.__module__ = module_name
        except (AttributeError, TypeError):
            # Extension types have a read-only __module__; leave them as built.
            continue


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
    itself; several -> ExceptionGroup", as trio-websocket's
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


_SCOPE_REPR = re.compile(r"<ScopeOwner #(\d+)>")


def describe_owner(owner: Any, *, quote: bool = True) -> str:
    """Who owns a registration, in words a person reads.

    ``None`` is "unowned"; the registry's own tokens are spelled out (a local
    ``registered()`` block's, whose repr is ``<ScopeOwner #7>``, also as it
    reads back from a JSON snapshot; an etcd registry's
    ``("foundation.scope", <registry id>, n)``; a supervisor's
    ``("foundation.supervisor", <token>, <child id>)``, also as a JSON list);
    any other owner is its ``repr`` (``quote=False``: strings as they are).
    """
    if owner is None:
        return "unowned"
    if isinstance(owner, tuple | list) and len(owner) == 3:
        kind, who, what = owner
        if kind == "foundation.scope":
            return f"the registered() block #{what} of registry {who}"
        if kind == "foundation.supervisor":
            return f"supervised child {what!r} (supervisor #{who})"
    m = _SCOPE_REPR.fullmatch(owner if isinstance(owner, str) else repr(owner))
    if m is not None:
        return f"a registered() block (#{m.group(1)})"
    if not quote and isinstance(owner, str):
        return owner
    return repr(owner)
