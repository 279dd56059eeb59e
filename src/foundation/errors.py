"""Typed errors of trio-foundation.

Every error the library raises on purpose is a :class:`FoundationError`. Each
also inherits from the builtin with the same meaning, so code that already
catches ``LookupError`` or ``TypeError`` keeps working::

    FoundationError
    ├── RegistryError
    │   ├── AlreadyRegistered          (+ ValueError)
    │   ├── NotRegistered              (+ LookupError)
    │   ├── ValueMismatch              (+ ValueError)
    │   ├── InvalidKey                 (+ TypeError)
    │   ├── InvalidMetadata            (+ TypeError)
    │   ├── InvalidValue               (+ TypeError)
    │   ├── InvalidQuery               (+ ValueError)
    │   ├── RegistryClosed             (+ trio.ClosedResourceError)
    │   ├── BackendIsAsync             (+ trio.WouldBlock)
    │   ├── BackendUnavailable         (+ ImportError)
    │   └── WatchOverflow
    ├── SupervisionError
    │   ├── RestartIntensityExceeded
    │   ├── ShutdownTimeout
    │   ├── TaskTimeout                (+ TimeoutError)
    │   ├── ChildNotFound              (+ LookupError)
    │   ├── ChildAlreadyExists         (+ ValueError)
    │   ├── InvalidChildSpec           (+ TypeError)
    │   └── TooManyChildren
    ├── CoordinationError
    │   ├── LockTimeout                (+ TimeoutError)
    │   ├── LockNotHeld                (+ RuntimeError)
    │   ├── LockLost
    │   ├── LeadershipLost
    │   ├── BarrierTimeout             (+ TimeoutError)
    │   ├── BarrierAborted
    │   ├── ConsensusTimeout           (+ TimeoutError)
    │   ├── DuplicateVote              (+ ValueError)
    │   ├── UnknownParticipant         (+ LookupError)
    │   └── NodeUnreachable            (also an EtcdUnavailable, below)
    ├── EtcdError
    │   ├── EtcdUnavailable            (+ ConnectionError)
    │   │   └── NodeUnreachable        (also a CoordinationError, above)
    │   ├── EtcdAuthError              (+ PermissionError)
    │   ├── EtcdPermissionDenied       (+ PermissionError)
    │   ├── EtcdRequestError           (+ ValueError)
    │   ├── LeaseExpired
    │   ├── CompactedRevision
    │   └── MalformedRecord            (+ ValueError)
    └── ConfigError                    (+ ValueError)

Errors carry their data as attributes (``err.key``, ``err.holder``) and pass
it to ``Exception.__init__`` so they print and pickle.
"""

from __future__ import annotations

from typing import Any

import trio

from ._util import describe_owner

__all__ = [
    "AlreadyRegistered",
    "BackendIsAsync",
    "BackendUnavailable",
    "BarrierAborted",
    "BarrierTimeout",
    "ChildAlreadyExists",
    "ChildNotFound",
    "CompactedRevision",
    "ConfigError",
    "ConsensusTimeout",
    "CoordinationError",
    "DuplicateVote",
    "EtcdAuthError",
    "EtcdError",
    "EtcdPermissionDenied",
    "EtcdRequestError",
    "EtcdUnavailable",
    "FoundationError",
    "InvalidChildSpec",
    "InvalidKey",
    "InvalidMetadata",
    "InvalidQuery",
    "InvalidValue",
    "LeadershipLost",
    "LeaseExpired",
    "LockLost",
    "LockNotHeld",
    "LockTimeout",
    "MalformedRecord",
    "NodeUnreachable",
    "NotRegistered",
    "RegistryClosed",
    "RegistryError",
    "RestartIntensityExceeded",
    "ShutdownTimeout",
    "SupervisionError",
    "TaskTimeout",
    "TooManyChildren",
    "UnknownParticipant",
    "ValueMismatch",
    "WatchOverflow",
]


class FoundationError(Exception):
    """Root of every error trio-foundation raises on purpose."""


class ConfigError(FoundationError, ValueError):
    """A configuration value (argument or ``FOUNDATION_*`` variable) is invalid."""


class RegistryError(FoundationError):
    """Root of the registry's errors."""


