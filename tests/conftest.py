"""Shared test settings: tiny models so the whole suite runs in a few minutes on 2 CPU cores, and a tokenizer
cache private to the test session (never the user's ~/.cache/bitnet)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"

# Overrides that make a real run take a few seconds on CPU.
TINY = ["hidden=32", "model.layers=1", "model.n_heads=2", "data.vocab_size=512", "data.seq_len=32",
        "train.steps=20", "train.batch_size=8", "eval.every=10", "eval.positions=256", "lr.warmup=5",
        "progress=false", "threads=1"]


def model_config(**changes):
    """The default `model` config (conf/model/bitnet.yaml) with `changes`, as a ModelConfig."""
    from dataclasses import replace

    from hydra import compose, initialize_config_dir

    from bitnet.config import RunConfig

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return replace(RunConfig.from_config(compose(config_name="config")).model, **changes)


@pytest.fixture(scope="session", autouse=True)
def private_tokenizer_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("bitnet-cache")
    previous = os.environ.get("BITNET_CACHE")
    os.environ["BITNET_CACHE"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("BITNET_CACHE", None)
    else:
        os.environ["BITNET_CACHE"] = previous


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300, check: bool = True,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m bitnet.run ARGS` in a subprocess, as a user would type it."""
    result = subprocess.run([sys.executable, "-m", "bitnet.run", *args], cwd=cwd or REPO_ROOT,
                            capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"bitnet.run {' '.join(args)} exited {result.returncode}\n"
                             f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}")
    return result
