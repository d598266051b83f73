"""Sweep analysis: load sweep folders into a tidy DataFrame, build the tables and verdicts, draw the plots.

    python -m analysis tables SWEEP_DIR [SWEEP_DIR...]    # every command: python -m analysis (analysis/cli.py)
"""

from analysis.load import NotASweep, Sweep, load, load_sweeps

__all__ = ["NotASweep", "Sweep", "load", "load_sweeps"]
