"""Introspective learning: distilling from the network's own online explanations (Gu et al. 2020, §4, Alg. 1).

Stage 1 (warm-up) trains on one-hot labels and computes no explanation. Stage 2, at every step: the training
forward gives the logits; one explanation map per class, :math:`E_i = (e_i^1, \\dots, e_i^c)`, comes from the
network itself (:func:`kdnb.explain.class_maps`); the targets are Eq. 6,

.. math:: q_i^y = \\alpha, \\qquad q_i^k = (1-\\alpha)\\,
   \\frac{\\cos(e_i^k, e_i^y) + 1}{\\sum_{m \\ne y} (\\cos(e_i^m, e_i^y) + 1)} \\quad (k \\ne y),

constants (no gradient flows through them), and the loss is :math:`\\mathrm{CE}(p, q) + \\lambda\\,\\mathrm{CE}(p, y)`
with :math:`\\alpha = 0.9`, :math:`\\lambda = 0.1` (§5).

Grad-CAM maps (the paper's default, "the last convolutional layer") come from the training forward's own tensors:
at the last-stage output of a GAP + Linear model they are the closed form (no backward, no extra forward);
elsewhere one backward per class to the layer, keeping the graph for the loss. Input-space maps (``"grad"``,
``"grad_x_input"``, ``"guided_backprop"``) take one side-effect-free forward of their own and one backward per
class, in the network's training mode. Maps are taken as they come (Grad-CAM after its ReLU, gradients
signed), flattened, at the layer's resolution: the paper does not say otherwise.

LE-Permut (§5.4.1) permutes each target's non-ground-truth entries: the responses stay, the class similarity
goes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import explain
from .base import Context, Method, Stage
from .dark_knowledge import permute_except


def le_targets(maps: Tensor, y: Tensor, alpha: float = 0.9) -> Tensor:
    """Eq. 6: targets ``(N, K)`` from class maps ``(N, K, ...)`` and labels ``y``; detached.

    The cosine of each class map with the ground-truth class's map, plus 1, normalised over the non-ground-truth
    classes and scaled by :math:`1-\\alpha`; :math:`\\alpha` on the ground truth. An all-zero map has cosine 0
    with any other; should every non-ground-truth cosine be -1 (a zero denominator), those classes share
    :math:`1-\\alpha` equally."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    n, k = maps.shape[:2]
    flat = maps.detach().reshape(n, k, -1).float()
    truth = flat[torch.arange(n, device=flat.device), y]  # (N, D)
    similarity = F.cosine_similarity(flat, truth[:, None, :], dim=2, eps=1e-12) + 1.0  # (N, K)
    is_truth = F.one_hot(y, k).bool()
    similarity = similarity.masked_fill(is_truth, 0.0)
    total = similarity.sum(dim=1, keepdim=True)
    shares = torch.where(total > 0, similarity / total.clamp_min(torch.finfo(similarity.dtype).tiny),
                         (~is_truth).float() / (k - 1))
    return ((1.0 - alpha) * shares).masked_fill(is_truth, alpha).to(maps.dtype)


class LE(Method):
    """Learning with Explanations (Algorithm 1). Terms: ``ce`` (weight 1 in the warm-up, ``lam`` after it) and
    ``le`` = CE(p, q) with q from :func:`le_targets`.

    ``explanation`` is one of :data:`kdnb.explain.METHODS` (``"grad"`` for networks without a spatial layer,
    e.g. the MLP of Table 3); ``layer`` a feature name for Grad-CAM (default: the last stage output).
    ``warmup`` is the warm-up's share of the run's epochs (rounded; at least one epoch, and one epoch is left for
    stage 2): the paper gives 10 of 50 epochs (0.2) for its MLP and no number for its ResNets.
    ``permute=True`` is LE-Permut."""

    takes_teacher = False

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, explanation: str = "gradcam",
                 layer: str | None = None, alpha: float = 0.9, lam: float = 0.1, warmup: float = 0.2,
                 permute: bool = False) -> None:
        if teacher is not None:
            raise ValueError("LE explains the network itself; it takes no teacher run")
        super().__init__(student, None)
        if explanation not in explain.METHODS:
            raise ValueError(f"unknown explanation {explanation!r}; choose one of: {', '.join(explain.METHODS)}")
        if layer is not None and explanation != "gradcam":
            raise ValueError(f"{explanation!r} explains the input; it takes no layer")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if not 0.0 <= warmup < 1.0:
            raise ValueError(f"warmup is a share of the epochs in [0, 1), got {warmup}")
        self.explanation, self.layer = explanation, layer
        self.alpha, self.lam, self.warmup, self.permute = float(alpha), float(lam), float(warmup), bool(permute)

    def warmup_epochs(self, epochs: int) -> int:
        if self.warmup == 0 or epochs < 2:
            return 0
        return min(max(round(self.warmup * epochs), 1), epochs - 1)

    def stages(self, epochs: int) -> list[Stage]:
        warm = self.warmup_epochs(epochs)
        return ([Stage("warmup", warm, terms=("ce",))] if warm else []) + [Stage("introspect")]

    def maps(self, x: Tensor, logits: Tensor, features: dict[str, Tensor] | None) -> Tensor:
        """The class maps of the batch, detached: Grad-CAM from the training forward, input maps by their own."""
        if self.explanation == "gradcam":
            return explain.gradcam_from_forward(self.student, logits, features, self.layer)
        return explain.class_maps(self.student, x, self.explanation)

    def targets(self, maps: Tensor, y: Tensor) -> Tensor:
        q = le_targets(maps, y, self.alpha)
        return permute_except(q, y) if self.permute else q

    def forward(self, x: Tensor, y: Tensor, context: Context | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        context = context or Context.everything()
        if not context.uses("le"):  # warm-up: plain cross-entropy, no explanation
            logits = self.student(x)
            return logits, {"ce": F.cross_entropy(logits, y)}
        if self.explanation == "gradcam":
            logits, features = self.student.forward_features(x)
        else:
            logits, features = self.student(x), None
        q = self.targets(self.maps(x, logits, features), y)
        return logits, {"le": F.cross_entropy(logits, q), "ce": self.lam * F.cross_entropy(logits, y)}


class LEPermut(LE):
    """LE-Permut (§5.4.1): LE with the non-ground-truth entries of each target randomly permuted."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, explanation: str = "gradcam",
                 layer: str | None = None, alpha: float = 0.9, lam: float = 0.1, warmup: float = 0.2) -> None:
        super().__init__(student, teacher, explanation, layer, alpha, lam, warmup, permute=True)
