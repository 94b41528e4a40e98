"""How concepts come and go during training: Hypotheses 2 and 3 of Cheng et al. (CVPR 2020, §3.3–3.4) and the
Table 3 comparison of a student with its baseline.

One network's concept maps on the probe images at its checkpoints g_1 … g_M make a :class:`Trajectory` (built by
:func:`trajectory` from the entropy maps ``(images, checkpoints, g, g)``, the foreground mask and the cumulative
weight distance at each checkpoint; a checkpoint at epoch 0 — the initial weights — is dropped: Eqs. 4–5 run over
j = 1 … M). From it:

- N_fg and N_bg per image and checkpoint (Eq. 3), with H̄ recomputed at every checkpoint (dataset-level, as the
  released code does);
- the learning speed D_mean, D_var (Eq. 4; the paper's "D_std" is a variance) and its square root D_std,
  from the weight distance at m̂, the first checkpoint of g_1 … g_M with most foreground concepts;
- the H2 control: the same distances over the run's own path length W_M (the weight distance at g_M) —
  D_mean / W_M and D_std / W_M do not change when a loss's scale (or the learning rate) multiplies every step;
- ρ (Eq. 5) on foreground concepts, and the sets behind it (:func:`union_sets`, the style of Fig. 4).

Trajectories keyed ``(architecture, layer, network, seed)`` with ``network`` ``"student"`` or ``"baseline"``
become long frames (:func:`curves_frame`, :func:`peaks_frame`, :func:`stability_frame`) and one row of Table 3's
metrics per key (:func:`metrics_frame`). The hypotheses are judged by one rule (:func:`judge`): in every cell
(architecture × FC layer) and for every metric, the student's improvement on the baseline paired by seed (each
seed's value is the mean over the probe images), and Holm's correction over all the hypothesis's comparisons
(:func:`kdnb.analysis.verdict_for_most`) — reproduced when most comparisons are significantly in the student's
favour. Cells whose architecture fails Part I's premise, and networks below twice chance, are left out and
reported apart. :func:`table3` lays the seed means out as the paper's Table 3; :func:`family_claim` turns a
judged family into a ledger row with its premise, n, resolution, the paper's effect and what would settle it.
:data:`PAPER_TABLE3_CUB` holds the paper's own CUB-200-2011 columns of Table 3 (one network per cell, no seeds):
:func:`wins` and :func:`win_counts` tally them descriptively, with a sign test over cells.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import Tensor

from ... import analysis
from ...analysis import INCONCLUSIVE, NOT_REPRODUCED, PREMISE_UNMET, REPRODUCED, Claim, PairedComparison, Premise
from ...concepts.metrics import (LearningSpeed, background_baseline, concept_map, lambda_ratio, learning_speed,
                                 stability)

__all__ = ["Metric", "METRICS", "CONTROL_METRICS", "HYPOTHESES", "NETWORKS", "Trajectory", "trajectory",
           "UnionSets", "union_sets", "curves_frame", "peaks_frame", "stability_frame", "metrics_frame",
           "seed_means", "table3", "wins", "win_counts", "sign_test", "Family", "judge", "family_claim",
           "paper_effects", "measure", "measure_all", "effect_filter", "PAPER_TABLE3_CUB", "PAPER_ANALOG", "paper_metrics_frame"]

NETWORKS = ("student", "baseline")  # Table 3's S and B rows
_SHORT = {"student": "S", "baseline": "B"}


@dataclass(frozen=True)
class Metric:
    """One column of Table 3: its key in :func:`metrics_frame`, its label, which direction is better for
    the student (``+1`` higher, ``-1`` lower), the hypothesis it tests and the unit of its values."""

    key: str
    label: str
    better: int
    hypothesis: str
    unit: str = ""


METRICS = (Metric("n_fg", "N_fg ↑", +1, "H1", "concepts"), Metric("n_bg", "N_bg ↓", -1, "H1", "concepts"),
           Metric("lambda", "λ ↑", +1, "H1"), Metric("d_mean", "D_mean ↓", -1, "H2", "weight distance"),
           Metric("d_std", "D_std ↓", -1, "H2", "weight distance"), Metric("rho", "ρ ↑", +1, "H3"))
#: The H2 control: D_mean and D_std over the run's own path length W_M — unchanged when a loss's scale (or the
#: learning rate) multiplies every step, so a student that wins D_mean only because its loss takes small steps
#: does not win these.
CONTROL_METRICS = (Metric("d_mean_rel", "D_mean / W_M ↓", -1, "H2 control", "of the path"),
                   Metric("d_std_rel", "D_std / W_M ↓", -1, "H2 control", "of the path"))
HYPOTHESES = {"H1": "more foreground concepts, fewer background ones, larger λ (Eq. 3)",
              "H2": "concepts learned quickly and simultaneously: smaller D_mean and D_std (Eq. 4)",
              "H3": "fewer detours: larger ρ (Eq. 5)"}
_BY_KEY = {m.key: m for m in METRICS + CONTROL_METRICS}


# ------------------------------------------------------------------------------------------ one network
@dataclass(frozen=True)
class Trajectory:
    """One network's concepts on the probe images over its checkpoints g_1 … g_M (never the initial weights).

    ``epochs`` ``(M,)`` checkpoint epochs, all > 0; ``distance`` ``(M,)`` the cumulative weight distance
    Σ‖w_k − w_{k−1}‖/‖w_0‖ there (from w_0, the initial weights); ``baseline`` ``(M,)`` H̄ at each checkpoint;
    ``concepts`` bool ``(N, M, g, g)``; ``fg`` bool ``(N, g, g)``; ``finite`` bool ``(N,)``: the image's final map
    is finite (an image the estimator rejected has NaN maps). The last checkpoint is the final network g_M.
    """

    epochs: tuple[float, ...]
    distance: Tensor
    baseline: Tensor
    concepts: Tensor
    fg: Tensor
    finite: Tensor

    @property
    def n_fg(self) -> Tensor:
        """``(N, M)`` foreground concepts per image and checkpoint (Eq. 3)."""
        return (self.concepts & self.fg[:, None]).sum(dim=(-2, -1))

    @property
    def n_bg(self) -> Tensor:
        """``(N, M)`` background concepts per image and checkpoint (Eq. 3)."""
        return (self.concepts & ~self.fg[:, None]).sum(dim=(-2, -1))

    @property
    def path(self) -> float:
        """W_M: the weight distance at the final checkpoint g_M, the run's own path length."""
        return float(self.distance[-1])

    def speed(self) -> LearningSpeed:
        """D_mean, D_var (Eq. 4) from m̂, the first of g_1 … g_M with most foreground concepts, per image."""
        return learning_speed(self.n_fg, self.distance)

    def rho(self, per_image: bool = False) -> Tensor:
        """ρ = |S_M| / |∪_{j=1..M} S_j| on foreground concepts (Eq. 5), averaged over the images that have any."""
        return stability(self.concepts, mask=self.fg, per_image=per_image)

    def summary(self, keep: Tensor | None = None) -> dict[str, float]:
        """Table 3's metrics for this network: N_fg, N_bg, λ of the final network (means over the images with a
        finite map, or over ``keep`` ``(N,)`` bool), D_mean, D_var and D_std = √D_var, ρ, the H2 control
        D_mean / W_M and D_std / W_M, W_M itself, and how many images took part."""
        keep = self.finite if keep is None else torch.as_tensor(keep, dtype=torch.bool) & self.finite
        n_fg, n_bg = self.n_fg[keep, -1], self.n_bg[keep, -1]
        speed = learning_speed(self.n_fg[keep], self.distance)
        rho = stability(self.concepts[keep], mask=self.fg[keep]) if bool(keep.any()) else torch.tensor(math.nan)
        path = self.path
        return {"n_fg": float(n_fg.double().mean()) if len(n_fg) else math.nan,
                "n_bg": float(n_bg.double().mean()) if len(n_bg) else math.nan,
                "lambda": float(lambda_ratio(n_fg, n_bg)) if len(n_fg) else math.nan,
                "d_mean": speed.mean, "d_var": speed.var, "d_std": speed.std, "rho": float(rho),
                "d_mean_rel": speed.mean / path if path > 0 else math.nan,
                "d_std_rel": speed.std / path if path > 0 else math.nan,
                "path": path, "images": int(keep.sum())}


