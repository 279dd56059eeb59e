"""FOUNDATION_* environment variables: documented values work, bad ones say what to use."""

from __future__ import annotations

import pytest

from foundation.config import backend_from_env, etcd_endpoints_from_env
from foundation.coordination import open_etcd_coordinator
from foundation.errors import ConfigError
from foundation.registry import NATIVE, Registry, open_registry


@pytest.mark.parametrize("value", ["python", " Python ", "auto"])
def test_backend_names_are_read_case_insensitively(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("FOUNDATION_BACKEND", value)
    assert backend_from_env() == value.strip().lower()


def test_unset_backend_gives_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FOUNDATION_BACKEND", raising=False)
    assert backend_from_env("auto") == "auto"


def test_a_bad_backend_names_the_variable_and_the_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FOUNDATION_BACKEND", "redis")
    with pytest.raises(
        ConfigError, match=r"FOUNDATION_BACKEND='redis'.*auto, native, python, etcd"
    ):
        Registry()


def test_backend_env_picks_the_local_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOUNDATION_BACKEND", "python")
    registry = Registry()
    assert registry.backend_name == "python"
    registry.close()
    if NATIVE:
        monkeypatch.setenv("FOUNDATION_BACKEND", "native")
        registry = Registry()
        assert registry.backend_name == "native"
        registry.close()


def test_etcd_backend_env_refuses_a_plain_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOUNDATION_BACKEND", "etcd")
    with pytest.raises(ConfigError, match="open_registry"):
        Registry()


async def test_etcd_backend_env_without_endpoints_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FOUNDATION_BACKEND", "etcd")
    monkeypatch.delenv("FOUNDATION_ETCD_ENDPOINTS", raising=False)
    with pytest.raises(ConfigError, match="FOUNDATION_ETCD_ENDPOINTS"):
        async with open_registry():
            pass


def test_endpoints_are_parsed_and_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FOUNDATION_ETCD_ENDPOINTS", raising=False)
    assert etcd_endpoints_from_env() is None
    monkeypatch.setenv("FOUNDATION_ETCD_ENDPOINTS", " http://127.0.0.1:2379/, 127.0.0.1:22379 ")
    assert etcd_endpoints_from_env() == ["http://127.0.0.1:2379", "http://127.0.0.1:22379"]


@pytest.mark.parametrize("value", ["ftp://host:1", "grpc://10.0.0.1:2379"])
def test_bad_endpoints_name_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("FOUNDATION_ETCD_ENDPOINTS", value)
    with pytest.raises(ConfigError, match="FOUNDATION_ETCD_ENDPOINTS"):
        etcd_endpoints_from_env()


async def test_coordinator_without_endpoints_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FOUNDATION_ETCD_ENDPOINTS", raising=False)
    with pytest.raises(ConfigError, match="FOUNDATION_ETCD_ENDPOINTS"):
        async with open_etcd_coordinator():
            pass


@pytest.mark.etcd
async def test_env_alone_opens_an_etcd_registry_and_coordinator(
    monkeypatch: pytest.MonkeyPatch, etcd_endpoints: list[str], etcd_prefix: str
) -> None:
    monkeypatch.setenv("FOUNDATION_BACKEND", "etcd")
    monkeypatch.setenv("FOUNDATION_ETCD_ENDPOINTS", ",".join(etcd_endpoints))
    async with open_registry(prefix=etcd_prefix) as registry:
        assert registry.backend_name == "etcd"
        await registry.register("svc", "a", 1)
        assert registry.lookup("svc", "a") == 1
    async with (
        open_etcd_coordinator(prefix=etcd_prefix) as coord,
        coord.lock("env-lock", timeout=5) as held,
    ):
        assert held.token > 0
