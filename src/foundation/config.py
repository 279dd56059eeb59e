"""Configuration read from ``FOUNDATION_*`` environment variables.

Each variable is read when asked for, so tests can set it per test, and a
bad value is a :class:`~foundation.errors.ConfigError` that names the
variable and the values it takes.

.. envvar:: FOUNDATION_BACKEND

   What ``backend="auto"`` means: ``auto`` (native if built, else python),
   ``native``, ``python``, or ``etcd``. ``etcd`` applies to
   ``open_registry()`` only (a server registry is opened with ``async with``);
   a plain ``Registry()`` then says so with a :class:`~foundation.errors.ConfigError`.

.. envvar:: FOUNDATION_ETCD_ENDPOINTS

   Comma-separated etcd endpoints (``http://10.0.0.1:2379,http://10.0.0.2:2379``;
   ``host:port`` and ``https://host:port`` work too)
   used by ``open_registry(backend="etcd")``, ``open_etcd_coordinator()`` and
   the command line when no endpoints are passed.

.. envvar:: FOUNDATION_NO_EXTENSIONS

   ``1`` skips the native extension at build and import time. Caution: the
   pure-Python twin behaves the same but is several times slower.

.. envvar:: FOUNDATION_REQUIRE_EXTENSIONS

   ``1`` makes a failed native compile (and a missing extension at import)
   an error instead of a silent fallback. CI sets it.
"""

from __future__ import annotations

import os

from ._endpoints import check_endpoints
from .errors import ConfigError

__all__ = ["BACKENDS", "LOCAL_BACKENDS", "backend_from_env", "etcd_endpoints_from_env"]

#: Backends a ``Registry()`` can be built on without a server.
LOCAL_BACKENDS = ("auto", "native", "python")
#: Every value :envvar:`FOUNDATION_BACKEND` takes.
BACKENDS = (*LOCAL_BACKENDS, "etcd")


def backend_from_env(default: str = "auto") -> str:
    """Return :envvar:`FOUNDATION_BACKEND` (lower-cased), or ``default`` when unset.

    Raises:
        ConfigError: the variable holds something other than a backend name.
    """
    raw = os.environ.get("FOUNDATION_BACKEND", "")
    value = raw.strip().lower()
    if not value:
        return default
    if value not in BACKENDS:
        raise ConfigError(
            f"FOUNDATION_BACKEND={raw!r} is not a backend; use one of {', '.join(BACKENDS)}"
        )
    return value


def etcd_endpoints_from_env() -> list[str] | None:
    """Return :envvar:`FOUNDATION_ETCD_ENDPOINTS` as a list of URLs, or None when unset.

    Raises:
        ConfigError: an entry is not an ``http(s)://host:port`` URL.
    """
    raw = os.environ.get("FOUNDATION_ETCD_ENDPOINTS", "")
    if not raw.strip():
        return None
    # the etcd client's own check, so both accept exactly the same URLs
    try:
        return check_endpoints(raw)
    except ConfigError as exc:
        raise ConfigError(
            f"FOUNDATION_ETCD_ENDPOINTS={raw!r}: {exc}; use comma-separated URLs like"
            " 'http://127.0.0.1:2379,http://127.0.0.1:22379'"
        ) from None
