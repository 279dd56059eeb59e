"""Telemetry events, in the spirit of Elixir's ``:telemetry``.

Library code calls :func:`emit` with a dotted event name, a mapping of
measurements (numbers) and a mapping of metadata; applications
:func:`attach` handlers to an event *prefix*::

    from foundation import telemetry

    def on_crash(event, measurements, metadata):
        print(event, metadata["child_id"], metadata["error"])

    telemetry.attach("my-app-crashes", "foundation.supervisor.child.crash", on_crash)

Event names are dotted strings throughout (``"foundation.task.fail"``). A
prefix matches whole segments: ``"foundation.supervisor"`` matches
``"foundation.supervisor.child.start"`` but not ``"foundation.supervisors"``;
the empty prefix ``""`` matches every event.

Handlers run synchronously, in the emitting task (or thread), in the order
they were attached. A handler that raises is logged (logger
``foundation.telemetry``) and detached; the caller of :func:`emit` never sees
the error. :func:`emit` costs one truth test when nothing is attached.

Events emitted by trio-foundation:

* ``foundation.supervisor.child.{start,exit,crash,restart,shutdown_timeout}``
* ``foundation.supervisor.escalate``
* ``foundation.task.{start,fail}``
* ``foundation.cluster.child.{start,stop,move,failed,overrun}``,
  ``foundation.cluster.node.{join,leave,fenced}`` (the distributed
  supervisor; see docs/cluster.rst)
* ``foundation.registry.{register,unregister,update}`` (each write a
  registry makes, joins and leaves included) and
  ``foundation.registry.conflict`` (an etcd registry lost a name to another
  instance while its lease was lost), emitted only while a handler is
  attached to a prefix of them: until then the registry does not even build
  the events (see :func:`has_handler` and :func:`on_change`)

All functions here are synchronous, never block and never checkpoint; they
are safe to call from any thread.
"""

from __future__ import annotations

import logging
import threading
import types
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple, TypeAlias

__all__ = [
    "Handler",
    "HandlerInfo",
    "attach",
    "attached",
    "detach",
    "emit",
    "has_handler",
    "list_handlers",
    "on_change",
]

logger = logging.getLogger("foundation.telemetry")

#: ``handler(event, measurements, metadata)``; its return value is ignored.
Handler: TypeAlias = Callable[[str, Mapping[str, float], Mapping[str, Any]], object]


class HandlerInfo(NamedTuple):
    """One attached handler, as :func:`list_handlers` reports it."""

    handler_id: str
    event_prefix: str
    handler: Handler


# Copy-on-write: writers (attach/detach, under the lock) replace the tuple;
# emit() reads one reference, so it needs no lock and sees a consistent list.
_lock = threading.Lock()
_handlers: tuple[HandlerInfo, ...] = ()
# event name -> handlers matching it. Replaced (not cleared) on every
# attach/detach, so an emit() racing a writer fills only the old dict.
_cache: dict[str, tuple[HandlerInfo, ...]] = {}
# token -> a (weak) callback run after every attach/detach (see on_change)
_change_callbacks: dict[object, Callable[[], Callable[[], object] | None]] = {}


def _matches(prefix: str, event: str) -> bool:
    if not prefix:
        return True
    return event == prefix or event.startswith(prefix + ".")


def _check_name(what: str, name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"telemetry {what} must be a dotted str, got {type(name).__name__}")
    return name


def attach(handler_id: str, event_prefix: str, handler: Handler) -> None:
    """Call ``handler`` for every event whose name starts with ``event_prefix``.

    Args:
        handler_id: A unique name for this attachment (used by :func:`detach`).
        event_prefix: Dotted prefix, matched segment by segment; ``""`` for all.
        handler: ``handler(event, measurements, metadata)``.

    Raises:
        ValueError: ``handler_id`` is already attached; detach it first.
        TypeError: ``event_prefix`` is not a str or ``handler`` is not callable.
    """
    global _handlers
    _check_name("event prefix", event_prefix)
    if not callable(handler):
        raise TypeError(f"telemetry handler must be callable, got {handler!r}")
    with _lock:
        if any(h.handler_id == handler_id for h in _handlers):
            raise ValueError(
                f"telemetry handler {handler_id!r} is already attached;"
                " detach() it first or pick another id"
            )
        _handlers = (*_handlers, HandlerInfo(handler_id, event_prefix, handler))
        _reset_cache()
    _changed()


def detach(handler_id: str) -> bool:
    """Detach the handler attached as ``handler_id``; False if there was none."""
    global _handlers
    with _lock:
        kept = tuple(h for h in _handlers if h.handler_id != handler_id)
        if len(kept) == len(_handlers):
            return False
        _handlers = kept
        _reset_cache()
    _changed()
    return True


