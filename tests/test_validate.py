"""Validation before any training: a table of bad inputs, each with the key, the bad value and what is allowed in
a one-line message; the CLI's exit code 2 and one-line stderr; a `-m` sweep with one bad point trains nothing."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from bitnet.sweeper import _is_remote
from bitnet.validate import ConfigError, validate
from tests.conftest import CONF_DIR, REPO_ROOT, TINY, run_cli, run_main


@pytest.fixture(scope="module", autouse=True)
def tokenizer_cached(private_tokenizer_cache):
    """The data checks load the tiny runs' corpus through the (test-private) tokenizer cache."""
    from bitnet.data import load_corpus

    load_corpus("kjv", None, 512, 0.05, log=lambda *_: None)


def tiny(*changes: str) -> list[str]:
    keys = {c.lstrip("+").split("=", 1)[0] for c in changes}
    return [o for o in TINY if o.split("=", 1)[0] not in keys] + list(changes)


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=tiny(*overrides))


def error_of(*overrides: str, **kwargs) -> str:
    with pytest.raises(ConfigError) as caught:
        validate(composed(*overrides), **kwargs)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


# (overrides, what the one-line message must contain: the key=value, then what is allowed). TINY runs 20 steps,
# evaluates every 10, hidden=32 with 2 heads, seq_len 32, vocab 512.
BAD = [
    (["eval.generate.prompts=100000"], ["eval.generate.prompts=100000:", "must be at most 256"]),
    (["hidden=0"], ["hidden=0:", "positive integer"]),
    (["hidden=-64"], ["hidden=-64:", "positive integer"]),
    (["hidden=64.5"], ["hidden=64.5:", "positive integer"]),
    (["model.layers=0"], ["model.layers=0:", "positive integer"]),
    (["model.n_heads=0"], ["model.n_heads=0:", "positive integer"]),
    (["data.vocab_size=0"], ["data.vocab_size=0:", "integer >= 256"]),
    (["data.seq_len=0"], ["data.seq_len=0:", "positive integer"]),
    (["train.steps=0"], ["train.steps=0:", "positive integer"]),
    (["train.batch_size=-1"], ["train.batch_size=-1:", "positive integer"]),
    (["eval.every=0"], ["eval.every=0:", "positive integer"]),
    (["eval.positions=0"], ["eval.positions=0:", "positive integer"]),
    (["eval.batch_size=0"], ["eval.batch_size=0:", "positive integer"]),
    (["model.ffn_dim=0"], ["model.ffn_dim=0:", "positive integer", "or null"]),
    (["model.n_heads=3"], ["model.n_heads=3:", "hidden=32 is not divisible", "allowed for hidden=32: 1, 2, 4, 8, 16"]),
    (["hidden=6", "model.n_heads=2"], ["model.n_heads=2:", "odd", "allowed for hidden=6: 1, 3"]),
    (["lr=two_stage", "lr.switch_step=20"], ["lr.switch_step=20:", "outside the run", "allowed 1..19"]),
    (["lr=two_stage", "lr.switch_step=0"], ["lr.switch_step=0:", "1..19"]),
    (["wd=two_stage", "wd.switch_step=25"], ["wd.switch_step=25:", "allowed 1..19"]),
    (["lr=two_stage", "train.steps=1", "lr.warmup=0", "eval.every=1", "train.checkpoint_every=1"],
     ["lr.switch_step=null:", "train.steps >= 2"]),
    (["eval.positions=1000000"], ["eval.positions=1000000:", "held-out split", "room for 1..", "data.seq_len=32"]),
    (["data=text"], ["data.path=null:", "data=text needs data.path="]),
    (["data=text", "data.path=/no/such/corpus.txt"], ["data.path=/no/such/corpus.txt:", "no such file",
                                                      "text file or a folder"]),
    (["model.quant=tenary"], ["model.quant=tenary:", "expected one of ternary, weights_only, none"]),
    (["model.norm=prenorm"], ["model.norm=prenorm:", "expected one of faq, subln"]),
    (["model.ffn=gelu"], ["model.ffn=gelu:", "expected one of swiglu, relu2"]),
    (["lr.name=step"], ["lr.name=step:", "expected one of constant, linear, cosine, two_stage"]),
    (["wd.name=linear"], ["wd.name=linear:", "expected one of constant, two_stage, cosine"]),
    (["device=tpu"], ["device=tpu:", "expected auto, cpu, cuda or cuda:N"]),
    (["precision=fp16"], ["precision=fp16:", "expected one of auto, bf16, fp32"]),
    (["lr.warmup=21"], ["lr.warmup=21:", "longer than the run", "allowed 0..20"]),
    (["lr=two_stage", "train.stage1_only=true", "lr.warmup=15"], ["lr.warmup=15:", "allowed 0..10", "stage1_only"]),
    (["lr.warmup=-1"], ["lr.warmup=-1:", "integer >= 0"]),
    (["lr.peak=-0.001"], ["lr.peak=-0.001:", "positive number"]),
    (["lr.peak=0"], ["lr.peak=0:", "positive number"]),
    (["lr=two_stage", "lr.stage2_peak=-1e-3"], ["lr.stage2_peak=-0.001:", "positive number"]),
    (["lr.final_ratio=2"], ["lr.final_ratio=2:", "[0, 1]"]),
    (["wd.value=-0.1"], ["wd.value=-0.1:", ">= 0"]),
    (["wd=two_stage", "wd.stage2_value=-0.05"], ["wd.stage2_value=-0.05:", ">= 0"]),
    (["train.label_smoothing=1.0"], ["train.label_smoothing=1.0:", "[0, 1)"]),
    (["train.label_smoothing=-0.1"], ["train.label_smoothing=-0.1:", "[0, 1)"]),
    (["train.grad_clip=0"], ["train.grad_clip=0:", "positive number", "null for no clipping"]),
    (["train.grad_clip=-1.0"], ["train.grad_clip=-1.0:", "positive number"]),
    (["train.checkpoint_every=15"], ["train.checkpoint_every=15:", "multiple of eval.every=10"]),
    (["train.checkpoint_every=-10"], ["train.checkpoint_every=-10:", ">= 0"]),
    (["data.val_fraction=0"], ["data.val_fraction=0:", "(0, 0.5]"]),
    (["data.val_fraction=0.6"], ["data.val_fraction=0.6:", "(0, 0.5]"]),
    (["train.stage1_only=true"], ["train.stage1_only=true:", "needs lr=two_stage or wd=two_stage"]),
    (["optim.betas=[0.9,1.5]"], ["optim.betas=[0.9, 1.5]:", "two numbers in [0, 1)"]),
    (["optim.eps=0"], ["optim.eps=0:", "positive number"]),
    (["optim.name=sgd"], ["optim.name=sgd:", "expected one of adamw, adam_l2"]),
    (["optim.decay=norms"], ["optim.decay=norms:", "expected one of matrices, all, bitlinear"]),
    (["model.bitlinear_norm=maybe"], ["model.bitlinear_norm=maybe:", "true or false"]),
    (["model.clamp_act_scale=1"], ["model.clamp_act_scale=1:", "true or false"]),
    (["model.latent_weights=no_thanks"], ["model.latent_weights=no_thanks:", "true or false"]),
    (["threads=0"], ["threads=0:", "positive integer", "or null"]),
    (["progress=maybe"], ["progress=maybe:", "true or false"]),
    (["seed=-1"], ["seed=-1:", "integer >= 0"]),
    (["model.norm_eps=0"], ["model.norm_eps=0:", "positive number"]),
    (["eval.generate.every=-1"], ["eval.generate.every=-1:", "integer >= 0"]),
    (["eval.generate.temperature=0"], ["eval.generate.temperature=0:", "positive number"]),
    (["eval.generate.prompt_tokens=64"], ["eval.generate.prompt_tokens=64:", "allowed 1..32"]),
]

