"""Tabulate finished runs: `yoloq compare runs/multirun-*/*` or `python scripts/compare.py ...` (folders
holding results.json).

Prints a markdown table (methods x bits, mAP@0.5:0.95 mean ± std over seeds) and writes it, the per-run
rows as CSV and a bar chart PNG next to the first run unless --out says where.
"""

import argparse
import sys
from pathlib import Path

from yoloq.errors import UserError
from yoloq.report.compare import METRICS, collect, write_report
from yoloq.report.records import keep_records


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="yoloq compare", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (results.json inside)")
    parser.add_argument("--out", type=Path, default=None, help="folder for compare.md, .csv and .png")
    parser.add_argument("--metric", default="mAP50-95", choices=METRICS,
                        help="the table's and chart's metric (mask_* for -seg runs)")
    args = parser.parse_args(argv)
    rows = collect(args.runs)
    if not rows:
        sys.exit("error: none of the given folders holds a results.json: pass finished run folders, e.g. runs/*")
    out = args.out or args.runs[0].parent
    if not any(args.metric in r for r in rows):
        sys.exit(f"error: no run has {args.metric}: mask metrics come from -seg models; use --metric mAP50-95")
    print(write_report(rows, out, args.metric))
    try:
        keep_records(sorted({Path(r["run"]) for r in rows}), out)
    except UserError as e:
        sys.exit(f"error: {e}")
    print(f"wrote {out / 'compare.md'} and compare.csv (per model in its own folder where the runs are of several), "
          "with the charts")
