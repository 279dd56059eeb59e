"""The history checker accepts valid histories and catches broken ones.

Plain tests (no namespaces, no etcd): each broken history is one of the
faults the partition tests look for (a stale read, a lost acknowledged
write, two lock holders inside at once, a fencing token going backwards),
written by hand, next to a valid history that differs from it only where the
fault is.
"""

from __future__ import annotations

import itertools
import random

import pytest
from _history import (
    TAKEN,
    CheckTooBig,
    History,
    Interval,
    LockModel,
    Op,
    RegisterModel,
    check_acknowledged_kept,
    check_linearizable,
    check_mutual_exclusion,
    check_tokens_increase,
)

pytestmark = pytest.mark.partition


def reg(p: str, value: str, call: float, ret: float | None, result: object = "ok") -> Op:
    return Op(p, "k", "register", value, call, ret, result)


def unreg(p: str, call: float, ret: float | None, result: bool) -> Op:
    return Op(p, "k", "unregister", None, call, ret, result)


def read(p: str, call: float, ret: float | None, result: object) -> Op:
    return Op(p, "k", "read", None, call, ret, result)


def lin(*ops: Op) -> bool:
    return check_linearizable(ops, RegisterModel(), key="k").ok


# -- registers -----------------------------------------------------------------


def test_sequential_register_history_is_linearizable() -> None:
    assert lin(
        read("a", 0, 1, None),
        reg("a", "v1", 2, 3),
        read("b", 4, 5, "v1"),
        reg("b", "v2", 6, 7, TAKEN),
        unreg("a", 8, 9, True),
        read("b", 10, 11, None),
        unreg("a", 12, 13, False),
    )


def test_concurrent_registers_one_winner_either_order() -> None:
    # a and b race; b's read after both returned must see the winner.
    assert lin(reg("a", "va", 0, 10), reg("b", "vb", 1, 9, TAKEN), read("c", 11, 12, "va"))
    # ... and a read overlapping the race may see either state.
    assert lin(reg("a", "va", 0, 10), read("c", 1, 2, None), read("c", 3, 12, "va"))


def test_two_winners_of_one_race_are_caught() -> None:
    assert not lin(reg("a", "va", 0, 10), reg("b", "vb", 1, 9), read("c", 11, 12, "vb"))


def test_stale_read_is_caught() -> None:
    # The write returned at 3; a read invoked at 4 still sees the old state.
    assert not lin(reg("a", "v1", 2, 3), read("b", 4, 5, None))
    # Overlapping the write, the same read is fine.
    assert lin(reg("a", "v1", 2, 4.5), read("b", 4, 5, None))


def test_lost_acknowledged_write_is_caught() -> None:
    assert not lin(reg("a", "v1", 0, 1), read("b", 5, 6, None))
    # Unless the lease that bound it ended (an expire op within the window).
    assert lin(
        reg("a", "v1", 0, 1),
        Op("lease", "k", "expire", "v1", 0, 4),
        read("b", 5, 6, None),
    )
    # A lease end seen only after the read does not explain it.
    assert not lin(
        reg("a", "v1", 0, 1),
        Op("lease", "k", "expire", "v1", 7, 8),
        read("b", 5, 6, None),
    )


def test_pending_write_may_or_may_not_have_happened() -> None:
    # A register that never answered (the client was cut off): both outcomes are valid.
    assert lin(reg("a", "v1", 0, None), read("b", 5, 6, None))
    assert lin(reg("a", "v1", 0, None), read("b", 5, 6, "v1"))
    # But it cannot take effect before it was invoked.
    assert not lin(read("b", 0, 1, "v1"), reg("a", "v1", 2, None))
    # And once seen, it cannot be unseen without another op.
    assert not lin(reg("a", "v1", 0, None), read("b", 5, 6, "v1"), read("b", 7, 8, None))


def test_reput_after_expiry_explains_a_reappearing_value() -> None:
    ops = [
        reg("a", "v1", 0, 1),
        Op("lease", "k", "expire", "v1", 1, 4),
        read("b", 5, 6, None),
        read("b", 9, 10, "v1"),
    ]
    assert not lin(*ops)
    assert lin(*ops, Op("a", "k", "reput", "v1", 1, 8))
    # A reput cannot take a name another instance holds.
    assert not lin(
        *ops[:3],
        reg("c", "v2", 6, 7),
        Op("a", "k", "reput", "v1", 1, None),
        read("b", 9, 10, "v1"),
    )


def test_history_checks_each_key_on_its_own() -> None:
    history = History(
        [
            Op("a", "x", "register", 1, 0, 1, "ok"),
            Op("b", "x", "read", None, 2, 3, 1),
            Op("a", "y", "register", 2, 0, 1, "ok"),
            Op("b", "y", "read", None, 2, 3, None),  # stale
        ]
    )
    results = {r.key: r for r in history.check(lambda _key: RegisterModel())}
    assert results["x"].ok
    assert not results["y"].ok
    text = results["y"].explain()
    assert "NOT linearizable" in text
    assert "read" in text


