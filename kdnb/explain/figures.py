"""Figures of Part III's introspective learning: every class's explanation of an image with its cosine to the
ground-truth class's map and the soft target Eq. 6 makes of them (Gu et al. 2020, Fig. 1), and class × class
similarity matrices side by side (Fig. 2). Each function returns its ``Figure`` and never calls ``show``.

The rows of a Fig. 1-style figure are :class:`MapRow` s, built by :func:`map_rows` from maps the chapter computed
(``kdnb.explain.similarity.explain_images``) and targets from ``kdnb.distill.le_targets`` (Eq. 6 lives there
once; this module only draws). :func:`frame_drawer` makes the ``draw`` function of an explorer
(``kdnb.widgets.explorer``) out of the same rows: one frame per image and network.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor

from .similarity import cosine_to_truth


@dataclass
class MapRow:
    """One image as one network explains it: the image ``(C, H, W)``, the K class maps (``(K, h, w)`` at a
    layer, or ``(K, C, H, W)`` in input space), their cosines to the ground-truth class's map ``(K,)``, the Eq. 6
    target ``(K,)``, the true and predicted classes and the network's name."""

    image: Tensor
    maps: Tensor
    cosines: Tensor
    target: Tensor
    truth: int
    prediction: int
    network: str


def map_rows(images: Tensor, maps: Tensor, labels: Tensor, targets: Tensor, predictions: Tensor,
             network: str) -> list[MapRow]:
    """One :class:`MapRow` per image, the cosines computed from ``maps`` (``similarity.cosine_to_truth``)."""
    n = len(images)
    if not (len(maps) == len(labels) == len(targets) == len(predictions) == n):
        raise ValueError(f"images, maps, labels, targets and predictions must have one entry per image; got "
                         f"{n}, {len(maps)}, {len(labels)}, {len(targets)}, {len(predictions)}")
    cosines = cosine_to_truth(maps, labels)
    return [MapRow(images[i].detach().cpu(), maps[i].detach().cpu(), cosines[i], targets[i].detach().cpu(),
                   int(labels[i]), int(predictions[i]), network) for i in range(n)]