class AlreadyRegistered(RegistryError, ValueError):
    """``register`` found the key held by another value or owner.

    Raised by ``register``/``register_nowait``; nothing was written.
    """

    #: The ``(namespace, name)`` key that is taken.
    key: tuple[Any, Any]
    #: The :class:`~foundation.registry.Registration` that holds it now.
    holder: Any

    def __init__(self, key: tuple[Any, Any], holder: Any) -> None:
        super().__init__(key, holder)
        self.key = key
        self.holder = holder

    def __str__(self) -> str:
        ns, name = self.key
        holder = self.holder
        if hasattr(holder, "value"):
            owner = getattr(holder, "owner", None)
            value = repr(holder.value)
            if len(value) > 60:
                value = value[:59] + "…"
            held = f"held by value {value}, " + (
                "unowned" if owner is None else f"owned by {describe_owner(owner)}"
            )
        else:
            held = f"held by {holder!r}"
        return (
            f"{name!r} is already registered in namespace {ns!r} ({held});"
            " unregister it first, or pick another name"
        )


class NotRegistered(RegistryError, LookupError):
    """The key has no registration (``lookup``, ``metadata``, ``update_metadata``)."""

    #: The ``(namespace, name)`` key that was not found.
    key: tuple[Any, Any]

    def __init__(self, key: tuple[Any, Any]) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        ns, name = self.key
        return (
            f"{name!r} is not registered in namespace {ns!r}; use get() for a"
            " default, or wait_for() to block until it appears"
        )


