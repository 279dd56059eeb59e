"""The asv suite (``asv_bench/benchmarks``) stays runnable: every benchmark once, small.

asv itself is not needed. Every module of the suite is loaded, and every
benchmark class in it (a class with ``time_``/``track_``/``peakmem_``/...
methods) is set up, each benchmark method called once and the class torn
down, the way ``asv run --quick`` would, for each parameter combination at
the smallest sizes: an axis of ints contributes only its smallest value, an
axis of names (``impl``, ``mode``) all of its values. So a new module or
class is covered without touching this file.

* ``native`` combinations are skipped when the extension is not in use
  (``foundation.registry.NATIVE`` is False).
* A ``setup`` raising ``NotImplementedError`` is asv's skip: the etcd
  benchmarks do that without an etcd binary, and are skipped here too, or
  fail under ``FOUNDATION_REQUIRE_ETCD=1`` (CI). Anywhere else it fails.
* ``_QUICK`` shrinks the per-call work constants of a few modules (restart
  cycles, etcd registrations) so the whole file runs in a few seconds; it
  names them explicitly, and a renamed constant fails here.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from _etcd_fixtures import etcd_unavailable
from foundation.registry import NATIVE

_SUITE_DIR = Path(__file__).resolve().parents[2] / "asv_bench" / "benchmarks"
#: asv's benchmark kinds, by method name prefix.
_KINDS = ("time_", "timeraw_", "track_", "mem_", "peakmem_")
#: The modules the suite must have (one per area of ``docs/performance.rst``).
_REQUIRED = {"registry", "queries", "supervision", "coordination", "etcd"}
#: Per-call work constants shrunk for this smoke run: {module: {name: value}}.
_QUICK: dict[str, dict[str, int]] = {
    "queries": {"EVENTS": 10},
    "supervision": {"RESTARTS": 20},
    "etcd": {"REGISTRATIONS": 200, "SERIAL": 20, "TASKS": 16, "SAMPLES": 20},
}


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"asv_suite_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _is_benchmark(name: str) -> bool:
    return name.startswith(_KINDS)


def _benchmark_classes(module: ModuleType) -> list[type]:
    """Public classes defined in ``module`` that have benchmark methods (as asv finds them)."""
    return [
        obj
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and inspect.isclass(obj)
        and obj.__module__ == module.__name__
        and any(_is_benchmark(attr) for attr in dir(obj))
    ]


MODULES = {
    path.stem: _load(path) for path in sorted(_SUITE_DIR.glob("*.py")) if path.stem != "__init__"
}
CASES = [
    pytest.param(
        stem, cls, id=f"{stem}.{cls.__name__}", marks=[pytest.mark.etcd] * (stem == "etcd")
    )
    for stem, module in MODULES.items()
    for cls in _benchmark_classes(module)
]


def _param_axes(cls: type) -> list[list[Any]]:
    params = getattr(cls, "params", [])
    if not params:
        return []
    # asv: a single parameter may be given as a flat list of its values
    if not all(isinstance(axis, (list, tuple)) for axis in params):
        params = [params]
    return [list(axis) for axis in params]


def _smallest(axes: list[list[Any]]) -> list[tuple[Any, ...]]:
    """Combinations with each int axis at its minimum, other axes complete."""
    reduced = []
    for axis in axes:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in axis):
            reduced.append([min(axis)])
        else:
            reduced.append(axis)
    return list(itertools.product(*reduced))


def test_suite_has_every_module() -> None:
    assert set(MODULES) >= _REQUIRED
    for stem, module in MODULES.items():
        assert _benchmark_classes(module), f"{stem}.py has no benchmark class"
        loose = [n for n, obj in vars(module).items() if _is_benchmark(n) and callable(obj)]
        assert not loose, f"{stem}.py: module-level benchmarks {loose}; put them in a class"


@pytest.mark.parametrize(("stem", "cls"), CASES)
def test_every_benchmark_runs_once(stem: str, cls: type, monkeypatch: pytest.MonkeyPatch) -> None:
    module = MODULES[stem]
    for name, value in _QUICK.get(stem, {}).items():
        monkeypatch.setattr(module, name, value)  # raises if the constant was renamed
    axes = _param_axes(cls)
    names = getattr(cls, "param_names", ())
    if axes and names:
        assert len(names) == len(axes), f"{cls.__name__}: param_names do not match params"
    methods = sorted(attr for attr in dir(cls) if _is_benchmark(attr))
    cache: tuple[Any, ...] = ()
    if hasattr(cls, "setup_cache"):
        cache = (cls().setup_cache(),)  # type: ignore[attr-defined]

    ran = 0
    for combo in _smallest(axes):
        if "native" in combo and not NATIVE:
            continue
        args = (*cache, *combo)
        bench: Any = cls()
        setup = getattr(bench, "setup", None)
        if setup is not None:
            try:
                setup(*args)
            except NotImplementedError as exc:
                if stem == "etcd":
                    etcd_unavailable(f"asv etcd benchmarks skipped themselves: {exc}")
                raise
        try:
            for name in methods:
                result = getattr(bench, name)(*args)
                if name.startswith("track_"):
                    assert isinstance(result, (int, float)), f"{name} returned {result!r}"
                    assert math.isfinite(result), f"{name} returned {result!r}"
                    assert result > 0, f"{name} returned {result!r}"
                ran += 1
        finally:
            teardown = getattr(bench, "teardown", None)
            if teardown is not None:
                teardown(*args)
    if not ran:
        pytest.skip("every combination needs the native backend, which is not in use")
