import json
import subprocess
import sys
from pathlib import Path

from yoloq.report.compare import collect, markdown_table

ROOT = Path(__file__).resolve().parents[2]


def fake_run(folder: Path, method: str, bits: int, seed: int, qat: float, folded: float | None = None,
             model: str | None = None):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"seed: {seed}\n" + (f"model:\n  name: {model}\n" if model else ""))
    rows = [{"stage": "fp", "method": "fp", "bits": "FP32", "metrics": {"mAP50-95": 0.6, "mAP50": 0.8}},
            {"stage": "qat", "method": method, "bits": f"W{bits}A{bits}", "metrics": {"mAP50-95": qat, "mAP50": 0}}]
    if folded is not None:
        rows += [{"stage": "qc", "method": method, "bits": f"W{bits}A{bits}", "metrics": {"mAP50-95": 0, "mAP50": 0}},
                 {"stage": "folded", "method": method, "bits": f"W{bits}A{bits}",
                  "metrics": {"mAP50-95": folded, "mAP50": 0}}]
    (folder / "results.json").write_text(json.dumps(rows))


def test_table_means_and_spreads(tmp_path):
    fake_run(tmp_path / "a", "ema_qc", 3, 0, 0.30, 0.34)
    fake_run(tmp_path / "b", "ema_qc", 3, 1, 0.32, 0.36)
    fake_run(tmp_path / "c", "lsq", 4, 0, 0.40)
    (tmp_path / "unfinished").mkdir()
    rows = collect(sorted(tmp_path.iterdir()))
    table = markdown_table(rows)
    lines = table.splitlines()
    assert lines[0] == "| method | W4A4 | W3A3 |"
    assert "| lsq | 40.0 ± nan (n=1) |  |" in lines
    assert "| ema |  | 31.0 ± 1.4 (n=2) |" in lines
    assert "| ema+QC |  | 35.0 ± 1.4 (n=2) |" in lines
    assert lines.index("| lsq | 40.0 ± nan (n=1) |  |") < lines.index("| ema |  | 31.0 ± 1.4 (n=2) |")
    assert "FP model: 60.0" in table


def test_cli_writes_files_and_rejects_empty(tmp_path):
    fake_run(tmp_path / "runs" / "a", "lsq", 3, 0, 0.2)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare.py"), str(tmp_path / "runs" / "a"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "compare.md").read_text().startswith("| method | W3A3 |")
    assert (tmp_path / "out" / "compare.csv").read_text().splitlines()[0].startswith("run,model,label,bits,seed")
    assert (tmp_path / "out" / "compare.png").read_bytes()[:4] == b"\x89PNG"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare.py"), str(tmp_path / "nothing")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "none of the given folders" in proc.stderr and "Traceback" not in proc.stderr


def _add_masks(run: Path) -> None:
    rows = json.loads((run / "results.json").read_text())
    for r in rows:
        r["metrics"].update({"mask_mAP50-95": r["metrics"]["mAP50-95"] / 2, "mask_mAP50": 0.0})
    (run / "results.json").write_text(json.dumps(rows))


def test_mask_metric_of_seg_runs(tmp_path):
    seg = tmp_path / "seg"
    fake_run(seg, "lsq", 4, 0, 0.30)
    _add_masks(seg)
    rows = collect([seg])
    assert "| lsq | 15.0 ± nan (n=1) |" in markdown_table(rows, "mask_mAP50-95")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare.py"), str(seg), "--metric",
                           "mask_mAP50-95", "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    header = (tmp_path / "out" / "compare.csv").read_text().splitlines()[0]
    assert header == "run,model,label,bits,seed,mAP50-95,mAP50,mask_mAP50-95,mask_mAP50"
    from yoloq.report.compare import write_report

    report = write_report(rows, tmp_path / "both")  # the box metric: the mask tables follow
    assert report.index("### mAP50-95") < report.index("### mask_mAP50-95")
    assert "| lsq | 30.0 ± nan (n=1) |" in report and "| lsq | 15.0 ± nan (n=1) |" in report