class ValueMismatch(RegistryError, ValueError):
    """``update_value(..., expect=...)`` found another value than expected.

    The compare-and-set failed: someone changed the value since you read
    it; nothing was written. Read the value again (``lookup``) and decide
    anew. On etcd ``actual`` is what etcd held at that moment (read there,
    not from the possibly stale local view).
    """

    #: The ``(namespace, name)`` key that was not updated.
    key: tuple[Any, Any]
    #: The value the caller expected (``expect=``).
    expected: Any
    #: The value the registry held instead.
    actual: Any

    def __init__(self, key: tuple[Any, Any], expected: Any, actual: Any) -> None:
        super().__init__(key, expected, actual)
        self.key = key
        self.expected = expected
        self.actual = actual

    def __str__(self) -> str:
        ns, name = self.key
        return (
            f"{name!r} in namespace {ns!r} holds {_short(self.actual)}, not the expected"
            f" {_short(self.expected)}; nothing was written: read it again and retry"
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


class InvalidKey(RegistryError, TypeError):
    """A namespace or name cannot be used as a key.

    Unhashable objects, keys whose ``__hash__`` or ``__eq__`` raise (the
    original error is the ``__cause__``), and, on etcd, keys that are not
    portable (``str``, ``int`` or tuples of them).
    """

    #: The offending namespace or name.
    key: Any
    #: Why it was refused.
    reason: str

    def __init__(self, key: Any, reason: str) -> None:
        super().__init__(key, reason)
        self.key = key
        self.reason = reason

    def __str__(self) -> str:
        return f"invalid registry key {self.key!r}: {self.reason}"


class InvalidMetadata(RegistryError, TypeError):
    """Metadata is not a mapping (or, on etcd, not JSON); nothing was written."""

    #: The rejected metadata object.
    metadata: Any
    #: Why it was refused.
    reason: str

    def __init__(self, metadata: Any, reason: str) -> None:
        super().__init__(metadata, reason)
        self.metadata = metadata
        self.reason = reason

    def __str__(self) -> str:
        return f"invalid metadata ({type(self.metadata).__name__}): {self.reason}"


class InvalidValue(RegistryError, TypeError):
    """A value cannot be stored by this backend (on etcd: not JSON-able)."""

    #: The rejected value.
    value: Any
    #: Why it was refused.
    reason: str

    def __init__(self, value: Any, reason: str) -> None:
        super().__init__(value, reason)
        self.value = value
        self.reason = reason

    def __str__(self) -> str:
        return f"invalid value ({type(self.value).__name__}): {self.reason}"


class InvalidQuery(RegistryError, ValueError):
    """A ``select`` criterion is malformed (unknown operator, bad operand)."""

    #: The criterion that was refused.
    criterion: Any
    #: Why it was refused.
    reason: str

    def __init__(self, criterion: Any, reason: str) -> None:
        super().__init__(criterion, reason)
        self.criterion = criterion
        self.reason = reason

    def __str__(self) -> str:
        return f"invalid select criterion {self.criterion!r}: {self.reason}"


class RegistryClosed(RegistryError, trio.ClosedResourceError):
    """A write (or a wait) on a registry that was closed.

    ``unregister`` never raises it: removing from a closed registry is a no-op
    that returns ``False``.
    """

    def __init__(self, message: str = "the registry is closed; open a new one") -> None:
        super().__init__(message)


class BackendIsAsync(RegistryError, trio.WouldBlock):
    """An ``X_nowait`` write on a backend whose writes must wait (etcd).

    Use the async form (``await registry.register(...)``) instead.
    """

    def __init__(self, operation: str, backend: str) -> None:
        super().__init__(operation, backend)
        self.operation = operation
        self.backend = backend

    def __str__(self) -> str:
        return (
            f"{self.operation}_nowait() cannot run on the {self.backend!r} backend,"
            f" whose writes are asynchronous; use 'await registry.{self.operation}(...)'"
        )


class BackendUnavailable(RegistryError, ImportError):
    """The requested backend cannot be used here (e.g. native not built)."""


class WatchOverflow(RegistryError):
    """A ``watch()`` consumer fell more than ``max_buffer`` events behind.

    Events were dropped, so the consumer's view is stale: re-read the
    registry (or open a new watch with ``initial=True``) to re-sync.
    """

    #: The buffer size that was exceeded.
    max_buffer: int

    def __init__(self, max_buffer: int) -> None:
        super().__init__(max_buffer)
        self.max_buffer = max_buffer

    def __str__(self) -> str:
        return (
            f"watch fell more than {self.max_buffer} events behind and events were"
            " dropped; re-sync with watch(initial=True) or a larger max_buffer"
        )


class SupervisionError(FoundationError):
    """Root of the errors of :mod:`foundation.supervision`."""


class RestartIntensityExceeded(SupervisionError):
    """A supervisor restarted its children more than ``max_restarts`` times in
    ``max_seconds``; it stopped them all (reverse start order) and gave up.

    Raised out of ``open_supervisor``/``open_dynamic_supervisor`` to the parent
    (a parent supervisor sees it as the crash of its child supervisor). The
    child's last error is the ``__cause__``.
    """

    #: The id of the child whose exit went over the limit.
    child_id: Any
    #: Restarts counted in the window, this one included.
    restarts: int
    #: The window, in seconds (``max_seconds``).
    window: float
    #: The supervisor's name.
    supervisor: str | None

    def __init__(
        self, child_id: Any, restarts: int, window: float, supervisor: str | None = None
    ) -> None:
        super().__init__(child_id, restarts, window, supervisor)
        self.child_id = child_id
        self.restarts = restarts
        self.window = window
        self.supervisor = supervisor

    def __str__(self) -> str:
        who = f"supervisor {self.supervisor!r}" if self.supervisor else "the supervisor"
        return (
            f"{who} gave up after child {self.child_id!r} made {self.restarts} restarts"
            f" within {self.window:g} s; fix the crash (see __cause__), or raise"
            " max_restarts/max_seconds or add a backoff"
        )


class ShutdownTimeout(SupervisionError):
    """A child was still running ``shutdown`` seconds after it was cancelled.

    Not raised: the supervisor records it as the child's ``last_error``, logs
    it and emits ``foundation.supervisor.child.shutdown_timeout``, then keeps
    waiting, since Trio cannot abandon a task (the child shields itself).
    """

    #: The id of the slow child.
    child_id: Any
    #: Its ``ChildSpec.shutdown``, in seconds.
    timeout: float

    def __init__(self, child_id: Any, timeout: float) -> None:
        super().__init__(child_id, timeout)
        self.child_id = child_id
        self.timeout = timeout

    def __str__(self) -> str:
        return (
            f"child {self.child_id!r} did not stop within {self.timeout:g} s of being"
            " cancelled; do not shield long work from cancellation, or raise its shutdown"
        )


class TaskTimeout(SupervisionError, TimeoutError):
    """``TaskSupervisor.run(..., timeout=t)``: the task did not finish in time.

    The task was cancelled before this was raised.
    """

    #: The task's name.
    name: str
    #: The timeout, in seconds.
    timeout: float

    def __init__(self, name: str, timeout: float) -> None:
        super().__init__(name, timeout)
        self.name = name
        self.timeout = timeout

    def __str__(self) -> str:
        return (
            f"task {self.name!r} did not finish within {self.timeout:g} s and was"
            " cancelled; raise the timeout or make the task faster"
        )


class ChildNotFound(SupervisionError, LookupError):
    """No child with this id (``terminate_child``, ``restart_child``, ``delete_child``)."""

    #: The id that was not found.
    child_id: Any

    def __init__(self, child_id: Any) -> None:
        super().__init__(child_id)
        self.child_id = child_id

    def __str__(self) -> str:
        return (
            f"no child {self.child_id!r} in this supervisor; see which_children()"
            " for the ids, or start_child() it first"
        )


class ChildAlreadyExists(SupervisionError, ValueError):
    """``start_child`` with an id the supervisor already has."""

    #: The id that is taken.
    child_id: Any

    def __init__(self, child_id: Any) -> None:
        super().__init__(child_id)
        self.child_id = child_id

    def __str__(self) -> str:
        return (
            f"the supervisor already has a child {self.child_id!r}; use"
            " restart_child(), or delete_child() it first, or pick another id"
        )


class InvalidChildSpec(SupervisionError, TypeError):
    """A child spec that cannot travel between processes (``foundation.cluster``).

    Raised by the distributed supervisor's ``start_child`` (and by opening it
    with such static ``children``) before anything is written: a target that
    no other process can import by name (a lambda, a closure, a nested
    function, a bound method, a ``functools.partial``), ``args`` or a
    ``register_as`` that are not JSON, or an id that is not a portable key
    (``str``, ``int`` or tuples of them).
    """

    #: The spec's id.
    child_id: Any
    #: What is wrong with it.
    reason: str

    def __init__(self, child_id: Any, reason: str) -> None:
        super().__init__(child_id, reason)
        self.child_id = child_id
        self.reason = reason

    def __str__(self) -> str:
        return f"child spec {self.child_id!r} cannot be distributed: {self.reason}"


class TooManyChildren(SupervisionError):
    """The supervisor already runs ``max_children`` children (OTP's ``{error, max_children}``).

    Raised by ``start_child``/``start_new``/``restart_child`` of a dynamic
    supervisor and by ``start_soon``/``run`` of a task supervisor opened with
    ``max_children``; nothing was added or started. Children running or
    restarting count; a terminated child whose spec is kept does not. A task
    supervisor's ``await start()`` waits for a free slot instead of raising.
    """

    #: The supervisor's (or task supervisor's) name.
    supervisor: str
    #: Its ``max_children``.
    limit: int

    def __init__(self, supervisor: str, limit: int) -> None:
        super().__init__(supervisor, limit)
        self.supervisor = supervisor
        self.limit = limit

    def __str__(self) -> str:
        return (
            f"supervisor {self.supervisor!r} already runs max_children={self.limit} children;"
            " stop one first, raise max_children, or (task supervisor) await start()"
            " to wait for a free slot"
        )


class CoordinationError(FoundationError):
    """Root of the errors of :mod:`foundation.coordination`."""


class LockTimeout(CoordinationError, TimeoutError):
    """A lock, semaphore slot or read/write hold was not granted within its timeout.

    Raised by entering the ``async with`` of ``coord.lock(name, timeout=t)``,
    ``coord.semaphore(name, limit, timeout=t)`` or ``rw.read(timeout=t)`` /
    ``rw.write(timeout=t)``; the waiter has left the queue, so nothing is
    held and no later holder is delayed by it.
    """

    #: The lock's (semaphore's, read/write lock's) name.
    name: str
    #: The timeout, in seconds.
    timeout: float
    #: What timed out: ``"lock"``, ``"semaphore"``, ``"read lock"`` or ``"write lock"``.
    kind: str

    def __init__(self, name: str, timeout: float, kind: str = "lock") -> None:
        super().__init__(name, timeout, kind)
        self.args = (name, timeout, kind)  # OSError keeps 2
        self.name = name
        self.timeout = timeout
        self.kind = kind

    def __reduce__(self) -> tuple[Any, ...]:
        # TimeoutError is an OSError, whose constructor keeps only the first two
        # of more than two arguments in ``args``; rebuild from the fields.
        return (type(self), (self.name, self.timeout, self.kind))

    def __str__(self) -> str:
        status = " see coord.lock_status() for the holder, or" if self.kind == "lock" else ""
        return (
            f"{self.kind} {self.name!r} was not acquired within {self.timeout:g} s;{status}"
            " raise the timeout"
        )


class LockNotHeld(CoordinationError, RuntimeError):
    """A lock (semaphore slot, read/write hold) was released by someone who does not hold it.

    Raised by ``held.release()`` called from another task than the one that
    acquired it, or after it was already released. Unlike :class:`LockLost`,
    the lock is untouched: the real holder still has it.
    """

    #: The lock's (semaphore's, read/write lock's) name.
    name: str
    #: Why the release was refused.
    reason: str
    #: What was released: ``"lock"``, ``"semaphore"``, ``"read lock"`` or ``"write lock"``.
    kind: str

    def __init__(self, name: str, reason: str, kind: str = "lock") -> None:
        super().__init__(name, reason, kind)
        self.name = name
        self.reason = reason
        self.kind = kind

    def __str__(self) -> str:
        return (
            f"cannot release {self.kind} {self.name!r}: {self.reason}; only the task that"
            f" acquired a {self.kind} releases it (leave its 'async with' block)"
        )


class LockLost(CoordinationError):
    """The lock (semaphore slot, read/write hold) was taken away while held.

    On etcd: its lease ended (expired while etcd was out of reach, or
    revoked) or its key was deleted; locally: a lock's ``ttl=`` ran out.
    Raised out of the holder's ``async with`` block, which was cancelled.
    Whatever the block did after that may overlap with the next holder: use
    the fencing token to reject stale writes.
    """

    #: The lock's (semaphore's, read/write lock's) name.
    name: str
    #: The fencing token the holder had.
    token: int
    #: What was lost: ``"lock"``, ``"semaphore"``, ``"read lock"`` or ``"write lock"``.
    kind: str

    def __init__(self, name: str, token: int, kind: str = "lock") -> None:
        super().__init__(name, token, kind)
        self.name = name
        self.token = token
        self.kind = kind

    def __str__(self) -> str:
        return (
            f"{self.kind} {self.name!r} (fencing token {self.token}) was lost while held and"
            " the block was cancelled; reacquire it, and reject writes with older tokens"
        )


class LeadershipLost(CoordinationError):
    """Leadership ended while the ``async with election.campaign(...)`` block ran.

    Raised out of the leader's block, which was cancelled, when another task
    called ``election.resign()`` (or, on etcd, the lease expired).
    """

    #: The election group.
    group: str
    #: The candidate that was leader.
    candidate: str
    #: The term it lost.
    term: int

    def __init__(self, group: str, candidate: str, term: int) -> None:
        super().__init__(group, candidate, term)
        self.group = group
        self.candidate = candidate
        self.term = term

    def __str__(self) -> str:
        return (
            f"candidate {self.candidate!r} lost leadership of {self.group!r} (term"
            f" {self.term}) and its block was cancelled; campaign again to lead"
        )


class BarrierTimeout(CoordinationError, TimeoutError):
    """``barrier.wait(timeout=t)`` timed out before all ``parties`` arrived.

    The timed-out arrival was withdrawn; the others keep waiting.
    """

    #: Arrivals of that round when it timed out, the timed-out one included.
    reached: int
    #: Arrivals needed to release the round.
    parties: int

    def __init__(self, reached: int, parties: int) -> None:
        super().__init__(reached, parties)
        self.reached = reached
        self.parties = parties

    def __str__(self) -> str:
        return (
            f"barrier timed out with {self.reached} of {self.parties} parties arrived;"
            " check that every party calls wait(), or raise the timeout"
        )


class BarrierAborted(CoordinationError):
    """The round was aborted (``barrier.abort()``) while this party waited.

    Raised out of ``barrier.wait()`` in every party of the aborted round; the
    next ``wait()`` starts a fresh round.
    """

    #: The barrier's name.
    name: str
    #: The aborted round (generation number).
    generation: int

    def __init__(self, name: str, generation: int) -> None:
        super().__init__(name, generation)
        self.name = name
        self.generation = generation

    def __str__(self) -> str:
        return (
            f"round {self.generation} of barrier {self.name!r} was aborted; call"
            " wait() again to join the next round"
        )


class ConsensusTimeout(CoordinationError, TimeoutError):
    """``coord.consensus(..., timeout=t)`` reached no decision within ``t`` seconds."""

    #: The ballot's id.
    consensus_id: str
    #: The timeout, in seconds.
    timeout: float
    #: Votes received so far.
    received: int
    #: Participants of the ballot.
    participants: int

    def __init__(self, consensus_id: str, timeout: float, received: int, participants: int) -> None:
        super().__init__(consensus_id, timeout, received, participants)
        self.args = (consensus_id, timeout, received, participants)  # OSError keeps 2
        self.consensus_id = consensus_id
        self.timeout = timeout
        self.received = received
        self.participants = participants

    def __reduce__(self) -> tuple[Any, ...]:
        # TimeoutError is an OSError, whose constructor keeps only the first two
        # of more than two arguments in ``args``; rebuild from the fields.
        return (
            type(self),
            (self.consensus_id, self.timeout, self.received, self.participants),
        )

    def __str__(self) -> str:
        return (
            f"consensus {self.consensus_id!r} reached no decision within {self.timeout:g} s"
            f" ({self.received} of {self.participants} votes); make sure every participant"
            " calls vote(), or lower the quorum or raise the timeout"
        )


class DuplicateVote(CoordinationError, ValueError):
    """A participant voted twice on the same ballot; the second vote was ignored."""

    #: The ballot's id.
    consensus_id: str
    #: The participant that voted again.
    participant: str

    def __init__(self, consensus_id: str, participant: str) -> None:
        super().__init__(consensus_id, participant)
        self.consensus_id = consensus_id
        self.participant = participant

    def __str__(self) -> str:
        return (
            f"{self.participant!r} already voted on consensus {self.consensus_id!r};"
            " each participant votes once (the first vote stands)"
        )


class UnknownParticipant(CoordinationError, LookupError):
    """``vote()`` by a name that is not among the ballot's participants."""

    #: The ballot's id.
    consensus_id: str
    #: The name that is not a participant.
    participant: str

    def __init__(self, consensus_id: str, participant: str) -> None:
        super().__init__(consensus_id, participant)
        self.consensus_id = consensus_id
        self.participant = participant

    def __str__(self) -> str:
        return (
            f"{self.participant!r} is not a participant of consensus"
            f" {self.consensus_id!r}; vote with one of the names passed to consensus()"
        )


class EtcdError(FoundationError):
    """Root of the errors of :mod:`foundation.etcd` (an etcd member said no, or none answered).

    ``code`` is the gRPC status code etcd gave (``None`` when no member
    answered) and ``endpoint`` the member that gave it.
    """

    #: What went wrong, as etcd (or the transport) said it.
    message: str
    #: The gRPC status code, or None.
    code: int | None
    #: The endpoint that answered (or failed last), or None.
    endpoint: str | None

    def __init__(self, message: str, code: int | None = None, endpoint: str | None = None) -> None:
        super().__init__(message, code, endpoint)
        self.args = (message, code, endpoint)  # ConnectionError would keep only two
        self.message = message
        self.code = code
        self.endpoint = endpoint

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.code, self.endpoint))

    def __str__(self) -> str:
        where = f" (from {self.endpoint})" if self.endpoint else ""
        return f"etcd: {self.message}{where}"


class EtcdUnavailable(EtcdError, ConnectionError):
    """No etcd member answered within the operation's timeout.

    Every endpoint was tried (connection refused, reset, no leader, timed
    out). A write that failed this way may or may not have been applied when
    the connection broke after sending; the registry and coordinator make
    their writes idempotent for that reason.
    """

    def __str__(self) -> str:
        where = f" (last tried {self.endpoint})" if self.endpoint else ""
        return (
            f"etcd unavailable: {self.message}{where}; check that the members are"
            " running and reachable, or list more endpoints"
        )


class NodeUnreachable(EtcdUnavailable, CoordinationError):
    """A coordinator call failed because the cluster could not be reached.

    Raised by the etcd coordinator (opening it included) where the etcd
    client raised :class:`EtcdUnavailable`, which is its ``__cause__``; it
    carries the same fields, so it is caught as an :class:`EtcdUnavailable`
    (and a :class:`ConnectionError`) as well as a :class:`CoordinationError`.
    Never raised by the local coordinator. A lost lease is not this error:
    a holder whose lease ended gets :class:`LockLost` or :class:`LeadershipLost`.
    """

    @property
    def node(self) -> str | None:
        """The endpoint that failed last (an alias of :attr:`endpoint`), or None."""
        return self.endpoint

    def __str__(self) -> str:
        where = f" (last tried {self.endpoint})" if self.endpoint else ""
        return (
            f"the coordination cluster is unreachable: {self.message}{where}; check that"
            " the etcd members are running and reachable, or list more endpoints"
        )


