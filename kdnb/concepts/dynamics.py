"""How concepts come and go during training: Hypotheses 2 and 3 of Cheng et al. (CVPR 2020, §3.3–3.4) and the
Table 3 comparison of a student with its baseline.

One network's concept maps on the probe images at every checkpoint make a :class:`Trajectory` (built by
:func:`trajectory` from the entropy maps ``(images, checkpoints, g, g)``, the foreground mask and the cumulative
weight distance at each checkpoint). From it:

- N_fg and N_bg per image and checkpoint (Eq. 3), with H̄ recomputed at every checkpoint (dataset-level, as the
  released code does);
- the learning speed D_mean, D_var (Eq. 4; the paper's "D_std" is a variance) and its square root D_std,
  from the weight distance at m̂, the first checkpoint with most foreground concepts;
- ρ (Eq. 5) on foreground concepts, and the sets behind it (:func:`union_sets`, the style of Fig. 4).

Several trajectories, keyed ``(architecture, layer, network)`` with ``network`` ``"student"`` or ``"baseline"``,
become long frames (:func:`curves_frame`, :func:`peaks_frame`), one row of Table 3's metrics per key
(:func:`metrics_frame`), the table in the paper's layout (:func:`table3`), the student-vs-baseline winner of
every cell (:func:`wins`) and, per hypothesis, the win counts with a sign-test verdict (:func:`win_counts`).
:data:`PAPER_TABLE3_CUB` holds the paper's own CUB-200-2011 columns of Table 3, so the same counts can be made
of the paper's numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import pandas as pd
import torch
from scipy import stats
from torch import Tensor

from ..analysis import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED
from .metrics import (LearningSpeed, background_baseline, concept_map, count_concepts, lambda_ratio,
                      learning_speed, stability)

__all__ = ["Metric", "METRICS", "HYPOTHESES", "NETWORKS", "Trajectory", "trajectory", "UnionSets", "union_sets",
           "curves_frame", "peaks_frame", "stability_frame", "metrics_frame", "table3", "wins", "win_counts",
           "sign_test", "measure", "measure_all", "PAPER_TABLE3_CUB", "PAPER_ANALOG", "paper_metrics_frame"]

NETWORKS = ("student", "baseline")  # Table 3's S and B rows
_SHORT = {"student": "S", "baseline": "B"}


@dataclass(frozen=True)
class Metric:
    """One column of Table 3: its key in :func:`metrics_frame`, its label, which direction is better for
    the student (``+1`` higher, ``-1`` lower) and the hypothesis it tests."""

    key: str
    label: str
    better: int
    hypothesis: str


METRICS = (Metric("n_fg", "N_fg ↑", +1, "H1"), Metric("n_bg", "N_bg ↓", -1, "H1"), Metric("lambda", "λ ↑", +1, "H1"),
           Metric("d_mean", "D_mean ↓", -1, "H2"), Metric("d_std", "D_std ↓", -1, "H2"),
           Metric("rho", "ρ ↑", +1, "H3"))
HYPOTHESES = {"H1": "more foreground concepts, fewer background ones, larger λ (Eq. 3)",
              "H2": "concepts learned quickly and simultaneously: smaller D_mean and D_std (Eq. 4)",
              "H3": "fewer detours: larger ρ (Eq. 5)"}


# ------------------------------------------------------------------------------------------ one network
@dataclass(frozen=True)
class Trajectory:
    """One network's concepts on the probe images over its checkpoints.

    ``epochs`` ``(K,)`` checkpoint epochs; ``distance`` ``(K,)`` the cumulative weight distance
    Σ‖w_k − w_{k−1}‖/‖w_0‖ there; ``baseline`` ``(K,)`` H̄ at each checkpoint; ``concepts`` bool
    ``(N, K, g, g)``; ``fg`` bool ``(N, g, g)``. The last checkpoint is the final network g_M.
    """

    epochs: tuple[float, ...]
    distance: Tensor
    baseline: Tensor
    concepts: Tensor
    fg: Tensor

    @property
    def n_fg(self) -> Tensor:
        """``(N, K)`` foreground concepts per image and checkpoint (Eq. 3)."""
        return (self.concepts & self.fg[:, None]).sum(dim=(-2, -1))

    @property
    def n_bg(self) -> Tensor:
        """``(N, K)`` background concepts per image and checkpoint (Eq. 3)."""
        return (self.concepts & ~self.fg[:, None]).sum(dim=(-2, -1))

    def speed(self) -> LearningSpeed:
        """D_mean, D_var (Eq. 4) from the first checkpoint of most foreground concepts, per image."""
        return learning_speed(self.n_fg, self.distance)

    def rho(self, per_image: bool = False) -> Tensor:
        """ρ = |S_M| / |∪_j S_j| on foreground concepts (Eq. 5), averaged over the images that have any."""
        return stability(self.concepts, mask=self.fg, per_image=per_image)

    def summary(self) -> dict[str, float]:
        """Table 3's metrics for this network: N_fg, N_bg, λ of the final network (means over images), D_mean,
        D_var and D_std = √D_var, ρ, and how many images took part."""
        n_fg, n_bg = self.n_fg[:, -1], self.n_bg[:, -1]
        speed = self.speed()
        return {"n_fg": float(n_fg.double().mean()), "n_bg": float(n_bg.double().mean()),
                "lambda": float(lambda_ratio(n_fg, n_bg)), "d_mean": speed.mean, "d_var": speed.var,
                "d_std": speed.std, "rho": float(self.rho()), "images": int(self.concepts.shape[0])}


def trajectory(entropy: Tensor, fg: Tensor, epochs: Sequence[float], distance: Tensor | Sequence[float],
               b: float = 0.2) -> Trajectory:
    """A :class:`Trajectory` from entropy maps ``(N, K, g, g)`` at the K checkpoints ``epochs`` (increasing),
    the foreground mask ``(N, g, g)`` or ``(g, g)``, the cumulative weight distance ``(K,)`` and the threshold
    ``b`` (a concept: H̄ − H_g > b, H̄ the dataset-level mean background entropy of that checkpoint)."""
    entropy = torch.as_tensor(entropy, dtype=torch.float64)
    if entropy.dim() != 4:
        raise ValueError(f"entropy must be (images, checkpoints, g, g); got shape {tuple(entropy.shape)}")
    epochs = tuple(float(e) for e in epochs)
    distance = torch.as_tensor(distance, dtype=torch.float64).flatten()
    if not len(epochs) == len(distance) == entropy.shape[1]:
        raise ValueError(f"{entropy.shape[1]} checkpoints of entropy maps, {len(epochs)} epochs and "
                         f"{len(distance)} distances: they must agree")
    if any(b2 <= a for a, b2 in zip(epochs, epochs[1:])):
        raise ValueError(f"checkpoint epochs must increase: {list(epochs)}")
    fg = torch.as_tensor(fg).to(torch.bool)
    if fg.dim() == 2:
        fg = fg.expand(entropy.shape[0], *fg.shape)
    if fg.shape != (entropy.shape[0], *entropy.shape[-2:]):
        raise ValueError(f"fg of shape {tuple(fg.shape)} does not fit entropy maps {tuple(entropy.shape)}")
    baseline = background_baseline(entropy, fg)
    concepts = concept_map(entropy, baseline, b)
    return Trajectory(epochs, distance, baseline, concepts, fg.clone())


# --------------------------------------------------------------------------------------- Fig. 4's sets
@dataclass(frozen=True)
class UnionSets:
    """Per image, the concept sets behind ρ (Fig. 4), each bool ``(N, g, g)``: ``final`` S_M (the final
    network's concepts, the black box), ``union`` ∪_j S_j (every concept tried, the green box), ``discarded``
    = union \\ final (the detours); ``first_seen`` ``(N, g, g)`` the first checkpoint index at which a cell was a
    concept (−1: never)."""

    final: Tensor
    union: Tensor
    discarded: Tensor
    first_seen: Tensor

    def sizes(self) -> pd.DataFrame:
        """One row per image: |S_M|, |∪ S_j|, discarded, ρ (NaN where the union is empty)."""
        final = self.final.sum(dim=(-2, -1)).tolist()
        union = self.union.sum(dim=(-2, -1)).tolist()
        return pd.DataFrame({"image": range(len(final)), "final": final, "union": union,
                             "discarded": [u - f for f, u in zip(final, union)],
                             "rho": [f / u if u else math.nan for f, u in zip(final, union)]})


def union_sets(concepts: Tensor, mask: Tensor | None = None) -> UnionSets:
    """The sets of Eq. 5 from bool concept maps ``(N, K, g, g)`` (K checkpoints, the last one final), restricted
    to ``mask`` (``(N, g, g)`` or ``(g, g)``; the paper uses the foreground) when given."""
    concepts = torch.as_tensor(concepts).to(torch.bool)
    if concepts.dim() != 4:
        raise ValueError(f"concepts must be (images, checkpoints, g, g); got shape {tuple(concepts.shape)}")
    if mask is not None:
        mask = torch.as_tensor(mask).to(torch.bool)
        if mask.dim() == 2:
            mask = mask.expand(concepts.shape[0], *mask.shape)
        concepts = concepts & mask[:, None]
    union = concepts.any(dim=1)
    final = concepts[:, -1]
    checkpoints = concepts.shape[1]
    index = torch.arange(checkpoints).reshape(1, checkpoints, 1, 1).expand_as(concepts)
    first = torch.where(concepts, index, checkpoints).min(dim=1).values
    first_seen = torch.where(union, first, torch.full_like(first, -1))
    return UnionSets(final, union, union & ~final, first_seen)


# --------------------------------------------------------------------------------------------- frames
Key = tuple  # (architecture, layer, network)


def _check_key(key: Key) -> tuple[str, str, str]:
    if len(key) != 3 or key[2] not in NETWORKS:
        raise ValueError(f"trajectories are keyed (architecture, layer, network) with network one of {NETWORKS}; "
                         f"got {key!r}")
    return key


def curves_frame(trajectories: Mapping[Key, Trajectory]) -> pd.DataFrame:
    """One row per (architecture, layer, network, image, checkpoint): epoch, weight distance, N_fg, N_bg."""
    rows = []
    for key, t in trajectories.items():
        architecture, layer, network = _check_key(key)
        n_fg, n_bg = t.n_fg.tolist(), t.n_bg.tolist()
        for image in range(len(n_fg)):
            for k, epoch in enumerate(t.epochs):
                rows.append({"architecture": architecture, "layer": layer, "network": network, "image": image,
                             "checkpoint": k, "epoch": epoch, "weight distance": float(t.distance[k]),
                             "N_fg": n_fg[image][k], "N_bg": n_bg[image][k]})
    return pd.DataFrame(rows)


def peaks_frame(trajectories: Mapping[Key, Trajectory]) -> pd.DataFrame:
    """One row per (architecture, layer, network, image): m̂ (first checkpoint of most foreground concepts), its
    epoch, the weight distance there (what D_mean and D_var average) and N_fg there."""
    rows = []
    for key, t in trajectories.items():
        architecture, layer, network = _check_key(key)
        speed = t.speed()
        n_fg = t.n_fg
        for image, m in enumerate(speed.m_hat.tolist()):
            rows.append({"architecture": architecture, "layer": layer, "network": network, "image": image,
                         "m_hat": m, "epoch at m̂": t.epochs[m], "distance at m̂": float(speed.distance[image]),
                         "N_fg at m̂": int(n_fg[image, m])})
    return pd.DataFrame(rows)


def stability_frame(trajectories: Mapping[Key, Trajectory]) -> pd.DataFrame:
    """One row per (architecture, layer, network, image): the sizes of Fig. 4's foreground sets — |S_M|, |∪ S_j|,
    the discarded ones — and the image's ρ (NaN when it never had a foreground concept)."""
    frames = []
    for key, t in trajectories.items():
        architecture, layer, network = _check_key(key)
        sizes = union_sets(t.concepts, t.fg).sizes()
        frames.append(sizes.assign(architecture=architecture, layer=layer, network=network))
    columns = ["architecture", "layer", "network", "image", "final", "union", "discarded", "rho"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def metrics_frame(trajectories: Mapping[Key, Trajectory]) -> pd.DataFrame:
    """One row per (architecture, layer, network) with Table 3's metrics (:meth:`Trajectory.summary`)."""
    rows = []
    for key, t in trajectories.items():
        architecture, layer, network = _check_key(key)
        rows.append({"architecture": architecture, "layer": layer, "network": network, **t.summary()})
    return pd.DataFrame(rows)


def table3(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`metrics_frame` in the layout of the paper's Table 3: rows architecture × layer × S/B, columns
    N_fg ↑, N_bg ↓, λ ↑, D_mean ↓, D_std ↓, ρ ↑ (our D_std is √D_var; the paper's column is the variance,
    which orders S and B the same way). Returns ``(values, better)``: the numbers, and a boolean frame of the
    same shape, True where that row is the better of S and B (the paper's bold; a tie marks neither)."""
    decided = wins(frame)
    winner = {(r.architecture, r.layer, r.metric): r.winner for r in decided.itertuples()}
    values, better, index = [], [], []
    for (architecture, layer), group in frame.groupby(["architecture", "layer"], sort=False):
        for network in NETWORKS:
            row = group[group.network == network]
            if row.empty:
                continue
            values.append({m.label: float(row[m.key].iloc[0]) for m in METRICS})
            better.append({m.label: winner.get((architecture, layer, m.key)) == _SHORT[network] for m in METRICS})
            index.append((architecture, layer, _SHORT[network]))
    index = pd.MultiIndex.from_tuples(index, names=["network", "layer", ""])
    columns = [m.label for m in METRICS]
    return pd.DataFrame(values, index=index, columns=columns), pd.DataFrame(better, index=index, columns=columns)


def _winner(student: float, baseline: float, better: int) -> str:
    if math.isnan(student) or math.isnan(baseline):
        return "n/a"
    if math.isclose(student, baseline, rel_tol=1e-9, abs_tol=1e-12):
        return "tie"
    return "S" if (student - baseline) * better > 0 else "B"


def wins(frame: pd.DataFrame, metrics: Sequence[Metric] = METRICS) -> pd.DataFrame:
    """One row per (architecture, layer, metric) where both S and B have a row: their values and the winner —
    ``"S"`` (the student is better in the metric's direction), ``"B"``, ``"tie"`` (equal values) or ``"n/a"``
    (a value is undefined, e.g. ρ of images without any concept)."""
    missing = {"architecture", "layer", "network"} - set(frame.columns)
    if missing:
        raise ValueError(f"frame lacks columns {sorted(missing)} (make it with metrics_frame)")
    rows = []
    for (architecture, layer), group in frame.groupby(["architecture", "layer"], sort=False):
        by_network = {n: group[group.network == n] for n in NETWORKS}
        if any(g.empty for g in by_network.values()):
            continue
        for metric in metrics:
            s = float(by_network["student"][metric.key].iloc[0])
            b = float(by_network["baseline"][metric.key].iloc[0])
            rows.append({"architecture": architecture, "layer": layer, "metric": metric.key,
                         "label": metric.label, "hypothesis": metric.hypothesis, "student": s, "baseline": b,
                         "winner": _winner(s, b, metric.better)})
    return pd.DataFrame(rows, columns=["architecture", "layer", "metric", "label", "hypothesis", "student",
                                       "baseline", "winner"])


def sign_test(student_wins: int, baseline_wins: int, alpha: float = 0.05) -> tuple[float, str]:
    """The verdict on "the student wins most comparisons": an exact two-sided sign test (binomial, p = ½) over
    the decided comparisons (ties and n/a left out). Returns ``(p, verdict)``: *reproduced* when p < ``alpha``
    and the student wins more, *not reproduced* when p < ``alpha`` and the baseline wins more, *inconclusive at
    this scale* otherwise — always with fewer than 6 decided comparisons (5–0 gives p = 0.0625)."""
    n = student_wins + baseline_wins
    if n == 0:
        return math.nan, INCONCLUSIVE
    p = float(stats.binomtest(student_wins, n, 0.5, alternative="two-sided").pvalue)
    if p < alpha:
        return p, REPRODUCED if student_wins > baseline_wins else NOT_REPRODUCED
    return p, INCONCLUSIVE


def win_counts(decided: pd.DataFrame, by: str = "hypothesis", alpha: float = 0.05) -> pd.DataFrame:
    """Per value of ``by`` (``"hypothesis"`` or ``"metric"``) and overall (row ``"all"``): comparisons,
    student wins, baseline wins, ties, n/a, the student's share of the decided ones, the sign test's p and
    verdict (:func:`sign_test`)."""
    groups = [(name, g) for name, g in decided.groupby(by, sort=False)] + [("all", decided)]
    rows = []
    for name, group in groups:
        counts = group["winner"].value_counts()
        s, b = int(counts.get("S", 0)), int(counts.get("B", 0))
        p, verdict = sign_test(s, b, alpha)
        rows.append({by: name, "comparisons": len(group), "S wins": s, "B wins": b,
                     "ties": int(counts.get("tie", 0)), "n/a": int(counts.get("n/a", 0)),
                     "S share": s / (s + b) if s + b else math.nan, "sign test p": p, "verdict": verdict})
    return pd.DataFrame(rows).set_index(by)


# --------------------------------------------------------------------------------- from the protocol
def measure(profile, arch: str, layer: str, network: str, probe=None, seed: int = 0) -> Trajectory:
    """The :class:`Trajectory` of Part I's ``network`` (``"student"``: distilled at ``layer``; ``"baseline"``)
    of ``arch`` at FC ``layer`` over the protocol's checkpoints (:mod:`kdnb.concepts.protocol`): the run is
    trained or loaded, the probe images' entropy maps are computed or read from the analysis cache at every
    checkpoint, b is the architecture's (0.25 for AlexNet), the weight distance that of the layer's weights.
    A student whose initial weights are the baseline's (same seed and architecture: checked, not assumed) takes
    the baseline's maps at epoch 0, so they are computed once."""
    from .. import runs
    from . import protocol

    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; choose one of: {', '.join(NETWORKS)}")
    s = protocol.scale(profile)
    probe = probe if probe is not None else protocol.probe_images(profile)
    spec = (protocol.student(profile, arch, layer, seed=seed) if network == "student"
            else protocol.baseline(profile, arch, seed=seed))
    run = runs.train_or_load(spec)
    epochs = tuple(s.checkpoints)
    source = {e: run for e in epochs}
    if network == "student" and epochs[0] == 0:  # same seed, same architecture: the same initial network?
        base = runs.train_or_load(protocol.baseline(profile, arch, seed=seed))
        if _same_weights(run.model(epoch=0, device="cpu"), base.model(epoch=0, device="cpu")):
            source[0.0] = base  # then its maps are the baseline's: computed once, shared through the cache
    maps = torch.stack([protocol.entropy(source[e], layer, probe, profile, epoch=e).entropy for e in epochs], dim=1)
    return trajectory(maps, probe.fg, epochs, protocol.weight_distances(run, layer, epochs), b=protocol.B[arch])


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """True when two networks hold bit-identical parameters and buffers."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def measure_all(profile, probe=None, architectures: Sequence[str] | None = None,
                layers: Sequence[str] | None = None, seed: int = 0) -> dict[Key, Trajectory]:
    """:func:`measure` for every architecture of the profile's scale (or ``architectures``), every FC layer (or
    ``layers``), student and baseline: ``{(arch, layer, network): Trajectory}``."""
    from . import protocol

    s = protocol.scale(profile)
    probe = probe if probe is not None else protocol.probe_images(profile)
    return {(arch, layer, network): measure(profile, arch, layer, network, probe, seed)
            for arch in (architectures or s.architectures) for layer in (layers or protocol.LAYERS)
            for network in NETWORKS}


# ------------------------------------------------------------------------------------ the paper's table
# Table 3 of Cheng et al. (CVPR 2020), the CUB-200-2011 columns (FC1-FC3 for every network), as printed:
# N_fg, N_bg, lambda, D_mean, D_std (a variance in the released code), rho; S then B per layer. The networks
# follow the order of Sec. 4.1; the first three are confirmed by the text (Sec. 4.4 names the D failures at
# AlexNet FC1 and VGG-11 FC2) and by Table 2 (VGG-16's baseline: 22.50/0.68, 23.31/0.67, 23.26/0.71).
_PAPER_CUB = {
    "AlexNet": [(36.60, 4.00, 0.90, 8.35, 25.09, 0.57), (24.13, 5.65, 0.81, 4.81, 14.54, 0.52),
                (38.13, 3.50, 0.92, 3.77, 3.97, 0.49), (23.33, 5.48, 0.80, 5.36, 20.79, 0.49),
                (33.20, 4.31, 0.89, 8.13, 39.79, 0.51), (22.73, 4.94, 0.83, 13.57, 137.74, 0.42)],
    "VGG-11": [(30.69, 10.65, 0.75, 1.21, 0.61, 0.56), (24.26, 10.77, 0.70, 2.01, 3.18, 0.55),
               (36.51, 10.66, 0.78, 5.22, 19.32, 0.49), (26.86, 10.71, 0.72, 6.62, 16.21, 0.54),
               (34.53, 14.21, 0.72, 4.15, 4.55, 0.50), (24.53, 10.95, 0.69, 20.66, 95.29, 0.49)],
    "VGG-16": [(43.77, 8.73, 0.84, 0.64, 0.06, 0.66), (22.50, 11.27, 0.68, 2.38, 4.98, 0.50),
               (36.83, 11.03, 0.77, 0.80, 0.37, 0.54), (23.31, 11.56, 0.67, 5.43, 22.96, 0.50),
               (32.32, 10.21, 0.77, 6.17, 32.63, 0.47), (23.26, 9.97, 0.71, 17.53, 216.05, 0.46)],
    "VGG-19": [(40.74, 10.42, 0.80, 0.66, 0.15, 0.60), (22.42, 11.19, 0.67, 2.33, 3.67, 0.47),
               (40.20, 9.03, 0.82, 1.16, 0.63, 0.56), (24.00, 10.40, 0.70, 4.64, 19.07, 0.47),
               (28.60, 6.37, 0.82, 4.89, 11.57, 0.48), (21.29, 7.77, 0.74, 20.61, 143.61, 0.46)],
    "ResNet-50": [(43.02, 10.15, 0.81, 24.43, 166.76, 0.48), (24.15, 11.83, 0.79, 20.78, 122.79, 0.53),
                  (48.58, 9.75, 0.83, 37.62, 206.22, 0.55), (42.06, 11.88, 0.79, 29.28, 248.03, 0.52),
                  (41.38, 11.73, 0.77, 926.61, 142807.00, 0.43), (42.03, 11.48, 0.79, 111.18, 3299.20, 0.53)],
    "ResNet-101": [(45.93, 11.14, 0.81, 23.32, 236.76, 0.51), (44.18, 12.55, 0.78, 40.41, 828.72, 0.52),
                   (51.59, 9.02, 0.85, 67.60, 947.85, 0.54), (43.22, 12.32, 0.78, 43.40, 1155.22, 0.50),
                   (47.71, 10.24, 0.82, 73.33, 2797.15, 0.53), (42.40, 10.53, 0.80, 162.68, 16481.93, 0.49)],
    "ResNet-152": [(44.81, 12.09, 0.79, 26.35, 289.59, 0.48), (45.62, 10.68, 0.81, 36.92, 767.58, 0.54),
                   (43.79, 10.04, 0.81, 7.13, 42.77, 0.52), (45.08, 10.85, 0.81, 44.59, 1200.97, 0.52),
                   (44.21, 11.89, 0.79, 47.28, 1463.55, 0.50), (44.89, 10.77, 0.81, 167.41, 16331.28, 0.52)],
}
# The paper's network that each of ours stands for (the paper has no ResNet-20: its smallest ResNet is the 50).
PAPER_ANALOG = {"alexnet_small": "AlexNet", "vgg11-fc": "VGG-11", "resnet20-fc": "ResNet-50"}
PAPER_TABLE3_CUB = _PAPER_CUB  # {network: [(N_fg, N_bg, λ, D_mean, D_std, ρ) for FC1 S, FC1 B, …, FC3 B]}


def paper_metrics_frame(networks: Sequence[str] | None = None) -> pd.DataFrame:
    """The paper's CUB columns of Table 3 as a :func:`metrics_frame` (``networks``: a subset, in that order;
    ``d_std`` holds the paper's printed D_std, a variance; ``images`` is NaN: the paper does not say)."""
    names = list(networks) if networks is not None else list(_PAPER_CUB)
    unknown = [n for n in names if n not in _PAPER_CUB]
    if unknown:
        raise ValueError(f"no paper rows for {unknown}; choose from {list(_PAPER_CUB)}")
    rows = []
    for name in names:
        for i, values in enumerate(_PAPER_CUB[name]):
            row = dict(zip([m.key for m in METRICS], values))
            rows.append({"architecture": name, "layer": f"fc{i // 2 + 1}", "network": NETWORKS[i % 2], **row,
                         "images": math.nan})
    return pd.DataFrame(rows)