def test_random_concurrent_histories_from_a_real_register_are_accepted() -> None:
    # Simulate a linearizable register: each op takes effect at a random point
    # inside its interval; pending ops sometimes take effect, sometimes never.
    rng = random.Random(16)
    for _ in range(200):
        ops = []
        points = []
        for i in range(8):
            call = rng.uniform(0, 10)
            ret = call + rng.uniform(0.01, 3)
            points.append((rng.uniform(call, ret), i, call, ret))
        state = None
        for _point, i, call, ret in sorted(points):
            kind = rng.choice(["register", "register", "unregister", "read"])
            proc = f"p{i % 3}"
            pending = rng.random() < 0.15
            if kind == "register":
                value = f"v{i}"
                free = state is None or state == value
                result = "ok" if free else TAKEN
                if pending and rng.random() < 0.5:
                    ops.append(Op(proc, "k", kind, value, call, None))
                    continue  # never happened
                state = value if free else state
            elif kind == "unregister":
                value = None
                result = state is not None
                state = None
            else:
                value = None
                result = state
            ops.append(Op(proc, "k", kind, value, call, None if pending else ret, result))
        res = check_linearizable(ops, RegisterModel(), key="k")
        assert res.ok, res.explain()


def test_the_search_gives_up_loudly_on_huge_histories() -> None:
    ops = [reg(f"p{i}", f"v{i}", 0, None) for i in range(30)] + [read("r", 1, 2, "never-written")]
    with pytest.raises(CheckTooBig):
        check_linearizable(ops, RegisterModel(), key="k", max_states=1000)


# -- locks ---------------------------------------------------------------------


def acq(p: str, call: float, ret: float | None, token: int | None) -> Op:
    return Op(p, "L", "acquire", p, call, ret, token)


def rel(p: str, call: float, ret: float | None) -> Op:
    return Op(p, "L", "release", p, call, ret)


def lock_lin(*ops: Op) -> bool:
    return check_linearizable(ops, LockModel(), key="L").ok


def test_lock_handover_is_linearizable() -> None:
    # b waits from 1 and gets in at 6, after a released (5..5.5).
    assert lock_lin(acq("a", 0, 1, 10), acq("b", 1, 6, 12), rel("a", 5, 5.5), rel("b", 7, 8))
    # The release and the next grant may overlap in time.
    assert lock_lin(acq("a", 0, 1, 10), rel("a", 5, 6.5), acq("b", 1, 6, 12))


def test_two_holders_inside_at_once_are_caught() -> None:
    # a was still inside (its release was invoked at 7) when b got in at 6.
    assert not lock_lin(acq("a", 0, 1, 10), acq("b", 1, 6, 12), rel("a", 7, 7.5))
    assert check_mutual_exclusion([Interval("a", 10, 1, 7), Interval("b", 12, 6, 9)]) == [
        "two holders inside at once for 1.000 s: a token 10 inside [1.000, 7.000]"
        " and b token 12 inside [6.000, 9.000]"
    ]
    assert check_mutual_exclusion([Interval("a", 10, 1, 6), Interval("b", 12, 6, 9)]) == []


def test_fencing_token_going_backwards_is_caught() -> None:
    assert not lock_lin(acq("a", 0, 1, 10), rel("a", 2, 3), acq("b", 4, 5, 9))
    assert not lock_lin(acq("a", 0, 1, 10), rel("a", 2, 3), acq("b", 4, 5, 10))
    problems = check_tokens_increase([Interval("a", 10, 1, 2), Interval("b", 9, 4, 5)])
    assert len(problems) == 1
    assert "did not increase" in problems[0]
    assert check_tokens_increase([Interval("a", 10, 1, 2), Interval("b", 11, 4, 5)]) == []


def test_killed_holder_releases_some_time_after_the_kill() -> None:
    # a was killed at 3 (its release pending from then); b got in at 9.
    assert lock_lin(acq("a", 0, 1, 10), rel("a", 3, None), acq("b", 2, 9, 12))
    # Without any release of a, b could not have got in.
    assert not lock_lin(acq("a", 0, 1, 10), acq("b", 2, 9, 12))
    # A pending acquire (no answer) is allowed never to have happened.
    assert lock_lin(acq("a", 0, 1, 10), acq("c", 0.5, None, None), rel("a", 2, 3))


def test_acknowledged_writes_kept_or_reported() -> None:
    acknowledged = {"k1": "a1", "k2": "a2", "k3": "a3"}
    assert check_acknowledged_kept(acknowledged, {"k1": "a1", "k2": "a2", "k3": "a3"}) == []
    lost = check_acknowledged_kept(acknowledged, {"k1": "a1", "k3": "b3"})
    assert len(lost) == 2
    assert any("k2" in p and "gone" in p for p in lost)
    assert any("k3" in p and "b3" in p for p in lost)
    assert check_acknowledged_kept(acknowledged, {"k1": "a1", "k3": "b3"}, ["k2", "k3"]) == []


@pytest.mark.parametrize("n", [3, 5])
def test_many_interleavings_of_a_valid_lock_history(n: int) -> None:
    # n holders one after the other, each acquire overlapping the previous release.
    ops = []
    for i in range(n):
        ops.append(acq(f"p{i}", 0, 2 * i + 1, 100 + i))
        ops.append(rel(f"p{i}", 2 * i + 1.5, 2 * i + 2))
    for perm in itertools.islice(itertools.permutations(ops), 50):
        assert lock_lin(*perm)