# Inputs that used to pass validation and then crash, stall or run out of memory. Each must also be refused
# fast (test_sizes_devices_and_seeds_are_refused_in_well_under_a_second): no model is built to find out.
BEYOND_THE_MACHINE = [
    (["hidden=1e9", "device=cpu"], ["hidden=1000000000:", "needs at least", "TiB of memory on cpu",
                                    "parameters with gradients and AdamW state", "this machine has", "RAM"]),
    (["hidden=999999999"], ["model.n_heads=2:", "hidden=999999999 is not divisible",
                            "allowed for hidden=999999999: none (use an even hidden)"]),
    (["train.steps=1e10", "eval.every=1"], ["train.steps=10000000000:", "on disk", "10000000001 evaluation rows",
                                            "free; allowed: fewer steps or a larger eval.every"]),
    (["train.batch_size=100000000", "device=cpu"], ["train.batch_size=100000000:", "of activations at batch"]),
    (["device=meta"], ["device=meta:", "not a device this tool can train on", "expected auto, cpu, cuda or cuda:N"]),
    (["device=xla"], ["device=xla:", "not a device this tool can train on"]),
    (["seed=100000000000000000000"], ["seed=100000000000000000000:", "< 2**64", "random generators"]),
    (["seed=18446744073709551616"], ["seed=18446744073709551616:", "< 2**64"]),
    (["eval.generate.seed=100000000000000000000"], ["eval.generate.seed=100000000000000000000:", "< 2**64"]),
]
if not torch.backends.mps.is_available():
    BEYOND_THE_MACHINE.append((["device=mps"], ["device=mps:", "not available with this build of torch"]))
