"""Choosing a registry backend: ``make_backend`` builds a local one from its name.

It sits beside the :class:`~foundation.registry.Backend` protocol, below
both users: the facade (``Registry(backend)``, ``migrate``) and the etcd
backend (its local read table), so neither imports the other for it. The
twins are imported only when asked for, so the pure twin never loads the
extension.
"""

from __future__ import annotations

from collections.abc import Sequence

from .. import errors
from ..config import backend_from_env
from . import _compat
from ._backend import Backend

__all__ = ["make_backend"]


def make_backend(
    backend: str | Backend, *, partitions: int | None = None, indexes: Sequence[str] = ()
) -> Backend:
    """Build a local backend from its name, or check and return a Backend instance.

    Raises:
        ConfigError: unknown backend name, or bad ``partitions``/``indexes``.
        BackendUnavailable: ``"native"`` asked for but not compiled/enabled.
    """
    if not isinstance(backend, str):
        if not isinstance(backend, Backend):
            raise errors.ConfigError(
                f"backend={backend!r} is neither a backend name nor a Backend instance;"
                " use 'auto', 'native' or 'python'"
            )
        return backend
    name = backend.strip().lower()
    if name == "auto":
        name = backend_from_env("auto")
        if name == "etcd":
            raise errors.ConfigError(
                "FOUNDATION_BACKEND=etcd: an etcd registry is opened with"
                " `async with open_registry() as registry:`; Registry() builds local"
                " backends only (unset the variable, or use open_registry)"
            )
    if name == "auto":
        name = "native" if _compat.NATIVE else "python"
    if name == "native":
        if not _compat.NATIVE:
            why = (
                "FOUNDATION_NO_EXTENSIONS is set"
                if _compat.NO_EXTENSIONS
                else "the extension was not compiled (install with a C compiler)"
            )
            raise errors.BackendUnavailable(
                f"the native registry backend is not available: {why};"
                " use backend='python' or backend='auto'"
            )
        from ._native import NativeBackend

        return NativeBackend(partitions, indexes)
    if name == "python":
        from ._python import PythonBackend

        return PythonBackend(partitions, indexes)
    if name == "etcd":
        raise errors.ConfigError(
            "the etcd backend needs a connection: use"
            " 'async with open_registry(backend=\"etcd\", endpoints=[...])'"
        )
    raise errors.ConfigError(
        f"unknown registry backend {backend!r}; use 'auto', 'native' or 'python'"
    )