def trajectory(entropy: Tensor, fg: Tensor, epochs: Sequence[float], distance: Tensor | Sequence[float],
               b: float = 0.2) -> Trajectory:
    """A :class:`Trajectory` from entropy maps ``(N, K, g, g)`` at the K checkpoints ``epochs`` (increasing),
    the foreground mask ``(N, g, g)`` or ``(g, g)``, the cumulative weight distance ``(K,)`` and the threshold
    ``b`` (a concept: H̄ − H_g > b, H̄ the dataset-level mean background entropy of that checkpoint).

    A checkpoint at epoch 0 (the initial weights, g_0) is dropped: m̂ (Eq. 4) and the union of ρ (Eq. 5) run
    over g_1 … g_M, the networks "learned after" epochs 1 … M. The distances keep counting from w_0."""
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
    trained = [k for k, e in enumerate(epochs) if e > 0]
    if not trained:
        raise ValueError(f"no checkpoint after the initial weights: {list(epochs)}")
    entropy, distance = entropy[:, trained], distance[trained]
    epochs = tuple(epochs[k] for k in trained)
    fg = torch.as_tensor(fg).to(torch.bool)
    if fg.dim() == 2:
        fg = fg.expand(entropy.shape[0], *fg.shape)
    if fg.shape != (entropy.shape[0], *entropy.shape[-2:]):
        raise ValueError(f"fg of shape {tuple(fg.shape)} does not fit entropy maps {tuple(entropy.shape)}")
    baseline = background_baseline(entropy, fg)
    concepts = concept_map(entropy, baseline, b)
    finite = torch.isfinite(entropy[:, -1]).all(dim=-1).all(dim=-1)
    return Trajectory(epochs, distance, baseline, concepts, fg.clone(), finite)


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
    """The sets of Eq. 5 from bool concept maps ``(N, K, g, g)`` (K checkpoints g_1 … g_M, the last one final),
    restricted to ``mask`` (``(N, g, g)`` or ``(g, g)``; the paper uses the foreground) when given."""
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
Key = tuple  # (architecture, layer, network, seed)
_KEY_COLUMNS = ["architecture", "layer", "network", "seed"]


