"""FSP, the "flow of solution procedure" (Yim et al. 2017): the student first matches the teacher's Gram
matrices between pairs of layers, then learns the task (here with Hinton's KD, Gu et al.'s "FSP_Hinton")."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Context, Method, Stage, check_share, stage_epochs
from .features import feature_shapes, prefixes_above
from .kd import check_hinton, kd_stage_terms


def fsp_matrix(first: Tensor, second: Tensor) -> Tensor:
    """Yim et al. (2017), Eq. 1: :math:`G_{ij} = \\sum_{h,w} F^1_{i,h,w} F^2_{j,h,w} / (h \\cdot w)`, per sample:
    ``(B, C1, H, W), (B, C2, H, W) -> (B, C1, C2)``.

    Maps of different spatial size (Gu et al.'s pairs of consecutive stages, 2x apart) are brought to the
    smaller size by average pooling the larger one first (as RepDistiller does); the sizes must divide.
    """
    (h1, w1), (h2, w2) = first.shape[2:], second.shape[2:]
    if (h1, w1) != (h2, w2):
        big, small = ((h1, w1), (h2, w2)) if h1 * w1 > h2 * w2 else ((h2, w2), (h1, w1))
        if big[0] % small[0] or big[1] % small[1]:
            raise ValueError(f"FSP pairs maps of equal size, or sizes that divide: {h1}x{w1} and {h2}x{w2}")
        if (h1, w1) == big:
            first = F.avg_pool2d(first, (big[0] // small[0], big[1] // small[1]))
        else:
            second = F.avg_pool2d(second, (big[0] // small[0], big[1] // small[1]))
    h, w = first.shape[2:]
    return torch.einsum("bihw,bjhw->bij", first, second) / (h * w)


def fsp_loss(student_matrices: list[Tensor], teacher_matrices: list[Tensor]) -> Tensor:
    """Yim et al. (2017), Eq. 2 with equal weights: :math:`\\sum_i \\mathrm{mean}(G^i_S - G^i_T)^2`, the mean over
    the batch and the matrix entries (the paper's squared L2 norm sums the entries, a factor C1*C2 per pair
    that would make the FSP stage's learning rate depend on the widths; RepDistiller also averages)."""
    return sum((s - t).pow(2).mean() for s, t in zip(student_matrices, teacher_matrices))


class FSP(Method):
    """Yim et al. (2017), §3.3: two stages.

    Stage ``"fsp"`` (``fsp_epochs`` of the run): the student's layers up to the deepest feature of ``pairs``
    learn ``beta`` × :func:`fsp_loss` alone (the classifier and anything above frozen). Stage ``"kd"``: the
    whole student learns Hinton's KD (``alpha=0.9``, T = 4, Gu et al. 2020 §5.3; ``alpha=0``: cross-entropy,
    Yim's own second stage). Each stage restarts the learning-rate schedule (two optimisations, as Yim et al.).

    ``pairs``: Gu et al. (§5.3) transfer "the flows between the 1st and the 2nd layers and between the 2nd and
    the 3rd layers", i.e. the stage outputs ``(("stage1", "stage2"), ("stage2", "stage3"))`` (pooled to the
    smaller size, :func:`fsp_matrix`); Yim's own pairs are a stage's first and last block maps
    (``("stage2.block1", "stage2")``, equal sizes). Teacher and student must have the same widths at each
    pair (checked when the method is built: the CIFAR ResNets share 16/32/64).
    """

    requires_teacher = True

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None,
                 pairs: tuple[tuple[str, str], ...] = (("stage1", "stage2"), ("stage2", "stage3")),
                 fsp_epochs: float = 0.25, beta: float = 1.0, temperature: float = 4.0, alpha: float = 0.9) -> None:
        super().__init__(student, teacher)
        check_hinton(temperature, alpha)
        self.pairs = tuple((str(a), str(b)) for a, b in pairs)
        if not self.pairs:
            raise ValueError("pairs names at least one (first, second) pair of features")
        if beta <= 0:
            raise ValueError(f"beta (the FSP weight) must be positive, got {beta}")
        self.fsp_epochs = check_share(fsp_epochs, "fsp_epochs")
        self.beta, self.temperature, self.alpha = float(beta), float(temperature), float(alpha)
        names = sorted({n for pair in self.pairs for n in pair})
        student_shapes, teacher_shapes = feature_shapes(student, names), feature_shapes(teacher, names)
        wrong = [f"{a}->{b}: student {student_shapes[a][0]}x{student_shapes[b][0]}, "
                 f"teacher {teacher_shapes[a][0]}x{teacher_shapes[b][0]}"
                 for a, b in self.pairs
                 if (student_shapes[a][0], student_shapes[b][0]) != (teacher_shapes[a][0], teacher_shapes[b][0])]
        if wrong:
            raise ValueError("FSP compares Gram matrices, so teacher and student need the same channel widths at "
                             "each pair; these differ: " + "; ".join(wrong))
        order = student.feature_names
        self.deepest = max(names, key=order.index)

    def stages(self, epochs: int) -> list[Stage]:
        above = tuple(f"student.{p}" for p in prefixes_above(self.student, self.deepest))
        return [Stage("fsp", stage_epochs(self.fsp_epochs, epochs, "FSP"), terms=("fsp",), frozen=above,
                      restart_schedule=True),
                Stage("kd", terms=("ce", "kd"), restart_schedule=True)]

    def matrices(self, features: dict[str, Tensor]) -> list[Tensor]:
        return [fsp_matrix(features[a], features[b]) for a, b in self.pairs]

    def forward(self, x: Tensor, y: Tensor, context: Context | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        context = context or Context.everything()
        terms: dict[str, Tensor] = {}
        if context.uses("fsp"):
            logits, features = self.student.forward_features(x)
            with torch.no_grad():
                teacher_matrices = self.matrices(self.teacher.forward_features(x)[1])
            terms["fsp"] = self.beta * fsp_loss(self.matrices(features), teacher_matrices)
        else:
            logits = self.student(x)
        terms.update(kd_stage_terms(self, logits, x, y, context))
        return logits, terms
