"""Figures of Part I's chapters I.1 and I.2 (Cheng et al., CVPR 2020, Figs. 2 and 5): cluttered samples with their
masks, entropy maps per layer, concept maps (cells with H̄ − H_g > b, Eq. 3) over the image, agreement of two
estimator modes, and the Table 2 comparison as a chart. Every function returns a matplotlib ``Figure``."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from .estimator import upsample

__all__ = ["samples_with_masks", "entropy_maps", "concept_maps", "mode_agreement_scatter", "concept_counts_chart"]


def _cells_to_pixels(cells: Tensor, size: int) -> np.ndarray:
    """A ``(grid, grid)`` map (bool or float) upsampled to ``size`` pixels as the estimator does (nearest)."""
    return upsample(torch.as_tensor(cells, dtype=torch.float32)[None], (size, size))[0, 0].numpy()


def _show_image(ax: Axes, image: Tensor) -> None:
    ax.imshow(torch.as_tensor(image).squeeze(0).float().numpy(), cmap="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def _outline(ax: Axes, mask: Tensor, size: int, color: str = "tab:orange") -> None:
    """The boundary of a (grid, grid) mask drawn as a contour over a ``size``-pixel image."""
    full = _cells_to_pixels(mask, size)
    if 0 < full.sum() < full.size:
        ax.contour(full, levels=[0.5], colors=[color], linewidths=1.2)


def samples_with_masks(images: Tensor, boxes: Tensor, silhouettes: Tensor, grid_masks: Tensor, grid: int,
                       titles: Sequence[str] = ()) -> Figure:
    """Cluttered samples (``images`` uint8 ``(n, 1, H, W)``) in three rows: the image with its box (``boxes``
    ``(n, 4)``: top, left, bottom, right), the silhouette, and the box on the estimator grid (``grid_masks``
    ``(n, grid, grid)``) with the grid lines — what the metrics call foreground."""
    n = images.shape[0]
    size = images.shape[-1]
    fig, axes = plt.subplots(3, n, figsize=(1.7 * n, 5.4), squeeze=False)
    for i in range(n):
        _show_image(axes[0, i], images[i])
        top, left, bottom, right = [int(v) for v in boxes[i]]
        axes[0, i].add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False,
                                       edgecolor="tab:orange", linewidth=1.2))
        if i < len(titles):
            axes[0, i].set_title(titles[i], fontsize=8)
        axes[1, i].imshow(silhouettes[i].float().numpy(), cmap="gray")
        axes[1, i].set_xticks([])
        axes[1, i].set_yticks([])
        _show_image(axes[2, i], images[i])
        axes[2, i].imshow(_cells_to_pixels(grid_masks[i], size), cmap="Oranges", alpha=0.45, vmin=0, vmax=1)
        for k in range(1, grid):
            axes[2, i].axhline(k * size / grid - 0.5, color="white", linewidth=0.3)
            axes[2, i].axvline(k * size / grid - 0.5, color="white", linewidth=0.3)
    for row, label in enumerate(("image + box", "silhouette", f"box on {grid}×{grid} grid")):
        axes[row, 0].set_ylabel(label, fontsize=8)
    fig.tight_layout()
    return fig


def entropy_maps(images: Tensor, maps: Mapping[str, Tensor], fg: Tensor, titles: Sequence[str] = (),
                 shared_scale: bool = True) -> Figure:
    """One row per image: the image, then one H map per entry of ``maps`` (``label → (n, grid, grid)``; dark =
    low entropy = information used), the foreground box outlined. ``shared_scale`` gives every map of a row the
    same colour range (the estimator pins each map's mean at the same value, so only contrasts compare)."""
    n, size = images.shape[0], images.shape[-1]
    cols = 1 + len(maps)
    fig, axes = plt.subplots(n, cols, figsize=(1.9 * cols, 1.9 * n + 0.3), squeeze=False)
    for i in range(n):
        _show_image(axes[i, 0], images[i])
        _outline(axes[i, 0], fg[i], size)
        if i < len(titles):
            axes[i, 0].set_ylabel(titles[i], fontsize=8)
        row = [torch.as_tensor(m[i]).float() for m in maps.values()]
        finite = torch.cat([r[torch.isfinite(r)] for r in row]) if shared_scale else None
        lo, hi = (float(finite.min()), float(finite.max())) if finite is not None and finite.numel() else (None, None)
        for j, (label, m) in enumerate(zip(maps, row), start=1):
            ax = axes[i, j]
            image = ax.imshow(_cells_to_pixels(m, size), cmap="viridis", vmin=lo, vmax=hi)
            _outline(ax, fg[i], size, "white")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(label, fontsize=9)
        fig.colorbar(image, ax=axes[i, 1:].tolist(), fraction=0.03, pad=0.02, label="H (nats)")
    return fig


def _overlay_concepts(ax: Axes, image: Tensor, concepts: Tensor, fg: Tensor) -> None:
    """Fig. 2/5 style: the image dimmed, concept cells on the foreground in red, on the background in blue."""
    size = image.shape[-1]
    _show_image(ax, image)
    concepts, fg = torch.as_tensor(concepts).bool(), torch.as_tensor(fg).bool()
    rgba = np.zeros((size, size, 4))
    on_fg = _cells_to_pixels(concepts & fg, size) > 0.5
    on_bg = _cells_to_pixels(concepts & ~fg, size) > 0.5
    rgba[on_fg] = (0.85, 0.1, 0.1, 0.6)
    rgba[on_bg] = (0.1, 0.3, 0.9, 0.6)
    ax.imshow(rgba)
    _outline(ax, fg, size, "tab:orange")


def concept_maps(images: Tensor, concepts: Mapping[str, Tensor], fg: Tensor, titles: Sequence[str] = ()) -> Figure:
    """Figs. 2 and 5 of the paper: one row per image, one column per network (``label → (n, grid, grid)`` bool
    concept maps); red cells are foreground concepts, blue ones background concepts, the box in orange."""
    n = images.shape[0]
    cols = 1 + len(concepts)
    fig, axes = plt.subplots(n, cols, figsize=(1.9 * cols, 1.9 * n + 0.3), squeeze=False)
    for i in range(n):
        _show_image(axes[i, 0], images[i])
        if i < len(titles):
            axes[i, 0].set_ylabel(titles[i], fontsize=8)
        for j, (label, maps) in enumerate(concepts.items(), start=1):
            _overlay_concepts(axes[i, j], images[i], maps[i], fg[i])
            if i == 0:
                axes[i, j].set_title(label, fontsize=9)
    axes[0, 0].set_title("image", fontsize=9)
    fig.tight_layout()
    return fig


def mode_agreement_scatter(reference: Tensor, other: Tensor, reference_label: str, other_label: str) -> Figure:
    """Cell-by-cell H of two estimator modes on the same images (each image's map centred on its mean, since
    every mode pins the mean entropy), with the diagonal."""
    a = torch.as_tensor(reference).double()
    c = torch.as_tensor(other).double()
    a = (a - a.nanmean(dim=(1, 2), keepdim=True)).flatten().numpy()
    c = (c - c.nanmean(dim=(1, 2), keepdim=True)).flatten().numpy()
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.scatter(a, c, s=6, alpha=0.5)
    ok = np.isfinite(a) & np.isfinite(c)
    if ok.any():
        lo, hi = float(min(a[ok].min(), c[ok].min())), float(max(a[ok].max(), c[ok].max()))
        ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1, linestyle="--")
    ax.set_xlabel(f"H − mean H, {reference_label}")
    ax.set_ylabel(f"H − mean H, {other_label}")
    fig.tight_layout()
    return fig


