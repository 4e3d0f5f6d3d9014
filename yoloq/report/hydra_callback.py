"""After a Hydra multirun (`python scripts/train.py -m ...`), tabulate its finished runs in the sweep folder:
compare.md, compare.csv and compare.png. Registered for every multirun in conf/config.yaml (hydra.callbacks);
single runs do not call it."""

from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback

from yoloq.report.compare import collect, write_report


class CompareRuns(Callback):
    def on_multirun_end(self, config, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        rows = collect(sorted(p for p in sweep.iterdir() if p.is_dir()))
        if not rows:
            print(f"compare: no finished run in {sweep}", flush=True)
            return
        table = write_report(rows, sweep)
        print(f"\n{table}\n\nwrote {sweep / 'compare.md'} and compare.csv (per model in its own folder where the "
              "sweep has several), with the charts", flush=True)
