"""Representation analyses of Huang et al. (2021) §4.7, Fig. 4(a, b): CKA between the inheritance and exploration
features, and the number of active neurons of a representation.

**CKA** (Fig. 4a; Kornblith et al. 2019, "Similarity of neural network representations revisited", the paper's
ref. [17]). For two feature matrices of the same n examples, :math:`X \\in \\mathbb{R}^{n \\times d_1}` and
:math:`Y \\in \\mathbb{R}^{n \\times d_2}`, with linear kernels :math:`K = XX^\\top`, :math:`L = YY^\\top`:

.. math:: \\mathrm{CKA}(K, L) = \\frac{\\mathrm{HSIC}(K, L)}{\\sqrt{\\mathrm{HSIC}(K, K)\\,\\mathrm{HSIC}(L, L)}},

which for column-centred X and Y is :math:`\\|Y^\\top X\\|_F^2 / (\\|X^\\top X\\|_F \\|Y^\\top Y\\|_F)` (Kornblith
et al., Eq. 5 with the biased HSIC estimator :math:`\\mathrm{tr}(KHLH)/(n-1)^2`). :func:`linear_cka` computes this
*biased* form by default, the one Kornblith et al. report; ``unbiased=True`` uses the unbiased HSIC estimator of
Song et al. (2012) in every HSIC (through U-centred Gram matrices), whose value does not drift upwards when the
feature dimension is large against n. Both are invariant to orthogonal transforms and isotropic scaling of either
matrix, and CKA(X, X) = 1. A larger CKA means more similar representations; the paper reads a lower
inheritance-exploration CKA under IE-KD than under independent training (same initial seed) as more diverse
features.

The inheritance and exploration features are channel groups of the last feature map (IE-KD splits its channels;
:func:`feature_matrix` selects a group, optionally averages it over space, and flattens it to ``(n, d)``). The
paper does not say whether it compares maps or pooled vectors; both are one argument here.

**Active neurons** (Fig. 4b and §4.7; Cui et al. 2019, "Active subspace of neural networks", the paper's ref. [6]).
The paper: "the number of active neurons is the number of directions to which the classification loss function
c(x) is sensitive". For a representation :math:`h` and the loss :math:`c(h)` of the rest of the network on it (the
cross-entropy with the true label), the active subspace is spanned by the leading eigenvectors of

.. math:: C = \\mathbb{E}_x\\left[\\nabla_h c \\, \\nabla_h c^\\top\\right] = V \\Lambda V^\\top,
   \\quad \\lambda_1 \\ge \\lambda_2 \\ge \\dots \\ge \\lambda_d \\ge 0,

and the number of active neurons is the smallest r whose trailing eigenvalues hold at most a fraction τ of the
total, :math:`\\sum_{i > r} \\lambda_i \\le \\tau \\sum_i \\lambda_i` (:func:`active_subspace`). τ is a parameter
of the definition (default :data:`ACTIVE_THRESHOLD` = 0.05: 95 % of the loss's gradient energy lies in the active
directions). This cumulative-energy reading of Cui et al.'s definition is ours from the cited paper (not in the
project's paper folder, not re-checked); Huang et al. give neither the threshold nor the data set size. C is
estimated from the test set's per-example gradients G (n × d): its eigenvalues are the squared singular values of
:math:`G / \\sqrt{n}` (no d × d matrix is formed), and with n < d at most n of them are non-zero.

What bounds the count. For the pooled (penultimate) vector and a linear classifier,
:math:`\\nabla_h c = W^\\top (p - e_y)` with :math:`\\sum_k (p - e_y)_k = 0`, so every gradient lies in a space of
dimension at most :math:`\\min(d, K - 1)`: at most 9 active neurons with 10 classes (tested). On the last feature map
before the pooling (``feature="stage3"``) the gradient is the same at every position, so the bound is the same;
on the map before its final ReLU (``"stage3.pre"``) the ReLU's mask makes it position dependent and the bound is
the map's size. The paper's 45 active neurons in the 32 inheritance channels of a ResNet-32 cannot be the pooled
vector of those channels; the paper does not say which representation it used.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ACTIVE_THRESHOLD", "ActiveSubspace", "linear_cka", "feature_matrix", "collect_features",
           "loss_gradients", "active_subspace", "active_neurons", "representation_head"]

#: Default τ of :func:`active_subspace`: the active directions hold at least 1 - τ of the gradient energy.
ACTIVE_THRESHOLD = 0.05


# ------------------------------------------------------------------------------------------------ CKA
def _centered(x: Tensor) -> Tensor:
    x = x.reshape(x.shape[0], -1).to(torch.float64)
    return x - x.mean(dim=0, keepdim=True)


def _u_centered_gram(x: Tensor) -> Tensor:
    """U-centred Gram matrix (Székely & Rizzo 2014): zero diagonal; ``<K~, L~> / (n (n - 3))`` is the unbiased
    HSIC estimator of Song et al. (2012)."""
    n = x.shape[0]
    gram = x @ x.T
    gram.fill_diagonal_(0.0)
    rows = gram.sum(dim=0) / (n - 2)
    total = gram.sum() / ((n - 1) * (n - 2))
    centred = gram - rows[:, None] - rows[None, :] + total
    centred.fill_diagonal_(0.0)
    return centred


def linear_cka(x: Tensor, y: Tensor, unbiased: bool = False) -> float:
    """Linear CKA of two representations of the same examples (rows), see the module docstring.

    Args:
        x: ``(n, d1)`` features (higher-dimensional inputs are flattened per example).
        y: ``(n, d2)`` features of the same n examples, in the same order.
        unbiased: the unbiased HSIC estimator (needs n >= 4) instead of Kornblith et al.'s biased one.

    Returns:
        CKA in [0, 1] for the biased form (the unbiased one can fall slightly below 0 for unrelated features);
        0 when either representation is constant.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same examples; got {x.shape[0]} and {y.shape[0]} rows")
    n = x.shape[0]
    if unbiased:
        if n < 4:
            raise ValueError(f"the unbiased estimator needs at least 4 examples; got {n}")
        k = _u_centered_gram(x.reshape(n, -1).to(torch.float64))
        l = _u_centered_gram(y.reshape(n, -1).to(torch.float64))
        cross, kk, ll = (k * l).sum(), (k * k).sum(), (l * l).sum()
        denominator = torch.sqrt(kk * ll) if kk > 0 and ll > 0 else torch.tensor(0.0, dtype=torch.float64)
        return float(cross / denominator) if denominator > 0 else 0.0
    xc, yc = _centered(x), _centered(y)
    if n < max(xc.shape[1], yc.shape[1]):  # Gram form: n x n products are cheaper
        k, l = xc @ xc.T, yc @ yc.T
        cross, kk, ll = (k * l).sum(), (k * k).sum(), (l * l).sum()
    else:  # feature form: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)
        cross = ((yc.T @ xc) ** 2).sum()
        kk, ll = ((xc.T @ xc) ** 2).sum(), ((yc.T @ yc) ** 2).sum()
    if kk <= 0 or ll <= 0:
        return 0.0
    return float(cross / torch.sqrt(kk * ll))


