"""CSV files from other training code through the analysis command: the seeds' own file format, typed from
their tables, gives their figures with no hand conversion; column mapping, labels, unknowns and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from analysis import load_sweeps
from analysis.foreign import (ForeignCSVError, Labelling, labels_from_name, normalized, parse_labels, read_foreign,
                              value)
from conftest import REPO_ROOT, tables_main
from test_analysis import FIXTURE, SEED001_STEPS, md_rows

# Seed 001's tables in the seeds' own file format (tests/fixtures/README.md).
SEED_CSV = REPO_ROOT / "tests" / "fixtures" / "seed001_csv"
SEED_FLAGS = ["--name-pattern", "scale_{hidden}_{train.steps}", "--set", "wd.switch_step=5000", "wd.value=0.1",
              "wd.stage2_value=0.0"]


@pytest.fixture
def seed_files(tmp_path):
    """A copy of /tmp/scale_${size}_10k.txt as the seeds' scripts wrote them (the analysis writes beside them)."""
    return Path(shutil.copytree(SEED_CSV, tmp_path / "tmp"))


def test_the_fixture_is_the_seeds_format():
    """Typed from seed 001's "Complete Results Table" and "Recovery Metrics"."""
    text = (SEED_CSV / "scale_256_10k.txt").read_text()
    assert text == ("Step,Loss,Unique Tokens\n1000,,16\n2000,,8\n3000,,2\n4000,,2\n5000,10.34,2\n6000,7.32,10\n"
                    "7000,,14\n10000,,13\n")
    assert sorted(p.name for p in SEED_CSV.iterdir()) == [f"scale_{h}_10k.txt" for h in (1024, 256, 512, 768)]


def test_the_seeds_files_give_the_seeds_tables(seed_files, tmp_path):
    out, fixture_out = tmp_path / "out", tmp_path / "fixture"
    common = ["--steps", *SEED001_STEPS, "--collapse-steps", "1000", "4000", "--no-plots"]
    tables_main(*sorted(seed_files.glob("scale_*_10k.txt")), *SEED_FLAGS, *common, "--out", out)
    tables_main(FIXTURE, *common, "--out", fixture_out)
    # Seed 001's figures: the results table and the transition (loss drop, % change, token recovery).
    results = {row[0]: row[1:] for row in md_rows((out / "results.md").read_text())}
    assert results["256"] == ["16", "8", "2", "2", "2", "WD 0.1→0.0", "**10**", "**14**", "**13**", "completed"]
    transition = {row[0]: row[3:10] for row in md_rows((out / "transition.md").read_text())}
    assert transition == {"256": ["10.34", "7.32", "-3.02", "-29.2%", "2", "10", "5.0x"],
                          "512": ["10.19", "7.22", "-2.97", "-29.2%", "2", "10", "5.0x"],
                          "768": ["10.08", "7.22", "-2.86", "-28.4%", "2", "8", "4.0x"],
                          "1024": ["10.10", "7.15", "-2.95", "-29.2%", "2", "11", "5.5x"]}
    # The same tables as the seed-001 fixture sweep, except what a CSV cannot hold: parameter counts are unknown.
    tables = sorted(p.name for p in fixture_out.glob("*.md") if p.name not in ("size.md", "tables.md"))
    assert {"results.md", "transition.md", "collapse.md", "decision.md", "trajectory.md"} <= set(tables)
    for name in tables:  # verdicts included (the scaling decision, trajectories, the collapse signature)
        assert (out / name).read_text() == (fixture_out / name).read_text(), name
    size = {row[0]: row[1] for row in md_rows((out / "size.md").read_text())}
    assert size == dict.fromkeys(["256", "512", "768", "1024"], "–")
    positions = {row[0]: row[-2] for row in md_rows((out / "collapse.md").read_text())}
    assert {p.split(":")[0] for p in positions.values()} == {"unknown"}


