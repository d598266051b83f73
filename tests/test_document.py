"""The report command (python -m analysis.document): one markdown report from sweep folders, and the generated
blocks of hand-written documents, regenerated from committed folders and checked unchanged."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from analysis.document import main
from analysis.fmt import fmt_value
from conftest import REPO_ROOT, TINY, analysis_main, run_main

FIXTURES = REPO_ROOT / "tests" / "fixtures"
EXAMPLE = REPO_ROOT / "docs" / "example_report"
EXAMPLE_ARGS = ["tests/fixtures/seed004_sweep", "tests/fixtures/partial_sweep", "--out", "docs/example_report"]
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


@pytest.fixture
def document(capsys, monkeypatch):
    """The command in-process (a subprocess costs seconds of imports): (exit status, stdout, stderr)."""
    monkeypatch.chdir(REPO_ROOT)

    def run(*args, check: bool = False):
        status = main([str(a) for a in args])
        out, err = capsys.readouterr()
        if check and status != 0:
            raise AssertionError(f"analysis.document exited {status}\n{out}\n{err}")
        return status, out, err
    return run


def docs_with_blocks() -> list[Path]:
    found = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md")),
             *sorted((REPO_ROOT / "analysis").glob("*.md"))]
    return [p for p in found if re.search(r"^<!-- generated: ", p.read_text(), re.M)]


# ---- committed outputs are what the committed folders give ------------------------------------------------------
def test_example_report_is_regenerated_unchanged_from_the_fixtures():
    """docs/example_report/report.md is the committed expected report of two fixture sweeps."""
    result = analysis_main("analysis.document", *EXAMPLE_ARGS, "--check", check=False)
    assert result.returncode == 0 and result.stdout == "docs/example_report/report.md is up to date\n", result.stderr
    text = (EXAMPLE / "report.md").read_text()
    for link in IMAGE.findall(text):
        assert (EXAMPLE / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.parametrize("doc", docs_with_blocks(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_generated_blocks_of_the_docs_are_current(document, doc):
    """Every generated block in the repository's docs is what its sweep folders give now."""
    status, _, err = document("--update", doc.relative_to(REPO_ROOT), "--check")
    assert status == 0, err


def test_some_doc_has_a_generated_block():
    assert any(p.name == "README.md" and p.parent.name == "analysis" for p in docs_with_blocks())


# ---- a report -------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_report_of_the_fixtures_is_deterministic_relative_and_complete(document, tmp_path):
    """Same folders, same bytes (markdown and PNGs); no absolute path; the verdicts and their rules are in it."""
    sweeps = tmp_path / "somewhere" / "sweeps"
    shutil.copytree(FIXTURES / "seed004_sweep", sweeps / "seed004_sweep")
    shutil.copytree(FIXTURES / "partial_sweep", sweeps / "partial_sweep")
    outs = [tmp_path / "a" / "report", tmp_path / "b" / "report"]
    for out in outs:
        document(sweeps / "seed004_sweep", sweeps / "partial_sweep", "--out", out, check=True)
    texts = [(out / "report.md").read_text() for out in outs]
    assert texts[0] == texts[1]
    text = texts[0]
    assert str(tmp_path) not in text and str(REPO_ROOT) not in text
    links = IMAGE.findall(text)
    assert links == [f"report_figures/seed004_sweep-{p}.png" for p in ("tokens", "loss")] + \
        [f"report_figures/partial_sweep-{p}.png" for p in ("tokens", "loss", "collapse_ratio", "phase_map")]
    for link in links:
        assert (outs[0] / link).read_bytes() == (outs[1] / link).read_bytes()
    assert text.startswith("# Sweep report: seed004_sweep (varying intervention); partial_sweep (varying hidden)\n")
    assert "Sweep folder: [seed004_sweep](../../somewhere/sweeps/seed004_sweep)" in text
    # what was run: the grid from grid.json, the settings that tell the arms apart from run.json
    assert "`seed004_sweep`: 4 grid points (read from grid.json); `intervention` = standard, reduced_lr, " \
           "label_smoothing, grad_clip." in text
    assert "| intervention=reduced_lr      | 0.0005    |" in text
    # the signature verdict per arm with k/n seeds, as the seeds' intervention study reads
    for arm, verdict in (("standard", "yes"), ("reduced_lr", "no"), ("label_smoothing", "partial")):
        assert f"- intervention={arm}: {verdict} 1/1\n" in text
    assert "Interventions: Only reduced_lr avoids ending collapsed" in text
    # the partial sweep: unfinished points with the folder a missing one would have, relative; no guess
    assert "- hidden=1536: missing (expected at ../../somewhere/sweeps/partial_sweep/hidden=1536)" in text
    assert "partial_sweep/hidden=512/metrics.csv: last line '10000,,1' is torn" in text
    assert "Scaling decision at step 4k: outcome undecided" in text
    # every table under its rule; the tables that do not apply named once
    assert "#### Collapse signature of the investigation's runs\n\nRule: plateau = at most 5 unique tokens" in text
    assert "Not applicable here: Transition at each switch" in text


