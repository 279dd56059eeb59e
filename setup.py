"""Build script: compiles the native registry table when it can.

* ``FOUNDATION_NO_EXTENSIONS=1``: skip the compile, install pure Python.
* ``FOUNDATION_REQUIRE_EXTENSIONS=1`` (set in CI) or ``CIBUILDWHEEL=1``: a failed
  compile is fatal instead of falling back to pure Python.
* ``FOUNDATION_DEBUG_BUILD=1``: ``-O0 -g3 -UNDEBUG`` (for gdb and sanitizers).

Anywhere else a failed compile prints a banner and installs the pure-Python
twin, which behaves the same (only slower). pip shows a build's output only
with ``-v`` (or when it fails); ``python -m foundation --version`` says
afterwards which twin was installed.

What is installed is what this build produced: the extension is compiled
afresh every time (an object left in ``build/`` by an earlier build, with
another compiler or none today, is never reused), a build without it removes
any earlier one from what it installs, and its wheel is ``py3-none-any``.
"""

from __future__ import annotations

import glob
import os
import sys
import traceback
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

try:  # setuptools >= 70.1 (the build requires >= 77; an old one may run build_ext)
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # pragma: no cover
    bdist_wheel = None


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
        "FOUNDATION_NO_EXTENSIONS and FOUNDATION_REQUIRE_EXTENSIONS are both set; unset one of them"
    )

BANNER = "*" * 75
#: The extension's file name stem (``_native.cpython-311-x86_64-linux-gnu.so``).
NATIVE_STEM = os.path.join("foundation", "registry", "_native")


def _remove_native(base: str) -> None:
    """Remove a compiled ``foundation.registry._native`` under ``base``, if any."""
    for path in glob.glob(os.path.join(base, NATIVE_STEM + ".*")):
        if path.endswith((".so", ".pyd", ".dylib")):
            print(f"removing {path}: not built by this build")
            os.remove(path)


class NativeDistribution(Distribution):
    """A distribution that has extension modules only if they were built.

    ``native_failed`` is set when the compile failed and the build fell
    back to pure Python; from then on the distribution reports no extension
    modules, so the install goes to purelib and the wheel is pure.
    """

    native_failed = False

    def has_ext_modules(self) -> bool:
        return not self.native_failed and super().has_ext_modules()


class OptionalBuildExt(build_ext):
    """build_ext that falls back to pure Python unless extensions are required."""

    def finalize_options(self) -> None:
        super().finalize_options()
        # Compile every time: an object up to date with its sources but built
        # earlier (another compiler, other flags, a compiler since removed)
        # would otherwise be shipped without this build trying at all.
        self.force = True

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
        # What an earlier build left where this one writes must not ship.
        for ext in self.extensions:
            path = self.get_ext_fullpath(ext.name)
            if os.path.exists(path):
                print(f"removing {path}: its compile failed now")
                os.remove(path)
        self.distribution.native_failed = True  # type: ignore[attr-defined]
        print(BANNER)
        print("WARNING: the native registry could not be compiled; installing the")
        print("pure-Python backend, which behaves the same but is slower.")
        print("Set FOUNDATION_REQUIRE_EXTENSIONS=1 to make this fatal.")
        print(BANNER)


class BuildPy(build_py):
    """build_py that drops an extension an earlier build left, when none is built now."""

    def run(self) -> None:
        super().run()
        if not self.distribution.has_ext_modules():
            _remove_native(self.build_lib)
            if getattr(self, "editable_mode", False):
                _remove_native(os.path.join(os.path.dirname(__file__) or ".", "src"))


cmdclass: dict[str, Any] = {"build_ext": OptionalBuildExt, "build_py": BuildPy}

if bdist_wheel is not None:

    class BdistWheel(bdist_wheel):
        """A wheel tagged by what was built: ``py3-none-any`` without the extension.

        bdist_wheel decides purity from the planned extensions, before any
        compile; a compile that fell back to pure Python would still give a
        ``cp311-cp311-linux_x86_64`` wheel. Build first, then decide.
        """

        def run(self) -> None:
            if not self.skip_build:
                self.run_command("build")
                self.skip_build = True
            self.root_is_pure = not self.distribution.has_ext_modules()
            super().run()

    cmdclass["bdist_wheel"] = BdistWheel


def _extensions() -> list[Extension]:
    if NO_EXTENSIONS:
        return []
    from Cython.Build import cythonize

    args = ["-O0", "-g3", "-UNDEBUG"] if DEBUG_BUILD else ["-O3"]
    args += ["-Wall"]
    csrc = sorted(os.path.join("csrc", f) for f in os.listdir("csrc") if f.endswith(".c"))
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


setup(
    ext_modules=_extensions_or_fallback(),
    cmdclass=cmdclass,
    distclass=NativeDistribution,
)
