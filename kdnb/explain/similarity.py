"""Class similarity read from explanations (Gu et al. 2020, §4 and Fig. 2) and from a network's mistakes.

For one image :math:`x_i` with class maps :math:`E_i = (e_i^1, \\dots, e_i^K)` (``kdnb.explain.class_maps``),
the cosine :math:`\\cos(e_i^k, e_i^c)` says how alike the network's reasons for class k and for class c are on
that image. Eq. 6 turns the cosines to the ground-truth class :math:`c = y_i` into LE's soft target; Fig. 2
averages them over the test set into a class × class matrix ("averaged cosine distance between classes"):

.. math:: S_{ck} = \\frac{1}{|\\{i : y_i = c\\}|} \\sum_{i : y_i = c} \\cos(e_i^k, e_i^c),

row c = the ground-truth class, column k = the class whose map is compared with it; :math:`S_{cc} = 1` (unless
every map of class c is zero). S is not symmetric in general: images of class c and images of class k are
different images. The paper's Fig. 2 does not say whether it averages per ground-truth class or over all images;
:func:`pairwise_class_similarity` is the other reading (mean of every pair's cosine over all images, symmetric).

The network's own class structure, to compare S with: the row-normalised confusion matrix
:math:`C_{ck} = P(\\hat y = k \\mid y = c)` (:func:`confusion_matrix`). :func:`agreement` measures how alike two
such matrices are by Spearman's rank correlation over their off-diagonal entries (the diagonals, 1 and the
per-class accuracy, say nothing about which classes resemble which).

Cosines follow Eq. 6's convention (as :func:`kdnb.distill.le_targets`): maps are flattened and compared as they
come, and an all-zero map has cosine 0 with any map (itself included).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import Tensor, nn

from .maps import class_maps

EPS = 1e-12  # a map whose norm is below this counts as all-zero: cosine 0


def map_cosines(maps: Tensor) -> Tensor:
    """``(N, K, K)``: the cosine between every two class maps of each image, from maps ``(N, K, ...)``.
    Symmetric in its last two axes; the diagonal is 1 for a non-zero map and 0 for an all-zero one."""
    if maps.dim() < 3:
        raise ValueError(f"expected class maps of shape (N, K, ...), got {tuple(maps.shape)}")
    flat = maps.detach().reshape(maps.shape[0], maps.shape[1], -1).double()
    unit = F.normalize(flat, dim=2, eps=EPS)
    return (unit @ unit.transpose(1, 2)).float()


def cosine_to_truth(maps: Tensor, y: Tensor) -> Tensor:
    """``(N, K)``: :math:`\\cos(e_i^k, e_i^{y_i})` for every class k, the quantity Eq. 6 normalises."""
    y = _labels(y, maps.shape[0], maps.shape[1])
    flat = maps.detach().reshape(maps.shape[0], maps.shape[1], -1).double()
    unit = F.normalize(flat, dim=2, eps=EPS)
    truth = unit[torch.arange(len(y)), y.to(unit.device)]
    return torch.einsum("nkd,nd->nk", unit, truth).float()


def per_class_mean(values: Tensor, y: Tensor, num_classes: int | None = None) -> Tensor:
    """``(K, ...)``: the mean of ``values`` (N, ...) over the images of each class of ``y``; NaN for a class
    with no image."""
    k = num_classes if num_classes is not None else int(y.max()) + 1
    y = _labels(y, values.shape[0], k).to(values.device)
    sums = torch.zeros((k, *values.shape[1:]), dtype=torch.float64, device=values.device)
    sums.index_add_(0, y, values.double())
    counts = torch.bincount(y, minlength=k).double().reshape(k, *([1] * (values.dim() - 1)))
    return (sums / counts).float()  # 0 / 0 = NaN for an empty class


def class_similarity(maps: Tensor, y: Tensor) -> Tensor:
    """Fig. 2, per ground-truth class: ``S[c, k]`` = mean over the images of class c of
    :math:`\\cos(e_i^k, e_i^c)`; ``(K, K)``, K from the maps."""
    return per_class_mean(cosine_to_truth(maps, y), y, maps.shape[1])


def pairwise_class_similarity(maps: Tensor) -> Tensor:
    """Fig. 2, the other reading: ``P[a, b]`` = mean over all images of :math:`\\cos(e_i^a, e_i^b)`;
    ``(K, K)``, symmetric."""
    return map_cosines(maps).mean(dim=0)


def confusion_matrix(predictions: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """``C[c, k]``: the share of the images of class c predicted as k (rows sum to 1; NaN for an empty class).
    ``predictions`` are class indices ``(N,)`` or logits ``(N, K)``."""
    if predictions.dim() == 2:
        predictions = predictions.argmax(dim=1)
    predictions = _labels(predictions, len(y), num_classes)
    return per_class_mean(F.one_hot(predictions.cpu(), num_classes).float(), y.cpu(), num_classes)


def off_diagonal(matrix: Tensor) -> Tensor:
    """The ``K(K-1)`` entries off the diagonal of a square matrix, row by row."""
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {tuple(matrix.shape)}")
    k = matrix.shape[0]
    return matrix[~torch.eye(k, dtype=torch.bool, device=matrix.device)]


@dataclass(frozen=True)
class Agreement:
    """Spearman's rank correlation between the off-diagonal entries of two class × class matrices."""

    rho: float
    p_value: float
    n: int  # entries compared

    def format(self, digits: int = 2) -> str:
        return f"ρ = {self.rho:+.{digits}f} (p = {self.p_value:.2g}, {self.n} class pairs)"


