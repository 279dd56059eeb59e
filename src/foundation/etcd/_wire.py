"""What the transport needs from a wire: one call on one endpoint, one stream on one endpoint.

A *wire* knows how to reach a member (gRPC channels in :mod:`._grpc`, an
in-memory script in :mod:`._fake`) and nothing about etcd's semantics: it
makes exactly one attempt and reports a failure as :class:`WireError` (the
gRPC status code's name and its details). Failover, retries, auth and the
mapping to :mod:`foundation.errors` live one floor up, in
:class:`~foundation.etcd._transport.Transport`, which is why they can be
tested against the fake without etcd.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import trio

__all__ = [
    "BIDI",
    "METHODS",
    "SERVER_STREAM",
    "UNARY",
    "Metadata",
    "Wire",
    "WireError",
    "WireStream",
]

Metadata = Sequence[tuple[str, str]]

UNARY = "unary"
SERVER_STREAM = "server_stream"
BIDI = "bidi"

#: Every RPC the client makes: ``"Service.Method"`` -> (gRPC path, kind).
METHODS: dict[str, tuple[str, str]] = {
    "KV.Range": ("/etcdserverpb.KV/Range", UNARY),
    "KV.Put": ("/etcdserverpb.KV/Put", UNARY),
    "KV.DeleteRange": ("/etcdserverpb.KV/DeleteRange", UNARY),
    "KV.Txn": ("/etcdserverpb.KV/Txn", UNARY),
    "KV.Compact": ("/etcdserverpb.KV/Compact", UNARY),
    "Watch.Watch": ("/etcdserverpb.Watch/Watch", BIDI),
    "Lease.LeaseGrant": ("/etcdserverpb.Lease/LeaseGrant", UNARY),
    "Lease.LeaseRevoke": ("/etcdserverpb.Lease/LeaseRevoke", UNARY),
    "Lease.LeaseKeepAlive": ("/etcdserverpb.Lease/LeaseKeepAlive", BIDI),
    "Lease.LeaseTimeToLive": ("/etcdserverpb.Lease/LeaseTimeToLive", UNARY),
    "Lease.LeaseLeases": ("/etcdserverpb.Lease/LeaseLeases", UNARY),
    "Maintenance.Status": ("/etcdserverpb.Maintenance/Status", UNARY),
    "Auth.Authenticate": ("/etcdserverpb.Auth/Authenticate", UNARY),
    "Lock.Lock": ("/v3lockpb.Lock/Lock", UNARY),
    "Lock.Unlock": ("/v3lockpb.Lock/Unlock", UNARY),
    "Election.Campaign": ("/v3electionpb.Election/Campaign", UNARY),
    "Election.Proclaim": ("/v3electionpb.Election/Proclaim", UNARY),
    "Election.Leader": ("/v3electionpb.Election/Leader", UNARY),
    "Election.Observe": ("/v3electionpb.Election/Observe", SERVER_STREAM),
    "Election.Resign": ("/v3electionpb.Election/Resign", UNARY),
}


class WireError(Exception):
    """One attempt failed: the gRPC status (by name) and what the other side said.

    ``sent`` is False only when the request certainly never reached a member
    (the connection could not be made), so even a non-idempotent write may be
    sent again elsewhere.
    """

    def __init__(self, code: str, details: str, *, sent: bool = True) -> None:
        super().__init__(code, details, sent)
        self.code = code
        self.details = details
        self.sent = sent

    def __str__(self) -> str:
        return f"{self.code}: {self.details}"


class WireStream(Protocol):
    """One open streaming call on one endpoint."""

    endpoint: str

    def send(self, request: Any) -> None:
        """Queue ``request`` on a bidirectional stream (never blocks)."""

    async def receive(self) -> Any:
        """The next response; raises :class:`WireError` once the stream ended or broke."""

    def cancel(self) -> None:
        """End the call now (idempotent; a pending :meth:`receive` raises)."""


class Wire(Protocol):
    """Calls on one endpoint at a time; see the module docstring."""

    async def unary(
        self,
        endpoint: str,
        method: str,
        request: Any,
        *,
        timeout: float | None,  # noqa: ASYNC109 -- a gRPC deadline, enforced by the wire
        metadata: Metadata,
    ) -> Any:
        """Make one call; ``timeout`` None waits as long as the member keeps the call."""

    def open_stream(
        self,
        nursery: trio.Nursery,
        endpoint: str,
        method: str,
        request: Any,
        *,
        metadata: Metadata,
    ) -> WireStream:
        """Start a streaming call whose reader task runs in ``nursery``.

        ``request`` is the single request of a server stream; a bidirectional
        stream ignores it and takes requests through :meth:`WireStream.send`.
        """

    def close(self) -> None:
        """Close every connection (pending calls fail)."""
