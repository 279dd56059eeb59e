"""Fixtures shared by the whole suite: the backend matrix and per-test registries.

One conformance suite runs on every backend. ``backend_name`` is a session
fixture parametrised with the ids ``native`` and ``python``:

* ``native`` carries ``pytest.mark.native`` (deselect with ``-m "not native"``)
  and skips, with a reason, when the extension is not built or is disabled by
  ``FOUNDATION_NO_EXTENSIONS=1``; under ``FOUNDATION_REQUIRE_EXTENSIONS=1``
  (CI) it fails instead, so a broken build can never pass as a skip.
* ``python`` always runs.

The etcd backend joins the matrix later as one more param (see ``_BACKENDS``);
the ``registry`` fixture is already async and built the way an etcd registry
is opened, so conformance tests written against it run unchanged there.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from foundation.registry import Registry, _compat

# Real etcd members on loopback (the etcd client, backend and coordinator tests).
pytest_plugins = ["_etcd_fixtures"]


def _native_compiled() -> bool:
    """True if the compiled module exists (whether or not it is used)."""
    try:
        return importlib.util.find_spec("foundation.registry._native") is not None
    except ImportError:
        return False


def _require_extensions() -> bool:
    return os.environ.get("FOUNDATION_REQUIRE_EXTENSIONS", "").strip().lower() in (
        "1",
        "true",
        "yes",
        "on",
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say in every CI log which registry backend runs and whether it is native."""
    compiled = _native_compiled()
    try:
        auto = Registry("auto", partitions=1)
        active = auto.backend_name
        auto.close()
    except Exception as exc:  # a header must never break the session
        active = f"<error: {type(exc).__name__}: {exc}>"
    env = {
        var: os.environ.get(var, "<unset>")
        for var in (
            "FOUNDATION_BACKEND",
            "FOUNDATION_NO_EXTENSIONS",
            "FOUNDATION_REQUIRE_EXTENSIONS",
        )
    }
    return [
        f"foundation: native extension compiled={'yes' if compiled else 'no'},"
        f" in use (foundation.registry.NATIVE)={_compat.NATIVE};"
        f" Registry(backend='auto') -> {active!r}",
        "foundation: " + ", ".join(f"{k}={v}" for k, v in env.items()),
    ]


# The backend matrix. To add etcd: append
#     pytest.param("etcd", marks=pytest.mark.etcd, id="etcd")
# (register the marker in pyproject.toml), skip it in ``backend_name`` when no
# etcd binary is found, and open it in ``registry`` below with
# ``open_registry(backend="etcd", endpoints=[...], prefix=f"test/{uuid}/")``.
_BACKENDS = [
    pytest.param("native", marks=pytest.mark.native, id="native"),
    pytest.param("python", id="python"),
]


def require_backend(name: str) -> None:
    """Skip (or, under FOUNDATION_REQUIRE_EXTENSIONS=1, fail) if ``name`` cannot run here."""
    if name == "native" and not _compat.NATIVE:
        why = (
            "FOUNDATION_NO_EXTENSIONS is set"
            if _compat.NO_EXTENSIONS
            else "the native extension is not compiled"
        )
        if _require_extensions():
            pytest.fail(f"native backend unavailable ({why}) but FOUNDATION_REQUIRE_EXTENSIONS=1")
        pytest.skip(f"native backend unavailable: {why}")


@pytest.fixture(scope="session")
def require() -> Callable[[str], None]:
    """``require("native")``: skip (or fail under REQUIRE_EXTENSIONS) if it cannot run."""
    return require_backend


@pytest.fixture(scope="session", params=_BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    """The name of the backend under test: ``"native"`` or ``"python"``."""
    name: str = request.param
    require_backend(name)
    return name


@pytest.fixture
def make_registry(backend_name: str) -> Iterator[Callable[..., Registry]]:
    """Factory for extra registries on the backend under test; all closed at teardown.

    ``make_registry(indexes=("role",))``; keywords go to :class:`Registry`
    (``backend`` defaults to the backend under test, ``partitions`` to 4).
    """
    made: list[Registry] = []

    def make(**kwargs: Any) -> Registry:
        kwargs.setdefault("backend", backend_name)
        kwargs.setdefault("partitions", 4)
        reg = Registry(**kwargs)
        made.append(reg)
        return reg

    yield make
    for reg in made:
        reg.close()


@pytest.fixture
async def registry(backend_name: str) -> AsyncIterator[Registry]:
    """A fresh registry on the backend under test (4 partitions), closed after the test."""
    # etcd: async with open_registry(backend="etcd", endpoints=..., prefix=...) as reg
    reg = Registry(backend=backend_name, partitions=4)
    try:
        yield reg
    finally:
        await reg.aclose()


@pytest.fixture
def ns() -> tuple[str, str]:
    """A namespace of this test only (as the seed system's ``{:test, ref}``)."""
    return ("test", uuid.uuid4().hex)


# Backends whose keys and values are limited to portable keys and JSON
# (the etcd param, once it exists); tests marked local_only skip there.
_REMOTE_BACKENDS = frozenset({"etcd"})


@pytest.fixture(autouse=True)
def _local_only_guard(request: pytest.FixtureRequest) -> None:
    callspec = getattr(request.node, "callspec", None)
    backend = callspec.params.get("backend_name") if callspec is not None else None
    if backend in _REMOTE_BACKENDS and request.node.get_closest_marker("local_only"):
        pytest.skip(f"local-only behaviour (not on the {backend} backend)")
