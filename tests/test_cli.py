"""The analysis' one entry (python -m analysis COMMAND, analysis/cli.py), its module structure (no import
circle), the size-key option, summarised plots of many points, and the report reusing the tables command's
figures."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import cli
from analysis.bench import build_sweep
from analysis.core import analyse
from analysis.fmt import fmt_value
from analysis.load import load_sweeps

REPO_ROOT = Path(__file__).resolve().parent.parent
ANALYSIS = REPO_ROOT / "analysis"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


# ---- the entry ----------------------------------------------------------------------------------------------
def test_every_command_is_a_module_with_main():
    import importlib

    for name, (module, text) in cli.COMMANDS.items():
        assert callable(importlib.import_module(module).main), name
        assert text and name in cli.usage()


def test_without_a_command_it_lists_them_and_an_unknown_one_is_refused(capsys):
    assert cli.main([]) == 2
    assert "commands:" in capsys.readouterr().err
    assert cli.main(["--help"]) == 0
    assert "\n  tables " in capsys.readouterr().out
    assert cli.main(["tabels"]) == 2
    assert capsys.readouterr().err.strip() == ("error: no command 'tabels'; the commands: "
                                               + ", ".join(cli.COMMANDS))


@pytest.mark.slow
def test_python_m_analysis_and_the_old_module_command_write_the_same_tables(tmp_path):
    outputs = {}
    for name, command in (("new", ["-m", "analysis", "tables"]), ("alias", ["-m", "analysis.tables"]),
                          ("old report name", ["-m", "analysis.report"])):
        out = tmp_path / name.replace(" ", "_")
        result = subprocess.run([sys.executable, *command, str(FIXTURES / "seed004_sweep"), "--no-plots", "--out",
                                 str(out)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        outputs[name] = (out / "tables.md").read_text()
    assert outputs["new"] == outputs["alias"] == outputs["old report name"]
    assert "## Collapse signature" in outputs["new"]


def test_the_console_script_is_declared():
    import configparser

    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    assert "bitnet-analysis = analysis.cli:main" in config["options.entry_points"]["console_scripts"]


# ---- no import circle ---------------------------------------------------------------------------------------
def module_imports() -> dict[str, set[str]]:
    """analysis module -> the analysis modules it imports at module level (imports inside functions, such as a
    command run on demand or the __main__ alias, are not part of the import graph)."""
    graph = {}
    for path in ANALYSIS.glob("*.py"):
        name = f"analysis.{path.stem}"
        found = set()
        for node in ast.parse(path.read_text()).body:  # module level only
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("analysis"):
                found.add(node.module if node.module != "analysis" else "analysis.__init__")
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("analysis.")}
        graph[name] = found
    return graph


def test_no_module_of_the_analysis_imports_itself_back():
    graph = module_imports()

    def reaches(start: str, target: str, seen: set) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == target or (nxt not in seen and not seen.add(nxt) and reaches(nxt, target, seen)):
                return True
        return False

    circles = [name for name in graph if reaches(name, name, set())]
    assert circles == []
    # the tables are built below the analysis object and the commands that render it: one way only
    for command in ("analysis.core", "analysis.options", "analysis.render", "analysis.report", "analysis.document",
                    "analysis.plots", "analysis.cli"):
        assert not reaches("analysis.tables", command, set()), command
    assert reaches("analysis.report", "analysis.tables", set())  # the old command name renders the tables
    assert not any(reaches(m, "analysis.cli", set()) for m in graph if m != "analysis.__main__")


@pytest.mark.slow
def test_each_analysis_module_imports_on_its_own():
    """Each module imported first, in a fresh interpreter: a circle would fail on a half-initialised module."""
    modules = sorted(f"analysis.{p.stem}" for p in ANALYSIS.glob("*.py") if p.stem != "__main__")
    script = ("import importlib, sys\n"
              f"for name in {modules!r}:\n"
              "    for loaded in [m for m in sys.modules if m == 'analysis' or m.startswith('analysis.')]:\n"
              "        del sys.modules[loaded]\n"
              "    importlib.import_module(name)\n"
              "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.stdout.strip() == "ok", result.stderr


# ---- the size axis ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> Path:
    """Ten copies of one real point: hidden 32 at eight LRs, hidden 48 at the first two; every cell holds the
    same curve."""
    return build_sweep(tmp_path_factory.mktemp("copies") / "sweep", 10, 40)


def test_the_size_axis_is_an_option(copies, tmp_path):
    from analysis.plots import plot_collapse

    by_hidden = analyse(copies)
    assert list(by_hidden.cells.columns) == ["hidden", "lr.peak", "n", "status"] and len(by_hidden.cells) == 10
    assert "tokens by hidden" in by_hidden.tables["decision"][1]
    peaks = [5e-4, 1e-3, 1.5e-3, 2e-3, 3e-3, 4e-3, 6e-3, 8e-3]
    assert list(by_hidden.tables["decision"][1]["lr.peak"]) == peaks  # one decision per LR, over the sizes
    by_lr = analyse(copies, size_key="lr.peak")
    decision = by_lr.tables["decision"][1]
    assert list(decision["hidden"]) == [32, 48]  # one decision per width, over the LRs
    assert "tokens by lr.peak" in decision and "per lr.peak size" in by_lr.notes["decision"][0]
    assert [s.split(": ")[0] for s in by_lr.interventions_summary] == [f"lr.peak={fmt_value(v)}" for v in peaks]
    ax = plot_collapse(by_lr).axes[0]
    assert ax.get_xlabel() == "lr.peak" and ax.get_title() == "Collapse ratio vs lr.peak"
    # a size key the sweep does not vary is refused, naming the keys it could be
    with pytest.raises(ValueError, match=r"^--size-key seed: not a key that varies between these points' cells; "
                                         r"use one of: hidden, lr.peak$"):
        analyse(copies, size_key="seed")
    result = subprocess.run([sys.executable, "-m", "analysis", "tables", str(copies), "--size-key", "width",
                             "--out", str(tmp_path / "out")], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2 and result.stderr.startswith("error: --size-key width: not a key")
    assert not (tmp_path / "out").exists()


def test_a_sweep_without_the_size_key_says_what_the_decision_needs():
    seed004 = analyse(load_sweeps(FIXTURES / "seed004_sweep"))
    assert seed004.tables["decision"][0].empty and seed004.empty_reason("decision") == "needs a sweep over hidden"


# ---- plots of many points -----------------------------------------------------------------------------------
def test_many_points_are_drawn_as_a_median_and_a_band_per_cell(tmp_path, monkeypatch):
    from matplotlib.collections import PolyCollection

    from analysis import plots

    sweep = build_sweep(tmp_path / "sweep", 80, 40)  # 40 cells of 2 seeds, all copies of one curve
    a = analyse(sweep)
    curve = next(iter(a.curves.values()))["unique_tokens"].dropna().sort_index()
    monkeypatch.setattr(plots, "MAX_LINES", 40)  # 80 points: summarised; 40 cells: one median each
    ax = plots.plot_tokens(a).axes[0]
    lines = [line for line in ax.get_lines() if line.get_label().startswith("hidden=")]
    assert len(lines) == 40 and len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 40
    assert list(lines[0].get_ydata()) == list(curve.values)  # the median of identical seeds is their curve
    assert "median over each cell's seeds, band: their min to max; 80 points" in ax.get_title()
    monkeypatch.setattr(plots, "MAX_LINES", 24)  # more cells than that too: grouped by the first key
    ax = plots.plot_loss(a).axes[0]
    assert {line.get_label() for line in ax.get_lines() if line.get_label().startswith("hidden=")} == \
        {f"hidden={h}" for h in (32, 48, 64, 96, 128)}
    assert "median over the points of each hidden" in ax.get_title()


def test_few_points_keep_one_line_each():
    from analysis.plots import plot_tokens

    a = analyse(load_sweeps(FIXTURES / "seed001_sweep"))
    ax = plot_tokens(a).axes[0]
    assert len([line for line in ax.get_lines() if len(line.get_xdata()) > 2]) == len(a.points)
    assert ax.get_title() == "Prediction diversity"


# ---- the report reuses the tables command's figures ---------------------------------------------------------
def test_the_report_copies_the_figures_the_tables_command_drew(tmp_path, monkeypatch):
    from analysis import document, plots, render

    sweep = tmp_path / "seed004_sweep"
    shutil.copytree(FIXTURES / "seed004_sweep", sweep, ignore=shutil.ignore_patterns("analysis"))
    assert render.main([str(sweep)]) == 0
    drawn = sorted((sweep / "analysis").glob("*.png"))
    assert len(drawn) >= 2 and sorted(plots.drawn_plots(analyse(sweep), sweep / "analysis")) == drawn

    def no_drawing(_):
        raise AssertionError("the report drew a figure the tables command had drawn already")

    monkeypatch.setattr(plots, "figures", no_drawing)
    assert document.main([str(sweep), "--out", str(tmp_path / "report")]) == 0
    for png in drawn:
        assert (tmp_path / "report" / "report_figures" / f"seed004_sweep-{png.name}").read_bytes() == png.read_bytes()
    # a record naming a file that is no figure of ours (or a link) is not followed
    record = sweep / "analysis" / plots.PLOTS_RECORD
    kept = record.read_text()
    record.write_text(kept.replace('"tokens.png"', '"../../secret.png"'))
    assert plots.drawn_plots(analyse(sweep), sweep / "analysis") is None
    record.write_text(kept)
    (sweep / "analysis" / "loss.png").unlink()
    (sweep / "analysis" / "loss.png").symlink_to(tmp_path / "report" / "report.md")
    assert plots.drawn_plots(analyse(sweep), sweep / "analysis") is None
    # other data than the figures were drawn from: drawn anew
    metrics = next(sweep.glob("*/metrics.csv"))
    lines = metrics.read_text().splitlines()
    header, last = lines[0].split(","), lines[-1].split(",")
    last[header.index("unique_tokens")] = str(int(float(last[header.index("unique_tokens")])) + 1)
    metrics.write_text("\n".join(lines[:-1] + [",".join(last)]) + "\n")
    assert plots.drawn_plots(analyse(sweep), sweep / "analysis") is None
    with pytest.raises(AssertionError, match="drew a figure"):
        document.main([str(sweep), "--out", str(tmp_path / "again")])


def test_the_entry_and_the_analysis_object_import_nothing_of_hydra_or_torch():
    code = ("import sys, analysis.cli, analysis.core, analysis.options, analysis.render, analysis.plots; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'hydra', 'omegaconf', 'torch'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert out.stdout.strip() == "[]", out.stderr
