"""Validation of a single run before Hydra creates its output folder.

Hydra makes the run folder (`.hydra/`, `run.log`) before it calls the task function, so a config rejected
there would leave an `outputs/<date>/<time>/` folder with nothing in it. Hydra calls `on_run_start` earlier,
with the composed config, so a bad config is refused there with nothing written. (A `-m` sweep is checked
point by point by the validating sweeper, bitnet.sweeper, before it launches anything.)
"""

from __future__ import annotations

import sys

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class ValidateBeforeRun(Callback):
    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        from bitnet.validate import ConfigError, validate

        try:
            validate(config)
        except ConfigError as err:
            # One line, no traceback, exit 2: before anything is trained or written.
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