def test_check_says_what_is_stale(document, tmp_path):
    out = tmp_path / "report"
    document(FIXTURES / "seed004_sweep", "--out", out, "--collapse-level", 5, check=True)
    assert document(FIXTURES / "seed004_sweep", "--out", out, "--collapse-level", 5, "--check")[0] == 0
    # another threshold, other verdicts
    status, stdout, stderr = document(FIXTURES / "seed004_sweep", "--out", out, "--check")
    assert status == 1 and "is stale" in stderr
    assert "-Made by `python -m analysis.document` from `" in stderr  # the options are in the intro
    assert "with `--collapse-level 5`" in (out / "report.md").read_text()
    (out / "report_figures" / "seed004_sweep-loss.png").unlink()
    status, stdout, stderr = document(FIXTURES / "seed004_sweep", "--out", out, "--collapse-level", 5, "--check")
    assert status == 1 and "missing plot: " in stderr and "seed004_sweep-loss.png" in stderr


@pytest.mark.slow
def test_a_real_tiny_sweep_report(document, tmp_path):
    """A factorial sweep this framework ran: versions, device, corpus and run time from run.json, the overrides
    every point shares, what differs between the arms, the signature verdict (none: too short) and the
    switches' effects, as the metrics.csv files give them (too short for a signature verdict)."""
    sweep = tmp_path / "sweep"
    run_main("-m", "lr=linear,two_stage", "wd=constant,two_stage", *TINY, f"hydra.sweep.dir={sweep}")
    out = tmp_path / "report"
    document(sweep, "--out", out, check=True)
    text = (out / "report.md").read_text()
    assert "`sweep`: 4 grid points (read from grid.json); `lr` = linear, two_stage; `wd` = constant, two_stage." in text
    # as the sweeper wrote them into grid.json (Hydra writes progress=false as progress=False)
    assert f"Overrides shared by every point: `{' '.join(TINY[:-2])}" in text and " threads=1`." in text
    assert re.search(r"- Versions: bitnet [^,]+, torch [^,]+, python [\d.]+\.\n", text)
    assert "- Device: cpu, 1 CPU thread." in text
    assert re.search(r"- Training time \(run\.json\): [\d.]+ s over 4 points", text)
    assert re.search(r"\| lr\.name=linear, wd\.name=two_stage +\| 0\.0 +\|", text)  # the arm's stage-2 weight decay
    for lr in ("linear", "two_stage"):
        for wd in ("constant", "two_stage"):
            # 20 steps end inside warm-up plus the unigram phase's span: no signature verdict from them
            assert f"- lr.name={lr}, wd.name={wd}: too short to tell: 20 steps, needs about 305 1/1\n" in text
    final = {(lr, wd): pd.read_csv(sweep / f"lr={lr},wd={wd}" / "metrics.csv").unique_tokens.iloc[-1]
             for lr in ("linear", "two_stage") for wd in ("constant", "two_stage")}
    wd_effect = (final["linear", "two_stage"] + final["two_stage", "two_stage"]
                 - final["linear", "constant"] - final["two_stage", "constant"]) / 2
    assert f"- WD switch (main effect): unique tokens {fmt_value(wd_effect, 'drop')}, eval loss " in text
    links = IMAGE.findall(text)
    assert [Path(link).name for link in links] == ["sweep-tokens.png", "sweep-loss.png", "sweep-diagnostics.png",
                                                   "sweep-mechanism.png"]
    assert all((out / link).exists() for link in links)


# ---- generated blocks -----------------------------------------------------------------------------------------
DOC = """# Findings

Prose the command never touches, and an example it leaves alone:

```markdown
<!-- generated: not/a/sweep -->
<!-- end generated -->
```

<!-- generated: sweeps/seed004_sweep --only verdicts signature --level 3 -->
old numbers
<!-- end generated -->

More prose.

<!-- generated: sweeps/seed004_sweep --only plots -->
<!-- end generated -->
"""


