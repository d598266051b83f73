"""Diagnose runs: for each run (a bitnet run or sweep folder, a folder written by bitnet.probe or its Hugging Face
and Lightning callbacks, or CSV files from other training code), the pattern its curves show (analysis.patterns),
the evaluations and the rule that decide it, the setup check, the likely causes ranked with the committed
evidence behind each, and what to try, as code.

    bitnet-diagnose RUN_OR_SWEEP [...] [--json] [--set wd.switch_step=5000 train.steps=10000 ...]

Exit status: 0 when no run shows a pathology (healthy, brief unigram phase, too short to tell, undecided); 1 when
at least one does; 2 on bad input (nothing is diagnosed). The causes, their evidence and the ranking rule are in
docs/diagnose.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.fmt import missing, untrusted
from analysis.foreign import IMPORTED, ForeignCSVError, add_foreign_arguments, labelling_from
from analysis.load import MISSING, NO_RECORD, NotASweep, Sweep, load_sweeps
from analysis.measures import evaluations, point_curves, switch_events
from analysis.patterns import HEALTHY_KIND, PATHOLOGY, RELEASED, Pattern, classify
from analysis.options import add_rule_options, check_rules
from analysis.rules import Rules
from bitnet.records import FINISHED_STATUSES, RECORD_FILE, RecordError, read_record
from bitnet.setup_check import ERROR, FIX_GROUPS, check_recorded

EVIDENCE_FILE = Path(__file__).with_name("diagnose_evidence.json")
FINDINGS = "docs/findings.md"
NOTHING_TO_DIAGNOSE = (MISSING, NO_RECORD)
# columns of the evidence rows, in the order printed: (metrics.csv column, header)
EVIDENCE_COLUMNS = [("step", "step"), ("loss", "loss"), ("eval_loss", "eval loss"), ("unique_tokens", "tokens"),
                    ("phase", "phase"), ("top1_share", "top-1 share"), ("lr", "lr"), ("wd", "wd")]


# ---- causes and the committed evidence for each ---------------------------------------------------------------
@dataclass(frozen=True)
class Arm:
    """Committed runs that test a cause: what they did (as code where it is code), the folder under results/ and
    the swept values that select them."""

    label: str
    sweep: str
    where: tuple[tuple[str, str], ...]

    @property
    def key(self) -> str:
        return f"{self.sweep}|" + ",".join(f"{k}={v}" for k, v in self.where)


@dataclass(frozen=True)
class Cause:
    key: str
    title: str
    setup_rules: tuple[str, ...]     # setup-check rules (bitnet.setup_check) that show this cause in a setup
    switch_word: str | None          # a stall released by a switch whose label has this word points here
    fix: str                         # what to try, as code
    section: str                     # the section of docs/findings.md with the evidence
    arms: tuple[Arm, ...]            # committed runs that test it: the first `with_cause` have it, the rest not
    with_cause: int = 1


_SLIP = (("model.quantize_head", "False"), ("optim.decay", "all"), ("optim.name", "adam_l2"))
_ARM_SLIP = Arm("torch.optim.Adam(model.parameters(), lr=1.5e-3, weight_decay=0.1)", "screening_study", _SLIP)
_ARM_L2_GROUPS = Arm("Adam with coupled L2 on the weight matrices only", "screening_study",
                     (("model.quantize_head", "False"), ("optim.decay", "matrices"), ("optim.name", "adam_l2")))
_ARM_ADAMW_ALL = Arm("torch.optim.AdamW(model.parameters(), lr=1.5e-3, weight_decay=0.1)", "screening_study",
                     (("model.quantize_head", "False"), ("optim.decay", "all"), ("optim.name", "adamw")))
_ARM_RECIPE = Arm("AdamW, decay on the weight matrices only (the recipe)", "screening_study",
                  (("model.quantize_head", "False"), ("optim.decay", "matrices"), ("optim.name", "adamw")))
CAUSES = (
    Cause("coupled_weight_decay", "weight decay as coupled L2 (torch.optim.Adam / SGD with weight_decay > 0)",
          ("coupled_weight_decay", "decay_on_embedding", "decay_on_biases"), "WD", FIX_GROUPS, "The answer",
          (_ARM_SLIP, _ARM_L2_GROUPS,
           Arm("the same slip with weight decay kept at 0.1 through stage 2 (no WD switch)", "fixes_study",
               (("intervention", "no_wd_switch"),)),
           _ARM_ADAMW_ALL, _ARM_RECIPE,
           Arm("the slip's script with the recipe's AdamW groups (the fix)", "fixes_study",
               (("intervention", "corrected_code"),))), with_cause=3),
    Cause("decay_on_norm_gains", "weight decay on the norm gains", ("decay_on_norm_gains",), None, FIX_GROUPS,
          "The answer", (_ARM_SLIP, _ARM_L2_GROUPS)),
    Cause("quantized_head", "a quantized (ternary) LM head", ("quantized_head",), None,
          "model.quantize_head=false  # or keep the head an nn.Linear", "Screening: which slips, alone and together",
          (Arm("AdamW (recipe groups) with a quantized head", "screening_study",
               (("model.quantize_head", "True"), ("optim.decay", "matrices"), ("optim.name", "adamw"))),
           Arm("a quantized head, 200-step stage 1", "forensics_study", (("suspect", "quantized_head"),)),
           _ARM_RECIPE, Arm("the recipe, 200-step stage 1", "forensics_study", (("suspect", "faithful"),))),
          with_cause=2),
    Cause("lr_above_recipe", "a peak learning rate above the recipe's for the width", ("lr_above_recipe",), None,
          "lr=1.5e-3  # the BitNet b1.58 peak for widths up to 1536 (1.2e-3 from 2048)",
          "The seeds' fixes, tried on the slip",
          (Arm("the Adam slip at the recipe's peak LR 1.5e-3", "fixes_study", (("intervention", "standard"),)),
           Arm("the Adam slip at peak LR 5e-4", "fixes_study", (("intervention", "reduced_lr"),))), with_cause=0),
    Cause("no_norm_before_head", "no norm before the LM head", ("no_norm_before_head",), None,
          "hidden = norm(x); logits = head(hidden)  # e.g. an RMSNorm", "The answer", ()),
)


def load_evidence(path: Path = EVIDENCE_FILE) -> dict:
    """arm key -> {n, patterns: {pattern: count}, final_tokens: [low, high]}, as analysis.evidence wrote it."""
    return json.loads(path.read_text()).get("arms", {}) if path.exists() else {}


def evidence_line(arm: Arm, evidence: dict) -> str:
    found = evidence.get(arm.key)
    if not found:
        return f"{arm.label}: not in the committed results"
    counts = ", ".join(f"{p} {k}/{found['n']}" for p, k in found["patterns"].items())
    low, high = found.get("final_tokens") or (None, None)
    ends = f"; {low:g}-{high:g} tokens at the end" if low is not None and low != high else \
        f"; {low:g} tokens at the end" if low is not None else ""
    return f"{arm.label}: {counts}{ends} (results/{arm.sweep})"


# ---- one run --------------------------------------------------------------------------------------------------
@dataclass
class RankedCause:
    cause: Cause
    basis: list[str]          # why it is listed: in the setup, matches the pattern, the switch that released it
    score: tuple

    def as_dict(self, evidence: dict) -> dict:
        return {"cause": self.cause.key, "title": self.cause.title, "basis": self.basis,
                "evidence": [evidence_line(a, evidence) for a in self.cause.arms],
                "findings": f"{FINDINGS}, \"{self.cause.section}\"", "try": self.cause.fix}


@dataclass
class Diagnosis:
    run: str
    folder: str
    status: str
    pattern: Pattern
    rows: list[dict]
    setup: list[dict] | None          # the setup check's findings (None: unknown)
    setup_source: str                 # recorded / re-checked from the recorded config / why unknown
    causes: list[RankedCause] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.pattern.kind

    def summary(self) -> str:
        causes = ", ".join(c.cause.key for c in self.causes)
        status = "" if self.status == "completed" else f", run {untrusted(self.status, 'text')}"
        return (f"{untrusted(self.run, 'text')}: {self.pattern.name} ({self.kind}{status})"
                + (f"; likely cause: {causes}" if causes else ""))

    def as_dict(self, evidence: dict) -> dict:
        p = self.pattern
        return {"run": self.run, "folder": self.folder, "status": self.status, "pattern": p.name, "kind": self.kind,
                "rule": p.rule, "notes": p.notes, "released_by": {"step": p.switch[0], "switch": p.switch[1]}
                if p.switch else None, "final_tokens": None if missing(p.final_tokens) else float(p.final_tokens),
                "evidence_rows": self.rows, "setup_findings": self.setup, "setup_source": self.setup_source,
                "causes": [c.as_dict(evidence) for c in self.causes]}


def _number(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def read_setup(folder: str) -> tuple[list[dict] | None, str]:
    """The setup check's findings for a run folder: recorded in run.json by the run, Probe or a callback; for a
    bitnet run recorded before the check existed, re-checked from its recorded config; else unknown, and why."""
    if not (Path(folder) / RECORD_FILE).is_file():
        return None, "unknown: no run.json (CSV from other training code; run bitnet.probe.check_setup(model, " \
                     "optimizer) in that code to see it)"
    try:
        record = read_record(Path(folder))
    except RecordError as err:
        return None, f"unknown: {err}"
    if isinstance(record.setup_findings, list):
        return [f for f in record.setup_findings if isinstance(f, dict)], "recorded by the run"
    try:  # null: not checked (a record older than the check, or Probe without an optimizer)
        return [f.as_dict() for f in check_recorded(record.config)], \
            "re-checked from the recorded config (the run predates the setup check)"
    except ValueError as err:
        return None, f"unknown: run.json has no setup check and its config cannot be re-checked ({err})"


def rank_causes(pattern: Pattern, setup: list[dict] | None, evidence: dict) -> list[RankedCause]:
    """The causes that may explain a pathology, best first (docs/diagnose.md, "Ranking"): a cause the setup check
    found in this run outranks one the setup cannot show (unknown setup), severity error before warning; then a
    cause whose committed runs showed this pattern; then one the releasing switch points to. A cause the known
    setup rules out is not listed; a run without a pathology gets none."""
    if pattern.kind != PATHOLOGY:
        return []
    found = {f.get("rule"): f for f in setup or []}
    ranked = []
    for cause in CAUSES:
        hits = [found[r] for r in cause.setup_rules if r in found]
        if setup is not None and not hits:
            continue  # the setup is known and does not have it
        basis, setup_score = [], 0
        if hits:
            setup_score = 2 if any(h.get("severity") == ERROR for h in hits) else 1
            basis.append("in this run's setup: " + "; ".join(untrusted(h.get("what", h.get("rule")), "text")
                                                           for h in hits))
        else:
            basis.append("possible: this run's setup is unknown")
        with_cause = [evidence.get(a.key) for a in cause.arms[:cause.with_cause]]
        shown = any(e and e["patterns"].get(pattern.name) for e in with_cause)
        if shown:
            basis.append(f"the committed runs with it show this pattern ({pattern.name})")
        switched = bool(pattern.name == RELEASED and pattern.switch and cause.switch_word
                        and cause.switch_word in pattern.switch[1])
        if switched:
            basis.append(f"the switch that released it changed {cause.switch_word}")
        if not hits and not (shown or switched):
            continue  # nothing in this run points to it
        ranked.append(RankedCause(cause, basis, (setup_score, shown, switched)))
    return sorted(ranked, key=lambda c: c.score, reverse=True)


def evidence_rows(curve: pd.DataFrame, steps: list[int]) -> list[dict]:
    """The evaluations at `steps` (those that decide the pattern), with the columns of EVIDENCE_COLUMNS the run
    has."""
    rows = []
    for step in sorted({s for s in steps if s in curve.index}):
        found = curve.loc[step]
        if isinstance(found, pd.DataFrame):
            found = found.iloc[-1]
        row = {"step": int(step)}
        for column, _ in EVIDENCE_COLUMNS[1:]:
            if column in curve:
                value = found.get(column)
                row[column] = value if column == "phase" else _number(value)
        rows.append(row)
    return rows


def run_name(folder: str) -> str:
    """A run's name as the user can find it: its folder relative to the working directory (absolute when outside)."""
    path = Path(folder)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def not_diagnosed(sweep: Sweep) -> list[str]:
    """The grid points with nothing to diagnose: never started (missing) or no run.json yet."""
    points = sweep.points[sweep.points.status.isin(NOTHING_TO_DIAGNOSE)]
    return [f"{run_name(folder)}: {status}" for folder, status in zip(points.folder, points.status)]


def diagnose_sweep(sweep: Sweep, rules: Rules, evidence: dict, curves: dict | None = None) -> list[Diagnosis]:
    """One Diagnosis per run of `sweep` that has something to diagnose; `curves` as analysis.measures.point_curves
    makes them (an Analysis's, so that nothing is measured twice)."""
    curves = point_curves(sweep, rules) if curves is None else curves
    out = []
    for _, point in sweep.points.iterrows():
        if point["status"] in NOTHING_TO_DIAGNOSE:
            continue
        curve = curves[(point["sweep"], point["point"])]
        rows = evaluations(curve)
        config = sweep.configs.get((point["sweep"], point["point"]), {})
        total = point.get("total_steps")
        total = point.get("train.steps") if missing(total) else total
        error = point.get("error")
        pattern = classify(rows, rules, switches=switch_events(point), warmup=config.get("lr.warmup"),
                           total_steps=None if missing(total) else float(total), ln_vocab=_number(point.get("ln_vocab")),
                           status=point["status"], error=error if isinstance(error, str) else None,
                           training_losses=[(int(s), float(v)) for s, v in zip(curve.index, curve["loss"])]
                           if "loss" in curve else [],
                           switch_unknown=point.get("switch_unknown") or "")
        if point["status"] == IMPORTED:
            pattern.notes.append("whether the run finished is unknown (give train.steps): the pattern is the one so far")
        elif point["status"] not in FINISHED_STATUSES:
            pattern.notes.append(f"the run is {point['status']}: the pattern is the one so far")
        setup, source = read_setup(point["folder"])
        diagnosis = Diagnosis(run_name(point["folder"]), point["folder"], point["status"], pattern,
                              evidence_rows(curve, pattern.steps), setup, source)
        diagnosis.causes = rank_causes(pattern, setup, evidence)
        out.append(diagnosis)
    return out


# ---- output ---------------------------------------------------------------------------------------------------
def _cell(column: str, value) -> str:
    if missing(value):
        return "–"
    if column == "phase":
        return untrusted(value, "text")
    if column in ("step", "unique_tokens"):
        return f"{value:g}"
    return f"{value:.3g}" if column in ("lr", "wd", "top1_share") else f"{value:.3f}"


def rows_text(rows: list[dict]) -> list[str]:
    """The evidence rows as an aligned table, without the columns the run has no value in."""
    columns = [(c, h) for c, h in EVIDENCE_COLUMNS if any(not missing(r.get(c)) for r in rows)]
    table = [[h for _, h in columns]] + [[_cell(c, r.get(c)) for c, _ in columns] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    return ["  " + "  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in table]


def render(diagnosis: Diagnosis, evidence: dict, shown: set | None = None) -> str:
    """The text of one diagnosis; `shown` collects the causes whose evidence was printed already (a sweep's later
    runs refer to it instead of repeating it)."""
    shown = set() if shown is None else shown
    p = diagnosis.pattern
    lines = [f"== {untrusted(diagnosis.run, 'text')}",
             f"pattern: {p.name} [{diagnosis.kind}]", f"rule: {untrusted(p.rule, 'text')}"]
    lines += [f"note: {untrusted(n, 'text')}" for n in p.notes]
    if diagnosis.rows:
        lines += ["evidence:", *rows_text(diagnosis.rows)]
    if diagnosis.setup is None:
        lines.append(f"setup check: {diagnosis.setup_source}")
    elif not diagnosis.setup:
        lines.append(f"setup check: no finding ({diagnosis.setup_source})")
    else:
        lines.append(f"setup check ({diagnosis.setup_source}):")
        lines += [f"  [{untrusted(f.get('severity'), 'text')}] {untrusted(f.get('rule'), 'text')}: "
                  f"{untrusted(f.get('what'), 'text')} ({untrusted(f.get('where'), 'text')})" for f in diagnosis.setup]
    if diagnosis.kind == PATHOLOGY:
        if not diagnosis.causes:
            lines.append("likely causes: undecided, because " + (
                "the setup check found none of the known causes and the pattern points to none of them"
                if diagnosis.setup is not None else "the setup is unknown and the pattern points to none of the known "
                "causes (each was tested on this project's runs: docs/diagnose.md)"))
        else:
            lines.append("likely causes, most likely first:")
            for rank, ranked in enumerate(diagnosis.causes, 1):
                lines.append(f"  {rank}. {ranked.cause.title}: " + "; ".join(ranked.basis))
                if ranked.cause.key in shown:
                    lines.append("     evidence and what to try: as above")
                    continue
                shown.add(ranked.cause.key)
                for arm in ranked.cause.arms:
                    lines.append(f"     evidence: {evidence_line(arm, evidence)}")
                if not ranked.cause.arms:
                    lines.append("     evidence: no committed run tests it (a departure from the BitNet b1.58 recipe)")
                lines.append(f"     see {FINDINGS}, \"{ranked.cause.section}\" (results/ and docs/ are in the bitnet "
                             f"repository)")
                lines.append(f"     try: {ranked.cause.fix}")
    elif diagnosis.setup and diagnosis.kind == HEALTHY_KIND:
        lines.append("likely causes: none (no pathology so far); the setup findings above are worth fixing before a "
                     "longer run")
    return "\n".join(lines)


# ---- command line ---------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bitnet-diagnose", description="Which collapse pattern each run shows, the rows and rule that decide "
        "it, the setup check, the likely causes with their evidence, and what to try. Exit status: 0 no pathology "
        "(healthy, brief unigram phase, too short to tell, undecided), 1 a pathology in at least one run, 2 bad "
        "input.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="run folders, sweep folders, or CSV files from other "
                   "training code (or folders of them)")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout instead of the text")
    add_rule_options(p)
    add_foreign_arguments(p)
    return p


def diagnose(paths, rules: Rules = Rules(), labelling=None, evidence: dict | None = None
             ) -> tuple[list[Diagnosis], list[str]]:
    """The diagnoses of every run under `paths` (analysis.load.load_sweeps reads them), and the grid points with
    nothing to diagnose (`not_diagnosed`)."""
    evidence = load_evidence() if evidence is None else evidence
    sweep = load_sweeps(paths, labelling=labelling)
    return diagnose_sweep(sweep, rules, evidence), not_diagnosed(sweep)


def diagnose_analysis(result, evidence: dict | None = None) -> list[Diagnosis]:
    """The diagnoses of an analysis.core.Analysis's runs, from its own curves and rules (the notebook's route)."""
    return diagnose_sweep(result.sweep, result.rules, load_evidence() if evidence is None else evidence, result.curves)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        rules = check_rules(args)
        results, skipped = diagnose(args.paths, rules, labelling_from(args))
    except (NotASweep, ForeignCSVError, ValueError) as err:
        print(f"bitnet-diagnose: error: {err}", file=sys.stderr)
        return 2
    if not results:
        print("bitnet-diagnose: error: no run with a record or metrics found (every point is missing or has no "
              "run.json yet)", file=sys.stderr)
        return 2
    evidence = load_evidence()
    if args.json:
        print(json.dumps({"runs": [d.as_dict(evidence) for d in results], "not_diagnosed": skipped,
                          "exit_status": int(any(d.kind == PATHOLOGY for d in results))}, indent=2, default=str))
    else:
        shown = set()
        print("\n\n".join(render(d, evidence, shown) for d in results))
        print("\nsummary:")
        for d in results:
            print(f"  {d.summary()}")
        for line in skipped:
            print(f"  {untrusted(line, 'text')} (nothing to diagnose)")
    return 1 if any(d.kind == PATHOLOGY for d in results) else 0


if __name__ == "__main__":
    sys.exit(main())
