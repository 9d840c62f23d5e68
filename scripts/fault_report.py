"""Run the fault suite (tests/faults/) and print its per-fault table.

    python scripts/fault_report.py                 # runs pytest -m faults, then prints the table
    python scripts/fault_report.py --only FILE     # prints the table of an existing report

The suite writes its figures to ``CCSSO_FAULT_REPORT`` (JSON, one object per fault); this script
points that at a temporary file (or ``--report FILE``) and reads it back. Columns: requests sent,
answers >= 500 (of which 500s), events lost at the collector / in PostgreSQL, events the collector
received more than once, recovery time (service back, or every event delivered, in seconds),
the longest delivery delay after the fault ended, the longest any request waited for its answer,
and the test's outcome.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = [("fault", 44), ("requests", 8), ("5xx", 5), ("500", 4), ("lost http", 9), ("lost pg", 7),
           ("dup http", 8), ("recovery s", 10), ("max delay s", 11), ("max wait s", 10), ("result", 6)]


def row(fault: str, r: dict[str, object], result: str) -> list[str]:
    def get(key: str) -> str:
        v = r.get(key)
        return "-" if v is None else str(v)

    return [fault, get("requests"), get("http_5xx"), get("http_500"), get("lost_http"), get("lost_pg"),
            get("duplicated_http"), get("recovery_s"), get("delivery_delay_after_recovery_s"), get("max_wait_s"),
            result or get("result")]


def table(report: dict[str, dict[str, object]], results: dict[str, str]) -> str:
    lines = ["  ".join(name.ljust(w) for name, w in COLUMNS)]
    for fault, r in report.items():
        cells = row(fault, r, results.get(fault, ""))
        lines.append("  ".join(c.ljust(w) for c, (_n, w) in zip(cells, COLUMNS)))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", help="where the suite writes its JSON (default: a temporary file)")
    parser.add_argument("--only", help="print the table of an existing report; run nothing")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    if args.only:
        print(table(json.loads(Path(args.only).read_text()), {}))
        return 0
    path = Path(args.report or tempfile.mkstemp(prefix="ccsso-faults-", suffix=".json")[1])
    path.unlink(missing_ok=True)
    env = dict(os.environ, CCSSO_FAULT_REPORT=str(path))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "faults", "-rA",
                           "tests/faults", *args.pytest_args], cwd=ROOT, env=env, text=True, capture_output=True,
                          check=False)
    print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n")
    report = json.loads(path.read_text()) if path.exists() else {}
    print(f"\nper fault (report: {path}):\n")
    print(table(report, {}))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
