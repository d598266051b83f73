"""Checks a composed config before anything is built or trained, with one-line messages that name the key,
the bad value and what is allowed.

`validate(cfg)` raises `ConfigError` at the first problem and returns the run's `RunConfig`. The checks come
in four layers, in this order (the data before the resources, so the vocabulary is the real one):

1. the config itself: building `bitnet.config.RunConfig` checks every key (types, ranges, known choices) and
   the rules between keys (head size, switch steps inside the run, warmup no longer than the run,
   checkpoints on evaluation steps, ...);
2. the machine: `device` names a device this machine has (skip with `device=False`, as the sweeper does for
   SLURM, whose jobs run on other nodes), and the chosen logger's library is installed (the message names the
   pip extra);
3. the data (skip with `data=False`): the text exists and the held-out split has room for `eval.positions`.
   This loads the corpus through the tokenizer cache (a fraction of a second once cached; the first time it
   trains the tokenizer that the run would train anyway);
4. the resources (bitnet.preflight): the memory a training step needs fits the device, and the results fit
   the disk where they go; estimated from the config's sizes, in microseconds.

`python -m bitnet.run` prints the message as `error: <message>` and exits 2; the validating sweeper
(bitnet.sweeper) checks every grid point of a `-m` sweep this way before launching any. A job validates with
`validate_job`, which also returns the corpus the data check loaded: the job trains that config and that corpus.
"""

from __future__ import annotations

import json

import torch
from omegaconf import DictConfig

from bitnet.config import RunConfig
from bitnet.data import (TEXT_SUFFIXES, Corpus, DataConfig, cache_folder, check_eval_room, check_training_room,
                         read_corpus, text_files)
from bitnet.devices import assign_device, usable_cores
from bitnet.keys import ConfigError, first_line, show

__all__ = ["ConfigError", "validate", "validate_job"]


# ---- 2. the machine ----------------------------------------------------------------------------------------
def _check_device(config: RunConfig) -> None:
    try:
        assign_device(config.device, job_num=0)
    except (ValueError, RuntimeError) as err:
        raise ConfigError(first_line(err)) from None
    cores = usable_cores()
    if config.threads is not None and config.threads > cores:  # tens of thousands of threads crash torch
        raise ConfigError(f"threads={config.threads}: more than the {cores} cores this process may use; allowed "
                          f"1..{cores}, or null for the cores shared among the jobs running at once")


# ---- 3. the data -------------------------------------------------------------------------------------------
# Peak memory of reading and tokenizing a text (load_corpus: decoding, BPE training, encoding every line) per
# byte of text: 73.9x for 4.2 MB and 73.0x for 16.6 MB of the King James Bible, measured with ru_maxrss. A 1 GB
# file would need about 75 GB, and the tokenizer's Rust code aborts with a backtrace when it runs out.
TOKENIZE_BYTES_PER_TEXT_BYTE = 75


def _check_text_files(data: DataConfig) -> None:
    from bitnet.preflight import _size, memory_available

    if data.name != "text":
        return
    try:
        files = text_files(data.path)
    except (OSError, ValueError) as err:
        hint = "" if "files" in str(err) else f"; give a text file or a folder of {'/'.join(TEXT_SUFFIXES)} files"
        raise ConfigError(first_line(err) + hint) from None
    size = sum(file.stat().st_size for file in files)
    available, what = memory_available(torch.device("cpu"))
    if TOKENIZE_BYTES_PER_TEXT_BYTE * size > available:
        raise ConfigError(f"data.path={data.path}: {size / 2**20:,.0f} MiB of text needs about "
                          f"{_size(TOKENIZE_BYTES_PER_TEXT_BYTE * size)} of memory to tokenize (about "
                          f"{TOKENIZE_BYTES_PER_TEXT_BYTE}x its size), but {what}; allowed: a text of at most "
                          f"{available / TOKENIZE_BYTES_PER_TEXT_BYTE / 2**20:,.0f} MiB (a sample of it, or a part)")


def load_checked(data: DataConfig) -> Corpus:
    """The configured corpus through the tokenizer cache; ConfigError (one line) when it cannot be loaded."""
    try:
        return data.load(log=lambda *_: None)
    except (OSError, ValueError) as err:
        raise ConfigError(first_line(err)) from None
    except RuntimeError as err:  # e.g. a corpus too small to hold out a single block
        raise ConfigError(f"data.val_fraction={show(data.val_fraction)}: no held-out split can be made from this "
                          f"corpus ({_corpus_tokens(data)}): {first_line(err)}") from None


def _corpus_tokens(data: DataConfig) -> str:
    try:
        _, fingerprint = read_corpus(data.name, data.path)
        info = cache_folder(fingerprint, data.vocab_size, data.cache_dir) / "info.json"
        return f"{json.loads(info.read_text())['tokens']} tokens"
    except Exception:  # noqa: BLE001 - only decorates the message
        return "too few tokens"


def _check_data(config: RunConfig, cache: dict | None) -> Corpus | None:
    """The corpus rules (bitnet.data) on the split sizes; returns the corpus loaded for them (None when `cache`,
    shared by the grid points of a sweep, already held this data config's sizes)."""
    data = config.data
    _check_text_files(data)
    corpus = None
    if cache is not None and data in cache:
        train_tokens, val_tokens = cache[data]
    else:
        corpus = load_checked(data)
        train_tokens, val_tokens = len(corpus.train_ids), len(corpus.val_ids)
        if cache is not None:
            cache[data] = (train_tokens, val_tokens)
    try:
        check_training_room(train_tokens, data.seq_len)
        check_eval_room(val_tokens, data.seq_len, config.eval.positions, data.val_fraction)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return corpus


def validate(cfg: DictConfig, *, device: bool = True, data: bool = True, cache: dict | None = None) -> RunConfig:
    """The run's `RunConfig`; ConfigError (one line: key, bad value, what is allowed) at the first problem.

    device: also check that the device exists on this machine. data: also check the corpus and the held-out
    split (loads the corpus through the tokenizer cache). cache: a dict shared across calls (grid points) so
    that each distinct data config is loaded once.
    """
    return _validate(cfg, device, data, cache)[0]


def validate_job(cfg: DictConfig) -> tuple[RunConfig, Corpus]:
    """Every check, for the job about to train: the RunConfig it trains and the corpus the data check loaded,
    so that the job builds neither again (bitnet.run hands both to bitnet.train.Run)."""
    return _validate(cfg, True, True, None)


def _validate(cfg: DictConfig, device: bool, data: bool, cache: dict | None) -> tuple[RunConfig, Corpus | None]:
    from bitnet.preflight import check_fits, results_folder

    config = RunConfig.from_config(cfg)
    if device:
        _check_device(config)
    config.logger.check_installed()
    corpus = _check_data(config, cache) if data else None
    try:  # memory and disk, from the config's sizes (bitnet.preflight); after the data: the vocabulary is real
        check_fits(config, results_folder(cfg), assign_device(config.device, job_num=0) if device else None)
    except ValueError as err:
        raise ConfigError(first_line(err)) from None
    return config, corpus
