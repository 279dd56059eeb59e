"""The public surface: every public name imports, ``__all__`` is sorted and complete.

``__all__`` order is ruff's RUF022 "isort-style": SCREAMING_CASE first, then
CamelCase, then the rest, each group alphabetical.
"""

from __future__ import annotations
import __future__

import importlib
import pkgutil
import types
from typing import Any

import pytest

import foundation


def _all_modules() -> list[str]:
    names = ["foundation"]
    for info in pkgutil.walk_packages(foundation.__path__, "foundation."):
        if info.name == "foundation.__main__":
            continue
        if info.name.startswith("foundation.etcd._proto.") and "_pb2" in info.name:
            continue  # protoc's output (tools/gen_protos.py): no __all__ by design
        names.append(info.name)
    return sorted(names)


MODULES = _all_modules()
PUBLIC_MODULES = [m for m in MODULES if not any(p.startswith("_") for p in m.split("."))]


def _import(name: str) -> types.ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if name.endswith("._native"):
            pytest.skip(f"native extension not importable: {exc}")
        raise


def _isort_key(name: str) -> tuple[int, str]:
    if name.isupper() or (name.upper() == name and "_" in name):
        group = 0
    elif name[:1].isupper():
        group = 1
    else:
        group = 2
    return (group, name)


def test_public_modules_listed() -> None:
    assert "foundation.errors" in PUBLIC_MODULES
    assert "foundation.registry" in PUBLIC_MODULES


@pytest.mark.parametrize("modname", MODULES)
def test_all_names_exist_sorted_unique(modname: str) -> None:
    module = _import(modname)
    exported = getattr(module, "__all__", None)
    if exported is None:
        if modname in PUBLIC_MODULES:
            pytest.fail(f"public module {modname} has no __all__")
        pytest.skip(f"{modname} defines no __all__")
    assert isinstance(exported, (list, tuple))
    assert len(set(exported)) == len(exported), f"duplicates in {modname}.__all__"
    for name in exported:
        assert hasattr(module, name), f"{modname}.__all__ lists missing {name!r}"
    assert list(exported) == sorted(exported, key=_isort_key), f"{modname}.__all__ not sorted"


def _is_reexportable(obj: Any) -> bool:
    return not isinstance(obj, (types.ModuleType, __future__._Feature))


@pytest.mark.parametrize("modname", PUBLIC_MODULES)
def test_all_is_complete(modname: str) -> None:
    """Every public name defined in (or re-exported under) a public module is in __all__."""
    module = _import(modname)
    exported = set(getattr(module, "__all__", ()))
    missing = []
    for name, obj in vars(module).items():
        if name.startswith("_") or name in exported or not _is_reexportable(obj):
            continue
        # defined here, or re-exported with its __module__ fixed up to here
        if getattr(obj, "__module__", None) == modname:
            missing.append(name)
    assert not missing, f"{modname}: public names missing from __all__: {missing}"


REGISTRY_API = [
    "Registry",
    "open_registry",
    "Registration",
    "RegistryEvent",
    "EventKind",
    "RegistryStats",
    "Health",
    "NATIVE",
    "Backend",
    "EMPTY_METADATA",
]


@pytest.mark.parametrize("name", REGISTRY_API)
def test_registry_api(name: str) -> None:
    registry_pkg = importlib.import_module("foundation.registry")
    assert name in registry_pkg.__all__
    obj = getattr(registry_pkg, name)
    if isinstance(obj, type):
        # the public path, not the underscore module, shows in tracebacks and docs
        assert obj.__module__ == "foundation.registry", obj.__module__


def test_top_level_reexports_are_the_same_objects() -> None:
    from foundation import registry

    for name in foundation.__all__:
        obj = getattr(foundation, name)
        if hasattr(registry, name):
            assert obj is getattr(registry, name)
    assert foundation.errors is importlib.import_module("foundation.errors")
    assert isinstance(foundation.NATIVE, bool)


ERRORS = [
    "FoundationError",
    "RegistryError",
    "AlreadyRegistered",
    "NotRegistered",
    "InvalidKey",
    "InvalidMetadata",
    "InvalidValue",
    "InvalidQuery",
    "RegistryClosed",
    "BackendIsAsync",
    "BackendUnavailable",
    "WatchOverflow",
    "ConfigError",
]


@pytest.mark.parametrize("name", ERRORS)
def test_errors_exported(name: str) -> None:
    from foundation import errors

    assert name in errors.__all__
    cls = getattr(errors, name)
    assert issubclass(cls, errors.FoundationError)
    assert cls.__module__ == "foundation.errors"
    assert cls.__doc__, f"{name} has no docstring"


def test_version() -> None:
    assert isinstance(foundation.__version__, str)
