"""Supervisor: OTP-style restart strategies over Trio nurseries.

Layout of one supervisor (every task has a nursery and an owner)::

    open_supervisor()            caller's task; owns the outer nursery
      └── _serve                 one task: owns the children nursery
            ├── control loop     handles unexpected exits, one at a time
            └── children nursery (shielded once started: only the
                  ├── child 1    supervisor stops its children, in
                  └── child 2    reverse start order, each with a deadline)

Every mutation of the children (start, stop, restart, the control loop's
restart handling) runs under one :class:`trio.Lock`, so strategies see a
consistent set of children.

Crash logs: the first crash of a child with a given error is logged with its
traceback; repeats (same type, raised at the same file and line) within the
restart-intensity window (``max_seconds``) are only counted, and one summary
line is logged when the window ends or the child or the supervisor stops.
Formatting a traceback on every crash made a restart about three times as
slow (~197 us against ~60 us with the logs silenced, in the restart benchmark
of ``tests/benchmarks/test_bench_supervision.py`` on a 2-core machine), so a
crash loop must not pay it on every restart.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import weakref
from collections.abc import AsyncIterator, Hashable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from .. import errors, telemetry
from ._spec import (
    Backoff,
    ChildCounts,
    ChildInfo,
    ChildSpec,
    ChildState,
    Restart,
    Strategy,
    resolve_target,
    takes_task_status,
)
from ._tree import ChildNode, SupervisorTree
from ._util import check_max_children, reraise_collapsed, unwrap_single

if TYPE_CHECKING:
    from ..registry import Registry

__all__ = ["Supervisor", "open_supervisor", "run_supervisor", "supervisor_spec"]

logger = logging.getLogger("foundation.supervision")

S = TypeVar("S", bound="Supervisor")

_NOT_STARTED = object()
_ESCALATE = object()

#: States of a child that neither runs nor restarts: it does not count
#: against ``max_children`` (a tuple: ``in`` tests identity first, no hashing).
_DEAD = (ChildState.STOPPED, ChildState.CRASHED)

# Which supervisor holds which owner id in a shared registry. The owner of a
# ``register_as`` name is the child id (see docs/supervision.rst); a second live
# supervisor on the same registry with an equal child id would otherwise share
# that owner (and the registry treats a same-owner, same-value register as an
# idempotent update), so it gets a qualified owner instead:
# ``("foundation.supervisor", <supervisor token>, child_id)``.
_owner_claims: weakref.WeakKeyDictionary[Any, dict[Hashable, int]] = weakref.WeakKeyDictionary()
_tokens = itertools.count(1)


class _StatusProxy:
    """The ``task_status`` a child sees: records that (and what) it started."""

    __slots__ = ("_real", "_run")

    def __init__(self, real: trio.TaskStatus[Any], run: _Run) -> None:
        self._real = real
        self._run = run

    def started(self, value: Any = None) -> None:
        self._run.started = True
        self._real.started(value)


class _Run:
    """One run of a child: from start to exit."""

    __slots__ = ("done", "exc", "expected", "registered", "scope", "started")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.done = trio.Event()
        #: The supervisor stopped it (terminate, strategy, shutdown): not a crash.
        self.expected = False
        self.registered = False
        self.started = False
        self.exc: Exception | None = None


class _Repeats:
    """Crashes of one child with one error since that error was logged in full."""

    __slots__ = ("count", "last", "since")

    def __init__(self, since: float) -> None:
        #: When the crash was logged with its traceback (Trio clock).
        self.since = since
        #: Repeats since then, not logged yet.
        self.count = 0
        self.last: BaseException | None = None


def _crash_key(exc: BaseException) -> Hashable:
    """What makes two crashes "the same error": the type and where it was raised.

    The place (code object and line of the innermost traceback frame) rather
    than the message, so a message carrying a counter or a timestamp still
    groups its repeats. An error never raised (no traceback) is told apart by
    its message; a group by its members' keys too.
    """
    tb = exc.__traceback__
    where: Hashable
    if tb is None:
        where = str(exc)
    else:
        while tb.tb_next is not None:
            tb = tb.tb_next
        where = (tb.tb_frame.f_code, tb.tb_lineno)
    if isinstance(exc, BaseExceptionGroup):
        return (type(exc), where, tuple(_crash_key(e) for e in exc.exceptions))
    return (type(exc), where)


class _Child:
    __slots__ = (
        "_state",
        "crashes",
        "last_error",
        "live",
        "owner",
        "recent",
        "restarts",
        "run",
        "spec",
        "takes_status",
        "value",
    )

    def __init__(self, spec: ChildSpec, owner: Hashable, live: set[_Child]) -> None:
        self.spec = spec
        self.owner = owner
        # None for a target given by name: it is imported (and looked at) at each start.
        self.takes_status = None if isinstance(spec.target, str) else takes_task_status(spec.target)
        #: The supervisor's set of children that run or restart (max_children).
        self.live = live
        self._state = ChildState.STOPPED
        self.restarts = 0
        self.last_error: BaseException | None = None
        self.run: _Run | None = None
        self.value: Any = None
        #: Times of this child's recent restarts (for the backoff attempt number).
        self.recent: collections.deque[float] = collections.deque()
        #: Errors logged in full within the window, by :func:`_crash_key`.
        self.crashes: dict[Hashable, _Repeats] | None = None

    @property
    def state(self) -> ChildState:
        return self._state

    @state.setter
    def state(self, state: ChildState) -> None:
        # Kept in step here, so checking max_children is O(1) with 10,000 children.
        self._state = state
        if state in _DEAD:
            self.live.discard(self)
        else:
            self.live.add(self)

    def info(self) -> ChildInfo:
        return ChildInfo(self.spec.id, self.state, self.restarts, self.last_error)


class Supervisor:
    """A running supervisor; made by :func:`open_supervisor`.

    Sync methods (``which_children``, ``count_children``, ``tree``) never
    block. Async methods checkpoint and are serialized with the
    supervisor's own restart handling.
    """

    _dynamic = False

    def __init__(
        self,
        *,
        strategy: Strategy,
        max_restarts: int,
        max_seconds: float,
        registry: Registry | None,
        backoff: Backoff | None,
        name: str | None,
        max_children: int | None = None,
    ) -> None:
        if not isinstance(strategy, Strategy):
            raise TypeError(f"strategy must be a Strategy, got {strategy!r}")
        if max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {max_restarts!r}")
        if max_seconds <= 0:
            raise ValueError(f"max_seconds must be > 0, got {max_seconds!r}")
        self._token = next(_tokens)
        self._name = name if name is not None else f"supervisor-{self._token}"
        self._strategy = strategy
        self._max_restarts = max_restarts
        self._max_seconds = float(max_seconds)
        self._registry = registry
        self._backoff = backoff
        self._max_children = check_max_children(max_children)
        self._children: dict[Hashable, _Child] = {}
        #: Children that run or restart (what max_children counts).
        self._live: set[_Child] = set()
        #: Children with crash repeats counted and not summarised yet.
        self._repeating: dict[_Child, None] = {}
        self._summary_scope: trio.CancelScope | None = None
        self._restart_times: collections.deque[float] = collections.deque()
        self._lock = trio.Lock()
        self._send, self._recv = trio.open_memory_channel[Any](math.inf)
        self._nursery: trio.Nursery | None = None
        self._shield = trio.CancelScope()
        self._control_scope = trio.CancelScope()
        self._control_done = trio.Event()
        self._closing = False
        self._escalation: errors.RestartIntensityExceeded | None = None

    # -- introspection ---------------------------------------------------------
    @property
    def name(self) -> str:
        """The supervisor's name (logs, telemetry, registry metadata, tree)."""
        return self._name

    @property
    def strategy(self) -> Strategy:
        return self._strategy

    @property
    def max_children(self) -> int | None:
        """How many children may run or restart at once; None: no limit."""
        return self._max_children

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r}: {len(self._children)} children>"

    def which_children(self) -> list[ChildInfo]:
        """Every child, in start order, as frozen :class:`ChildInfo` records."""
        return [c.info() for c in self._children.values()]

    def count_children(self) -> ChildCounts:
        """Counts as OTP's ``count_children``."""
        specs = len(self._children)
        active = sum(1 for c in self._children.values() if c.run is not None)
        sups = sum(1 for c in self._children.values() if _is_supervisor(c))
        return ChildCounts(specs, active, sups, specs - sups)

    def tree(self) -> SupervisorTree:
        """A frozen snapshot of this supervisor and its nested supervisors."""
        nodes = []
        for c in self._children.values():
            sub = c.value.tree() if isinstance(c.value, Supervisor) and c.run else None
            nodes.append(ChildNode(c.spec.id, c.state, c.restarts, c.last_error, sub))
        return SupervisorTree(self._name, self._strategy.value, self._dynamic, tuple(nodes))

    # -- dynamic children --------------------------------------------------------
    async def start_child(self, spec: ChildSpec) -> Any:
        """Add ``spec`` and start it; returns once it has started and registered.

        Returns:
            The value the child passed to ``task_status.started()`` (its id
            when none), or None if it failed to start and is being restarted.

        Raises:
            ChildAlreadyExists: the supervisor already has a child with this id.
            TooManyChildren: ``max_children`` children run or restart already;
                nothing was added.
            RestartIntensityExceeded: its start failures went over the limit.
            trio.ClosedResourceError: the supervisor is shutting down.
        """
        async with self._locked():
            if spec.id in self._children:
                raise errors.ChildAlreadyExists(spec.id)
            self._check_room()
            child = self._add(spec)
            try:
                await self._launch(child)
            except trio.Cancelled:
                # The call did not complete: the spec is not kept (OTP's
                # start_child adds no child when the start fails).
                if child.run is None:
                    self._remove(child)
                raise
            return child.value if child.run is not None else None

    async def terminate_child(self, child_id: Hashable) -> None:
        """Stop a child (cancel, wait up to its ``shutdown``); keep its spec.

        Returns once it has stopped and its ``register_as`` name is gone.

        Raises:
            ChildNotFound: no child has this id.
        """
        async with self._locked():
            child = self._get(child_id)
            await self._stop(child, reason="terminated")
            self._summarise(child, trio.current_time())

    async def restart_child(self, child_id: Hashable) -> Any:
        """Start a stopped child again (a running one is stopped first).

        Counts in the child's ``restarts`` but not in the restart intensity.
        Returns what :meth:`start_child` returns.

        Raises:
            ChildNotFound: no child has this id.
            TooManyChildren: the child is stopped and ``max_children`` others
                run or restart.
        """
        async with self._locked():
            child = self._get(child_id)
            if child.state in _DEAD:
                self._check_room()
            await self._stop(child, reason="restart")
            self._summarise(child, trio.current_time())
            child.restarts += 1
            await self._launch(child)
            return child.value if child.run is not None else None

    async def delete_child(self, child_id: Hashable) -> None:
        """Drop a child's spec (stopping it first if it runs).

        Raises:
            ChildNotFound: no child has this id.
        """
        async with self._locked():
            child = self._get(child_id)
            await self._stop(child, reason="deleted")
            self._summarise(child, trio.current_time())
            self._remove(child)

    # -- internals: bookkeeping ---------------------------------------------------
    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        if self._closing or self._nursery is None:
            await trio.lowlevel.checkpoint()
            raise trio.ClosedResourceError(
                f"supervisor {self._name!r} is not running; open a new one"
            )
        async with self._lock:
            if self._closing:
                raise trio.ClosedResourceError(f"supervisor {self._name!r} is shutting down")
            yield

    def _get(self, child_id: Hashable) -> _Child:
        try:
            return self._children[child_id]
        except KeyError:
            raise errors.ChildNotFound(child_id) from None

    def _check_room(self) -> None:
        if self._max_children is not None and len(self._live) >= self._max_children:
            raise errors.TooManyChildren(self._name, self._max_children)

    def _add(self, spec: ChildSpec) -> _Child:
        if spec.register_as is not None and self._registry is None:
            raise ValueError(
                f"child {spec.id!r} has register_as={spec.register_as!r} but the supervisor"
                " has no registry; pass registry= to open_supervisor()"
            )
        child = _Child(spec, self._claim_owner(spec), self._live)
        self._children[spec.id] = child
        return child

    def _remove(self, child: _Child) -> None:
        if self._children.get(child.spec.id) is child:
            del self._children[child.spec.id]
            self._live.discard(child)
            self._repeating.pop(child, None)
            self._release_owner(child)

    def _claim_owner(self, spec: ChildSpec) -> Hashable:
        if spec.register_as is None or self._registry is None:
            return spec.id
        try:
            claims = _owner_claims.setdefault(self._registry, {})
        except TypeError:  # not weak-referenceable: no sharing check
            return spec.id
        holder = claims.setdefault(spec.id, self._token)
        if holder == self._token:
            return spec.id
        return ("foundation.supervisor", self._token, spec.id)

    def _release_owner(self, child: _Child) -> None:
        if self._registry is None or child.owner != child.spec.id:
            return
        try:
            claims = _owner_claims.get(self._registry)
        except TypeError:
            return
        if claims is not None and claims.get(child.spec.id) == self._token:
            del claims[child.spec.id]

    def _meta(self, child: _Child, **extra: Any) -> dict[str, Any]:
        return {"supervisor": self._name, "child_id": child.spec.id, **extra}

    # -- internals: one child's task ------------------------------------------------
    async def _child_task(
        self, child: _Child, run: _Run, task_status: trio.TaskStatus[Any]
    ) -> None:
        spec = child.spec
        try:
            with run.scope:
                try:
                    target = resolve_target(spec.target)
                    takes_status = child.takes_status
                    if takes_status is None:
                        takes_status = takes_task_status(target)
                    if takes_status:
                        await target(*spec.args, task_status=_StatusProxy(task_status, run))
                    else:
                        run.started = True
                        task_status.started(None)
                        await target(*spec.args)
                except Exception as exc:
                    # Its own nursery's single error, not a one-member group.
                    run.exc = unwrap_single(exc)
            if not run.started:
                if run.exc is None and not run.expected:
                    run.exc = RuntimeError(
                        f"child {spec.id!r} returned without calling task_status.started()"
                    )
                task_status.started(_NOT_STARTED)
        finally:
            if run.registered:
                with trio.CancelScope(shield=True):
                    await self._unregister(child)
            run.done.set()
        if run.started and not run.expected:
            self._send.send_nowait((child, run))

    async def _unregister(self, child: _Child) -> None:
        assert child.spec.register_as is not None
        assert self._registry is not None
        try:
            # The child's end is its owner's end: its name, and anything else
            # it registered or joined as that owner, goes (events with reason
            # "owner"). On a local backend the entries are gone before this
            # first yields (the facade writes, then checkpoints), i.e. in the
            # same scheduling step in which the child's target ended: no
            # other task can see the name point at a dead child.
            await self._registry.unregister_owner(child.owner)
        except errors.RegistryClosed:
            # A closed registry holds no names: nothing left to remove.
            logger.debug(
                "supervisor %r: registry closed before child %r was unregistered",
                self._name,
                child.spec.id,
            )

    # -- internals: start, stop, restart (lock held) ----------------------------------
    async def _launch(self, child: _Child) -> None:
        """Start ``child``; a start failure is a crash (restart policy applies)."""
        failure = await self._start(child)
        if failure is not None:
            await self._handle_exit(child, failure)

    async def _start(self, child: _Child) -> Exception | None:
        """Start one run of ``child``; return the error if it failed to start.

        Does not apply the restart policy itself (the callers loop instead of
        recursing, so a child that keeps failing cannot grow the stack).
        """
        run = _Run()
        child.run = run
        child.state = ChildState.STARTING
        try:
            return await self._start_run(child, run)
        except BaseException:
            # Cancelled (the caller of start_child gave up), or a
            # BaseException out of the child before it started: leave no
            # half-started child behind, then let it propagate.
            with trio.CancelScope(shield=True):
                if not run.done.is_set():
                    await self._stop(child, reason="start_aborted", quiet=True)
            if child.run is run:
                child.run = None
                child.state = ChildState.STOPPED
            raise

    async def _start_run(self, child: _Child, run: _Run) -> Exception | None:
        assert self._nursery is not None
        spec = child.spec
        value = await self._nursery.start(self._child_task, child, run)
        if value is _NOT_STARTED:
            child.run = None
            if run.expected:
                child.state = ChildState.STOPPED
                return None
            assert run.exc is not None
            return run.exc
        child.value = spec.id if value is None else value
        if spec.register_as is not None and self._registry is not None:
            ns, name = spec.register_as
            failure: Exception | None = None
            try:
                await self._registry.register(
                    ns,
                    name,
                    child.value,
                    {"restarts": child.restarts, "supervisor": self._name},
                    owner=child.owner,
                )
            except Exception as exc:
                failure = exc
            if failure is not None:
                if run.done.is_set():
                    return None  # it crashed meanwhile; the control loop has that exit
                # A name it cannot take: the child failed to start (a crash).
                await self._stop(child, reason="register_failed", quiet=True)
                return failure
            run.registered = True
            if run.done.is_set():  # exited while we registered: take the name back
                with trio.CancelScope(shield=True):
                    await self._unregister(child)
        if child.run is run and not run.done.is_set():
            child.state = ChildState.RUNNING
            logger.debug("supervisor %r: child %r started", self._name, spec.id)
            telemetry.emit(
                "foundation.supervisor.child.start",
                {"restarts": child.restarts},
                self._meta(child, value=child.value),
            )
        return None

    async def _stop(self, child: _Child, *, reason: str, quiet: bool = False) -> None:
        run = child.run
        if run is None:
            if child.state is not ChildState.CRASHED:
                child.state = ChildState.STOPPED
            return
        run.expected = True
        child.state = ChildState.STOPPING
        run.scope.cancel()
        with trio.CancelScope(shield=True):
            await self._wait_stopped(child, run, trio.current_time() + child.spec.shutdown)
        child.run = None
        child.state = ChildState.STOPPED
        if not quiet:
            logger.debug("supervisor %r: child %r stopped (%s)", self._name, child.spec.id, reason)
            telemetry.emit(
                "foundation.supervisor.child.exit",
                {"restarts": child.restarts},
                self._meta(child, reason=reason, error=run.exc),
            )

    async def _wait_stopped(self, child: _Child, run: _Run, deadline: float) -> None:
        """Wait (shielded by the caller) for ``run`` to end; report a slow one."""
        if not await self._wait_until(child, run, deadline):
            await run.done.wait()

    async def _wait_until(self, child: _Child, run: _Run, deadline: float) -> bool:
        """Wait for ``run`` to end until ``deadline``; report ShutdownTimeout if not."""
        with trio.move_on_at(deadline):
            await run.done.wait()
        if run.done.is_set():
            return True
        err = errors.ShutdownTimeout(child.spec.id, child.spec.shutdown)
        child.last_error = err
        logger.warning("supervisor %r: %s; still waiting", self._name, err)
        telemetry.emit(
            "foundation.supervisor.child.shutdown_timeout",
            {"timeout": child.spec.shutdown},
            self._meta(child, error=err),
        )
        return False

    async def _stop_all(self) -> None:
        """Stop every child, in reverse start order."""
        for child in reversed(list(self._children.values())):
            await self._stop(child, reason="shutdown")

    async def _handle_exit(self, child: _Child, exc: Exception | None) -> None:
        """A child ended on its own (or failed to start): apply restart policy."""
        pending = [(child, exc)]
        while pending:
            child, exc = pending.pop(0)
            pending.extend(await self._handle_one_exit(child, exc))

    async def _handle_one_exit(
        self, child: _Child, exc: Exception | None
    ) -> list[tuple[_Child, Exception | None]]:
        """Apply the policy to one exit; returns the start failures it met."""
        spec = child.spec
        if exc is not None:
            child.last_error = exc
            self._log_crash(child, exc)
            telemetry.emit(
                "foundation.supervisor.child.crash",
                {"restarts": child.restarts},
                self._meta(child, error=exc),
            )
        else:
            logger.info("supervisor %r: child %r exited normally", self._name, spec.id)
            telemetry.emit(
                "foundation.supervisor.child.exit",
                {"restarts": child.restarts},
                self._meta(child, reason="normal", error=None),
            )
        restart = spec.restart is Restart.PERMANENT or (
            spec.restart is Restart.TRANSIENT and exc is not None
        )
        if not restart:
            child.state = ChildState.STOPPED if exc is None else ChildState.CRASHED
            self._summarise(child, trio.current_time())
            if spec.restart is Restart.TEMPORARY:
                self._remove(child)
            return []
        now = trio.current_time()
        self._restart_times.append(now)
        horizon = now - self._max_seconds
        while self._restart_times and self._restart_times[0] <= horizon:
            self._restart_times.popleft()
        if len(self._restart_times) > self._max_restarts:
            await self._escalate(child, exc)
        child.state = ChildState.RESTARTING
        group = self._restart_group(child)
        for other in reversed(group):
            if other is not child:
                await self._stop(other, reason=f"{self._strategy.value} restart")
                if other.spec.restart is Restart.TEMPORARY:
                    self._remove(other)
        if self._backoff is not None:
            child.recent.append(now)
            while child.recent and child.recent[0] <= horizon:
                child.recent.popleft()
            delay = self._backoff.delay(len(child.recent))
            if delay > 0:
                await trio.sleep(delay)
        failures: list[tuple[_Child, Exception | None]] = []
        for member in group:
            if self._children.get(member.spec.id) is not member or member.run is not None:
                continue  # dropped (temporary), or already running
            member.restarts += 1
            logger.info(
                "supervisor %r: restarting child %r (restart %d)",
                self._name,
                member.spec.id,
                member.restarts,
            )
            telemetry.emit(
                "foundation.supervisor.child.restart",
                {"restarts": member.restarts},
                self._meta(member, error=member.last_error, strategy=self._strategy.value),
            )
            failure = await self._start(member)
            if failure is not None:
                # Keep starting the rest of the group: the failure is handled
                # next, as a crash, with this group's children running.
                failures.append((member, failure))
        return failures

    def _restart_group(self, child: _Child) -> list[_Child]:
        if self._strategy is Strategy.ONE_FOR_ONE:
            return [child]
        children = list(self._children.values())
        if self._strategy is Strategy.ONE_FOR_ALL:
            return [c for c in children if c is child or c.run is not None]
        at = children.index(child)
        return [child] + [c for c in children[at + 1 :] if c.run is not None]

    async def _escalate(self, child: _Child, exc: Exception | None) -> None:
        n = len(self._restart_times)
        err = errors.RestartIntensityExceeded(child.spec.id, n, self._max_seconds, self._name)
        err.__cause__ = exc
        self._summarise_all()  # the repeats that led here, before giving up
        logger.error("supervisor %r: %s; stopping all children", self._name, err)
        telemetry.emit(
            "foundation.supervisor.escalate",
            {"restarts": n, "window": self._max_seconds},
            self._meta(child, error=exc),
        )
        child.state = ChildState.CRASHED
        await self._stop_all()
        self._escalation = err
        # The supervisor's own task raises it too, so it ends the block even
        # when it happened in a start_child() call whose caller catches it.
        self._send.send_nowait((_ESCALATE, None))
        raise err

    # -- internals: crash logs -------------------------------------------------------
    def _log_crash(self, child: _Child, exc: Exception) -> None:
        """Log a crash with its traceback, or count it as a repeat of one logged.

        The logging call is lazy (the traceback is formatted by a handler,
        only if the record is emitted); the repeat path does no formatting.
        """
        now = trio.current_time()
        crashes = child.crashes
        if crashes is None:
            crashes = child.crashes = {}
        key = _crash_key(exc)
        seen = crashes.get(key)
        if seen is not None and now - seen.since < self._max_seconds:
            seen.count += 1
            seen.last = exc
            if seen.count == 1:
                self._repeating[child] = None
                self._schedule_summaries(seen.since + self._max_seconds)
            return
        self._summarise(child, now, expired_only=True)
        crashes[key] = _Repeats(now)
        logger.error(
            "supervisor %r: child %r crashed: %s: %s",
            self._name,
            child.spec.id,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )

    def _summarise(self, child: _Child, now: float, *, expired_only: bool = False) -> None:
        """Log one line per error of ``child`` repeated since its traceback; forget them.

        With ``expired_only``, only errors whose window has ended (the next
        crash with such an error is logged with its traceback again).
        """
        crashes = child.crashes
        if not crashes:
            return
        for key, seen in list(crashes.items()):
            if expired_only and now - seen.since < self._max_seconds:
                continue
            del crashes[key]
            if seen.count:
                logger.error(
                    "supervisor %r: child %r crashed %d more %s with %r in the last %.3g s"
                    " (repeats of the crash logged with its traceback before)",
                    self._name,
                    child.spec.id,
                    seen.count,
                    "time" if seen.count == 1 else "times",
                    seen.last,
                    now - seen.since,
                )
        if not any(seen.count for seen in crashes.values()):
            self._repeating.pop(child, None)

    def _summarise_all(self) -> None:
        now = trio.current_time()
        for child in list(self._repeating):
            self._summarise(child, now)

    def _schedule_summaries(self, due: float) -> None:
        """Make sure the summary of a repeat due at ``due`` is logged then."""
        if self._closing or self._nursery is None:
            return  # the supervisor is stopping: it summarises everything itself
        current = self._summary_scope
        if current is not None:
            if current.deadline <= due:
                return
            current.cancel()  # one due earlier (another child's window)
        scope = self._summary_scope = trio.CancelScope(deadline=due)
        self._nursery.start_soon(self._summaries, scope, name=f"{self._name}: crash summaries")

    async def _summaries(self, scope: trio.CancelScope) -> None:
        """Log the summaries of repeated crashes as their windows end."""
        while True:
            with scope:
                await trio.sleep_forever()
            if self._summary_scope is not scope:
                return  # replaced by an earlier one, or the supervisor stopped
            now = trio.current_time()
            for child in list(self._repeating):
                self._summarise(child, now, expired_only=True)
            due = min(
                (
                    seen.since + self._max_seconds
                    for child in self._repeating
                    for seen in (child.crashes or {}).values()
                    if seen.count
                ),
                default=None,
            )
            if due is None or self._closing:
                self._summary_scope = None
                return
            scope = self._summary_scope = trio.CancelScope(deadline=due)

    def _stop_summaries(self) -> None:
        """Log every pending summary and end the summary task (the supervisor stops)."""
        scope, self._summary_scope = self._summary_scope, None
        if scope is not None:
            scope.cancel()
        self._summarise_all()

    # -- internals: the supervisor's task ------------------------------------------
    async def _serve(self, specs: Sequence[ChildSpec], task_status: trio.TaskStatus[Any]) -> None:
        with self._shield:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    with self._control_scope:
                        await self._start_initial(specs)
                        # From here on only the supervisor stops its children
                        # (in order, with deadlines): not an outer cancellation.
                        self._shield.shield = True
                        task_status.started()
                        await self._control_loop()
                finally:
                    self._control_done.set()
                    self._stop_summaries()

    async def _start_initial(self, specs: Sequence[ChildSpec]) -> None:
        try:
            async with self._lock:
                for spec in specs:
                    if spec.id in self._children:
                        raise errors.ChildAlreadyExists(spec.id)
                    self._add(spec)
                for child in list(self._children.values()):
                    if self._children.get(child.spec.id) is child and child.run is None:
                        await self._launch(child)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._stop_all()
            raise

    async def _control_loop(self) -> None:
        lock = self._lock
        async for child, run in self._recv:
            if child is _ESCALATE:
                assert self._escalation is not None
                raise self._escalation
            # The receive has checkpointed: take a free lock without one more
            # trip through the scheduler (a restart is ~4 scheduler batches,
            # Lock.acquire() would add a fifth).
            try:
                lock.acquire_nowait()
            except trio.WouldBlock:
                await lock.acquire()
            try:
                if child.run is not run or run.expected:
                    continue  # stopped on purpose, or already handled
                child.run = None
                await self._handle_exit(child, run.exc)
            finally:
                lock.release()

    async def _shutdown(self) -> None:
        """Stop the control loop, then every child in reverse start order."""
        self._closing = True
        self._control_scope.cancel()
        await self._control_done.wait()
        async with self._lock:
            await self._stop_all()
        for child in list(self._children.values()):
            self._release_owner(child)