def has_handler(event: str) -> bool:
    """True if a handler is attached to a prefix of ``event`` (so :func:`emit` would call it).

    As cheap as :func:`emit` with nobody listening: one truth test when no
    handler at all is attached, one dict lookup after the first call for
    ``event``. Code whose event is costly to build (its metadata, or the
    work that produces it) asks first.
    """
    if not _handlers:
        return False
    matching = _cache.get(event)
    if matching is None:
        matching = _matching(event)
    return bool(matching)


def on_change(callback: Callable[[], object]) -> Callable[[], None]:
    """Call ``callback()`` after every :func:`attach` and :func:`detach`; returns the undo.

    For code that pays for its events only while someone listens: it asks
    :func:`has_handler` in ``callback`` and starts (or stops) producing
    them. ``callback`` runs synchronously in the thread that attached or
    detached, after the change, never under a lock; one that raises is
    logged and dropped. A bound method is held weakly (its object may be
    collected, which ends the subscription); any other callable strongly.
    """
    if not callable(callback):
        raise TypeError(f"telemetry change callback must be callable, got {callback!r}")
    token = object()
    ref: Callable[[], Callable[[], object] | None]
    if hasattr(callback, "__self__") and hasattr(callback, "__func__"):
        func = callback.__func__
        table = _change_callbacks

        def gone(_: object) -> None:
            # Its object's end drops the entry at once (not at the next
            # attach or detach): code that makes and drops many objects (a
            # Registry each) must not grow the table. A dict pop is atomic:
            # no lock in a callback the collector may run while this thread
            # holds it; and the table is this closure's own, so it still
            # works while the interpreter shuts down.
            table.pop(token, None)

        weak = weakref.ref(callback.__self__, gone)

        def ref() -> Callable[[], object] | None:
            obj = weak()
            return None if obj is None else types.MethodType(func, obj)

    else:

        def ref() -> Callable[[], object] | None:
            return callback

    with _lock:
        _change_callbacks[token] = ref

    def undo() -> None:
        with _lock:
            _change_callbacks.pop(token, None)

    return undo


def _changed() -> None:
    with _lock:
        callbacks = list(_change_callbacks.items())
    for token, ref in callbacks:
        callback = ref()
        if callback is None:
            with _lock:
                _change_callbacks.pop(token, None)
            continue
        try:
            callback()
        except Exception:
            logger.exception("telemetry change callback %r raised and was dropped", callback)
            with _lock:
                _change_callbacks.pop(token, None)


def list_handlers(event_prefix: str = "") -> list[HandlerInfo]:
    """The handlers whose prefix is matched by, or matches, ``event_prefix``."""
    return [
        h
        for h in _handlers
        if _matches(event_prefix, h.event_prefix) or _matches(h.event_prefix, event_prefix)
    ]


@contextmanager
def attached(handler_id: str, event_prefix: str, handler: Handler) -> Iterator[None]:
    """:func:`attach` for the duration of a ``with`` block (handy in tests)."""
    attach(handler_id, event_prefix, handler)
    try:
        yield
    finally:
        detach(handler_id)


def emit(
    event: str,
    measurements: Mapping[str, float] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Call every handler attached to a prefix of ``event``.

    Never raises because of a handler: one that raises is logged with its
    traceback and detached. Cheap when nothing is attached.
    """
    handlers = _handlers
    if not handlers:
        return
    matching = _cache.get(event)
    if matching is None:
        matching = _matching(event)
    if not matching:
        return
    meas: Mapping[str, float] = measurements if measurements is not None else {}
    meta: Mapping[str, Any] = metadata if metadata is not None else {}
    for info in matching:
        try:
            info.handler(event, meas, meta)
        except Exception:
            # A broken handler must never break the code that emits;
            # it is detached so it does not fail (and log) on every event.
            logger.exception(
                "telemetry handler %r raised on event %r and was detached",
                info.handler_id,
                event,
            )
            _detach_exact(info)


def _matching(event: str) -> tuple[HandlerInfo, ...]:
    """The handlers matching ``event``, computed and cached."""
    _check_name("event name", event)
    cache = _cache
    matching = tuple(h for h in _handlers if _matches(h.event_prefix, event))
    cache[event] = matching
    return matching


def _reset_cache() -> None:
    global _cache
    _cache = {}


def _detach_exact(info: HandlerInfo) -> None:
    global _handlers
    with _lock:
        kept = tuple(h for h in _handlers if h is not info)
        if len(kept) == len(_handlers):
            return
        _handlers = kept
        _reset_cache()
    _changed()
