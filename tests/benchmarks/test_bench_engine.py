"""The comparison engine (``foundation._cli._bench``) and ``python -m foundation bench``.

Fast structural checks only (a tiny table, one round): no timing is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from foundation._cli import _bench
from foundation.registry import NATIVE


def _check_structure(result: dict[str, Any], sizes: list[int]) -> None:
    assert result["env"]["NATIVE"] is NATIVE
    assert isinstance(result["env"]["native_status"], str)
    backends = ["native", "python"] if NATIVE else ["python"]
    assert result["env"]["backends"] == backends
    rows = result["results"]
    assert {(r["op"], r["n"]) for r in rows} == {(op, n) for op in _bench.ALL_OPS for n in sizes}
    for row in rows:
        impls = row["impls"]
        for backend in backends:
            assert backend in impls, (row["op"], backend)
        if row["op"] != "select_indexed":
            assert "dict" in impls
        assert ("nested" in impls) == (row["op"] == "lookup_hit")
        for cell in impls.values():
            assert isinstance(cell["net"], float)
            if not row["op"].startswith("memory_"):
                assert cell["min"] <= cell["net"] <= cell["max"]
                assert cell["raw"] > 0
                assert len(cell["per_round"]) == result["config"]["rounds"]
        if row["op"].startswith("memory_"):
            assert all(cell["net"] > 0 for cell in impls.values())
        assert ("native/python" in row["ratios"]) is NATIVE
    if NATIVE:
        hit = next(r for r in rows if r["op"] == "lookup_hit")
        assert set(hit["ratios"]) == {"native/dict", "native/nested", "native/python"}
        assert {(t["op"], t["ratio"]) for t in result["targets"]} >= {
            ("lookup_hit", "native/dict"),
            ("register_unregister", "native/python"),
            ("memory_2_keys", "native/dict"),
        }
    json.dumps(result)  # JSON-able


def test_run_structure() -> None:
    seen: list[str] = []
    result = _bench.run([200], 1, quick=True, progress=seen.append)
    _check_structure(result, [200])
    assert seen
    assert any(msg.startswith("N=200: done") for msg in seen)
    table = _bench.format_table(result)
    assert f"foundation.registry.NATIVE = {NATIVE}" in table
    for row in result["results"]:
        assert row["label"] in table


def test_run_subset_and_bad_input() -> None:
    result = _bench.run([100, 150], 2, quick=True, ops=["lookup_hit"], backends=["python"])
    assert [(r["op"], r["n"]) for r in result["results"]] == [
        ("lookup_hit", 100),
        ("lookup_hit", 150),
    ]
    assert set(result["results"][0]["impls"]) == {"python", "dict", "nested"}
    with pytest.raises(ValueError, match="unknown benchmark operation"):
        _bench.run([100], 1, ops=["nope"])
    with pytest.raises(ValueError, match="rounds"):
        _bench.run([100], 0)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "foundation", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
        check=False,
    )


def test_cli_json() -> None:
    proc = _cli("bench", "--json", "--quick", "--sizes", "200", "--rounds", "1")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    _check_structure(result, [200])
    assert result["config"]["quick"] is True
    assert "NATIVE" in proc.stderr  # progress and the backend line go to stderr


def test_cli_table_and_errors() -> None:
    proc = _cli("bench", "--quick", "--sizes", "150", "--rounds", "1", "--ops", "lookup_hit")
    assert proc.returncode == 0, proc.stderr
    assert f"foundation.registry.NATIVE = {NATIVE}" in proc.stdout
    assert "lookup hit" in proc.stdout
    bad = _cli("bench", "--sizes", "0")
    assert bad.returncode == 2
    assert "size" in bad.stderr
    clash = _cli("bench", "--scale", "--threads", "1")
    assert clash.returncode == 2
    assert clash.stderr
