"""Entry point: `python -m bitnet.run [overrides]` trains one point; `-m` sweeps a grid of them.

Each point writes metrics.csv (step,loss,unique_tokens,...) and run.json into its Hydra output folder.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from bitnet.records import DIVERGED

log = logging.getLogger("bitnet")

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"


def summary_table(csv_path: Path, max_rows: int = 8) -> str:
    """A short step / loss / unique_tokens table: evenly spaced rows, first and last included."""
    import pandas as pd

    frame = pd.read_csv(csv_path)
    if len(frame) > max_rows:
        picks = sorted({round(i * (len(frame) - 1) / (max_rows - 1)) for i in range(max_rows)})
        frame = frame.iloc[picks]
    columns = ["step", "loss", "eval_loss", "unique_tokens", "unique_targets"]
    return frame[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-")


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from bitnet.train import Run
    from bitnet.validate import ConfigError, validate

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        validate(cfg)
    except ConfigError as err:
        # One line, no traceback, non-zero exit, before anything is trained or written.
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    record = Run(cfg, out_dir).run()
    csv_path = out_dir / record["metrics_csv"]
    counts = record["params"]
    log.info(f"{record['status']} at step {record['step']} in {record['elapsed_s']:.1f}s "
             f"({counts['total']:,} parameters, {counts['non_embedding']:,} non-embedding; "
             f"{record['eval_positions']} eval positions, {record['eval_unique_targets']} distinct targets)")
    if record["status"] == DIVERGED:
        log.info(f"diverged at step {record['diverged_step']}")
    log.info(f"metrics: {csv_path}")
    if csv_path.exists():
        log.info(summary_table(csv_path))


if __name__ == "__main__":
    main()
