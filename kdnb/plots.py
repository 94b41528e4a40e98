"""Figures used by the chapters (seaborn on matplotlib). Each returns its ``Figure`` and never calls ``show``."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure

from .distill import soft_targets as softmax_at


def soft_targets_frame(logits: torch.Tensor, temperatures: Sequence[float],
                       class_names: Sequence[str]) -> pd.DataFrame:
    """Long table (temperature, class, probability) of :math:`\\sigma(z/T)` for one logit vector."""
    rows = []
    for t in temperatures:
        probs = softmax_at(logits.detach().float().cpu(), t).numpy()
        rows += [{"T": f"T={t:g}", "class": name, "probability": float(p)} for name, p in zip(class_names, probs)]
    return pd.DataFrame(rows)


def soft_targets(logits: torch.Tensor, temperatures: Sequence[float], class_names: Sequence[str],
                 image: torch.Tensor | None = None, title: str = "", ax_width: float = 9.0) -> Figure:
    """The teacher's soft targets for one image at several temperatures (bars), with the image beside them."""
    frame = soft_targets_frame(logits, temperatures, class_names)
    if image is not None:
        fig, (ax_img, ax) = plt.subplots(1, 2, figsize=(ax_width + 2.2, 3.6),
                                         gridspec_kw={"width_ratios": [1, 4.5]})
        ax_img.imshow(image.squeeze().cpu().numpy(), cmap="gray_r")
        ax_img.set_axis_off()
    else:
        fig, ax = plt.subplots(figsize=(ax_width, 3.6))
    sns.barplot(frame, x="class", y="probability", hue="T", ax=ax, palette="flare")
    ax.set_ylim(0, 1)
    ax.set_xlabel("")
    ax.tick_params(axis="x", rotation=35)
    ax.legend(title="temperature", fontsize="small", ncols=len(temperatures))
    ax.set_title(title)
    fig.tight_layout()
    return fig


def entropy_by_temperature(logits: torch.Tensor, temperatures: Sequence[float]) -> Figure:
    """Mean entropy (bits) of :math:`\\sigma(z/T)` over a batch of logits, against T (log axis)."""
    rows = []
    for t in temperatures:
        p = softmax_at(logits.detach().float().cpu(), t)
        entropy = -(p * torch.log2(p.clamp_min(1e-12))).sum(1)
        rows += [{"T": t, "entropy (bits)": float(e)} for e in entropy]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    sns.lineplot(pd.DataFrame(rows), x="T", y="entropy (bits)", errorbar="sd", marker="o", ax=ax)
    ax.axhline(np.log2(logits.shape[1]), ls="--", c="gray", lw=1)
    ax.annotate("uniform", (temperatures[0], np.log2(logits.shape[1])), va="bottom", color="gray")
    ax.set_xscale("log")
    fig.tight_layout()
    return fig


def accuracy_by_method(frame: pd.DataFrame, x: str = "method", y: str = "test accuracy (%)",
                       title: str = "") -> Figure:
    """One dot per seed and the mean ± std per method."""
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    sns.stripplot(frame, x=x, y=y, hue=x, ax=ax, size=7, alpha=0.7, legend=False, jitter=0.08)
    sns.pointplot(frame, x=x, y=y, ax=ax, errorbar="sd", color="black", markers="_", linestyles="none",
                  capsize=0.15)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def learning_curves(history: pd.DataFrame, y: str = "test_acc", hue: str = "method",
                    ylabel: str = "test accuracy") -> Figure:
    """Per-epoch curves, one band (mean ± std over seeds) per ``hue`` value."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    sns.lineplot(history, x="epoch", y=y, hue=hue, errorbar="sd", marker="o", ax=ax)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    return fig


def examples(images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], per_class: int = 1) -> Figure:
    """A row of example images, ``per_class`` per class, titled with their class."""
    picks = [int(i) for c in range(len(class_names)) for i in torch.nonzero(labels == c).flatten()[:per_class]]
    fig, axes = plt.subplots(per_class, len(class_names), figsize=(1.2 * len(class_names), 1.35 * per_class),
                             squeeze=False)
    for ax, i in zip(axes.T.flatten(), picks):
        ax.imshow(images[i].squeeze().cpu().numpy(), cmap="gray_r")
        ax.set_title(class_names[int(labels[i])], fontsize=8)
        ax.set_axis_off()
    fig.tight_layout()
    return fig
