"""The asv suite (``asv_bench/benchmarks``) stays runnable: every benchmark once, small.

asv itself is not needed: each benchmark class is set up and each
``time_``/``track_``/``peakmem_`` method called once per parameter
combination, the way ``asv run --quick`` would, on the smallest sizes.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path
from typing import Any

import pytest

from foundation.registry import NATIVE

_SUITE = Path(__file__).resolve().parents[2] / "asv_bench" / "benchmarks" / "registry.py"


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("asv_registry_suite", _SUITE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


SUITE = _load()
CLASSES = [SUITE.Lookup, SUITE.RegisterCycle, SUITE.UnregisterOwner, SUITE.Memory]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_benchmark_runs_once(cls: Any) -> None:
    params = cls.params
    ran = 0
    for combo in itertools.product(*params):
        if any(isinstance(p, int) and p > 1_000 for p in combo):
            continue  # the large sizes are for asv itself
        if combo[0] == "native" and not NATIVE:
            continue
        bench = cls()
        bench.setup(*combo)
        try:
            for name in dir(bench):
                if name.startswith(("time_", "track_", "peakmem_")):
                    result = getattr(bench, name)(*combo)
                    if name.startswith("track_"):
                        assert result > 0
                    ran += 1
        finally:
            teardown = getattr(bench, "teardown", None)
            if teardown is not None:
                teardown(*combo)
    assert ran > 0
