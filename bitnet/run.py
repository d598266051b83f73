"""Entry point: `bitnet [overrides]` (or `python -m bitnet.run [overrides]`) trains one point; `-m` sweeps a
grid of them; `bitnet --help` lists the config groups and presets.

Each point writes metrics.csv (step,loss,unique_tokens,...) and run.json into its Hydra output folder.

The configs are found in the same place whether bitnet runs from a checkout or an installed package:
conf/ and sweeps/ sit at the top of the repository, and the wheel carries them inside the package as
bitnet/conf and bitnet/sweeps (setup.cfg maps them there). The presets in sweeps/ form the `sweep` config
group (`+sweep=scaling`): they are registered in Hydra's config store when this module is imported.
"""

from __future__ import annotations

import errno
import logging
import re
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from bitnet.records import finished_step, point_folder, read_record

log = logging.getLogger("bitnet")

PACKAGE_DIR = Path(__file__).resolve().parent
PRESET_GROUP = "sweep"
# A full disk, a full quota, a file-size limit: a write failed for lack of room, not because of a bug.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_PACKAGE_HEADER = re.compile(r"^#\s*@package\s+(\S+)", re.MULTILINE)


def shipped(name: str) -> Path:
    """conf/ or sweeps/: inside the package when installed, else at the top of the checkout."""
    inside = PACKAGE_DIR / name
    return inside if inside.is_dir() else PACKAGE_DIR.parent / name


CONF_DIR, SWEEPS_DIR = shipped("conf"), shipped("sweeps")


def register_presets(folder: Path = SWEEPS_DIR) -> list[str]:
    """Every sweeps/*.yaml as an option of the `sweep` group, with the package its header declares."""
    store = ConfigStore.instance()
    names = []
    for path in sorted(folder.glob("*.yaml")):
        header = _PACKAGE_HEADER.search(path.read_text())
        store.store(group=PRESET_GROUP, name=path.stem, node=OmegaConf.load(path), provider="bitnet",
                    package=header.group(1) if header else None)
        names.append(path.stem)
    return names


register_presets()
# hydra.sweep.subdir names each point's folder through it (conf/config.yaml); registered here because every
# process that resolves the subdir (the sweep's, a launcher's job) imports this module for the task function.
OmegaConf.register_new_resolver("point_folder", point_folder, replace=True)


def summary_table(csv_path: Path, max_rows: int = 8) -> str:
    """A short step / loss / unique_tokens table: evenly spaced rows, first and last included."""
    import pandas as pd

    frame = pd.read_csv(csv_path)
    if len(frame) > max_rows:
        picks = sorted({round(i * (len(frame) - 1) / (max_rows - 1)) for i in range(max_rows)})
        frame = frame.iloc[picks]
    columns = ["step", "loss", "eval_loss", "unique_tokens", "unique_targets"]
    return frame[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-")


def stop_on_sigterm() -> None:
    """Make SIGTERM end a run like Ctrl-C does (the point is recorded `interrupted`), instead of killing the
    process with its status left at `running`. A handler someone else installed (submitit's, which requeues a
    preempted SLURM job) is left in place."""
    from bitnet.train import Stopped

    def stop(signum, frame):
        raise Stopped(signum)

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, stop)


def exit_with(message: str, code: int) -> None:
    """One line on stderr, no traceback."""
    print(message, file=sys.stderr)
    sys.stderr.flush()
    sys.exit(code)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from bitnet.train import DifferentConfig, Run, signal_name
    from bitnet.validate import ConfigError, validate

    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode != RunMode.RUN:  # a single run was validated before its folder existed (bitnet.callbacks)
        try:
            validate(cfg)
        except ConfigError as err:
            exit_with(f"error: {err}", 2)  # before anything is trained or written
    stop_on_sigterm()
    try:
        record = Run(cfg, out_dir).run()
    except DifferentConfig as err:
        if hydra_cfg.mode == RunMode.MULTIRUN:  # one refused point: the sweep runs the others, reports it at the end
            log.error(f"error: {err}")
            raise
        exit_with(f"error: {err}", 2)
    except OSError as err:
        if err.errno not in DISK_FULL or hydra_cfg.mode == RunMode.MULTIRUN:
            raise  # in a sweep: that point fails, the sweep reports it at the end
        status = (read_record(out_dir) or {}).get("status")
        recorded = (f"{out_dir} is recorded as {status}" if status == "failed" else
                    f"{out_dir}/run.json could not be updated either (it still says {status})")
        exit_with(f"error: {err.strerror} while writing {err.filename or out_dir}: {recorded}; free some space and "
                  f"run the same command again (it resumes from the last checkpoint)", 1)
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: resumable, not an error
        name = signal_name(err)
        step = (read_record(out_dir) or {}).get("step", 0)
        exit_with(f"interrupted by {name} at step {step}: {out_dir} is recorded as interrupted; run the same "
                  f"command again to resume from its last checkpoint", 128 + signal.Signals[name].value)
    if record.get("busy"):
        return
    csv_path = out_dir / record["metrics_csv"]
    counts = record["params"]
    log.info(f"{record['status']} at step {finished_step(record)} in {record['elapsed_s']:.1f}s "
             f"({counts['total']:,} parameters, {counts['non_embedding']:,} non-embedding; "
             f"{record['eval_positions']} eval positions, {record['eval_unique_targets']} distinct targets)")
    log.info(f"metrics: {csv_path}")
    if csv_path.exists():
        log.info(summary_table(csv_path))


if __name__ == "__main__":
    main()
