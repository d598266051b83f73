"""The tables command's old module name: `python -m analysis.report` is `python -m analysis tables`
(analysis/render.py), and `from analysis.report import main` keeps working. The report itself is
`python -m analysis report` (analysis/document.py)."""

import sys

from analysis.render import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
