"""Small internal helpers shared across subpackages."""

from __future__ import annotations

from typing import Any

__all__ = ["fixup_module_metadata"]


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
