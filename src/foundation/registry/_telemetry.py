"""Registry telemetry: ``foundation.registry.{register,unregister,update}``, paid only when wanted.

A registry turns its change events into telemetry, which means its backend
must build those events: cheap, but not free on a write path that costs a
few hundred nanoseconds. So a :class:`RegistryTelemetry` listens to the
registry's events only while a telemetry handler is attached to a prefix of
one of its event names (:func:`foundation.telemetry.on_change` tells it when
that changes); until then the backend builds no event for it at all, and a
write costs what it costs without telemetry (the benchmark
``tests/benchmarks/test_bench_registry_telemetry.py`` shows it side by
side).

Events, one per change this registry made (``reason`` other than
``"remote"``: every instance of an etcd registry would otherwise report
every write of every other; ``watch()`` shows those):

* ``foundation.registry.register``: a name registered or a member joined;
* ``foundation.registry.update``: a value or metadata replaced (update_value,
  update_metadata, a re-register or re-join);
* ``foundation.registry.unregister``: a name or member removed, whatever
  the reason (explicit, its owner ending, a lease lost).

Measurements: ``{"count": 1.0}``. Metadata: ``registry`` (the backend's
name), ``kind`` (the event kind), ``reason``, ``member`` (True for a join
or a leave), ``namespace``, ``name`` (the group for a member), ``value``,
``owner``. ``foundation.registry.conflict`` is emitted by the etcd backend
itself (an entry lost to another instance while its lease was lost).
"""

from __future__ import annotations

from collections.abc import Callable

from .. import telemetry
from ._types import EventKind, RegistryEvent

__all__ = ["EVENT_NAMES", "RegistryTelemetry"]

_NAME_OF = {
    EventKind.REGISTERED: "foundation.registry.register",
    EventKind.JOINED: "foundation.registry.register",
    EventKind.UPDATED: "foundation.registry.update",
    EventKind.UNREGISTERED: "foundation.registry.unregister",
    EventKind.LEFT: "foundation.registry.unregister",
}
_MEMBER_KINDS = frozenset({EventKind.JOINED, EventKind.LEFT})
#: The telemetry events a registry emits from its change events.
EVENT_NAMES = (
    "foundation.registry.register",
    "foundation.registry.update",
    "foundation.registry.unregister",
)
_COUNT = {"count": 1.0}

Listener = Callable[[RegistryEvent], None]


class RegistryTelemetry:
    """Emits a registry's telemetry while a handler wants it.

    Args:
        listen: ``listen(listener) -> stop``: receive the registry's change
            events until ``stop()`` is called.
        backend_name: ``backend_name() -> str``, for the ``registry``
            metadata field (a registry's backend changes on ``migrate``).
    """

    def __init__(
        self, listen: Callable[[Listener], Callable[[], None]], backend_name: Callable[[], str]
    ) -> None:
        self._listen = listen
        self._backend_name = backend_name
        self._stop: Callable[[], None] | None = None
        self._closed = False
        # Held weakly by telemetry: a registry that is dropped unsubscribes.
        self._undo = telemetry.on_change(self._changed)
        self._changed()

    @property
    def active(self) -> bool:
        """True while this registry listens to its events for telemetry."""
        return self._stop is not None

    def _changed(self) -> None:
        wanted = not self._closed and any(telemetry.has_handler(name) for name in EVENT_NAMES)
        if wanted and self._stop is None:
            self._stop = self._listen(self._on_event)
        elif not wanted and self._stop is not None:
            stop, self._stop = self._stop, None
            stop()

    def _on_event(self, event: RegistryEvent) -> None:
        reason = event.reason
        if reason == "remote":
            return
        kind = event[0]
        name = _NAME_OF[kind]
        if not telemetry.has_handler(name):
            return
        reg = event[1]
        telemetry.emit(
            name,
            _COUNT,
            {
                "registry": self._backend_name(),
                "kind": str(kind),
                "reason": reason,
                "member": kind in _MEMBER_KINDS,
                "namespace": reg.namespace,
                "name": reg.name,
                "value": reg.value,
                "owner": reg.owner,
            },
        )

    def close(self) -> None:
        """Stop listening for good (the registry closed)."""
        self._closed = True
        self._undo()
        self._changed()
