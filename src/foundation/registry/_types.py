"""Records the registry hands out: registrations, events, stats, health.

They are immutable and shared by every backend, so code written against one
backend sees the very same types on another.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, NamedTuple, TypeAlias

__all__ = [
    "EMPTY_METADATA",
    "MISSING",
    "EventKind",
    "EventReason",
    "Health",
    "Missing",
    "Registration",
    "RegistryEvent",
    "RegistryStats",
]

#: The read-only mapping every registration without metadata shares, so an
#: entry without metadata stores no dict of its own.
EMPTY_METADATA: Mapping[Any, Any] = MappingProxyType({})


class Registration(NamedTuple):
    """One registration (or one group membership).

    ``metadata`` is a read-only view over the registry's own shallow copy:
    changing the mapping you passed in changes nothing here. For a group
    membership ``name`` is the group.
    """

    namespace: Any
    name: Any
    value: Any
    metadata: Mapping[Any, Any]
    owner: Hashable | None

    def __reduce__(self) -> tuple[Any, ...]:
        # A MappingProxyType cannot be pickled; send a plain dict and wrap it
        # again on the way in, so registrations (and errors carrying them)
        # pickle and stay read-only.
        return (_rebuild_registration, (*self[:3], dict(self.metadata), self.owner))


def _rebuild_registration(
    namespace: Any, name: Any, value: Any, metadata: dict[Any, Any], owner: Hashable | None
) -> Registration:
    return Registration(
        namespace, name, value, MappingProxyType(metadata) if metadata else EMPTY_METADATA, owner
    )


class EventKind(enum.StrEnum):
    """What happened to a key; compares equal to its lower-case string."""

    REGISTERED = "registered"
    UPDATED = "updated"
    UNREGISTERED = "unregistered"
    JOINED = "joined"
    LEFT = "left"


#: Why an entry changed (``RegistryEvent.reason``):
#:
#: * ``"explicit"``: a write by this registry instance (register, unregister,
#:   join, leave, unregister_select);
#: * ``"owner"``: its owner ended (``unregister_owner``, a ``registered()``
#:   block or a supervised child ending);
#: * ``"replaced"``: its value or metadata was replaced (``update_value``,
#:   ``update_metadata``, a re-register or a re-join);
#: * ``"remote"``: learnt from etcd, written by another instance (its lease
#:   ending included);
#: * ``"lease"``: this instance's own lease ended and the entry could not be
#:   put back under the new one (another instance took the name meanwhile).
EventReason: TypeAlias = Literal["explicit", "owner", "replaced", "remote", "lease"]


class RegistryEvent(NamedTuple):
    """A change delivered to ``subscribe`` listeners and ``watch()`` consumers.

    ``registration`` is the state after the change (for ``unregistered`` and
    ``left``: the state that was removed). ``reason`` says why it changed
    (see :data:`EventReason`); it defaults to ``"explicit"``, so two-field
    construction keeps working, and so do ``ev.kind``, ``ev[0]`` and
    ``ev[1]``. Unpack as ``kind, reg, *_ = ev``.
    """

    kind: EventKind
    registration: Registration
    reason: EventReason = "explicit"

    def __repr__(self) -> str:
        return f"RegistryEvent(kind={self[0]!r}, registration={self[1]!r}, reason={self.reason!r})"

    @property
    def namespace(self) -> Any:
        return self.registration.namespace

    @property
    def name(self) -> Any:
        return self.registration.name

    @property
    def value(self) -> Any:
        return self.registration.value

    @property
    def metadata(self) -> Mapping[Any, Any]:
        return self.registration.metadata

    @property
    def owner(self) -> Hashable | None:
        return self.registration.owner


def _reason(event: tuple[Any, ...]) -> Any:
    # Events built as plain 2-tuples of the class (by a compiled core that
    # predates the field) read as "explicit", the field's default.
    return event[2] if len(event) > 2 else "explicit"


RegistryEvent.reason = property(  # type: ignore[assignment]
    _reason, doc="Why the entry changed (see EventReason); default 'explicit'."
)


class Missing(enum.Enum):
    """The type of :data:`MISSING` (a singleton that pickles as itself)."""

    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"

    __str__ = __repr__


#: "No value given": ``update_value(ns, name, value, expect=MISSING)`` (the
#: default) replaces whatever value is there; any other ``expect`` is compared.
MISSING: Final = Missing.MISSING


@dataclass(frozen=True)
class RegistryStats:
    """A snapshot of a registry's counters (``registry.stats()``)."""

    backend: str
    partitions: int
    registrations: int
    memberships: int
    namespaces: int
    #: ``lookup``/``get`` calls that found the key, and that did not.
    hits: int
    misses: int
    #: Successful writes (register, update, unregister, join, leave).
    writes: int
    #: ``register`` calls refused with ``AlreadyRegistered``.
    conflicts: int
    closed: bool
    #: Pub/sub messages a full subscriber buffer dropped (``publish``); each
    #: subscriber that missed a message counts once.
    dropped_messages: int = 0


@dataclass(frozen=True)
class Health:
    """The answer of ``registry.health_check()``."""

    ok: bool
    backend: str
    detail: str = ""
    #: Machine-readable facts behind ``detail`` (on etcd: ``endpoint``,
    #: ``lease_id``, ``watch_revision``, ``lease_losses``, ``last_error``...).
    details: Mapping[str, Any] = field(default_factory=lambda: EMPTY_METADATA)