def concept_counts_chart(summary: pd.DataFrame, columns: Sequence[str] = ("n_fg", "n_bg", "ratio"),
                         network_order: Sequence[str] = ("teacher", "student", "baseline")) -> Figure:
    """Table 2 as bars: per (architecture, layer) group, the mean of each metric per network with the per-image
    std as error bar. ``summary`` rows come from :func:`kdnb.concepts.summaries.summary_row` with ``arch``,
    ``layer`` and ``network`` labels."""
    groups = list(dict.fromkeys(zip(summary["arch"], summary["layer"])))
    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.4), squeeze=False)
    width = 0.8 / len(network_order)
    x = np.arange(len(groups))
    for ax, column in zip(axes[0], columns):
        for k, network in enumerate(network_order):
            rows = [summary[(summary.arch == a) & (summary.layer == l) & (summary.network == network)]
                    for a, l in groups]
            means = [float(r[column].iloc[0]) if len(r) else np.nan for r in rows]
            stds = [float(r[f"{column}_std"].iloc[0]) if len(r) else np.nan for r in rows]
            ax.bar(x + (k - (len(network_order) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
                   label=network)
        ax.set_xticks(x, [f"{a}\n{l}" for a, l in groups], fontsize=7)
        ax.set_title({"n_fg": "N_fg (foreground concepts)", "n_bg": "N_bg (background concepts)",
                      "ratio": "λ = E[N_fg / (N_fg + N_bg)]"}.get(column, column), fontsize=9)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig
