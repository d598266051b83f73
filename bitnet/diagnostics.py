"""Collapse diagnostics: the signals that separate a normal unigram phase from a ternary pathology
(docs/recipe.md, "What collapse to a few tokens usually is").

- unigram_entropy: loss of the best context-free predictor on the training split; eval loss near it means
  the model predicts token frequencies and nothing more (the unigram phase).
- hidden_cosine: mean cosine similarity of final hidden states across positions; near 1 means every
  position gets the same representation, and so the same prediction.
- BitLinear weights: share of ternary codes at zero, share of codes that flipped since the last evaluation
  (WD pulls latent weights toward the rounding thresholds and makes codes flip), RMS of the latent weights.
- parameter groups: RMS of the token embedding, the LM head and the norm gains (all of them, and the final
  norm's alone, which scales the logits directly). Weight decay applied to every parameter shrinks exactly
  these; with the logit scale (logit_std, measured by bitnet.probe.evaluate) they show which parameters the
  decay pulls down while a model stalls and what a switch releases.
- generation: distinct-n and repeated n-grams of greedy and sampled continuations of held-out prompts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from bitnet.quant import BitLinear, ternary_codes
from bitnet.records import atomic_file

if TYPE_CHECKING:  # only read from a composed config; bitnet.probe's users need no omegaconf
    from bitnet.keys import Keys

def unigram_entropy(ids: torch.Tensor, vocab_size: int) -> float:
    """Entropy in nats of the token histogram: the cross-entropy of the best context-free predictor."""
    counts = torch.bincount(ids.flatten(), minlength=vocab_size).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


class CosineAccumulator:
    """Mean pairwise cosine similarity of many vectors without the N x N matrix:
    sum_{i != j} u_i.u_j = |sum u|^2 - N for unit vectors u."""

    def __init__(self):
        self.total, self.count = None, 0

    def add(self, vectors: torch.Tensor) -> None:
        unit = F.normalize(vectors.float(), dim=-1).sum(0)
        self.total = unit if self.total is None else self.total + unit
        self.count += len(vectors)

    def value(self) -> float | None:
        if self.count < 2:
            return None
        return float((self.total.double().square().sum() - self.count) / (self.count * (self.count - 1)))


def mean_pairwise_cosine(vectors: torch.Tensor) -> float | None:
    acc = CosineAccumulator()
    acc.add(vectors)
    return acc.value()


class WeightTracker:
    """Zero fraction, flip rate and latent RMS of every BitLinear, together and per layer. Keeps the previous
    evaluation's codes (int8) to count flips."""

    def __init__(self, layers: dict[str, BitLinear]):
        self.layers = layers
        self.previous: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def measure(self) -> tuple[dict, list[dict]]:
        per_layer, zeros, flips, compared, squares, total = [], 0, 0, 0, 0.0, 0
        for name, layer in self.layers.items():
            w = layer.weight.detach()
            layer_squares = float(w.float().square().sum())
            row = {"layer": name, "latent_rms": math.sqrt(layer_squares / w.numel())}
            squares += layer_squares
            total += w.numel()
            if layer.quantizes_weights:
                codes = ternary_codes(w.float()).to(torch.int8)
                layer_zeros = int((codes == 0).sum())
                row["zero_frac"] = layer_zeros / w.numel()
                zeros += layer_zeros
                if name in self.previous:
                    layer_flips = int((codes != self.previous[name]).sum())
                    row["flip_rate"] = layer_flips / w.numel()
                    flips += layer_flips
                    compared += w.numel()
                self.previous[name] = codes
            per_layer.append(row)
        quantized = sum(l.weight.numel() for l in self.layers.values() if l.quantizes_weights)
        together = {"latent_rms": math.sqrt(squares / total) if total else None,
                    "zero_frac": zeros / quantized if quantized else None,
                    "flip_rate": flips / compared if compared else None}
        return together, per_layer

    def state_dict(self) -> dict:
        return {name: codes.cpu() for name, codes in self.previous.items()}

    def load_state_dict(self, state: dict) -> None:
        self.previous = {name: codes.to(self.layers[name].weight.device) for name, codes in state.items()}


def _rms(tensors: list[torch.Tensor]) -> float | None:
    count = sum(t.numel() for t in tensors)
    return math.sqrt(sum(float(t.detach().float().square().sum()) for t in tensors) / count) if count else None


def _is_norm(module: torch.nn.Module) -> bool:
    """RMSNorm, LayerNorm and their relatives (LlamaRMSNorm, ...): a module named *Norm with a 1-D gain."""
    weight = getattr(module, "weight", None)
    return (type(module).__name__.endswith("Norm") and isinstance(weight, torch.nn.Parameter)
            and weight.dim() == 1)


