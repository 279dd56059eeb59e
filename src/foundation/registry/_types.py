"""Records the registry hands out: registrations, events, stats, health.

They are immutable and shared by every backend, so code written against one
backend sees the very same types on another.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

__all__ = [
    "EMPTY_METADATA",
    "EventKind",
    "Health",
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


class RegistryEvent(NamedTuple):
    """A change delivered to ``subscribe`` listeners and ``watch()`` consumers.

    ``registration`` is the state after the change (for ``unregistered`` and
    ``left``: the state that was removed).
    """

    kind: EventKind
    registration: Registration

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


@dataclass(frozen=True)
class Health:
    """The answer of ``registry.health_check()``."""

    ok: bool
    backend: str
    detail: str = ""
    #: Machine-readable facts behind ``detail`` (on etcd: ``endpoint``,
    #: ``lease_id``, ``watch_revision``, ``lease_losses``, ``last_error``...).
    details: Mapping[str, Any] = field(default_factory=lambda: EMPTY_METADATA)
