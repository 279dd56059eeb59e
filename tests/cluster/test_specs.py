"""Child specs as JSON, ids as keys, and the cluster's errors: no etcd needed."""

from __future__ import annotations

import functools
import math
import pickle
from typing import Any

import pytest
import trio

from foundation import errors
from foundation.cluster._keys import ClusterKeys
from foundation.cluster._records import LockEntry, SpecRecord
from foundation.cluster._spec import (
    MAX_DEPTH,
    decode_spec,
    encode_spec,
    id_from_segment,
    id_json,
    id_segment,
)
from foundation.supervision import ChildSpec, Restart


async def target(*args: Any) -> None:
    await trio.sleep_forever()


class Holder:
    @staticmethod
    async def static() -> None: ...

    async def method(self) -> None: ...


def test_a_spec_round_trips() -> None:
    spec = ChildSpec(
        id=("shard", 3),
        target=target,
        args=(1, "a", [2, [3]], {"k": (4, None)}, 1.5, True),
        restart=Restart.TRANSIENT,
        shutdown=2.5,
        register_as=("svc", ("shard", 3)),
    )
    data = encode_spec(spec)
    assert data["target"] == f"{__name__}:target"
    back = decode_spec(data)
    assert back.id == ("shard", 3)
    assert back.target == f"{__name__}:target"
    assert back.args == (1, "a", (2, (3,)), {"k": (4, None)}, 1.5, True)  # arrays: tuples
    assert back.restart is Restart.TRANSIENT
    assert back.shutdown == 2.5
    assert back.register_as == ("svc", ("shard", 3))


def test_infinite_shutdown_and_named_targets() -> None:
    spec = ChildSpec(id="x", target="pkg.mod:fn", shutdown=math.inf)
    data = encode_spec(spec)
    assert data["shutdown"] is None
    assert data["target"] == "pkg.mod:fn"  # imported when it starts, not now
    assert decode_spec(data).shutdown == math.inf
    assert encode_spec(ChildSpec(id="s", target=Holder.static))["target"].endswith("Holder.static")


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (ChildSpec(id="l", target=lambda: None), "cannot be imported by name"),
        (ChildSpec(id="p", target=functools.partial(target, 1)), "cannot be imported by name"),
        (ChildSpec(id="m", target=Holder().method), "cannot be imported by name"),
        (ChildSpec(id="s", target=target, args=({1},)), "set"),
        (ChildSpec(id="b", target=target, args=(b"x",)), "bytes"),
        (ChildSpec(id="n", target=target, args=(math.nan,)), "JSON cannot carry"),
        (ChildSpec(id="k", target=target, args=({1: 2},)), "not a str"),
        (ChildSpec(id="d", target=target, args=(_nested(MAX_DEPTH + 1),)), "deeper"),
        (ChildSpec(id=1.5, target=target), "portable"),
        (ChildSpec(id=True, target=target), "portable"),
        (ChildSpec(id=["l"], target=target), "portable"),  # type: ignore[arg-type]
        (ChildSpec(id="r", target=target, register_as=("svc", 1.5)), "register_as"),
    ],
)
def test_bad_specs_say_why(spec: ChildSpec, fragment: str) -> None:
    with pytest.raises(errors.InvalidChildSpec) as info:
        encode_spec(spec)
    assert fragment in str(info.value)
    assert info.value.child_id == spec.id


def test_a_closure_is_refused() -> None:
    def outer() -> Any:
        async def inner() -> None: ...

        return inner

    with pytest.raises(errors.InvalidChildSpec, match="closure"):
        encode_spec(ChildSpec(id="c", target=outer()))


def test_invalid_child_spec_prints_and_pickles() -> None:
    err = errors.InvalidChildSpec(("a", 1), "its id is not a portable key")
    assert isinstance(err, errors.SupervisionError)
    assert isinstance(err, TypeError)
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is errors.InvalidChildSpec
    assert (
        str(copy)
        == str(err)
        == ("child spec ('a', 1) cannot be distributed: its id is not a portable key")
    )
    assert vars(copy) == vars(err)


@pytest.mark.parametrize("child_id", ["w1", "a/b", "%2F", 7, -1, ("x", (1, "y")), "ü ñ", ""])
def test_ids_as_key_segments(child_id: Any) -> None:
    seg = id_segment(child_id)
    assert "/" not in seg
    assert id_from_segment(seg) == child_id
    assert id_json(child_id) == __import__("json").dumps(child_id, sort_keys=True)
    # A str and an int never share a segment.
    assert id_segment("1") != id_segment(1)


def test_keys_parse_back_and_stay_apart() -> None:
    keys = ClusterKeys.make("p/", "p/", "w")  # one prefix for registry and coordinator
    seg = id_segment("lock")
    assert keys.parse(keys.spec(seg)) == ("spec", seg, "")
    assert keys.parse(keys.handoff(seg)) == ("handoff", seg, "")
    assert keys.parse(keys.move(seg)) == ("move", seg, "")
    assert keys.parse(keys.lock_key(seg, 0xABC)) == ("lock", seg, "abc")
    assert keys.lock_queue(seg).startswith(keys.lock_base.encode())
    assert keys.parse(b"p/cluster/w/other/x") is None
    assert keys.parse(b"p/cluster/w2/spec/x") is None
    assert keys.lock_name(seg) == f"cluster/w/lock/{seg}"


def test_records_refuse_foreign_values() -> None:
    with pytest.raises(ValueError, match="not a spec record"):
        SpecRecord.decode("s", b"not json", 1)
    with pytest.raises(ValueError, match="stored child spec"):
        SpecRecord.decode("s", b'{"spec": {"id": "x"}, "state": "active"}', 1)
    # etcdctl lock writes no JSON: a holder we do not know.
    entry = LockEntry.decode(b"k", b"", 5, 9)
    assert (entry.node, entry.state, entry.token) == (None, "starting", 9)