BAD += BEYOND_THE_MACHINE


@pytest.mark.parametrize("overrides, expected", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_input_is_rejected_with_one_line(overrides, expected):
    message = error_of(*overrides)
    assert message.startswith(expected[0]), message  # names the key and the bad value first
    for fragment in expected[1:]:
        assert fragment in message, message


@pytest.mark.parametrize("overrides, expected", BEYOND_THE_MACHINE, ids=[" ".join(o) for o, _ in BEYOND_THE_MACHINE])
def test_sizes_devices_and_seeds_are_refused_in_well_under_a_second(overrides, expected):
    cfg = composed(*overrides)
    validate(composed())  # the corpus is loaded and cached: time the checks, not the first read of the data
    tic = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        validate(cfg)
    assert time.perf_counter() - tic < 0.5, f"{overrides} took {time.perf_counter() - tic:.2f}s"
    assert str(caught.value).startswith(expected[0])


def test_the_largest_seed_torch_accepts_passes():
    validate(composed(f"seed={2**64 - 1}"))


# ---- the corpus's content ------------------------------------------------------------------------------------
def _empty(folder):
    return folder / "empty.txt", b""


def _twenty_bytes(folder):
    return folder / "short.txt", b"In the beginning God"


def _random_bytes(folder):
    return folder / "random.txt", random.Random(0).randbytes(100_000)


def _latin1(folder):
    return folder / "latin1.txt", ("Les élèves étaient à l'école très tôt.\n" * 300).encode("latin-1")


def _latin1_in_a_folder(folder):
    (folder / "good.txt").write_text("plain words and more plain words\n" * 200)
    return folder / "bad.txt", ("déjà vu, à côté\n" * 300).encode("latin-1")


def _utf16(folder):
    return folder / "utf16.txt", ("In the beginning God created the heaven and the earth.\n" * 300).encode("utf-16")


CORPUS_CONTENT = [
    (_empty, [": the corpus is only 0 tokens (0 characters), too small for one training window plus the held-out "
              "split"]),
    (_twenty_bytes, [": the corpus is only", "(20 characters), too small for one training window plus the "
                                             "held-out split"]),
    (_random_bytes, [": not UTF-8 text:", "undecodable byte sequences in 100000 bytes", "allowed: UTF-8 text"]),
    (_latin1, [": not UTF-8 text:", "2100 undecodable byte sequences in 11700 bytes (the first at byte 4)", "iconv"]),
    (_latin1_in_a_folder, ["bad.txt): not UTF-8 text"]),
    (_utf16, [": not UTF-8 text: 16500 NUL bytes in 33002 bytes, as in UTF-16 or UTF-32 text (it starts with their "
              "byte-order mark)", "iconv -f utf-16 -t utf-8"]),
]


@pytest.mark.parametrize("make, fragments", CORPUS_CONTENT, ids=[make.__name__ for make, _ in CORPUS_CONTENT])
def test_text_that_cannot_serve_a_run_is_refused_saying_why(tmp_path, make, fragments):
    file, content = make(tmp_path)
    file.write_bytes(content)
    path = tmp_path if make is _latin1_in_a_folder else file
    tic = time.perf_counter()
    message = error_of("data=text", f"data.path={path}", "data.vocab_size=300")
    assert time.perf_counter() - tic < 1.0
    assert message.startswith(f"data.path={path}"), message
    for fragment in fragments:
        assert fragment in message, message


def test_a_few_undecodable_bytes_are_tolerated(tmp_path):
    """One stray Latin-1 character in a UTF-8 text is below the 1% rule: it becomes U+FFFD."""
    from bitnet.data import kjv_text

    corpus = tmp_path / "mostly.txt"
    corpus.write_bytes(kjv_text()[:20_000].encode() + "caf\xe9\n".encode("latin-1"))
    validate(composed("data=text", f"data.path={corpus}", "data.vocab_size=300", "eval.positions=64"))


def test_data_path_that_is_not_a_regular_file():
    message = error_of("data=text", "data.path=/dev/null")
    assert message == ("data.path=/dev/null: not a regular file (a character device); give a text file or a folder "
                       "of .txt/.md/.text/.rst files")


def test_vocabulary_larger_than_the_corpus_yields(tmp_path):
    from bitnet.data import cache_folder, read_corpus

    corpus = tmp_path / "small.txt"
    corpus.write_text("In the beginning God created the heaven and the earth.\n" * 100)
    tic = time.perf_counter()
    message = error_of("data=text", f"data.path={corpus}", "data.vocab_size=10000000")
    assert time.perf_counter() - tic < 1.0
    actual = int(message.split("vocabulary of only ")[1].split()[0])
    assert message.startswith("data.vocab_size=10000000: this corpus yields a vocabulary of only"), message
    assert f"({10000000 - actual} fewer than asked" in message and f"allowed 256..{actual}" in message
    # The cache records the vocabulary the tokenizer really has, next to the one asked for.
    info = json.loads((cache_folder(read_corpus("text", str(corpus))[1], 10000000) / "info.json").read_text())
    assert info["vocab_size"] == 10000000 and info["actual_vocab_size"] == actual
    validate(composed("data=text", f"data.path={corpus}", f"data.vocab_size={actual}", "eval.positions=32"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_rejected_unless_the_device_check_is_off():
    message = error_of("device=cuda")
    assert message.startswith("device=cuda:") and "CUDA is not available" in message
    validate(composed("device=cuda"), device=False)  # the sweeper's mode for SLURM: jobs run on GPU nodes


def test_empty_text_folder_is_rejected(tmp_path):
    (tmp_path / "notes.bin").write_bytes(b"\0")
    message = error_of("data=text", f"data.path={tmp_path}")
    assert message.startswith(f"data.path={tmp_path}") and ".txt" in message


def test_tiny_corpus_without_room_for_a_held_out_split(tmp_path):
    (tmp_path / "tiny.txt").write_text("in the beginning\n" * 20)
    message = error_of("data=text", f"data.path={tmp_path / 'tiny.txt'}", "data.vocab_size=256")
    assert message.startswith("data.val_fraction=0.05: the held-out split has only"), message
    assert "too few for one window of data.seq_len=32" in message


def test_good_configs_pass():
    validate(composed())
    validate(composed("lr=two_stage", "wd=two_stage", "lr.switch_step=5", "wd.switch_step=15"))
    validate(composed("lr=two_stage", "train.stage1_only=true", "train.steps=40", "lr.warmup=5"))
    validate(composed("train.checkpoint_every=0", "train.grad_clip=1.0", "train.label_smoothing=0.1"))
    validate(composed("model=bitnet_2b4t", "model.quant=none", "wd=cosine", "lr=cosine"))
    validate(composed("optim=adam_l2", "optim.decay=all", "model.bitlinear_norm=false", "model.latent_weights=false",
                      "model.clamp_act_scale=false", "model.quantize_head=true"))


def test_the_sweeper_skips_the_device_check_for_slurm_only():
    assert _is_remote("hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher")
    assert not _is_remote("hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher")
    assert not _is_remote("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher")
    assert not _is_remote("hydra._internal.core_plugins.basic_launcher.BasicLauncher")


# ---- the command line -------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, start", [
    (["model.n_heads=3"], "error: model.n_heads=3: hidden=32 is not divisible by it"),
    pytest.param(["data=text"], "error: data.path=null: data=text needs data.path=", marks=pytest.mark.slow),
    pytest.param(["eval.positions=1000000"], "error: eval.positions=1000000: larger than the held-out split",
                 marks=pytest.mark.slow),
])
def test_cli_exits_2_with_one_line_and_trains_nothing(tmp_path, overrides, start):
    result = run_cli(*tiny(*overrides), f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), result.stderr
    assert not (tmp_path / "run" / "metrics.csv").exists() and not (tmp_path / "run" / "run.json").exists()


@pytest.mark.parametrize("overrides, start", [
    (["hidden=1e9", "device=cpu"], "error: hidden=1000000000: this point needs at least"),
    (["device=meta"], "error: device=meta: not a device this tool can train on"),
    pytest.param(["seed=100000000000000000000"], "error: seed=100000000000000000000: must be an integer",
                 marks=pytest.mark.slow),
    pytest.param(["data=text", "data.path=/dev/null"], "error: data.path=/dev/null: not a regular file",
                 marks=pytest.mark.slow),
])
def test_a_rejected_run_leaves_no_output_folder(tmp_path, overrides, start):
    """Hydra makes a single run's folder (.hydra/, run.log) before the task starts: validation runs before it."""
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    result = run_main(*tiny(*overrides), cwd=tmp_path, env=env, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), result.stderr
    assert list(tmp_path.iterdir()) == [], "nothing may be written"


@pytest.mark.parametrize("override, fragments", [
    ("train.stpes=10", ["Could not override 'train.stpes'", "not in struct"]),
    pytest.param("model=nope", ["Could not find 'model/nope'", "Available options in 'model'", "bitnet_2b4t"],
                 marks=pytest.mark.slow),
])
def test_hydra_rejects_unknown_keys_and_options_understandably(tmp_path, override, fragments):
    result = run_main(*TINY, override, f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert result.returncode != 0
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.mark.parametrize("launcher", [
    pytest.param([], id="basic"),
    pytest.param(["hydra/launcher=joblib"], id="joblib", marks=pytest.mark.slow),
    pytest.param(["hydra/launcher=submitit_local"], id="submitit_local", marks=pytest.mark.slow),
])
def test_a_sweep_with_one_bad_point_trains_nothing(tmp_path, launcher):
    sweep_dir = tmp_path / "sweep"
    result = run_main("-m", *tiny("model.n_heads=2,3"), *launcher, f"hydra.sweep.dir={sweep_dir}", check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: grid point 2 of 2 (model.n_heads=3) is invalid, nothing was launched: "
                               "model.n_heads=3: hidden=32 is not divisible by it")
    assert not sweep_dir.exists()  # not even the sweep folder: nothing launched, trained or written


@pytest.mark.slow
def test_config_grids_are_validated_too(tmp_path):
    """Grids from hydra.sweeper.params (the presets') expand before validation like command-line grids."""
    sweep_dir = tmp_path / "sweep"
    result = run_main("-m", "+sweep=scaling", "scale=smoke", "model.n_heads=3", f"hydra.sweep.dir={sweep_dir}",
                     check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all("model.n_heads=3: hidden=" in line for line in lines), result.stderr
    assert lines[0].startswith("error: grid point 1 of 2 (hidden=32)")
    assert not sweep_dir.exists()


# ---- keys no component reads ----------------------------------------------------------------------------------
@pytest.mark.parametrize("override, start", [
    ("+train.stpes=5", "error: train.stpes=5: no component reads this key; did you mean train.steps?"),
    ("+train.step=30", "error: train.step=30: no component reads this key; did you mean train.steps?"),
    ("+model.hiden=64", "error: model.hiden=64: no component reads this key; did you mean model.hidden?"),
])
def test_a_key_no_component_reads_is_refused_naming_the_nearest(tmp_path, override, start):
    """Hydra accepts a new key given with `+`; nothing would read it, so the run would silently ignore it."""
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    result = run_main(*TINY, override, cwd=tmp_path, env=env, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), result.stderr
    assert list(tmp_path.iterdir()) == [], "nothing may be written"


def test_a_key_no_component_reads_is_refused_at_every_grid_point(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_main("-m", *tiny("hidden=32,48"), "+train.stpes=5", f"hydra.sweep.dir={sweep_dir}", check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    for number, line in enumerate(lines, 1):
        assert line.startswith(f"error: grid point {number} of 2 (hidden="), line
        assert line.endswith("train.stpes=5: no component reads this key; did you mean train.steps? (remove it, or "
                             "correct its name: `bitnet --help` lists the config groups)"), line
    assert not sweep_dir.exists()


def test_free_form_and_referenced_keys_are_not_refused():
    """grid.* (the presets' values) and hydra.* are free-form; `hidden` is read through model.hidden."""
    validate(composed("+grid.note=anything", "+grid.seeds=7"), data=False)
    with pytest.raises(ConfigError, match=r"^notes=1: no component reads this key"):
        validate(composed("+notes=1"), data=False)


def test_more_threads_than_cores_are_refused():
    """threads=100000 once made torch start a thread per requested core and crash the machine's thread limit."""
    cores = len(os.sched_getaffinity(0))
    message = error_of(f"threads={cores + 1}", data=False)
    assert message.startswith(f"threads={cores + 1}: more than the {cores} cores this process may use; allowed "
                              f"1..{cores}, or null"), message
    validate(composed(f"threads={cores}"), data=False)


def test_an_empty_bitnet_cache_counts_as_unset(monkeypatch):
    from pathlib import Path

    from bitnet.data import default_cache_dir

    monkeypatch.setenv("BITNET_CACHE", "")
    assert default_cache_dir() == Path.home() / ".cache" / "bitnet"
    monkeypatch.setenv("BITNET_CACHE", "/some/cache")
    assert default_cache_dir() == Path("/some/cache")


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_an_output_folder_that_cannot_hold_results_is_one_line(tmp_path, where):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    folder, reason = {"under_a_file": (blocker / "run", f"{blocker} is a file, not a folder"),
                      "proc": (Path("/proc/bitnet_run"), "/proc is on a virtual file system")}[where]
    result = run_main(*TINY, f"hydra.run.dir={folder}", check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: the output folder {folder} cannot hold results: {reason}"), \
        result.stderr
    assert blocker.read_text() == "not a folder\n"


def test_a_read_only_output_folder_is_one_line(tmp_path, monkeypatch):
    """A read-only mount, as statvfs reports it (tests cannot mount one; the flag is what the check reads)."""
    import os as os_module

    from bitnet import preflight

    real = os_module.statvfs

    class ReadOnly:
        def __init__(self, result):
            self.f_flag, self.f_blocks = result.f_flag | os_module.ST_RDONLY, result.f_blocks

    monkeypatch.setattr(preflight.os, "statvfs", lambda path: ReadOnly(real(path)))
    with pytest.raises(ValueError, match=rf"^the output folder {tmp_path / 'run'} cannot hold results: {tmp_path} is "
                                         rf"on a read-only file system; give another one"):
        preflight.check_writable(tmp_path / "run")


def test_text_too_large_to_tokenize_in_memory_is_refused(tmp_path, monkeypatch):
    """Tokenizing takes about 75x the text's size in memory (measured: bitnet.validate); beyond the machine's
    memory the tokenizer's Rust code aborted. Here the machine is said to have 1 GiB (tests cannot hold 75 GB)."""
    from bitnet import preflight
    from bitnet.validate import TOKENIZE_BYTES_PER_TEXT_BYTE

    corpus = tmp_path / "big.txt"
    corpus.write_text("In the beginning God created the heaven and the earth.\n" * 400_000)  # 22 MB
    size = corpus.stat().st_size
    assert TOKENIZE_BYTES_PER_TEXT_BYTE * size > 2**30
    monkeypatch.setattr(preflight, "memory_available", lambda device: (2**30, "this machine has 1.0 GiB of RAM"))
    message = error_of("data=text", f"data.path={corpus}", "data.vocab_size=300")
    assert message == (f"data.path={corpus}: {size / 2**20:,.0f} MiB of text needs about "
                       f"{TOKENIZE_BYTES_PER_TEXT_BYTE * size / 2**30:.1f} GiB of memory to tokenize (about 75x its "
                       f"size), but this machine has 1.0 GiB of RAM; allowed: a text of at most 14 MiB (a sample of "
                       f"it, or a part)")
