"""Example results shipped with the package, to try the analysis, the report and the notebook before training
anything: the investigation's own figures typed into sweep folders, and one folder of CSV files in its own
format. In a checkout they are the tests' fixtures (tests/fixtures/); an installed package carries them as
analysis/example_sweeps (setup.cfg maps them there). Both are read-only sources: an example is copied into a
folder of yours first, so that the analysis writes its tables beside it there.

    python -m analysis.examples                    # each example and what it holds
    python -m analysis.examples seed004_sweep      # copies it to ./seed004_sweep (kept if already there)
    python -m analysis.tables seed004_sweep
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHIPPED = {  # the examples the package carries (setup.cfg's package_data lists the same folders)
    "seed004_sweep": "interventions at hidden 256: standard LR, reduced LR, label smoothing, grad clip",
    "seed001_sweep": "scaling: hidden 256, 512, 768, 1024 with the WD 0.1 -> 0 switch at step 5000",
    "seed001_csv": "the seed001_sweep figures as the investigation's scripts wrote them (Step,Loss,Unique Tokens)",
}


def examples_dir() -> Path:
    inside = HERE / "example_sweeps"
    return inside if inside.is_dir() else HERE.parent / "tests" / "fixtures"


def copy_example(name: str, into: Path | str = ".") -> Path:
    """`into/name`, a copy of the shipped example `name`; an existing folder of that name is kept as it is.
    ValueError naming the examples when there is no such example."""
    if name not in SHIPPED:
        raise ValueError(f"no example named {name!r}; the examples: {', '.join(SHIPPED)}")
    target = Path(into) / name
    if not target.exists():
        shutil.copytree(examples_dir() / name, target, ignore=shutil.ignore_patterns("analysis"))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.examples", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"examples to copy: {', '.join(SHIPPED)}")
    parser.add_argument("--to", default=".", help="the folder to copy them into (default: the current one)")
    args = parser.parse_args(argv)
    if not args.names:
        for name, what in SHIPPED.items():
            print(f"{name}: {what}")
        return 0
    try:
        for name in args.names:
            print(copy_example(name, args.to))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
