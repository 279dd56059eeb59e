"""Differential tests of the C core (csrc/fdn_table.[ch]) through its cffi binding.

The Cython tests reach the core only through the registry; here a hypothesis
state machine drives it directly (``cffi_table.CffiTable``, the harness in
``tools/cffi/``) against a dict
model: insert, lookup, delete, remove all of an owner, with a few hash values
shared by many keys (CANDIDATE probes, long clusters, backward-shift
deletions across them), batches that grow and shrink the tables, and
allocation failures injected through the core's allocator hook
(``fdn_set_allocator``): after a failed insert the contents must be
unchanged and no block leaked. After every step ``CffiTable.check()`` walks
the C structures (probing invariant, record back-pointers, index lists).

The module is compiled once per session into a pytest temporary directory,
never into the source tree. Skips only when cffi or a C compiler is missing.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import shlex
import shutil
import struct
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

PYPY = sys.implementation.name == "pypy"
ROOT = Path(__file__).resolve().parents[2]
SRC = str(ROOT / "src")
HARNESS = ROOT / "tools" / "cffi"


def _load_harness() -> Any:
    """``tools/cffi/cffi_table.py``, by path (a tool of the checkout, not a package)."""
    path = HARNESS / "cffi_table.py"
    if not path.is_file():
        pytest.skip(
            f"no cffi harness at {path} (tests copied outside the source tree)",
            allow_module_level=True,
        )
    spec = importlib.util.spec_from_file_location("cffi_table", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cffi_table = _load_harness()


def _compiler() -> str | None:
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    words = shlex.split(cc)
    return shutil.which(words[0]) if words else None


@pytest.fixture(scope="session")
def fdn(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The compiled ``_fdn_cffi`` module (ffi, lib), built once per session."""
    pytest.importorskip("cffi", reason="cffi is not installed (pip install cffi)")
    if _compiler() is None:
        pytest.skip("no C compiler found (set CC or install gcc/clang) to build _fdn_cffi")
    # the C sources of this checkout: the package may be installed (no csrc/)
    csrc = ROOT / "csrc"
    if not (csrc / "fdn_table.c").is_file():
        pytest.skip(f"no C core sources at {csrc} (tests copied outside the source tree)")
    os.environ["FDN_CSRC_DIR"] = str(csrc)
    build_dir = str(tmp_path_factory.mktemp("fdn_cffi"))
    return cffi_table.load(build_dir)


@pytest.fixture
def lib(fdn: Any) -> Any:
    fdn.lib.fdn_cffi_inject_alloc_failure(-1)
    yield fdn.lib
    fdn.lib.fdn_cffi_inject_alloc_failure(-1)


# ---------------------------------------------------------------- keys


class Key:
    """Equal by label; the hash is chosen (many labels share one)."""

    __slots__ = ("h", "label")

    def __init__(self, label: Any, h: int) -> None:
        self.label = label
        self.h = h

    def __hash__(self) -> int:
        return self.h

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Key) and other.label == self.label

    def __repr__(self) -> str:
        return f"Key({self.label!r}, {self.h})"


# canonical objects, so a rule can use the stored object (identity HIT) or
# an equal copy (CANDIDATE resolved by __eq__)
_CANON: dict[Any, Key] = {}


def key(label: int, copy: bool) -> Key:
    k = _CANON.setdefault(label, Key(label, label % 3))
    return Key(label, label % 3) if copy else k


NAMESPACES = st.sampled_from(["a", "b", ("t", 1), 7])
NAMES = st.one_of(
    st.builds(key, st.integers(0, 11), st.booleans()),  # 3 hashes for 12 names
    st.integers(0, 40),
    st.sampled_from(["x", "y"]),
)
OWNERS = st.one_of(
    st.none(),
    st.sampled_from(["o1", "o2"]),
    st.builds(key, st.sampled_from([100, 103, 106]), st.booleans()),  # one hash
)
VALUES = st.integers(0, 5)
METAS = st.one_of(st.none(), st.sampled_from(["m1", "m2"]))

