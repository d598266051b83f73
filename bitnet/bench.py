"""Training-step benchmark: `quant=ternary` against `quant=none` (the full-precision control) in one run.

    python -m bitnet.bench                                   # the default run's shape, CPU-friendly (~10 s)
    python -m bitnet.bench --hidden 256 --layers 4 --seq 128 --vocab 8192   # the CPU reference shape
    python -m bitnet.bench --device cuda --compile --hidden 512 1024 --layers 8 --batch 32 --seq 512

A step is exactly the training loop's step (`Run.train_step`: schedule, autocast forward, fp32 cross-entropy,
backward, AdamW step) on a model and optimizer built by `Run.build_training` from the run config that Hydra
composes, on random tokens. The two models are timed step by step in alternating order (ABBA), so that
a noisy or shared machine slows both alike; each figure is the median over the timed steps.

On CUDA the table adds MFU: (6 * non-embedding parameters, LM head included, + 12 * layers * hidden * seq)
FLOPs per token, times tokens/s, over the peak (detected from the GPU name or given with --peak-tflops).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass

import torch

MODES = ("ternary", "none")
# Dense bf16 tensor-core peaks (TFLOP/s) by GPU name, without sparsity. Checked in order: first match wins.
PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("GH200", 989.0),
               ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("A10G", 125.0), ("L4", 121.0),
               ("RTX 4090", 165.0), ("V100", 125.0))


@dataclass
class Result:
    hidden: int
    mode: str
    step_s: float          # median seconds per training step
    cpu_s: float           # median process CPU seconds per step (all threads): robust to other load on CPU
    spread: tuple[float, float]  # 25th and 75th percentiles of the step time (noise on a shared machine)
    tokens_per_s: float
    flops_per_token: float
    params_non_embedding: int


def detect_peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_TFLOPS:
        if key in name:
            return peak
    return None


def compose_config(args, hidden: int, mode: str):
    """The `RunConfig` of one benchmark point, composed by Hydra from conf/ and checked like a real run's. Its
    evaluation interval is the whole run, so no timed step computes an evaluation row's extra grad norm."""
    from hydra import compose, initialize_config_dir

    from bitnet.config import RunConfig
    from bitnet.run import CONF_DIR

    steps = args.warmup + args.steps + 1  # the last evaluation row (at train.steps) is never reached
    overrides = [f"hidden={hidden}", f"model.layers={args.layers}", f"model.quant={mode}",
                 f"data.seq_len={args.seq}", f"train.batch_size={args.batch}",
                 f"train.steps={steps}", f"eval.every={steps}", "lr.warmup=0",  # the LR warmup: within the run
                 f"device={args.device}",
                 f"precision={args.dtype}", f"compile={str(bool(args.compile)).lower()}", f"seed={args.seed}",
                 "progress=false"]
    if args.heads:
        overrides.append(f"model.n_heads={args.heads}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return RunConfig.from_config(compose(config_name="config", overrides=overrides + list(args.override)))


def make_run(config, device: torch.device, vocab: int):
    """A `Run` of `config` whose training state (`Run.build_training`: model, optimizer, schedules, sampler)
    is built for `vocab` tokens and fed random ones; no corpus and no evaluation rows: the ordinary step is
    timed."""
    from bitnet.train import Run

    run = Run(config, out_dir=".")
    tokens = torch.randint(0, vocab, (max(1 << 16, 4 * config.train.batch_size * (config.data.seq_len + 1)),),
                           generator=torch.Generator().manual_seed(config.seed))
    run.build_training(device, vocab, tokens)
    return run


def timed_step(run) -> tuple[float, float]:
    """Wall-clock and process CPU seconds (all threads) of one training step."""
    sync = torch.cuda.synchronize if run.device.type == "cuda" else (lambda: None)
    sync()
    start, start_cpu = time.perf_counter(), time.process_time()
    loss = run.train_step()
    sync()
    elapsed = (time.perf_counter() - start, time.process_time() - start_cpu)
    if not torch.isfinite(loss):
        raise RuntimeError(f"non-finite loss at benchmark step {run.step} (quant={run.config.model.quant})")
    run.step += 1
    return elapsed


def bench_hidden(args, hidden: int, device: torch.device) -> list[Result]:
    runs = {mode: make_run(compose_config(args, hidden, mode), device, args.vocab) for mode in MODES}
    for _ in range(args.warmup):
        for mode in MODES:
            timed_step(runs[mode])
    times, cpu_times = {mode: [] for mode in MODES}, {mode: [] for mode in MODES}
    for i in range(args.steps):
        order = MODES if i % 2 == 0 else MODES[::-1]  # ABBA: neither mode always runs first
        for mode in order:
            wall, cpu = timed_step(runs[mode])
            times[mode].append(wall)
            cpu_times[mode].append(cpu)
    tokens_per_step = args.batch * args.seq
    results = []
    for mode in MODES:
        step_s = statistics.median(times[mode])
        quartiles = statistics.quantiles(times[mode], n=4) if len(times[mode]) > 1 else [step_s] * 3
        non_embedding = runs[mode].counts["non_embedding"]
        flops_per_token = 6 * non_embedding + 12 * args.layers * hidden * args.seq
        results.append(Result(hidden, mode, step_s, statistics.median(cpu_times[mode]), (quartiles[0], quartiles[2]), tokens_per_step / step_s,
                              flops_per_token, non_embedding))
    del runs
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return results


def milliseconds(seconds: float) -> str:
    """At least three significant figures, so the ratio column can be checked against the time columns."""
    ms = seconds * 1e3
    return f"{ms:.{max(1, 3 - len(str(int(ms))))}f}" if ms < 100 else f"{ms:.0f}"


def format_table(results: list[Result], peak_tflops: float | None) -> str:
    """One row per width: both modes side by side, their step-time ratio and throughput ratio (ternary over
    dense), and MFU when a peak is known."""
    header = ["hidden", "params (non-emb)", "ternary ms/step", "dense ms/step", "ternary/dense step time",
              "ternary tok/s", "dense tok/s", "ternary/dense tok/s"]
    if peak_tflops:
        header += ["ternary MFU", "dense MFU"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    by_hidden: dict[int, dict[str, Result]] = {}
    for r in results:
        by_hidden.setdefault(r.hidden, {})[r.mode] = r
    for hidden, pair in by_hidden.items():
        t, d = pair["ternary"], pair["none"]
        row = [str(hidden), f"{d.params_non_embedding / 1e6:.2f}M", milliseconds(t.step_s), milliseconds(d.step_s),
               f"{t.step_s / d.step_s:.3f}", f"{t.tokens_per_s:,.0f}", f"{d.tokens_per_s:,.0f}",
               f"{t.tokens_per_s / d.tokens_per_s:.3f}"]
        if peak_tflops:
            row += [f"{100 * r.flops_per_token * r.tokens_per_s / (peak_tflops * 1e12):.1f}%" for r in (t, d)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(device: torch.device, threads: int | None) -> str:
    if device.type == "cuda":
        what = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    else:
        what = f"CPU {cpu_model()} ({os.cpu_count()} logical CPUs), {threads} threads"
    return f"{what}; torch {torch.__version__}; python {platform.python_version()}"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bitnet.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, nargs="+", default=[64], help="model widths (default: 64)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=None, help="attention heads (default: the config's model.n_heads)")
    p.add_argument("--batch", type=int, default=16, help="sequences per step")
    p.add_argument("--seq", type=int, default=64, help="tokens per sequence")
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--steps", type=int, default=20, help="timed steps per mode (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per mode first (compilation included)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--compile", action="store_true", help="torch.compile the model, as compile=true does")
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp32"],
                   help="the config's precision: auto = bf16 autocast on CUDA, fp32 on CPU")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: every core this process may use)")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak for MFU (default: detected from the GPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides, e.g. model.norm=subln")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    return args


def main(argv=None) -> str:
    args = parse_args(argv)
    from bitnet.devices import cpu_threads
    from bitnet.train import resolve_device

    device = resolve_device(args.device)
    threads = None
    if device.type == "cpu":
        threads = cpu_threads(args.threads)
        torch.set_num_threads(threads)
    peak = args.peak_tflops or detect_peak_tflops(device)
    results = []
    for hidden in args.hidden:
        results.extend(bench_hidden(args, hidden, device))
    table = format_table(results, peak)
    command = "python -m bitnet.bench " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"# {command.strip()}")
    print(f"# {machine_line(device, threads)}; device {device}; compile={bool(args.compile)}; "
          f"precision={args.dtype}; layers={args.layers}, batch {args.batch} x {args.seq} tokens, "
          f"vocab {args.vocab}; median of {args.steps} steps after {args.warmup} warmup"
          + (f"; MFU over {peak:g} TFLOP/s" if peak else ""))
    if device.type == "cuda" and not peak:
        print("# MFU not shown: unknown GPU peak; pass --peak-tflops")
    print(table)
    print("# step-time quartiles (p25-p75, ms): " + "; ".join(
        f"hidden {r.hidden} {'ternary' if r.mode == 'ternary' else 'dense'} {r.spread[0] * 1e3:.1f}-{r.spread[1] * 1e3:.1f}"
        for r in results))
    if device.type == "cpu":
        # Wall time is what a user waits; CPU time (all threads) is what the step costs, and other processes'
        # load on a shared machine inflates it much less.
        pairs = {r.hidden: {} for r in results}
        for r in results:
            pairs[r.hidden][r.mode] = r
        print("# process CPU time per step (median, all threads): " + "; ".join(
            f"hidden {h} ternary {p['ternary'].cpu_s * 1e3:.1f} ms, dense {p['none'].cpu_s * 1e3:.1f} ms, "
            f"ratio {p['ternary'].cpu_s / p['none'].cpu_s:.3f}" for h, p in pairs.items()))
    return table


if __name__ == "__main__":
    main()
