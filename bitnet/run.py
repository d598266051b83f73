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
import os
import re
import shlex
import signal
import sys
from pathlib import Path

# Idle OpenMP worker threads sleep instead of spinning. On a machine whose cores other processes use too,
# spinning threads made the default run several times slower than one thread (docs/benchmarks.md). libgomp reads
# this once, when torch loads it, so it is set before anything imports torch; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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


def register_sweeper() -> None:
    """Hand bitnet's sweeper to Hydra directly. Hydra finds plugins by listing the folders of the
    `hydra_plugins` namespace; an editable install (`pip install -e .`) serves hydra_plugins/bitnet_sweeper
    through an import hook that can import it but not list it, so outside the checkout `-m` would fail with
    "Unknown plugin class". Registering the class works for every kind of install."""
    from hydra.core.plugins import Plugins

    # Hydra's scan runs first: it re-executes the plugin modules it lists (Hydra's own sweeper among them), and
    # a class imported before that would subclass a BasicSweeper that is no longer Hydra's.
    plugins = Plugins.instance()
    from hydra_plugins.bitnet_sweeper.validating_sweeper import ValidatingSweeper

    plugins.register(ValidatingSweeper)


register_presets()
register_sweeper()
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


def resume_command(out_dir: Path) -> str:
    """The command that continues this run (or sweep) in the folder it writes to. The default folders are named
    by the time of day, so the same command again would start a new folder from step 0; this one pins it."""
    hydra_cfg = HydraConfig.get()
    program = "bitnet" if Path(sys.argv[0]).name == "bitnet" else "python -m bitnet.run"
    if hydra_cfg.mode == RunMode.RUN:
        key, folder = "hydra.run.dir", out_dir
        # hydra.mode=RUN is Hydra's own addition, not the user's
        words = [*(o for o in hydra_cfg.overrides.hydra if not o.startswith("hydra.mode=")), *hydra_cfg.overrides.task]
    else:  # the sweep's own command line is this process's when the default launcher runs the point in it
        key, folder = "hydra.sweep.dir", Path(hydra_cfg.sweep.dir)
        words = sys.argv[1:]
        if not {"-m", "--multirun"} & set(words):  # a launcher's worker process: its command line is not the sweep's
            return f"the sweep's command with {shlex.quote(f'{key}={folder.resolve()}')}"
    kept = [shlex.quote(word) for word in words if not word.startswith(f"{key}=")]
    return " ".join([program, *kept, shlex.quote(f"{key}={folder.resolve()}")])


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> str | None:
    """Train one point; in a sweep, return how it ended (bitnet.progress.OUTCOMES) for the sweep's summary."""
    from bitnet.callbacks import take_validated
    from bitnet.devices import concurrent_jobs, current_job_num
    from bitnet.progress import point_banner
    from bitnet.train import DifferentConfig, Run, signal_name
    from bitnet.validate import ConfigError, validate_job

    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    # A single run was validated before its folder existed (bitnet.callbacks); a sweep's point is validated here
    validated = take_validated(cfg) if hydra_cfg.mode == RunMode.RUN else None
    if validated is None:
        try:
            validated = validate_job(cfg)
        except ConfigError as err:
            exit_with(f"error: {err}", 2)  # before anything is trained or written
    if hydra_cfg.mode != RunMode.RUN:
        banner = point_banner(Path(hydra_cfg.sweep.dir), current_job_num(), concurrent_jobs())
        if banner:
            log.info(banner)
    config, corpus = validated
    stop_on_sigterm()
    try:
        record = Run(config, out_dir, corpus=corpus).run()
    except DifferentConfig as err:
        if hydra_cfg.mode == RunMode.MULTIRUN:  # one refused point: the sweep runs the others, reports it at the end
            log.error(f"error: {err}")
            raise
        exit_with(f"error: {err}", 2)
    except OSError as err:
        if err.errno not in DISK_FULL or hydra_cfg.mode == RunMode.MULTIRUN:
            raise  # in a sweep: that point fails, the sweep reports it at the end
        status = getattr(read_record(out_dir), "status", None)
        recorded = (f"{out_dir} is recorded as {status}" if status == "failed" else
                    f"{out_dir}/run.json could not be updated either (it still says {status})")
        exit_with(f"error: {err.strerror} while writing {err.filename or out_dir}: {recorded}; free some space and "
                  f"run the same command again (it resumes from the last checkpoint)", 1)
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: resumable, not an error
        name = signal_name(err)
        step = getattr(read_record(out_dir), "step", None) or 0
        exit_with(f"interrupted by {name} at step {step}: {out_dir.resolve()} is recorded as interrupted; to resume "
                  f"from its last checkpoint, run: {resume_command(out_dir)}", 128 + signal.Signals[name].value)
    if record.get("busy"):
        return "skipped"
    csv_path = out_dir / record["metrics_csv"]
    counts = record["params"]
    log.info(f"{record['status']} at step {finished_step(record)} in {record['elapsed_s']:.1f}s "
             f"({counts['total']:,} parameters, {counts['non_embedding']:,} non-embedding; "
             f"{record['eval_positions']} eval positions, {record['eval_unique_targets']} distinct targets)")
    log.info(f"metrics: {csv_path}")
    if csv_path.exists():
        log.info(summary_table(csv_path))
        log.info(f"is it collapsing, and why? bitnet-diagnose {shlex.quote(str(out_dir))}")
    return "skipped" if record.get("skipped") else record["status"]


if __name__ == "__main__":
    main()
