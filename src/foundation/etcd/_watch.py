"""Watch and Observe streams that survive a member going away or stalling.

A watch is a gRPC Watch stream with one watcher. When the stream breaks (the
member died, lost its leader, or the client failed over), or stalls (no
message and no answer to a progress request within the transport's
per-attempt deadline), it is opened again on the next endpoint from the
revision after the last event delivered, so the caller sees every event
once, in order, or an error that says why not:
:class:`~foundation.errors.CompactedRevision` when etcd no longer has the
revisions to replay, :class:`~foundation.errors.EtcdUnavailable` when no
member takes the stream back within the client's timeout.

Each stream's reader runs in the client's nursery while its ``async with
client.watch(...)`` block is open. Streams carry etcd's ``hasleader`` metadata, so a
member cut off from its leader cancels them and they move on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import trio

from .. import errors, telemetry
from ._codec import KeyValue, ResponseHeader, header_of, kv_of, pb
from ._transport import Outcome, Transport, classify, map_wire_error
from ._wire import WireError, WireStream

__all__ = ["Observe", "Watch", "WatchEvent", "WatchResponse"]

logger = logging.getLogger("foundation.etcd")

#: Seconds a watch may be silent before it asks its member for progress.
PROBE_INTERVAL = 2.0


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


def _event_of(ev: Any) -> WatchEvent:
    return WatchEvent(
        "DELETE" if ev.type == 1 else "PUT",
        kv_of(ev.kv),
        kv_of(ev.prev_kv) if ev.HasField("prev_kv") else None,
    )


class _Stalled(Exception):
    pass


class _Stream:
    """One reconnecting stream (shared by Watch and Observe)."""

    _method = ""

    def __init__(self, transport: Transport, nursery: trio.Nursery) -> None:
        self._transport = transport
        self._nursery = nursery
        self._stream: WireStream | None = None
        self._endpoint: str | None = None
        #: Breaks in a row without a message in between.
        self._breaks = 0
        self.closed = False

    async def _open(self) -> None:
        raise NotImplementedError

    def _drop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.cancel()

    def _broke(self, why: str) -> None:
        """The stream broke or stalled: back off from its member, reopen on the next."""
        endpoint = self._endpoint
        self._drop()
        if endpoint is not None:
            self._transport.endpoint_failed(endpoint, why)
        self._breaks += 1
        logger.info("etcd stream %s on %s broke (%s); reopening", self._method, endpoint, why)
        telemetry.emit("foundation.etcd.reconnect", {}, {"path": self._method, "reason": why})
        if self._breaks > len(self._transport.endpoints) + 2:
            raise errors.EtcdUnavailable(
                f"the {self._method} stream kept breaking ({why})", None, endpoint
            )

    def _fail_or_retry(self, exc: WireError) -> None:
        outcome = classify(exc)
        if outcome is Outcome.FAIL:
            self._drop()
            raise map_wire_error(exc, self._endpoint) from exc
        self._broke(str(exc))

    async def _opened(self) -> WireStream:
        if self.closed:
            raise errors.EtcdUnavailable("the stream was closed", None, self._endpoint)
        if self._stream is None:
            await self._open()
        assert self._stream is not None
        return self._stream

    async def aclose(self) -> None:
        self.closed = True
        self._drop()
        await trio.lowlevel.checkpoint()


class Watch(_Stream):
    """An async iterator of :class:`WatchResponse` for a key or a prefix.

    Made by :meth:`EtcdClient.watch`; ``next_revision`` is where it would
    resume (the revision after the last event delivered). Progress
    notifications come through (as responses without events) when the watch
    was made with ``progress_notify=True`` or asked for one with
    :meth:`request_progress`.
    """

    _method = "Watch"

    def __init__(
        self,
        transport: Transport,
        nursery: trio.Nursery,
        key: bytes,
        range_end: bytes | None,
        *,
        start_revision: int,
        prev_kv: bool,
        progress_notify: bool,
    ) -> None:
        super().__init__(transport, nursery)
        self._key = key
        self._range_end = range_end
        self._prev_kv = prev_kv
        self._progress_notify = progress_notify
        self.next_revision = start_revision
        #: The revision etcd reported last (events or progress).
        self.revision = 0
        self._probes = 0
        self._wanted = 0
        multi = transport.attempt_timeout is not None
        self._probe_interval = PROBE_INTERVAL if multi else transport.timeout
        self._probe_wait = transport.attempt_timeout or transport.timeout

    def _create(self) -> Any:
        return pb.rpc.WatchRequest(
            create_request=pb.rpc.WatchCreateRequest(
                key=self._key,
                range_end=self._range_end or b"",
                start_revision=self.next_revision,
                prev_kv=self._prev_kv,
                progress_notify=self._progress_notify,
            )
        )

    async def _open(self) -> None:
        create = self._create()

        async def created(stream: WireStream) -> Any:
            stream.send(create)
            while True:
                response = await stream.receive()
                if response.canceled and not response.compact_revision:
                    # Refused at creation (permission denied, no leader...).
                    raise WireError("UNKNOWN", response.cancel_reason or "watch refused")
                if response.created or response.canceled:
                    return response

        stream, response = await self._transport.open_stream(
            self._nursery, "Watch.Watch", None, first=created
        )
        assert response is not None
        self._stream, self._endpoint = stream, stream.endpoint
        self._probes = 0
        if self._wanted:  # asked for while the stream was down
            self._probes = 1
            stream.send(pb.rpc.WatchRequest(progress_request=pb.rpc.WatchProgressRequest()))
        if response.canceled:
            self._compacted(response)
        header = header_of(response.header)
        self.revision = max(self.revision, header.revision)
        if not self.next_revision:
            self.next_revision = header.revision + 1

    def _compacted(self, response: Any) -> None:
        self._drop()
        raise errors.CompactedRevision(
            f"revision {self.next_revision} was compacted (oldest kept:"
            f" {response.compact_revision}); read the keys again and watch from after that read",
            None,
            self._endpoint,
            response.compact_revision,
        )

    def request_progress(self) -> None:
        """Ask etcd for a progress notification: the next response says where the store is.

        etcd answers once every event up to its current revision was sent
        on this stream; the answer (a response without events) is delivered
        like any other.
        """
        self._wanted += 1
        if self._stream is not None:
            self._probes += 1
            self._stream.send(pb.rpc.WatchRequest(progress_request=pb.rpc.WatchProgressRequest()))

    async def _next_message(self) -> Any:
        """The stream's next message; a silent stream is probed, a stalled one raises."""
        stream = await self._opened()
        response = None
        with trio.move_on_after(self._probe_interval):
            response = await stream.receive()
        if response is not None:
            return response
        self._probes += 1
        stream.send(pb.rpc.WatchRequest(progress_request=pb.rpc.WatchProgressRequest()))
        with trio.move_on_after(self._probe_wait):
            response = await stream.receive()
        if response is None:
            raise _Stalled(f"no answer to a progress request within {self._probe_wait:g} s")
        return response

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> WatchResponse:
        while True:
            try:
                response = await self._next_message()
            except WireError as exc:
                self._fail_or_retry(exc)
                continue
            except _Stalled as exc:
                self._broke(str(exc))
                continue
            if response.canceled:
                if response.compact_revision:
                    self._compacted(response)
                self._fail_or_retry(
                    WireError("UNKNOWN", response.cancel_reason or "the watch was cancelled")
                )
                continue
            self._breaks = 0
            header = header_of(response.header)
            if header.revision > self.revision:
                self.revision = header.revision
            if response.created:
                continue
            if response.events:
                events = [_event_of(ev) for ev in response.events]
                self.next_revision = events[-1].kv.mod_revision + 1
                return WatchResponse(header, events)
            # A progress notification: asked for, ours (a probe), or etcd's own.
            if self._wanted:
                self._wanted -= 1
                self._probes = max(0, self._probes - 1)
                return WatchResponse(header, [])
            if self._probes:
                self._probes -= 1
                continue
            if self._progress_notify:
                return WatchResponse(header, [])


class Observe(_Stream):
    """An async iterator of the leader's key-value of one election, each change.

    Made by :meth:`EtcdClient.observe`. The first item is the current leader
    (etcd sends nothing while nobody leads, so a silent Observe cannot be
    told from a stalled one: a member that stops answering is noticed by
    gRPC's keepalive pings instead).
    """

    _method = "Observe"

    def __init__(self, transport: Transport, nursery: trio.Nursery, name: bytes) -> None:
        super().__init__(transport, nursery)
        self._name = name

    async def _open(self) -> None:
        stream, _ = await self._transport.open_stream(
            self._nursery, "Election.Observe", pb.election.LeaderRequest(name=self._name)
        )
        self._stream, self._endpoint = stream, stream.endpoint

    def __aiter__(self) -> Observe:
        return self

    async def __anext__(self) -> KeyValue:
        while True:
            try:
                response = await (await self._opened()).receive()
            except WireError as exc:
                self._fail_or_retry(exc)
                continue
            self._breaks = 0
            if response.HasField("kv"):
                return kv_of(response.kv)
