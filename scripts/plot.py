#!/usr/bin/env python
"""Re-plot any results store: ``python scripts/plot.py outputs/main [--out pareto.png]``.

Reads ``results.jsonl`` (or every one under a directory, e.g. a multirun), writes the Pareto
plot and ``frontier.csv`` beside it and prints the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ttc.evaluate import format_table
from ttc.plots import plot_pareto, write_frontier_csv
from ttc.results import load_records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", type=Path, help="results.jsonl or a directory containing some")
    ap.add_argument("--out", type=Path, default=None, help="figure path (default: beside store)")
    ap.add_argument("--flops", choices=["flops_useful", "flops_executed"], default="flops_useful")
    args = ap.parse_args(argv)
    if not args.store.exists():
        print(f"plot: {args.store} does not exist", file=sys.stderr)
        return 2
    records = load_records(args.store)
    if not records:
        print(f"plot: no records in {args.store}", file=sys.stderr)
        return 2
    base = args.store if args.store.is_dir() else args.store.parent
    out = args.out or base / "pareto.png"
    plot_pareto(records, out, flops_key=args.flops)
    write_frontier_csv(records, base / "frontier.csv", args.flops)
    print(format_table(records))
    print(f"\nwrote {out} and {base / 'frontier.csv'} ({len(records)} records)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
