"""consensus() takes a collection of names: a bare str is refused on every coordinator.

A str is itself a collection (of its letters), so ``participants="abc"``
used to open a ballot among "a", "b" and "c".
"""

from __future__ import annotations

import pytest
import trio

from foundation.coordination import Coordinator, Vote
from foundation.errors import ConfigError


@pytest.mark.parametrize("participants", ["abc", "a", b"ab"])
async def test_bare_str_participants_raise_config_error(
    coordinator: Coordinator, participants: object
) -> None:
    with trio.fail_after(30), pytest.raises(ConfigError, match="collection of names"):
        await coordinator.consensus("c", participants, "proposal")  # type: ignore[arg-type]


async def test_a_list_of_one_name_still_works(coordinator: Coordinator) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(coordinator.vote, "one", "abc", Vote.ACCEPT)
            decision = await coordinator.consensus("one", ["abc"], "proposal")
    assert decision.accepted
    assert dict(decision.votes) == {"abc": Vote.ACCEPT}
