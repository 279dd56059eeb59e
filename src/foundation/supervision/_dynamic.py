"""DynamicSupervisor: many children started at run time, O(1) per start and stop."""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import trio

from ._spec import Backoff, ChildSpec, Strategy
from ._supervisor import Supervisor, _run_supervisor_cm

if TYPE_CHECKING:
    from ..registry import Registry

__all__ = ["DynamicSupervisor", "open_dynamic_supervisor"]


class DynamicSupervisor(Supervisor):
    """A one_for_one supervisor that starts with no children (OTP's DynamicSupervisor).

    Children come from :meth:`~Supervisor.start_child` (any spec) or :meth:`start_new`
    (the template spec with more ``args``). Starting, terminating and
    deleting a child are O(1); finished temporary children are dropped, so
    10,000 short-lived children leave nothing behind. With ``max_children``,
    starting one child more than that many running or restarting raises
    :exc:`~foundation.errors.TooManyChildren`. On shutdown every
    child is cancelled at once and then waited for (OTP shuts dynamic
    children down concurrently too); each still gets its own ``shutdown``
    deadline before a ShutdownTimeout is reported.
    """

    _dynamic = True

    def __init__(self, template: ChildSpec | None, **kwargs: Any) -> None:
        super().__init__(strategy=Strategy.ONE_FOR_ONE, **kwargs)
        self._template = template
        self._ids = itertools.count()

    @property
    def template(self) -> ChildSpec | None:
        """The spec :meth:`start_new` copies, if one was given."""
        return self._template

    async def start_new(
        self,
        *args: Any,
        id: Hashable | None = None,
        register_as: tuple[Hashable, Hashable] | None = None,
    ) -> Hashable:
        """Start a child from the template, with ``template.args + args``.

        Args:
            id: The child's id; default: the next integer (0, 1, 2, ...).
            register_as: Overrides the template's ``register_as``.

        Returns:
            The new child's id (once it has started and registered).

        Raises:
            TypeError: the supervisor has no template.
            ChildAlreadyExists: ``id`` is taken.
            TooManyChildren: ``max_children`` children run or restart
                already; nothing was added.
        """
        if self._template is None:
            raise TypeError(
                "start_new() needs open_dynamic_supervisor(template=...); use start_child(spec)"
            )
        child_id = next(self._ids) if id is None else id
        spec = replace(
            self._template,
            id=child_id,
            args=self._template.args + args,
            register_as=register_as if register_as is not None else self._template.register_as,
        )
        await self.start_child(spec)
        return child_id

    async def _stop_all(self) -> None:
        children = list(self._children.values())
        runs = []
        now = trio.current_time()
        for child in children:
            run = child.run
            if run is not None:
                run.expected = True
                run.scope.cancel()
                runs.append((child, run))
        runs.sort(key=lambda cr: cr[0].spec.shutdown)
        with trio.CancelScope(shield=True):
            # Deadlines first (earliest first), so each slow child is reported
            # at its own deadline; then wait for the stragglers.
            for child, run in runs:
                await self._wait_until(child, run, now + child.spec.shutdown)
            for _, run in runs:
                await run.done.wait()
        for child in children:
            await self._stop(child, reason="shutdown", quiet=True)


def open_dynamic_supervisor(
    template: ChildSpec | None = None,
    *,
    max_restarts: int = 3,
    max_seconds: float = 5,
    registry: Registry | None = None,
    backoff: Backoff | None = None,
    name: str | None = None,
    max_children: int | None = None,
) -> AbstractAsyncContextManager[DynamicSupervisor]:
    """Open a :class:`DynamicSupervisor`; an async context manager.

    Entering does not start children. Leaving cancels every child and
    waits for them (each up to its ``shutdown``, then reported and still
    waited for). Intensity, registry and backoff work as in
    :func:`~foundation.supervision.open_supervisor`.

    Args:
        template: The spec :meth:`~DynamicSupervisor.start_new` copies.
        max_children: At most this many children running or restarting
            (OTP's ``max_children``); starting one more raises
            :exc:`~foundation.errors.TooManyChildren` and adds nothing. A
            terminated child whose spec is kept does not count. None: no limit.

    Raises:
        ValueError: ``max_children`` is below 1 (or another argument is out of range).
        TypeError: ``max_children`` is not an int or None.
    """
    sup = DynamicSupervisor(
        template,
        max_restarts=max_restarts,
        max_seconds=max_seconds,
        registry=registry,
        backoff=backoff,
        name=name,
        max_children=max_children,
    )
    return _run_supervisor_cm(sup, [])
