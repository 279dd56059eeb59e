"""The gRPC wire: ``grpcio`` channels driven from Trio without a thread per call.

Unary calls use the future of the generated stub (``stub.Method.future``):
its done-callback, which runs on grpcio's own completion-queue thread,
reschedules the waiting Trio task through the run's ``TrioToken``. Measured
here against one etcd member, that did 13x the old JSON-gateway client at 128
concurrent tasks and 3.3x on txns of 100 puts. Cancelling the Trio task
cancels the gRPC call.

A streaming call is read by one thread (a ``trio.to_thread`` task in the
nursery the stream was opened in), which hands each message to Trio with
``run_sync_soon``; it stops taking messages while 64 wait unread, so a slow
reader pushes back on etcd through HTTP/2 flow control. grpcio consumes the
requests of a bidirectional stream (Watch, LeaseKeepAlive) on a thread of
its own, which ends with the call.

Importing this module imports ``grpc``: :func:`~foundation.etcd.open_etcd_client`
does it only when a client opens.
"""

from __future__ import annotations

import collections
import contextlib
import math
import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import trio

from .. import errors
from .._endpoints import split_endpoint
from ._proto import rpc_pb2_grpc as _rpc_grpc
from ._proto import v3election_pb2_grpc as _election_grpc
from ._proto import v3lock_pb2_grpc as _lock_grpc
from ._settings import EtcdSettings
from ._wire import METHODS, Metadata, WireError

__all__ = ["GrpcWire"]

#: Channel options. etcd's server refuses client pings more frequent than its
#: --grpc-keepalive-min-time (5 s by default: two strikes and it closes the
#: connection), so pings go every 10 s, only while calls are open; a member
#: that does not answer one within 5 s is dropped, which is what ends a
#: blocking call (Lock, Campaign) on a stalled member. Reconnecting backs off
#: at most 2 s (grpc's default grows to 120 s, far too long to notice a
#: restarted member). Retries are the transport's, not grpc's.
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.enable_retries", 0),
    ("grpc.enable_http_proxy", 0),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.max_send_message_length", 2**31 - 1),
    # Each client gets its own connections: one process's clients must not
    # share (and so fail) together, as tests with several clients assume.
    ("grpc.use_local_subchannel_pool", 1),
]

# protoc's stub modules are untyped.
rpc_pb2_grpc: Any = _rpc_grpc
v3election_pb2_grpc: Any = _election_grpc
v3lock_pb2_grpc: Any = _lock_grpc

#: Messages a stream reader hands to Trio before it waits for the reader.
STREAM_BUFFER = 64

#: Streams may be many (a watch each); they must not wait for Trio's default
#: 40-thread limiter, nor take its tokens from other code.
_STREAM_THREADS = trio.CapacityLimiter(math.inf)

#: grpc details that mean the request never left this process.
_NOT_SENT = (
    "failed to connect to all addresses",
    "dns resolution failed",
    "name resolution failure",
    "handshake failed",
    "ssl_error",
    "connection refused",
    "channel closed",
)


def _wire_error(exc: BaseException) -> WireError:
    if isinstance(exc, grpc.RpcError) and isinstance(exc, grpc.Call):
        code = exc.code()
        details = exc.details() or ""
        name = code.name if code is not None else "UNKNOWN"
    elif isinstance(exc, grpc.FutureCancelledError):
        name, details = "CANCELLED", "the call was cancelled"
    else:
        name, details = "UNKNOWN", f"{type(exc).__name__}: {exc}"
    low = details.lower()
    sent = not (name in ("UNAVAILABLE", "CANCELLED") and any(m in low for m in _NOT_SENT))
    return WireError(name, details, sent=sent)


