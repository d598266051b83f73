"""bitnet.probe, the metric as a library: the same numbers as the training loop's own evaluation on our model,
any model's output shapes (logits, (logits, hidden), objects with .logits), and a run folder the analysis reads."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from functools import partial
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from analysis import load_sweeps
from bitnet.data import make_eval_set
from bitnet.phases import learning_phase
from bitnet.probe import METRIC_COLUMNS, Probe, evaluate
from conftest import CONF_DIR, REPO_ROOT, TINY

MEASURED = ["eval_loss", "unique_tokens", "unique_targets", "pred_entropy", "top1_share", "effective_tokens",
            "softmax_entropy", "hidden_cosine", "loss_gap"]


def csv_rows(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny bitnet run trained in process: its metrics.csv and the Run (model, corpus) at its last step."""
    from hydra import compose, initialize_config_dir

    from bitnet.train import Run

    out = tmp_path_factory.mktemp("probe") / "run"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=TINY + ["device=cpu"])
    run = Run(cfg, out)
    assert run.run()["status"] == "completed"
    return run, out


def test_library_call_on_our_model_gives_the_training_loops_numbers(trained, tmp_path):
    run, out = trained
    loop_row = csv_rows(out / "metrics.csv")[-1]
    assert loop_row["step"] == "20"
    probe = Probe(tmp_path / "probe", run.corpus.val_ids, positions=run.config.eval.positions,
                  seq_len=run.config.data.seq_len, train_ids=run.corpus.train_ids,
                  vocab_size=run.corpus.vocab_size, forward=partial(run.model, return_hidden=True))
    row = probe(run.model, 20)
    for column in MEASURED:  # the CSV keeps 6 significant digits
        assert math.isclose(row[column], float(loop_row[column]), rel_tol=1e-5, abs_tol=1e-9), column
    written = csv_rows(tmp_path / "probe" / "metrics.csv")
    assert list(written[0])[:3] == ["step", "loss", "unique_tokens"] and list(written[0]) == METRIC_COLUMNS
    assert {c: written[0][c] for c in MEASURED} == {c: loop_row[c] for c in MEASURED}
    ours, theirs = json.loads((out / "run.json").read_text()), json.loads((tmp_path / "probe" / "run.json").read_text())
    for key in ("eval_positions", "eval_unique_targets", "unigram_entropy", "vocab_size"):
        assert theirs[key] == ours[key], key
    assert theirs["params"]["total"] == ours["params"]["total"] and theirs["ln_vocab"] == ours["ln_vocab"]
    assert probe.phase(row) == learning_phase(float(loop_row["eval_loss"]), ours["ln_vocab"], ours["unigram_entropy"])


def test_any_output_shape_and_unknown_hidden_states(trained):
    run, _ = trained
    eval_set = make_eval_set(run.corpus.val_ids, 64, 16)
    model = run.model
    with_hidden = evaluate(model, eval_set, forward=partial(model, return_hidden=True))
    as_tuple = evaluate(model, eval_set, forward=lambda ids: model(ids, return_hidden=True))
    as_object = evaluate(model, eval_set, forward=lambda ids: SimpleNamespace(
        logits=model(ids), hidden_states=(None, model(ids, return_hidden=True)[1])))
    logits_only = evaluate(model, eval_set)
    for other in (as_tuple, as_object):
        assert other == with_hidden
    assert logits_only["hidden_cosine"] is None and logits_only["loss_gap"] is None
    assert {k: v for k, v in logits_only.items() if k != "hidden_cosine"} == \
        {k: v for k, v in with_hidden.items() if k != "hidden_cosine"}
    assert model.training  # evaluate gives the module back in the mode it found it in
    with pytest.raises(TypeError, match="expected logits"):
        evaluate(model, eval_set, forward=lambda ids: {"logits": model(ids)})


def test_softmax_entropy_of_a_uniform_model_is_ln_vocab_and_its_phase_near_uniform(tmp_path):
    vocab = 50
    eval_set = make_eval_set(torch.arange(400) % vocab, 40, 8)
    uniform = evaluate(lambda ids: torch.zeros(*ids.shape, vocab), eval_set)
    assert math.isclose(uniform["softmax_entropy"], math.log(vocab), rel_tol=1e-6)
    assert math.isclose(uniform["eval_loss"], math.log(vocab), rel_tol=1e-6)
    assert uniform["unique_tokens"] == 1  # argmax of a uniform distribution: always token 0
    assert uniform["logit_std"] == 0.0  # no logit scale at all
    sharp = evaluate(lambda ids: torch.nn.functional.one_hot(ids, vocab).float() * 3.0, eval_set)
    assert sharp["logit_std"] == pytest.approx(float(torch.tensor([3.0] + [0.0] * (vocab - 1)).std()))
    probe = Probe(tmp_path, torch.arange(400) % vocab, positions=40, seq_len=8, train_ids=torch.arange(400) % 7)
    assert probe.phase(probe(lambda ids: torch.zeros(*ids.shape, vocab), 0)) == "near-uniform"
    assert Probe(tmp_path / "b", torch.arange(400) % vocab, positions=40, seq_len=8).phase(uniform) == "unknown"


def test_probe_folder_reads_like_a_grid_point(tmp_path):
    vocab = 40
    model = torch.nn.Sequential(torch.nn.Embedding(vocab, 8), torch.nn.Linear(8, vocab))
    ids = torch.randint(0, vocab, (2000,), generator=torch.Generator().manual_seed(0))
    probe = Probe(tmp_path / "h8", ids, positions=100, seq_len=10, labels={"hidden": 8},
                  config={"train": {"steps": 2}, "wd": {"value": 0.1, "switch_step": 1}})
    probe(model, 0)
    probe(model, 1, loss=3.5, lr=1e-3)
    probe(model, 2, loss=3.4)
    probe.finish()
    record = json.loads((tmp_path / "h8" / "run.json").read_text())
    assert record["status"] == "completed" and record["vocab_size"] == vocab  # from the logits' width
    assert record["unigram_entropy"] is None and record["eval_positions"] == 100
    assert record["params"]["total"] == sum(p.numel() for p in model.parameters())
    sweep = load_sweeps([tmp_path / "h8"])
    assert list(sweep.points.point) == ["h8"] and list(sweep.points.status) == ["completed"]
    assert list(sweep.frame.step) == [0, 1, 2] and list(sweep.frame.loss[1:]) == [3.5, 3.4]
    assert sweep.points.hidden.tolist() == [8] and sweep.points.eval_positions.tolist() == [100]
    assert sweep.points.wd_switch.tolist() == [1] and pd.isna(sweep.points.lr_switch[0])  # only what was stated
    # A resumed run that evaluates step 1 again replaces the rows from step 1 on.
    Probe(tmp_path / "h8", ids, positions=100, seq_len=10)(model, 1, loss=3.0)
    assert [r["step"] for r in csv_rows(tmp_path / "h8" / "metrics.csv")] == ["0", "1"]


def test_the_library_needs_neither_hydra_nor_our_model_nor_the_extras():
    code = ("import sys, bitnet.probe, bitnet.integrations; bad = [m for m in ('hydra', 'omegaconf', 'bitnet.train', "
            "'bitnet.model', 'transformers', 'lightning') if m in sys.modules]; print(bad)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr
