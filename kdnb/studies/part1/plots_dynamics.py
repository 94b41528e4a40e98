"""Figures of Part I's chapters on learning dynamics (I.3, Hypothesis 2; I.4, Hypothesis 3 and Table 3).

Each function returns its ``Figure`` (or a pandas ``Styler``) and never calls ``show``. The frames they draw come
from :mod:`kdnb.studies.part1.dynamics`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .dynamics import METRICS, NETWORKS, Trajectory, UnionSets

PALETTE = {"student": "#1b7837", "baseline": "#762a83"}


def _grey(image: torch.Tensor) -> np.ndarray:
    """An image ``(C, H, W)`` as a 2-D array for ``imshow`` (the channel mean; the colour scale is the image's)."""
    return image.detach().float().cpu().mean(dim=0).numpy()


def _overlay(ax, image: torch.Tensor, cells: np.ndarray, cmap, vmax: float, title: str = "") -> None:
    """``image`` in grey with grid ``cells`` (a 2-D array, NaN = transparent) over it, cell for cell."""
    height, width = image.shape[-2:]
    ax.imshow(_grey(image), cmap="gray", extent=(0, width, height, 0), interpolation="nearest")
    ax.imshow(np.ma.masked_invalid(cells), cmap=cmap, vmin=0, vmax=vmax, alpha=0.7, extent=(0, width, height, 0),
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize="small")


def _box(ax, fg: torch.Tensor, image: torch.Tensor) -> None:
    """The foreground cells' outline (their bounding box) on ``ax``."""
    rows, cols = torch.nonzero(fg, as_tuple=True)
    if not len(rows):
        return
    g = fg.shape[-1]
    height, width = image.shape[-2:]
    y0, y1 = rows.min().item() * height / g, (rows.max().item() + 1) * height / g
    x0, x1 = cols.min().item() * width / g, (cols.max().item() + 1) * width / g
    ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="#fdb863", lw=1.2, ls="--"))


def concept_curves(curves: pd.DataFrame, x: str = "weight distance", y: str = "N_fg") -> Figure:
    """``y`` (foreground concepts) against ``x`` (the cumulative weight distance, or ``"epoch"``) for the student
    and the baseline: one panel per architecture (columns) and layer (rows), the mean over probe images as a
    line, ± one standard deviation over images as a band."""
    architectures = list(dict.fromkeys(curves["architecture"]))
    layers = list(dict.fromkeys(curves["layer"]))
    fig, axes = plt.subplots(len(layers), len(architectures), figsize=(3.4 * len(architectures) + 0.6,
                                                                         2.5 * len(layers) + 0.5),
                             squeeze=False, sharey=True)
    for i, layer in enumerate(layers):
        for j, arch in enumerate(architectures):
            ax = axes[i][j]
            part = curves[(curves.architecture == arch) & (curves.layer == layer)]
            for network in NETWORKS:
                rows = part[part.network == network]
                if rows.empty:
                    continue
                stats = rows.groupby("checkpoint").agg(x=(x, "mean"), mean=(y, "mean"), sd=(y, "std")).fillna(0)
                ax.plot(stats.x, stats["mean"], marker="o", ms=3, color=PALETTE[network], label=network)
                ax.fill_between(stats.x, stats["mean"] - stats.sd, stats["mean"] + stats.sd, color=PALETTE[network],
                                alpha=0.15, lw=0)
            ax.set_title(f"{arch} · {layer}", fontsize="small")
            ax.set_xlabel(x if i == len(layers) - 1 else "")
            ax.set_ylabel(y if j == 0 else "")
    axes[0][-1].legend(fontsize="small")
    fig.tight_layout()
    return fig


