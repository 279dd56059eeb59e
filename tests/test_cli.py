"""``python -m foundation`` as a new user meets it: how commands end, --version, usage.

Each command ends the same way: a typed error is one line and exit status 1,
bad options print that command's usage and exit 2, a reader that goes away
early ends the command quietly. The demo's and inspect's own behaviour is in
``test_demo.py``, bench's in ``tests/benchmarks``.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

import foundation
from foundation._cli import main
from foundation.demo._snapshot import latest_state_path, new_state_path, state_dir
from foundation.errors import ConfigError

#: An endpoint nothing listens on: connections are refused at once.
DEAD = "http://127.0.0.1:1"


def run_cli(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "foundation", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
        check=False,
    )


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# ---------------------------------------------------------------------------
# --version
# ---------------------------------------------------------------------------
def test_version_says_which_twin_runs() -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    assert first.startswith(f"trio-foundation {foundation.__version__} (")
    if foundation.NATIVE:
        assert second == "native extension: in use (foundation.NATIVE is True)"
    else:
        assert second.startswith("native extension: NOT in use")


def test_version_without_extensions() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOUNDATION_")}
    proc = subprocess.run(
        [sys.executable, "-m", "foundation", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "FOUNDATION_NO_EXTENSIONS": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "NOT in use, FOUNDATION_NO_EXTENSIONS is set" in proc.stdout
    assert "foundation.NATIVE is False" in proc.stdout


# ---------------------------------------------------------------------------
# Usage errors show the subcommand's usage
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["bench", "demo", "inspect"])
def test_unknown_option_shows_the_commands_usage(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--bogus"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: python -m foundation {command} ")
    assert f"python -m foundation {command}: error: unrecognized arguments: --bogus" in err


def test_bad_value_shows_the_commands_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["demo", "--seconds", "soon"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m foundation demo ")
    assert "'soon' is not a number of seconds" in err


# ---------------------------------------------------------------------------
# An etcd that does not answer: one line, exit 1, within the stated bound
# ---------------------------------------------------------------------------
def test_bench_etcd_unreachable_is_one_line() -> None:
    proc = run_cli("bench", "--etcd", DEAD, "--no-progress", timeout=120)
    assert proc.returncode == 1, proc.stderr
    line = one_line(proc.stderr)
    assert line.startswith("foundation bench: ")
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_inspect_etcd_unreachable_keeps_its_deadline(capsys: pytest.CaptureFixture[str]) -> None:
    # Without one deadline for the whole read, each etcd call had its own
    # 5 s and inspect took 11 s while saying "within 5 s".
    t0 = time.monotonic()
    code = main(["inspect", "--etcd", DEAD, "--timeout", "1"])
    elapsed = time.monotonic() - t0
    assert code == 1
    out, err = capsys.readouterr()
    assert out == ""
    line = one_line(err)
    assert line.startswith(f"foundation inspect: no answer from etcd at {DEAD} within 1 s")
    assert elapsed < 4, elapsed  # 1 s, plus closing what was opened, on a loaded machine


# ---------------------------------------------------------------------------
# A reader that goes away: quiet exit
# ---------------------------------------------------------------------------
def _snapshot_file(directory: Path) -> Path:
    from test_demo import snapshot

    path = directory / "s.json"
    path.write_text(json.dumps(snapshot()))
    return path


def test_closed_stdout_ends_quietly(tmp_path: Path) -> None:
    state = _snapshot_file(tmp_path)
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte (as after `| head -1`)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "foundation", "inspect", "--state", str(state), "--json"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    assert proc.stderr == ""  # no BrokenPipeError traceback, no "Exception ignored"
    assert proc.returncode == 1


def test_head_of_inspect_json(tmp_path: Path) -> None:
    state = _snapshot_file(tmp_path)
    proc = subprocess.run(
        f"'{sys.executable}' -m foundation inspect --state '{state}' --json | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0
    assert proc.stdout == "{\n"
    assert proc.stderr == ""


# ---------------------------------------------------------------------------
# Where demo state lives: per user, per run; inspect reads the newest
# ---------------------------------------------------------------------------
@pytest.fixture
def own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tempfile.gettempdir()`` is ``tmp_path`` for this test."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _uid() -> str:
    return str(os.getuid()) if hasattr(os, "getuid") else os.environ.get("USERNAME", "")


def test_state_paths_are_per_user_and_per_run(own_tmp: Path) -> None:
    first = new_state_path(now=1_000_000, pid=11)
    second = new_state_path(now=1_000_000, pid=12)
    third = new_state_path(now=1_000_060, pid=11)
    assert len({first, second, third}) == 3
    directory = own_tmp / f"foundation-{_uid()}"
    assert state_dir() == str(directory)
    for path in (first, second, third):
        assert Path(path).parent == directory
        assert Path(path).name.startswith("demo-")
        assert path.endswith(".json")
    if sys.platform != "win32":
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_latest_state_is_the_newest_run(own_tmp: Path) -> None:
    with pytest.raises(ConfigError, match="no demo state of yours"):
        latest_state_path()
    older = new_state_path(now=1_000_000, pid=99)
    newer = new_state_path(now=1_000_100, pid=5)
    Path(newer).write_text("{}")
    Path(older).write_text("{}")  # written last, but started first
    assert latest_state_path() == newer


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX ownership and modes")
def test_state_dir_not_ours_is_refused(own_tmp: Path) -> None:
    elsewhere = own_tmp / "elsewhere"
    elsewhere.mkdir()
    (own_tmp / f"foundation-{_uid()}").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="not a directory of yours"):
        new_state_path()
    with pytest.raises(ConfigError, match="not a directory of yours"):
        latest_state_path()


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX modes")
def test_state_dir_open_to_others_is_closed(own_tmp: Path) -> None:
    directory = own_tmp / f"foundation-{_uid()}"
    directory.mkdir(mode=0o777)
    directory.chmod(0o777)
    new_state_path()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_inspect_reads_the_newest_run_by_default(
    own_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_demo import snapshot

    old = new_state_path(now=1_000_000, pid=1)
    new = new_state_path(now=1_000_100, pid=2)
    Path(old).write_text(json.dumps(snapshot(pid=1)))
    Path(new).write_text(json.dumps(snapshot(pid=2)))
    assert main(["inspect", "--json"]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert report["source"] == {"state": new}
    assert report["demo"]["pid"] == 2


def test_inspect_with_no_state_says_what_to_do(
    own_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect"]) == 1
    line = one_line(capsys.readouterr().err)
    assert "no demo state of yours" in line
    assert "python -m foundation demo" in line
