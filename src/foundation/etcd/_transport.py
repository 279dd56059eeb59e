"""HTTP transport to etcd's JSON gateway: endpoints, failover, auth, error mapping.

Every gateway call is a POST with a JSON body. Calls go to the current
endpoint; a connection that cannot be made (refused, reset, timed out) or a
member that answers "unavailable" (no leader, shutting down) moves the
client to the next endpoint and the call is retried there until the
operation's timeout, then :class:`~foundation.errors.EtcdUnavailable`. A call
whose request may already have reached etcd when the connection broke is
retried only when the caller says it is idempotent.

Auth: with a user and password the transport fetches a token from
``/v3/auth/authenticate`` at open and again whenever etcd says the token is
no longer valid (simple tokens expire after five minutes idle).
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from .. import errors, telemetry
from .._endpoints import check_endpoints

if TYPE_CHECKING:
    # httpx is imported on first use, so ``import foundation`` stays light
    # for programs that never talk to etcd.
    import httpx

__all__ = ["Transport", "check_endpoints"]

logger = logging.getLogger("foundation.etcd")

# gRPC status codes, as the gateway reports them in "code".
_INVALID_ARGUMENT = 3
_DEADLINE_EXCEEDED = 4
_NOT_FOUND = 5
_PERMISSION_DENIED = 7
_FAILED_PRECONDITION = 9
_OUT_OF_RANGE = 11
_UNAVAILABLE = 14
_UNAUTHENTICATED = 16

# Messages that mean "this member cannot serve now; another may" (etcd reports
# some of them with code Unknown or DeadlineExceeded).
_RETRY_MESSAGES = (
    "no leader",
    "leader changed",
    "request timed out",
    "server stopped",
    "not capable",
    "raft: stopped",
    "too many requests",
)
_TOKEN_MESSAGES = ("invalid auth token", "user name is empty", "auth: revision in header is old")


class _Retry(Exception):
    """Internal: the member could not serve this call; try the next endpoint."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def _ssl_context(
    ca_cert: str | None, client_cert: str | None, client_key: str | None
) -> ssl.SSLContext | bool:
    if ca_cert is None and client_cert is None:
        return True
    if client_key is not None and client_cert is None:
        raise errors.ConfigError("client_key= needs client_cert= as well")
    try:
        ctx = ssl.create_default_context(cafile=ca_cert)
        if client_cert is not None:
            ctx.load_cert_chain(client_cert, client_key)
    except (OSError, ssl.SSLError) as exc:
        raise errors.ConfigError(
            f"cannot load the TLS files (ca_cert={ca_cert!r}, client_cert={client_cert!r},"
            f" client_key={client_key!r}): {exc}"
        ) from exc
    return ctx


def error_from_body(
    status: int, body: Mapping[str, Any] | None, endpoint: str, text: str = ""
) -> errors.EtcdError | _Retry:
    """Map a gateway error (v1 ``{error, code, message}`` or v2 ``{code, message}``)."""
    body = body or {}
    code = body.get("code")
    code = int(code) if isinstance(code, (int, str)) and str(code).isdigit() else None
    message = str(body.get("message") or body.get("error") or text or f"HTTP {status}")
    low = message.lower()
    if low.startswith(("election:", "lock:")):
        # The concurrency services' own answers ("election: no leader",
        # "election: not leader") are results, not a member in trouble.
        return errors.EtcdError(message, code, endpoint)
    if code == _UNAVAILABLE or any(m in low for m in _RETRY_MESSAGES):
        return _Retry(message)
    if "authentication failed" in low:
        return errors.EtcdAuthError(message, code, endpoint)
    if code == _PERMISSION_DENIED or "permission denied" in low:
        return errors.EtcdPermissionDenied(message, code, endpoint)
    if code == _UNAUTHENTICATED or any(m in low for m in _TOKEN_MESSAGES):
        return errors.EtcdAuthError(message, code, endpoint)
    if code == _OUT_OF_RANGE or "compacted" in low:
        return errors.CompactedRevision(message, code, endpoint)
    if "lease not found" in low:
        return errors.LeaseExpired(message, code, endpoint)
    if code in (_INVALID_ARGUMENT, _FAILED_PRECONDITION, _OUT_OF_RANGE) or status == 400:
        return errors.EtcdRequestError(message, code, endpoint)
    if code == _DEADLINE_EXCEEDED:
        return _Retry(message)
    return errors.EtcdError(message, code, endpoint)


def error_from_text(status: int, text: str, endpoint: str) -> errors.EtcdError | _Retry:
    """Map a non-200 gateway answer whose body is ``text`` (JSON, or anything else)."""
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    return error_from_body(status, obj if isinstance(obj, dict) else None, endpoint, text[:200])


