"""The package as a user installs it, run from a folder outside the repository.

`pip install .`: the wheel is built from a clean copy of the checkout under test and installed with --no-deps
into a fresh virtualenv; then a tiny training, a smoke preset, the analysis, the notebook, `bitnet --help` and
tab completion. `pip install -e .`: an editable install of another clean copy, then a sweep. Both are built
without build isolation (offline), with the setuptools of the dev extra.

The fresh virtualenv takes its dependencies (torch, hydra, ...) from this test environment, but never this
project: it sees a folder of links to what this environment's site folders hold, less any install of bitnet
(an editable one's finder and .pth, a regular one's packages, the metadata) and less anything else that takes
the names bitnet, analysis or hydra_plugins.bitnet_sweeper. Nothing from the outer environment's variables
(PYTHONPATH, a user site) reaches it either. So the installed package is the one under test whatever the outer
environment holds (say, an editable install of another checkout), and the tests check that it is."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, TINY

pytestmark = pytest.mark.slow

BUILT = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "outputs", "multirun", "__pycache__",
                               ".pytest_cache")


def not_shipped(folder: str, names: list[str]) -> set[str]:
    """What a clone has and the package does not carry: the tests, except tests/fixtures (the example results
    ship from there); nothing built in the checkout."""
    ignored = set(BUILT(folder, names))
    if Path(folder) == REPO_ROOT / "tests":
        ignored |= set(names) - {"fixtures"}
    return ignored


# What an install of this project puts in a site folder: its packages, and the files whose names start so
# (metadata, an editable install's .pth and finder); hydra_plugins is a namespace other plugins share.
OURS = ("bitnet", "analysis", "__editable__.bitnet", "__editable___bitnet")
OUR_PLUGIN = "bitnet_sweeper"


def dependencies_without_bitnet(target: Path) -> Path:
    """target: a folder of links to everything in this environment's site folders (the ones on sys.path, as the
    test runs) except what OURS and OUR_PLUGIN name."""
    target.mkdir()
    plugins = target / "hydra_plugins"
    for site_dir in dict.fromkeys(Path(p) for p in sys.path if Path(p).name in ("site-packages", "dist-packages")):
        for entry in sorted(site_dir.iterdir()) if site_dir.is_dir() else []:
            if entry.name.startswith(OURS) or entry.suffix == ".pth":  # .pth files: nothing is run from here
                continue
            if entry.name == "hydra_plugins":
                plugins.mkdir(exist_ok=True)
                for plugin in entry.iterdir():
                    if plugin.name != OUR_PLUGIN and not (plugins / plugin.name).exists():
                        (plugins / plugin.name).symlink_to(plugin)
            elif not (target / entry.name).exists():  # the first site folder on the path wins, as in Python
                (target / entry.name).symlink_to(entry)
    return target


def fresh_venv(root: Path) -> tuple[Path, Path, dict]:
    """A virtualenv in root/venv that finds its dependencies in dependencies_without_bitnet, and a work folder:
    (the venv's bin folder, the work folder, the environment to run in)."""
    venv = root / "venv"
    # no pip of its own (pip_install runs this environment's pip for it), so no bundled setuptools either: the
    # dev extra's, linked below, builds the editable wheel (the bundled 65 on Python 3.11 cannot without `wheel`)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # A plain path line, after the venv's own packages: the linked folder's .pth files are not run.
    (Path(purelib) / "test_dependencies.pth").write_text(f"{dependencies_without_bitnet(root / 'dependencies')}\n")
    work = root / "work"
    work.mkdir()
    # nothing from the checkout or the outer environment: no PYTHONPATH (or other PYTHON* setting), no user site
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("PYTHON") and key not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    env.update(PYTHONNOUSERSITE="1", PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    seen = subprocess.run([str(python), "-c", "import importlib.util as u; print([n for n in ('bitnet', 'analysis', "
                                              "'hydra_plugins.bitnet_sweeper') if u.find_spec(n)])"],
                          cwd=work, env=env, capture_output=True, text=True, check=True)
    assert seen.stdout.strip() == "[]", f"the fresh venv sees {seen.stdout.strip()}"
    return venv / "bin", work, env


def pip_install(bin_dir: Path, env: dict, *target: str) -> None:
    """This environment's pip, installing into the venv as that venv's python sees it (pip --python)."""
    subprocess.run([sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install", "--quiet",
                    "--no-deps", "--no-index", "--no-build-isolation", *target], check=True, env=env)


def where_it_resolves(installed) -> dict[str, Path]:
    """Where the venv's python finds the package's parts, and the `bitnet` command on its PATH."""
    code = ("import json, shutil, bitnet.run, analysis, bitnet.integrations, hydra_plugins.bitnet_sweeper as s; "
            "print(json.dumps({'conf': str(bitnet.run.CONF_DIR), 'sweeps': str(bitnet.run.SWEEPS_DIR), "
            "'bitnet': bitnet.__file__, 'analysis': analysis.__file__, 'integrations': bitnet.integrations.__file__, "
            "'sweeper': s.__path__[0], 'command': str(shutil.which('bitnet'))}))")
    return {key: Path(path) for key, path in json.loads(run(installed, "python", "-c", code).stdout).items()}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the virtualenv's bin folder, a work folder outside the repository, the environment to run in)."""
    root = tmp_path_factory.mktemp("package")
    source = root / "source"
    shutil.copytree(REPO_ROOT, source, ignore=not_shipped)  # what a clone has; nothing built in the checkout
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(root / "dist"), str(source)], check=True, cwd=root)
    (wheel,) = (root / "dist").glob("bitnet_sweeps-*.whl")
    bin_dir, work, env = fresh_venv(root)
    pip_install(bin_dir, env, str(wheel))
    return bin_dir, work, env


