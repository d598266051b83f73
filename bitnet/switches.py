"""When a two-stage schedule switches to stage 2: the one rule, for bitnet's own runs (bitnet.schedules reads it
from the config), for runs measured elsewhere (bitnet.probe, analysis.foreign: their config is a plain dict)
and for run folders recorded before run.json stated the switch steps (bitnet.records).

Plain Python, no torch and no Hydra: the analysis imports it.
"""

from __future__ import annotations

KINDS = ("lr", "wd")  # the schedules that can switch


def midpoint(total_steps: int) -> int:
    """Where `switch_step: null` puts the switch."""
    return total_steps // 2


def switch_at(name: str | None, switch_step: int | None, total_steps: int | None) -> int | None:
    """The step a schedule switches at: None for a schedule without stages; the midpoint of the run when a
    two_stage schedule leaves `switch_step` null (None when the run's length is not known either)."""
    if name != "two_stage":
        return None
    if switch_step is not None:
        return switch_step
    return midpoint(total_steps) if isinstance(total_steps, int) and not isinstance(total_steps, bool) else None


def stated_switch_steps(config: dict) -> dict:
    """{"lr": step or None, "wd": ...} from a nested config dict (`{"wd": {"name": "two_stage"}, "train":
    {"steps": 1000}}`), by `switch_at`. A schedule without a name but with a `switch_step` (a probe's or a
    foreign CSV's label) switches there. A kind the config says nothing about is left out: not known, so not
    claimed to be absent."""
    config = config if isinstance(config, dict) else {}
    steps = (config.get("train") if isinstance(config.get("train"), dict) else {}).get("steps")
    switches = {}
    for kind in KINDS:
        node = config.get(kind)
        if not isinstance(node, dict) or (node.get("name") is None and node.get("switch_step") is None):
            continue
        name = node.get("name") if node.get("name") is not None else "two_stage"  # a bare switch_step label
        switches[kind] = switch_at(name, node.get("switch_step"), steps)
    return switches
