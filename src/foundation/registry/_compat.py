"""Which registry twin this process uses, decided once at import.

``NATIVE`` is true when the compiled table (``foundation.registry._native``)
imports, the interpreter is CPython and ``FOUNDATION_NO_EXTENSIONS`` is unset.
``FOUNDATION_REQUIRE_EXTENSIONS=1`` turns a missing extension into an import
error instead of a silent fallback (CI sets it).
"""

from __future__ import annotations

import os
import sys

from ..errors import ConfigError

__all__ = ["NATIVE", "NO_EXTENSIONS", "REQUIRE_EXTENSIONS", "env_flag"]


def env_flag(name: str) -> bool:
    """Read a boolean ``FOUNDATION_*`` variable: unset/``0``/``1``; else ConfigError."""
    raw = os.environ.get(name, "")
    value = raw.strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}={raw!r} is not a boolean; set it to 1 or 0, or unset it")


NO_EXTENSIONS: bool = env_flag("FOUNDATION_NO_EXTENSIONS")
REQUIRE_EXTENSIONS: bool = env_flag("FOUNDATION_REQUIRE_EXTENSIONS")
CPYTHON: bool = sys.implementation.name == "cpython"

if NO_EXTENSIONS and REQUIRE_EXTENSIONS:
    raise ConfigError(
        "FOUNDATION_NO_EXTENSIONS and FOUNDATION_REQUIRE_EXTENSIONS are both set; unset one"
    )

NATIVE: bool = False
if not NO_EXTENSIONS and CPYTHON:
    try:
        from . import _native  # noqa: F401
    except ImportError:
        if REQUIRE_EXTENSIONS:
            raise
    else:
        NATIVE = True
elif REQUIRE_EXTENSIONS:
    raise ImportError(
        "FOUNDATION_REQUIRE_EXTENSIONS=1 but the native registry cannot run on"
        f" {sys.implementation.name}"
    )
