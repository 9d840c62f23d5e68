"""Fixtures of the fault suite (tests/faults/ only): one cluster for the whole folder, and the report."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import FaultCluster, Report, build_cluster, start_cluster, stop_cluster


@pytest.fixture(scope="session")
def fault_report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    path = os.environ.get("CCSSO_FAULT_REPORT") or str(tmp_path_factory.getbasetemp() / "fault-report.json")
    return Report(Path(path))


@pytest.fixture(scope="session")
def fault_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultCluster]:
    for tool in ("redis-server",):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    cl = build_cluster(tmp_path_factory.mktemp("faults"))
    why = cl.pg.available()
    if why:
        pytest.skip(why)
    try:
        start_cluster(cl)
        cl.fresh_sessions()
        yield cl
    finally:
        stop_cluster(cl)


@pytest.fixture(autouse=True)
def _report_test(request: pytest.FixtureRequest) -> None:
    if "fault_report" in request.fixturenames:
        request.getfixturevalue("fault_report").test = request.node.nodeid


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    """Each report row gets its test's outcome, so the table shows which faults failed."""
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    report = getattr(item, "funcargs", {}).get("fault_report")
    if rep.when == "call" and isinstance(report, Report):
        report.outcome(item.nodeid, rep.outcome)