def test_a_folder_of_them_and_the_default_output_folder(seed_files):
    result = tables_main(seed_files, *SEED_FLAGS, "--no-plots")
    assert "4 grid points: 4 completed." in result.stdout
    assert (seed_files / "analysis" / "results.md").exists()
    # A single file: the output goes beside it, not inside it.
    tables_main(seed_files / "scale_256_10k.txt", "--no-plots", "--out", seed_files / "one")
    assert (seed_files / "one" / "points.md").exists()


def test_unknowns_stay_unknown(seed_files):
    """Without train.steps nothing says whether a run finished: `imported`, final figures empty; eval loss,
    positions and vocabulary are absent, never filled in."""
    sweep = load_sweeps([seed_files], labelling=Labelling(pattern="scale_{hidden}_{ignored}"))
    assert set(sweep.points.status) == {"imported"} and sweep.swept == ["hidden"]
    assert sweep.points.error.str.contains("whether this run finished is unknown").all()
    assert sweep.points[["eval_positions", "eval_unique_targets", "unigram_entropy", "last_step"]].isna().all().all()
    assert sweep.frame.eval_loss.isna().all()
    result = tables_main(seed_files, "--name-pattern", "scale_{hidden}_{ignored}", "--no-plots")
    final = {row[0]: row[6] for row in md_rows((seed_files / "analysis" / "size.md").read_text())}
    assert set(final.values()) == {"–"} and "imported" in result.stdout
    # train.steps beyond the last row: stopped early, not finished.
    [run] = read_foreign([seed_files / "scale_256_10k.txt"], Labelling(common={"train.steps": 20000}))
    assert run.record.status == "imported" and run.record.error == "stops at step 10000 of train.steps=20000"
    assert run.record.vocab_size is None
    [run] = read_foreign([seed_files / "scale_256_10k.txt"], Labelling(common={"data.vocab_size": 32000}))
    assert run.record.vocab_size == 32000 and run.record.config["data"] == {"vocab_size": 32000}


def test_files_nothing_tells_apart_are_not_averaged(seed_files):
    sweep = load_sweeps(sorted(seed_files.glob("*.txt"))[:2])
    assert sweep.swept == ["run"] and list(sweep.points.run) == ["scale_1024_10k.txt", "scale_256_10k.txt"]


def test_column_mapping_and_label_precedence(tmp_path):
    path = tmp_path / "lr=0.001,seed=1.csv"
    path.write_text("iter, Train-Loss ,distinct preds,Eval Loss,notes\n0,,50,10.4,a\n100,6.1,4,6.0,b\n")
    [run] = read_foreign([path], Labelling(columns={"iter": "step", "distinct preds": "unique_tokens"},
                                           common={"seed": 0, "hidden": 64}, per_file={path.name: {"hidden": 128}}))
    assert list(run.frame.columns) == ["step", "train_loss", "unique_tokens", "eval_loss", "notes"]
    assert run.labels == {"seed": 1, "hidden": 128, "lr": 0.001}  # --set < file name < --label
    assert run.record.config == {"seed": 1, "hidden": 128, "lr": 0.001}
    sweep = load_sweeps([path], labelling=Labelling(columns={"iter": "step", "distinct preds": "unique_tokens"}))
    assert sweep.frame.unique_tokens.tolist() == [50, 4] and sweep.frame.eval_loss.tolist() == [10.4, 6.0]
    assert pd.isna(sweep.frame.loss).all()  # "Train-Loss" is not `loss` unless mapped


def test_label_values_and_names():
    assert [value(t) for t in ("256", "10k", "1.5M", "0.1", "1e-3", "true", "null", "two_stage")] == \
        [256, 10000, 1500000, 0.1, 0.001, True, None, "two_stage"]
    assert normalized(" Unique Tokens ") == "unique_tokens" and normalized("Eval-Loss (nats)") == "eval_loss_nats"
    assert labels_from_name(FIXTURE / "scale_768_10k.txt", "scale_{hidden}_{train.steps}") == \
        {"hidden": 768, "train.steps": 10000}
    assert labels_from_name(FIXTURE / "scale_768_10k.txt", "scale_{hidden}_{train.steps}k.txt") == \
        {"hidden": 768, "train.steps": 10}
    assert labels_from_name(FIXTURE / "hidden=64,seed=2.csv", None) == {"hidden": 64, "seed": 2}
    assert labels_from_name(FIXTURE / "scale_768_10k.txt", None) == {}
    with pytest.raises(ForeignCSVError, match="expected key=value"):
        parse_labels(["hidden"], "--set")


