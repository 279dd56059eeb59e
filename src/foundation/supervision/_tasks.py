"""TaskSupervisor: supervised fire-and-forget tasks (replaces bare spawns)."""

from __future__ import annotations

import collections
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, TypeVarTuple, Unpack

import trio

from .. import errors, telemetry
from ._util import check_max_children, reraise_collapsed, task_name

__all__ = ["TaskFailure", "TaskSupervisor", "open_task_supervisor"]

logger = logging.getLogger("foundation.supervision")

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """One failed ``start_soon`` task, as :meth:`TaskSupervisor.failures` lists it."""

    #: The task's name.
    name: str
    #: The exception it raised.
    error: BaseException
    #: When, on the Trio clock (:func:`trio.current_time`).
    at: float


class _Task:
    __slots__ = ("name", "scope")

    def __init__(self, name: str) -> None:
        self.name = name
        self.scope = trio.CancelScope()


class _Status:
    """The ``task_status`` a :meth:`TaskSupervisor.start` task sees: records the start."""

    __slots__ = ("_real", "done")

    def __init__(self, real: trio.TaskStatus[Any]) -> None:
        self._real = real
        self.done = False

    def started(self, value: Any = None) -> None:
        self._real.started(value)
        self.done = True


class TaskSupervisor:
    """Runs tasks in one nursery; a failing task never cancels its siblings.

    Made by :func:`open_task_supervisor`; do not instantiate directly.
    """

    def __init__(
        self, name: str, nursery: trio.Nursery, max_failures: int, max_children: int | None = None
    ) -> None:
        self._name = name
        self._nursery = nursery
        self._max_children = max_children
        # One token per live task when there is a limit. trio.Semaphore hands a
        # released token straight to the oldest waiting start(), so start_soon()
        # and run() cannot take a slot from under a task that waits for one.
        self._slots = trio.Semaphore(max_children) if max_children is not None else None
        # Insertion-ordered set of the tasks started and not yet finished
        # (queued ones included, so running() sees a task right after start_soon).
        self._live: dict[_Task, None] = {}
        self._failures: collections.deque[TaskFailure] = collections.deque(maxlen=max_failures)
        self._closed = False
        self._idle: trio.Event | None = None

    @property
    def name(self) -> str:
        """The name given to :func:`open_task_supervisor`."""
        return self._name

    @property
    def max_children(self) -> int | None:
        """How many tasks may be live at once; None: no limit."""
        return self._max_children

    def __repr__(self) -> str:
        return f"<TaskSupervisor {self._name!r}: {len(self._live)} running>"

    def start_soon(
        self,
        fn: Callable[[Unpack[Ts]], Awaitable[object]],
        *args: *Ts,
        name: str | None = None,
    ) -> None:
        """Run ``await fn(*args)`` as a supervised task; does not block.

        When it raises an :class:`Exception`, the error is logged (with the
        supervisor's and the task's names), recorded in :meth:`failures` and
        emitted as ``foundation.task.fail``; sibling tasks and the block keep
        running. Cancellation and other ``BaseException``\\ s propagate as usual.

        Raises:
            TooManyChildren: ``max_children`` tasks are live; nothing was
                started (:meth:`start` waits for a free slot instead).
            RuntimeError: the ``async with`` block has already ended.
            trio.ClosedResourceError: :meth:`aclose` was called.
        """
        task = self._new_task_nowait(fn, name)
        try:
            self._nursery.start_soon(self._fire_and_forget, task, fn, args, name=task.name)
        except BaseException:
            self._finish(task)
            raise

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError(
                f"task supervisor {self._name!r} was closed with aclose(); open a new one"
            )

    def _new_task_nowait(self, fn: Callable[..., Any], name: str | None) -> _Task:
        """Take a slot (or raise TooManyChildren) and add a live task holding it."""
        self._check_open()
        if self._slots is not None:
            try:
                self._slots.acquire_nowait()
            except trio.WouldBlock:
                assert self._max_children is not None
                raise errors.TooManyChildren(self._name, self._max_children) from None
        return self._add_task(fn, name)

    def _add_task(self, fn: Callable[..., Any], name: str | None) -> _Task:
        """Add a live task; it holds the slot its caller took (released by _finish)."""
        task = _Task(name if name is not None else task_name(fn))
        self._live[task] = None
        return task

    def _finish(self, task: _Task) -> None:
        if task not in self._live:
            return  # already finished (each task gives its slot back once)
        del self._live[task]
        if self._slots is not None:
            self._slots.release()
        if not self._live and self._idle is not None:
            self._idle.set()

    async def _fire_and_forget(
        self, task: _Task, fn: Callable[..., Awaitable[object]], args: tuple[Any, ...]
    ) -> None:
        telemetry.emit("foundation.task.start", {}, {"supervisor": self._name, "task": task.name})
        try:
            with task.scope:
                await fn(*args)
        except Exception as exc:
            self._record(task, exc)
        finally:
            self._finish(task)

    async def start(
        self,
        fn: Callable[[Unpack[Ts]], Awaitable[object]],
        *args: *Ts,
        name: str | None = None,
    ) -> Any:
        """Wait for a free slot, then start ``fn(*args, task_status=...)`` as ``nursery.start``.

        Returns what the task passed to ``task_status.started()``, once it
        has. Until then an error of the task is raised here (as
        ``nursery.start`` does; it is emitted as ``foundation.task.fail``, not
        recorded in :meth:`failures`); afterwards the task is supervised as
        with :meth:`start_soon` (its failure is logged and recorded).

        Blocks while ``max_children`` tasks are live (waiters get slots in
        the order they asked); without a limit it only waits for the start.
        Cancelling the caller while it waits adds nothing; cancelling it
        while the task starts cancels the task (as ``nursery.start``).

        Raises:
            trio.ClosedResourceError: :meth:`aclose` was called (before or
                while this waited), or it cancelled the task before it started.
            RuntimeError: the ``async with`` block has already ended, or the
                task returned without calling ``task_status.started()``.
        """
        self._check_open()
        if self._slots is not None:
            await self._slots.acquire()
            if self._closed:  # while it waited
                self._slots.release()
                self._check_open()
        task = self._add_task(fn, name)
        try:
            return await self._nursery.start(self._started_task, task, fn, args, name=task.name)
        except BaseException:
            # Usually the task has finished already (it failed to start); not
            # when the nursery refused it (the block had ended).
            self._finish(task)
            raise

    async def _started_task(
        self,
        task: _Task,
        fn: Callable[..., Awaitable[object]],
        args: tuple[Any, ...],
        *,
        task_status: trio.TaskStatus[Any],
    ) -> None:
        telemetry.emit("foundation.task.start", {}, {"supervisor": self._name, "task": task.name})
        status = _Status(task_status)
        try:
            with task.scope:
                await fn(*args, task_status=status)
        except Exception as exc:
            if status.done:
                self._record(task, exc)
                return
            # nursery.start() raises it in the caller, who has it.
            telemetry.emit(
                "foundation.task.fail",
                {"at": trio.current_time()},
                {"supervisor": self._name, "task": task.name, "error": exc, "mode": "start"},
            )
            raise
        finally:
            self._finish(task)
        if not status.done and task.scope.cancelled_caught:
            raise trio.ClosedResourceError(
                f"task {task.name!r} of task supervisor {self._name!r} was cancelled"
                " before it started"
            )

    def _record(self, task: _Task, exc: Exception) -> None:
        failure = TaskFailure(task.name, exc, trio.current_time())
        self._failures.append(failure)
        logger.error(
            "task %r of task supervisor %r failed: %s: %s",
            task.name,
            self._name,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        telemetry.emit(
            "foundation.task.fail",
            {"at": failure.at},
            {"supervisor": self._name, "task": task.name, "error": exc, "mode": "start_soon"},
        )

    async def run(
        self,
        fn: Callable[[Unpack[Ts]], Awaitable[T]],
        *args: *Ts,
        timeout: float | None = None,  # noqa: ASYNC109 -- the documented API: tasks.run(timeout=)
        name: str | None = None,
    ) -> T:
        """Run ``await fn(*args)`` as a supervised task and wait for its result.

        The task runs in the supervisor's nursery (it shows in
        :meth:`running` and :meth:`cancel` reaches it). Its error is
        re-raised here as itself (and emitted as ``foundation.task.fail``,
        not recorded in :meth:`failures`: the caller has it). If the caller
        is cancelled, the task is cancelled too.

        Args:
            timeout: Seconds to wait; then the task is cancelled and
                :exc:`~foundation.errors.TaskTimeout` raised.

        Raises:
            TooManyChildren: ``max_children`` tasks are live; nothing was
                started (:meth:`start` waits for a free slot instead).
            TaskTimeout: the task did not finish within ``timeout``.
            trio.ClosedResourceError: :meth:`cancel` or :meth:`aclose`
                cancelled the task before it finished (a caller inside the
                block that :meth:`cancel` cancelled sees ``Cancelled``), or
                the supervisor was closed with :meth:`aclose`.
            RuntimeError: the ``async with`` block has already ended.
        """
        task = self._new_task_nowait(fn, name)
        done = trio.Event()
        box: list[Any] = []  # [("ok", value)] or [("error", exc)]

        async def runner() -> None:
            telemetry.emit(
                "foundation.task.start", {}, {"supervisor": self._name, "task": task.name}
            )
            try:
                with task.scope:
                    box.append(("ok", await fn(*args)))
            except Exception as exc:
                box.append(("error", exc))
                telemetry.emit(
                    "foundation.task.fail",
                    {"at": trio.current_time()},
                    {"supervisor": self._name, "task": task.name, "error": exc, "mode": "run"},
                )
            finally:
                self._finish(task)
                done.set()

        try:
            self._nursery.start_soon(runner, name=task.name)
        except BaseException:
            self._finish(task)
            raise
        try:
            if timeout is None:
                await done.wait()
            else:
                with trio.fail_after(timeout):
                    await done.wait()
        except trio.TooSlowError:
            task.scope.cancel()
            with trio.CancelScope(shield=True):
                await done.wait()
            if box and box[0][0] == "ok":  # it finished in the same tick
                return box[0][1]  # type: ignore[no-any-return]
            raise errors.TaskTimeout(task.name, timeout) from None  # type: ignore[arg-type]
        finally:
            if not done.is_set():
                # the caller was cancelled (or failed): so is the task
                task.scope.cancel()
        if not box:
            # Its scope was cancelled by cancel(); let a caller inside the
            # block see its own Cancelled first.
            await trio.lowlevel.checkpoint()
            raise trio.ClosedResourceError(
                f"task {task.name!r} of task supervisor {self._name!r} was cancelled"
                " before it finished"
            )
        kind, payload = box[0]
        if kind == "error":
            raise payload
        return payload  # type: ignore[no-any-return]

    def running(self) -> list[str]:
        """Names of the live tasks, oldest first. Sync, never blocks."""
        return [t.name for t in self._live]

    def failures(self) -> list[TaskFailure]:
        """The recorded ``start_soon`` failures, oldest first (the last ``max_failures``)."""
        return list(self._failures)

    def cancel(self) -> None:
        """Cancel every task and the body of the ``async with`` block.

        Like ``nursery.cancel_scope.cancel()``: the block then ends quietly
        once the tasks have unwound. Sync, never blocks. Use it from the
        block's ``finally`` to make leaving the block cancel the tasks instead
        of waiting for them; use :meth:`aclose` to stop the tasks but keep the
        body running.
        """
        self._nursery.cancel_scope.cancel()

    async def aclose(self) -> None:
        """Cancel every task (not the block's body) and wait until they have ended.

        Afterwards :meth:`start_soon` and :meth:`run` raise
        :exc:`trio.ClosedResourceError`; a task cancelled this way is not a
        failure, and a pending :meth:`run` raises ``ClosedResourceError``.
        Idempotent. Always checkpoints; blocks while the tasks unwind (a task
        that shields itself from cancellation keeps it waiting).
        """
        self._closed = True
        if self._live:
            self._idle = trio.Event()
            for task in list(self._live):
                task.scope.cancel()
            await self._idle.wait()
        else:
            await trio.lowlevel.checkpoint()


@asynccontextmanager
async def open_task_supervisor(
    name: str = "tasks", *, max_failures: int = 1000, max_children: int | None = None
) -> AsyncIterator[TaskSupervisor]:
    """Open a nursery of supervised tasks; yields a :class:`TaskSupervisor`.

    Entering does not block. Leaving waits for the running tasks: call
    :meth:`TaskSupervisor.cancel` (e.g. in the body's ``finally``) to cancel
    them instead, or ``await tasks.aclose()`` to cancel them and wait for
    them while the body goes on. Task failures are recorded,
    not raised; an error of the block's own body is raised as itself (not
    wrapped in an :class:`ExceptionGroup`), several as an ExceptionGroup.

    Args:
        name: Shown in logs and telemetry metadata.
        max_failures: How many failures :meth:`TaskSupervisor.failures` keeps.
        max_children: At most this many live tasks (started and not
            finished); then :meth:`~TaskSupervisor.start_soon` and
            :meth:`~TaskSupervisor.run` raise
            :exc:`~foundation.errors.TooManyChildren` and
            :meth:`~TaskSupervisor.start` waits for a free slot. None: no limit.

    Raises:
        ValueError: ``max_children`` is below 1.
        TypeError: ``max_children`` is not an int or None.

    Example::

        async with open_task_supervisor(name="coordination") as tasks:
            tasks.start_soon(announce, node, name="announce")
            leader = await tasks.run(elect, timeout=5)
    """
    limit = check_max_children(max_children)
    try:
        async with trio.open_nursery() as nursery:
            yield TaskSupervisor(name, nursery, max_failures, limit)
    except BaseExceptionGroup as group:
        reraise_collapsed(group)