def _is_supervisor(child: _Child) -> bool:
    return isinstance(child.value, Supervisor) or bool(
        getattr(child.spec.target, "_foundation_supervisor", False)
    )


@asynccontextmanager
async def _run_supervisor_cm(sup: S, specs: Sequence[ChildSpec]) -> AsyncIterator[S]:
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(sup._serve, specs)
            try:
                yield sup
            finally:
                with trio.CancelScope(shield=True):
                    await sup._shutdown()
    except BaseExceptionGroup as group:
        reraise_collapsed(group)


def open_supervisor(
    children: Iterable[ChildSpec] = (),
    strategy: Strategy = Strategy.ONE_FOR_ONE,
    max_restarts: int = 3,
    max_seconds: float = 5,
    registry: Registry | None = None,
    backoff: Backoff | None = None,
    name: str | None = None,
) -> AbstractAsyncContextManager[Supervisor]:
    """Start a supervisor over ``children``; an async context manager.

    Entering blocks until every child has started, in order (each one that
    takes ``task_status`` must call ``task_status.started()`` before the next
    starts), and its ``register_as`` name is registered. Leaving blocks while
    the children are stopped in reverse start order, each cancelled and
    waited for up to its ``shutdown`` seconds (then reported as
    :exc:`~foundation.errors.ShutdownTimeout`, and still waited for).

    Args:
        children: The child specs, in start order.
        strategy: Which children restart when one must.
        max_restarts: More than this many restarts within ``max_seconds``
            stops all children and raises RestartIntensityExceeded.
        max_seconds: The sliding window, in seconds.
        registry: Where ``register_as`` names go.
        backoff: Delay restarts (exponentially, per child).
        name: Shown in logs, telemetry, registry metadata and :meth:`~Supervisor.tree`.

    Raises:
        RestartIntensityExceeded: out of the block, when the children keep
            exiting; the block's body is cancelled first.
        ChildAlreadyExists: two specs share an id.

    Exactly one non-Cancelled error ending the block is raised as itself;
    several as an ExceptionGroup.
    """
    sup = Supervisor(
        strategy=strategy,
        max_restarts=max_restarts,
        max_seconds=max_seconds,
        registry=registry,
        backoff=backoff,
        name=name,
    )
    return _run_supervisor_cm(sup, list(children))


