"""How numbers and steps are written in the tables and plots: one place, so that every table agrees; and how
text read from a results folder is made inert where it is rendered (`untrusted`)."""

from __future__ import annotations

import math
import re

import pandas as pd

from bitnet.phases import missing as phases_missing

NA = "–"
FORMATS = {"loss": "{:.2f}", "effect": "{:+.3f}", "cos": "{:.3f}", "eff": "{:.1f}", "rate": "{:.3g}",
           "pct": "{:.1f}%", "factor": "{:.1f}x", "ratio": "{:.2f}"}


def missing(value) -> bool:
    """bitnet.phases.missing, and pandas' NA."""
    return phases_missing(value) or value is pd.NA


def step_label(step) -> str:
    if missing(step):
        return NA
    step = int(step)
    return f"{step // 1000}k" if step >= 1000 and step % 1000 == 0 else str(step)


def fmt_value(value, kind: str = "g") -> str:
    if missing(value):
        return NA
    if kind in FORMATS:
        return FORMATS[kind].format(value)
    if kind == "step":  # a mean over seeds may fall between evaluations
        return step_label(value) if float(value).is_integer() else f"{value:.0f}"
    if kind == "tokens":
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    if kind == "drop":  # a sign only when it is a rise: "-3.02", "+0.40", "0.00"
        return f"{value:+.2f}" if value > 0 else f"{value:.2f}"
    if kind == "params":
        for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
            if abs(value) >= scale:
                return f"{value / scale:.3g}{suffix}"
        return f"{value:.0f}"
    return str(value)  # floats as Python writes them: 0.0015, 0.0 (the seeds write "WD 0.1→0.0")


def fmt_cell(row, column: str, kind: str) -> str:
    """`mean` alone for one seed, `mean [lo, hi]` for several; `0†` for a low end cut at 0 (never negative)."""
    text = fmt_value(row[column], kind)
    lo, hi = row.get(f"{column}_lo"), row.get(f"{column}_hi")
    if text != NA and lo is not None and not pd.isna(lo):
        clipped = "†" if row.get(f"{column}_clipped") in (True, 1) else ""
        text += f" [{fmt_value(lo, kind)}{clipped}, {fmt_value(hi, kind)}]"
    return text


def fmt_int(value) -> str:
    return NA if missing(value) else str(int(value))


_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")
# Markdown: a backslash first (so that an escape we add cannot be undone by one in the text), then what would
# end a table cell (|), start math ($) or a code span (`); a `<` only where it could open HTML (a tag, a
# comment), so that a rule's "<0.2" stays as written.
_MARKDOWN = {"\\": "\\\\", "|": "\\|", "$": "\\$", "`": "\\`"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_HTML = re.compile(r"<(?=[A-Za-z/!?])")


def untrusted(value, target: str = "markdown") -> str:
    """`value` (a label, status, error or config value read from a run folder, which anyone may have written) as
    text that renders as itself: on one line, and in markdown ("markdown") without table breaks, HTML or math,
    in matplotlib ("plot") without mathtext ($...$ would be parsed, and a bad expression aborts the figure), on a
    terminal ("text") without control characters (an escape sequence would restyle or clear the screen)."""
    text = _LINE_BREAKS.sub(" ", str(value))
    if target == "text":
        return _CONTROL.sub("?", text)
    if target == "plot":
        return text.replace("$", "\\$")
    return _HTML.sub("&lt;", "".join(_MARKDOWN.get(char, char) for char in text))


def to_markdown(frame: pd.DataFrame) -> str:
    """A markdown table; every header and cell goes through `untrusted` (labels, statuses and errors come from
    run folders). Markdown emphasis the tables add themselves (**bold**) is left as it is."""
    if not len(frame):
        return "(no rows)"
    shown = frame.rename(columns=lambda c: untrusted(c)).map(lambda v: untrusted(v) if isinstance(v, str) else v)
    return shown.to_markdown(index=False, disable_numparse=True)