@torch.no_grad()
def parameter_group_rms(model: torch.nn.Module) -> dict:
    """RMS of the parameter groups that decay on every parameter shrinks (bitnet.records.PARAMETER_GROUP_COLUMNS):

    embed_rms       the input token embedding (the first nn.Embedding)
    head_rms        the LM head: `get_output_embeddings()` (Hugging Face), else a module named `head` or
                    `lm_head`; the embedding when the two are tied; None when none is found
    norm_gain_rms   every norm gain together (modules named *Norm with a 1-D weight)
    final_norm_rms  the last norm in module order (the final norm before the head in LLaMA/GPT layouts)

    Works on bitnet's model and on any nn.Module laid out like a decoder LM; a group it cannot find is None."""
    modules = dict(model.named_modules())
    embedding = next((m for m in modules.values() if isinstance(m, torch.nn.Embedding)), None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head = head if head is not None else modules.get("head", modules.get("lm_head"))
    norms = [m for m in modules.values() if _is_norm(m)]
    return {"embed_rms": _rms([embedding.weight]) if embedding is not None else None,
            "head_rms": _rms([head.weight]) if getattr(head, "weight", None) is not None else None,
            "norm_gain_rms": _rms([m.weight for m in norms]),
            "final_norm_rms": _rms([norms[-1].weight]) if norms else None}


def distinct_n(tokens: list[int], n: int) -> float | None:
    """Share of distinct n-grams among all n-grams of a sequence (Li et al.'s distinct-n)."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def repeated_ngram_rate(tokens: list[int], n: int = 3) -> float | None:
    """Share of n-grams that already occurred earlier in the same sequence (0 = no repetition)."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return None
    seen, repeats = set(), 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams)


def text_diversity(continuations: list[list[int]], prefix: str) -> dict:
    """Mean distinct-1, distinct-2 and repeated-trigram rate over continuations."""
    def mean(values):
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    return {f"{prefix}_distinct1": mean(distinct_n(c, 1) for c in continuations),
            f"{prefix}_distinct2": mean(distinct_n(c, 2) for c in continuations),
            f"{prefix}_repeat3": mean(repeated_ngram_rate(c, 3) for c in continuations)}


def generation_prompts(val_ids: torch.Tensor, count: int, length: int) -> torch.Tensor:
    """`count` prompts of `length` tokens, evenly spaced through the held-out split (fixed for the run)."""
    starts = torch.linspace(0, len(val_ids) - length - 1, count).long()
    return val_ids[starts[:, None] + torch.arange(length)]


@torch.no_grad()
def generate(model, prompts: torch.Tensor, new_tokens: int, temperature: float | None, seed: int,
             autocast) -> torch.Tensor:
    """Continue every prompt by `new_tokens` tokens: greedy when temperature is None, else sampled with a
    private generator so that generating never moves the training RNG."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    tokens = prompts.to(device)
    max_len = model.cfg.max_seq_len
    was_training = model.training
    model.eval()
    for _ in range(new_tokens):
        with autocast():
            logits = model(tokens[:, -max_len:])[:, -1].float()
        if temperature is None:
            nxt = logits.argmax(-1, keepdim=True)
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator)
        tokens = torch.cat([tokens, nxt], dim=1)
    model.train(was_training)
    return tokens[:, prompts.shape[1]:].cpu()


# Prompts are continued together, as one batch, at every generation row, and each continuation is written out
# for reading: a few hundred is already more than anyone reads, and 100,000 would stall the run for hours.
MAX_PROMPTS = 256


@dataclass(frozen=True)
class GenerateConfig:
    """`eval.generate` (defaults in conf/eval/default.yaml): continuations of fixed held-out prompts."""

    every: int            # at every Nth evaluation row; 0 = off
    prompts: int          # prompts, evenly spaced through the held-out split
    prompt_tokens: int    # tokens per prompt (at most data.seq_len)
    new_tokens: int       # tokens generated per continuation
    temperature: float    # of the sampled continuation (the other one is greedy)
    seed: int             # the sampling generator's seed (plus the step)

    @classmethod
    def from_keys(cls, keys: Keys) -> GenerateConfig:
        every = keys.integer("every", 0, "an integer >= 0 (every Nth evaluation row; 0 = off)")
        prompts = keys.positive("prompts")
        if prompts > MAX_PROMPTS:
            raise keys.error("prompts", prompts, f"must be at most {MAX_PROMPTS}: every prompt is continued in one "
                                                 f"batch at each generation row and written to generations/")
        return cls(every=every, prompts=prompts, new_tokens=keys.positive("new_tokens"),
                   temperature=keys.number("temperature", 0, None, "a positive number", low_open=True),
                   seed=keys.seed("seed"), prompt_tokens=keys.positive("prompt_tokens"))


def generation_report(model, tokenizer, prompts: torch.Tensor, cfg: GenerateConfig, step: int, out_dir: Path,
                      autocast) -> dict:
    """Greedy and sampled continuations written to generations/step_XXXXXXX.txt; returns their diversity."""
    greedy = generate(model, prompts, cfg.new_tokens, None, 0, autocast)
    sampled = generate(model, prompts, cfg.new_tokens, cfg.temperature, cfg.seed + step, autocast)
    folder = Path(out_dir) / "generations"
    folder.mkdir(exist_ok=True)
    lines = [f"# step {step}: greedy and sampled (temperature {cfg.temperature}) continuations"]
    for i, prompt in enumerate(prompts):
        lines += [f"\n## prompt {i}: {tokenizer.decode(prompt.tolist())!r}",
                  f"greedy : {tokenizer.decode(greedy[i].tolist())!r}",
                  f"sampled: {tokenizer.decode(sampled[i].tolist())!r}"]
    with atomic_file(folder / f"step_{step:07d}.txt") as handle:
        handle.write("\n".join(lines) + "\n")
    return {**text_diversity(greedy.tolist(), "greedy"), **text_diversity(sampled.tolist(), "sampled")}
