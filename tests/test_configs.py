"""Compose every config option and every sweep preset with Hydra's compose API, as Hydra would."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bitnet.run import SWEEPS_DIR, register_presets
from tests.conftest import CONF_DIR, REPO_ROOT

GROUPS = ["model", "optim", "lr", "wd", "data", "eval", "intervention", "suspect", "scale"]
PRESETS = sorted(p.stem for p in (REPO_ROOT / "sweeps").glob("*.yaml"))
EXTRA = {"data=text": ["data.path=/tmp/some.txt"]}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def composed(overrides: list[str], hydra_node: bool = False):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=hydra_node)


@pytest.mark.parametrize("override", [f"{g}={o}" if g in ("model", "optim", "lr", "wd", "data", "eval")
                                      else f"+{g}={o}" for g in GROUPS for o in options(g)])
def test_every_option_composes_and_resolves(override):
    cfg = composed([override, *EXTRA.get(override, [])])
    container = OmegaConf.to_container(cfg, resolve=True)
    assert container["model"]["hidden"] == container["hidden"]
    assert container["lr"]["name"] in ("constant", "linear", "cosine", "two_stage")
    assert container["wd"]["name"] in ("constant", "two_stage", "cosine")
    assert container["train"]["steps"] > 0


@pytest.mark.parametrize("override", [f"{g}={o}" if g in ("model", "optim", "lr", "wd", "data", "eval")
                                      else f"+{g}={o}" for g in GROUPS for o in options(g)])
def test_no_option_is_refused_as_unread(override):
    """Every key of every option is read by a component, so the unread-key check never refuses one. Arms
    (interventions, suspects) are composed as the presets use them: under a scale (their grid.* values) and the
    two-stage schedules (an arm that sets a stage-2 value does nothing under a constant one, and is rightly
    refused there)."""
    from bitnet.config import RunConfig

    arm = override.startswith(("+intervention", "+suspect"))
    RunConfig.from_config(composed([*(["+scale=smoke", "lr=two_stage", "wd=two_stage"] if arm else []), override,
                                    *EXTRA.get(override, [])]))


def test_schedule_groups_inherit_shared_keys():
    two_stage = composed(["lr=two_stage", "wd=two_stage"])
    assert two_stage.lr.peak == 1.5e-3 and two_stage.lr.stage2_peak == 1e-3 and two_stage.lr.warmup == 50
    assert two_stage.wd.value == 0.1 and two_stage.wd.stage2_value == 0.0
    assert composed(["model=bitnet_2b4t"]).model.norm == "subln"


def test_hidden_is_a_top_level_sweepable_key():
    assert composed(["hidden=768"]).model.hidden == 768


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("scale", ["paper", "smoke", "study"])
def test_every_preset_composes_with_every_scale(preset, scale):
    cfg = composed([f"+sweep={preset}", f"scale={scale}"], hydra_node=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True)
    assert params, f"{preset} sweeps nothing"
    assert cfg.hydra.sweep.dir == f"multirun/{preset}/{scale}"
    steps = cfg.train.steps
    long_horizon = preset in ("screening", "fixes", "collapse_map")  # the scale's grid.horizon
    assert steps == {"paper": 20_000 if preset == "stage1_only" else 10_000,
                     "smoke": 80 if preset == "stage1_only" else 40,
                     "study": 800 if preset == "stage1_only" else 1200 if long_horizon else 400}[scale]


def grid_points(preset: str, scale: str) -> list[list[str]]:
    """The preset's grid at this scale as override lists (its hydra.sweeper.params expanded). `seed` keeps its
    first value: which keys a point has does not depend on the seed."""
    import itertools

    cfg = composed([f"+sweep={preset}", f"scale={scale}"], hydra_node=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True)
    axes = [[f"{key}={value}" for value in str(values).split(",")][:1 if key == "seed" else None]
            for key, values in params.items()]
    return [list(point) for point in itertools.product(*axes)]


@pytest.mark.parametrize("preset", PRESETS)
# every point composed: about 150 configs over the three scales; smoke's outside the slow tests
@pytest.mark.parametrize("scale", [pytest.param("paper", marks=pytest.mark.slow), "smoke",
                                   pytest.param("study", marks=pytest.mark.slow)])
def test_no_key_of_any_preset_point_is_refused_as_unread(preset, scale):
    """Every key of every grid point of every preset is read by a component (or is free-form: grid.*, hydra.*),
    so the unread-key check never refuses a preset."""
    from bitnet.config import RunConfig

    points = grid_points(preset, scale)
    assert points
    for point in points:
        RunConfig.from_config(composed([f"+sweep={preset}", f"scale={scale}", *point]))


def test_presets_compose_without_a_link_from_conf_to_sweeps():
    """The `sweep` group is sweeps/ itself (registered by bitnet.run), not a symlink inside conf/."""
    assert not (CONF_DIR / "sweep").exists()
    assert SWEEPS_DIR == REPO_ROOT / "sweeps"
    assert register_presets() == PRESETS


def test_presets_reproduce_the_seeds_settings():
    scaling = composed(["+sweep=scaling"], hydra_node=True)
    assert scaling.hydra.sweeper.params.hidden == "256,512,768,1024"
    assert (scaling.lr.name, scaling.lr.peak, scaling.wd.value, scaling.wd.stage2_value) == \
        ("two_stage", 1.5e-3, 0.1, 0.0)
    factorial = composed(["+sweep=lr_wd_factorial"], hydra_node=True)
    assert dict(factorial.hydra.sweeper.params) == {"lr": "linear,two_stage", "wd": "constant,two_stage",
                                                    "seed": "0,1,2"}
    reduced = composed(["+sweep=interventions", "+intervention=reduced_lr"])
    assert reduced.lr.peak == 5e-4 and reduced.hidden == 256
    clip = composed(["+sweep=interventions", "+intervention=grad_clip"])
    assert clip.train.grad_clip == 0.1 and clip.lr.peak == 1.5e-3
    stage1 = composed(["+sweep=stage1_only"])
    assert stage1.train.stage1_only and stage1.wd.value == 0.1


def test_help_is_bitnets_own():
    """`--help` (Hydra's help template, conf/hydra/help/bitnet.yaml): what to run, every group with its options
    and the presets, where results go."""
    from tests.conftest import run_main

    text = run_main("--help").stdout
    assert text.startswith("bitnet: ") and "bitnet -m +sweep=scaling scale=smoke" in text
    for group in GROUPS:
        assert f"{group}: {', '.join(options(group))}" in text
    assert f"sweep: {', '.join(PRESETS)}" in text
    assert "metrics.csv" in text and "multirun/PRESET/SCALE/" in text
    assert "Powered by Hydra" not in text  # not Hydra's generic help


def test_forensics_runs_every_suspect_against_the_recipe_under_the_seeds_schedule():
    cfg = composed(["+sweep=forensics", "scale=study"], hydra_node=True)
    arms = cfg.hydra.sweeper.params["suspect"].split(",")
    assert arms[0] == "faithful" and sorted(arms[1:]) == sorted(o for o in options("suspect") if o != "faithful")
    assert cfg.hydra.sweeper.params.seed == "0,1,2"
    assert (cfg.lr.name, cfg.lr.peak, cfg.lr.stage2_peak, cfg.wd.name, cfg.wd.value, cfg.wd.stage2_value) == \
        ("two_stage", 1.5e-3, 1e-3, "two_stage", 0.1, 0.0)
    assert (cfg.hidden, cfg.model.layers, cfg.train.steps) == (64, 2, 400)  # the default model's size
    # in the order the sweeper passes them: the grid point's overrides first, then the command line's
    arm = {name: composed([f"suspect={name}", "seed=1", "+sweep=forensics", "scale=study"]) for name in arms}
    assert arm["faithful"].optim == composed(["+sweep=forensics", "scale=study"]).optim
    assert arm["coupled_l2"].optim.name == "adam_l2" and arm["decay_all"].optim.decay == "all"
    assert (arm["adam_all_params"].optim.name, arm["adam_all_params"].optim.decay) == ("adam_l2", "all")
    assert arm["large_vocab"].data.vocab_size == 16384 and arm["faithful"].data.vocab_size == 4096
    assert not arm["no_bitlinear_norm"].model.bitlinear_norm and not arm["no_latent_weights"].model.latent_weights
    assert not arm["unclamped_act_scale"].model.clamp_act_scale and arm["quantized_head"].model.quantize_head
    assert composed(["suspect=large_vocab", "+sweep=forensics", "scale=smoke"]).data.vocab_size == 2048


def test_screening_is_a_full_two_level_factorial_of_code_level_slips():
    cfg = composed(["+sweep=screening", "scale=study"], hydra_node=True)
    params = dict(cfg.hydra.sweeper.params)
    assert params == {"optim.name": "adamw,adam_l2", "optim.decay": "matrices,all",
                      "model.quantize_head": "false,true", "seed": "0,1,2"}
    # the recipe is the all-"first level" cell; the slip Adam(model.parameters(), weight_decay=0.1) is one cell
    assert (cfg.optim.name, cfg.optim.decay, cfg.model.quantize_head, cfg.model.bitlinear_norm) == \
        ("adamw", "matrices", False, True)  # the recipe is the all-"first level" cell
    assert (cfg.lr.name, cfg.wd.name, cfg.wd.value, cfg.wd.stage2_value, cfg.train.steps) == \
        ("two_stage", "two_stage", 0.1, 0.0, 1200)


def test_fixes_are_tried_on_the_one_line_adam_slip():
    arm = {name: composed(["+sweep=fixes", "scale=study", f"intervention={name}"])
           for name in composed(["+sweep=fixes", "scale=study"], hydra_node=True).hydra.sweeper.params
           .intervention.split(",")}
    assert sorted(arm) == sorted(["standard", "reduced_lr", "label_smoothing", "grad_clip", "wider", "stage2_wd_005",
                                  "no_wd_switch", "corrected_code"])
    slip = arm["standard"]
    assert (slip.optim.name, slip.optim.decay, slip.hidden, slip.train.steps) == ("adam_l2", "all", 64, 1200)
    assert (arm["corrected_code"].optim.name, arm["corrected_code"].optim.decay) == ("adamw", "matrices")
    assert arm["wider"].hidden == arm["wider"].model.hidden == 128 and arm["wider"].optim.name == "adam_l2"
    assert arm["reduced_lr"].lr.peak == 5e-4 and arm["grad_clip"].train.grad_clip == 0.1
    assert arm["label_smoothing"].train.label_smoothing == 0.1
    assert arm["no_wd_switch"].wd.stage2_value == arm["no_wd_switch"].wd.value == 0.1
    assert arm["stage2_wd_005"].wd.stage2_value == 0.05
    assert composed(["+sweep=fixes", "scale=smoke", "intervention=wider"]).hidden == 64
