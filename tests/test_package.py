"""The package as a user installs it, run from a folder outside the repository.

`pip install .`: the wheel is built from a clean copy of the repository and installed with --no-deps into a
fresh virtualenv that reuses this test environment's dependencies; then a tiny training, a smoke preset, the
analysis, the notebook, `bitnet --help` and tab completion. `pip install -e .`: an editable install of another
clean copy, then a sweep. Both are built without build isolation (offline), with the setuptools of the dev
extra.

The fresh virtualenv sees this environment's packages as plain folders on its path: their .pth files are not
run, so this environment's own (editable) install of bitnet is invisible there, and the test checks that
nothing named bitnet is importable before it installs one."""

from __future__ import annotations

import json
import os
import shutil
import site
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


def fresh_venv(root: Path) -> tuple[Path, Path, dict]:
    """A virtualenv in root/venv with this environment's site-packages behind its own, and a work folder:
    (the venv's bin folder, the work folder, the environment to run in)."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # with its own pip (bundled, offline)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # torch, hydra, ... come from this test environment, after the venv's own packages. Plain path lines, not
    # site.addsitedir: that would run this environment's .pth files, its editable bitnet's import hook included.
    (Path(purelib) / "test_environment.pth").write_text("".join(f"{path}\n" for path in site.getsitepackages()))
    # the venv's bundled setuptools (65 on Python 3.11) cannot build an editable wheel without `wheel`; the dev
    # extra's setuptools, on the path above, can
    subprocess.run([str(python), "-m", "pip", "uninstall", "--quiet", "--yes", "setuptools"], check=True)
    work = root / "work"
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}  # nothing from the checkout
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    seen = subprocess.run([str(python), "-c", "import bitnet"], cwd=work, env=env, capture_output=True, text=True)
    assert seen.returncode != 0 and "No module named 'bitnet'" in seen.stderr, "the fresh venv sees a bitnet"
    return venv / "bin", work, env


def pip_install(bin_dir: Path, *target: str) -> None:
    # --ignore-installed: pip would otherwise take this environment's bitnet-sweeps, on the path, as installed
    subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "--ignore-installed", *target], check=True)


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
    pip_install(bin_dir, str(wheel))
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
    where = run(installed, "python", "-c", "import bitnet.run, analysis, bitnet.integrations; "
                                           "print(bitnet.run.CONF_DIR); print(bitnet.run.SWEEPS_DIR); "
                                           "print(analysis.__file__); print(bitnet.integrations.__file__)"
                ).stdout.split()
    assert all(Path(path).is_relative_to(bin_dir.parent) for path in where), where
    assert [Path(path).parts[-2:] for path in where[:2]] == [("bitnet", "conf"), ("bitnet", "sweeps")]


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
    pip_install(bin_dir, "--editable", str(source))
    editable = (bin_dir, work, env)
    where = run(editable, "python", "-c", "import bitnet.run; print(bitnet.run.CONF_DIR)").stdout.strip()
    assert Path(where) == source / "conf"
    run(editable, "bitnet", "-m", *TINY, "seed=0,1", "hydra.sweep.dir=sweep")
    records = {p.parent.name: json.loads(p.read_text())["status"] for p in (work / "sweep").glob("*/run.json")}
    assert records == {"seed=0": "completed", "seed=1": "completed"}
