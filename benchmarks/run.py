"""Run every benchmark and write the results.

    python benchmarks/run.py [--quick] [--only request,load,...] [--out benchmarks/results]

Imports each ``benchmarks/bench_*.py`` (a harness module: ``run(quick) -> dict``,
see ``benchmarks/_harness.py``), runs them one after another in this process,
then writes ``<out>/results.json`` (every row, every target, the machine) and
``<out>/results.md`` (a table per benchmark and one of the targets), and prints
the markdown. ``--quick`` uses tiny counts: it proves the benchmarks still run
(CI calls it) and its figures mean nothing; it writes to a new temporary folder
unless ``--out`` is given, so it never overwrites the figures the docs quote nor
leaves files in the work tree.

``--update-docs`` also puts the tables into docs/performance.md, between its
``<!-- results:begin -->`` and ``<!-- results:end -->`` lines (a full run only).

Exit status 1 if a benchmark raised (its row says what); a missing optional
package or service is a skipped row, not a failure.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import _harness as h


def discover() -> list[str]:
    return sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))


def run_one(short: str, quick: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        mod = importlib.import_module(f"bench_{short}")
        run = getattr(mod, "run", None)
        if run is None:
            res: dict[str, Any] = {"name": short, "rows": [], "targets": [],
                                   "note": f"bench_{short}.py has no run(quick): not a harness module yet, skipped"}
        else:
            res = run(quick)
            res.setdefault("name", short)
            res.setdefault("rows", [])
            res.setdefault("targets", [])
    except BaseException as exc:  # one broken benchmark must not hide the others (SystemExit too)
        if isinstance(exc, KeyboardInterrupt):
            raise
        traceback.print_exc()
        res = {"name": short, "rows": [], "targets": [], "error": f"{exc.__class__.__name__}: {exc}"}
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res


DOCS = HERE.parent / "docs" / "performance.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def update_docs(md: str) -> None:
    """Replace the results block of docs/performance.md (headings one level down: ``####``)."""
    text = DOCS.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{DOCS} has no {BEGIN} ... {END} block")
    body = md.replace("\n### ", "\n#### ")
    # tests/docs/test_wording.py: the docs use only words a reader can know
    unknown = sorted({m.group(0) for m in re.finditer(r"\bseed(?:'s|s)?\b", body, re.IGNORECASE)})
    if unknown:
        raise SystemExit(f"not put into {DOCS.name}: a row or note says {unknown} (tests/docs/test_wording.py "
                         "refuses it); name the block as the docs do, e.g. 'audit on'")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOCS.write_text(f"{head}{BEGIN}\n{body.strip()}\n{END}{tail}", encoding="utf-8")
    print(f"updated {os.path.relpath(DOCS)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny counts: proves every benchmark runs (CI)")
    ap.add_argument("--only", default="", help="comma-separated names (bench_<name>.py), e.g. request,load")
    ap.add_argument("--out", default=None, help="output folder (default benchmarks/results; --quick: a temporary one)")
    ap.add_argument("--update-docs", action="store_true",
                    help="put the tables into docs/performance.md (between its results markers)")
    args = ap.parse_args(argv)
    if args.update_docs and args.quick:
        ap.error("--update-docs takes a full run: quick figures mean nothing")

    names = discover()
    if args.only:
        wanted = [n.strip().removeprefix("bench_").removesuffix(".py") for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            ap.error(f"no benchmark named {', '.join(unknown)} (have: {', '.join(names)})")
        names = wanted
    if args.out:
        out = Path(args.out)
    elif args.quick:
        out = Path(tempfile.mkdtemp(prefix="ccsso-bench-quick-"))
    else:
        out = HERE / "results"
    out.mkdir(parents=True, exist_ok=True)

    started = datetime.datetime.now(datetime.timezone.utc)
    results = []
    for name in names:
        print(f"--> bench_{name}{' (quick)' if args.quick else ''}", file=sys.stderr, flush=True)
        res = run_one(name, args.quick)
        print(f"    {res['seconds']} s{'  FAILED: ' + res['error'] if res.get('error') else ''}",
              file=sys.stderr, flush=True)
        results.append(res)

    doc = {"started": started.isoformat(timespec="seconds"), "quick": args.quick, "machine": h.machine(),
           "benchmarks": results}
    (out / "results.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    m = doc["machine"]
    header = (f"Measured {doc['started']} on {m.get('cpus')} CPUs, Python {m.get('python')}, "
              f"commit {m.get('commit') or '?'}, hiredis {'on' if m.get('hiredis') else 'off'}, "
              f"load average {m.get('loadavg')}"
              f"{' -- QUICK MODE: counts too small to mean anything' if args.quick else ''}.\n")
    md = header + "\n" + h.render_markdown(results)
    (out / "results.md").write_text(md)
    print(md)
    print(f"wrote {os.path.relpath(out / 'results.json')} and {os.path.relpath(out / 'results.md')}")
    if args.update_docs:
        update_docs(md)
    return 1 if any(r.get("error") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
