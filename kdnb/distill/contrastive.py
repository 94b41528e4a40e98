"""CRD, contrastive representation distillation (Tian et al., ICLR 2020), with its memory bank.

The student's and the teacher's penultimate vectors (``"pooled"``) are embedded (linear + L2 normalisation,
128 dimensions) and contrasted against a memory of every training sample's embedding: for each sample the
positive is its own entry in the other network's memory, the negatives ``nce_k`` entries of samples of *other
classes* drawn at random. Each memory entry follows its sample's embedding with momentum 0.5 (renormalised).
The NCE loss (Tian et al. Eq. 18, noise :math:`P_n = 1/N`) is taken both ways — student anchor against the
teacher's memory, teacher anchor against the student's — and the probabilities are
:math:`\\exp(v \\cdot m / \\tau)/Z` with τ = 0.07 and a normalising constant :math:`Z` fixed at the first batch
(mean × N). As RepDistiller's reference implementation (``shared/notes/kd-methods.md`` §2.10); the student learns
CE + 0.8 × CRD there (``-r 1 -a 0 -b 0.8``).

The method needs each batch's sample indices, the training set's size and its labels, which the trainer hands
over in :class:`.base.Context`. The memory is sized at the first step (the training set is not known before)
and saved and resumed with the run.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Context, Method
from .features import feature_shapes

NCE_EPS = 1e-7  # RepDistiller's eps inside the NCE logarithms


class Embed(nn.Module):
    """Linear map to ``dim`` then L2 normalisation per sample."""

    def __init__(self, in_features: int, dim: int = 128) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, dim)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.linear(x.flatten(1)), dim=1)


def nce_loss(probabilities: Tensor, num_samples: int) -> Tensor:
    """Tian et al. Eq. 18 with noise :math:`P_n = 1/N`: ``probabilities`` ``(B, K+1)``, the positive first;
    :math:`-\\frac{1}{B}\\sum_b [\\log\\frac{P_0}{P_0 + K P_n} + \\sum_{k\\ge1} \\log\\frac{K P_n}{P_k + K P_n}]`."""
    k = probabilities.shape[1] - 1
    noise = k / num_samples
    positive = torch.log(probabilities[:, 0] / (probabilities[:, 0] + noise + NCE_EPS))
    negative = torch.log(noise / (probabilities[:, 1:] + noise + NCE_EPS))
    return -(positive.sum() + negative.sum()) / probabilities.shape[0]


class ContrastMemory(nn.Module):
    """Two memories (student, teacher) of ``N × dim`` unit vectors and their normalising constants, sized at the
    first batch (:meth:`ensure`); a state dict of another size resizes them before loading."""

    def __init__(self, dim: int, temperature: float, momentum: float) -> None:
        super().__init__()
        self.dim, self.temperature, self.momentum = dim, temperature, momentum
        self.register_buffer("student", torch.zeros(0, dim))
        self.register_buffer("teacher", torch.zeros(0, dim))
        self.register_buffer("z", torch.full((2,), -1.0))  # (student anchor, teacher anchor); < 0: not yet set
        self._z_known = False  # whether z was seen set (reading it waits for the device: once per run)

    def ensure(self, num_samples: int) -> None:
        """Entries uniform in ±1/√(dim/3) (RepDistiller's initialisation) for ``num_samples`` samples."""
        if self.student.shape[0] == num_samples:
            return
        if self.student.shape[0]:
            raise ValueError(f"the memory holds {self.student.shape[0]} samples; this training set has {num_samples}")
        bound = 1.0 / math.sqrt(self.dim / 3)
        device = self.z.device
        self.student = (torch.rand(num_samples, self.dim, device=device) * 2 - 1) * bound
        self.teacher = (torch.rand(num_samples, self.dim, device=device) * 2 - 1) * bound

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("student", "teacher"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=self.z.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def scores(self, v_student: Tensor, v_teacher: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        """``(student anchor, teacher anchor)`` probabilities ``(B, K+1)`` over the memory entries ``index``
        (``(B, K+1)``, the positive first): :math:`\\exp(v\\cdot m/\\tau)/Z`, Z set from the first batch."""
        b, k1 = index.shape
        flat = index.reshape(-1)
        teacher_entries = self.teacher.index_select(0, flat).view(b, k1, self.dim)
        student_entries = self.student.index_select(0, flat).view(b, k1, self.dim)
        out_student = torch.exp(torch.bmm(teacher_entries, v_student[:, :, None]).squeeze(2) / self.temperature)
        out_teacher = torch.exp(torch.bmm(student_entries, v_teacher[:, :, None]).squeeze(2) / self.temperature)
        if not self._z_known:
            if bool((self.z < 0).any()):
                n = self.student.shape[0]
                self.z.copy_(torch.stack([out_student.detach().mean() * n, out_teacher.detach().mean() * n]))
            self._z_known = True
        return out_student / self.z[0], out_teacher / self.z[1]

    @torch.no_grad()
    def update(self, v_student: Tensor, v_teacher: Tensor, indices: Tensor) -> None:
        """Each sample's entries move to ``momentum`` × old + (1 − momentum) × new, renormalised."""
        for memory, v in ((self.student, v_student), (self.teacher, v_teacher)):
            mixed = memory.index_select(0, indices) * self.momentum + v.detach() * (1 - self.momentum)
            memory.index_copy_(0, indices, F.normalize(mixed, dim=1))


class NegativeSampler:
    """Draws, for each anchor, sample indices uniformly and with replacement among the training samples whose
    label differs from the anchor's (RepDistiller's CRD sampling: negatives from other classes only). Built once
    from the training labels."""

    def __init__(self, labels: Tensor) -> None:
        self.order = torch.argsort(labels, stable=True)  # samples grouped by class
        self.counts = torch.bincount(labels)
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.labels = labels
        self.distinct = labels.numel() - int(self.counts.max())  # other-class samples of the largest class

    def __call__(self, indices: Tensor, k: int) -> Tensor:
        """``(B, k)`` negatives for the anchors ``indices``."""
        anchor = self.labels[indices]
        size, start = self.counts[anchor][:, None], self.starts[anchor][:, None]
        others = self.labels.numel() - size
        u = (torch.rand(indices.numel(), k, device=indices.device) * others).long().clamp_max(others - 1)
        return self.order[u + size * (u >= start)]  # skip the anchor's class block


class CRD(Method):
    """Tian et al. (2020): :math:`\\mathcal{L} = \\mathrm{CE} + \\beta\\,(\\mathcal{L}_{NCE}^{S} + \\mathcal{L}_{NCE}^{T})`
    on the embedded ``"pooled"`` vectors; see the module docstring.

    ``beta`` 0.8, ``dim`` 128, ``nce_k`` 16384 negatives, ``temperature`` τ 0.07, ``momentum`` 0.5 (RepDistiller's
    CIFAR-100 settings). Negatives are drawn with replacement; more than there are samples of other classes
    would only repeat them, so :attr:`k_used` = min(``nce_k``, N − the largest class count). Terms ``"ce"``,
    ``"crd"``; the teacher runs without gradient, both embeddings train.
    """

    requires_teacher = True

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, beta: float = 0.8, dim: int = 128,
                 nce_k: int = 16384, temperature: float = 0.07, momentum: float = 0.5) -> None:
        super().__init__(student, teacher)
        if beta < 0 or dim < 1 or nce_k < 1 or temperature <= 0 or not 0.0 <= momentum < 1.0:
            raise ValueError(f"CRD needs beta >= 0, dim >= 1, nce_k >= 1, temperature > 0 and momentum in [0, 1); "
                             f"got {beta}, {dim}, {nce_k}, {temperature}, {momentum}")
        self.beta, self.nce_k = float(beta), int(nce_k)
        self.embed_student = Embed(feature_shapes(student, ["pooled"])["pooled"][0], dim)
        self.embed_teacher = Embed(feature_shapes(teacher, ["pooled"])["pooled"][0], dim)
        self.memory = ContrastMemory(dim, float(temperature), float(momentum))
        self.k_used: int | None = None
        self._sampler: NegativeSampler | None = None

    def forward(self, x: Tensor, y: Tensor, context: Context | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        context = context or Context.everything()
        if not context.uses("crd"):
            logits = self.student(x)
            return logits, {"ce": F.cross_entropy(logits, y)}
        if context.indices is None or context.dataset_labels is None:
            raise ValueError("CRD needs each batch's sample indices and the training labels (Context.indices, "
                             "Context.dataset_labels): train it with kdnb.train.Trainer on TensorBatches")
        logits, features = self.student.forward_features(x)
        teacher_pooled = self.teacher_features(x)[1]["pooled"]
        n = context.num_samples
        if self._sampler is None or self._sampler.labels is not context.dataset_labels:
            self._sampler = NegativeSampler(context.dataset_labels)
            self.k_used = min(self.nce_k, self._sampler.distinct)
        self.memory.ensure(n)
        negatives = self._sampler(context.indices, self.k_used)
        index = torch.cat([context.indices[:, None], negatives], dim=1)
        v_student, v_teacher = self.embed_student(features["pooled"]), self.embed_teacher(teacher_pooled)
        out_student, out_teacher = self.memory.scores(v_student, v_teacher, index)
        crd = nce_loss(out_student, n) + nce_loss(out_teacher, n)
        self.memory.update(v_student, v_teacher, context.indices)
        return logits, {"ce": F.cross_entropy(logits, y), "crd": self.beta * crd}
