"""Shared helpers of the supervision tests: a telemetry recorder and small children."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from foundation import telemetry


class Recorder:
    """Collects telemetry events under a prefix."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, float], dict[str, Any]]] = []

    def __call__(self, event: str, meas: Mapping[str, float], meta: Mapping[str, Any]) -> None:
        self.events.append((event, dict(meas), dict(meta)))

    def names(self, suffix: str = "") -> list[str]:
        return [e for e, _, _ in self.events if e.endswith(suffix)]

    def of(self, event: str) -> list[dict[str, Any]]:
        return [meta for e, _, meta in self.events if e == event]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    with telemetry.attached("supervision-tests", "foundation", rec):
        yield rec