def test_runs_of_two_models_are_never_pooled(tmp_path):
    """experiment=other_models sweeps two models with the same method labels: each gets its own report."""
    from yoloq.report.compare import paired_differences, write_report

    for seed in (0, 1):
        fake_run(tmp_path / f"v7-lsq{seed}", "lsq", 4, seed, 0.50 + seed / 100, model="yolov7-tiny")
        fake_run(tmp_path / f"v7-ema{seed}", "ema_qc", 4, seed, 0.52 + seed / 100, 0.53, model="yolov7-tiny")
        fake_run(tmp_path / f"seg-lsq{seed}", "lsq", 4, seed, 0.30, model="yolov5n-seg")
        _add_masks(tmp_path / f"seg-lsq{seed}")
    rows = collect(sorted(tmp_path.iterdir()))
    out = tmp_path / "report"
    top = write_report(rows, out)
    v7 = (out / "yolov7-tiny" / "compare.md").read_text()
    assert "| lsq | 50.5 ± 0.7 (n=2) |" in v7 and "| ema | 52.5 ± 0.7 (n=2) |" in v7
    assert "| ema | **+2.0 [+2.0, +2.0]** (n=2) |" in v7  # paired within yolov7-tiny only
    seg = (out / "yolov5n-seg" / "compare.md").read_text()
    assert "| lsq | 30.0 ± 0.0 (n=2) |" in seg and "### mask_mAP50-95" in seg and "ema" not in seg.split("###")[1]
    assert top.index("## yolov5n-seg") < top.index("## yolov7-tiny")
    assert "[yolov7-tiny/compare.md](yolov7-tiny/compare.md)" in top
    assert (out / "yolov7-tiny" / "compare.png").is_file() and (out / "compare.csv").is_file()
    assert [d["n"] for d in paired_differences([r for r in rows if r["model"] == "yolov7-tiny"])] == [2, 2]


def test_paired_differences_against_lsq_with_intervals(tmp_path):
    from yoloq.report.compare import paired_differences, paired_table

    lsq = {0: 0.40, 1: 0.42, 2: 0.38}
    for seed, v in lsq.items():
        fake_run(tmp_path / f"lsq{seed}", "lsq", 3, seed, v)
    for seed, d in {0: 0.020, 1: 0.021, 2: 0.019}.items():  # a consistent gain: the interval excludes 0
        fake_run(tmp_path / f"ema{seed}", "ema_qc", 3, seed, lsq[seed] + d, lsq[seed] + 3 * d)
    fake_run(tmp_path / "dampen0", "dampen", 3, 0, 0.41)  # one seed: no interval
    fake_run(tmp_path / "dampen7", "dampen", 3, 7, 0.90)  # a seed LSQ did not run: not paired
    rows = collect(sorted(tmp_path.iterdir()))
    diffs = {d["method"]: d for d in paired_differences(rows)}
    ema = diffs["ema"]
    assert ema["n"] == 3 and ema["seeds"] == [0, 1, 2]
    assert abs(ema["mean_diff"] - 0.020) < 1e-12
    half = 4.302652729911275 * 0.001 / 3 ** 0.5  # t(0.975, 2) x sd / sqrt(n)
    assert abs(ema["ci_high"] - ema["ci_low"] - 2 * half) < 1e-9
    assert diffs["dampen"]["n"] == 1 and abs(diffs["dampen"]["mean_diff"] - 0.01) < 1e-12
    table = paired_table(rows)
    assert "| ema | **+2.0 [+1.8, +2.2]** (n=3) |" in table
    assert "| ema+QC | **+6.0 [+5.3, +6.7]** (n=3) |" in table
    assert "| dampen | +1.0 (n=1, no interval) |" in table
    out = tmp_path / "report"
    from yoloq.report.compare import write_report

    write_report(rows, out)
    assert "vs lsq, paired" in (out / "compare.md").read_text()


