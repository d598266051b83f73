"""Analysis inputs that once crashed or hung the analysis: each is now one line naming the file, exit 2."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
POINT = "hidden=256"


def _run_json_is_a_list(sweep):
    (sweep / POINT / "run.json").write_text("[1, 2]\n")
    return sweep / POINT / "run.json", "expected a JSON object, found list"


def _torn_run_json(sweep):
    path = sweep / POINT / "run.json"
    path.write_text(path.read_text()[:40])
    return path, "cannot be read as a JSON object (torn or not written by bitnet?)"


def _grid_json_is_empty_list(sweep):
    (sweep / "grid.json").write_text("[]\n")
    return sweep / "grid.json", "expected a JSON object, found list"


def _broken_overrides(sweep):
    (sweep / POINT / ".hydra" / "overrides.yaml").write_text("- hidden=[\n")
    return sweep / POINT / ".hydra" / "overrides.yaml", "not overrides as Hydra writes them"


def _overrides_not_yaml(sweep):
    (sweep / POINT / ".hydra" / "overrides.yaml").write_text("- a: [\n")
    return sweep / POINT / ".hydra" / "overrides.yaml", "cannot be read as a YAML list of overrides"


def _metrics_is_a_folder(sweep):
    (sweep / POINT / "metrics.csv").unlink()
    (sweep / POINT / "metrics.csv").mkdir()
    return sweep / POINT / "metrics.csv", "not a regular file"


def _metrics_is_a_fifo(sweep):
    (sweep / POINT / "metrics.csv").unlink()
    os.mkfifo(sweep / POINT / "metrics.csv")  # reading it would block forever
    return sweep / POINT / "metrics.csv", "not a regular file"


CASES = [_run_json_is_a_list, _torn_run_json, _grid_json_is_empty_list, _broken_overrides, _overrides_not_yaml,
         _metrics_is_a_folder, _metrics_is_a_fifo]


@pytest.mark.parametrize("damage", CASES, ids=[c.__name__.strip("_") for c in CASES])
def test_a_damaged_input_is_one_line_naming_the_file(tmp_path, damage, capsys):
    from analysis.render import main

    sweep = tmp_path / "sweep"
    shutil.copytree(FIXTURES / "partial_sweep", sweep)
    path, reason = damage(sweep)
    assert main([str(sweep), "--out", str(tmp_path / "out"), "--no-plots"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and reason in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_out_under_a_file_is_one_line(tmp_path, capsys):
    from analysis.render import main

    blocker = tmp_path / "a_file"
    blocker.write_text("x\n")
    assert main([str(FIXTURES / "partial_sweep"), "--out", str(blocker / "out"), "--no-plots"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --out {blocker / 'out'}: cannot write there ("), lines
    assert blocker.read_text() == "x\n"


@pytest.mark.parametrize("signum, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_stopped_analysis_says_so_and_marks_its_folder_incomplete(tmp_path, monkeypatch, capsys, signum, code):
    """The signal arrives while the outputs are written (here: when the plots start): one line, exit 128 + the
    signal's number, and the folder keeps an INCOMPLETE file so that nobody takes it for a finished analysis."""
    import signal

    from analysis import plots, report

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), getattr(signal, signum))
        raise AssertionError("the signal should have stopped the analysis")

    monkeypatch.setattr(plots, "save_plots", interrupted)
    out = tmp_path / "out"
    assert report.main([str(FIXTURES / "partial_sweep"), "--out", str(out)]) == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"interrupted by {signum}: {out} is incomplete (its INCOMPLETE file says so); run the same "
                     f"command again"]
    assert (out / "INCOMPLETE").exists() and (out / "tables.md").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is the analysis's only while it runs
    assert report.main([str(FIXTURES / "partial_sweep"), "--out", str(out), "--no-plots"]) == 0
    assert not (out / "INCOMPLETE").exists()


def test_a_header_of_a_million_columns_is_refused_at_once(tmp_path, capsys):
    """Once 400 s and 2.5 GB of pandas before anything was said; now the header is counted first."""
    from analysis.render import main

    sweep = tmp_path / "sweep"
    shutil.copytree(FIXTURES / "partial_sweep", sweep)
    path = sweep / POINT / "metrics.csv"
    path.write_text(",".join(f"c{i}" for i in range(1_000_000)) + "\n" + ",".join("1" * 1_000_000) + "\n")
    assert main([str(sweep), "--out", str(tmp_path / "out"), "--no-plots"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: at least ") and \
        lines[0].endswith(" columns in its header; a metrics.csv has at most 1000"), lines


def test_a_stopped_report_leaves_no_half_written_report(tmp_path, monkeypatch, capsys):
    """analysis.document writes report.md last and whole: stopped while drawing the figures, it says so in one
    line, exits 143, and there is no report.md (an earlier one would be left as it was)."""
    import signal

    from analysis import document, plots

    def stopped(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the signal should have stopped the report")

    monkeypatch.setattr(plots, "save_figure", stopped)
    out = tmp_path / "report"
    assert document.main([str(FIXTURES / "partial_sweep"), "--out", str(out)]) == 143
    assert capsys.readouterr().err.strip().splitlines() == [
        f"interrupted by SIGTERM: {out / 'report.md'} was not written (an earlier one is left as it was; some of "
        f"its figures may be new); run the same command again"]
    assert not (out / "report.md").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_large_metrics_csv_is_read_in_bounded_memory(tmp_path):
    """A metrics.csv is parsed from the file, never held whole as text and lines: the peak traced memory of
    reading it stays under 3x its size (it was 7x: the text, its lines and a copy), and a torn last line is
    still dropped with its warning."""
    import tracemalloc

    from analysis.load import read_metrics

    header = "step,loss,unique_tokens,eval_loss," + ",".join(f"extra{i}" for i in range(24))
    row = ",".join(["0.123456"] * 27)
    path = tmp_path / "metrics.csv"
    with open(path, "w") as handle:
        handle.write(header + "\n")
        for step in range(60_000):
            handle.write(f"{step},{row}\n")
        handle.write("60000,0.1")  # torn by a kill mid-write
    warnings = []
    tracemalloc.start()
    try:
        frame = read_metrics(path, warn=warnings.append)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(frame) == 60_000 and frame.step.iloc[-1] == 59_999
    assert warnings == [f"{path}: last line '60000,0.1' is torn (cut off mid-write), dropped"]
    assert peak < 3 * path.stat().st_size, (peak, path.stat().st_size)