def _display_map(maps: Tensor, size: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """Maps as 2-D pictures at the image's size: a layer's maps upsampled (bilinear), input maps summed over
    channels. Returns ``(K, H, W)`` and whether the values are signed (input gradients) or not (Grad-CAM)."""
    if maps.dim() == 3:  # (K, h, w) at a layer
        shown = F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    elif maps.dim() == 4:  # (K, C, H, W) in input space
        shown = maps.float().sum(dim=1)
    else:
        raise ValueError(f"expected maps (K, h, w) or (K, C, H, W), got {tuple(maps.shape)}")
    return shown.numpy(), bool((maps < 0).any())


def class_maps_figure(rows: Sequence[MapRow], class_names: Sequence[str], title: str = "",
                      map_width: float = 0.95) -> Figure:
    """Fig. 1 analog: per row, the image, the map of every class (one colour scale per row; the cosine to the
    ground-truth class's map under each, the ground truth framed) and the soft target of Eq. 6 as bars."""
    if not rows:
        raise ValueError("no rows to draw")
    k = len(class_names)
    if any(len(r.maps) != k for r in rows):
        raise ValueError(f"every row needs {k} maps (one per class name)")
    fig, axes = plt.subplots(len(rows), k + 2, squeeze=False,
                             figsize=(map_width * (k + 1) + 2.6, 1.45 * len(rows) + 0.5),
                             gridspec_kw={"width_ratios": [1] * (k + 1) + [2.6 / map_width]})
    for r, row in enumerate(rows):
        picture = row.image.float().mean(dim=0).numpy()
        shown, signed = _display_map(row.maps, picture.shape)
        scale = float(np.abs(shown).max()) or 1.0
        ax = axes[r, 0]
        ax.imshow(picture, cmap="gray_r")
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_ylabel(f"{row.network}\n{class_names[row.truth]}", fontsize=8)
        ax.set_xlabel(f"pred: {class_names[row.prediction]}", fontsize=7)
        for c in range(k):
            ax = axes[r, c + 1]
            ax.imshow(picture, cmap="gray")
            if signed:
                ax.imshow(shown[c], cmap="RdBu_r", vmin=-scale, vmax=scale, alpha=0.75)
            else:
                ax.imshow(shown[c], cmap="inferno", vmin=0, vmax=scale, alpha=0.7)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_xlabel(f"{float(row.cosines[c]):+.2f}", fontsize=7, labelpad=1)
            if r == 0:
                ax.set_title(class_names[c], fontsize=7)
            if c == row.truth:
                for spine in ax.spines.values():
                    spine.set_edgecolor("tab:green"), spine.set_linewidth(2.5)
        ax = axes[r, k + 1]
        colours = ["tab:green" if c == row.truth else "tab:blue" for c in range(k)]
        ax.barh(range(k), row.target.numpy(), color=colours)
        ax.set_xscale("log")
        ax.set_xlim(min(float(row.target.min()) / 2, 1e-2), 1.0)
        ax.set_yticks(range(k), class_names, fontsize=6)
        ax.invert_yaxis()
        ax.tick_params(axis="x", labelsize=6)
        if r == 0:
            ax.set_title("Eq. 6 target (log)", fontsize=7)
    fig.suptitle(title or "class maps, cosine to the ground-truth class's map (framed), and the target they make",
                 fontsize=9)
    fig.tight_layout(pad=0.4, w_pad=0.2, h_pad=0.5)
    return fig


def frame_drawer(rows_by_network: Mapping[str, Sequence[MapRow]], class_names: Sequence[str],
                 map_width: float = 0.8) -> Callable[..., Figure]:
    """``draw(image=i, network=name)`` for ``kdnb.widgets.explorer``: the one-row Fig. 1 of image ``i`` (an index
    into each network's rows) as network ``name`` explains it."""
    counts = {name: len(rows) for name, rows in rows_by_network.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"every network needs the same images; rows per network: {counts}")

    def draw(image: int, network: str) -> Figure:
        if network not in rows_by_network:
            raise ValueError(f"unknown network {network!r}; choose one of: {', '.join(rows_by_network)}")
        row = rows_by_network[network][image]
        return class_maps_figure([row], class_names, map_width=map_width,
                                 title=f"{network}: maps of every class for this {class_names[row.truth]}")
    return draw


def similarity_heatmaps(matrices: Mapping[str, Tensor], class_names: Sequence[str], panel: float = 3.6,
                        diagonal: bool = False) -> Figure:
    """Class × class matrices side by side (rows: ground-truth class; columns: the other class), each with its
    own colour scale; the diagonal is left blank unless ``diagonal`` (1 for a similarity, the accuracy for a
    confusion matrix: it would set the colour scale and hide the off-diagonal structure)."""
    if not matrices:
        raise ValueError("no matrices to draw")
    fig, axes = plt.subplots(1, len(matrices), figsize=(panel * len(matrices) + 0.6, panel + 0.4), squeeze=False)
    k = len(class_names)
    mask = None if diagonal else np.eye(k, dtype=bool)
    for ax, (title, matrix) in zip(axes[0], matrices.items()):
        values = matrix.detach().cpu().float().numpy()
        if values.shape != (k, k):
            raise ValueError(f"{title!r}: a {values.shape} matrix for {k} classes")
        sns.heatmap(values, mask=mask, ax=ax, cmap="viridis", square=True, cbar_kws={"shrink": 0.7},
                    xticklabels=class_names, yticklabels=class_names)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=6)
        ax.set_xlabel("class k", fontsize=7)
        ax.set_ylabel("ground-truth class c", fontsize=7)
    fig.tight_layout()
    return fig


def short_names(class_names: Sequence[str]) -> list[str]:
    """Class names short enough for a column title (Fashion-MNIST's "T-shirt/top" → "T-shirt")."""
    return [str(name).split("/")[0] for name in class_names]


__all__ = ["MapRow", "map_rows", "class_maps_figure", "frame_drawer", "similarity_heatmaps", "short_names"]
