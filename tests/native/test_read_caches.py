"""What the native table keeps between reads: each name's Registration, and a
namespace's registrations() answer.

A read hands out the same Registration object for an entry until the entry
changes; ``registrations(ns)`` of an exact-str namespace whose entries hold
only atomic objects is kept until a write to the namespace. Neither may ever
answer stale, hide a reference from the collector, or keep a value alive
after it is unregistered.
"""

from __future__ import annotations

import gc
import sys
import sysconfig
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from foundation.registry import NATIVE, Registry

try:
    from foundation.registry import _native  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the build
    pytest.skip(
        f"the native registry is not built ({exc}); run 'python setup.py build_ext --inplace'",
        allow_module_level=True,
    )

pytestmark = [
    pytest.mark.native,
    pytest.mark.skipif(not NATIVE, reason="the native extension is not compiled or is disabled"),
]

# Free-threaded builds keep nothing between reads (each read builds its
# answer inside the shard's critical section; a kept object shared between
# threads would need that section on every later read too), so the tests of
# what is kept apply under the GIL only.
keeps_answers = pytest.mark.skipif(
    bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
    reason="free-threaded builds keep no read answers between reads",
)

N = 300  # above the size from which registrations(ns) answers are kept


class Value:
    """A GC-tracked value."""

    def __init__(self, tag: int) -> None:
        self.tag = tag


def _fill(reg: Registry, ns: Any = "ns", n: int = N) -> None:
    for i in range(n):
        reg.register_nowait(ns, f"n{i:04d}", f"v{i}", {"i": i}, owner=f"o{i % 3}")


def _names(regs: list[Any]) -> list[Any]:
    return [r.name for r in regs]


@keeps_answers
def test_kept_answers_follow_every_write() -> None:
    reg = Registry("native", partitions=3)
    _fill(reg)
    first = reg.registrations("ns")
    again = reg.registrations("ns")
    assert again == first
    assert again is not first  # a copy: the caller may change it
    again.clear()
    assert len(reg.registrations("ns")) == N
    # the same Registration objects, read after read
    assert all(a is b for a, b in zip(first, reg.registrations("ns"), strict=True))
    assert reg.lookup_with_metadata("ns", "n0005") is first[5]

    writes: list[tuple[str, Callable[[], Any]]] = [
        ("register", lambda: reg.register_nowait("ns", "new", 1)),
        ("re-register", lambda: reg.register_nowait("ns", "n0001", "v1", {"i": -1}, owner="o1")),
        ("update", lambda: reg.update_metadata_nowait("ns", "n0002", {"i": -2})),
        ("unregister", lambda: reg.unregister_nowait("ns", "n0003")),
        ("owner", lambda: reg.unregister_owner_nowait("o0")),
    ]
    for what, write in writes:
        reg.registrations("ns")  # kept now
        write()
        got = reg.registrations("ns")
        want = sorted(
            (r.name, dict(r.metadata))
            for r in reg.backend.registrations()  # type: ignore[attr-defined]
        )
        assert sorted((r.name, dict(r.metadata)) for r in got) == want, what
        assert len(got) == reg.count("ns"), what
        for r in got:
            assert reg.lookup_with_metadata("ns", r.name) == r, what
    assert dict(reg.metadata("ns", "n0001")) == {"i": -1}
    assert dict(reg.metadata("ns", "n0002")) == {"i": -2}
    assert ("ns", "n0003") not in reg
    assert not any(r.owner == "o0" for r in reg.registrations("ns"))


def test_other_namespaces_and_groups_leave_a_kept_answer_alone() -> None:
    reg = Registry("native", partitions=2)
    _fill(reg)
    kept = reg.registrations("ns")
    reg.register_nowait("elsewhere", "x", 1)
    reg.join_nowait("ns", "group", "member")
    assert reg.registrations("ns") == kept


@keeps_answers
def test_what_is_kept_and_what_the_collector_sees() -> None:
    reg = Registry("native", partitions=2)
    _fill(reg, ns=("tuple", "ns"))
    a = reg.registrations(("tuple", "ns"))
    b = reg.registrations(("tuple", "ns"))
    assert a == b
    # its entries are atomic: each keeps its Registration (untracked)
    assert all(x is y for x, y in zip(a, b, strict=True))
    assert not any(gc.is_tracked(r) for r in a)
    # entries holding a GC-tracked value: their Registrations stay tracked
    # (a cycle may run through them); the kept answer too, and the
    # collector reaches it from the backend
    values = [Value(i) for i in range(N)]
    for i, v in enumerate(values):
        reg.register_nowait("tracked", i, v)
    regs = reg.registrations("tracked")
    assert all(gc.is_tracked(r) for r in regs)
    assert all(x is y for x, y in zip(regs, reg.registrations("tracked"), strict=True))
    kept = [o for o in gc.get_referents(reg.backend) if isinstance(o, dict) and "tracked" in o]
    assert len(kept) == 1
    assert gc.is_tracked(kept[0]["tracked"])
    # a namespace that is not an exact str is never kept as a whole
    assert ("tuple", "ns") not in kept[0]
    reg.register_nowait("tracked", "one more", Value(-1))
    fresh = reg.registrations("tracked")
    assert len(fresh) == N + 1
    assert fresh[0] is not regs[0]  # the write dropped the kept answer
    # atomic ones are untracked: the collector never needs them
    reg.register_nowait("plain", 0, "v")
    for i in range(1, N):
        reg.register_nowait("plain", i, "v")
    plain = reg.registrations("plain")
    assert not any(gc.is_tracked(r) for r in plain)
    assert plain[0] is reg.registrations("plain")[0]


@keeps_answers
def test_kept_registrations_release_their_values() -> None:
    reg = Registry("native", partitions=2)
    name = "".join(["~", "kept-value"])[1:]  # not interned: ours alone
    for i in range(N):
        reg.register_nowait("ns", f"n{i}", name if i == 7 else f"v{i}")
    before = sys.getrefcount(name)
    reg.registrations("ns")
    reg.lookup_with_metadata("ns", "n7")
    assert sys.getrefcount(name) > before  # held by the kept answers
    assert reg.unregister_nowait("ns", "n7")
    gc.collect()
    # the entry, its Registration and the kept answer let go of the value
    assert sys.getrefcount(name) == before - 1


def test_a_value_reached_through_a_kept_registration_is_collected() -> None:
    class Holder:
        pass

    reg = Registry("native", partitions=2)
    _fill(reg)
    holder = Holder()
    reg.register_nowait("ns", "holder", holder)
    regs = reg.registrations("ns")
    holder.regs = regs  # type: ignore[attr-defined]
    holder.registry = reg  # type: ignore[attr-defined]
    gone = weakref.ref(holder)
    gone_reg = weakref.ref(reg)
    del holder, regs, reg
    gc.collect()
    assert gone() is None
    assert gone_reg() is None
