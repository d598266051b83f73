"""One entry to the analysis: `python -m analysis COMMAND [ARGS...]`, or `bitnet-analysis COMMAND [ARGS...]`
once the package is installed. Each command is a module with `main(argv) -> exit status`; the module's own
`python -m analysis.<module>` keeps working as an alias.

    python -m analysis                      # the commands, one line each
    python -m analysis tables SWEEP_DIR     # the tables and plots (analysis/render.py)
    python -m analysis COMMAND --help

A new command is one line in COMMANDS (its module is imported only when the command runs, so that a command's
imports cost nothing to the others and no module here imports another's command).
"""

from __future__ import annotations

import importlib
import sys

# name -> (module with main(argv), what it does)
COMMANDS = {
    "tables": ("analysis.render", "every table under its rules, as markdown and CSV, and the plots (aliases: "
                                  "python -m analysis.tables, python -m analysis.report)"),
    "report": ("analysis.document", "one self-contained markdown report, or refresh a document's generated blocks "
                                    "(alias: python -m analysis.document)"),
    "examples": ("analysis.examples", "list or copy the example sweeps shipped with the package"),
    "diagnose": ("analysis.diagnose", "which collapse pattern each run shows, its likely causes and what to try "
                                      "(also installed as bitnet-diagnose)"),
    "bench": ("analysis.bench", "time the tables and plots on a synthetic sweep of real points' copies"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    return ("usage: python -m analysis COMMAND [ARGS...]   (installed: bitnet-analysis COMMAND ...)\n\ncommands:\n"
            + "".join(f"  {name:<{width}}  {text}\n" for name, (_, text) in COMMANDS.items())
            + "\n`python -m analysis COMMAND --help` lists a command's options.")


def run(name: str, argv: list[str] | None = None) -> int:
    """Command `name` with `argv` (default: the command line after the program name)."""
    module, _ = COMMANDS[name]
    return importlib.import_module(module).main(sys.argv[1:] if argv is None else argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):  # asked for: stdout, exit 0; no command given: stderr, exit 2
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"error: no command {argv[0]!r}; the commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return run(argv[0], argv[1:])
