"""Deep mutual learning: two networks trained together, each from labels and from the other."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import models
from ..modules import batchnorm_statistics_fixed
from .base import Context, Method, Update
from .kd import kd_divergence


def make_peer(student: nn.Module, peer: str | None, method: str) -> nn.Module:
    """The peer network of a mutual-learning method, freshly initialised from the torch RNG: ``peer`` omitted or
    the student's architecture gets the student's model options too (dropout, width), another architecture only
    the student's class and channel counts."""
    config = dict(getattr(student, "config", {}))
    name = peer or getattr(student, "name", None)
    if name is None:
        raise ValueError(f"{method} needs a peer model name (method_args={{'peer': 'resnet20'}})")
    if name.strip().lower() == str(getattr(student, "name", "")).lower():
        options = config
    else:
        options = {"num_classes": config.get("num_classes", 10), "in_channels": config.get("in_channels", 3)}
    return models.create(name, **options)


class DML(Method):
    """Zhang et al. (2018), Eq. 10–11: each network minimises
    :math:`\\mathrm{CE}(y, p_k) + \\lambda D_{KL}(p_{\\text{other}} \\| p_k)`, λ = ``weight`` (1 in the DML paper;
    Gu et al. §5.2 use 0.1).

    The two networks are updated alternately on every batch (their Algorithm 1): first the student against the
    peer's current prediction, then the peer against the student's *updated* prediction. The peer is built with
    ``models.create(peer, ...)``: a peer of the student's own architecture (``peer`` omitted or the same name)
    gets the student's model options too (dropout, width), another architecture only its class and channel
    counts. ``temperature`` softens both sides (1 in the paper).
    """

    takes_teacher = False
    # 2: the other network's prediction no longer advances its BatchNorm statistics;
    # 3: a peer of the student's architecture is built with the student's model options (was: the defaults)
    version = 3

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, peer: str | None = None,
                 temperature: float = 1.0, weight: float = 1.0) -> None:
        super().__init__(student, None)
        if teacher is not None:
            raise ValueError("DML trains its peer alongside the student; it takes no teacher run")
        self.peer = make_peer(student, peer, "DML")
        self.temperature, self.weight = float(temperature), float(weight)

    def updates(self) -> list[Update]:
        return [Update("student", ("student",)), Update("peer", ("peer",))]

    def _mutual(self, network: nn.Module, other: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits = network(x)
        # The other network's prediction is a target, not a training pass of it: its BN statistics advance
        # only in its own update, once per batch.
        with torch.no_grad(), batchnorm_statistics_fixed(other):
            other_logits = other(x)
        return logits, F.cross_entropy(logits, y), self.weight * kd_divergence(logits, other_logits, self.temperature)

    def update_losses(self, update: str, x: Tensor, y: Tensor,
                      context: Context | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        if update == "student":
            logits, ce, kl = self._mutual(self.student, self.peer, x, y)
            return logits, {"ce": ce, "kl": kl}
        logits, ce, kl = self._mutual(self.peer, self.student, x, y)
        return logits, {"peer_ce": ce, "peer_kl": kl}

    def forward(self, x: Tensor, y: Tensor, context: Context | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Both losses from one forward pass (for inspection; training uses the alternating updates)."""
        logits, terms = self.update_losses("student", x, y)
        return logits, {**terms, **self.update_losses("peer", x, y)[1]}

    def evaluated(self) -> dict[str, nn.Module]:
        return {"": self.student, "peer": self.peer}
