import trio

from foundation import Registry
from foundation.supervision import ChildSpec, Strategy, open_supervisor

crashes = 0


async def worker(*, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    global crashes
    task_status.started("ready")  # registered as ("svc", "worker") from here on
    await trio.sleep(0.1)
    if crashes < 2:
        crashes += 1
        raise RuntimeError("worker crashed on purpose")  # restarted, name moves along
    await trio.sleep_forever()


async def main() -> None:
    registry = Registry()
    spec = ChildSpec(id="worker", target=worker, register_as=("svc", "worker"))
    async with open_supervisor(
        [spec], strategy=Strategy.ONE_FOR_ONE, max_restarts=3, max_seconds=5, registry=registry
    ) as sup:
        await trio.sleep(0.5)
        print(sup.tree())  # what runs, how often it restarted, the last error
        await sup.terminate_child("worker")
    print(registry.get("svc", "worker"))  # None: the name went with the child


trio.run(main)
