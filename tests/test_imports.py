"""Each module imports on its own, in a fresh interpreter, with and without
the native extension; bad ``FOUNDATION_*`` values fail clearly at import.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import foundation

SRC = Path(foundation.__file__).resolve().parent


def _module_names() -> list[str]:
    names = []
    for path in sorted(SRC.rglob("*")):
        if path.suffix == ".py":
            rel = path.relative_to(SRC.parent).with_suffix("")
        elif path.suffix in (".so", ".pyd") and path.name.count(".") >= 2:
            rel = path.relative_to(SRC.parent).parent / path.name.split(".")[0]
        else:
            continue
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts[-1] == "__main__" or "tests" in parts:
            continue
        names.append(".".join(parts))
    return sorted(set(names))


MODULES = _module_names()


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FOUNDATION_")}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )


def test_modules_found() -> None:
    assert "foundation" in MODULES
    assert "foundation.errors" in MODULES
    assert "foundation.registry._facade" in MODULES


# One fresh interpreter per module and mode: each import must stand alone (no
# reliance on another module having been imported first). The interpreters
# run a few at a time, since starting one (importing trio) takes ~0.5 s.
@pytest.mark.parametrize("no_ext", ["", "1"], ids=["default", "no-extensions"])
def test_each_module_imports_alone(no_ext: str) -> None:
    env = {"FOUNDATION_NO_EXTENSIONS": no_ext} if no_ext else {}
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        procs = dict(
            zip(
                MODULES, pool.map(lambda m: run_python(f"import {m}", **env), MODULES), strict=False
            )
        )
    failed = {m: p.stderr.strip().splitlines()[-1:] for m, p in procs.items() if p.returncode}
    assert not failed, failed


def test_no_extensions_means_python() -> None:
    proc = run_python(
        """
        import foundation.registry as r
        from foundation import errors
        assert r.NATIVE is False, r.NATIVE
        reg = r.Registry()
        assert reg.backend_name == "python", reg.backend_name
        try:
            r.Registry(backend="native")
        except errors.BackendUnavailable as exc:
            assert "FOUNDATION_NO_EXTENSIONS" in str(exc), str(exc)
        else:
            raise AssertionError("native backend built although disabled")
        """,
        FOUNDATION_NO_EXTENSIONS="1",
    )
    assert proc.returncode == 0, proc.stderr


def test_default_uses_native_when_built() -> None:
    proc = run_python(
        """
        import importlib.util
        import foundation.registry as r
        built = importlib.util.find_spec("foundation.registry._native") is not None
        assert r.NATIVE is built, (r.NATIVE, built)
        assert r.Registry().backend_name == ("native" if built else "python")
        """
    )
    assert proc.returncode == 0, proc.stderr


# The failed import leaves no importable package behind, so identify the
# error by its class (foundation.errors.ConfigError, a ValueError).
_IMPORT_AND_REPORT = """
    try:
        import foundation.registry
    except BaseException as exc:
        print(type(exc).__module__, type(exc).__qualname__)
        print(isinstance(exc, ValueError), [c.__name__ for c in type(exc).__mro__][1:3])
        print(str(exc))
    else:
        print("imported")
"""


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("FOUNDATION_NO_EXTENSIONS", "maybe"),
        ("FOUNDATION_NO_EXTENSIONS", "2"),
        ("FOUNDATION_REQUIRE_EXTENSIONS", "maybe"),
    ],
)
def test_bad_flag_value_is_config_error(var: str, value: str) -> None:
    proc = run_python(_IMPORT_AND_REPORT, **{var: value})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "foundation.errors ConfigError", proc.stdout
    assert lines[1] == "True ['FoundationError', 'ValueError']", lines[1]
    assert var in lines[2]
    assert value in lines[2]


def test_contradictory_flags_are_config_error() -> None:
    proc = run_python(
        _IMPORT_AND_REPORT,
        FOUNDATION_NO_EXTENSIONS="1",
        FOUNDATION_REQUIRE_EXTENSIONS="1",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "foundation.errors ConfigError", proc.stdout


def test_bad_backend_env_is_config_error() -> None:
    proc = run_python(
        """
        import foundation.registry as r
        from foundation import errors
        try:
            r.Registry()
        except errors.ConfigError as exc:
            assert "FOUNDATION_BACKEND" in str(exc)
        else:
            raise AssertionError("bad FOUNDATION_BACKEND accepted")
        """,
        FOUNDATION_BACKEND="quantum",
    )
    assert proc.returncode == 0, proc.stderr


def test_import_does_not_pull_in_test_or_heavy_deps() -> None:
    proc = run_python(
        """
        import sys
        import foundation
        for mod in ("pytest", "hypothesis", "httpx", "numpy", "grpc", "google.protobuf"):
            assert mod not in sys.modules, mod
        """
    )
    assert proc.returncode == 0, proc.stderr