def _check_key(key: Key) -> tuple[str, str, str, int]:
    if len(key) != 4 or key[2] not in NETWORKS:
        raise ValueError(f"trajectories are keyed (architecture, layer, network, seed) with network one of "
                         f"{NETWORKS}; got {key!r}")
    return key


def curves_frame(trajectories: Mapping[Key, Trajectory]) -> pd.DataFrame:
    """One row per (architecture, layer, network, seed, image, checkpoint): epoch, weight distance, N_fg, N_bg."""
    rows = []
    for key, t in trajectories.items():
        architecture, layer, network, seed = _check_key(key)
        n_fg, n_bg = t.n_fg.tolist(), t.n_bg.tolist()
        for image in range(len(n_fg)):
            for k, epoch in enumerate(t.epochs):
                rows.append({"architecture": architecture, "layer": layer, "network": network, "seed": seed,
                             "image": image, "checkpoint": k, "epoch": epoch,
                             "weight distance": float(t.distance[k]), "N_fg": n_fg[image][k], "N_bg": n_bg[image][k]})
    return pd.DataFrame(rows)


def peaks_frame(trajectories: Mapping[Key, Trajectory]) -> pd.DataFrame:
    """One row per (architecture, layer, network, seed, image): m̂ (index of the first of g_1 … g_M with most
    foreground concepts), its epoch, the weight distance there (what D_mean and D_var average), that distance
    over the run's path W_M (the H2 control) and N_fg there."""
    rows = []
    for key, t in trajectories.items():
        architecture, layer, network, seed = _check_key(key)
        speed = t.speed()
        n_fg = t.n_fg
        for image, m in enumerate(speed.m_hat.tolist()):
            d = float(speed.distance[image])
            rows.append({"architecture": architecture, "layer": layer, "network": network, "seed": seed,
                         "image": image, "m_hat": m, "epoch at m̂": t.epochs[m], "distance at m̂": d,
                         "share of the path at m̂": d / t.path if t.path > 0 else math.nan,
                         "N_fg at m̂": int(n_fg[image, m])})
    return pd.DataFrame(rows)


