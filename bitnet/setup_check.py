"""The setup check: causes of a stalled or collapsing ternary LM that are visible before the first step, read off
the model and the optimizer alone (no data, no forward pass). `check_setup` returns one `Finding` per cause;
bitnet's runs, `bitnet.probe.Probe` and the HF / Lightning callbacks run it once at the start, print each
finding on one line and record them in run.json under "setup_findings". The rules (docs/setup_check.md):

coupled_weight_decay    a torch.optim optimizer whose decay is coupled L2 (Adam without decoupled_weight_decay,
                        SGD, RMSprop, Adagrad, ...) with weight_decay > 0 in a group holding parameters
decay_on_norm_gains     any decay > 0 (coupled or decoupled) on a norm gain
decay_on_embedding      coupled decay on an nn.Embedding weight (decoupled decay on it is the recipe's)
decay_on_biases         coupled decay on a parameter named *bias
lr_above_recipe         peak LR above LR_FACTOR x the BitNet b1.58 recipe's peak for the width (when known)
quantized_head          the LM head is a weight-quantizing BitLinear
no_norm_before_head     bitnet's BitNetLM without its final norm, or a model with BitLinear layers and no norm
                        module at all (so none before the head); other layouts are not judged
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass

import torch

from bitnet.diagnostics import _is_norm
from bitnet.quant import BitLinear

ERROR, WARNING = "error", "warning"  # error: measured to stall/collapse in this project's runs

# torch.optim classes whose weight_decay is added to the gradient (coupled L2) unless the group says
# decoupled_weight_decay=True (Adam, NAdam, RAdam have that flag in recent torch).
COUPLED = ("Adam", "SGD", "RMSprop", "Adagrad", "Adamax", "NAdam", "RAdam", "ASGD", "Adadelta", "SparseAdam")
# Optimizers known to decay decoupled (w -= lr * wd * w outside the adaptive update), by class name.
DECOUPLED_NAMES = ("AdamW", "Lion", "Adafactor")

# The BitNet b1.58 FAQ's peak LR (stage 1): 1.5e-3 for the 700M model (hidden 1536) and below, 1.2e-3 for
# 1.3B-3.9B (hidden 2048 and up). A peak above LR_FACTOR times it is flagged.
RECIPE_PEAK = ((2048, 1.2e-3), (0, 1.5e-3))
LR_FACTOR = 5.0

COUPLED_WHY = ("coupled L2 adds wd*w to the gradient before Adam's normalisation, so a parameter whose loss "
               "gradient is small next to wd*|w| moves a full LR step towards zero each update; in this "
               "project's 64-wide runs (Adam, weight_decay=0.1 on every parameter) the embedding RMS fell 20x "
               "within 100 steps, the final norm gain fell from 1.0 to ~0.4 over 600 steps and the model "
               "predicted 1-4 distinct tokens with a rising loss, released when WD went to 0")
FIX_GROUPS = ("decay = [p for n, p in model.named_parameters() if p.dim() >= 2]; "
              "rest = [p for n, p in model.named_parameters() if p.dim() < 2]; "
              "torch.optim.AdamW([{'params': decay, 'weight_decay': 0.1}, "
              "{'params': rest, 'weight_decay': 0.0}], lr=1.5e-3, betas=(0.9, 0.95))")


@dataclass(frozen=True)
class Finding:
    """One cause visible before training: `rule` (a name from the module docstring), what is wrong, where
    (parameter or module names, summarised), why it matters, the fix as code, and severity (error: measured to
    stall or collapse in this project's runs; warning: departs from the recipe)."""

    rule: str
    what: str
    where: str
    why: str
    fix: str
    severity: str

    def line(self) -> str:
        return f"setup check [{self.severity}] {self.rule}: {self.what} ({self.where}); fix: {self.fix}"

    def as_dict(self) -> dict:
        return asdict(self)


def summarise(names: list[str], limit: int = 4) -> str:
    """Names with layer indices folded (blocks.0.x, blocks.1.x -> blocks.*.x (2)), at most `limit` patterns."""
    patterns = Counter(re.sub(r"(?<=\.)\d+(?=\.)", "*", name) for name in names)
    shown = [f"{p} ({n})" if n > 1 else p for p, n in list(patterns.items())[:limit]]
    more = len(patterns) - limit
    return ", ".join(shown) + (f", and {more} more patterns" if more > 0 else "") + f"; {len(names)} tensors"


def is_coupled(optimizer: torch.optim.Optimizer, group: dict) -> bool | None:
    """True for coupled L2, False for decoupled decay, None for an optimizer this check does not know."""
    cls = type(optimizer)
    if any(name in cls.__name__ for name in DECOUPLED_NAMES) or group.get("decoupled_weight_decay"):
        return False
    if cls.__module__.startswith("torch.optim") and cls.__name__ in COUPLED:
        return True
    return None


def peak_lr(optimizer) -> float | None:
    """The largest LR of the groups; a scheduler's `initial_lr` when one is attached (it may start at 0)."""
    rates = [g.get("initial_lr", g.get("lr")) for g in optimizer.param_groups]
    rates = [float(r) for r in rates if isinstance(r, (int, float)) and r > 0]
    return max(rates) if rates else None


def model_width(model: torch.nn.Module) -> int | None:
    """The hidden size from bitnet's config, a Hugging Face config, or the token embedding's width."""
    for config in (getattr(model, "cfg", None), getattr(model, "config", None)):
        for key in ("hidden", "hidden_size", "n_embd", "d_model"):
            if isinstance(getattr(config, key, None), int):
                return getattr(config, key)
    embedding = next((m for m in model.modules() if isinstance(m, torch.nn.Embedding)), None)
    return embedding.embedding_dim if embedding is not None else None


def _decay_findings(model, optimizer) -> list[Finding]:
    names = {id(p): n for n, p in model.named_parameters()}
    gains = {id(m.weight) for m in model.modules() if _is_norm(m)}
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    biases = {id(p) for n, p in model.named_parameters() if n.endswith("bias")}
    coupled, decayed, kind = [], {True: [], False: [], None: []}, type(optimizer).__name__
    for group in optimizer.param_groups:
        if not group.get("weight_decay"):
            continue
        mode = is_coupled(optimizer, group)
        params = [p for p in group["params"] if id(p) in names]
        decayed[mode] += params
        if mode and params:
            coupled.append(group["weight_decay"])
    findings = []
    if coupled:
        findings.append(Finding(
            "coupled_weight_decay", f"{kind} with weight_decay={max(coupled):g} is coupled L2",
            summarise([names[id(p)] for p in decayed[True]]), COUPLED_WHY,
            FIX_GROUPS,
            ERROR))

    def on(ids: set, modes: tuple) -> list[str]:
        return [names[id(p)] for mode in modes for p in decayed[mode] if id(p) in ids]

    gain_names = on(gains, (True, False, None))
    if gain_names:
        findings.append(Finding(
            "decay_on_norm_gains", "weight decay on norm gains", summarise(gain_names),
            "the gains scale every normalised activation (the final one scales the logits); decay pulls them "
            "towards 0, which the recipe never does" + ("; coupled, see coupled_weight_decay" if coupled else ""),
            FIX_GROUPS, ERROR if on(gains, (True,)) else WARNING))
    for rule, ids, what in (("decay_on_embedding", embeddings, "coupled weight decay on the token embedding"),
                            ("decay_on_biases", biases, "coupled weight decay on biases")):
        hit = on(ids, (True,))
        if hit:
            findings.append(Finding(rule, what, summarise(hit),
                                    "their loss gradient is sparse or small (an embedding row only moves for the "
                                    "tokens in the batch), so coupled L2 pulls them to 0 a full LR step a time",
                                    FIX_GROUPS, ERROR))
    return findings


def _head_findings(model) -> list[Finding]:
    from bitnet.model import BitNetLM

    head = model.head if isinstance(model, BitNetLM) else (
        model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None)
    findings = []
    if isinstance(head, BitLinear) and head.quantizes_weights:
        findings.append(Finding(
            "quantized_head", "the LM head is a quantized BitLinear", type(head).__name__,
            "the recipe keeps the head in full precision; in this project's runs with a 200-step stage 1 a quantized "
            "head stayed on a unigram plateau (with a 600-step stage 1 it recovered: docs/diagnose.md)",
            "model.quantize_head=false (bitnet), or an nn.Linear head", ERROR))
    bitlinears = any(isinstance(m, BitLinear) for m in model.modules())
    if isinstance(model, BitNetLM):
        unnormalised = not isinstance(model.final_norm, torch.nn.Module) or not _is_norm(model.final_norm)
    else:  # only what can be checked without a forward pass: a ternary model with no norm at all
        unnormalised = head is not None and bitlinears and not any(_is_norm(m) for m in model.modules())
    if unnormalised:
        findings.append(Finding(
            "no_norm_before_head", "no norm before the LM head", "final_norm" if isinstance(model, BitNetLM)
            else "no *Norm module in the model",
            "the recipe normalises the last hidden state before the head; without it the logit scale follows "
            "the residual stream's", "hidden = norm(x); logits = head(hidden)  # e.g. an RMSNorm", WARNING))
    return findings


def check_setup(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
                lr: float | None = None, width: int | None = None) -> list[Finding]:
    """The findings for `model` trained by `optimizer` (module docstring). `lr` is the peak LR (default: the
    optimizer's largest, when it is above 0), `width` the hidden size (default: read off the model); the LR rule
    is skipped when either is unknown. An empty list means none of the rules fired."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer  # accelerate's AcceleratedOptimizer (HF Trainer) and other wrappers
    findings = _decay_findings(model, optimizer) if optimizer is not None else []
    lr = lr if lr is not None else (peak_lr(optimizer) if optimizer is not None else None)
    width = width if width is not None else model_width(model)
    if lr and width:
        reference = next(peak for least, peak in RECIPE_PEAK if width >= least)
        if lr > LR_FACTOR * reference:
            findings.append(Finding(
                "lr_above_recipe", f"peak LR {lr:g} is {lr / reference:.1f}x the recipe's {reference:g}",
                f"width {width}", f"flagged above {LR_FACTOR:g}x the BitNet b1.58 FAQ's peak for this width; "
                "a step that large flips many ternary codes at once", f"lr={reference:g}", WARNING))
    return findings + _head_findings(model)


def report(findings: list[Finding], emit=print) -> list[dict]:
    """Emit each finding's line once; the dicts that run.json records under "setup_findings"."""
    for finding in findings:
        emit(finding.line())
    return [finding.as_dict() for finding in findings]


def _plain(node) -> bool:
    """True when a recorded config holds only plain values (no `${...}`, which OmegaConf would resolve)."""
    if isinstance(node, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in node.items())
    if isinstance(node, list):
        return all(_plain(v) for v in node)
    return not (isinstance(node, str) and "${" in node)


def check_recorded(config: dict) -> list[Finding]:
    """The findings for a bitnet run from its recorded (resolved) config alone, for run folders written before
    the setup check existed: the model is built on the meta device (no memory, no weights) from the `model`
    section and the optimizer from `optim` with the first step's decay (`wd.value`), as the run built them.
    Raises ValueError (one line) when the config cannot be read that way (not bitnet's, older keys, or text that
    would be an interpolation: a recorded config is data, never resolved)."""
    from omegaconf import OmegaConf

    from bitnet.keys import Keys
    from bitnet.model import ModelConfig
    from bitnet.optim import OptimConfig

    if not isinstance(config, dict) or not all(isinstance(config.get(k), dict) for k in ("model", "optim", "lr", "wd")):
        raise ValueError("no model, optim, lr and wd sections in the recorded config")
    if not _plain(config):
        raise ValueError("the recorded config holds `${...}` text, which is never resolved")
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    vocab, seq_len = data.get("vocab_size"), data.get("seq_len")
    if not (isinstance(vocab, int) and isinstance(seq_len, int) and vocab > 0 and seq_len > 0):
        raise ValueError("no data.vocab_size / data.seq_len in the recorded config")
    keys = Keys(OmegaConf.create({k: config[k] for k in ("model", "optim")}))
    try:
        model_config = ModelConfig.from_keys(keys.sub("model"), vocab_size=vocab, max_seq_len=seq_len)
        optim_config = OptimConfig.from_keys(keys.sub("optim"))
        with torch.device("meta"):
            model = model_config.build(vocab)
        optimizer = optim_config.build(model, torch.device("cpu"), weight_decay=float(config["wd"].get("value", 0)))
    except Exception as err:  # noqa: BLE001 - any reason it cannot be rebuilt is reported as one line
        raise ValueError(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__) from None
    peak = config["lr"].get("peak")
    return check_setup(model, optimizer, lr=float(peak) if isinstance(peak, (int, float)) else None,
                       width=model_config.hidden)
