"""Reading a composed Hydra config key by key into typed values, with one-line errors.

Every typed config (`ModelConfig`, `LRSchedule`, `DataConfig`, ..., and the root `RunConfig`) reads its keys
through a `Keys` reader. A bad value raises `ConfigError` whose message names the key, the bad value as the
user would type it, and what is allowed, e.g. `model.quant=tenary: expected one of ternary, weights_only,
none`. The defaults live in the YAML files under conf/; a key missing from the composed config is an error,
not a silent default.
"""

from __future__ import annotations

import difflib
import math
import re

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException


class ConfigError(ValueError):
    """A bad config value; the message is one line: `key=value: what is allowed`."""


_ABSENT = object()
_REFERENCE = re.compile(r"^\$\{([\w.]+)\}$")  # `${hidden}`: a plain reference to another key
_REFERENCED = re.compile(r"\$\{(?:oc\.select:)?([\w.]+)")  # every key a value refers to, resolver or not
# Sections whose keys no component reads one by one: grid.* holds the presets' values, reached through
# interpolations (`hidden: ${grid.hidden}`); hydra.* is Hydra's own.
FREE_FORM = ("grid", "hydra")


def show(value) -> str:
    """A value as the user would type it on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value) if value == "" or value != value.strip() else value
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=False)
    return str(value).replace("\n", " ")


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def check_choice(key: str, value, options, group: str | None = None):
    """`value` if it is one of `options`; `group` names the config group whose presets set this key."""
    if value not in options:
        hint = f" (or pick a preset with {group}=...)" if group else ""
        raise ConfigError(f"{key}={show(value)}: expected one of {', '.join(options)}{hint}")
    return value


def _raw(cfg: DictConfig, path: str) -> str:
    """A key's value as written, interpolations unresolved ("" when there is none)."""
    parent, _, leaf = path.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
    if not OmegaConf.is_dict(node) or leaf not in node:
        return ""
    value = node._get_node(leaf)._value()
    return value if isinstance(value, str) else show(value)


def _leaf_paths(node: DictConfig, prefix: str = ""):
    """The dotted paths of a config's values (a list or an interpolation is one value), without resolving."""
    for key in node.keys():
        child = node._get_node(key)
        if OmegaConf.is_dict(child) and not child._is_interpolation() and not child._is_missing() and not child._is_none():
            yield from _leaf_paths(child, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


class Keys:
    """The keys of one section (`model`, `eval.generate`, or "" for the top level) of a composed config."""

    def __init__(self, cfg: DictConfig, section: str = "", read: set | None = None):
        self.cfg, self.section = cfg, section
        self.read = set() if read is None else read  # every dotted key read, shared by all sections' readers

    def path(self, key: str) -> str:
        return f"{self.section}.{key}" if self.section else key

    def sub(self, key: str) -> Keys:
        return Keys(self.cfg, self.path(key), self.read)

    def check_all_read(self) -> None:
        """ConfigError naming the first key of the config that no component read (a typo such as
        `+train.stpes=5` would otherwise be accepted and ignored), with the nearest key that is read. A key
        referred to by a read one (`hidden`, through `model.hidden: ${hidden}`) counts as read, and so does all
        of FREE_FORM."""
        used = set(self.read)
        pending = list(used)
        while pending:  # follow interpolations: what a read value refers to is used too
            path = pending.pop()
            for target in _REFERENCED.findall(_raw(self.cfg, path)):
                if target not in used:
                    used.add(target)
                    pending.append(target)
        for path in _leaf_paths(self.cfg):
            if path.split(".")[0] in FREE_FORM or path in used:
                continue
            near = difflib.get_close_matches(path, sorted(self.read), n=1, cutoff=0.6)
            hint = f"; did you mean {near[0]}?" if near else ""
            raise ConfigError(f"{path}={show(_raw(self.cfg, path))}: no component reads this key{hint} (remove it, "
                              f"or correct its name: `bitnet --help` lists the config groups)")

    def typed_as(self, key: str) -> str:
        """The key the user sets for this value: `model.hidden` is `${hidden}`, so a bad width is reported as
        `hidden=...`, the key on the command line."""
        path = self.path(key)
        while True:
            parent, _, leaf = path.rpartition(".")
            node = OmegaConf.select(self.cfg, parent, default=None) if parent else self.cfg
            if not OmegaConf.is_config(node) or leaf not in node or not OmegaConf.is_interpolation(node, leaf):
                return path
            reference = _REFERENCE.match(str(node._get_node(leaf)._value()))
            if reference is None:
                return path
            path = reference.group(1)

    def error(self, key: str, value, allowed: str) -> ConfigError:
        return ConfigError(f"{self.typed_as(key)}={show(value)}: {allowed}")

    def get(self, key: str, default=_ABSENT):
        """The resolved value; `default` only for keys that some options of a group do not have."""
        path = self.path(key)
        self.read.add(path)
        try:
            value = OmegaConf.select(self.cfg, path, default=_ABSENT, throw_on_missing=True)
        except MissingMandatoryValue:
            raise ConfigError(f"{path} is required but not set (???): give it on the command line, "
                              f"{path}=...") from None
        except OmegaConfBaseException as err:
            raise ConfigError(f"{path}: cannot be resolved: {first_line(err)}") from None
        if value is _ABSENT:
            if default is _ABSENT:
                raise ConfigError(f"{path} is missing from the config: add it with +{path}=...")
            return default
        return value

    def integer(self, key: str, minimum: int, allowed: str, optional: bool = False) -> int | None:
        value = self.get(key)
        if value is None and optional:
            return None
        ok = isinstance(value, int) and not isinstance(value, bool)
        if isinstance(value, float) and value.is_integer():  # 1e3 is a fine step count
            value, ok = int(value), True
        if not ok or value < minimum:
            raise self.error(key, value, f"must be {allowed}")
        return value

    def positive(self, key: str, what: str = "", optional: bool = False) -> int | None:
        allowed = "a positive integer" + (f" ({what})" if what else "") + (" or null" if optional else "")
        return self.integer(key, 1, allowed, optional)

    def seed(self, key: str) -> int:
        allowed = "an integer >= 0 and < 2**64 (the range torch's random generators accept)"
        value = self.integer(key, 0, allowed)
        if value >= 2**64:
            raise self.error(key, value, f"must be {allowed}")
        return value

    def number(self, key: str, low: float | None, high: float | None, allowed: str, *, low_open: bool = False,
               high_open: bool = False, optional: bool = False) -> float | None:
        value = self.get(key)
        if value is None and optional:
            return None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            raise self.error(key, value, f"must be {allowed}")
        return float(value)

    def choice(self, key: str, options, group: str | None = None) -> str:
        return check_choice(self.typed_as(key), self.get(key), options, group)

    def boolean(self, key: str) -> bool:
        value = self.get(key)
        if not isinstance(value, bool):
            raise self.error(key, value, "must be true or false")
        return value

    def text(self, key: str, optional: bool = False) -> str | None:
        value = self.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise self.error(key, value, "must be a string" + (" or null" if optional else ""))
        return value
