"""foundation.telemetry: attach/detach/emit, prefix matching, failing handlers."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from foundation import telemetry

Event = tuple[str, dict[str, float], dict[str, Any]]


@pytest.fixture
def events() -> Iterator[list[Event]]:
    """Every event under ``test.`` while the test runs."""
    seen: list[Event] = []

    def handler(event: str, meas: Mapping[str, float], meta: Mapping[str, Any]) -> None:
        seen.append((event, dict(meas), dict(meta)))

    with telemetry.attached("test-events", "test", handler):
        yield seen


def test_emit_without_handlers_is_a_no_op() -> None:
    telemetry.emit("test.nobody.listens", {"n": 1}, {"x": 1})
    telemetry.emit("test.nobody.listens")


def test_prefix_matches_whole_segments(events: list[Event]) -> None:
    telemetry.emit("test.a.b", {"n": 1.0}, {"k": "v"})
    telemetry.emit("test", {}, {})
    telemetry.emit("testing.other", {}, {})  # not under "test"
    assert events == [("test.a.b", {"n": 1.0}, {"k": "v"}), ("test", {}, {})]


def test_empty_prefix_matches_everything() -> None:
    seen: list[str] = []
    with telemetry.attached("all", "", lambda e, m, d: seen.append(e)):
        telemetry.emit("x.y", {}, {})
        telemetry.emit("foundation.task.start", {}, {})
    assert seen == ["x.y", "foundation.task.start"]


def test_handlers_run_in_attach_order_and_detach(events: list[Event]) -> None:
    order: list[str] = []
    telemetry.attach("first", "test.order", lambda e, m, d: order.append("first"))
    telemetry.attach("second", "test.order.x", lambda e, m, d: order.append("second"))
    try:
        telemetry.emit("test.order.x", {}, {})
        assert order == ["first", "second"]
        assert telemetry.detach("first") is True
        assert telemetry.detach("first") is False
        telemetry.emit("test.order.x", {}, {})
        assert order == ["first", "second", "second"]
    finally:
        telemetry.detach("second")
    assert [e for e, _, _ in events] == ["test.order.x", "test.order.x"]


def test_duplicate_handler_id_is_refused() -> None:
    with telemetry.attached("dup", "test", lambda e, m, d: None):
        with pytest.raises(ValueError, match="already attached"):
            telemetry.attach("dup", "other", lambda e, m, d: None)
        assert [h.handler_id for h in telemetry.list_handlers("test.x")] == ["dup"]


def test_bad_arguments() -> None:
    with pytest.raises(TypeError):
        telemetry.attach("bad", ("a", "b"), lambda e, m, d: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        telemetry.attach("bad", "a", 42)  # type: ignore[arg-type]
    assert telemetry.list_handlers("a") == []


def test_raising_handler_is_logged_and_detached(
    events: list[Event], caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def broken(event: str, meas: Mapping[str, float], meta: Mapping[str, Any]) -> None:
        calls.append(event)
        raise RuntimeError("handler bug")

    telemetry.attach("broken", "test.boom", broken)
    with caplog.at_level(logging.ERROR, logger="foundation.telemetry"):
        telemetry.emit("test.boom", {}, {})  # the caller never sees the error
        telemetry.emit("test.boom", {}, {})
    assert calls == ["test.boom"]  # detached after the first failure
    assert "broken" in caplog.text
    assert "handler bug" in caplog.text
    assert telemetry.detach("broken") is False
    assert [e for e, _, _ in events] == ["test.boom", "test.boom"]  # others still called


def test_attach_from_threads() -> None:
    def work(i: int) -> None:
        for j in range(50):
            telemetry.attach(f"t{i}-{j}", "test.threads", lambda e, m, d: None)
            telemetry.emit("test.threads.x", {}, {})
            telemetry.detach(f"t{i}-{j}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert telemetry.list_handlers("test.threads") == []


def test_has_handler_follows_attach_and_detach() -> None:
    assert telemetry.has_handler("test.has.x") is False
    with telemetry.attached("has", "test.has", lambda e, m, d: None):
        assert telemetry.has_handler("test.has.x") is True
        assert telemetry.has_handler("test.has") is True
        assert telemetry.has_handler("test.hash") is False  # whole segments only
        assert telemetry.has_handler("test") is False
    assert telemetry.has_handler("test.has.x") is False
    with telemetry.attached("all", "", lambda e, m, d: None):
        assert telemetry.has_handler("anything.at.all") is True


def test_has_handler_sees_a_broken_handler_go() -> None:
    def broken(event: str, meas: Mapping[str, float], meta: Mapping[str, Any]) -> None:
        raise RuntimeError("handler bug")

    telemetry.attach("broken-has", "test.gone", broken)
    assert telemetry.has_handler("test.gone")
    logging.getLogger("foundation.telemetry").disabled = True
    try:
        telemetry.emit("test.gone", {}, {})
    finally:
        logging.getLogger("foundation.telemetry").disabled = False
    assert not telemetry.has_handler("test.gone")


def test_on_change_runs_after_every_attach_and_detach() -> None:
    seen: list[bool] = []
    undo = telemetry.on_change(lambda: seen.append(telemetry.has_handler("test.chg.x")))
    try:
        telemetry.attach("chg", "test.chg", lambda e, m, d: None)
        telemetry.detach("chg")
        telemetry.detach("chg")  # nothing detached: no call
    finally:
        undo()
    telemetry.attach("chg", "test.chg", lambda e, m, d: None)
    telemetry.detach("chg")
    assert seen == [True, False]


def test_on_change_holds_bound_methods_weakly() -> None:
    import gc

    class Listener:
        calls = 0

        def changed(self) -> None:
            Listener.calls += 1

    listener = Listener()
    telemetry.on_change(listener.changed)
    with telemetry.attached("weak", "test.weak", lambda e, m, d: None):
        pass
    assert Listener.calls == 2
    del listener
    gc.collect()
    with telemetry.attached("weak", "test.weak", lambda e, m, d: None):
        pass
    assert Listener.calls == 2


def test_on_change_forgets_a_collected_object_at_once() -> None:
    """Objects that subscribe and are dropped (a Registry each) leave nothing behind,
    even when no handler is ever attached or detached again."""
    import gc

    class Listener:
        def changed(self) -> None:
            pass

    gc.collect()
    before = len(telemetry._change_callbacks)
    listeners = [Listener() for _ in range(50)]
    for listener in listeners:
        telemetry.on_change(listener.changed)
    assert len(telemetry._change_callbacks) == before + 50
    del listeners, listener
    gc.collect()
    assert len(telemetry._change_callbacks) == before


def test_on_change_callback_that_raises_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def bad() -> None:
        calls.append(1)
        raise RuntimeError("callback bug")

    telemetry.on_change(bad)
    with (
        caplog.at_level(logging.ERROR, logger="foundation.telemetry"),
        telemetry.attached("drop", "test.drop", lambda e, m, d: None),
    ):
        pass
    assert calls == [1]
    assert "callback bug" in caplog.text
    with pytest.raises(TypeError):
        telemetry.on_change(42)  # type: ignore[arg-type]


def test_objects_alive_at_interpreter_exit_print_nothing() -> None:
    """Registries never closed subscribe to telemetry changes until the end:
    their teardown at exit must not report errors."""
    code = (
        "from foundation.registry import Registry\n"
        "kept = [Registry(backend) for backend in ('python', 'auto')]\n"
        "names = [f'n{i}' for i in range(100)]\n"
        "for registry in kept:\n"
        "    for name in names:\n"
        "        registry.register_nowait('ns', name, object())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert (result.returncode, result.stderr) == (0, "")