def test_qc_gains_pair_each_qc_row_with_the_model_it_corrected(tmp_path):
    """Table 7's form: every QC variant against its own QAT model (borrowed through qat_from), not against LSQ."""
    from yoloq.report.compare import qc_gain_table, qc_gains, write_report

    for seed, qat in enumerate([0.50, 0.55, 0.45]):  # a seed spread that pairing removes
        fake_run(tmp_path / f"ema{seed}", "ema_qc", 4, seed, qat, qat + 0.010 + 0.001 * seed)
        fake_run(tmp_path / f"pt{seed}", "ema_qc", 4, seed, qat, qat - 0.002 * seed)
        (tmp_path / f"pt{seed}" / "config.yaml").write_text(
            f"seed: {seed}\nqat_from: {tmp_path / f'ema{seed}'}\nmethod:\n  qc:\n    per_channel: false\n")
    fake_run(tmp_path / "lsq0", "lsq", 4, 0, 0.40)  # no QC row: nothing to add
    rows = collect(sorted(tmp_path.iterdir()))
    gains = {d["method"]: d for d in qc_gains(rows)}
    assert set(gains) == {"ema+QC", "ema+QC[per-tensor]"}
    assert gains["ema+QC"]["baseline"] == "ema" and gains["ema+QC"]["n"] == 3
    assert abs(gains["ema+QC"]["mean_diff"] - 0.011) < 1e-12
    assert abs(gains["ema+QC[per-tensor]"]["mean_diff"] + 0.002) < 1e-12
    table = qc_gain_table(rows)
    assert "| ema+QC | **+1.1 [+0.9, +1.3]** (n=3) |" in table
    assert "| ema+QC[per-tensor] | -0.2 [" in table
    write_report(rows, tmp_path / "report")
    assert "| what QC adds, paired | W4A4 |" in (tmp_path / "report" / "compare.md").read_text()
    assert qc_gain_table(collect([tmp_path / "lsq0"])) == ""


def test_noisy_differences_are_not_called_real(tmp_path):
    from yoloq.report.compare import paired_table

    for seed, (a, b) in enumerate([(0.40, 0.42), (0.42, 0.43), (0.38, 0.37)]):
        fake_run(tmp_path / f"lsq{seed}", "lsq", 4, seed, a)
        fake_run(tmp_path / f"ema{seed}", "ema", 4, seed, b)
    table = paired_table(collect(sorted(tmp_path.iterdir())))
    assert "| ema | +0.7 [" in table and "**" not in table.split("\n\n")[0]


def test_variants_soft_rows_and_borrowed_qat_models_are_labelled_and_counted_once(tmp_path):
    """`*`, per-channel weights, asymmetric activations and QC variants get their own rows; soft rounding adds `<m> soft`; a qat_from run
    adds only its QC row (its QAT model is the source's, already counted there)."""
    fake_run(tmp_path / "src", "ema_qc", 4, 0, 0.50, 0.52)
    rows = json.loads((tmp_path / "src" / "results.json").read_text())
    rows.insert(2, {"stage": "qat-soft", "method": "ema_qc", "bits": "W4A4", "metrics": {"mAP50-95": 0.51}})
    (tmp_path / "src" / "results.json").write_text(json.dumps(rows))
    fake_run(tmp_path / "pt", "ema_qc", 4, 0, 0.50, 0.49)
    (tmp_path / "pt" / "config.yaml").write_text(
        f"seed: 0\nqat_from: {tmp_path / 'src'}\nmethod:\n  qc:\n    per_channel: false\n    shift: false\n")
    fake_run(tmp_path / "star", "lsq", 4, 0, 0.40)
    (tmp_path / "star" / "config.yaml").write_text("seed: 0\nquant:\n  first_last_bits: null\n  per_channel: true\n")
    fake_run(tmp_path / "mixed", "lsq", 4, 0, 0.45)
    (tmp_path / "mixed" / "config.yaml").write_text("seed: 0\nquant:\n  layer_bits:\n    layers: {a: {w_bits: 2, a_bits: 2}}\n")
    for name, zero_point, qat in (("asym", "float", 0.47), ("asym-int", "integer", 0.46)):
        fake_run(tmp_path / name, "lsq", 4, 0, qat)
        (tmp_path / name / "config.yaml").write_text(
            f"seed: 0\nquant:\n  act_asymmetric: true\n  act_zero_point: {zero_point}\n")
    labels = [(r["label"], r["mAP50-95"]) for r in collect(sorted(tmp_path.iterdir())) if r["label"] != "FP"]
    assert sorted(labels) == sorted([("ema+QC[per-tensor, scale only]", 0.49), ("ema", 0.50), ("ema soft", 0.51),
                                     ("ema+QC", 0.52), ("lsq* pc-W", 0.40), ("lsq mixed", 0.45),
                                     ("lsq asym", 0.47), ("lsq asym int-zp", 0.46)])


