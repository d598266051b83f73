"""A results folder is untrusted input (a colleague's sweep, a downloaded archive): each test here crafts one
and checks what it can no longer make the tool do: run code through a checkpoint, write outside the sweep
folder, inject markup into a report, or copy an environment variable into one."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CONF_DIR, REPO_ROOT, TINY, run_main

FIXTURES = Path(__file__).parent / "fixtures"


def compose_tiny(*changes: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=[*TINY, *changes])


class Marker:
    """Unpickling this creates the file `path`: what a crafted checkpoint.pt would do with any code."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def crafted_checkpoint(path: Path, marker: Path) -> bytes:
    import torch

    torch.save({"step": 10, "fingerprint": "x", "model": Marker(marker), "optimizer": {}, "sampler": {},
                "cpu_rng": torch.zeros(1)}, path)
    return path.read_bytes()


def test_a_crafted_checkpoint_is_never_unpickled(tmp_path):
    """Resuming loads checkpoints with weights_only: the crafted file is set aside as unreadable and the point
    trains from step 0; the marker its unpickling would create never appears."""
    import torch

    from bitnet.config import RunConfig
    from bitnet.train import Run

    cfg = compose_tiny()
    folder, marker = tmp_path / "run", tmp_path / "pwned"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"status": "running", "step": 10,
                                                 "config_fingerprint": RunConfig.from_config(cfg).fingerprint}))
    content = crafted_checkpoint(folder / "checkpoint.pt", marker)
    result = Run(cfg, folder).run()
    assert result["status"] == "completed" and result["step"] == 20
    assert not marker.exists()
    aside = folder / "checkpoint.pt.corrupt"
    assert aside.read_bytes() == content
    torch.load(aside, weights_only=False)  # the file is a real threat: a full unpickle runs its code
    assert marker.exists()


