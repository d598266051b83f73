"""Checks a composed config before anything is built or trained, with one-line messages that name the key,
the bad value and what is allowed."""

from __future__ import annotations

from omegaconf import DictConfig


class ConfigError(ValueError):
    pass


def validate(cfg: DictConfig) -> None:
    pass