async def run_supervisor(
    children: Sequence[ChildSpec],
    strategy: Strategy = Strategy.ONE_FOR_ONE,
    max_restarts: int = 3,
    max_seconds: float = 5,
    registry: Registry | None = None,
    backoff: Backoff | None = None,
    name: str | None = None,
    *,
    task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a supervisor until cancelled: the target of a nested supervisor child.

    ``await nursery.start(run_supervisor, specs)`` returns the
    :class:`Supervisor` once its children have started. See
    :func:`supervisor_spec` for the usual way to nest one.
    """
    async with open_supervisor(
        children, strategy, max_restarts, max_seconds, registry, backoff, name
    ) as sup:
        task_status.started(sup)
        await trio.sleep_forever()


run_supervisor._foundation_supervisor = True  # type: ignore[attr-defined]


def supervisor_spec(
    id: Hashable,
    children: Sequence[ChildSpec],
    *,
    strategy: Strategy = Strategy.ONE_FOR_ONE,
    max_restarts: int = 3,
    max_seconds: float = 5,
    registry: Registry | None = None,
    backoff: Backoff | None = None,
    name: str | None = None,
    restart: Restart = Restart.PERMANENT,
    shutdown: float = math.inf,
) -> ChildSpec:
    """A :class:`ChildSpec` whose child is a nested supervisor over ``children``.

    Its ``shutdown`` defaults to infinity (OTP's default for supervisor
    children): the nested supervisor stops its own children first, depth-first.
    """
    return ChildSpec(
        id=id,
        target=run_supervisor,
        args=(
            tuple(children),
            strategy,
            max_restarts,
            max_seconds,
            registry,
            backoff,
            name if name is not None else str(id),
        ),
        restart=restart,
        shutdown=shutdown,
    )
