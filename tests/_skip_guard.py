"""A pytest plugin of this suite: every skip says why.

A skip is reported with its reason (``pytest -rs``); one without a reason
leaves the reader guessing whether the test is broken, so it fails here
instead. That covers ``pytest.skip()`` with no reason, a bare
``@pytest.mark.skip``, an empty ``parametrize`` list, and ``pytest.skip(
reason)`` called inside a trio test: pytest-trio 0.8 re-raises it without
its reason. Skip such tests before they run instead (a marker, a
``skipif`` with ``reason=``, or a fixture), which keeps the reason.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

#: What pytest reports as the reason of a skip that was given none.
NO_REASON = frozenset({"", "Skipped", "unconditional skip"})


def reason_of(report: pytest.TestReport) -> str | None:
    """The reason of a skipped report (None if it is not a plain skip)."""
    if not report.skipped or hasattr(report, "wasxfail"):
        return None
    if not isinstance(report.longrepr, tuple):
        return None
    return report.longrepr[2].removeprefix("Skipped: ").strip()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    reason = reason_of(report)
    if reason is not None and (reason in NO_REASON or reason.startswith("got empty parameter")):
        assert isinstance(report.longrepr, tuple)
        path, line, _ = report.longrepr
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} was skipped without a reason ({reason!r}, from {path}:{line}).\n"
            "Give every skip a reason: skip before the test runs (a marker, skipif(...,"
            " reason=...), a fixture), since pytest-trio drops the reason of pytest.skip()"
            " inside a trio test; give an empty parametrize list a skipif with a reason."
        )
    return report
