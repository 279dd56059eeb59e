"""``FOUNDATION_REQUIRE_ETCD_VERSIONS``: a session fails when a required etcd never served.

CI sets it when Debian's etcd 3.4 is installed beside the wheel's 3.5, so
the cross-version tests cannot silently skip 3.4 (as they did while
``etcdctl``, from Debian's ``etcd-client``, was missing). The harness counts
the members of each version that became healthy; the session's summary
reports them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from _etcd_fixtures import unserved_versions
from _etcd_harness import find_etcd

TESTS = Path(__file__).resolve().parents[1]


def test_unserved_versions() -> None:
    assert unserved_versions("3.4", ["3.5.1", "3.4.23"]) == []
    assert unserved_versions("3.4, 3.5", ["3.5.1"]) == ["3.4"]
    assert unserved_versions("3.4.23", ["3.4.23"]) == []
    assert unserved_versions("3.4.2", ["3.4.23"]) == ["3.4.2"]  # a prefix of parts, not chars
    assert unserved_versions("", ["3.5.1"]) == []


def _session(tmp_path: Path, required: str) -> subprocess.CompletedProcess[str]:
    """A one-test pytest session that starts one member, with ``required`` set."""
    (tmp_path / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {str(TESTS)!r})\npytest_plugins = ['_etcd_fixtures']\n"
    )
    (tmp_path / "test_one.py").write_text(
        textwrap.dedent(
            """
            def test_member(etcd_member):
                assert etcd_member.is_running
            """
        )
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOUNDATION_REQUIRE_ETCD")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env={**env, "FOUNDATION_REQUIRE_ETCD": "1", "FOUNDATION_REQUIRE_ETCD_VERSIONS": required},
        check=False,
    )


@pytest.mark.etcd
def test_a_required_version_that_served_passes(tmp_path: Path) -> None:
    found = find_etcd()
    if found is None:
        pytest.skip("no etcd installed")
    proc = _session(tmp_path, found.version.rsplit(".", 1)[0])  # e.g. "3.5"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"foundation: etcd versions that served tests: {found.version} (1 member)" in (
        proc.stdout
    )


@pytest.mark.etcd
def test_a_required_version_that_never_served_fails_the_session(tmp_path: Path) -> None:
    if find_etcd() is None:
        pytest.skip("no etcd installed")
    proc = _session(tmp_path, "9.9")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout  # the tests themselves passed ...
    assert "FOUNDATION_REQUIRE_ETCD_VERSIONS asks for etcd 9.9" in proc.stdout  # ... but not 9.9
