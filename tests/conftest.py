"""Fixtures shared by the whole suite: the backend matrix and per-test registries.

One conformance suite runs on every backend. ``backend_name`` is a session
fixture parametrised with the ids ``native``, ``python`` and ``etcd``:

* ``native`` carries ``pytest.mark.native`` (deselect with ``-m "not native"``)
  and skips, with a reason, when the extension is not built or is disabled by
  ``FOUNDATION_NO_EXTENSIONS=1``; under ``FOUNDATION_REQUIRE_EXTENSIONS=1``
  (CI) it fails instead, so a broken build can never pass as a skip.
* ``python`` always runs.
* ``etcd`` carries ``pytest.mark.etcd`` and runs against the session's etcd
  member (``etcd_endpoints``, from ``_etcd_fixtures``), each registry under a
  prefix of its own; it skips when no etcd binary is found (fails under
  ``FOUNDATION_REQUIRE_ETCD=1``).

Fixtures that open registries: ``registry`` (one, async), ``new_registry``
(an async factory for more, each closed at teardown), ``registry_options``
(the keywords ``open_registry(backend=backend_name, ...)`` needs besides
``partitions``/``indexes``: on etcd the endpoints and a fresh prefix).
``make_registry`` is the synchronous factory of local backends.

Tests marked ``local_only`` (non-portable keys, non-JSON values, ``_nowait``
writes, threads) skip on etcd, and so do tests that ask for ``autojump_clock``
or ``mock_clock``: a mock clock cannot drive real sockets (autojump fires
while a task waits on a socket); portable timing tests take
``registry_clock`` instead (autojump locally, the real clock on etcd).
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio
import trio.testing

from foundation.registry import Registry, _compat, open_registry

pytest_plugins = ["_etcd_fixtures", "_skip_guard"]


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


# The backend matrix.
_BACKENDS = [
    pytest.param("native", marks=pytest.mark.native, id="native"),
    pytest.param("python", id="python"),
    pytest.param("etcd", marks=pytest.mark.etcd, id="etcd"),
]

#: The lease TTL of test registries on etcd (seconds).
ETCD_TEST_TTL = 10


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
    """The name of the backend under test: ``"native"``, ``"python"`` or ``"etcd"``."""
    name: str = request.param
    if name == "etcd":
        request.getfixturevalue("etcd_binaries")  # skips (or fails) without etcd
    else:
        require_backend(name)
    return name


@pytest.fixture
def registry_options(backend_name: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Keywords ``open_registry(backend=backend_name, ...)`` needs besides partitions/indexes.

    ``{}`` for local backends; on etcd the session member's endpoints, a
    prefix of this test only and a TTL. Registries opened with the same
    options share the prefix: they are instances of one registry.
    """
    if backend_name != "etcd":
        return {}
    endpoints: list[str] = request.getfixturevalue("etcd_endpoints")
    return {"endpoints": endpoints, "prefix": f"test/{uuid.uuid4().hex}/", "ttl": ETCD_TEST_TTL}


@pytest.fixture
def make_registry(backend_name: str) -> Iterator[Callable[..., Registry]]:
    """Factory for extra registries on a *local* backend under test; all closed at teardown.

    ``make_registry(indexes=("role",))``; keywords go to :class:`Registry`
    (``backend`` defaults to the backend under test, ``partitions`` to 4).
    An etcd registry cannot be opened synchronously: use ``new_registry``.
    """
    made: list[Registry] = []

    def make(**kwargs: Any) -> Registry:
        kwargs.setdefault("backend", backend_name)
        kwargs.setdefault("partitions", 4)
        if kwargs["backend"] == "etcd":
            pytest.fail("make_registry() is synchronous; use 'await new_registry(...)' on etcd")
        reg = Registry(**kwargs)
        made.append(reg)
        return reg

    yield make
    for reg in made:
        reg.close()


@pytest.fixture
async def new_registry(
    backend_name: str, registry_options: dict[str, Any]
) -> AsyncIterator[Callable[..., Awaitable[Registry]]]:
    """Async factory for extra registries on the backend under test, closed at teardown.

    ``await new_registry(indexes=("role",))``; keywords go to
    :func:`open_registry` (``partitions`` defaults to 4). On etcd each new
    registry gets a prefix of its own unless ``prefix=`` is given (pass
    ``registry_options["prefix"]`` for another instance of the ``registry``).
    """

    async def hold(
        kwargs: dict[str, Any], *, task_status: trio.TaskStatus[Registry] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with open_registry(**kwargs) as reg:
            task_status.started(reg)
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:

        async def make(**kwargs: Any) -> Registry:
            kwargs.setdefault("partitions", 4)
            if backend_name == "etcd":
                options = dict(registry_options, prefix=f"test/{uuid.uuid4().hex}/")
                options.update(kwargs)
                kwargs = options
            reg: Registry = await nursery.start(hold, {"backend": backend_name, **kwargs})
            return reg

        yield make
        nursery.cancel_scope.cancel()


@pytest.fixture
async def registry(backend_name: str, registry_options: dict[str, Any]) -> AsyncIterator[Registry]:
    """A fresh registry on the backend under test (4 partitions), closed after the test."""
    async with open_registry(backend=backend_name, partitions=4, **registry_options) as reg:
        try:
            yield reg
        finally:
            await reg.aclose()


@pytest.fixture
def registry_clock(backend_name: str) -> trio.testing.MockClock | None:
    """The clock of a portable timing test: autojump locally, the real clock on etcd.

    pytest-trio runs a test on the Clock one of its arguments holds; on etcd
    this is None, so the test runs on the real clock (autojump would fire
    while a task waits on a socket). Scale waits with ``scaled(clock, s)``.
    """
    if backend_name == "etcd":
        return None
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture
def ns() -> tuple[str, str]:
    """A namespace of this test only (Elixir Foundation's ``{:test, ref}``)."""
    return ("test", uuid.uuid4().hex)


# Backends whose keys and values are limited to portable keys and JSON; tests
# marked local_only skip there, and so do tests on a mock clock.
_REMOTE_BACKENDS = frozenset({"etcd"})
_MOCK_CLOCKS = frozenset({"autojump_clock", "mock_clock"})


@pytest.fixture(autouse=True)
def _local_only_guard(request: pytest.FixtureRequest) -> None:
    callspec = getattr(request.node, "callspec", None)
    backend = callspec.params.get("backend_name") if callspec is not None else None
    if backend not in _REMOTE_BACKENDS:
        return
    marker = request.node.get_closest_marker("local_only")
    if marker is not None:
        # A skip here, before the test runs, keeps its reason; pytest.skip()
        # inside a trio test body is reported without one.
        why = marker.kwargs.get("reason", "local-only behaviour")
        pytest.skip(f"{why} (not on the {backend} backend)")
    if _MOCK_CLOCKS & set(request.fixturenames):
        pytest.skip(
            f"runs on a mock clock, which cannot drive the {backend} backend's sockets"
            " (autojump fires while a task waits on one); portable timing tests use"
            " registry_clock"
        )