@pytest.mark.parametrize("text, args, message", [
    ("1000,,16\n2000,,8\n", [], "the first line is not a header"),
    ("Iteration,Loss\n1,2\n", [], "no step column; its columns are 'Iteration', 'Loss'; map one with --columns 'NAME=step'"),
    ("Step,Loss\n1,2\n", ["--columns", "Steps=step"], "--columns names 'Steps', which this file does not have"),
    ("Step,Loss\n1,2\n", ["--name-pattern", "run_{hidden}"], "the file name does not match --name-pattern"),
    ("Step,Loss\n1,2\n", ["--label", "other.txt", "hidden=1"], "--label other.txt: no imported file has this name"),
    ("Step,Loss\n1,2\n", ["--set", "hidden"], "--set 'hidden': expected key=value"),
    ("Step,Loss\n1,2\n", ["--set", "train.steps=ten"], "label train.steps=ten: expected a whole number of steps"),
    # hand-typed files: a step that is not one, a row wider than the header, a step written twice differently
    ("Step,Loss,Unique Tokens\n1k,10.9,20\n2.5x,10.1,4\n", [],
     "scale_256_10k.txt, line 3: step '2.5x' is not a number of steps (allowed: whole numbers such as 1000, 1k, 10k"),
    ("Step,Loss,Unique Tokens\n1000,10.9,20\n,10.1,4\n", [], "scale_256_10k.txt, line 3: step (empty) is not a number"),
    ("Step,Loss,Unique Tokens\n1000,10.9,20\n2000,10.1,4,7\n", [],
     "scale_256_10k.txt, line 3: 4 fields but the header has 3 columns ('2000,10.1,4,7')"),
    ("Step,Loss,Unique Tokens\n1000,10.9,20\n1000,10.9,16\n", [],
     "scale_256_10k.txt: step 1000 is written 2 times with different values"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, text, args, message):
    path = tmp_path / "scale_256_10k.txt"
    path.write_text(text)
    result = tables_main(path, *args, "--out", tmp_path / "out", check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_hand_typed_steps_trailing_commas_and_repeated_rows(tmp_path):
    """Steps written 1k/10k, a trailing comma on every row (but not on the header: pandas would take the steps
    for the index and shift every column left) and a row typed twice: the figures as typed, a warning naming the
    file and step for the repeat."""
    path = tmp_path / "scale_256_10k.txt"
    path.write_text("Step,Loss,Unique Tokens\n1k,,16,\n5k,10.34,2,\n5k,10.34,2,\n6k,7.32,10,\n10k,,13,\n")
    result = tables_main(path, "--name-pattern", "scale_{hidden}_{train.steps}", "--no-plots", "--out", tmp_path / "out")
    sweep = load_sweeps([path], labelling=Labelling(pattern="scale_{hidden}_{train.steps}"))
    frame = sweep.frame
    assert frame.step.tolist() == [1000, 5000, 6000, 10000] and frame.unique_tokens.tolist() == [16, 2, 10, 13]
    assert frame.loss.tolist()[1:3] == [10.34, 7.32] and sweep.points.status[0] == "completed"
    assert sweep.warnings == [f"{path}: step 5000 is written 2 times (identical rows, read once)"]
    assert f"- {path}: step 5000 is written 2 times" in result.stdout
    header_too = tmp_path / "header.csv"
    header_too.write_text("Step,Loss,Unique Tokens,\n1000,10.9,20,\n2000,10.5,5,\n")
    [run] = read_foreign([header_too])
    assert list(run.frame.columns) == ["step", "loss", "unique_tokens"] and run.frame.unique_tokens.tolist() == [20, 5]