def feature_matrix(features: Tensor, channels: Tensor | Sequence[int] | None = None,
                   pooled: bool = False) -> Tensor:
    """``(n, d)`` rows from a feature tensor: ``(n, C, H, W)`` maps or ``(n, C)`` vectors.

    Args:
        features: the features of n examples.
        channels: keep only these channels (index tensor, list or boolean mask), e.g. IE-KD's inheritance half.
        pooled: average maps over space first (``(n, C, H, W) -> (n, C)``).
    """
    if channels is not None:
        index = torch.as_tensor(channels, device=features.device)
        features = features[:, index] if index.dtype == torch.bool else features.index_select(1, index.long())
    if pooled and features.ndim > 2:
        features = features.mean(dim=tuple(range(2, features.ndim)))
    return features.reshape(features.shape[0], -1)


def _batches(data: Iterable[tuple[Tensor, Tensor]] | tuple[Tensor, Tensor], batch_size: int
             ) -> Iterable[tuple[Tensor, Tensor]]:
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Tensor):
        images, labels = data
        return [(images[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    return data


def collect_features(model: nn.Module, data: Iterable[tuple[Tensor, Tensor]] | tuple[Tensor, Tensor],
                     names: Sequence[str], batch_size: int = 256) -> dict[str, Tensor]:
    """Named features (``model.forward_features``) of every example, in eval mode and without gradients,
    concatenated on the CPU; key ``"labels"`` holds the labels. The model's mode is restored afterwards.

    ``data``: ``(images, labels)`` tensors or an iterable of such batches (e.g. a
    :class:`kdnb.data.TensorBatches` without shuffling), on the model's device.
    """
    training = model.training
    model.eval()
    collected: dict[str, list[Tensor]] = {name: [] for name in names}
    labels: list[Tensor] = []
    try:
        with torch.no_grad():
            for images, targets in _batches(data, batch_size):
                _, features = model.forward_features(images)
                for name in names:
                    if name not in features:
                        raise ValueError(f"{getattr(model, 'name', type(model).__name__)} has no feature {name!r}; "
                                         f"its features are: {', '.join(features)}")
                    collected[name].append(features[name].detach().cpu())
                labels.append(targets.detach().cpu())
    finally:
        model.train(training)
    result = {name: torch.cat(parts) for name, parts in collected.items()}
    result["labels"] = torch.cat(labels)
    return result


# ------------------------------------------------------------------------------------------------ active neurons
class ActiveSubspace(TypedDict):
    """Result of :func:`active_subspace` (a plain dict, so :func:`kdnb.cache.cached` can store it)."""

    count: int           # number of active neurons
    dim: int             # dimension d of the representation
    samples: int         # number n of gradients C was estimated from
    threshold: float     # τ
    eigenvalues: Tensor  # λ_1 >= ... (min(n, d) of them), float64


def active_subspace(gradients: Tensor, threshold: float = ACTIVE_THRESHOLD) -> ActiveSubspace:
    """Eigenvalues of :math:`C = \\frac{1}{n} G^\\top G` and the number of active directions: the smallest r
    with :math:`\\sum_{i > r} \\lambda_i \\le \\tau \\sum_i \\lambda_i` (module docstring; Cui et al. 2019).

    Args:
        gradients: ``(n, d)`` per-example gradients of the loss with respect to the representation (higher
            dimensions are flattened).
        threshold: τ in [0, 1).
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold τ must be in [0, 1); got {threshold}")
    g = gradients.reshape(gradients.shape[0], -1).to(torch.float64)
    n, d = g.shape
    eigenvalues = torch.linalg.svdvals(g / max(n, 1) ** 0.5) ** 2
    total = float(eigenvalues.sum())
    if total <= 0.0:
        count = 0
    else:
        # tail[r] = sum of eigenvalues after the first r; the count is the first r whose tail is small enough
        tail = total - torch.cumsum(eigenvalues, 0)
        tail = torch.cat([torch.tensor([total], dtype=torch.float64), tail])
        count = int(torch.nonzero(tail <= threshold * total + 1e-12 * total)[0])
    return {"count": count, "dim": d, "samples": n, "threshold": float(threshold), "eigenvalues": eigenvalues.cpu()}


def loss_gradients(head: Callable[[Tensor], Tensor], features: Tensor, labels: Tensor,
                   batch_size: int = 512) -> Tensor:
    """Per-example gradients :math:`\\nabla_h c(h)` of the cross-entropy of ``head(h)`` (logits) with the label,
    ``(n, *h.shape[1:])``. ``head`` must treat examples independently (eval mode), so the gradient of the summed
    loss is each example's own; ``head``'s parameters get no ``.grad``."""
    parts = []
    for start in range(0, features.shape[0], batch_size):
        h = features[start:start + batch_size].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(head(h), labels[start:start + batch_size].to(h.device), reduction="sum")
            (grad,) = torch.autograd.grad(loss, h)
        parts.append(grad.detach())
    return torch.cat(parts)


def representation_head(model: nn.Module, feature: str) -> Callable[[Tensor], Tensor]:
    """The rest of a global-pooling kdnb model after ``feature``, as a function of that feature: for
    ``"pooled"`` the classifier; for the last feature map L (the feature recorded just before ``"pooled"``) the average
    pooling and the classifier; for ``"L.pre"`` the ReLU, the pooling and the classifier (kdnb's convention:
    ``relu(L.pre) == L``). Other features have no such head here (ValueError)."""
    names = list(model.feature_names)
    if "pooled" not in names or names.index("pooled") == 0:
        raise ValueError(f"{model.name} has no global-pooling head (features: {', '.join(names)})")
    last = names[names.index("pooled") - 1]  # the map global pooling reads, as kdnb.explain.last_feature_map
    classifier = model.classifier
    if feature == "pooled":
        return classifier
    if feature == last:
        return lambda h: classifier(h.mean(dim=(2, 3)))
    if feature == f"{last}.pre" and f"{last}.pre" in model.feature_names:
        return lambda h: classifier(F.relu(h).mean(dim=(2, 3)))
    supported = ["pooled", last] + ([f"{last}.pre"] if f"{last}.pre" in model.feature_names else [])
    raise ValueError(f"no head from feature {feature!r}; choose one of: {', '.join(supported)}")


def active_neurons(model: nn.Module, data: Iterable[tuple[Tensor, Tensor]] | tuple[Tensor, Tensor],
                   feature: str = "pooled", channels: Tensor | Sequence[int] | None = None,
                   threshold: float = ACTIVE_THRESHOLD, batch_size: int = 256) -> ActiveSubspace:
    """Number of active neurons of ``feature`` (module docstring) over ``data`` (the test set), in eval mode.

    Args:
        model: a trained kdnb model with a global-pooling head.
        data: ``(images, labels)`` or an iterable of batches, on the model's device.
        feature: ``"pooled"`` (the penultimate vector, default), the last feature map, or its ``.pre``.
        channels: restrict the representation to these channels (e.g. IE-KD's inheritance channels): C is then
            the block of the full gradient covariance on those coordinates, the loss's sensitivity to them.
        threshold: τ.
    """
    head = representation_head(model, feature)
    training = model.training
    model.eval()
    try:
        features = collect_features(model, data, [feature], batch_size)
        device = next(model.parameters()).device
        grads = loss_gradients(head, features[feature].to(device), features["labels"].to(device), batch_size)
    finally:
        model.train(training)
    return active_subspace(feature_matrix(grads, channels), threshold)