def test_qc_trained_otherwise_than_the_default_gets_its_own_row_and_gain(tmp_path):
    """A QC stage with another learning rate, length or data share than trainer/default.yaml's is a variant of its
    own (`ema+QC[lr 0.0001, 3 ep]`), paired with the QAT model it corrected; one at the defaults stays `ema+QC`."""
    from yoloq.report.compare import qc_gains

    for seed in (0, 1):
        fake_run(tmp_path / f"src{seed}", "ema_qc", 4, seed, 0.50 + seed / 100, 0.51 + seed / 100)
        (tmp_path / f"src{seed}" / "config.yaml").write_text(
            f"seed: {seed}\ntrainer:\n  qc:\n    lr: 0.001\n    epochs: 1\n    fraction: 1.0\n")
        fake_run(tmp_path / f"slow{seed}", "ema_qc", 4, seed, 0.50 + seed / 100, 0.53 + seed / 100)
        (tmp_path / f"slow{seed}" / "config.yaml").write_text(
            f"seed: {seed}\nqat_from: {tmp_path / f'src{seed}'}\ntrainer:\n  qc:\n    lr: 1.0e-4\n    epochs: 3\n")
        fake_run(tmp_path / f"paper{seed}", "ema_qc", 4, seed, 0.50 + seed / 100, 0.49 + seed / 100)
        (tmp_path / f"paper{seed}" / "config.yaml").write_text(
            f"seed: {seed}\nqat_from: {tmp_path / f'src{seed}'}\nmethod:\n  qc:\n    per_channel: false\n"
            "trainer:\n  qc:\n    fraction: 0.1\n")
    rows = collect(sorted(tmp_path.iterdir()))
    assert sorted({r["label"] for r in rows}) == ["FP", "ema", "ema+QC", "ema+QC[lr 0.0001, 3 ep]",
                                                   "ema+QC[per-tensor, 10% data]"]
    assert len([r for r in rows if r["label"] == "ema"]) == 2  # the borrowed QAT model counts once per seed
    gains = {(g["method"], g["baseline"]): (g["n"], round(100 * g["mean_diff"], 6)) for g in qc_gains(rows)}
    assert gains == {("ema+QC", "ema"): (2, 1.0), ("ema+QC[lr 0.0001, 3 ep]", "ema"): (2, 3.0),
                     ("ema+QC[per-tensor, 10% data]", "ema"): (2, -1.0)}


def test_borrowed_qat_rows_count_once_when_their_source_is_not_collected(tmp_path):
    """QC variants trained from another run's QAT model (qat_from) stand in for that model when the source run is
    not among the folders, once per source: five variants of one model are one seed of `ema`, not five."""
    for variant in ("pt", "scale", "shift"):
        fake_run(tmp_path / variant, "ema_qc", 4, 0, 0.50, 0.49)
        (tmp_path / variant / "config.yaml").write_text(f"seed: 0\nqat_from: {tmp_path / 'src'}/qat.pt\n")
    fake_run(tmp_path / "other", "ema_qc", 4, 1, 0.55, 0.56)
    (tmp_path / "other" / "config.yaml").write_text(f"seed: 1\nqat_from: {tmp_path / 'src1'}\n")
    rows = collect(sorted(tmp_path.iterdir()))
    ema = sorted((r["seed"], r["mAP50-95"]) for r in rows if r["label"] == "ema")
    assert ema == [(0, 0.50), (1, 0.55)]
    assert len([r for r in rows if r["label"] == "ema+QC"]) == 4  # every variant's own QC row stays


def _on_asym_grid(run: Path, seed: int) -> None:
    (run / "config.yaml").write_text(f"seed: {seed}\nquant:\n  act_asymmetric: true\n  act_zero_point: integer\n")