def distance_at_peak(peaks: pd.DataFrame, y: str = "distance at m̂") -> Figure:
    """Each probe image's weight distance at m̂ (the first checkpoint with most foreground concepts) — or another
    column ``y`` of :func:`~kdnb.studies.part1.dynamics.peaks_frame`, such as ``"share of the path at m̂"`` (the H2
    control) — student vs baseline, one panel per architecture, layers along x, every image of every seed a dot:
    the spread of the dots is what D_std measures, their mean (a bar) D_mean."""
    architectures = list(dict.fromkeys(peaks["architecture"]))
    fig, axes = plt.subplots(1, len(architectures), figsize=(3.6 * len(architectures) + 0.6, 3.4), squeeze=False)
    for ax, arch in zip(axes[0], architectures):
        part = peaks[peaks.architecture == arch]
        sns.stripplot(part, x="layer", y=y, hue="network", hue_order=list(NETWORKS), dodge=True,
                      palette=PALETTE, size=3, alpha=0.6, ax=ax, legend=ax is axes[0][-1])
        sns.pointplot(part, x="layer", y=y, hue="network", hue_order=list(NETWORKS), dodge=0.4,
                      palette=PALETTE, errorbar=None, markers="_", markersize=18, linestyle="none", ax=ax,
                      legend=False)
        ax.set_title(arch, fontsize="small")
        ax.set_ylabel(y if ax is axes[0][0] else "")
    fig.tight_layout()
    return fig


def concepts_at_checkpoint(images: torch.Tensor, trajectories: Mapping[str, Trajectory], checkpoint: int,
                           shown: Sequence[int], title: str = "") -> Figure:
    """The concept cells (colour) of each network in ``trajectories`` (``{"student": …, "baseline": …}``) at
    checkpoint index ``checkpoint``, over the probe images ``shown`` (columns), the foreground box dashed."""
    networks = [n for n in NETWORKS if n in trajectories]
    fig, axes = plt.subplots(len(networks), len(shown), figsize=(1.6 * len(shown) + 0.4, 1.8 * len(networks) + 0.4),
                             squeeze=False)
    for i, network in enumerate(networks):
        t = trajectories[network]
        counts = t.n_fg[:, checkpoint]
        for j, index in enumerate(shown):
            cells = np.where(t.concepts[index, checkpoint].numpy(), 1.0, np.nan)
            cmap = ListedColormap([PALETTE[network]])
            _overlay(axes[i][j], images[index], cells, cmap, 1.0, f"{network}: N_fg={int(counts[index])}")
            _box(axes[i][j], t.fg[index], images[index])
    epoch = next(iter(trajectories.values())).epochs[checkpoint]
    fig.suptitle(title or f"concepts at epoch {epoch:g}", fontsize="medium")
    fig.tight_layout()
    return fig


