"""`python -m analysis COMMAND ...`: analysis/cli.py."""

import sys

from analysis.cli import main

sys.exit(main())
