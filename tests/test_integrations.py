"""The optional callbacks (extras hf and lightning): a tiny model trained a few steps by each framework
writes a run folder that the analysis command reads like bitnet's own grid points. Skipped when the extra is
not installed; CI installs both."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from analysis import load_sweeps
from bitnet.data import make_eval_set
from bitnet.probe import evaluate
from conftest import tables_main
from test_analysis import md_rows

VOCAB, SEQ, POSITIONS = 100, 32, 256


@pytest.fixture(scope="module")
def tokens():
    """Held-out and training ids from a repeating pattern with noise: something a tiny model can learn."""
    generator = torch.Generator().manual_seed(0)
    ids = (torch.arange(12000) * 7 % VOCAB + torch.randint(0, 3, (12000,), generator=generator)) % VOCAB
    return ids[:10000], ids[10000:]


def hf_run(out, hidden: int, train_ids, val_ids, steps: int = 6, optimizer=None):
    """`optimizer(model)` makes the optimizer passed through Trainer(optimizers=...); default: the Trainer's."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from bitnet.integrations.hf import DiversityCallback

    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=hidden, n_layer=1, n_head=2, n_positions=SEQ, bos_token_id=0, eos_token_id=0))
    windows = train_ids[: len(train_ids) // SEQ * SEQ].view(-1, SEQ)
    dataset = [{"input_ids": w, "labels": w} for w in windows]
    args = transformers.TrainingArguments(
        output_dir=str(out / "trainer"), max_steps=steps, per_device_train_batch_size=4, logging_steps=2,
        learning_rate=3e-3, weight_decay=0.1, report_to=[], save_strategy="no", use_cpu=True, seed=0,
        disable_tqdm=True)
    callback = DiversityCallback(out / f"h{hidden}", val_ids, positions=POSITIONS, seq_len=SEQ, train_ids=train_ids,
                                 labels={"hidden": hidden})
    trainer = transformers.Trainer(model=model, args=args, train_dataset=dataset, callbacks=[callback],
                                   optimizers=(optimizer(model) if optimizer else None, None))
    trainer.train()
    return model, trainer


@pytest.mark.slow  # a real transformers Trainer
def test_hf_trainer_callback_writes_a_folder_the_analysis_reads(tokens, tmp_path):
    train_ids, val_ids = tokens
    model, trainer = hf_run(tmp_path, 32, train_ids, val_ids)
    hf_run(tmp_path, 48, train_ids, val_ids)
    folder = tmp_path / "h32"
    csv = pd.read_csv(folder / "metrics.csv")
    assert list(csv.columns[:3]) == ["step", "loss", "unique_tokens"] and list(csv.step) == [0, 2, 4, 6]
    # Each row's loss is the Trainer's own logged training loss of the steps since the previous row.
    logged = {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}
    assert pd.isna(csv.loss[0])
    for step, loss in zip(csv.step[1:], csv.loss[1:]):  # the CSV keeps 6 significant digits
        assert math.isclose(loss, logged[step], rel_tol=1e-5)
    # The last row measures the trained model, as a direct library call does.
    direct = evaluate(model, make_eval_set(val_ids, POSITIONS, SEQ),
                      forward=lambda ids: model(input_ids=ids, output_hidden_states=True))
    for column in ("eval_loss", "unique_tokens", "softmax_entropy", "hidden_cosine"):
        assert math.isclose(csv[column].iloc[-1], direct[column], rel_tol=1e-5), column
    assert math.isclose(csv.lr[1], 3e-3 * 5 / 6, rel_tol=1e-5)  # the LR of the update that produced step 2
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "completed" and record["vocab_size"] == VOCAB
    assert record["eval_positions"] == POSITIONS and record["config"]["lr"]["peak"] == 3e-3
    assert record["config"]["train"]["steps"] == 6 and record["config"]["model"]["layers"] == 1
    assert record["settings"]["training_args"]["learning_rate"] == 3e-3
    assert record["setup_findings"] == []  # the Trainer's AdamW spares biases and LayerNorm gains

    sweep = load_sweeps([folder, tmp_path / "h48"])
    assert sweep.swept == ["hidden"] and list(sweep.points.point) == ["hidden=32", "hidden=48"]
    assert set(sweep.points.status) == {"completed"} and set(sweep.points["wd.value"]) == {0.1}
    out = tmp_path / "analysis"
    tables_main(folder, tmp_path / "h48", "--no-plots", "--out", out)
    results = {row[0]: row for row in md_rows((out / "results.md").read_text())}
    assert set(results) == {"32", "48"}
    assert results["32"][-2] == str(int(csv.unique_tokens.iloc[-1]))  # tokens at the last step


@pytest.mark.slow
def test_lightning_callback_writes_a_folder_the_analysis_reads(tokens, tmp_path):
    lightning = pytest.importorskip("lightning")
    from bitnet.integrations.lightning import DiversityCallback

    train_ids, val_ids = tokens

    class TinyLM(lightning.LightningModule):
        def __init__(self, hidden: int = 16):
            super().__init__()
            self.save_hyperparameters()
            self.embed = torch.nn.Embedding(VOCAB, hidden)
            self.head = torch.nn.Linear(hidden, VOCAB)

        def forward(self, ids):
            hidden = self.embed(ids)
            return self.head(hidden), hidden

        def training_step(self, batch, batch_idx):
            inputs, targets = batch
            return torch.nn.functional.cross_entropy(self(inputs)[0].flatten(0, 1), targets.flatten())

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-2, weight_decay=0.1)

    windows = train_ids[: len(train_ids) // (SEQ + 1) * (SEQ + 1)].view(-1, SEQ + 1)
    loader = torch.utils.data.DataLoader(list(zip(windows[:, :-1], windows[:, 1:])), batch_size=8)
    torch.manual_seed(0)
    module = TinyLM()
    callback = DiversityCallback(tmp_path / "lit", val_ids, every=2, positions=POSITIONS, seq_len=SEQ,
                                 train_ids=train_ids, labels={"hidden": 16})
    lightning.Trainer(max_steps=5, callbacks=[callback], logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, accelerator="cpu").fit(module, loader)
    csv = pd.read_csv(tmp_path / "lit" / "metrics.csv")
    assert list(csv.step) == [0, 2, 4, 5] and pd.isna(csv.loss[0]) and csv.loss[1:].notna().all()
    assert set(csv.lr) == {1e-2} and set(csv.wd) == {0.1}
    direct = evaluate(module, make_eval_set(val_ids, POSITIONS, SEQ))
    assert math.isclose(csv.eval_loss.iloc[-1], direct["eval_loss"], rel_tol=1e-5)
    assert csv.hidden_cosine.notna().all()  # the module returns (logits, hidden)
    record = json.loads((tmp_path / "lit" / "run.json").read_text())
    assert record["status"] == "completed" and record["config"]["train"]["steps"] == 5
    assert record["settings"]["hparams"] == {"hidden": 16} and record["vocab_size"] == VOCAB
    # AdamW on every parameter of a model without norms: only its LR, 1e-2 at width 16, is far above the recipe's.
    assert [f["rule"] for f in record["setup_findings"]] == ["lr_above_recipe"]

    out = tmp_path / "analysis"
    result = tables_main(tmp_path / "lit", "--no-plots", "--out", out)
    assert "1 grid points: 1 completed." in result.stdout
    [points] = md_rows((out / "points.md").read_text())
    assert points[:3] == ["lit", "completed", "5/5"]
