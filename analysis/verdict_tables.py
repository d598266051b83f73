"""The verdict tables: per-cell collapse trajectory, one row per intervention arm with its summary, the
collapse signature, and the scaling decision over sizes (the values of --size-key, hidden by default). Each
one's rule is in analysis.rules and is printed above it (the notes of analysis.core.analyse)."""

from __future__ import annotations

import pandas as pd

from analysis.cells import cells, keys_display, per_cell, tokens_with_phase
from analysis.fmt import NA, fmt_cell, fmt_value, step_label
from analysis.rules import Rules, counted, decide_scaling, intervention_summary, label_summary, phases_summary
from bitnet.records import FINISHED_STATUSES


def trajectory_table(pp: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    table = cells(pp, keys, ["first_collapse", "min_tokens", "min_step", "recovery_factor", "loss_start",
                              "loss_at_min", "final_tokens"])
    for column in ("trajectory", "loss_kind"):
        table[column] = per_cell(pp, keys, column, label_summary)
    table["plateau"] = per_cell(pp, keys, "plateau", label_summary)
    table["phase_at_min"] = per_cell(pp, keys, "phase_at_min", phases_summary)
    table["final_phase"] = per_cell(pp, keys, "final_phase", phases_summary)
    md = keys_display(table, keys)
    md["first collapse"] = ["never" if pd.isna(r.first_collapse) and not pd.isna(r.min_tokens) else
                            f"step {fmt_cell(r, 'first_collapse', 'step')}" if not pd.isna(r.first_collapse) else NA
                            for _, r in table.iterrows()]
    md["minimum"] = [f"{tokens_with_phase(r.min_tokens, r.phase_at_min)} @{fmt_cell(r, 'min_step', 'step')}"
                     if not pd.isna(r.min_tokens) else NA for _, r in table.iterrows()]
    md["final / minimum"] = [fmt_cell(r, "recovery_factor", "factor") for _, r in table.iterrows()]
    md["loss into the minimum"] = [f"{fmt_value(r.loss_start, 'loss')} → {fmt_value(r.loss_at_min, 'loss')} "
                                   f"({r.loss_kind})" if not pd.isna(r.loss_start) and not pd.isna(r.loss_at_min)
                                   else NA for _, r in table.iterrows()]
    md["longest plateau"] = table.plateau
    md["trajectory"] = table.trajectory
    md["final"] = [tokens_with_phase(r.final_tokens, r.final_phase) for _, r in table.iterrows()]
    md["status"] = table.status
    if (table.n > 1).any():
        md["seeds"] = table.n
    return md, table


def signature_table(pp: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per cell (per arm): the collapse-signature verdict with k/n seeds, and each of its parts."""
    table = cells(pp, keys, ["signature_plateau_start", "signature_plateau_share"])
    for column in ("signature", "signature_plateau", "signature_stalled", "signature_release"):
        table[column] = per_cell(pp, keys, column, counted)
    for column in ("signature_stalled_text", "signature_release_text"):
        table[column] = per_cell(pp, keys, column, label_summary)
    md = keys_display(table, keys)
    md["seed signature"] = table.signature
    md["lasting plateau"] = [f"{p} (from {fmt_cell(r, 'signature_plateau_start', 'step')}, "
                             f"{r.signature_plateau_share:.0%} of stage 1)" if not pd.isna(r.signature_plateau_start)
                             else p for p, (_, r) in zip(table.signature_plateau, table.iterrows())]
    md["loss stalled (near uniform or rising)"] = [f"{p} ({t})" if t and t != NA else p for p, t in
                                                   zip(table.signature_stalled, table.signature_stalled_text)]
    md["release over the window"] = [f"{p} ({t})" if t and t != NA else p
                                     for p, t in zip(table.signature_release, table.signature_release_text)]
    md["status"] = table.status
    return md, table


def arm_keys(keys: list[str], size_key: str = "hidden") -> list[str]:
    """The keys of an intervention sweep's arms: every cell key but the size."""
    return [k for k in keys if k != size_key]


def interventions_table(pp: pd.DataFrame, keys: list[str], rules: Rules, size_key: str = "hidden"
                        ) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """One row per arm (per size, when size is swept too), in the order the sweep declares the arms, and one
    summary line per size naming the arms that end collapsed and those that do not."""
    arms = arm_keys(keys, size_key)
    if not arms:
        return pd.DataFrame(), pd.DataFrame(), []
    md, table = trajectory_table(pp, keys)
    md = md.drop(columns=["first collapse", "final / minimum", "loss into the minimum", "longest plateau"])
    summaries = []
    for size, block in (pp.groupby(size_key, dropna=False, sort=False) if size_key in keys else [(None, pp)]):
        entries = []
        for arm, seeds in block.groupby(arms, dropna=False, sort=False):
            arm = arm if isinstance(arm, tuple) else (arm,)
            waiting = [s for s in seeds.status if s not in FINISHED_STATUSES]
            # a multi-key arm as key=value pairs joined by "/", so arms stay apart in the summary's comma lists
            label = (fmt_value(arm[0]) if len(arms) == 1
                     else "/".join(f"{k}={fmt_value(v)}" for k, v in zip(arms, arm)))
            judged = seeds[(seeds.diverged == "") & seeds.status.isin(FINISHED_STATUSES)]
            entries.append({"arm": label, "final_tokens": list(judged.final_tokens), "waiting": waiting,
                            "short": [r for r in seeds.too_short if r], "diverged": int((seeds.diverged != "").sum())})
        prefix = f"{size_key}={fmt_value(size)}: " if size is not None else ""
        summaries.append(prefix + intervention_summary(entries, rules))
    return md, table, summaries


def _phase_by_size(sizes: list[dict], size_key: str) -> str:
    phases = {s["phase"] for s in sizes}
    if len(phases) == 1:
        return phases.pop()
    return "; ".join(f"{fmt_value(s[size_key])}: {s['phase']}" for s in sizes)


def decision_table(pp: pd.DataFrame, keys: list[str], late: int, rules: Rules, size_key: str = "hidden"
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per group of the other keys, the scaling decision over the values of `size_key` (the size axis)."""
    if size_key not in keys:
        return pd.DataFrame(), pd.DataFrame()
    others = arm_keys(keys, size_key)
    rows = []
    for group, block in (pp.groupby(others, dropna=False, sort=False) if others else [((), pp)]):
        group = group if isinstance(group, tuple) else (group,)
        sizes = []
        for size, seeds in block.sort_values(size_key, kind="stable").groupby(size_key, sort=False):
            have = seeds.tokens_late.notna() & (seeds.unjudged == "")
            waiting = seeds.tokens_late.isna() | (seeds.diverged != "")
            sizes.append({size_key: size, "tokens": seeds.tokens_late[have].mean() if have.any() else float("nan"),
                          "seeds": int(have.sum()), "phase": phases_summary(list(seeds.phase_late[have])),
                          "values": list(seeds.tokens_late[have]),
                          "waiting": [s for s in dict.fromkeys(seeds.status[waiting & (seeds.too_short == "")])],
                          "short": [r for r in seeds.too_short if r]})
        decision = decide_scaling(sizes, rules, keys, size_key)
        rows.append({**dict(zip(others, group)), "step": late,
                     f"tokens by {size_key}": "; ".join(f"{fmt_value(s[size_key])}: {fmt_value(s['tokens'], 'tokens')}"
                                                   for s in sizes if s["seeds"]),
                     f"phase by {size_key}": _phase_by_size([s for s in sizes if s["seeds"]], size_key),
                     f"diverse (>{rules.diverse:g})": ", ".join(fmt_value(s[size_key]) for s in sizes
                                                             if s["seeds"] and s["tokens"] > rules.diverse) or "none",
                     "seeds per size": "/".join(str(s["seeds"]) for s in sizes),
                     **decision})
    table = pd.DataFrame(rows)
    md = table.copy()
    for k in others:
        md[k] = [fmt_value(v) for v in md[k]]
    md["step"] = [step_label(s) for s in md.step]
    return md, table