def union_sets_figure(image: torch.Tensor, trajectories: Mapping[str, Trajectory], sets: Mapping[str, UnionSets],
                      index: int, checkpoints: Sequence[int] | None = None) -> Figure:
    """Fig. 4's picture for one probe image: per network (rows), its foreground concepts at a few checkpoints,
    then the union over all checkpoints, kept (in S_M) or discarded (tried, then dropped: the detours)."""
    networks = [n for n in NETWORKS if n in trajectories]
    first = trajectories[networks[0]]
    K = len(first.epochs)
    picks = list(checkpoints) if checkpoints is not None else sorted(set(np.linspace(0, K - 1, min(K, 4)).round()
                                                                           .astype(int).tolist()))
    fig, axes = plt.subplots(len(networks), len(picks) + 1, figsize=(1.7 * (len(picks) + 1) + 0.6,
                                                                    1.9 * len(networks) + 0.5), squeeze=False)
    kept_discarded = ListedColormap(["#2166ac", "#d6604d"])
    for i, network in enumerate(networks):
        t, s = trajectories[network], sets[network]
        for j, k in enumerate(picks):
            cells = np.where((t.concepts[index, k] & t.fg[index]).numpy(), 1.0, np.nan)
            _overlay(axes[i][j], image, cells, ListedColormap([PALETTE[network]]), 1.0,
                     f"{network}, epoch {t.epochs[k]:g}")
            _box(axes[i][j], t.fg[index], image)
        union = np.full(s.union[index].shape, np.nan)
        union[s.final[index].numpy()] = 0.0
        union[s.discarded[index].numpy()] = 1.0
        kept, tried = int(s.final[index].sum()), int(s.union[index].sum())
        rho = f"{kept / tried:.2f}" if tried else "—"
        _overlay(axes[i][-1], image, union, kept_discarded, 1.0, f"union: {kept}/{tried} kept, ρ={rho}")
        _box(axes[i][-1], t.fg[index], image)
    fig.legend(handles=[Patch(color="#2166ac", label="kept (S_M)"), Patch(color="#d6604d", label="discarded")],
               loc="lower center", ncols=2, fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def rho_by_cell(stability: pd.DataFrame) -> Figure:
    """Each probe image's ρ (kept / tried foreground concepts), student vs baseline, one panel per architecture,
    layers along x; images that never had a foreground concept have no ρ and are not drawn."""
    frame = stability.dropna(subset=["rho"])
    architectures = list(dict.fromkeys(stability["architecture"]))
    fig, axes = plt.subplots(1, len(architectures), figsize=(3.6 * len(architectures) + 0.6, 3.2), squeeze=False,
                             sharey=True)
    for ax, arch in zip(axes[0], architectures):
        part = frame[frame.architecture == arch]
        if part.empty:
            ax.set_title(f"{arch}: no image with a foreground concept", fontsize="small")
            continue
        sns.boxplot(part, x="layer", y="rho", hue="network", hue_order=list(NETWORKS), palette=PALETTE, ax=ax,
                    fliersize=2, legend=ax is axes[0][-1])
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(arch, fontsize="small")
        ax.set_ylabel("ρ per image" if ax is axes[0][0] else "")
    fig.tight_layout()
    return fig


def win_grid(decided: pd.DataFrame, title: str = "") -> Figure:
    """Table 3's verdict cells at a glance: rows architecture · layer, columns the six metrics, coloured by who
    is better — student (S), baseline (B), tie, or n/a (a :func:`~kdnb.studies.part1.dynamics.wins` frame), or, for a
    :class:`~kdnb.studies.part1.dynamics.Family` table (a ``decision`` column), by the Holm decision: S (significantly
    for the student), B (against), ``·`` (undecided); cells left out of the tally stay blank."""
    order = {"S": 0, "B": 1, "tie": 2, "·": 2, "n/a": 3}
    labels = [m.label for m in METRICS]
    if "decision" in decided.columns:
        decided = decided.assign(winner=decided.decision.map({"for": "S", "against": "B", "undecided": "·"}))
    rows = list(dict.fromkeys(zip(decided.architecture, decided.layer)))
    if not rows:  # every cell left out of the tally: say so instead of drawing an empty grid
        fig, ax = plt.subplots(figsize=(1.0 * len(labels) + 2.2, 1.3))
        ax.axis("off")
        ax.text(0.5, 0.5, "no comparison in the tally", ha="center", va="center", fontsize="small")
        ax.set_title(title, fontsize="medium")
        return fig
    grid = np.full((len(rows), len(labels)), 3)
    text = np.full((len(rows), len(labels)), "", dtype=object)
    for r in decided.itertuples():
        i, j = rows.index((r.architecture, r.layer)), labels.index(r.label)
        grid[i, j] = order[r.winner]
        text[i, j] = r.winner
    fig, ax = plt.subplots(figsize=(1.0 * len(labels) + 2.2, 0.38 * len(rows) + 1.3))
    cmap = ListedColormap([PALETTE["student"], PALETTE["baseline"], "#d9d9d9", "#f7f7f7"])
    ax.imshow(grid, cmap=cmap, vmin=0, vmax=3, aspect="auto")
    ax.grid(False)
    for i in range(len(rows)):
        for j in range(len(labels)):
            ax.text(j, i, text[i, j], ha="center", va="center", fontsize="small",
                    color="white" if grid[i, j] < 2 else "black")
    ax.set_xticks(range(len(labels)), labels, fontsize="small")
    ax.set_yticks(range(len(rows)), [f"{a} · {l}" for a, l in rows], fontsize="small")
    ax.set_title(title, fontsize="medium")
    fig.tight_layout()
    return fig


def style_table3(values: pd.DataFrame, better: pd.DataFrame, digits: int = 2):
    """Table 3 as the paper prints it: numbers with ``digits`` decimals, the better of S and B in bold."""
    return (values.style.format(precision=digits, na_rep="—")
            .apply(lambda _: better.map(lambda b: "font-weight: bold" if b else ""), axis=None))


def compact_png(fig: Figure, dpi: int = 72, colors: int = 64) -> bytes:
    """``fig`` as a palette PNG of at most ``colors`` colours (closed afterwards): explorer frames of noisy,
    cluttered images are 3–4× smaller than full-colour PNGs and look the same at this size."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    buffer.seek(0)
    image = Image.open(buffer).convert("RGB").quantize(colors=colors, dither=Image.Dither.NONE)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()