class EtcdAuthError(EtcdError, PermissionError):
    """etcd refused the credentials (wrong user or password, or auth is off)."""

    def __str__(self) -> str:
        return (
            f"etcd authentication failed: {self.message}; check username= and"
            " password= (and that auth is enabled on the cluster)"
        )


class EtcdPermissionDenied(EtcdError, PermissionError):
    """The authenticated user may not read or write the keys asked for."""

    def __str__(self) -> str:
        return (
            f"etcd permission denied: {self.message}; grant the user's role"
            " readwrite on the prefix in use (etcdctl role grant-permission --prefix)"
        )


class EtcdRequestError(EtcdError, ValueError):
    """etcd rejected the request itself (too large, too many operations, bad argument)."""


class LeaseExpired(EtcdError):
    """A lease ended (its TTL ran out or it was revoked) while it was still needed.

    Everything written with that lease is gone from etcd. The etcd registry
    does not raise it to its watchers: it puts its entries back under a new
    lease (``health_check()`` says it is doing so); a write that waited too
    long for that new lease raises it. Lock and election holders get
    ``LockLost``/``LeadershipLost`` instead.
    """

    #: The lease ID.
    lease_id: int

    def __init__(
        self, message: str, code: int | None = None, endpoint: str | None = None, lease_id: int = 0
    ) -> None:
        super().__init__(message, code, endpoint)
        self.lease_id = lease_id
        self.args = (message, code, endpoint, lease_id)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.code, self.endpoint, self.lease_id))

    def __str__(self) -> str:
        return (
            f"etcd lease {self.lease_id:x} expired: {self.message}; keys written with it"
            " are gone (a registry puts its entries back under a new lease)"
        )


