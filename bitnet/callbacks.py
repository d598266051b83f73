"""Validation of a single run before Hydra creates its output folder.

Hydra makes the run folder (`.hydra/`, `run.log`) before it calls the task function, so a config rejected
there would leave an `outputs/<date>/<time>/` folder with nothing in it. Hydra calls `on_run_start` earlier,
with the composed config, so a bad config is refused there with nothing written. (A `-m` sweep is checked
point by point by the validating sweeper, bitnet.sweeper, before it launches any.)

What it validated (the RunConfig and the corpus its data check loaded) is handed to the task function
(`take_validated`), which trains it instead of building both again.
"""

from __future__ import annotations

import sys

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

_validated: list = []  # at most one (RunConfig, Corpus): the run about to start


class ValidateBeforeRun(Callback):
    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        from bitnet.validate import ConfigError, validate_job

        _validated.clear()
        try:
            _validated.append(validate_job(config))
        except ConfigError as err:
            # One line, no traceback, exit 2: before anything is trained or written.
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)


def take_validated(cfg: DictConfig) -> tuple | None:
    """(RunConfig, Corpus) that on_run_start validated for this task config, handed over once; None when there
    is none or it was validated for another config."""
    if not _validated:
        return None
    config, corpus = _validated.pop()
    return (config, corpus) if config.resolved == OmegaConf.to_container(cfg, resolve=True) else None
