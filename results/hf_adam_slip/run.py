"""A Hugging Face Trainer run with the Adam slip, as a user writes it, beside the Trainer's own AdamW: a 2-layer,
64-wide GPT-2 (full precision) on bitnet's built-in corpus (4096-token BPE), 600 steps, batch 16 x 64 tokens,
peak LR 1.5e-3 with 50 warm-up steps and the Trainer's linear decay, weight decay 0.1; bitnet's
DiversityCallback measures 4096 held-out positions every 25 steps. The slip is the optimizer passed through
`optimizers=`:

    torch.optim.Adam(model.parameters(), lr=1.5e-3, weight_decay=0.1)

    python results/hf_adam_slip/run.py adam     # writes results/hf_adam_slip/adam (metrics.csv, run.json)
    python results/hf_adam_slip/run.py adamw    # the Trainer's default optimizer (AdamW, no decay on biases
                                                # and LayerNorm gains)
"""

import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

from bitnet.data import load_corpus
from bitnet.integrations.hf import DiversityCallback

STEPS, SEQ, BATCH, HIDDEN, LR, WD = 600, 64, 16, 64, 1.5e-3, 0.1


def main(optimizer: str) -> None:
    torch.set_num_threads(1)
    corpus = load_corpus("kjv", None, vocab_size=4096, val_fraction=0.05)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=corpus.vocab_size, n_embd=HIDDEN, n_layer=2, n_head=2, n_positions=SEQ, bos_token_id=0,
        eos_token_id=0))
    ids = corpus.train_ids[: len(corpus.train_ids) // SEQ * SEQ].view(-1, SEQ)
    dataset = [{"input_ids": w, "labels": w} for w in ids]
    with tempfile.TemporaryDirectory() as scratch:
        args = transformers.TrainingArguments(
            output_dir=scratch, max_steps=STEPS, per_device_train_batch_size=BATCH, logging_steps=25,
            learning_rate=LR, weight_decay=WD, warmup_steps=50, report_to=[], save_strategy="no", use_cpu=True,
            seed=0, disable_tqdm=True)
        callback = DiversityCallback(Path(__file__).parent / optimizer, corpus.val_ids, positions=4096, seq_len=SEQ,
                                     train_ids=corpus.train_ids, labels={"optimizer": optimizer})
        slip = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WD) if optimizer == "adam" else None
        started = time.time()
        transformers.Trainer(model=model, args=args, train_dataset=dataset, callbacks=[callback],
                             optimizers=(slip, None)).train()
    print(f"{optimizer}: {STEPS} steps in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1])