def stability_frame(trajectories: Mapping[Key, Trajectory]) -> pd.DataFrame:
    """One row per (architecture, layer, network, seed, image): the sizes of Fig. 4's foreground sets — |S_M|,
    |∪ S_j|, the discarded ones — and the image's ρ (NaN when it never had a foreground concept)."""
    frames = []
    for key, t in trajectories.items():
        architecture, layer, network, seed = _check_key(key)
        sizes = union_sets(t.concepts, t.fg).sizes()
        frames.append(sizes.assign(architecture=architecture, layer=layer, network=network, seed=seed))
    columns = _KEY_COLUMNS + ["image", "final", "union", "discarded", "rho"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def metrics_frame(trajectories: Mapping[Key, Trajectory],
                  keep: Mapping[Key, Tensor] | None = None) -> pd.DataFrame:
    """One row per (architecture, layer, network, seed) with Table 3's metrics and the H2 control
    (:meth:`Trajectory.summary`; ``keep[key]``, when given, the images that take part)."""
    rows = []
    for key, t in trajectories.items():
        architecture, layer, network, seed = _check_key(key)
        summary = t.summary(None if keep is None else keep[key])
        rows.append({"architecture": architecture, "layer": layer, "network": network, "seed": seed, **summary})
    return pd.DataFrame(rows)


def seed_means(frame: pd.DataFrame) -> pd.DataFrame:
    """A :func:`metrics_frame` averaged over seeds: one row per (architecture, layer, network), the numeric
    columns' means (NaN values left out) and ``seeds``, how many seeds took part."""
    if "seed" not in frame.columns:
        return frame
    keys = ["architecture", "layer", "network"]
    numeric = [c for c in frame.columns if c not in keys + ["seed"] and pd.api.types.is_numeric_dtype(frame[c])]
    grouped = frame.groupby(keys, sort=False)
    out = grouped[numeric].mean().reset_index()
    out["seeds"] = grouped["seed"].nunique().to_numpy()
    return out


def table3(frame: pd.DataFrame, decisions: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`metrics_frame` (averaged over seeds by :func:`seed_means`) in the layout of the paper's Table 3:
    rows architecture × layer × S/B, columns N_fg ↑, N_bg ↓, λ ↑, D_mean ↓, D_std ↓, ρ ↑ (our D_std is √D_var;
    the paper's column is the variance, which orders S and B the same way). Returns ``(values, better)``: the
    numbers, and a boolean frame of the same shape, True where that row is the better of S and B — the paper's
    bold. With ``decisions`` (a :class:`Family` table: architecture, layer, metric, decision), bold marks only a
    comparison decided by the family's Holm rule: S where it is significantly for the student, B where against;
    without, the better mean (a tie marks neither)."""
    frame = seed_means(frame)
    if decisions is not None:
        mark = {(r.architecture, r.layer, r.metric): {"for": "S", "against": "B"}.get(r.decision)
                for r in decisions.itertuples()}
    else:
        mark = {(r.architecture, r.layer, r.metric): r.winner for r in wins(frame).itertuples()}
    values, better, index = [], [], []
    for (architecture, layer), group in frame.groupby(["architecture", "layer"], sort=False):
        for network in NETWORKS:
            row = group[group.network == network]
            if row.empty:
                continue
            values.append({m.label: float(row[m.key].iloc[0]) for m in METRICS})
            better.append({m.label: mark.get((architecture, layer, m.key)) == _SHORT[network] for m in METRICS})
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
    """One row per (architecture, layer, metric) where both S and B have a row: their values (seed means, when
    the frame has seeds) and the winner — ``"S"`` (the student is better in the metric's direction), ``"B"``,
    ``"tie"`` (equal values) or ``"n/a"`` (a value is undefined, e.g. ρ of images without any concept). A
    descriptive tally, as the paper's bold face: it says nothing of the spread."""
    missing = {"architecture", "layer", "network"} - set(frame.columns)
    if missing:
        raise ValueError(f"frame lacks columns {sorted(missing)} (make it with metrics_frame)")
    frame = seed_means(frame)
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
    """The descriptive test of a tally of cells without seeds (the paper's Table 3): an exact two-sided sign test
    (binomial, p = ½) over the decided comparisons (ties and n/a left out). Returns ``(p, verdict)``:
    *reproduced* when p < ``alpha`` and the student wins more, *not reproduced* when p < ``alpha`` and the
    baseline wins more, *inconclusive at this scale* otherwise — always with fewer than 6 decided comparisons
    (5–0 gives p = 0.0625)."""
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


# ------------------------------------------------------------------------------------------ the one rule
@dataclass(frozen=True)
class Family:
    """One hypothesis's comparisons, judged by one rule.

    A comparison is one cell (architecture × FC layer) and one metric: the student's improvement on the baseline
    in the metric's direction (student − baseline, or baseline − student where lower is better), paired by seed,
    each seed's value being the mean over the probe images. ``verdict`` is
    :func:`kdnb.analysis.verdict_for_most` over the family — Holm's step-down over the two one-sided tests of every
    comparison: reproduced when more than half are significantly for the student, not reproduced when more than
    half are significantly against. ``table``: one row per comparison (its seeds' means, the paired improvement
    with its 95% interval, the one-sided p-values, the Holm ``decision`` — ``"for"``, ``"against"`` or
    ``"undecided"`` — and the ``resolution``, the smallest improvement that comparison could show at Holm's first
    step). ``left_out``: the cells and seeds not in the tally, and why."""

    name: str
    metrics: tuple[Metric, ...]
    table: pd.DataFrame
    comparisons: tuple[PairedComparison, ...]
    verdict: str
    left_out: pd.DataFrame

    @property
    def size(self) -> int:
        return len(self.comparisons)

    @property
    def count(self) -> analysis.FamilyCount | None:
        """How the family fell under Holm (:func:`kdnb.analysis.family_count`); None for an empty family."""
        return analysis.family_count(self.comparisons) if self.comparisons else None

    def support(self, metric: str | None = None) -> str:
        """``"k of n"``: the comparisons significantly for the student (of ``metric``, or all)."""
        rows = self.table if metric is None else self.table[self.table.metric == metric]
        return f"{int((rows.decision == 'for').sum())} of {len(rows)}"

    def format(self) -> str:
        count = self.count
        if count is None:
            return "no comparison in the tally"
        return count.format()


_TABLE_COLUMNS = ["architecture", "layer", "metric", "label", "hypothesis", "n", "student", "baseline",
                  "improvement", "ci_low", "ci_high", "p_for", "p_against", "decision", "resolution", "spread"]
_LEFT_OUT_COLUMNS = ["architecture", "layer", "seed", "reason"]


def _weak_keys(weak: pd.DataFrame | None) -> tuple[set, set]:
    """(baselines, students) below the floor: {(arch, seed)} and {(arch, layer, seed)}."""
    if weak is None or weak.empty:
        return set(), set()
    baselines = {(r.architecture, int(r.seed)) for r in weak.itertuples() if r.network == "baseline"}
    students = {(r.architecture, r.layer, int(r.seed)) for r in weak.itertuples() if r.network == "student"}
    return baselines, students


def judge(frame: pd.DataFrame, metrics: Sequence[Metric], name: str = "", weak: pd.DataFrame | None = None,
          architectures: Sequence[str] | None = None) -> Family:
    """Judge the comparisons of ``metrics`` in every cell of a :func:`metrics_frame` (one row per architecture,
    layer, network and seed) by the family rule of :class:`Family`.

    Left out, and listed in ``left_out``: every cell of an architecture not in ``architectures`` (those whose
    premise held; None: all), the seeds of a cell where the student or the baseline is in ``weak`` (the rows of
    :func:`kdnb.studies.part1.protocol.weak`: networks below twice chance), and a cell left with fewer than
    :data:`kdnb.analysis.MIN_PAIRS` seeds. A comparison whose metric is undefined on some seeds (ρ of a network
    without any foreground concept) keeps the other seeds."""
    weak_baselines, weak_students = _weak_keys(weak)
    rows, comparisons, left_out = [], [], []
    for (arch, layer), cell in frame.groupby(["architecture", "layer"], sort=False):
        if architectures is not None and arch not in architectures:
            left_out.append({"architecture": arch, "layer": layer, "seed": "all", "reason": "premise unmet"})
            continue
        s_rows = cell[cell.network == "student"].set_index("seed")
        b_rows = cell[cell.network == "baseline"].set_index("seed")
        seeds = []
        for seed in sorted(set(s_rows.index) & set(b_rows.index)):
            why = [w for w, bad in (("baseline below twice chance", (arch, int(seed)) in weak_baselines),
                                    ("student below twice chance", (arch, layer, int(seed)) in weak_students)) if bad]
            if why:
                left_out.append({"architecture": arch, "layer": layer, "seed": seed, "reason": "; ".join(why)})
            else:
                seeds.append(seed)
        if len(seeds) < analysis.MIN_PAIRS:
            left_out.append({"architecture": arch, "layer": layer, "seed": "all",
                             "reason": f"{len(seeds)} seed(s) left, fewer than {analysis.MIN_PAIRS}"})
            continue
        for metric in metrics:
            s = s_rows.loc[seeds, metric.key].to_numpy(float)
            b = b_rows.loc[seeds, metric.key].to_numpy(float)
            ok = np.isfinite(s) & np.isfinite(b)
            s, b = s[ok], b[ok]
            comparison = analysis.paired(s, b) if metric.better > 0 else analysis.paired(b, s)
            comparisons.append(comparison)
            rows.append({"architecture": arch, "layer": layer, "metric": metric.key, "label": metric.label,
                         "hypothesis": metric.hypothesis, "n": int(ok.sum()),
                         "student": analysis.summarize(s).format(digits=3) if len(s) else "—",
                         "baseline": analysis.summarize(b).format(digits=3) if len(b) else "—",
                         "improvement": comparison.difference.mean if len(s) else math.nan,
                         "ci_low": comparison.difference.ci_low if len(s) else math.nan,
                         "ci_high": comparison.difference.ci_high if len(s) else math.nan})
    k = len(comparisons)
    usable = [c.difference.n >= analysis.MIN_PAIRS and c.difference.std > 0 for c in comparisons]
    p_for = [analysis.p_value(c, 0.0, "greater") if ok else math.nan for c, ok in zip(comparisons, usable)]
    p_against = [analysis.p_value(c, 0.0, "less") if ok else math.nan for c, ok in zip(comparisons, usable)]
    rejected = analysis.holm(p_for + p_against)  # the two one-sided tests of every comparison, as family_count
    for i, row in enumerate(rows):
        resolution = analysis.resolution(comparisons[i], family=k)
        row.update(p_for=p_for[i], p_against=p_against[i],
                   decision="for" if rejected[i] else "against" if rejected[k + i] else "undecided",
                   resolution=resolution.smallest, spread=resolution.spread)
    table = pd.DataFrame(rows, columns=_TABLE_COLUMNS)
    verdict = analysis.verdict_for_most(comparisons) if comparisons else INCONCLUSIVE
    if comparisons:
        count = analysis.family_count(comparisons)
        assert (count.favour, count.against) == ((table.decision == "for").sum(), (table.decision == "against").sum())
    return Family(name, tuple(metrics), table, tuple(comparisons), verdict,
                  pd.DataFrame(left_out, columns=_LEFT_OUT_COLUMNS))


def _paper_cells() -> pd.DataFrame:
    """The paper's CUB Table 3 as S/B pairs: one row per (network, layer) with both networks' values."""
    frame = paper_metrics_frame()
    s = frame[frame.network == "student"].set_index(["architecture", "layer"])
    b = frame[frame.network == "baseline"].set_index(["architecture", "layer"])
    return s.join(b, lsuffix="_s", rsuffix="_b")


def paper_effects(grid: int, frame: pd.DataFrame | None = None) -> dict[str, float | None]:
    """The paper's effect for every metric in the unit of our comparison (student's improvement on the baseline),
    from its CUB columns of Table 3: the median over its 21 cells.

    - N_fg, N_bg: the count difference scaled from the paper's 16 × 16 grid to ours (× grid² / 256);
    - λ, ρ: the difference itself (no unit);
    - D_mean, D_std and the H2 control: not comparable in absolute terms (the paper's networks walked 150 epochs
      of ImageNet-sized layers), so the paper's *relative* improvement, (B − S) / B (on √ of its printed
      variance for D_std), applied to our baselines' mean value of that metric in ``frame`` (a
      :func:`metrics_frame`; None without it).
    """
    cells = _paper_cells()
    effects: dict[str, float | None] = {}
    for m in METRICS:
        s, b = cells[f"{m.key}_s"].astype(float), cells[f"{m.key}_b"].astype(float)
        if m.key in ("n_fg", "n_bg"):
            effects[m.key] = float(np.median((s - b) * m.better)) * grid ** 2 / 256
        elif m.key in ("lambda", "rho"):
            effects[m.key] = float(np.median((s - b) * m.better))
    relative = {}
    for key in ("d_mean", "d_std"):
        s, b = cells[f"{key}_s"].astype(float), cells[f"{key}_b"].astype(float)
        if key == "d_std":  # the paper prints np.var: compare standard deviations, as ours
            s, b = np.sqrt(s), np.sqrt(b)
        relative[key] = float(np.median((b - s) / b))
    relative["d_mean_rel"], relative["d_std_rel"] = relative["d_mean"], relative["d_std"]
    for key, rel in relative.items():
        if frame is None or key not in frame.columns:
            effects[key] = None
            continue
        base = frame[frame.network == "baseline"][key].astype(float)
        base = base[np.isfinite(base)]
        effects[key] = float(rel * base.mean()) if len(base) else None
    return effects


def _number(value: float, unit: str) -> str:
    return f"{value:+.3g}" + (f" {unit}" if unit else "")


def family_claim(claim: str, paper: str, family: Family, premise: Premise, paper_effect: Mapping[str, float | None],
                 setting: str = "", source: str = "cheng2020explaining") -> Claim:
    """A ledger row (:class:`kdnb.analysis.Claim`) for a judged :class:`Family`, with its premise, n, resolution,
    the paper's effect and, beside an open verdict, what would settle it.

    :func:`kdnb.analysis.judged` reads one comparison; a family holds several, in several units, so this builds
    the same fields per metric: the resolution is the median over the family's cells of the smallest improvement
    one comparison could show at Holm's first step (``t_{α/2k} · s / √n``, k comparisons), the paper's effect
    comes from ``paper_effect`` (:func:`paper_effects`), and the note gives the seeds at which an effect of the
    paper's size would be found with 80% power at the median observed spread
    (:func:`kdnb.analysis.seeds_to_resolve`, same family size). A failed ``premise`` makes the verdict
    *premise unmet* and puts its remedy first in the note; an empty family (every cell left out) is
    *inconclusive*, or *premise unmet* when the premise failed."""
    k = family.size
    verdict = family.verdict if premise.held else PREMISE_UNMET
    resolutions, effects, notes = [], [], []
    for metric in family.metrics:
        rows = family.table[family.table.metric == metric.key]
        effect = paper_effect.get(metric.key)
        if effect is not None:
            effects.append(f"{metric.label.split()[0]} {_number(effect, metric.unit)}")
        finite = rows[np.isfinite(rows.resolution.astype(float))]
        if finite.empty:
            resolutions.append(f"{metric.label.split()[0]}: none")
            continue
        smallest, spread = float(finite.resolution.median()), float(finite.spread.median())
        resolutions.append(f"{metric.label.split()[0]} ±{smallest:.3g}" + (f" {metric.unit}" if metric.unit else ""))
        if effect is None:
            continue
        words = []
        if abs(effect) < smallest:
            words.append(f"the paper's effect ({_number(effect, metric.unit)}) is below this design's resolution "
                         f"(±{smallest:.3g})")
        if verdict != REPRODUCED or words:
            n = analysis.seeds_to_resolve(spread, effect, family=k)
            words.append(f"≈ {n} seeds would find it in one comparison with 80% power at the observed spread "
                         f"({spread:.3g})" if n else
                         f"more than 1000 seeds would be needed at the observed spread ({spread:.3g})")
        notes.append(f"{metric.label.split()[0]}: " + "; ".join(words) + ".")
    n = int(family.table.n.max()) if k else None
    resolution = (f"{', '.join(resolutions)} (median over cells of t·s/√n at n={n}, Holm's first step over {k} "
                  f"comparisons)" if k else "none: no comparison in the tally")
    parts = [premise.remedy] if not premise.held and premise.remedy else []
    if k == 0:
        parts.append(f"Every cell was left out ({'; '.join(sorted(set(family.left_out.reason)))}).")
    note = " ".join(parts + notes)
    measured = f"{family.format()}"
    if k:
        means = [f"{m.label.split()[0]} {family.table[family.table.metric == m.key].improvement.mean():+.3g}"
                 for m in family.metrics]
        measured += f"; mean improvement over cells: {', '.join(means)}"
    return Claim(claim=claim, paper=paper, measured=measured, verdict=verdict, setting=setting, source=source,
                 premise=f"{premise.requirement}: {premise.measured}", premise_held=premise.held, n=n,
                 resolution=resolution, paper_effect="; ".join(effects), note=note)


# --------------------------------------------------------------------------------- from the protocol
def measure(profile, arch: str, layer: str, network: str, probe=None, seed: int = 0) -> Trajectory:
    """The :class:`Trajectory` of Part I's ``network`` (``"student"``: distilled at ``layer``; ``"baseline"``)
    of ``arch`` and seed ``seed`` at FC ``layer`` over the protocol's checkpoints g_1 … g_M
    (:mod:`kdnb.studies.part1.protocol`): the run is trained or loaded, the probe images' entropy maps are computed or
    read from the analysis cache at every checkpoint, b is the architecture's (0.25 for AlexNet), the weight
    distance that of the layer's weights."""
    from ... import runs
    from . import protocol

    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; choose one of: {', '.join(NETWORKS)}")
    s = protocol.scale(profile)
    probe = probe if probe is not None else protocol.probe_images(profile)
    spec = (protocol.student(profile, arch, layer, seed=seed) if network == "student"
            else protocol.baseline(profile, arch, seed=seed))
    run = runs.train_or_load(spec)
    epochs = tuple(s.checkpoints)
    maps = torch.stack([protocol.entropy(run, layer, probe, profile, epoch=e).entropy for e in epochs], dim=1)
    return trajectory(maps, probe.fg, epochs, protocol.weight_distances(run, layer, epochs), b=protocol.B[arch])


def effect_filter(profile, probe, keys: Sequence[Key]) -> dict[Key, Tensor]:
    """The released code's image filter (:func:`kdnb.concepts.effect_images`) on the final checkpoint g_M, as the
    released code compares two networks: per key ``(arch, layer, network, seed)``, the probe images that are
    "effect" images of *both* that seed's student and baseline (bool ``(N,)``)."""
    from ... import runs
    from ...concepts.metrics import effect_images
    from . import protocol

    last = protocol.scale(profile).checkpoints[-1]
    kept: dict[tuple, Tensor] = {}
    for arch, layer, _, seed in keys:
        if (arch, layer, seed) in kept:
            continue
        both = None
        for spec in (protocol.student(profile, arch, layer, seed), protocol.baseline(profile, arch, seed)):
            result = protocol.entropy(runs.train_or_load(spec), layer, probe, profile, epoch=last)
            ok = effect_images(result.entropy, probe.fg, result.valid)
            both = ok if both is None else both & ok
        kept[(arch, layer, seed)] = both
    return {key: kept[(key[0], key[1], key[3])] for key in keys}


def measure_all(profile, probe=None, architectures: Sequence[str] | None = None,
                layers: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> dict[Key, Trajectory]:
    """:func:`measure` for every architecture of the profile's scale (or ``architectures``), every FC layer (or
    ``layers``), every seed (or ``seeds``), student and baseline: ``{(arch, layer, network, seed): Trajectory}``."""
    from . import protocol

    s = protocol.scale(profile)
    probe = probe if probe is not None else protocol.probe_images(profile)
    return {(arch, layer, network, seed): measure(profile, arch, layer, network, probe, seed)
            for arch in (architectures or s.architectures) for layer in (layers or protocol.LAYERS)
            for seed in (seeds if seeds is not None else s.seeds) for network in NETWORKS}


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
