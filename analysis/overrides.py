"""Override lines as a sweep folder records them (grid.json, each point's .hydra/overrides.yaml), read without
Hydra: `hidden=256`, `+intervention=standard`, `~logger`, `lr.peak=1e-3`, `data.path='my text.txt'`,
`model.widths=[256,512]`, `tags={a:1}`.

Values are typed as Hydra's override grammar types them: integers (`1_000` too), floats (`1e-3`, `.5`, `inf`,
`nan`), true/false and null in any case, quoted strings ('...' or "..."), lists [...] and dicts {k: v};
anything else is the text itself, spaces inside kept, around it trimmed. An interpolation (`${grid.hidden}`)
stays the text it is: a results folder is untrusted, and resolving it could run a resolver (`${oc.env:VAR}`).
A point's overrides hold single values, so a sweep (`a,b`) or a function (`range(1,3)`) is refused with a
one-line OverrideError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_INT = re.compile(r"[+-]?(0|[1-9](_?[0-9])*)")
_DIGITS = r"[0-9](_?[0-9])*"
_POINT_FLOAT = rf"({_DIGITS})?\.{_DIGITS}|{_DIGITS}\."
_FLOAT = re.compile(rf"[+-]?(({_POINT_FLOAT})|(({_DIGITS})|({_POINT_FLOAT}))[eE][+-]?{_DIGITS}|[iI][nN][fF]|[nN][aA][nN])")
_KEY = re.compile(r"\s*(\+\+|\+|~)?([\w\-./]+(@[\w\-.:]*)?)\s*(=(.*))?", re.DOTALL)
_ESCAPABLE = set("\\()[]{}:=, ")


class OverrideError(ValueError):
    """An override line that is not `key=value` with a single value (one line, quotes the line)."""


@dataclass(frozen=True)
class Override:
    prefix: str   # "", "+" (add), "++" (add or replace), "~" (delete)
    key: str      # `model.hidden`, `hydra/launcher`, `key@package`
    value: object  # typed value; None for a deletion

    @property
    def is_delete(self) -> bool:
        return self.prefix == "~"


def parse_override(line: str) -> Override:
    """One override line -> Override; OverrideError when it is not one."""
    match = _KEY.fullmatch(str(line))
    if match is None:
        raise OverrideError(f"{line!r}: not an override (expected key=value, +key=value or ~key)")
    prefix, key, text = match.group(1) or "", match.group(2), match.group(5)
    if text is None:
        if prefix != "~":
            raise OverrideError(f"{line!r}: no value (expected key=value)")
        return Override(prefix, key, None)
    reader = _Reader(text, line)
    value = reader.element(stops="")
    return Override(prefix, key, None if prefix == "~" else value)


class _Reader:
    def __init__(self, text: str, line: str):
        self.text, self.line, self.at = text, line, 0

    def fail(self, why: str):
        raise OverrideError(f"{self.line!r}: {why}")

    def peek(self) -> str:
        return self.text[self.at] if self.at < len(self.text) else ""

    def skip_spaces(self) -> None:
        while self.peek() and self.peek() in " \t":
            self.at += 1

    def element(self, stops: str):
        """A value that ends at one of `stops` (or at the end of the text when `stops` is empty)."""
        self.skip_spaces()
        first = self.peek()
        if first == "[":
            value = self.sequence()
        elif first == "{":
            value = self.mapping()
        elif first in ("'", '"'):
            value = self.quoted(first)
        else:
            return self.primitive(stops)
        self.skip_spaces()
        if self.peek() and self.peek() not in stops:
            self.fail(f"unexpected {self.peek()!r} after a value" + (" (a sweep a,b is not one value)" if
                                                                    self.peek() == "," else ""))
        return value

    def entries(self, close: str, entry) -> None:
        """`[...]` or `{...}`: comma-separated entries up to `close`, each read by `entry()`."""
        self.at += 1  # the opening bracket
        self.skip_spaces()
        if self.peek() == close:
            self.at += 1
            return
        while True:
            entry()
            ending = self.peek()
            self.at += 1
            if ending == close:
                return
            if ending != ",":
                self.fail(f"a {'list' if close == ']' else 'dict'} that is not closed with {close}")

    def sequence(self) -> list:
        items = []
        self.entries("]", lambda: items.append(self.element(stops=",]")))
        return items

    def mapping(self) -> dict:
        items = {}

        def entry():
            end = self.text.find(":", self.at)
            if end < 0:
                self.fail("a dict entry without `key: value`")
            key = self.text[self.at:end].strip()
            if not key or any(c in key for c in "{}[],'\""):
                self.fail(f"a dict key {key!r} that is not a plain name")
            self.at = end + 1
            items[key] = self.element(stops=",}")

        self.entries("}", entry)
        return items

    def quoted(self, quote: str) -> str:
        self.at += 1
        out = []
        while True:
            char = self.peek()
            if not char:
                self.fail(f"a string opened with {quote} and never closed")
            self.at += 1
            if char == "\\" and self.peek() in (quote, "\\"):
                # a backslash escapes the quote; a run of backslashes before a quote halves
                run = 1
                while self.peek() == "\\":
                    run += 1
                    self.at += 1
                if self.peek() == quote:
                    out.append("\\" * (run // 2))
                    if run % 2:
                        out.append(quote)
                        self.at += 1
                    continue
                out.append("\\" * run)
                continue
            if char == quote:
                return "".join(out)
            out.append(char)

    def primitive(self, stops: str):
        """Unquoted text up to a stop at this level; an interpolation `${...}` is taken whole."""
        out, escaped = [], False
        while True:
            char = self.peek()
            if not char or char in stops:
                break
            if char == "$" and self.text.startswith("${", self.at):
                end = self._interpolation_end(self.at)
                out.append(self.text[self.at:end])
                self.at = end
                continue
            if char == "\\" and self.at + 1 < len(self.text) and self.text[self.at + 1] in _ESCAPABLE:
                out.append(self.text[self.at + 1])
                self.at += 2
                escaped = True
                continue
            if char in "()":
                self.fail("a function call (such as range() or choice()), not one value")
            if char in "[]{}'\"" or (char == "," and not stops):
                self.fail(f"unexpected {char!r}" + (" (a sweep a,b is not one value)" if char == "," else ""))
            out.append(char)
            self.at += 1
        text = "".join(out).strip(" \t")
        return text if escaped else typed(text)

    def _interpolation_end(self, start: int) -> int:
        depth, at = 0, start + 1
        while at < len(self.text):
            if self.text[at] == "{":
                depth += 1
            elif self.text[at] == "}":
                depth -= 1
                if depth == 0:
                    return at + 1
            at += 1
        self.fail("an interpolation ${... that is never closed")


def typed(text: str):
    """An unquoted value as Hydra types it: int, float, bool, None, or the text."""
    lowered = text.lower()
    if lowered == "null":
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    if _INT.fullmatch(text):
        return int(text.replace("_", ""))
    if _FLOAT.fullmatch(text):
        return float(text.replace("_", ""))
    return text