def test_methods_on_asymmetric_activations_are_paired_with_lsq_on_their_own_grid(tmp_path):
    """A grid such as experiment=paper_grid_asym: EMA is compared with LSQ on the same activations, not with the
    signed LSQ (which would credit EMA with what the grid gains); that grid's LSQ is compared with the signed one."""
    from yoloq.report.compare import on_grid, paired_differences, paired_table

    for seed in (0, 1, 2):
        fake_run(tmp_path / f"lsq{seed}", "lsq", 3, seed, 0.30 + 0.01 * seed)
        fake_run(tmp_path / f"alsq{seed}", "lsq_qc", 3, seed, 0.50 + 0.01 * seed, 0.51 + 0.01 * seed)
        fake_run(tmp_path / f"aema{seed}", "ema", 3, seed, 0.49 + 0.01 * seed)
        for name in (f"alsq{seed}", f"aema{seed}"):
            _on_asym_grid(tmp_path / name, seed)
    diffs = {d["method"]: d for d in paired_differences(collect(sorted(tmp_path.iterdir())))}
    assert (diffs["ema asym int-zp"]["baseline"], round(diffs["ema asym int-zp"]["mean_diff"], 9)) == (
        "lsq asym int-zp", -0.01)
    assert (diffs["lsq asym int-zp"]["baseline"], round(diffs["lsq asym int-zp"]["mean_diff"], 9)) == ("lsq", 0.2)
    assert diffs["lsq asym int-zp+QC"]["baseline"] == "lsq asym int-zp"
    assert "against `lsq asym int-zp` (its own grid)" in paired_table(collect(sorted(tmp_path.iterdir())))
    rows_in_table = [line.split(" | ")[0].lstrip("| ") for line in markdown_table(collect(sorted(tmp_path.iterdir())))
                     .splitlines()[2:] if line.startswith("| ")]
    assert rows_in_table == ["lsq", "lsq asym int-zp", "lsq asym int-zp+QC", "ema asym int-zp"]  # paper order, grid
    assert [on_grid(label, " asym") for label in ("ema", "ema+QC[per-tensor]", "ema* soft", "ema pc-W+QC")] == [
        "ema asym", "ema asym+QC[per-tensor]", "ema* asym soft", "ema pc-W asym+QC"]


def test_paired_rows_follow_the_main_table_whichever_bits_a_method_ran_at(tmp_path):
    # EMA ran at both widths, dampening at W3A3 only: dampening still comes first, as in the main table.
    from yoloq.report.compare import paired_table

    for seed in (0, 1):
        fake_run(tmp_path / f"lsq4-{seed}", "lsq", 4, seed, 0.50)
        fake_run(tmp_path / f"lsq3-{seed}", "lsq", 3, seed, 0.40)
        fake_run(tmp_path / f"ema4-{seed}", "ema", 4, seed, 0.51)
        fake_run(tmp_path / f"ema3-{seed}", "ema", 3, seed, 0.41)
        fake_run(tmp_path / f"dampen3-{seed}", "dampen", 3, seed, 0.42)
    lines = paired_table(collect(sorted(tmp_path.iterdir()))).splitlines()
    assert lines[0] == "| vs lsq, paired | W4A4 | W3A3 |"
    assert [line.split(" | ")[0] for line in lines[2:4]] == ["| dampen", "| ema"]


def test_variants_follow_their_own_grid_and_base_method():
    """Soft, Table 7, `*` and pc-W rows sit under their activation grid's main rows, LSQ's before EMA's, so the
    asymmetric grid reads as one block after the signed one (not one alphabetical tail for both)."""
    from yoloq.report.compare import paper_order

    labels = ["lsq soft", "ema*", "ema soft", "ema+QC[per-tensor]", "lsq", "ema", "dampen soft", "ema asym int-zp",
              "lsq asym int-zp soft", "lsq asym int-zp", "freeze soft", "ema asym int-zp+QC[scale only]"]
    assert paper_order(labels) == [
        "lsq", "ema", "lsq soft", "dampen soft", "freeze soft", "ema soft", "ema*", "ema+QC[per-tensor]",
        "lsq asym int-zp", "ema asym int-zp", "lsq asym int-zp soft", "ema asym int-zp+QC[scale only]"]
