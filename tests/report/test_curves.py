import json

from tests.report.test_compare import fake_run
from yoloq.report.compare import collect, write_report
from yoloq.report.curves import collect_curves, curves_table


def log_epochs(run, values: dict[int, float]):
    rows = [{"kind": "fp-epoch", "step": 0, "mAP50-95": 0.6},
            {"kind": "qat", "step": 10, "box_loss": 1.0}]  # a step row: no mAP, not a point
    rows += [{"kind": "qat-epoch", "step": 100 * e, "epoch": e, "mAP50-95": v} for e, v in values.items()]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_curves_average_the_seeds_per_epoch_and_skip_borrowed_models(tmp_path):
    for s, last in ((0, 0.60), (1, 0.62)):
        fake_run(tmp_path / f"ema{s}", "ema_qc", 3, s, last, last + 0.01)
        log_epochs(tmp_path / f"ema{s}", {2: 0.50, 4: last})
    fake_run(tmp_path / "lsq0", "lsq", 3, 0, 0.58)
    log_epochs(tmp_path / "lsq0", {2: 0.40, 4: 0.58})
    with (tmp_path / "lsq0" / "metrics.jsonl").open("a") as f:
        f.write('{"kind": "qat-epoch", "epoch": 6, "mAP5\n')  # cut short by a kill: skipped, not an error
    fake_run(tmp_path / "qc_only", "lsq_qc", 3, 1, 0.57, 0.58)  # QC on another run's QAT model
    (tmp_path / "qc_only" / "config.yaml").write_text(f"seed: 1\nqat_from: {tmp_path / 'elsewhere'}\n")
    log_epochs(tmp_path / "qc_only", {2: 0.99})
    fake_run(tmp_path / "no_log", "lsq", 3, 2, 0.5)  # an old run without metrics.jsonl: no curve, no error
    curves = collect_curves(sorted(tmp_path.iterdir()))
    assert curves == {("ema", "W3A3"): {2: [0.50, 0.50], 4: [0.60, 0.62]}, ("lsq", "W3A3"): {2: [0.40], 4: [0.58]}}
    table = curves_table(curves)
    assert "| ema | W3A3 | 50.0 ± 0.0 (n=2) | 61.0 ± 1.4 (n=2) |" in table
    assert "| lsq | W3A3 | 40.0 (n=1) | 58.0 (n=1) |" in table
    write_report(collect(sorted(tmp_path.iterdir())), tmp_path / "out")
    assert (tmp_path / "out" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "QAT mAP50-95, by epoch" in (tmp_path / "out" / "compare.md").read_text()


def test_no_curves_no_plot(tmp_path):
    fake_run(tmp_path / "a", "lsq", 4, 0, 0.4)
    write_report(collect([tmp_path / "a"]), tmp_path / "out")
    assert not (tmp_path / "out" / "curves.png").exists()


def test_curves_rows_follow_the_main_table(tmp_path):
    # Paper order (LSQ before EMA), widest bits first, as in the report's main table; not alphabetical.
    for name, method, bits in (("a", "ema", 3), ("b", "lsq", 3), ("c", "lsq", 4), ("d", "dampen", 3)):
        fake_run(tmp_path / name, method, bits, 0, 0.5)
        log_epochs(tmp_path / name, {2: 0.4, 4: 0.5})
    rows = [line.split(" | ")[:2] for line in curves_table(collect_curves(sorted(tmp_path.iterdir()))).splitlines()
            if line.startswith("| ") and "W" in line.split(" | ")[1]]
    assert rows == [["| lsq", "W4A4"], ["| lsq", "W3A3"], ["| dampen", "W3A3"], ["| ema", "W3A3"]]
