import re

import torch

from bitnet.data import BatchSampler, kjv_text, load_corpus, make_eval_set, max_eval_positions, split_ids


def test_kjv_is_the_whole_bible_without_verse_numbers():
    text = kjv_text()
    lines = text.splitlines()
    assert len(lines) == 24408
    assert lines[0] == "In the beginning God created the heaven and the earth." or \
        lines[0].startswith("In the beginning God created the")
    assert not any(line[:1].isdigit() and ":" in line[:8] for line in lines[:1000])


def test_tokenizer_is_cached_and_split_is_fixed(tmp_path):
    said = []
    first = load_corpus("kjv", None, 512, 0.05, cache_dir=str(tmp_path), log=said.append)
    # the first run says what it is doing before the seconds it spends, then how each stage went
    assert said[0] == (f"Training a 512-token BPE tokenizer on kjv ({len(kjv_text()) / 1e6:.1f} MB of text), once: "
                       f"it is cached in {first.cache_dir}")
    assert re.fullmatch(r"Tokenizer trained in \d+\.\ds; encoding the corpus with it", said[1]), said
    tokens = len(first.train_ids) + len(first.val_ids)
    assert re.fullmatch(rf"Corpus encoded: {tokens:,} tokens, cached \(\d+\.\ds in all; later runs reuse it\)",
                        said[2]), said
    assert first.vocab_size == 512
    assert (first.cache_dir / "tokenizer.json").exists()
    second = load_corpus("kjv", None, 512, 0.05, cache_dir=str(tmp_path), log=said.append)
    assert len(said) == 3  # nothing to say when the cache serves
    assert torch.equal(first.val_ids, second.val_ids) and torch.equal(first.train_ids, second.train_ids)
    held_out = len(first.val_ids) / (len(first.val_ids) + len(first.train_ids))
    assert 0.04 < held_out < 0.06
    text = first.tokenizer.decode(first.val_ids[:200].tolist())
    assert "the" in text  # real English comes back out of the tokenizer


def test_eval_set_is_deterministic_and_inside_the_held_out_split():
    ids = torch.arange(10_000)
    a, b = make_eval_set(ids, 1000, 32), make_eval_set(ids, 1000, 32)
    assert torch.equal(a.inputs, b.inputs) and a.mask.sum() == 1000
    assert torch.equal(a.targets, a.inputs + 1)  # windows are contiguous text
    assert max_eval_positions(ids, 32) == 9984


def test_split_interleaves_blocks():
    train, val = split_ids(torch.arange(4000), 0.25, block=10)
    assert val[:20].tolist() == list(range(30, 40)) + list(range(70, 80))
    assert len(val) == 1000 and len(train) == 3000
    assert not set(train.tolist()) & set(val.tolist())


def test_text_corpus_from_a_folder(tmp_path):
    (tmp_path / "a.txt").write_text("the cat sat on the mat.\n" * 300)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("a dog ran in the park.\n" * 300)
    (tmp_path / "ignored.bin").write_bytes(b"\x00\x01")
    corpus = load_corpus("text", str(tmp_path), 270, 0.1, cache_dir=str(tmp_path / "cache"), log=lambda *_: None)
    text = corpus.tokenizer.decode(torch.cat([corpus.train_ids, corpus.val_ids]).tolist())
    assert "dog ran" in text and "cat sat" in text


def test_sampler_state_restores_the_data_position():
    sampler = BatchSampler(torch.arange(1000), 4, 8, seed=3)
    sampler.next_batch()
    state = sampler.state_dict()
    expected = sampler.next_batch()
    sampler.load_state_dict(state)
    assert torch.equal(sampler.next_batch()[0], expected[0])


def test_the_jobs_validation_says_so_when_it_trains_the_tokenizer(tmp_path, capsys):
    """The first job to need a vocabulary trains it while its config is checked (bitnet.validate), before the
    run's own output: that is where the user must hear about it."""
    from bitnet.data import DataConfig
    from bitnet.validate import load_checked

    corpus = tmp_path / "book.txt"
    corpus.write_text(kjv_text()[:200_000])  # a small text trains in a fraction of a second
    data = DataConfig(name="text", path=str(corpus), vocab_size=300, seq_len=32, val_fraction=0.05,
                      cache_dir=str(tmp_path / "cache"))
    load_checked(data)
    said = capsys.readouterr().out.splitlines()
    assert said[0].startswith("Training a 300-token BPE tokenizer on ") and said[2].startswith("Corpus encoded")
    load_checked(data)
    assert capsys.readouterr().out == ""  # the cache serves: nothing to say
