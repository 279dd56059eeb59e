"""Watch and Observe streams that survive a member going away.

A watch is an NDJSON stream (``/v3/watch``). When its connection breaks (the
member died, lost its leader, or the client failed over) it is opened again
on the next endpoint from the revision after the last event delivered, so
the caller sees every event once, in order, or an error that says why not:
:class:`~foundation.errors.CompactedRevision` when etcd no longer has the
revisions to replay, :class:`~foundation.errors.EtcdUnavailable` when no
member takes the stream back within the client's timeout.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import trio

from .. import errors, telemetry
from ._codec import KeyValue, ResponseHeader, b64, int_field, parse_header, parse_kv

if TYPE_CHECKING:
    from ._transport import Transport

__all__ = ["Observe", "Watch", "WatchEvent", "WatchResponse"]

logger = logging.getLogger("foundation.etcd")


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change: ``type`` is ``"PUT"`` or ``"DELETE"`` (``kv.mod_revision`` is when)."""

    type: Literal["PUT", "DELETE"]
    kv: KeyValue
    prev_kv: KeyValue | None


@dataclass(frozen=True, slots=True)
class WatchResponse:
    """Events of one revision range; no events means a progress notification."""

    header: ResponseHeader
    events: list[WatchEvent]

    @property
    def revision(self) -> int:
        """The store revision when etcd sent this (>= every event's revision)."""
        return self.header.revision


def _parse_event(obj: dict[str, Any]) -> WatchEvent:
    prev = obj.get("prev_kv")
    kind: Literal["PUT", "DELETE"] = "DELETE" if obj.get("type") == "DELETE" else "PUT"
    return WatchEvent(kind, parse_kv(obj.get("kv") or {}), parse_kv(prev) if prev else None)


class _Stream:
    """One reconnecting stream of gateway results (shared by Watch and Observe)."""

    def __init__(self, transport: Transport, path: str) -> None:
        self._transport = transport
        self._path = path
        self._stack: AsyncExitStack | None = None
        self._lines: AsyncIterator[dict[str, Any]] | None = None
        self._endpoint = ""
        self.closed = False

    def _body(self) -> dict[str, Any]:
        raise NotImplementedError

    async def _open(self) -> None:
        stack = AsyncExitStack()
        try:
            endpoint, lines = await stack.enter_async_context(
                self._transport.stream(self._path, self._body())
            )
        except BaseException:
            await stack.aclose()
            raise
        self._stack, self._lines, self._endpoint = stack, lines, endpoint

    async def _drop(self) -> None:
        stack, self._stack, self._lines = self._stack, None, None
        if stack is not None:
            with trio.CancelScope(shield=True):
                await stack.aclose()

    async def _next_result(self) -> dict[str, Any]:
        """The next result line, reopening the stream once if it broke."""
        reopened = False
        while True:
            if self.closed:
                raise errors.EtcdUnavailable("the stream was closed", None, self._endpoint)
            if self._lines is None:
                await self._open()
            assert self._lines is not None
            try:
                return await self._lines.__anext__()
            except errors.EtcdUnavailable as exc:
                await self._drop()
                if reopened:
                    raise
                reopened = True
                self._transport.note_stream_failure(self._endpoint, exc.message)
                logger.info("etcd stream %s broke (%s); reopening", self._path, exc.message)
                telemetry.emit(
                    "foundation.etcd.reconnect", {}, {"path": self._path, "reason": exc.message}
                )

    async def aclose(self) -> None:
        self.closed = True
        await self._drop()


class Watch(_Stream):
    """An async iterator of :class:`WatchResponse` for a key or a prefix.

    Made by :meth:`EtcdClient.watch`; ``next_revision`` is where it would
    resume (the revision after the last event delivered).
    """

    def __init__(
        self,
        transport: Transport,
        key: bytes,
        range_end: bytes | None,
        *,
        start_revision: int,
        prev_kv: bool,
        progress_notify: bool,
    ) -> None:
        super().__init__(transport, "/v3/watch")
        self._key = key
        self._range_end = range_end
        self._prev_kv = prev_kv
        self._progress_notify = progress_notify
        self.next_revision = start_revision
        #: The revision etcd reported last (events or progress).
        self.revision = 0

    def _body(self) -> dict[str, Any]:
        req: dict[str, Any] = {"key": b64(self._key)}
        if self._range_end is not None:
            req["range_end"] = b64(self._range_end)
        if self.next_revision:
            req["start_revision"] = str(self.next_revision)
        if self._prev_kv:
            req["prev_kv"] = True
        if self._progress_notify:
            req["progress_notify"] = True
        return {"create_request": req}

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> WatchResponse:
        while True:
            result = await self._next_result()
            header = parse_header(result.get("header"))
            if result.get("canceled"):
                compact = int_field(result, "compact_revision")
                await self._drop()
                if compact:
                    raise errors.CompactedRevision(
                        f"revision {self.next_revision} was compacted (oldest kept: {compact});"
                        " read the keys again and watch from after that read",
                        None,
                        self._endpoint,
                        compact,
                    )
                reason = result.get("cancel_reason") or "the watch was cancelled by etcd"
                raise errors.EtcdError(str(reason), None, self._endpoint)
            if header.revision:
                self.revision = max(self.revision, header.revision)
            if result.get("created"):
                if not self.next_revision:
                    self.next_revision = header.revision + 1
                continue
            events = [_parse_event(e) for e in result.get("events", ())]
            if events:
                self.next_revision = max(e.kv.mod_revision for e in events) + 1
            return WatchResponse(header, events)


class Observe(_Stream):
    """An async iterator of the leader's key-value of one election, each change.

    Made by :meth:`EtcdClient.observe`. The first item is the current leader
    (etcd sends nothing while nobody leads).
    """

    def __init__(self, transport: Transport, name: bytes) -> None:
        super().__init__(transport, "/v3/election/observe")
        self._name = name

    def _body(self) -> dict[str, Any]:
        return {"name": b64(self._name)}

    def __aiter__(self) -> Observe:
        return self

    async def __anext__(self) -> KeyValue:
        while True:
            result = await self._next_result()
            kv = result.get("kv")
            if kv:
                return parse_kv(kv)
