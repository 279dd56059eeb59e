"""Configuration read from ``FOUNDATION_*`` environment variables.

Each variable is read when asked for, so tests can set it per test, and a
bad value is a :class:`~foundation.errors.ConfigError` that names the
variable and the values it takes.

.. envvar:: FOUNDATION_BACKEND

   Backend of ``Registry(backend="auto")``: ``auto`` (native if built, else
   python), ``native`` or ``python``.

.. envvar:: FOUNDATION_NO_EXTENSIONS

   ``1`` skips the native extension at build and import time. Caution: the
   pure-Python twin behaves the same but is several times slower.

.. envvar:: FOUNDATION_REQUIRE_EXTENSIONS

   ``1`` makes a failed native compile (and a missing extension at import)
   an error instead of a silent fallback. CI sets it.
"""

from __future__ import annotations

import os

from .errors import ConfigError

__all__ = ["LOCAL_BACKENDS", "backend_from_env"]

#: Backends a ``Registry()`` can be built on without a server.
LOCAL_BACKENDS = ("auto", "native", "python")


def backend_from_env(default: str = "auto") -> str:
    """Return :envvar:`FOUNDATION_BACKEND` (lower-cased), or ``default`` when unset.

    Raises:
        ConfigError: the variable holds something other than a local backend.
    """
    raw = os.environ.get("FOUNDATION_BACKEND", "")
    value = raw.strip().lower()
    if not value:
        return default
    if value not in LOCAL_BACKENDS:
        raise ConfigError(
            f"FOUNDATION_BACKEND={raw!r} is not a backend; use one of {', '.join(LOCAL_BACKENDS)}"
        )
    return value
