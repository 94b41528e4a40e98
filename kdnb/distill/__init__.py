"""Distillation methods: one class per method, looked up by name.

``create("kd", student, teacher, temperature=4, alpha=0.9)``; unknown names raise ``ValueError`` with the
choices.
"""
from __future__ import annotations

from torch import nn

from .base import Method, Stage, Update
from .kd import CE, KD, kd_divergence, soft_targets
from .mutual import DML

METHODS: dict[str, type[Method]] = {"ce": CE, "kd": KD, "dml": DML}

__all__ = ["Method", "Stage", "Update", "CE", "KD", "DML", "METHODS", "create", "available", "kd_divergence",
           "soft_targets"]


def available() -> list[str]:
    return sorted(METHODS)


def create(name: str, student: nn.Module, teacher: nn.Module | None = None, **hparams) -> Method:
    """Build method ``name`` around ``student`` (and ``teacher`` where the method needs one)."""
    key = name.lower()
    if key not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(available())}")
    return METHODS[key](student, teacher, **hparams)
