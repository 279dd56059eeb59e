"""The scale and threads measurements (``bench --scale``, ``bench --threads``).

Default run: tiny sizes (a few thousand entries, two thread counts, a tenth
of a second per thread measurement), checking the result's structure and
that every number is positive, so the measurement code keeps working; no
timing is asserted. The real sizes run only under ``-m slow``::

    python -m pytest tests/benchmarks/test_bench_scale.py -m slow -s
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from foundation._cli import _bench_scale, _bench_threads, main
from foundation.registry import NATIVE

BACKENDS = ["native", "python"] if NATIVE else ["python"]
IMPLS = [*BACKENDS, "dict"]

TINY: dict[str, Any] = {
    "baseline_n": 500,
    "rounds": 2,
    "lookup_keys": 2_000,
    "cycle_keys": 500,
    "build_ops": 1_000,
    "group_sizes": (100, 1_000),
    "select_sizes": (500, 2_000),
    "select_target_s": 0.001,
    "targets_gc_n": 3_000,
    "targets_scan_n": 1_000,
}


def _positive_cell(cell: dict[str, Any], rounds: int) -> None:
    assert cell["raw"] > 0
    assert cell["loop"] > 0
    assert cell["min"] <= cell["net"] <= cell["max"]
    assert len(cell["per_round"]) == rounds


def _check_scale(result: dict[str, Any], sizes: list[int], rounds: int) -> None:
    assert result["env"]["NATIVE"] is NATIVE
    assert result["config"]["sizes"] == sizes
    assert [s["n"] for s in result["sizes"]] == sizes
    for s in result["sizes"]:
        assert set(s["impls"]) | set(s["skipped"]) == set(IMPLS)
        for impl, cell in s["impls"].items():
            assert cell["build"]["raw"] > 0, impl
            assert cell["build_s"] >= 0
            assert cell["memory"]["net"] > 0, impl
            assert cell["memory"]["method"] in ("rss", "tracemalloc")
            if s["n"] < 100_000:
                assert cell["memory"]["method"] == "tracemalloc"
            for op in ("lookup_hit", "register_unregister"):
                _positive_cell(cell[op], rounds)
        assert s["lookup_keys"] >= 1
    growth = result["growth"]
    assert {(g["op"], g["n"]) for g in growth} == {
        (op, n)
        for op in ("build", "lookup_hit", "register_unregister")
        for n in sizes
        if n != result["config"]["baseline_n"]
    }
    for g in growth:
        # nets of a few hundred ops can come out <= 0 on a busy machine: then None
        assert set(g["ratios"]) == set(IMPLS)
        assert all(r is None or isinstance(r, float) for r in g["ratios"].values()), g
    assert [g["size"] for g in result["groups"]] == result["config"]["group_sizes"]
    for g in result["groups"]:
        assert set(g["impls"]) == set(IMPLS)
        for ops in g["impls"].values():
            assert set(ops) == {"join", "members", "churn", "leave"}
            for cell in ops.values():
                _positive_cell(cell, rounds)
    assert [s["n"] for s in result["select"]] == result["config"]["select_sizes"]
    for s in result["select"]:
        assert set(s["queries"]) == {"indexed_1pct", "indexed_rare", "scan_1pct"}
        assert set(s["queries"]["scan_1pct"]) == set(IMPLS)
        assert set(s["queries"]["indexed_1pct"]) == set(BACKENDS)
        for per in s["queries"].values():
            matches = {cell["matches"] for cell in per.values()}
            assert len(matches) == 1, per  # every implementation found the same entries
            for cell in per.values():
                assert cell["raw"] > 0
                assert cell["matches"] >= 1
        rare = s["queries"]["indexed_rare"][BACKENDS[0]]["matches"]
        assert rare == -(-s["n"] // 10_000)
        assert s["queries"]["indexed_1pct"][BACKENDS[0]]["matches"] == s["n"] // 100
    checks = result["select_checks"]
    assert {c["impl"] for c in checks} == set(BACKENDS)
    assert all(isinstance(c["value"], float) for c in checks)
    _check_targets(result["targets"])
    json.dumps(result)


def _check_targets(targets: dict[str, Any]) -> None:
    """Every target row there (the native-only ones when native is built),
    each with its bound, positive times and a consistent verdict."""
    ids = [row["id"] for row in targets["rows"]]
    want = [t[0] for t in _bench_scale.TARGETS]
    if not NATIVE:
        want = ["registrations_ns", "registrations_ns_gc_off", "python_cycle"]
    assert [i for i in want if i in ids] == want
    for row in targets["rows"]:
        spec = next(t for t in _bench_scale.TARGETS if t[0] == row["id"])
        assert row["target"] == spec[4]
        assert row["values"], row
        if not row["id"].startswith("gc_"):  # (an "extra" time may come out <= 0)
            assert all(v > 0 for v in row["values"].values()), row
        if row["ratio"] is not None:
            assert row["ok"] == (row["ratio"] <= row["target"]), row
    json.dumps(targets)


def test_scale_tiny() -> None:
    seen: list[str] = []
    result = _bench_scale.run_scale([2_000], progress=seen.append, **TINY)
    _check_scale(result, [500, 2_000], TINY["rounds"])
    assert any("N=2,000: done" in msg for msg in seen)
    table = _bench_scale.format_scale_table(result)
    for label in ("lookup hit", "register+unregister", "FIFO churn", "indexed eq role", "Growth"):
        assert label in table
    assert f"foundation.registry.NATIVE = {NATIVE}" in table


def test_targets_tiny() -> None:
    seen: list[str] = []
    result = _bench_scale.run_targets(
        gc_n=3_000,
        scan_n=1_000,
        small_n=500,
        rounds=2,
        lookup_keys=1_000,
        cycle_keys=300,
        progress=seen.append,
    )
    _check_targets(result)
    assert any("targets:" in msg for msg in seen)
    table = _bench_scale.format_targets_table(result)
    for label in ("full gc.collect()", "registrations(ns)", "join+leave", "targets met"):
        assert label in table


def test_scale_python_budget_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past its budget the python build is abandoned, or skipped when predicted to overrun."""
    monkeypatch.setattr(_bench_scale, "_CHUNK", 500)  # the deadline is checked per chunk
    small = {
        **TINY,
        "baseline_n": 0,
        "group_sizes": (100,),
        "select_sizes": (500,),
        "targets": False,
    }
    result = _bench_scale.run_scale(
        [400, 3_000], backends=["python"], python_budget_s=1e-9, **small
    )
    first, second = result["sizes"]
    assert "python" in first["impls"]  # one chunk: done before the first deadline check
    assert "predicted" in second["skipped"]["python"]
    assert "dict" in second["impls"]
    assert result["growth"] == []
    assert "skipped" in _bench_scale.format_scale_table(result)
    result = _bench_scale.run_scale([3_000], backends=["python"], python_budget_s=1e-9, **small)
    assert "abandoned after 500 of 3,000" in result["sizes"][0]["skipped"]["python"]


