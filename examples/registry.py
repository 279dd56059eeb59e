import trio

from foundation import Registry, errors


async def main() -> None:
    registry = Registry()  # native if built, else the python twin
    await registry.register("services", "db", "tcp://db:5432", {"role": "primary"})
    print(registry.lookup("services", "db"))  # sync, no lock: straight to the table
    print(registry.select("services", where={"role": "primary"}))
    async with registry.registered("services", "cache", "tcp://cache:6379"):
        print(registry.count("services"))  # 2; the name goes on exit, error or cancel
    async with trio.open_nursery() as nursery:
        nursery.start_soon(registry.register, "services", "late", 42)
        with trio.fail_after(1):
            print(await registry.wait_for("services", "late"))
    try:
        await registry.register("services", "db", "tcp://elsewhere")
    except errors.AlreadyRegistered as exc:
        print(exc)  # names the key and who holds it


trio.run(main)