def agreement(a: Tensor, b: Tensor) -> Agreement:
    """How alike two class × class matrices are: Spearman's ρ over their off-diagonal entries (ties get average
    ranks; entries that are NaN in either matrix are left out). ρ is NaN when either side is constant."""
    if a.shape != b.shape:
        raise ValueError(f"matrices of different shapes: {tuple(a.shape)} and {tuple(b.shape)}")
    x, y = (off_diagonal(m.detach().cpu().double()).numpy() for m in (a, b))
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Agreement(math.nan, math.nan, int(len(x)))
    result = stats.spearmanr(x, y)
    return Agreement(float(result.statistic), float(result.pvalue), int(len(x)))


def top_pairs(matrix: Tensor, class_names: Sequence[str], count: int = 3) -> list[tuple[str, str, float]]:
    """The ``count`` most similar unordered class pairs of a class × class matrix: the largest entries of its
    symmetric part :math:`(M + M^T)/2` above the diagonal, as ``(class a, class b, value)``, largest first."""
    k = matrix.shape[0]
    if len(class_names) != k:
        raise ValueError(f"{len(class_names)} class names for a {k} × {k} matrix")
    sym = (matrix.detach().cpu().double() + matrix.detach().cpu().double().T) / 2
    rows, cols = torch.triu_indices(k, k, offset=1)
    values = sym[rows, cols]
    order = sorted(range(len(values)), key=lambda j: (-float(values[j]), int(rows[j]), int(cols[j])))
    return [(class_names[int(rows[j])], class_names[int(cols[j])], float(values[j])) for j in order[:count]]


@dataclass
class Explained:
    """A network's view of a set of images: its class maps ``(N, K, ...)`` and logits ``(N, K)``."""

    maps: Tensor
    logits: Tensor

    @property
    def predictions(self) -> Tensor:
        return self.logits.argmax(dim=1)


def explain_images(model: nn.Module, images: Tensor, method: str = "gradcam", batch_size: int = 256,
                   layer: str | None = None) -> Explained:
    """Every class's map (``class_maps``) and the logits of ``model`` on ``images`` (normalised, as the network
    sees them), in batches, in the mode the model is in (a loaded run is in eval mode); on the CPU."""
    maps, logits = [], []
    device = next(model.parameters()).device
    for first in range(0, len(images), batch_size):
        x = images[first:first + batch_size].to(device)
        maps.append(class_maps(model, x, method, layer=layer).cpu())
        with torch.no_grad():
            logits.append(model(x).cpu())
    return Explained(torch.cat(maps), torch.cat(logits))


def _labels(y: Tensor, n: int, k: int) -> Tensor:
    y = torch.as_tensor(y).long().reshape(-1)
    if len(y) != n:
        raise ValueError(f"{len(y)} labels for {n} images")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= k):
        raise ValueError(f"labels must lie in [0, {k - 1}], got values from {int(y.min())} to {int(y.max())}")
    return y
