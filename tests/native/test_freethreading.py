"""The extension on a free-threaded CPython (``Py_GIL_DISABLED``, e.g. 3.13t).

The extension declares itself free-threading compatible (Cython's
``freethreading_compatible`` directive sets ``Py_mod_gil`` to
``Py_MOD_GIL_NOT_USED``); a module without that declaration makes CPython
re-enable the GIL when it is imported, with a RuntimeWarning, and every
thread test in the session would then run under a GIL again. These tests
check that this does not happen. They skip on interpreters with a GIL;
``tools/build_python313t.sh`` builds a free-threaded one and
``.ci/pythons.sh 3.13t`` runs tests/registry and tests/native there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from collections.abc import Callable

import pytest

FREE_THREADED = sysconfig.get_config_var("Py_GIL_DISABLED") == 1

pytestmark = [
    pytest.mark.native,
    pytest.mark.skipif(
        not FREE_THREADED,
        reason="needs a free-threaded CPython (tools/build_python313t.sh builds 3.13t)",
    ),
]


def test_extension_is_built_for_the_free_threaded_abi(require: Callable[[str], None]) -> None:
    require("native")
    from foundation.registry import _native

    # the 't' ABI tag: cpython-313t-...; a GIL build of the module would not load
    assert sysconfig.get_config_var("EXT_SUFFIX") in _native.__file__


def test_importing_the_extension_keeps_the_gil_disabled(
    require: Callable[[str], None],
) -> None:
    require("native")
    code = (
        "import sys\n"
        "assert not sys._is_gil_enabled(), 'the GIL is on before the import'\n"
        "import foundation\n"
        "from foundation.registry import NATIVE, _native\n"
        "assert NATIVE\n"
        "assert not sys._is_gil_enabled(), 'importing foundation re-enabled the GIL'\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    run = subprocess.run(
        # a re-enabled GIL comes with a RuntimeWarning: make it an error too
        [sys.executable, "-W", "error::RuntimeWarning", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"


def test_the_gil_is_disabled_in_this_test_session(require: Callable[[str], None]) -> None:
    # everything the test session imported (plugins included) left it off, so
    # the thread tests here really run in parallel
    require("native")
    if os.environ.get("PYTHON_GIL") == "1":
        pytest.skip("PYTHON_GIL=1 forces the GIL on")
    assert not sys._is_gil_enabled()