def test_a_checkpoint_of_another_config_is_refused_before_it_is_opened(tmp_path):
    """The folder's record names another config: the run is refused (one line, exit 2) without reading the
    checkpoint at all, and the folder is left as it was."""
    folder, marker = tmp_path / "run", tmp_path / "pwned"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"status": "interrupted", "step": 10, "config_fingerprint": "0" * 16,
                                                 "config": {"hidden": 48}}))
    content = crafted_checkpoint(folder / "checkpoint.pt", marker)
    result = run_main(*TINY, f"hydra.run.dir={folder}", check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {folder} holds a checkpoint of a different config ("), lines
    assert "hidden: 48 there, 32 now" in lines[0]
    assert not marker.exists()
    assert (folder / "checkpoint.pt").read_bytes() == content
    assert json.loads((folder / "run.json").read_text())["status"] == "interrupted"


def test_a_grid_value_cannot_place_a_point_outside_the_sweep(tmp_path, private_tokenizer_cache):
    """`data.cache_dir=../../../victim/run` once named a point folder that led out of the sweep folder into
    another run's, whose .hydra/ files Hydra overwrote. A `/` in a value is now written %2F: each point is one
    folder directly in hydra.sweep.dir, and the other run is untouched."""
    from bitnet.data import load_corpus

    load_corpus("kjv", None, 512, 0.05, log=lambda *_: None)  # the session's cache, copied to both cache_dirs
    work = tmp_path / "a" / "b" / "c"
    victim = tmp_path / "victim" / "run"
    for cache in (victim, work / "cache"):
        shutil.copytree(private_tokenizer_cache, cache)
    (victim / ".hydra").mkdir()
    (victim / ".hydra" / "config.yaml").write_text("hidden: 1024\n")
    (victim / "run.json").write_text('{"status": "completed"}\n')
    before = {p: p.read_bytes() for p in victim.rglob("*") if p.is_file()}

    sweep = tmp_path / "sweep"
    result = run_main("-m", *TINY, "train.steps=10", "data.cache_dir=../../../victim/run,cache",
                     f"hydra.sweep.dir={sweep}", cwd=work, env={"PYTHONPATH": str(REPO_ROOT)})
    assert {p: p.read_bytes() for p in victim.rglob("*") if p.is_file()} == before, result.stdout
    folders = [p["folder"] for p in json.loads((sweep / "grid.json").read_text())["points"]]
    assert folders == ["data.cache_dir=..%2F..%2F..%2Fvictim%2Frun", "data.cache_dir=cache"]
    for name in folders:
        assert json.loads((sweep / name / "run.json").read_text())["status"] == "completed"
    assert sorted(p.parent.name for p in sweep.rglob("run.json")) == sorted(folders)  # nothing nested deeper


def test_a_point_folder_outside_the_sweep_is_refused_before_anything_is_written(tmp_path):
    """A custom hydra.sweep.subdir that leads out of the sweep folder: one line per point, exit 2, nothing
    written (no sweep folder, no folder outside it)."""
    sweep = tmp_path / "sweep"
    result = run_main("-m", *TINY, "hidden=32,48", f"hydra.sweep.dir={sweep}",
                     "hydra.sweep.subdir=../outside_${hydra.job.num}", check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: grid point ") for line in lines), lines
    assert "hydra.sweep.subdir='../outside_0' is not allowed: it is not a single folder name" in lines[0]
    assert list(tmp_path.iterdir()) == []


# ---- rendering what a folder says ----------------------------------------------------------------------------
HOSTILE_LABEL = "<img src=x onerror=alert(1)>|$\\foo$"
HOSTILE_STATUS = "<script>alert(1)</script>"
HOSTILE_ERROR = "a|b\n# injected heading\n<script>alert(2)</script>"


@pytest.fixture
def hostile_sweep(tmp_path):
    """seed000's fixture with a label (an override value), a status and an error holding markup."""
    sweep = tmp_path / "hostile"
    shutil.copytree(FIXTURES / "seed000_sweep", sweep)
    for overrides in sweep.glob("example=A,*/.hydra/overrides.yaml"):
        overrides.write_text(overrides.read_text().replace("example=A", f"example='{HOSTILE_LABEL}'"))
    record_path = sweep / "example=B,hidden=256" / "run.json"
    record = json.loads(record_path.read_text())
    record.update(status=HOSTILE_STATUS, error=HOSTILE_ERROR)
    record_path.write_text(json.dumps(record))
    return sweep


def assert_inert(text: str) -> None:
    assert "<script" not in text and "<img" not in text
    assert "\n# injected" not in text
    assert "$\\foo$" not in text and "\\$\\\\foo\\$" in text
    for block in text.split("\n\n"):  # every table row has as many cells as its header
        rows = [line for line in block.splitlines() if line.startswith("|")]
        cells = {len(line.replace("\\|", "").split("|")) for line in rows}
        assert len(cells) <= 1, block


def test_labels_statuses_and_errors_are_escaped_in_tables_and_plots(hostile_sweep, tmp_path):
    from analysis.render import main

    out = tmp_path / "out"
    assert main([str(hostile_sweep), "--out", str(out)]) == 0  # the plots too: `$\foo$` is no mathtext error
    tables = (out / "tables.md").read_text()
    assert_inert(tables)
    assert "&lt;script>alert(1)&lt;/script>" in tables and "a\\|b # injected heading" in tables
    assert (out / "tokens.png").stat().st_size > 0


def test_plot_legends_draw_labels_as_written(hostile_sweep):
    from analysis.core import analyse
    from analysis.plots import plot_tokens

    fig = plot_tokens(analyse([hostile_sweep]))
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(text.endswith(f"example={HOSTILE_LABEL.replace('$', chr(92) + '$')}") for text in legend), legend
    fig.canvas.draw()  # mathtext would be parsed here, and `\foo` is no symbol it knows


def test_the_report_escapes_what_the_folders_say(hostile_sweep, tmp_path):
    from analysis.document import main

    out = tmp_path / "report"
    assert main([str(hostile_sweep), "--out", str(out), "--no-plots"]) == 0
    assert_inert((out / "report.md").read_text())


def test_interpolations_in_a_foreign_config_are_never_resolved(tmp_path, monkeypatch):
    """A run folder without a config in run.json is read from its .hydra/config.yaml as plain YAML: a plain
    `${key}` reference to the same file is followed, a resolver (`${oc.env:...}`) is never run."""
    from analysis.document import main
    from analysis.load import load_sweeps

    monkeypatch.setenv("BITNET_TEST_SECRET", "hunter2-secret")
    folder = tmp_path / "runs" / "foreign"
    shutil.copytree(FIXTURES / "seed000_sweep" / "example=A,hidden=256", folder)
    record = json.loads((folder / "run.json").read_text())
    del record["config"]
    (folder / "run.json").write_text(json.dumps(record))
    (folder / ".hydra" / "config.yaml").write_text(
        "hidden: 256\nseed: 0\nnote: ${oc.env:BITNET_TEST_SECRET}\nmodel:\n  hidden: ${hidden}\n")
    configs = list(load_sweeps([folder]).configs.values())
    assert configs[0]["note"] == "${oc.env:BITNET_TEST_SECRET}" and configs[0]["model.hidden"] == 256
    out = tmp_path / "report"
    assert main([str(folder), "--out", str(out), "--no-plots"]) == 0
    text = (out / "report.md").read_text()
    assert "hunter2" not in text and "\\${oc.env:BITNET_TEST_SECRET}" in text


def test_untrusted_keeps_text_readable_and_on_one_line():
    from analysis.fmt import untrusted

    assert untrusted("hidden=256") == "hidden=256"
    assert untrusted("a|b\r\nc") == "a\\|b c"
    assert untrusted("<b>\\|") == "&lt;b>\\\\\\|"  # a backslash in the text cannot undo the escape of |
    assert untrusted("$x$", "plot") == "\\$x\\$" and untrusted("<b>", "plot") == "<b>"


def test_a_grid_json_cannot_point_the_analysis_outside_the_sweep(tmp_path, capsys):
    from analysis.render import main

    sweep = tmp_path / "sweep"
    shutil.copytree(FIXTURES / "partial_sweep", sweep)
    shutil.copytree(sweep / "hidden=256", tmp_path / "elsewhere")
    grid = json.loads((sweep / "grid.json").read_text())
    grid["points"][0]["folder"] = "../elsewhere"
    (sweep / "grid.json").write_text(json.dumps(grid))
    assert main([str(sweep), "--out", str(tmp_path / "out"), "--no-plots"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {sweep / 'grid.json'}: the point folder '../elsewhere' is "
                                               f"outside the sweep folder; grid.json names folders inside it")
