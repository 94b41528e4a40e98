"""Part I (Cheng et al., CVPR 2020): the input conditional-entropy estimator and the concept metrics.

- :func:`estimate_entropy` — σ and H maps ``(N, grid, grid)`` for any feature callable, ``"faithful"`` (the
  released code's early-stopped SGD path), ``"converged"`` (the optimum at the same mean entropy) or
  ``"linearised"`` (a proxy from a few vector–Jacobian products, predicting either);
  :func:`feature_fn` makes the callable from a model's named feature; :func:`run_entropy` computes them for a
  trained run's checkpoint through the analysis cache.
- Metrics: :func:`background_baseline` (H̄), :func:`count_concepts` (N_fg, N_bg), :func:`lambda_ratio` (λ),
  :func:`learning_speed` (D_mean, D_var; std beside), :func:`weight_distance`, :func:`stability` (ρ),
  :func:`effect_images` (the released image filter).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .estimator import (HALF_LOG_2PI_E, MODES, EntropyResult, entropy_of, estimate_entropy, feature_fn,
                        sigma_at, strict_fp32, upsample)
from .metrics import (LearningSpeed, background_baseline, concept_map, count_concepts, effect_images,
                      lambda_ratio, learning_speed, stability, weight_distance)

__all__ = ["estimate_entropy", "EntropyResult", "feature_fn", "run_entropy", "entropy_of", "sigma_at", "upsample",
           "strict_fp32", "HALF_LOG_2PI_E", "MODES", "background_baseline", "concept_map", "count_concepts",
           "lambda_ratio", "learning_speed", "LearningSpeed", "weight_distance", "stability", "effect_images",
           "ESTIMATOR_VERSION"]

# Bump when a change to the estimator changes its results: cached maps are recomputed. 2: the converged mode's
# variance reduction (control variate, σ²-weighted averaging, trust region).
ESTIMATOR_VERSION = 2


def run_entropy(run: Any, feature: str, images: Tensor, grid: int, epoch: float | None = None,
                network: str = "student", mode: str = "faithful", root: Any = None, **options: Any) -> EntropyResult:
    """:func:`estimate_entropy` of ``run``'s ``network`` (``"student"``, or one the method evaluates) at
    checkpoint ``epoch`` (``None``: final weights), feature ``feature``, kept in the analysis cache
    (:func:`kdnb.cache.cached`, name ``"concept_entropy"``): keyed by the run, the network, epoch, feature,
    the images' bytes, grid, mode and every option except ``device``."""
    from .. import cache

    def compute() -> dict:
        net = run.network(network, epoch=epoch) if network != "student" else run.model(epoch=epoch)
        return estimate_entropy(feature_fn(net, feature), images, grid, mode=mode, **options).to_dict()

    key_options = {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in options.items()
                   if k != "device"}
    args = {"network": network, "epoch": epoch, "feature": feature, "images": images.detach().cpu().float(),
            "grid": grid, "mode": mode, "options": key_options}
    return EntropyResult.from_dict(cache.cached("concept_entropy", compute, runs=[run], args=args,
                                                version=ESTIMATOR_VERSION, root=root))
