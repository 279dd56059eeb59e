import trio

from foundation.coordination import open_local_coordinator


async def main() -> None:
    async with open_local_coordinator() as coord, trio.open_nursery() as nursery:
        barrier = coord.barrier("round", parties=3)

        async def node(name: str) -> None:
            async with coord.lock("resource", timeout=5) as held:
                print(name, "holds the lock, fencing token", held.fencing_token)
            async with coord.election("leaders").campaign(name) as term:
                print(name, "leads, term", term.number)  # one at a time, FIFO
            value = await coord.agree("config-v1", proposal=f"chosen by {name}")
            await barrier.wait(timeout=5)  # all three meet here
            print(name, "agreed on", value)  # the same value for every node

        for name in ("a", "b", "c"):
            nursery.start_soon(node, name)


trio.run(main)
