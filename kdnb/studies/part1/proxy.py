"""Part I's check of the linearised proxy (chapter I.1): does it reproduce the released (faithful) estimator at
every architecture and FC layer where the later chapters use it?

- :func:`validate_proxy` — per architecture and layer, the agreement of the two modes' maps on the validation
  images (Spearman's ρ of the H maps, the IoU of the concept sets; :func:`kdnb.concepts.summaries.mode_agreement`)
  with its spread over images, and the trust rule;
- :func:`proxy_verdict` — the claim "the proxy reproduces the faithful estimator wherever it is used".

The rule, fixed before looking at numbers: at least :data:`MIN_IMAGES` images, mean ρ ≥ ``rho_min`` (0.7) and
mean IoU ≥ ``iou_min`` (0.5).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from torch import Tensor

from ...analysis import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED
from ...concepts.estimator import EntropyResult
from ...concepts.summaries import mode_agreement

__all__ = ["MIN_IMAGES", "RHO_MIN", "IOU_MIN", "validate_proxy", "proxy_verdict"]

MIN_IMAGES = 3  # the trust rule needs at least this many images with both modes
RHO_MIN, IOU_MIN = 0.7, 0.5  # the rule's thresholds on the mean Spearman ρ and the mean concept IoU


def validate_proxy(teachers: Mapping[str, Any], maps: Callable[[Any, str, str], EntropyResult],
                   layers: Sequence[str], fg: Tensor, b: Mapping[str, float], rho_min: float = RHO_MIN,
                   iou_min: float = IOU_MIN) -> pd.DataFrame:
    """The linearised proxy against the faithful estimator at every architecture (``teachers``: ``{arch: run}``)
    and layer: ``maps(run, layer, mode)`` gives the entropy maps of the validation images (foreground ``fg``,
    threshold ``b[arch]``). One row per (architecture, layer): ``images``, the mean, standard deviation and
    minimum over images of Spearman's ρ between the two maps, the mean and standard deviation of the concept
    sets' IoU (over images where either set is non-empty), the concepts per image of each mode, and
    ``trusted`` — the rule: at least :data:`MIN_IMAGES` images, mean ρ ≥ ``rho_min`` and mean IoU ≥
    ``iou_min``."""
    rows = []
    for arch, run in teachers.items():
        for layer in layers:
            agreement = mode_agreement(maps(run, layer, "faithful"), maps(run, layer, "linearised"), fg, b[arch])
            spearman, iou = agreement.spearman.to_numpy(float), agreement.iou.to_numpy(float)
            s, i = spearman[np.isfinite(spearman)], iou[np.isfinite(iou)]
            row = {"architecture": arch, "layer": layer, "images": len(agreement),
                   "spearman_mean": float(s.mean()) if len(s) else math.nan,
                   "spearman_std": float(s.std(ddof=1)) if len(s) > 1 else math.nan,
                   "spearman_min": float(s.min()) if len(s) else math.nan,
                   "iou_mean": float(i.mean()) if len(i) else math.nan,
                   "iou_std": float(i.std(ddof=1)) if len(i) > 1 else math.nan,
                   "concepts per image": f"{agreement.concepts_reference.mean():.1f} vs "
                                         f"{agreement.concepts_other.mean():.1f}"}
            row["trusted"] = bool(len(agreement) >= MIN_IMAGES and row["spearman_mean"] >= rho_min
                                  and row["iou_mean"] >= iou_min)
            rows.append(row)
    return pd.DataFrame(rows)


def proxy_verdict(validation: pd.DataFrame) -> str:
    """The claim "the proxy reproduces the faithful estimator wherever it is used": *reproduced* when the trust
    rule holds at every architecture and layer of ``validation`` (:func:`validate_proxy`), *not reproduced* when
    it fails at one, *inconclusive* when fewer than :data:`MIN_IMAGES` images were compared."""
    if validation.empty or int(validation.images.min()) < MIN_IMAGES:
        return INCONCLUSIVE
    return REPRODUCED if bool(validation.trusted.all()) else NOT_REPRODUCED
