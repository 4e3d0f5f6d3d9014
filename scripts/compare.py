"""Tabulate finished runs: `python scripts/compare.py runs/multirun-*/*` (folders holding results.json).

Prints a markdown table (methods x bits, mAP@0.5:0.95 mean ± std over seeds) and writes it, with the
per-run rows as CSV, next to the first run unless --out says where.
"""

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from yoloq.report.compare import collect, markdown_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (results.json inside)")
    parser.add_argument("--out", type=Path, default=None, help="folder for compare.md and compare.csv")
    args = parser.parse_args()
    rows = collect(args.runs)
    if not rows:
        sys.exit("error: none of the given folders holds a results.json: pass finished run folders, e.g. runs/*")
    table = markdown_table(rows)
    print(table)
    out = args.out or args.runs[0].parent
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(table + "\n")
    with open(out / "compare.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