def test_update_refreshes_generated_blocks_in_place(document, tmp_path):
    shutil.copytree(FIXTURES / "seed004_sweep", tmp_path / "sweeps" / "seed004_sweep")
    doc = tmp_path / "findings.md"
    doc.write_text(DOC)
    status, stdout, stderr = document("--update", doc, "--check")
    assert status == 1 and "-old numbers" in stderr and doc.read_text() == DOC
    document("--update", doc, check=True)
    text = doc.read_text()
    marker = "<!-- generated: sweeps/seed004_sweep --only verdicts"
    assert text.split(marker)[0] == DOC.split(marker)[0]  # the prose and the fenced example, untouched
    first, rest = text.split(marker)[1].split("More prose.")
    assert "old numbers" not in text and "\nMore prose.\n" in text
    assert "### Verdicts\n\nCollapse signature per cell" in first and "- intervention=standard: yes 1/1\n" in first
    assert "### Collapse signature of the investigation's runs\n\nRule: plateau" in first
    assert "Learning phase: " in first  # a table shown alone keeps the phase rule its verdicts use
    assert "## Plots\n\n![unique predicted tokens vs step](findings_figures/seed004_sweep-2-tokens.png)" in rest
    assert (tmp_path / "findings_figures" / "seed004_sweep-2-tokens.png").exists()
    assert document("--update", doc, "--check")[0] == 0
    document("--update", doc, check=True)
    assert doc.read_text() == text  # idempotent


@pytest.mark.parametrize("body, message", [
    ("<!-- generated: sweeps/seed004_sweep -->\nno end\n", "line 3: `<!-- generated: ...` has no `<!-- end "
                                                           "generated -->` after it"),
    ("<!-- end generated -->\n", "line 3: `<!-- end generated -->` without a `<!-- generated: ... -->` above it"),
    ("<!-- generated: sweeps/seed004_sweep --diverse -1 -->\n<!-- end generated -->\n",
     "line 3: --diverse=-1 is not allowed: use a count >= 0"),
    ("<!-- generated: sweeps/nope -->\n<!-- end generated -->\n", "line 3: "),
    ("<!-- generated: --only verdicts -->\n<!-- end generated -->\n", "line 3: no SWEEP folder given"),
    ("<!-- generated: sweeps/seed004_sweep --out x -->\n<!-- end generated -->\n",
     "line 3: unrecognized arguments: --out x"),
])
def test_bad_blocks_are_one_line_errors_naming_the_line(document, tmp_path, body, message):
    shutil.copytree(FIXTURES / "seed004_sweep", tmp_path / "sweeps" / "seed004_sweep")
    doc = tmp_path / "doc.md"
    doc.write_text("# Doc\n\n" + body)
    before = doc.read_text()
    status, stdout, stderr = document("--update", doc)
    assert status == 2 and stdout == ""
    assert stderr.startswith(f"error: {doc} {message}") and len(stderr.strip().splitlines()) == 1
    assert doc.read_text() == before and not (tmp_path / "doc_figures").exists()


def test_bad_command_lines(document, tmp_path):
    for args, message in [([], "error: give SWEEP folders (a report) or --update DOC"),
                          (["--update", tmp_path / "none.md"], f"error: --update {tmp_path / 'none.md'}: no such file"),
                          ([FIXTURES / "seed004_sweep", "--update", "README.md"], "error: --update DOC takes no SWEEP"),
                          ([tmp_path, "--out", tmp_path / "out"], f"error: {tmp_path} has nothing to analyse"),
                          ([FIXTURES / "seed004_sweep", "--steps", 123, "--out", tmp_path / "out"],
                           "error: --steps: step 123 was never evaluated")]:
        status, stdout, stderr = document(*args)
        assert status == 2 and stderr.startswith(message), stderr
        assert len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_the_title_names_a_sweep_by_its_folder_below_multirun_and_what_varies():
    from types import SimpleNamespace

    from analysis.document import section_title

    def section(folder: str, swept: list[str]):
        return SimpleNamespace(folders=[Path(folder)], analysis=SimpleNamespace(sweep=SimpleNamespace(swept=swept)))

    # a default sweep folder is named by the time of day: the date comes with it
    assert section_title(section("/home/u/multirun/2026-11-23/01-07-50", ["hidden", "seed"])) == \
        "2026-11-23/01-07-50 (varying hidden, seed)"
    assert section_title(section("/home/u/multirun/scaling/smoke", ["hidden"])) == "scaling/smoke (varying hidden)"
    assert section_title(section("/data/results/forensics", [])) == "forensics"
