"""The check of etcd endpoint URLs, shared by :mod:`foundation.config` and the etcd client.

It sits on the lowest floor of the package (it needs only
:mod:`foundation.errors`), so reading :envvar:`FOUNDATION_ETCD_ENDPOINTS` in
:mod:`foundation.config` and opening a client in :mod:`foundation.etcd` accept
exactly the same URLs without ``config`` importing the etcd package.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import errors

__all__ = ["check_endpoints"]


def check_endpoints(endpoints: str | Sequence[str]) -> list[str]:
    """Normalise ``endpoints`` to a list of ``http(s)://host:port`` URLs.

    Raises:
        ConfigError: no endpoint, or one that is not an http(s) URL.
    """
    if isinstance(endpoints, str):
        endpoints = [e for e in endpoints.split(",") if e.strip()]
    result = []
    for raw in endpoints:
        if not isinstance(raw, str):
            raise errors.ConfigError(
                f"etcd endpoint {raw!r} is not a str; use URLs like 'http://127.0.0.1:2379'"
            )
        url = raw.strip().rstrip("/")
        if "://" not in url:
            url = "http://" + url
        if not url.startswith(("http://", "https://")):
            raise errors.ConfigError(
                f"etcd endpoint {raw!r} is not an http(s) URL; use e.g. 'http://127.0.0.1:2379'"
            )
        result.append(url)
    if not result:
        raise errors.ConfigError("no etcd endpoints given; pass endpoints=['http://host:2379']")
    return result