SETTINGS = settings(
    max_examples=int(os.environ.get("FDN_CFFI_EXAMPLES", "100")),
    stateful_step_count=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# ---------------------------------------------------------------- the machine


class CoreMachine(RuleBasedStateMachine):
    """The C core (via cffi) against ``{(ns, name): (value, meta, owner)}``."""

    def __init__(self, mod: Any) -> None:
        super().__init__()
        self.mod = mod
        self.lib = mod.lib
        if PYPY:  # PyPy frees a dropped table's C memory only when collected
            gc.collect()
        self.baseline = self.lib.fdn_cffi_live_blocks()
        self.model: dict[tuple[Any, Any], tuple[Any, Any, Any]] = {}
        self.table: cffi_table.CffiTable | None = None
        self.versions: list[int] = []

    @initialize(partitions=st.integers(1, 3))
    def make(self, partitions: int) -> None:
        self.table = cffi_table.CffiTable(partitions, self.mod)

    @property
    def t(self) -> cffi_table.CffiTable:
        assert self.table is not None
        return self.table

    def teardown(self) -> None:
        self.lib.fdn_cffi_inject_alloc_failure(-1)
        if self.table is not None:
            self.table.close()
            self.table = None
            if PYPY:
                gc.collect()
        assert self.lib.fdn_cffi_live_blocks() == self.baseline, "blocks leaked"

    def _insert(self, ns: Any, name: Any, value: Any, meta: Any, owner: Any) -> bool:
        present = (ns, name) in self.model
        inserted = self.t.insert(ns, name, value, meta, owner)
        assert inserted is not present
        if inserted:
            self.model[(ns, name)] = (value, meta, owner)
        return inserted

    def _remove_owner(self, owner: Any) -> None:
        gone = [k for k, v in self.model.items() if owner is not None and v[2] == owner]
        assert self.t.remove_owner(owner) == len(gone)
        for k in gone:
            del self.model[k]

    @rule(ns=NAMESPACES, name=NAMES, value=VALUES, meta=METAS, owner=OWNERS)
    def insert(self, ns: Any, name: Any, value: Any, meta: Any, owner: Any) -> None:
        self._insert(ns, name, value, meta, owner)

    @rule(ns=NAMESPACES, name=NAMES)
    def lookup(self, ns: Any, name: Any) -> None:
        want = self.model.get((ns, name))
        missing = object()
        got = self.t.get(ns, name, missing)
        if want is None:
            assert got is missing
            assert self.t.entry(ns, name) is None
            with pytest.raises(KeyError):
                self.t.lookup(ns, name)
        else:
            assert got is want[0]
            assert self.t.lookup(ns, name) is want[0]
            assert self.t.entry(ns, name) == want

    @rule(ns=NAMESPACES, name=NAMES)
    def delete(self, ns: Any, name: Any) -> None:
        present = self.model.pop((ns, name), None) is not None
        assert self.t.delete(ns, name) is present

    @rule(owner=OWNERS)
    def remove_owner(self, owner: Any) -> None:
        self._remove_owner(owner)

    @rule(ns=NAMESPACES, start=st.integers(0, 200), count=st.integers(5, 60), owner=OWNERS)
    def insert_batch(self, ns: Any, start: int, count: int, owner: Any) -> None:
        # distinct int names: many home slots, growth past several resizes
        for i in range(start, start + count):
            self._insert(ns, 1000 + i, i, None, owner)

    @rule(ns=NAMESPACES)
    def delete_namespace(self, ns: Any) -> None:
        # empties a namespace: its list is dropped, the tables shrink
        for k in [k for k in self.model if k[0] == ns]:
            assert self.t.delete(*k)
            del self.model[k]
        assert self.t.get(ns, 1000, None) is None

    @rule(
        ns=NAMESPACES,
        name=NAMES,
        value=VALUES,
        meta=METAS,
        owner=OWNERS,
        after=st.integers(0, 6),
    )
    def insert_failing(
        self, ns: Any, name: Any, value: Any, meta: Any, owner: Any, after: int
    ) -> None:
        """The allocation after ``after`` more fails: either the insert needs
        fewer allocations and succeeds, or it raises with nothing changed."""
        before = dict(self.t.items())
        blocks = self.lib.fdn_cffi_live_blocks()
        self.lib.fdn_cffi_inject_alloc_failure(after)
        try:
            inserted = self._insert(ns, name, value, meta, owner)
        except MemoryError:
            assert (ns, name) not in self.model
            assert dict(self.t.items()) == before
            assert self.lib.fdn_cffi_live_blocks() == blocks
            assert self.t.get(ns, name, None) is None
        else:
            assert inserted or dict(self.t.items()) == before
        finally:
            self.lib.fdn_cffi_inject_alloc_failure(-1)

    @rule(ns=NAMESPACES, name=NAMES, owner=OWNERS, after=st.integers(0, 3))
    def remove_failing(self, ns: Any, name: Any, owner: Any, after: int) -> None:
        """Removal never fails: a failed shrink keeps the bigger table."""
        self.lib.fdn_cffi_inject_alloc_failure(after)
        try:
            self.delete(ns, name)
            self._remove_owner(owner)
        finally:
            self.lib.fdn_cffi_inject_alloc_failure(-1)

    @invariant()
    def agrees_with_model(self) -> None:
        if self.table is None:
            return
        t = self.t
        t.check()
        assert len(t) == len(self.model)
        assert dict(t.items()) == self.model
        for (ns, name), (value, _, _) in self.model.items():
            assert t.get(ns, name) is value
        # no block leaked or double-freed
        assert self.lib.fdn_cffi_live_blocks() - self.baseline == t.expected_blocks()
        # shard versions never go back (no zip(strict=): runs on PyPy3.9 too)
        versions = [s["version"] for s in t.shard_info()]
        if self.versions:
            assert len(versions) == len(self.versions)
            assert all(versions[i] >= self.versions[i] for i in range(len(versions)))
        self.versions = versions


def test_core_against_model(fdn: Any, lib: Any) -> None:
    run_state_machine_as_test(lambda: CoreMachine(fdn), settings=SETTINGS)


# ---------------------------------------------------------------- fixed cases


def test_module_built_outside_the_source_tree(fdn: Any) -> None:
    path = os.path.abspath(fdn.__file__)
    assert not path.startswith(SRC + os.sep), path
    assert not path.startswith(str(HARNESS) + os.sep), path
    here = os.listdir(HARNESS)
    assert [f for f in here if f.startswith("_fdn_cffi")] == []


def test_no_cffi_module_in_the_package() -> None:
    # The harness is a tool of the checkout; the installed library has no cffi code.
    package = Path(SRC) / "foundation"
    found = [p for p in package.rglob("*cffi*") if "__pycache__" not in p.parts]
    assert found == []


def test_grow_shrink_and_collisions(fdn: Any, lib: Any) -> None:
    t = cffi_table.CffiTable(2, fdn)
    keys = [(Key(i % 5, 0), Key(i, i % 4)) for i in range(300)]  # 4 hashes per ns hash
    for i, (ns, name) in enumerate(keys):
        assert t.insert(ns, name, i, owner="o" if i % 2 else None)
    t.check()
    caps = [s["main"][0] for s in t.shard_info()]
    assert sum(caps) >= 300 * 3 // 2
    for i, (ns, name) in enumerate(keys):
        assert t.get(Key(ns.label, 0), Key(name.label, name.h)) == i  # equal copies
    assert t.remove_owner("o") == 150
    t.check()
    for i, (ns, name) in enumerate(keys):
        assert t.delete(ns, name) is (i % 2 == 0)
    t.check()
    assert len(t) == 0
    assert all(s["main"][0] == 8 and s["ns"][1] == 0 for s in t.shard_info())
    t.close()


def test_shard_allocation_failure(fdn: Any, lib: Any) -> None:
    blocks = lib.fdn_cffi_live_blocks()
    for after in range(4):
        lib.fdn_cffi_inject_alloc_failure(after)
        with pytest.raises(MemoryError):
            cffi_table.CffiTable(1, fdn)
        assert lib.fdn_cffi_live_blocks() == blocks
    lib.fdn_cffi_inject_alloc_failure(-1)


def test_eq_that_mutates_the_shard_restarts_the_probe(fdn: Any, lib: Any) -> None:
    """A CANDIDATE's ``__eq__`` that deletes entries (moving others back by
    backward shift) must not make a present key look absent."""
    t = cffi_table.CffiTable(1, fdn)
    victims = [Key(("v", i), 0) for i in range(6)]
    armed = []

    class Hook(Key):
        __slots__ = ()
        __hash__ = Key.__hash__

        def __eq__(self, other: object) -> bool:
            if armed:
                armed.clear()
                for v in victims:
                    assert t.delete("ns", v)
            return super().__eq__(other)

    hook = Hook("hook", 0)
    target = Key("target", 0)
    t.insert("ns", hook, "hook")
    for v in victims:
        t.insert("ns", v, v.label)
    t.insert("ns", target, "target")
    version = t.shard_info()[0]["version"]
    armed.append(True)
    assert t.get("ns", Key("target", 0)) == "target"
    assert t.shard_info()[0]["version"] > version
    assert len(t) == 2
    t.check()
    t.close()


# The core's inverse of fdn_mix2 in its second argument, to place keys.
_K1 = 0x9E3779B97F4A7C15
_K2 = 0xD6E8FEB86659FD93
_M = (1 << 64) - 1


def _mix2(a: int, b: int) -> int:
    x = ((a * _K1) & _M) ^ b
    x ^= x >> 32
    x = (x * _K2) & _M
    return x ^ (x >> 32)


def _second_hash_for(a: int, h: int) -> int:
    """The Python hash b (signed) with fdn_mix2(a, b) == h."""
    y = h ^ (h >> 32)
    y = (y * pow(_K2, -1, 1 << 64)) & _M
    y ^= y >> 32
    b = y ^ ((a * _K1) & _M)
    # as a machine-word int: PyPy hashes an int object built by big-number
    # arithmetic modulo 2**61 - 1 even when it fits a word, so a __hash__
    # returning it would not return this value
    signed: int = struct.unpack("<q", struct.pack("<Q", b))[0]
    return signed


def test_mix2_inverse(lib: Any) -> None:
    for a, h in [(0, 0), (5, 123), (2**63, 2**64 - 7), (77, 0x0123456789ABCDEF)]:
        assert (
            lib.fdn_mix2(a, _second_hash_for(a, h) & _M)
            == h
            == _mix2(a, _second_hash_for(a, h) & _M)
        )


# Regression: fdn_shard_insert() resized main and then failed without bumping
# the shard version that bindings re-check after an __eq__, so a probe resumed
# under the new mask missed a present key (found by this harness).
def test_failed_insert_inside_eq_cannot_hide_a_key(fdn: Any, lib: Any) -> None:
    t = cffi_table.CffiTable(1, fdn)
    ns_hash = hash("ns")

    def name_with(h: int, label: Any) -> Key:
        b = _second_hash_for(ns_hash & _M, h)
        k = Key(label, b)
        assert hash(k) == b  # (-1 would become -2)
        return k

    armed = []

    class Hook(Key):
        """Stored first at home slot 7; its __eq__ runs an insert that grows
        main (8 -> 16 slots) and then fails on the record allocation."""

        __slots__ = ()
        __hash__ = Key.__hash__

        def __eq__(self, other: object) -> bool:
            if armed:
                armed.clear()
                lib.fdn_cffi_inject_alloc_failure(2)  # slots, recs ok; record fails
                with pytest.raises(MemoryError):
                    t.insert("ns", name_with(0x2, "new"), "new")
                lib.fdn_cffi_inject_alloc_failure(-1)
            return super().__eq__(other)

    h = 0xABCD00000000000F  # home 7 at capacity 8, 15 at capacity 16
    hook = Hook("hook", name_with(h, "hook").h)
    target = Key("target", hook.h)  # same hash: probed after the hook
    assert t.insert("ns", hook, 1)
    assert t.insert("ns", target, 2)  # wraps to slot 0
    for i, home in enumerate((2, 3, 4)):  # 5 entries: the next insert grows main
        assert t.insert("ns", name_with(0x100 * (i + 1) + home, i), i)
    assert t.get("ns", Key("target", target.h)) == 2
    info = t.shard_info()[0]
    assert info["main"] == (8, 5)
    armed.append(True)
    try:
        found = t.get("ns", Key("target", target.h))
        grown = t.shard_info()[0]
        assert grown["main"] == (16, 5)  # the failed insert did resize
        assert found == 2, (
            "false miss: main resized during __eq__ but the shard version "
            f"stayed {grown['version']} (main.version {info['table_versions'][0]} -> "
            f"{grown['table_versions'][0]})"
        )
    finally:
        lib.fdn_cffi_inject_alloc_failure(-1)
        t.close()
