"""What ``pip install .`` builds: a wheel without the extension is pure and carries none.

A build that does not compile the extension (``FOUNDATION_NO_EXTENSIONS=1``,
or no working C compiler) must give a ``py3-none-any`` wheel, and must not
ship a compiled module an earlier build left in ``build/`` or in ``src/``.
The builds run on a copy of the source tree, without build isolation (the
test extra brings setuptools and Cython), so they need no network. ``tools/check_wheel.sh``
does the same from an sdist, with real compilers and auditwheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUFFIX = sysconfig.get_config_var("EXT_SUFFIX") or ".so"

pytestmark = pytest.mark.skipif(
    not (ROOT / "setup.py").is_file(), reason="needs the source tree (setup.py, csrc/)"
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the source tree with a stale extension in build/ and in src/.

    The stale files are not loadable modules, only files with the
    extension's name: what matters is whether a build ships them.
    """
    pytest.importorskip("setuptools", minversion="77")
    copy = tmp_path / "tree"
    copy.mkdir()
    for name in ("setup.py", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, copy / name)
    shutil.copytree(ROOT / "csrc", copy / "csrc")
    shutil.copytree(
        ROOT / "src",
        copy / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd", "*.c", "*.html"),
    )
    platlib = copy / "build" / f"lib.{sysconfig.get_platform()}-{sys.implementation.cache_tag}"
    for base in (platlib, copy / "src"):
        stale = base / "foundation" / "registry" / f"_native{SUFFIX}"
        stale.parent.mkdir(parents=True, exist_ok=True)
        stale.write_bytes(b"stale: an earlier build's extension")
    return copy


def build_wheel(tree: Path, **env: str) -> Path:
    out = tree / "wheelhouse"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FOUNDATION_")}
    environ.pop("CIBUILDWHEEL", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-cache-dir",
            "--wheel-dir",
            str(out),
            str(tree),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**environ, **env},
        cwd=tree,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("*.whl")
    return wheel


def check_pure(wheel: Path) -> None:
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = zf.read(next(n for n in names if n.endswith(".dist-info/WHEEL"))).decode()
    assert "Root-Is-Purelib: true" in meta
    assert "Tag: py3-none-any" in meta
    assert not [n for n in names if n.endswith((".so", ".pyd"))], names
    assert not [n for n in names if ".data/" in n], names
    assert "foundation/registry/_python.py" in names


def test_no_extensions_gives_a_pure_wheel(tree: Path) -> None:
    check_pure(build_wheel(tree, FOUNDATION_NO_EXTENSIONS="1"))


def test_failed_compile_gives_a_pure_wheel(tree: Path) -> None:
    pytest.importorskip("Cython", minversion="3.1", reason="Cython translates the .pyx first")
    check_pure(build_wheel(tree, CC="false", CXX="false", LDSHARED="false"))