def _read_file(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise errors.ConfigError(f"cannot read the TLS file {what}={path!r}: {exc}") from exc


class _Member:
    """One endpoint's channel and stubs, made on first use."""

    __slots__ = ("calls", "channel", "streams")

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        kv = rpc_pb2_grpc.KVStub(channel)
        lease = rpc_pb2_grpc.LeaseStub(channel)
        election = v3election_pb2_grpc.ElectionStub(channel)
        lock = v3lock_pb2_grpc.LockStub(channel)
        self.calls: dict[str, Any] = {
            "KV.Range": kv.Range,
            "KV.Put": kv.Put,
            "KV.DeleteRange": kv.DeleteRange,
            "KV.Txn": kv.Txn,
            "KV.Compact": kv.Compact,
            "Lease.LeaseGrant": lease.LeaseGrant,
            "Lease.LeaseRevoke": lease.LeaseRevoke,
            "Lease.LeaseTimeToLive": lease.LeaseTimeToLive,
            "Lease.LeaseLeases": lease.LeaseLeases,
            "Maintenance.Status": rpc_pb2_grpc.MaintenanceStub(channel).Status,
            "Auth.Authenticate": rpc_pb2_grpc.AuthStub(channel).Authenticate,
            "Lock.Lock": lock.Lock,
            "Lock.Unlock": lock.Unlock,
            "Election.Campaign": election.Campaign,
            "Election.Proclaim": election.Proclaim,
            "Election.Leader": election.Leader,
            "Election.Resign": election.Resign,
        }
        self.streams: dict[str, Any] = {
            "Watch.Watch": rpc_pb2_grpc.WatchStub(channel).Watch,
            "Lease.LeaseKeepAlive": lease.LeaseKeepAlive,
            "Election.Observe": election.Observe,
        }


class GrpcWire:
    """gRPC channels to etcd's members, one per endpoint, made lazily."""

    def __init__(self, settings: EtcdSettings) -> None:
        self._members: dict[str, _Member] = {}
        self._credentials: grpc.ChannelCredentials | None = None
        if any(split_endpoint(e)[1] for e in settings.endpoints):
            root = _read_file(settings.ca_cert, "ca_cert")
            chain = _read_file(settings.client_cert, "client_cert")
            key = _read_file(settings.client_key, "client_key")
            if chain is not None and key is None:
                key = chain  # a PEM holding both the key and the certificate
            try:
                self._credentials = grpc.ssl_channel_credentials(root, key, chain)
            except (ValueError, TypeError) as exc:  # pragma: no cover - grpc checks little
                raise errors.ConfigError(f"bad TLS files: {exc}") from exc
        self._closed = False

    def _member(self, endpoint: str) -> _Member:
        member = self._members.get(endpoint)
        if member is None:
            if self._closed:
                raise WireError("CANCELLED", "the etcd client is closed", sent=False)
            target, tls = split_endpoint(endpoint)
            if tls:
                assert self._credentials is not None
                channel = grpc.secure_channel(target, self._credentials, options=CHANNEL_OPTIONS)
            else:
                channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
            member = self._members[endpoint] = _Member(channel)
        return member

    async def unary(
        self,
        endpoint: str,
        method: str,
        request: Any,
        *,
        timeout: float | None,  # noqa: ASYNC109 -- a gRPC deadline, enforced by grpc
        metadata: Metadata,
    ) -> Any:
        call = self._member(endpoint).calls[method]
        future = call.future(request, timeout=timeout, metadata=metadata)
        token = trio.lowlevel.current_trio_token()
        task = trio.lowlevel.current_task()

        def done(_: object) -> None:
            # On grpcio's completion-queue thread (or at once, if already done).
            # (RunFinishedError: the run ended first; nobody waits any more.)
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(trio.lowlevel.reschedule, task)

        aborted = False

        def abort(_: object) -> trio.lowlevel.Abort:
            nonlocal aborted
            aborted = True
            future.cancel()
            # The done-callback still runs (a cancelled future is done) and
            # wakes the task; reporting FAILED keeps one wake-up per wait.
            return trio.lowlevel.Abort.FAILED

        future.add_done_callback(done)
        await trio.lowlevel.wait_task_rescheduled(abort)
        if aborted and future.cancelled():
            await trio.lowlevel.checkpoint()  # raises the Cancelled that aborted it
        try:
            return future.result()
        except (grpc.RpcError, grpc.FutureCancelledError) as exc:
            raise _wire_error(exc) from exc

    def open_stream(
        self,
        nursery: trio.Nursery,
        endpoint: str,
        method: str,
        request: Any,
        *,
        metadata: Metadata,
    ) -> _GrpcStream:
        _path, kind = METHODS[method]
        stub = self._member(endpoint).streams[method]
        requests: _Requests | None = None
        if kind == "bidi":
            requests = _Requests()
            call = stub(requests, metadata=metadata)
        else:
            call = stub(request, metadata=metadata)
        stream = _GrpcStream(endpoint, call, requests)
        nursery.start_soon(stream._pump, name=f"etcd {method} reader ({endpoint})")
        return stream

    def close(self) -> None:
        self._closed = True
        members, self._members = self._members, {}
        for member in members.values():
            member.channel.close()


_END = object()


class _Requests(Iterator[Any]):
    """The request iterator of a bidirectional call; grpcio reads it on its own thread."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def put(self, request: Any) -> None:
        self._queue.put(request)

    def end(self) -> None:
        self._queue.put(_END)

    def __next__(self) -> Any:
        item = self._queue.get()
        if item is _END:
            self._queue.put(_END)  # stay ended
            raise StopIteration
        return item


class _GrpcStream:
    """One streaming call; its messages are read by a thread and queued for Trio."""

    def __init__(self, endpoint: str, call: Any, requests: _Requests | None) -> None:
        self.endpoint = endpoint
        self._call = call
        self._requests = requests
        self._token = trio.lowlevel.current_trio_token()
        self._items: collections.deque[Any] = collections.deque()
        self._arrived = trio.Event()
        self._room = threading.Semaphore(STREAM_BUFFER)
        self._end: WireError | None = None
        self._cancelled = False

    def send(self, request: Any) -> None:
        if self._requests is None:
            raise RuntimeError("not a bidirectional stream")
        if not self._cancelled:
            self._requests.put(request)

    async def receive(self) -> Any:
        while not self._items:
            if self._end is not None:
                raise self._end
            if self._arrived.is_set():
                self._arrived = trio.Event()
            await self._arrived.wait()
        item = self._items.popleft()
        self._room.release()
        return item

    def cancel(self) -> None:
        if self._cancelled:
            return
        self._cancelled = True
        if self._requests is not None:
            self._requests.end()
        self._call.cancel()
        if self._end is None:
            self._end = WireError("CANCELLED", "the stream was closed", sent=True)
        self._arrived.set()

    # -- the reader ------------------------------------------------------------------
    def _deliver(self, item: Any) -> None:
        self._items.append(item)
        self._arrived.set()

    def _read(self) -> WireError:
        """On the reader thread: hand every message to Trio until the call ends."""
        try:
            for item in self._call:
                while not self._room.acquire(timeout=0.25):
                    if self._cancelled:
                        return WireError("CANCELLED", "the stream was closed")
                if self._cancelled:
                    return WireError("CANCELLED", "the stream was closed")
                try:
                    self._token.run_sync_soon(self._deliver, item)
                except trio.RunFinishedError:  # pragma: no cover - the run ended first
                    return WireError("CANCELLED", "the Trio run ended")
        except grpc.RpcError as exc:
            return _wire_error(exc)
        return WireError("UNAVAILABLE", "the member ended the stream")

    async def _pump(self) -> None:
        try:
            end = await trio.to_thread.run_sync(
                self._read, abandon_on_cancel=True, limiter=_STREAM_THREADS
            )
        finally:
            # Cancelled (the nursery is closing): ending the call ends the
            # abandoned thread promptly, and its grpcio request thread.
            if self._requests is not None:
                self._requests.end()
            self._call.cancel()
        if self._end is None:
            self._end = end
        self._arrived.set()
