"""What every part of the etcd backend shares: the client, the prefix, one retrying call.

The backend is three parts (:mod:`._etcd_writes`, :mod:`._etcd_mirror`,
:mod:`._etcd_lease`) tied together by :class:`~._etcd.EtcdBackend`; each
holds this :class:`Link` and records here what went wrong last, which
``health_check()`` reports.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .. import errors
from ..etcd import EtcdClient

__all__ = ["Link", "logger"]

logger = logging.getLogger("foundation.registry")

_T = TypeVar("_T")


class Link:
    """The backend's connection to etcd and the bookkeeping of its failures."""

    def __init__(self, client: EtcdClient, prefix: str, ttl: int) -> None:
        self.client = client
        self.prefix = prefix
        self.raw_prefix = prefix.encode("utf-8")
        self.plen = len(self.raw_prefix)
        self.ttl = ttl
        #: Seconds one etcd call may take, failover included.
        self.timeout = client.timeout
        #: Seconds one member may take to show what the cluster acknowledged
        #: (the client's per-attempt deadline); a watch on a member that lags
        #: longer is moved to another. With one endpoint there is no other.
        self.attempt_window = (
            min(self.timeout / 3.0, 1.0) if len(client.endpoints) > 1 else self.timeout
        )
        #: This instance's id: written into every entry as ``"i"``.
        self.instance_id = uuid.uuid4().hex
        self.closed = False
        #: Set once the backend is open: before that, a call is not sent twice,
        #: so an unreachable cluster fails ``open`` within one timeout.
        self.started = False
        self.last_error: BaseException | None = None
        #: The last EtcdUnavailable of a call; cleared by the next call that succeeds.
        self.unavailable: errors.EtcdError | None = None

    @property
    def endpoint(self) -> str:
        return self.client.current_endpoint

    async def call(self, fn: Callable[..., Awaitable[_T]], *args: Any, **kwargs: Any) -> _T:
        """Run an etcd call, once more if no member answered in time.

        Every call made through here is safe to send twice (reads, absolute
        puts, deletes, txns guarded by their compares). The second try gives
        a cluster that is electing a new leader (which can take longer than
        one call's timeout) a second budget before EtcdUnavailable is raised.
        """
        for attempt in (1, 2):
            try:
                result = await fn(*args, **kwargs)
            except errors.EtcdUnavailable as exc:
                self.unavailable = exc
                self.last_error = exc
                if attempt == 2 or self.closed or not self.started:
                    raise
                logger.info("etcd registry %s: %s; trying once more", self.prefix, exc)
                continue
            self.unavailable = None
            return result
        raise AssertionError("unreachable")  # pragma: no cover