class Transport:
    """Posts JSON to the gateway of whichever member answers; see the module docstring."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        timeout: float,
        username: str | None,
        password: str | None,
        ca_cert: str | None,
        client_cert: str | None,
        client_key: str | None,
    ) -> None:
        if (username is None) != (password is None):
            raise errors.ConfigError("etcd auth needs both username= and password=")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise errors.ConfigError(f"timeout={timeout!r}: use a number of seconds > 0")
        self.endpoints = check_endpoints(endpoints)
        self.timeout = float(timeout)
        self._current = 0
        self._username = username
        self._password = password
        self._token: str | None = None
        self._token_generation = 0
        self._auth_lock = trio.Lock()
        import httpx

        self._http = httpx.AsyncClient(
            verify=_ssl_context(ca_cert, client_cert, client_key),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            timeout=httpx.Timeout(self.timeout),
            trust_env=False,
        )
        self.closed = False

    @property
    def current_endpoint(self) -> str:
        return self.endpoints[self._current]

    async def aclose(self) -> None:
        self.closed = True
        with trio.CancelScope(shield=True):
            await self._http.aclose()

    def _headers(self, stream: bool = False) -> dict[str, str]:
        headers = {}
        if self._token is not None:
            headers["Authorization"] = self._token
        if stream:
            # Without it a watch is not cancelled when its member loses quorum
            # (etcd #10819), so a partitioned member would go silent forever.
            headers["Grpc-Metadata-hasleader"] = "true"
        return headers

    def _fail_over(self, endpoint: str, why: str) -> None:
        if self.endpoints[self._current] != endpoint or len(self.endpoints) == 1:
            return
        self._current = (self._current + 1) % len(self.endpoints)
        logger.info(
            "etcd endpoint %s failed (%s); now using %s", endpoint, why, self.current_endpoint
        )
        telemetry.emit(
            "foundation.etcd.failover",
            {},
            {"from": endpoint, "to": self.current_endpoint, "reason": why},
        )

    async def _pause_after(self, attempt: int) -> None:
        """Back off once every endpoint has failed in a row (50 ms doubling, at most 0.5 s)."""
        rounds, rest = divmod(attempt, len(self.endpoints))
        if rest == 0:
            await trio.sleep(min(0.05 * 2**rounds, 0.5))

    # -- auth ------------------------------------------------------------------
    async def authenticate(self) -> None:
        """Fetch a fresh token (no-op without credentials)."""
        if self._username is None:
            return
        generation = self._token_generation
        async with self._auth_lock:
            if generation != self._token_generation:
                return  # another task refreshed it while we waited
            self._token = None
            body = {"name": self._username, "password": self._password}
            result = await self.call(
                "/v3/auth/authenticate", body, retry_ambiguous=True, _auth=True
            )
            token = result.get("token")
            if not token:
                raise errors.EtcdAuthError(
                    "the cluster returned no token (is auth enabled?)", None, self.current_endpoint
                )
            self._token = str(token)
            self._token_generation += 1

    # -- unary calls -------------------------------------------------------------
    async def call(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        timeout: float | None = -1.0,  # noqa: ASYNC109 -- includes failover retries
        retry_ambiguous: bool = False,
        _auth: bool = False,
    ) -> dict[str, Any]:
        """POST ``body`` to ``path`` and return the decoded response.

        ``timeout``: seconds for the whole call, failover included (default:
        the client's); ``None`` waits without limit (blocking calls such as
        Campaign and Lock), still failing over on connection errors.

        Raises:
            EtcdUnavailable: no member answered in time.
            EtcdError: etcd refused the request (a subclass says why).
        """
        if self.closed:
            raise errors.EtcdUnavailable("the etcd client is closed", None, None)
        limit = self.timeout if timeout == -1.0 else timeout
        last_why = "no attempt made"
        last_endpoint: str | None = None
        reauthed = False
        with trio.move_on_after(limit if limit is not None else float("inf")) as scope:
            attempt = 0
            while True:
                endpoint = self.current_endpoint
                last_endpoint = endpoint
                try:
                    return await self._post_once(endpoint, path, body, limit, retry_ambiguous)
                except _Retry as exc:
                    last_why = exc.why
                    self._fail_over(endpoint, exc.why)
                except errors.EtcdAuthError as exc:
                    # An expired token: fetch a new one once and retry.
                    if _auth or reauthed or self._username is None or "failed" in exc.message:
                        raise
                    reauthed = True
                    await self.authenticate()
                    continue
                attempt += 1
                await self._pause_after(attempt)
        assert scope.cancelled_caught
        raise errors.EtcdUnavailable(
            f"no member answered {path} within {limit:g} s ({last_why})", None, last_endpoint
        )

    async def _post_once(
        self,
        endpoint: str,
        path: str,
        body: Mapping[str, Any],
        limit: float | None,
        retry_ambiguous: bool,
    ) -> dict[str, Any]:
        import httpx

        http_timeout = httpx.Timeout(limit, connect=min(limit or self.timeout, self.timeout))
        try:
            response = await self._http.post(
                endpoint + path, json=body, headers=self._headers(), timeout=http_timeout
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise _Retry(f"{type(exc).__name__}: {exc}") from exc
        except httpx.TransportError as exc:
            # The request may have been applied before the connection broke.
            if retry_ambiguous:
                raise _Retry(f"{type(exc).__name__}: {exc}") from exc
            raise errors.EtcdUnavailable(
                f"the connection broke during {path} ({type(exc).__name__}: {exc}); it may or"
                " may not have been applied",
                None,
                endpoint,
            ) from exc
        return self._decode(response, endpoint)

    def _decode(self, response: httpx.Response, endpoint: str) -> dict[str, Any]:
        text = response.text
        try:
            # Streaming RPCs called once (lease keepalive) answer NDJSON lines.
            first = next((line for line in text.splitlines() if line.strip()), "")
            obj = json.loads(first) if first else {}
        except ValueError:
            obj = None
        if response.status_code == 200 and isinstance(obj, dict):
            if "error" in obj and isinstance(obj["error"], dict):
                raise error_from_body(200, obj["error"], endpoint)
            result = obj.get("result", obj)
            if isinstance(result, dict):
                return result
        if response.status_code == 200:
            raise errors.EtcdError(f"unreadable answer {text[:200]!r}", None, endpoint)
        raise error_from_text(response.status_code, text, endpoint)

    # -- streams -------------------------------------------------------------
    @asynccontextmanager
    async def stream(
        self, path: str, body: Mapping[str, Any], *, connect_timeout: float | None = None
    ) -> AsyncIterator[tuple[str, AsyncIterator[dict[str, Any]]]]:
        """Open a streaming call; yields ``(endpoint, results)``.

        ``results`` yields each ``{"result": ...}`` line's payload; an
        ``{"error": ...}`` line raises the mapped error; a broken connection
        raises :class:`~foundation.errors.EtcdUnavailable`. Opening fails over
        like :meth:`call` within ``connect_timeout`` (default: the client's).
        """
        limit = self.timeout if connect_timeout is None else connect_timeout
        import httpx

        timeout = httpx.Timeout(self.timeout, read=None)
        last_why = "no attempt made"
        last_endpoint: str | None = None
        reauthed = False
        response: httpx.Response | None = None
        endpoint = self.current_endpoint
        with trio.move_on_after(limit):
            attempt = 0
            while True:
                if self.closed:
                    raise errors.EtcdUnavailable("the etcd client is closed", None, None)
                endpoint = last_endpoint = self.current_endpoint
                request = self._http.build_request(
                    "POST",
                    endpoint + path,
                    json=body,
                    headers=self._headers(stream=True),
                    timeout=timeout,
                )
                try:
                    response = await self._http.send(request, stream=True)
                except httpx.TransportError as exc:
                    # Nothing streamed yet: opening a watch again is harmless.
                    last_why = f"{type(exc).__name__}: {exc}"
                    self._fail_over(endpoint, last_why)
                else:
                    if response.status_code == 200:
                        break
                    status = response.status_code
                    text = (await response.aread()).decode("utf-8", "replace")
                    await response.aclose()
                    response = None
                    err = error_from_text(status, text, endpoint)
                    if isinstance(err, _Retry):
                        last_why = err.why
                        self._fail_over(endpoint, err.why)
                    elif (
                        isinstance(err, errors.EtcdAuthError)
                        and not reauthed
                        and self._username is not None
                    ):
                        reauthed = True
                        await self.authenticate()
                        continue
                    else:
                        raise err
                attempt += 1
                await self._pause_after(attempt)
        if response is None:
            raise errors.EtcdUnavailable(
                f"no member accepted the stream {path} within {limit:g} s ({last_why})",
                None,
                last_endpoint,
            )
        lines = self._lines(response, endpoint)
        try:
            yield endpoint, lines
        finally:
            with trio.CancelScope(shield=True):
                await lines.aclose()
                await response.aclose()

    async def _lines(
        self, response: httpx.Response, endpoint: str
    ) -> AsyncGenerator[dict[str, Any], None]:
        import httpx

        try:
            async for line in response.aiter_lines():
                if not line.strip():
                    continue  # the gateway sometimes sends a bare newline chunk
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    raise errors.EtcdError(
                        f"unreadable stream line {line[:200]!r}", None, endpoint
                    ) from exc
                if "error" in obj:
                    err = error_from_body(200, obj["error"], endpoint)
                    if isinstance(err, _Retry):
                        raise errors.EtcdUnavailable(err.why, None, endpoint)
                    raise err
                result = obj.get("result")
                if isinstance(result, dict):
                    yield result
        except httpx.TransportError as exc:
            raise errors.EtcdUnavailable(
                f"the stream broke ({type(exc).__name__}: {exc})", None, endpoint
            ) from exc
        raise errors.EtcdUnavailable("the member closed the stream", None, endpoint)

    def note_stream_failure(self, endpoint: str, why: str) -> None:
        """A stream on ``endpoint`` broke: prefer the next endpoint from now on."""
        self._fail_over(endpoint, why)
