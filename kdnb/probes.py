"""Per-step measurements that a run records next to its losses (named in ``RunSpec.probes``).

``"path_length:<prefix>"`` — the length of the path that the student's parameters under ``<prefix>`` walk
during training, :math:`\\sum_t \\|w_t - w_{t-1}\\|_2`. Cheng et al. (CVPR 2020, Sec. 3.3) use it to measure
how directly a network learns (their Hypothesis 3); Part I reads it from here.
"""
from __future__ import annotations

import torch

from .distill.base import Method
from .modules import parameters_under


class WeightPathLength:
    """Accumulates :math:`\\sum_t \\|w_t - w_{t-1}\\|_2` over optimiser steps for the student's ``prefix``
    parameters (all of them, concatenated, as one vector).

    Per epoch it reports the running total (``path_length:<prefix>``) and :math:`\\|w_0\\|_2`
    (``init_norm:<prefix>``, the scale Cheng et al. divide by); :meth:`series` keeps every step's
    :math:`\\|w_t - w_{t-1}\\|_2` (``path_length:<prefix>/step``). Steps accumulate on the device and are read
    once per epoch.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.name = f"path_length:{prefix}"
        self.total = 0.0
        self.init_norm = 0.0
        self.steps: list[torch.Tensor] = []  # finished epochs, on the CPU
        self._pending: list[torch.Tensor] = []  # this epoch's step norms, still on the device
        self._previous: list[torch.Tensor] = []
        self._params: list[torch.nn.Parameter] = []

    def attach(self, method: Method) -> None:
        try:
            self._params = [p for _, p in parameters_under(method.student, [self.prefix])]
        except ValueError as error:
            raise ValueError(f"probe {self.name!r}: no student parameter under {self.prefix!r} ({error})") from None
        self._previous = [p.detach().clone() for p in self._params]
        self.init_norm = torch.sqrt(sum(p.detach().double().pow(2).sum() for p in self._params)).item()

    @torch.no_grad()
    def after_step(self, method: Method) -> None:
        if self._previous and self._previous[0].device != self._params[0].device:  # the trainer moved the model
            self._previous = [t.to(p.device) for t, p in zip(self._previous, self._params)]
        squared = torch.zeros((), device=self._params[0].device)
        for param, previous in zip(self._params, self._previous):
            squared += (param - previous).pow(2).sum()
            previous.copy_(param)
        self._pending.append(squared.sqrt())

    def _flush(self) -> None:
        if self._pending:
            norms = torch.stack(self._pending).cpu()
            self._pending = []
            self.steps.append(norms)
            self.total += norms.double().sum().item()

    def epoch_metrics(self) -> dict[str, float]:
        self._flush()
        return {self.name: self.total, f"init_norm:{self.prefix}": self.init_norm}

    def series(self) -> dict[str, torch.Tensor]:
        self._flush()
        return {f"{self.name}/step": torch.cat(self.steps) if self.steps else torch.zeros(0)}

    def state_dict(self) -> dict:
        self._flush()
        return {"total": self.total, "init_norm": self.init_norm, "previous": [t.cpu() for t in self._previous],
                "steps": list(self.steps)}

    def load_state_dict(self, state: dict) -> None:
        self.total = float(state["total"])
        self.init_norm = float(state["init_norm"])
        self.steps = list(state["steps"])
        for mine, saved in zip(self._previous, state["previous"]):
            mine.copy_(saved)


PROBES = {"path_length": WeightPathLength}


def create(spec: str) -> WeightPathLength:
    """``"kind:argument"``, e.g. ``"path_length:classifier"``; unknown kinds list the choices."""
    kind, _, argument = spec.partition(":")
    if kind not in PROBES:
        raise ValueError(f"unknown probe {spec!r}; choose one of: {', '.join(k + ':<prefix>' for k in PROBES)}")
    return PROBES[kind](argument)
