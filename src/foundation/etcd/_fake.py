"""An in-memory wire for tests: scripted members instead of gRPC channels.

``FakeWire(unary=handler)`` answers every unary call with
``await handler(endpoint, method, request)``: return the response, raise
:class:`~foundation.etcd._wire.WireError` for a status, or wait forever to
play a stalled member (the fake enforces the call's deadline the way gRPC
does, with ``DEADLINE_EXCEEDED``). ``streams=handler`` runs
``await handler(endpoint, method, request, peer)`` for each stream opened, in
the stream's nursery: ``peer.send(response)`` answers, ``await
peer.receive()`` reads what the client sent, ``peer.fail(code, details)``
breaks the stream. Every call is recorded in ``calls``.

Used with ``open_etcd_client(..., _wire=FakeWire(...))`` to test failover,
deadlines, retries and error mapping without etcd.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ._wire import Metadata, WireError

__all__ = ["FakePeer", "FakeWire"]

UnaryHandler = Callable[[str, str, Any], Awaitable[Any]]
StreamHandler = Callable[[str, str, Any, "FakePeer"], Awaitable[None]]


class _FakeStream:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._to_client, self._from_server = trio.open_memory_channel[Any](math.inf)
        self._to_server, self._from_client = trio.open_memory_channel[Any](math.inf)
        self._end: WireError | None = None
        self.cancel_scope = trio.CancelScope()

    def send(self, request: Any) -> None:
        if self._end is None:
            self._to_server.send_nowait(request)

    async def receive(self) -> Any:
        try:
            item = await self._from_server.receive()
        except trio.EndOfChannel:
            assert self._end is not None
            raise self._end from None
        if isinstance(item, WireError):
            self._end = item
            raise item
        return item

    def cancel(self) -> None:
        self._finish(WireError("CANCELLED", "the stream was closed"))

    def _finish(self, error: WireError) -> None:
        if self._end is None:
            self._end = error
            self._to_client.send_nowait(error)
            self._to_client.close()
            self._to_server.close()
        self.cancel_scope.cancel()


class FakePeer:
    """The member's side of one fake stream."""

    def __init__(self, stream: _FakeStream) -> None:
        self._stream = stream

    def send(self, response: Any) -> None:
        if self._stream._end is None:
            self._stream._to_client.send_nowait(response)

    async def receive(self) -> Any:
        """The client's next request (waits forever once the client stopped sending)."""
        try:
            return await self._stream._from_client.receive()
        except trio.EndOfChannel:
            await trio.sleep_forever()

    def fail(self, code: str, details: str) -> None:
        self._stream._finish(WireError(code, details))


async def _no_streams(endpoint: str, method: str, request: Any, peer: FakePeer) -> None:
    peer.fail("UNIMPLEMENTED", f"the fake has no stream handler for {method}")


class FakeWire:
    """See the module docstring."""

    def __init__(
        self, unary: UnaryHandler | None = None, streams: StreamHandler | None = None
    ) -> None:
        self._unary = unary
        self._streams = streams or _no_streams
        #: ``(endpoint, method, request, metadata)`` of every call and stream, in order.
        self.calls: list[tuple[str, str, Any, Metadata]] = []
        self.closed = False

    async def unary(
        self,
        endpoint: str,
        method: str,
        request: Any,
        *,
        timeout: float | None,  # noqa: ASYNC109 -- the fake enforces it like gRPC
        metadata: Metadata,
    ) -> Any:
        self.calls.append((endpoint, method, request, tuple(metadata)))
        if self._unary is None:
            raise WireError("UNIMPLEMENTED", "the fake has no unary handler")
        with trio.move_on_after(math.inf if timeout is None else timeout):
            return await self._unary(endpoint, method, request)
        raise WireError("DEADLINE_EXCEEDED", "Deadline Exceeded")

    def open_stream(
        self,
        nursery: trio.Nursery,
        endpoint: str,
        method: str,
        request: Any,
        *,
        metadata: Metadata,
    ) -> _FakeStream:
        self.calls.append((endpoint, method, request, tuple(metadata)))
        stream = _FakeStream(endpoint)

        async def serve() -> None:
            with stream.cancel_scope:
                await self._streams(endpoint, method, request, FakePeer(stream))

        nursery.start_soon(serve)
        return stream

    def close(self) -> None:
        self.closed = True
