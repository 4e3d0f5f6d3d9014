import json
import shutil
from pathlib import Path

import pytest

from yoloq.report.command import main as compare_main
from yoloq.report.convergence import main as convergence_main
from yoloq.report.convergence import write_convergence
from yoloq.report.records import epoch_lines, keep_records

from tests.report.test_convergence import ROOT, length_run


def _with_step_lines(run):
    """A trainer's metrics.jsonl also holds a line per logged step (and may end in a line cut short)."""
    lines = (run / "metrics.jsonl").read_text()
    step = json.dumps({"kind": "qat", "step": 10, "box_loss": 3.0}) + "\n"
    (run / "metrics.jsonl").write_text(step + lines + step + '{"kind": "qat-ep')


def test_a_report_rebuilt_from_its_records_on_a_machine_without_the_runs(tmp_path, capsys):
    runs = tmp_path / "machine_a"
    for seed, (e8, e16) in enumerate([(0.60, 0.61), (0.62, 0.62)]):
        length_run(runs / f"e8_s{seed}", "lsq", 8, seed, e8, {4: 0.5})
        length_run(runs / f"e16_s{seed}", "lsq", 16, seed, e16)
        _with_step_lines(runs / f"e8_s{seed}")
    report = tmp_path / "docs" / "convergence"
    text = write_convergence(sorted(runs.iterdir()), report)
    records = sorted(p.name for p in (report / "runs").iterdir())
    assert records == ["e16_s0", "e16_s1", "e8_s0", "e8_s1"]
    kept = (report / "runs" / "e8_s0" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["kind"] for line in kept] == ["qat-epoch", "qat-epoch"]  # no step lines, no torn line
    assert json.loads((report / "runs" / "e8_s0" / "record.json").read_text())["from"] == str((runs / "e8_s0").resolve())

    shutil.rmtree(runs)  # another machine: only the committed report
    again = write_convergence(sorted((report / "runs").iterdir()), tmp_path / "rebuilt")
    assert again == text
    # The records themselves are inside the report: rebuilding in place copies nothing and leaves them as they were.
    capsys.readouterr()
    assert write_convergence(sorted((report / "runs").iterdir()), report) == text
    assert "kept the records" not in capsys.readouterr().out
    assert sorted(p.name for p in (report / "runs").iterdir()) == records


def test_extending_a_report_adds_records_and_names_those_left_out(tmp_path, capsys):
    report = tmp_path / "report"
    length_run(tmp_path / "sweep_a" / "0-lsq-s0", "lsq", 8, 0, 0.60)
    length_run(tmp_path / "sweep_b" / "0-lsq-s0", "lsq", 16, 0, 0.61)  # sweeps repeat their job names
    write_convergence([tmp_path / "sweep_a" / "0-lsq-s0"], report)
    write_convergence([*(report / "runs").iterdir(), tmp_path / "sweep_b" / "0-lsq-s0"], report)
    assert sorted(p.name for p in (report / "runs").iterdir()) == ["0-lsq-s0", "sweep_b-0-lsq-s0"]
    # The same run reported again refreshes its record instead of adding a second one.
    write_convergence([tmp_path / "sweep_a" / "0-lsq-s0", tmp_path / "sweep_b" / "0-lsq-s0"], report)
    assert len(list((report / "runs").iterdir())) == 2
    capsys.readouterr()
    write_convergence([report / "runs" / "0-lsq-s0"], report)  # a rebuild that leaves a record out says so
    out = capsys.readouterr().out
    assert "note: 1 records in" in out and "are not in this report: sweep_b-0-lsq-s0 (pass them too" in out
    assert (report / "runs" / "sweep_b-0-lsq-s0" / "results.json").is_file()  # kept: it may be the only copy


def test_the_compare_command_keeps_records_but_a_multiruns_own_report_does_not_copy(tmp_path):
    sweep = tmp_path / "multirun"
    length_run(sweep / "0-lsq-s0", "lsq", 8, 0, 0.60)
    length_run(sweep / "1-lsq-s1", "lsq", 8, 1, 0.62)
    compare_main([str(p) for p in sorted(sweep.iterdir())])  # --out defaults to the sweep folder
    assert not (sweep / "runs").exists()
    compare_main([str(p) for p in sorted(sweep.iterdir())] + ["--out", str(tmp_path / "docs")])
    assert sorted(p.name for p in (tmp_path / "docs" / "runs").iterdir()) == ["0-lsq-s0", "1-lsq-s1"]
    assert keep_records([tmp_path / "not_a_run"], tmp_path / "docs") == []


def test_no_free_record_name_is_a_one_line_error_in_both_commands(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    length_run(sweep / "0-lsq-s0", "lsq", 8, 0, 0.60)
    taken = tmp_path / "docs" / "runs"  # every name a record of this run could take holds another run's record
    for name in ["0-lsq-s0", "sweep-0-lsq-s0"] + [f"sweep-0-lsq-s0-{i}" for i in range(2, 1000)]:
        (taken / name).mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_:
        compare_main([str(sweep / "0-lsq-s0"), "--out", str(tmp_path / "docs")])
    message = str(exit_.value.code)
    assert message.startswith("error: no free record name for") and "rename the run folder" in message
    assert convergence_main([str(sweep / "0-lsq-s0"), "--out", str(tmp_path / "docs")]) == 2
    assert capsys.readouterr().err.startswith("error: no free record name for")


def test_epoch_lines_keep_every_per_epoch_kind():
    text = "".join(json.dumps({"kind": k, "step": 1}) + "\n" for k in ["fp", "fp-epoch", "qat", "qat-epoch", "qc-epoch"])
    assert [json.loads(line)["kind"] for line in epoch_lines(text).splitlines()] == ["fp-epoch", "qat-epoch", "qc-epoch"]


def test_committed_reports_rebuild_byte_identical_from_their_committed_records(tmp_path, monkeypatch):
    """The records are the report's inputs in the repository: a clean clone must hold them (not git-ignored) and
    rebuild the same tables from them."""
    monkeypatch.chdir(ROOT)
    reports = sorted(p.parent for p in Path("docs/compare").glob("*/runs") if (p.parent / "convergence.md").is_file())
    assert Path("docs/compare/convergence_v5n_fp40") in reports
    for report in reports:
        out = tmp_path / report.name
        write_convergence(sorted(report.glob("runs/*")), out)
        for table in ["convergence.md", "convergence.csv"]:
            assert (out / table).read_text() == (report / table).read_text(), f"{report / table} differs when rebuilt"
