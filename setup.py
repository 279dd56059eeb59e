"""Build script: compiles the native registry table when it can.

* ``FOUNDATION_NO_EXTENSIONS=1``: skip the compile, install pure Python.
* ``FOUNDATION_REQUIRE_EXTENSIONS=1`` (set in CI) or ``CIBUILDWHEEL=1``: a failed
  compile is fatal instead of falling back to pure Python.
* ``FOUNDATION_DEBUG_BUILD=1``: ``-O0 -g3 -UNDEBUG`` (for gdb and sanitizers).

Anywhere else a failed compile prints a banner and installs the pure-Python
twin, which behaves the same (only slower).
"""

from __future__ import annotations

import os
import sys
import traceback

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _flag(name: str) -> bool:
    value = os.environ.get(name, "")
    if value.lower() in ("", "0", "false", "no", "off"):
        return False
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    raise SystemExit(f"{name}={value!r}: use 1 or 0")


CPYTHON = sys.implementation.name == "cpython"
NO_EXTENSIONS = _flag("FOUNDATION_NO_EXTENSIONS") or not CPYTHON
REQUIRE_EXTENSIONS = _flag("FOUNDATION_REQUIRE_EXTENSIONS") or _flag("CIBUILDWHEEL")
DEBUG_BUILD = _flag("FOUNDATION_DEBUG_BUILD")

if NO_EXTENSIONS and REQUIRE_EXTENSIONS:
    raise SystemExit(
        "FOUNDATION_NO_EXTENSIONS and FOUNDATION_REQUIRE_EXTENSIONS are both set;"
        " unset one of them"
    )

BANNER = "*" * 75


class OptionalBuildExt(build_ext):
    """build_ext that falls back to pure Python unless extensions are required."""

    def run(self) -> None:
        try:
            super().run()
        except Exception:
            self._fallback()

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception:
            self._fallback()

    def _fallback(self) -> None:
        if REQUIRE_EXTENSIONS:
            raise
        traceback.print_exc()
        print(BANNER)
        print("WARNING: the native registry could not be compiled; installing the")
        print("pure-Python backend, which behaves the same but is slower.")
        print("Set FOUNDATION_REQUIRE_EXTENSIONS=1 to make this fatal.")
        print(BANNER)


def _extensions() -> list[Extension]:
    if NO_EXTENSIONS:
        return []
    from Cython.Build import cythonize

    args = ["-O0", "-g3", "-UNDEBUG"] if DEBUG_BUILD else ["-O3"]
    args += ["-Wall"]
    csrc = sorted(
        os.path.join("csrc", f) for f in os.listdir("csrc") if f.endswith(".c")
    )
    ext = Extension(
        "foundation.registry._native",
        sources=["src/foundation/registry/_native.pyx", *csrc],
        include_dirs=["csrc"],
        depends=sorted(os.path.join("csrc", f) for f in os.listdir("csrc")),
        extra_compile_args=args,
    )
    return cythonize(
        [ext],
        compiler_directives={
            "language_level": 3,
            "freethreading_compatible": True,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            # methods as plain C method descriptors (binding=False: calls skip
            # the cyfunction layer), their signatures kept in the docstrings
            # in the form inspect.signature() reads
            "binding": False,
            "embedsignature": True,
            "embedsignature.format": "clinic",
        },
        gdb_debug=DEBUG_BUILD,
        quiet=True,
    )


def _extensions_or_fallback() -> list[Extension]:
    try:
        return _extensions()
    except Exception:
        # Cython missing or the .pyx failing to translate: same policy as a
        # failed C compile.
        if REQUIRE_EXTENSIONS:
            raise
        traceback.print_exc()
        print(BANNER)
        print("WARNING: the native registry could not be generated; installing the")
        print("pure-Python backend. Set FOUNDATION_REQUIRE_EXTENSIONS=1 to make this fatal.")
        print(BANNER)
        return []


setup(ext_modules=_extensions_or_fallback(), cmdclass={"build_ext": OptionalBuildExt})
