"""Run the benchmarks, print one table, write ``benchmarks/results/<name>.json`` per benchmark."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from . import REQUIRED_KEYS, discover, load

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "budgetguard": version("llm-budgetguard"),
        "tiktoken": version("tiktoken"),
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 1000 else f"{value:,.0f}"
    return str(value)


def _result(r: dict[str, Any]) -> str:
    """PASS / FAIL; ``-`` for a comparison without a target; SKIP for a row that could not run."""
    if r.get("skipped"):
        return "SKIP"
    if r["target"] is None:
        return "-"
    return "PASS" if r["ratio"] <= r["target"] else "FAIL"


def _table(results: dict[str, list[dict[str, Any]]]) -> str:
    header = ("benchmark", "measurement", "value", "baseline", "ratio", "ratio IQR", "target", "result")
    lines = [header]
    for bench, rows in results.items():
        for r in rows:
            if r.get("skipped"):
                lines.append((bench, r["name"], r["skipped"], "", "", "", "", "SKIP"))
                continue
            iqr = r.get("ratio_iqr")
            lines.append(
                (
                    bench,
                    r["name"],
                    f"{_fmt(r['value'])} {r.get('unit', '')}".strip(),
                    f"{_fmt(r['baseline'])} {r.get('unit', '')}".strip(),
                    f"{r['ratio']:.3f}",
                    f"{iqr[0]:.3f}-{iqr[1]:.3f}" if iqr else "",
                    "" if r["target"] is None else f"<= {r['target']}",
                    _result(r),
                )
            )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [
        "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    available = discover()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all of {available})"
    )
    parser.add_argument("--quick", action="store_true", help="fewer iterations: a smoke run for CI")
    parser.add_argument("--check", action="store_true", help="exit with status 1 if any target fails")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where to write <name>.json")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(available))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; available: {available}")

    results: dict[str, list[dict[str, Any]]] = {}
    args.results_dir.mkdir(parents=True, exist_ok=True)
    for name in args.names or available:
        print(f"running {name}{' (quick)' if args.quick else ''}...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        rows = load(name)(args.quick)
        seconds = time.perf_counter() - started
        for r in rows:
            missing = [key for key in REQUIRED_KEYS if key not in r]
            if missing:
                raise RuntimeError(f"benchmark {name}: row {r.get('name')!r} lacks {missing}")
        results[name] = rows
        report = {
            "benchmark": name,
            "quick": args.quick,
            "seconds": round(seconds, 2),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": _machine(),
            "rows": rows,
        }
        path = args.results_dir / f"{name}.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"  {len(rows)} rows in {seconds:.1f} s -> {path}", file=sys.stderr, flush=True)

    print(_table(results))
    failed = [f"{b}: {r['name']}" for b, rows in results.items() for r in rows if _result(r) == "FAIL"]
    if failed:
        print(f"\n{len(failed)} target(s) missed: " + "; ".join(failed))
    return 1 if failed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