class CompactedRevision(EtcdError):
    """A watch asked for a revision etcd has already compacted away.

    Re-read the keys (a range gives the current revision) and watch again
    from after it.
    """

    #: The oldest revision etcd still has.
    compact_revision: int

    def __init__(
        self,
        message: str,
        code: int | None = None,
        endpoint: str | None = None,
        compact_revision: int = 0,
    ) -> None:
        super().__init__(message, code, endpoint)
        self.compact_revision = compact_revision
        self.args = (message, code, endpoint, compact_revision)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.code, self.endpoint, self.compact_revision))


class MalformedRecord(EtcdError, ValueError):
    """A record under the prefix does not decode: a foreign writer's, or nested too deep.

    Raised by an etcd coordinator call that must read that one record (a
    counter's value, a lock holder's entry); other names are unaffected. The
    registry never raises it: it skips such records with a warning and
    counts them (``health_check().details["foreign_skipped"]``). The library
    reads back only JSON nested at most 64 levels deep, and refuses to write
    anything deeper, so a record like this was written by someone else.
    """

    #: The etcd key of the record (None when not known).
    key: bytes | None
    #: Why it does not decode.
    reason: str

    def __init__(self, key: bytes | None, reason: str) -> None:
        where = f" at {key[:120]!r}" if key is not None else ""
        super().__init__(f"the record{where} cannot be read: {reason}")
        self.args = (key, reason)
        self.key = key
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.reason))

    def __str__(self) -> str:
        return (
            f"etcd: {self.message}; it was not written by trio-foundation (or was changed"
            " by another writer): delete or rewrite it"
        )
