"""Per-step measurements that a run records next to its losses (named in ``RunSpec.probes``).

``"path_length:<prefix>"`` — the length of the path that the student's parameters under ``<prefix>`` walk
during training, :math:`\\sum_t \\|w_t - w_{t-1}\\|_2`. Cheng et al. (CVPR 2020, Sec. 3.3) use it to measure
how directly a network learns (their Hypothesis 3); Part I reads it from here.
"""
from __future__ import annotations

import torch

from .distill.base import Method


class WeightPathLength:
    """Accumulates :math:`\\sum_t \\|w_t - w_{t-1}\\|_2` over optimiser steps for the student's ``prefix``
    parameters (all of them, concatenated, as one vector)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.name = f"path_length:{prefix}"
        self.total = 0.0
        self._previous: list[torch.Tensor] = []
        self._params: list[torch.nn.Parameter] = []

    def attach(self, method: Method) -> None:
        self._params = [p for name, p in method.student.named_parameters()
                        if name == self.prefix or name.startswith(self.prefix + ".") or self.prefix == ""]
        if not self._params:
            names = sorted({n.rsplit(".", 1)[0] for n, _ in method.student.named_parameters()})
            raise ValueError(f"probe {self.name!r}: no student parameter under {self.prefix!r}; "
                             f"modules with parameters: {', '.join(names)}")
        self._previous = [p.detach().clone() for p in self._params]

    @torch.no_grad()
    def after_step(self, method: Method) -> None:
        squared = torch.zeros((), device=self._params[0].device)
        for param, previous in zip(self._params, self._previous):
            squared += (param - previous).pow(2).sum()
            previous.copy_(param)
        self.total += squared.sqrt().item()

    def epoch_metrics(self) -> dict[str, float]:
        return {self.name: self.total}

    def state_dict(self) -> dict:
        return {"total": self.total, "previous": [t.cpu() for t in self._previous]}

    def load_state_dict(self, state: dict) -> None:
        self.total = float(state["total"])
        for mine, saved in zip(self._previous, state["previous"]):
            mine.copy_(saved)


PROBES = {"path_length": WeightPathLength}


def create(spec: str) -> WeightPathLength:
    """``"kind:argument"``, e.g. ``"path_length:classifier"``; unknown kinds list the choices."""
    kind, _, argument = spec.partition(":")
    if kind not in PROBES:
        raise ValueError(f"unknown probe {spec!r}; choose one of: {', '.join(k + ':<prefix>' for k in PROBES)}")
    return PROBES[kind](argument)
