"""One way to say where etcd is, for every ``open_*`` that talks to it.

``open_registry(backend="etcd")``, ``open_etcd_backend`` and
``open_etcd_coordinator`` accept the same three forms, exactly one of them:

* ``client=``: an open :class:`~foundation.etcd.EtcdClient`, shared (one
  channel per endpoint for the whole process). The caller owns it: closing
  the registry or coordinator does not close it.
* ``settings=``: an :class:`~foundation.etcd.EtcdSettings`.
* the connection keywords (``endpoints``, ``username``, ``password``,
  ``ca_cert``, ``client_cert``, ``client_key``, ``timeout``), a shorthand for
  the settings; endpoints default to :envvar:`FOUNDATION_ETCD_ENDPOINTS`.

Mixing them is ambiguous (whose timeout wins?), so it raises
:class:`~foundation.errors.ConfigError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from .. import errors
from ._client import EtcdClient, open_etcd_client
from ._settings import EtcdSettings

__all__ = ["connection_keywords", "resolve_settings", "shared_client"]


def connection_keywords(
    *,
    username: str | None = None,
    password: str | None = None,
    ca_cert: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """The connection keywords actually given (those not None)."""
    given = {
        "username": username,
        "password": password,
        "ca_cert": ca_cert,
        "client_cert": client_cert,
        "client_key": client_key,
        "timeout": timeout,
    }
    return {name: value for name, value in given.items() if value is not None}


def resolve_settings(
    endpoints: str | Sequence[str] | None,
    *,
    client: EtcdClient | None,
    settings: EtcdSettings | None,
    keywords: dict[str, Any],
    what: str,
) -> EtcdSettings | None:
    """Check that one form was given; the settings to open a client with (None: ``client``).

    ``what`` names the caller in messages (``"open_registry(backend='etcd')"``).

    Raises:
        ConfigError: two forms mixed, a ``client`` that is not an EtcdClient,
            no endpoints anywhere, or a bad setting.
    """
    shorthand = sorted(keywords) + (["endpoints"] if endpoints is not None else [])
    if client is not None:
        if not isinstance(client, EtcdClient):
            raise errors.ConfigError(
                f"{what}: client={client!r} is not an EtcdClient; open one with"
                " `async with open_etcd_client(...) as client:`"
            )
        extra = shorthand + (["settings"] if settings is not None else [])
        if extra:
            raise errors.ConfigError(
                f"{what}: client= brings its own connection, so {', '.join(extra)} cannot"
                " apply; give either the client or the connection settings"
            )
        return None
    if settings is not None:
        if not isinstance(settings, EtcdSettings):
            raise errors.ConfigError(f"{what}: settings={settings!r} is not an EtcdSettings")
        if shorthand:
            raise errors.ConfigError(
                f"{what}: give settings= or the connection keywords ({', '.join(shorthand)}),"
                " not both; settings.replace(...) makes a variant"
            )
        return settings
    if endpoints is None:
        from ..config import etcd_endpoints_from_env

        endpoints = etcd_endpoints_from_env()
    if endpoints is None:
        raise errors.ConfigError(
            f"{what} needs endpoints=['http://host:2379', ...] (or settings=, or client=,"
            " or FOUNDATION_ETCD_ENDPOINTS set to comma-separated URLs)"
        )
    return EtcdSettings(endpoints, **keywords)


@asynccontextmanager
async def shared_client(
    client: EtcdClient | None, settings: EtcdSettings | None
) -> AsyncIterator[EtcdClient]:
    """``client`` itself (left open at exit), or a client opened on ``settings`` for the block."""
    if client is not None:
        yield client
        return
    assert settings is not None
    async with open_etcd_client(settings=settings) as opened:
        yield opened
