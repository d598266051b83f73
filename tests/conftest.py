"""Shared test settings: tiny models so the whole suite runs in a few minutes on 2 CPU cores, a tokenizer
cache private to the test session (never the user's ~/.cache/bitnet), and the command line run either in a
subprocess (where the process itself is what a test checks: signals, launchers, a fresh interpreter's output) or
in this process (a subprocess spends seconds importing torch and Hydra before it reads its first argument)."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import traceback
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

# Before any test module imports analysis (which imports bitnet.sweeper): importing bitnet.run runs Hydra's
# plugin scan first and registers the sweeper after it, as `python -m bitnet.run` does, so run_main's sweeps
# subclass the BasicSweeper the scan left (see bitnet.run.register_sweeper).
import bitnet.run  # noqa: F401,E402

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


# The warning filters a fresh `python -m bitnet.run` starts with (bitnet.run is its __main__); pytest's own would
# hide or turn into errors what a user sees on stderr.
FRESH_WARNING_FILTERS = [("default", DeprecationWarning, "bitnet.run"), ("ignore", DeprecationWarning, ""),
                         ("ignore", PendingDeprecationWarning, ""), ("ignore", ImportWarning, ""),
                         ("ignore", ResourceWarning, "")]


def run_main(*args: str, cwd: Path | None = None, check: bool = True,
             env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m bitnet.run ARGS` in this process, as run_cli gives it: the same argv, folder and environment,
    stdout and stderr captured, the exit status SystemExit's code (1 and the traceback on stderr for an uncaught
    exception, as Python's). What a run changes in its process (environment, folder, torch's thread count, the
    SIGTERM handler, Hydra's logging handlers and job config) is put back afterwards."""
    import torch
    from hydra.core.hydra_config import HydraConfig

    import bitnet.run

    loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    saved_loggers = [(logger, logger.handlers[:], logger.level, logger.propagate, logger.disabled)
                     for logger in loggers]
    saved = dict(environ=dict(os.environ), cwd=os.getcwd(), argv=sys.argv, threads=torch.get_num_threads(),
                 sigterm=signal.getsignal(signal.SIGTERM), hydra=HydraConfig.instance().cfg)
    out, err = io.StringIO(), io.StringIO()
    os.environ.update(env or {})
    os.chdir(cwd or REPO_ROOT)
    sys.argv = [bitnet.run.__file__, *args]
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err), warnings.catch_warnings():
            warnings.resetwarnings()
            for action, category, module in reversed(FRESH_WARNING_FILTERS):
                warnings.filterwarnings(action, category=category, module=module)
            try:
                bitnet.run.main()
            except SystemExit as exited:
                code = exited.code if isinstance(exited.code, int) else 0 if exited.code is None else 1
                if not isinstance(exited.code, (int, type(None))):
                    print(exited.code, file=sys.stderr)
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        os.environ.clear()
        os.environ.update(saved["environ"])
        os.chdir(saved["cwd"])
        sys.argv = saved["argv"]
        torch.set_num_threads(saved["threads"])
        signal.signal(signal.SIGTERM, saved["sigterm"])
        HydraConfig.instance().cfg = saved["hydra"]  # Hydra leaves the last job's config set
        for logger, handlers, level, propagate, disabled in saved_loggers:
            for handler in logger.handlers:
                if handler not in handlers:
                    handler.close()  # Hydra's run.log file handler
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate, logger.disabled = propagate, disabled
    result = subprocess.CompletedProcess(["python", "-m", "bitnet.run", *args], code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"bitnet.run {' '.join(args)} exited {code}\n"
                             f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}")
    return result



# The module a user runs with `python -m`, and its command of `python -m analysis` (analysis.cli).
ANALYSIS_COMMANDS = {"analysis.tables": "tables", "analysis.document": "report"}


def analysis_main(module: str, *args, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` (an analysis command) from the repository root, in this process: (exit status,
    stdout, stderr) as a CompletedProcess."""
    from analysis.cli import run

    out, err = io.StringIO(), io.StringIO()
    saved = os.getcwd()
    os.chdir(REPO_ROOT)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = run(ANALYSIS_COMMANDS[module], [str(arg) for arg in args])
            except SystemExit as exited:
                code = exited.code if isinstance(exited.code, int) else 0 if exited.code is None else 1
    finally:
        os.chdir(saved)
    result = subprocess.CompletedProcess(["python", "-m", module, *map(str, args)], code, out.getvalue(),
                                         err.getvalue())
    if check and code != 0:
        raise AssertionError(f"{module} exited {code}\n{result.stdout[-3000:]}\n{result.stderr}")
    return result


def tables_main(*args, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m analysis.tables ARGS` in this process (analysis_main)."""
    return analysis_main("analysis.tables", *args, check=check)
