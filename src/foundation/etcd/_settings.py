"""One frozen object for everything a connection to etcd needs."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from .. import errors
from .._endpoints import check_endpoints

__all__ = ["EtcdSettings"]


@dataclass(frozen=True, slots=True)
class EtcdSettings:
    """Where etcd is and how to talk to it; pass it as ``settings=`` to every ``open_*``.

    Endpoints are ``host:port``, ``http://host:port`` or ``https://host:port``
    (TLS), as a list or one comma-separated string; they are stored
    normalised to URLs. ``username``/``password`` turn on etcd's auth (a token
    from ``Auth.Authenticate``, sent with every call and fetched again when
    etcd rejects it). ``ca_cert`` (PEM file of the CA that signed the
    members' certificates; default: the system's roots), ``client_cert`` and
    ``client_key`` (PEM files, for members that require client
    certificates) apply to ``https://`` endpoints. ``timeout`` bounds each
    unary call, failover included.

    Example::

        settings = EtcdSettings(["10.0.0.1:2379", "10.0.0.2:2379"], timeout=3)
        async with open_etcd_client(settings=settings) as etcd: ...

    Raises:
        ConfigError: a bad endpoint, a password without a user (or the other
            way round), a key without a certificate, a timeout that is not a
            positive number.
    """

    endpoints: tuple[str, ...]
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    timeout: float = 5.0

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        username: str | None = None,
        password: str | None = None,
        ca_cert: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        if (username is None) != (password is None):
            raise errors.ConfigError("etcd auth needs both username= and password=")
        if client_key is not None and client_cert is None:
            raise errors.ConfigError("client_key= needs client_cert= as well")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise errors.ConfigError(f"timeout={timeout!r}: use a number of seconds > 0")
        for name, value in (
            ("username", username),
            ("password", password),
            ("ca_cert", ca_cert),
            ("client_cert", client_cert),
            ("client_key", client_key),
        ):
            if value is not None and not isinstance(value, str):
                raise errors.ConfigError(f"{name}={value!r}: use a str (or None)")
        set_ = object.__setattr__
        set_(self, "endpoints", tuple(check_endpoints(endpoints)))
        set_(self, "username", username)
        set_(self, "password", password)
        set_(self, "ca_cert", ca_cert)
        set_(self, "client_cert", client_cert)
        set_(self, "client_key", client_key)
        set_(self, "timeout", float(timeout))

    def replace(self, **changes: object) -> EtcdSettings:
        """A copy with ``changes`` applied (checked like the constructor)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields.update(changes)
        endpoints = fields.pop("endpoints")
        return EtcdSettings(endpoints, **fields)
