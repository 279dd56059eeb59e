"""The suite's skip guard (``tests/_skip_guard.py``): a skip without a reason fails.

Run on a small made-up suite in a fresh pytest process, so the guard is
seen working on each kind of reasonless skip, and leaving reasoned skips
and xfails alone.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent

SUITE = """
import pytest

async def test_trio_skip_in_body():
    pytest.skip("pytest-trio drops this reason")

def test_sync_skip_with_reason():
    pytest.skip("a reason")

def test_skip_without_reason():
    pytest.skip()

@pytest.mark.skip
def test_bare_skip_mark():
    pass

@pytest.mark.parametrize("x", [])
def test_empty_parameter_set(x):
    pass

@pytest.mark.skipif(True, reason="skipped before it runs")
async def test_trio_skipif_with_reason():
    pass

@pytest.mark.xfail(reason="known", strict=True)
def test_xfail():
    assert False
"""


def test_reasonless_skips_fail(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\ntrio_mode = true\n", encoding="utf-8")
    (tmp_path / "test_suite.py").write_text(textwrap.dedent(SUITE), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "_skip_guard", "-rA"],
        cwd=tmp_path,
        env={**_environ(), "PYTHONPATH": str(TESTS)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = proc.stdout
    outcomes = dict(
        (m[2], m[1])
        for m in re.finditer(r"^(PASSED|FAILED|ERROR|XFAIL) test_suite\.py::(\S+)", out, re.M)
    )
    assert outcomes.get("test_trio_skip_in_body") == "FAILED", out
    assert outcomes.get("test_skip_without_reason") == "FAILED", out
    assert outcomes.get("test_bare_skip_mark") == "ERROR", out
    assert outcomes.get("test_empty_parameter_set[NOTSET]") == "ERROR", out
    assert outcomes.get("test_xfail") == "XFAIL", out
    assert "was skipped without a reason" in out
    # Reasoned skips stay skips, with their reasons.
    assert "SKIPPED [1] test_suite.py:8: a reason" in out, out
    assert "skipped before it runs" in out, out
    assert "2 failed, 2 skipped, 1 xfailed, 2 errors" in out, out


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