def test_scale_bad_input() -> None:
    with pytest.raises(ValueError, match="rounds"):
        _bench_scale.run_scale([100], rounds=0)
    with pytest.raises(ValueError, match="sizes"):
        _bench_scale.run_scale([0])


def _check_threads(result: dict[str, Any], counts: list[int], rounds: int) -> None:
    assert result["config"]["thread_counts"] == counts
    assert isinstance(result["env"]["gil_enabled"], bool)
    rows = result["results"]
    assert {(r["backend"], r["mode"], r["threads"]) for r in rows} == {
        (b, m, c) for b in BACKENDS for m in _bench_threads.MODES for c in counts
    }
    for row in rows:
        assert row["ops_per_s"] > 0
        assert row["min"] <= row["ops_per_s"] <= row["max"]
        assert len(row["per_round"]) == rounds
        assert row["scaling"] > 0
        if row["threads"] == 1:
            assert row["scaling"] == pytest.approx(1.0)
    json.dumps(result)


def test_threads_tiny() -> None:
    result = _bench_threads.run_threads([1, 2], n=2_000, duration=0.03, rounds=2)
    _check_threads(result, [1, 2], 2)
    table = _bench_threads.format_threads_table(result)
    assert "scaling" in table
    assert "lookup" in table
    assert "mix" in table
    assert "write" in table


def test_threads_bad_input() -> None:
    with pytest.raises(ValueError, match="thread counts"):
        _bench_threads.run_threads([0])
    with pytest.raises(ValueError, match="mode"):
        _bench_threads.run_threads([1], modes=["nope"])


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "foundation", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
        check=False,
    )


def test_cli_scale_json() -> None:
    """The real entry point, ``python -m foundation bench --scale --json``."""
    proc = _cli(
        "--scale",
        "--json",
        "--rounds",
        "1",
        "--scale-sizes",
        "1500",
        "--scale-baseline",
        "300",
        "--scale-lookup-keys",
        "1000",
        "--scale-cycle-keys",
        "300",
        "--scale-build-ops",
        "600",
        "--scale-group-sizes",
        "200",
        "--scale-select-sizes",
        "400,1000",
        "--scale-select-seconds",
        "0.001",
        "--scale-targets-sizes",
        "2000,800",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [s["n"] for s in result["sizes"]] == [300, 1_500]
    assert result["config"]["cycle_keys"] == 300
    assert result["config"]["build_ops"] == 600
    assert result["targets"]["config"]["gc_n"] == 2_000
    assert result["targets"]["config"]["scan_n"] == 800
    assert "NATIVE" in proc.stderr


def test_cli_scale_targets_only() -> None:
    """``bench --scale --scale-targets-only``: the targets table, nothing else."""
    proc = _cli(
        "--scale",
        "--scale-targets-only",
        "--scale-targets-sizes",
        "2000,800",
        "--rounds",
        "1",
        "--scale-lookup-keys",
        "500",
        "--scale-cycle-keys",
        "200",
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    assert "At-scale targets" in proc.stdout
    assert "targets met:" in proc.stdout
    assert "Growth" not in proc.stdout


def test_cli_threads_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "--threads", "1,2", "--threads-n", "1000", "--threads-duration", "0.03"]
    assert main([*args, "--rounds", "1", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "scaling" in out
    assert err == ""
    assert main(["bench", "--scale", "--threads", "1"]) == 2
    assert "separate modes" in capsys.readouterr().err
    assert main([*args, "--threads-duration", "0"]) == 2
    assert "--threads-duration" in capsys.readouterr().err


@pytest.mark.slow
def test_scale_real_sizes() -> None:
    """The real thing (1e6 and 1e7 entries, ~10 GiB): minutes, only under ``-m slow``."""
    result = _bench_scale.run_scale(progress=lambda msg: print(msg, file=sys.stderr))
    print(_bench_scale.format_scale_table(result))
    _check_targets(result["targets"])
    assert result["sizes"][-1]["n"] == 10_000_000
    assert "native" in result["sizes"][-1]["impls"] or not NATIVE
    assert all(c["value"] > 0 for c in result["select_checks"])


@pytest.mark.slow
def test_threads_real() -> None:
    """``--threads 1,2,4`` at the defaults (1e5 entries, 2 s per measurement)."""
    result = _bench_threads.run_threads([1, 2, 4])
    print(_bench_threads.format_threads_table(result))
    _check_threads(result, [1, 2, 4], 3)
