"""etcd endpoint strings, checked in one place (below both ``config`` and ``etcd``).

:mod:`foundation.config` reads :envvar:`FOUNDATION_ETCD_ENDPOINTS` and the etcd
client takes ``endpoints=``; both must accept exactly the same strings, and
``config`` imports nothing from :mod:`foundation.etcd`, so the check lives here.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import ConfigError

__all__ = ["check_endpoints", "split_endpoint"]


def check_endpoints(endpoints: str | Sequence[str]) -> list[str]:
    """Normalise ``endpoints`` to a list of ``http(s)://host:port`` URLs.

    Accepts ``host:port`` (plain), ``http://host:port`` (plain) and
    ``https://host:port`` (TLS), as a list or one comma-separated string.

    Raises:
        ConfigError: no endpoint, or one that is not of those forms.
    """
    if isinstance(endpoints, str):
        endpoints = [e for e in endpoints.split(",") if e.strip()]
    result = []
    for raw in endpoints:
        if not isinstance(raw, str):
            raise ConfigError(
                f"etcd endpoint {raw!r} is not a str; use 'host:port' or 'http://host:port'"
            )
        url = raw.strip().rstrip("/")
        if "://" not in url:
            url = "http://" + url
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"etcd endpoint {raw!r} is not host:port or an http(s) URL;"
                " use e.g. 'http://127.0.0.1:2379'"
            )
        host, _, port = url.split("://", 1)[1].rpartition(":")
        if not host or not port.isdigit() or "/" in url.split("://", 1)[1]:
            raise ConfigError(
                f"etcd endpoint {raw!r} needs a host and a port and no path;"
                " use e.g. 'http://127.0.0.1:2379'"
            )
        result.append(url)
    if not result:
        raise ConfigError("no etcd endpoints given; pass endpoints=['http://host:2379']")
    return result


def split_endpoint(url: str) -> tuple[str, bool]:
    """``(host:port, tls)`` of an endpoint :func:`check_endpoints` returned."""
    scheme, _, target = url.partition("://")
    return target, scheme == "https"
