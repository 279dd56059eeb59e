"""The nesting check that runs before any JSON from etcd is decoded (no etcd needed).

``too_deep`` must agree with the real depth of every JSON text (strings that
hold brackets, quotes and backslashes included), and refuse, without
recursing, texts far deeper than the interpreter's recursion limit.
"""

from __future__ import annotations

import json
import random
import sys
from typing import Any

import pytest

from foundation.etcd import MAX_NESTING
from foundation.etcd._json import loads_bounded, too_deep


def depth(obj: Any) -> int:
    if isinstance(obj, list):
        return 1 + max((depth(x) for x in obj), default=0)
    if isinstance(obj, dict):
        return 1 + max((depth(x) for x in obj.values()), default=0)
    return 0


_TRICKY = ["[", "]", "{", "}", '"', "\\", '\\"', "[[", '"]', "x\\\\", "é", "\u2028"]


def generate(rng: random.Random, levels: int) -> Any:
    roll = rng.random()
    if levels == 0 or roll < 0.3:
        return rng.choice([1, 2.5, None, True, "", *_TRICKY])
    if roll < 0.65:
        return [generate(rng, levels - 1) for _ in range(rng.randint(0, 3))]
    return {
        rng.choice(["k", *_TRICKY]) + str(i): generate(rng, levels - 1)
        for i in range(rng.randint(0, 3))
    }


def test_too_deep_agrees_with_the_real_depth() -> None:
    rng = random.Random(20261207)
    for _ in range(5000):
        obj = generate(rng, rng.randint(0, 9))
        raw = json.dumps(obj, ensure_ascii=rng.random() < 0.5).encode()
        real = depth(obj)
        for limit in (0, 1, 2, 3, 5, 8):
            assert too_deep(raw, limit) == (real > limit), (raw, real, limit)


@pytest.mark.parametrize("levels", [MAX_NESTING - 1, MAX_NESTING])
def test_up_to_the_limit_decodes(levels: int) -> None:
    text = "[" * levels + "1" + "]" * levels
    assert not too_deep(text.encode())
    assert depth(loads_bounded(text)) == levels


@pytest.mark.parametrize("levels", [MAX_NESTING + 1, 600, 10 * sys.getrecursionlimit()])
def test_deeper_is_refused_without_recursing(levels: int) -> None:
    for text in ("[" * levels + "]" * levels, '{"a":' * levels + "1" + "}" * levels):
        assert too_deep(text.encode())
        with pytest.raises(ValueError, match="nested deeper"):
            loads_bounded(text)


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"v": "[" * 1000, "w": ["]" * 1000, '\\"[[[']})
    assert not too_deep(text.encode(), 2)
    assert loads_bounded(text, 2)["w"][1] == '\\"[[['


def test_unbalanced_text_is_refused() -> None:
    assert too_deep(b"[" * 70 + b"}" * 70)
    with pytest.raises(ValueError, match="nested deeper"):
        loads_bounded(b"]" * 100 + b"[" * 100)
