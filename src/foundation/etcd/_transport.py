"""Carrying calls to etcd: endpoint choice, failover, per-attempt deadlines, auth, errors.

The transport holds no etcd semantics beyond what a failure means. It sends
each call through a :class:`~foundation.etcd._wire.Wire` (gRPC, or the fake in
tests) to the current endpoint and, when the member cannot serve, moves on:

* **Per-attempt deadlines.** A member can stall (a paused process, a
  half-dead host: the connection stays open, nothing answers). With several
  endpoints, each attempt of a call that may be sent twice gets
  ``attempt_timeout`` (``min(timeout / 3, 1 s)``), well inside the call's
  ``timeout``; the next endpoint gets the rest. A call that must not be sent
  twice gets the whole remaining budget in one attempt.
* **Back-off.** A member that missed a deadline or could not serve (no
  leader, connection refused, shutting down) is skipped for a while (1 s,
  doubling per failure in a row, at most 16 s) while another endpoint
  answers; once every one failed in a row the call pauses briefly and tries
  again, until its timeout, then raises
  :class:`~foundation.errors.EtcdUnavailable`.
* **Unknown outcomes.** A write whose request may have reached a member
  (a deadline passed after sending, the connection broke, etcd said "request
  timed out" or "leader changed") is sent again only when the caller says it
  is idempotent or CAS-guarded (``idempotent=True``); otherwise the call
  raises EtcdUnavailable saying it may or may not have been applied.
  Failures that prove nothing was applied (no connection, "no leader") are
  retried for every call.
* **Leader required.** Calls carry etcd's ``hasleader`` metadata, so a
  member cut off from its leader refuses at once ("no leader") instead of
  holding the request until etcd's own request timeout.
* **Auth.** With a user and password, a token from ``Auth.Authenticate`` is
  sent as the ``token`` metadata of every call; when etcd rejects it
  (expired: simple tokens live five minutes idle), it is fetched again once
  and the call retried (a rejected request was not applied).
* **Errors.** Every gRPC status, with etcd's message, maps to the most
  specific :mod:`foundation.errors` type (:func:`map_wire_error`).
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import trio

from .. import errors, telemetry
from .._endpoints import check_endpoints
from ._settings import EtcdSettings
from ._wire import Wire, WireError, WireStream

__all__ = [
    "DEFAULT",
    "GRPC_CODES",
    "Outcome",
    "Transport",
    "check_endpoints",
    "classify",
    "map_wire_error",
]

logger = logging.getLogger("foundation.etcd")

_T = TypeVar("_T")


class _Default(enum.Enum):
    DEFAULT = "DEFAULT"


#: "The client's timeout" (``timeout=None`` means no limit, for blocking calls).
DEFAULT: Final = _Default.DEFAULT

#: gRPC status codes by name (the numbers errors carry in ``code``).
GRPC_CODES: dict[str, int] = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}


class Outcome(enum.Enum):
    """What a failed attempt means for the call."""

    #: A definite answer: raise the mapped error.
    FAIL = "fail"
    #: Nothing was applied and another member (or a later try) may serve it.
    RETRY = "retry"
    #: The request may have been applied: retry only an idempotent call.
    UNKNOWN = "unknown"
    #: The auth token was refused: fetch a new one, then retry.
    REAUTH = "reauth"


# etcd's messages (api/v3rpc/rpctypes) that say "this member cannot serve it;
# nothing was applied".
_NOT_APPLIED = (
    "etcdserver: no leader",
    "etcdserver: unhealthy cluster",
    "etcdserver: not capable",
    "etcdserver: too many requests",
    "etcdserver: rpc not supported for learner",
)
# ... and those after which a write may or may not have been applied.
_MAYBE_APPLIED = (
    "etcdserver: request timed out",  # and its ", possibly due to ..." variants
    "etcdserver: leader changed",
    "etcdserver: server stopped",
    "etcdserver: request canceled",
    "etcdserver: context deadline exceeded",
)
_TOKEN_REJECTED = (
    "etcdserver: invalid auth token",
    "etcdserver: revision of auth store is old",
    "etcdserver: user name is empty",
)
# What grpc says when a connection broke under a call.
_CONNECTION_LOST = ("stream removed", "socket closed", "connection reset", "goaway", "broken pipe")


def classify(exc: WireError) -> Outcome:
    """What ``exc`` means for the call (see :class:`Outcome`)."""
    code, low = exc.code, exc.details.lower()
    if low.startswith(("election:", "lock:")):
        # The concurrency services' own answers ("election: not leader") are
        # results, not a member in trouble.
        return Outcome.FAIL
    if not exc.sent:
        return Outcome.RETRY
    if any(m in low for m in _NOT_APPLIED):
        return Outcome.RETRY
    if any(m in low for m in _TOKEN_REJECTED):
        return Outcome.REAUTH
    if any(m in low for m in _MAYBE_APPLIED):
        return Outcome.UNKNOWN
    if code in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"):
        return Outcome.UNKNOWN
    if code in ("UNKNOWN", "INTERNAL") and any(m in low for m in _CONNECTION_LOST):
        return Outcome.UNKNOWN
    if code == "UNAUTHENTICATED":
        return Outcome.REAUTH
    return Outcome.FAIL


def map_wire_error(exc: WireError, endpoint: str | None) -> errors.EtcdError:
    """The most specific :mod:`foundation.errors` type for a failed call."""
    code, details = exc.code, exc.details
    low = details.lower()
    number = GRPC_CODES.get(code)
    message = details or code
    if low.startswith(("election:", "lock:")):
        return errors.EtcdError(message, number, endpoint)
    if "authentication failed" in low or "authentication is not enabled" in low:
        return errors.EtcdAuthError(message, number, endpoint)
    if code == "UNAUTHENTICATED" or any(m in low for m in _TOKEN_REJECTED):
        return errors.EtcdAuthError(message, number, endpoint)
    if code == "PERMISSION_DENIED" or "permission denied" in low:
        return errors.EtcdPermissionDenied(message, number, endpoint)
    if "compacted" in low:
        return errors.CompactedRevision(message, number, endpoint)
    if "lease not found" in low:
        return errors.LeaseExpired(message, number, endpoint)
    outcome = classify(exc)
    if outcome in (Outcome.RETRY, Outcome.UNKNOWN) or code == "UNAVAILABLE":
        return errors.EtcdUnavailable(message, number, endpoint)
    if code in ("INVALID_ARGUMENT", "OUT_OF_RANGE", "FAILED_PRECONDITION"):
        return errors.EtcdRequestError(message, number, endpoint)
    if code == "RESOURCE_EXHAUSTED" and "larger than max" in low:
        return errors.EtcdRequestError(message, number, endpoint)
    return errors.EtcdError(message, number, endpoint)


class Transport:
    """Sends calls through a wire with failover, deadlines and auth; see the module docstring."""

    #: Back-off of a failed member: first period, and the most it grows to.
    BACKOFF_FIRST = 1.0
    BACKOFF_MAX = 16.0

    def __init__(self, settings: EtcdSettings, wire: Wire) -> None:
        self.settings = settings
        self.endpoints: list[str] = list(settings.endpoints)
        self.timeout = settings.timeout
        #: Each attempt's deadline (None with one endpoint: nowhere to fail over to).
        self.attempt_timeout: float | None = (
            min(self.timeout / 3.0, 1.0) if len(self.endpoints) > 1 else None
        )
        self.wire = wire
        self._current = 0
        self._bad_until = [-math.inf] * len(self.endpoints)
        self._strikes = [0] * len(self.endpoints)
        self._token: str | None = None
        self._token_generation = 0
        self._auth_lock = trio.Lock()
        self._md_leader: tuple[tuple[str, str], ...] = (("hasleader", "true"),)
        self._md_plain: tuple[tuple[str, str], ...] = ()
        self.closed = False

    @property
    def current_endpoint(self) -> str:
        return self.endpoints[self._current]

    def close(self) -> None:
        """Refuse further calls and close the wire (idempotent)."""
        self.closed = True
        self.wire.close()

    def metadata(self, *, require_leader: bool = True) -> tuple[tuple[str, str], ...]:
        return self._md_leader if require_leader else self._md_plain

    def _set_token(self, token: str | None) -> None:
        self._token = token
        auth = (("token", token),) if token is not None else ()
        self._md_leader = (*auth, ("hasleader", "true"))
        self._md_plain = auth

    # -- endpoint health ---------------------------------------------------------------
    def pick(self) -> int:
        """The endpoint to try now: the current one unless it is backing off."""
        now = trio.current_time()
        n = len(self.endpoints)
        current = self._current
        if self._bad_until[current] <= now:
            return current
        for step in range(1, n):
            index = (current + step) % n
            if self._bad_until[index] <= now:
                self._switch(index)
                return index
        # Every member is backing off: the one that comes back first.
        index = min(range(n), key=self._bad_until.__getitem__)
        if index != current:
            self._switch(index)
        return index

    def _switch(self, index: int) -> None:
        before = self.endpoints[self._current]
        self._current = index
        why = "backing off"
        logger.info("etcd endpoint %s %s; now using %s", before, why, self.endpoints[index])
        telemetry.emit(
            "foundation.etcd.failover",
            {},
            {"from": before, "to": self.endpoints[index], "reason": why},
        )

    def failed(self, index: int, why: str) -> None:
        """Endpoint ``index`` could not serve: skip it for a back-off period."""
        strikes = self._strikes[index] = self._strikes[index] + 1
        backoff = min(self.BACKOFF_FIRST * 2 ** (strikes - 1), self.BACKOFF_MAX)
        self._bad_until[index] = trio.current_time() + backoff
        if len(self.endpoints) > 1:
            logger.info(
                "etcd endpoint %s failed (%s); skipped for %g s",
                self.endpoints[index],
                why,
                backoff,
            )

    def succeeded(self, index: int) -> None:
        if self._strikes[index]:
            self._strikes[index] = 0
            self._bad_until[index] = -math.inf

    def endpoint_succeeded(self, endpoint: str) -> None:
        if endpoint in self.endpoints:
            self.succeeded(self.endpoints.index(endpoint))

    def endpoint_failed(self, endpoint: str, why: str) -> None:
        """A stream on ``endpoint`` broke or stalled: back off from it."""
        if endpoint in self.endpoints:
            self.failed(self.endpoints.index(endpoint), why)

    def attempt_deadline(self, remaining: float, idempotent: bool) -> float:
        """Seconds one attempt may take when ``remaining`` are left of the call.

        Never negative: opening a stream may have used up the call's time
        (``remaining`` < 0), and Trio's timeouts refuse a negative span.
        """
        remaining = max(remaining, 0.0)
        if idempotent and self.attempt_timeout is not None:
            return min(self.attempt_timeout, remaining)
        return remaining

    async def pause_after_failures(self, failures: int, deadline: float) -> None:
        """After every endpoint failed in a row: 50 ms doubling, at most 0.5 s."""
        rounds, rest = divmod(failures, len(self.endpoints))
        if rest == 0:
            await trio.sleep_until(min(deadline, trio.current_time() + min(0.05 * 2**rounds, 0.5)))

    # -- auth ----------------------------------------------------------------------------
    async def authenticate(self) -> None:
        """Fetch a fresh token (no-op without credentials)."""
        settings = self.settings
        if settings.username is None:
            return
        generation = self._token_generation
        async with self._auth_lock:
            if generation != self._token_generation:
                return  # another task refreshed it while we waited
            self._set_token(None)
            from ._proto import rpc_pb2

            request = rpc_pb2.AuthenticateRequest(
                name=settings.username, password=settings.password or ""
            )
            response = await self.unary(
                "Auth.Authenticate", request, idempotent=True, require_leader=False, _auth=True
            )
            if not response.token:
                raise errors.EtcdAuthError(
                    "the cluster returned no token (is auth enabled?)", None, self.current_endpoint
                )
            self._set_token(response.token)
            self._token_generation += 1

    # -- unary calls ---------------------------------------------------------------------
    async def unary(
        self,
        method: str,
        request: Any,
        *,
        timeout: float | _Default | None = DEFAULT,  # noqa: ASYNC109 -- includes failover
        idempotent: bool,
        require_leader: bool = True,
        _auth: bool = False,
    ) -> Any:
        """Make ``method`` on whichever member serves it; return the response message.

        ``timeout``: seconds for the whole call, failover included (default:
        the client's); ``None`` waits without limit (Lock, Campaign), still
        failing over when a member is lost.

        Raises:
            EtcdUnavailable: no member answered in time, or the outcome of a
                non-idempotent write is unknown.
            EtcdError: etcd refused the request (a subclass says why).
        """
        # The hot path (one attempt that succeeds) reads the clock once.
        limit = self.timeout if timeout is DEFAULT else timeout
        now = trio.current_time()
        deadline = math.inf if limit is None else now + limit
        reauthed = False
        failures = 0
        last_why = "no attempt made"
        last_endpoint: str | None = None
        while True:
            if self.closed:
                raise errors.EtcdUnavailable("the etcd client is closed", None, last_endpoint)
            remaining = deadline - now
            if remaining <= 0:
                assert limit is not None
                raise errors.EtcdUnavailable(
                    f"no member answered {method} within {limit:g} s ({last_why})",
                    None,
                    last_endpoint,
                )
            index = self._current
            if self._bad_until[index] > now:
                index = self.pick()
            endpoint = last_endpoint = self.endpoints[index]
            if limit is None:
                per = None
            elif idempotent and self.attempt_timeout is not None:
                per = min(self.attempt_timeout, remaining)
            else:
                per = remaining
            try:
                response = await self.wire.unary(
                    endpoint,
                    method,
                    request,
                    timeout=per,
                    metadata=self._md_leader if require_leader else self._md_plain,
                )
            except WireError as exc:
                outcome = classify(exc)
                if outcome is Outcome.REAUTH:
                    if _auth or reauthed or self.settings.username is None:
                        raise map_wire_error(exc, endpoint) from exc
                    reauthed = True
                    await self.authenticate()
                    now = trio.current_time()
                    continue
                if outcome is Outcome.FAIL or (outcome is Outcome.UNKNOWN and not idempotent):
                    if outcome is Outcome.UNKNOWN:
                        self.failed(index, str(exc))
                        raise errors.EtcdUnavailable(
                            f"{method} on {endpoint} ended without an answer ({exc}); it may"
                            " or may not have been applied",
                            GRPC_CODES.get(exc.code),
                            endpoint,
                        ) from exc
                    raise map_wire_error(exc, endpoint) from exc
                last_why = str(exc)
                self.failed(index, last_why)
                failures += 1
                await self.pause_after_failures(failures, deadline)
                now = trio.current_time()
                continue
            if self._strikes[index]:
                self.succeeded(index)
            return response

    # -- streams ---------------------------------------------------------------------------
    async def open_stream(
        self,
        nursery: trio.Nursery,
        method: str,
        request: Any,
        *,
        first: Callable[[WireStream], Awaitable[_T]] | None = None,
        timeout: float | _Default = DEFAULT,  # noqa: ASYNC109 -- includes failover
        require_leader: bool = True,
    ) -> tuple[WireStream, _T | None]:
        """Open a stream on whichever member accepts it; return it and ``first``'s result.

        ``first(stream)`` (e.g. send a watch's create request and wait for
        "created") must finish within an attempt's deadline, or the member is
        skipped and the stream opened on the next one. Opening a stream again
        is always safe: nothing streamed yet.

        Raises:
            EtcdUnavailable: no member took the stream within ``timeout``.
            EtcdError: etcd refused the stream (a subclass says why).
        """
        limit = self.timeout if timeout is DEFAULT else timeout
        deadline = trio.current_time() + limit
        reauthed = False
        failures = 0
        last_why = "no attempt made"
        last_endpoint: str | None = None
        while True:
            if self.closed:
                raise errors.EtcdUnavailable("the etcd client is closed", None, last_endpoint)
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                raise errors.EtcdUnavailable(
                    f"no member accepted the stream {method} within {limit:g} s ({last_why})",
                    None,
                    last_endpoint,
                )
            index = self.pick()
            endpoint = last_endpoint = self.endpoints[index]
            try:
                stream = self.wire.open_stream(
                    nursery,
                    endpoint,
                    method,
                    request,
                    metadata=self._md_leader if require_leader else self._md_plain,
                )
            except WireError as exc:  # pragma: no cover - the client was closed
                raise map_wire_error(exc, endpoint) from exc
            if first is None:
                return stream, None
            try:
                with trio.fail_after(self.attempt_deadline(remaining, True)):
                    result = await first(stream)
            except trio.TooSlowError:
                stream.cancel()
                last_why = f"no answer within {self.attempt_deadline(remaining, True):g} s"
                self.failed(index, last_why)
            except WireError as exc:
                stream.cancel()
                outcome = classify(exc)
                if outcome is Outcome.REAUTH and not reauthed and self.settings.username:
                    reauthed = True
                    await self.authenticate()
                    continue
                if outcome in (Outcome.FAIL, Outcome.REAUTH):
                    raise map_wire_error(exc, endpoint) from exc
                last_why = str(exc)
                self.failed(index, last_why)
            except BaseException:
                stream.cancel()
                raise
            else:
                self.succeeded(index)
                return stream, result
            failures += 1
            await self.pause_after_failures(failures, deadline)