def run(installed, *command: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    bin_dir, work, env = installed
    result = subprocess.run([str(bin_dir / command[0]), *command[1:]], cwd=work, env={**env, **kwargs.pop("env", {})},
                            capture_output=True, text=True, timeout=600, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {result.returncode}\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")
    return result


def test_the_installed_package_is_the_one_imported(installed):
    bin_dir, work, _ = installed
    where = where_it_resolves(installed)
    assert all(path.is_relative_to(bin_dir.parent) for path in where.values()), where  # all inside the venv
    assert where["command"] == bin_dir / "bitnet"
    assert [where[key].parts[-2:] for key in ("conf", "sweeps")] == [("bitnet", "conf"), ("bitnet", "sweeps")]


def test_training_and_python_m_from_outside_the_repository(installed):
    _, work, _ = installed
    result = run(installed, "bitnet", *TINY, "hydra.run.dir=tiny")
    rows = (work / "tiny" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss,unique_tokens") and [r.split(",")[0] for r in rows[1:]] == ["0", "10", "20"]
    assert json.loads((work / "tiny" / "run.json").read_text())["status"] == "completed"
    assert "metrics: " in result.stdout
    bad = run(installed, "python", "-m", "bitnet.run", *TINY, "model.n_heads=3", "hydra.run.dir=bad", check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error: model.n_heads=3: hidden=32 is not divisible")


def test_smoke_preset_then_analysis_and_notebook(installed):
    _, work, _ = installed
    run(installed, "bitnet", "-m", "+sweep=scaling", "scale=smoke", "threads=1")
    sweep = work / "multirun" / "scaling" / "smoke"
    assert sorted(p.parent.name for p in sweep.glob("*/metrics.csv")) == ["hidden=32", "hidden=64"]
    tables = run(installed, "python", "-m", "analysis.tables", str(sweep))
    assert "| hidden" in tables.stdout and (sweep / "analysis" / "tables.md").exists()
    # the notebook shipped with the package, its code cells run against this sweep
    notebook = run(installed, "python", "-c", "import analysis, pathlib; print(pathlib.Path(analysis.__file__)"
                                              ".parent / 'sweep_analysis.ipynb')").stdout.strip()
    cells = [''.join(c["source"]) for c in json.loads(Path(notebook).read_text())["cells"] if c["cell_type"] == "code"]
    run(installed, "python", "-c", "\n".join(["import matplotlib", "matplotlib.use('Agg')", *cells]),
        env={"BITNET_SWEEP": str(sweep)})
    assert (sweep / "analysis" / "notebook" / "tokens.png").exists()


def test_the_shipped_example_results_outside_the_checkout(installed):
    """The README's commands on the example results, and the notebook with no sweep of one's own."""
    _, work, _ = installed
    assert run(installed, "python", "-m", "analysis.examples", "seed004_sweep").stdout == "seed004_sweep\n"
    tables = run(installed, "python", "-m", "analysis.tables", "seed004_sweep").stdout
    assert "Only reduced_lr avoids ending collapsed; standard, label_smoothing, grad_clip end collapsed" in tables
    assert (work / "seed004_sweep" / "analysis" / "tables.md").exists()
    run(installed, "python", "-m", "analysis.examples", "seed001_csv", "seed001_sweep", "--to", "examples")
    run(installed, "python", "-m", "analysis.tables", "examples/seed001_csv", "--name-pattern",
        "scale_{hidden}_{train.steps}", "--set", "wd.switch_step=5000", "wd.value=0.1", "wd.stage2_value=0.0")
    assert (work / "examples" / "seed001_csv" / "analysis" / "tables.md").exists()
    unknown = run(installed, "python", "-m", "analysis.examples", "seed9", check=False)
    assert unknown.returncode == 2 and unknown.stderr == ("error: no example named 'seed9'; the examples: "
                                                          "seed004_sweep, seed001_sweep, seed001_csv\n")
    notebook = run(installed, "python", "-c", "import analysis, pathlib; print(pathlib.Path(analysis.__file__)"
                                              ".parent / 'sweep_analysis.ipynb')").stdout.strip()
    cells = [''.join(c["source"]) for c in json.loads(Path(notebook).read_text())["cells"] if c["cell_type"] == "code"]
    (work / "fresh").mkdir()
    run(installed, "python", "-c", "\n".join(["import os", "os.chdir('fresh')", "import matplotlib",
                                              "matplotlib.use('Agg')", *cells]))
    assert (work / "fresh" / "seed004_sweep" / "analysis" / "notebook" / "tokens.png").exists()


def test_help_and_tab_completion(installed):
    help_text = run(installed, "bitnet", "--help").stdout
    assert help_text.startswith("bitnet: ")
    presets = sorted(path.stem for path in (REPO_ROOT / "sweeps").glob("*.yaml"))
    assert f"sweep: {', '.join(presets)}" in help_text and "forensics" in presets
    assert "model: bitnet, bitnet_2b4t" in help_text and "metrics.csv" in help_text
    script = run(installed, "bitnet", "-sc", "install=bash").stdout
    assert "complete" in script and "bitnet" in script
    # what bash asks when the user presses tab after `bitnet +swe`, and after `bitnet +sweep=sc`
    groups = run(installed, "bitnet", "-sc", "query=bash", env={"COMP_LINE": "bitnet +swe"}).stdout.split()
    assert "+sweep=" in groups
    presets = run(installed, "bitnet", "-sc", "query=bash", env={"COMP_LINE": "bitnet +sweep=scal"}).stdout.split()
    assert presets == ["+sweep=scaling"]


def test_editable_install_sweeps_from_any_folder(tmp_path):
    """`pip install -e .` serves hydra_plugins/ through an import hook that Hydra's plugin scan cannot list; the
    sweeper is still found, so `-m` works outside the checkout."""
    source = tmp_path / "checkout"
    shutil.copytree(REPO_ROOT, source, ignore=not_shipped)
    bin_dir, work, env = fresh_venv(tmp_path)
    pip_install(bin_dir, env, "--editable", str(source))
    editable = (bin_dir, work, env)
    where = where_it_resolves(editable)
    assert (where["conf"], where["sweeps"], where["sweeper"]) == (source / "conf", source / "sweeps",
                                                                  source / "hydra_plugins" / "bitnet_sweeper")
    assert where["bitnet"].is_relative_to(source) and where["command"] == bin_dir / "bitnet"
    run(editable, "bitnet", "-m", *TINY, "seed=0,1", "hydra.sweep.dir=sweep")
    records = {p.parent.name: json.loads(p.read_text())["status"] for p in (work / "sweep").glob("*/run.json")}
    assert records == {"seed=0": "completed", "seed=1": "completed"}
