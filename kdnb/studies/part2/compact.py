"""Chapter II.1, compact knowledge (Huang et al. 2021, §3.1, Eq. 1 and the supplement's Table 3): what the
teacher's factor auto-encoder learns and what its factor keeps of the teacher.

The auto-encoder runs are Part II's shared ones (:func:`.scale.part2_autoencoder`: seed 0 is the run that FT,
IE-FT, IE-AT and IE-OD of Table 1 read); II.1 trains the same part with more seeds to judge its claims. Measured,
all on the teacher's last-stage map :math:`f_T` (after its final ReLU, the feature the auto-encoder encodes):

* :func:`factor_report`: on the evaluation images, the teacher's accuracy with :math:`f_T` replaced by the
  reconstruction :math:`R(f_T)` (the rest of the teacher, pooling and classifier, unchanged); the reconstruction's
  unexplained variance :math:`\\sum\\|f_T - R(f_T)\\|^2 / \\sum\\|f_T - \\bar f_T\\|^2`; nearest-class-mean (NCM)
  accuracy of the pooled feature and of the pooled factor (class means from 100 training images per class of the
  teacher's data); and the principal-component spectra of the two pooled representations;
* :func:`reconstruction_curve`: Eq. 1's loss per epoch, from the run's history.

The paper states the auto-encoder's design and gives no number about it: every claim here is ours, a reading of
§3.1's "compact features" that a measurement can test.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import Tensor

from ... import cache, runs
from ...analysis import Premise
from ...analysis.representation import collect_features, representation_head
from ...profiles import Profile
from ..part3 import scale as part3_scale
from . import scale

VERSION = 1
#: Training images per class the NCM class means are taken from (the teacher's own training split, no augmentation).
NCM_TRAIN_PER_CLASS = 100
#: The share of variance a principal-component count must explain (:func:`components_for`).
VARIANCE_SHARE = 0.95


#: II.1's auto-encoder seeds per profile (default: Part II's, :func:`.scale.part2_seeds`). Seed 0 is shared with
#: Table 1; each other seed is one more auto-encoder trained for the teacher's schedule on the teacher's data
#: (about half a teacher's training: a teacher forward and the auto-encoder's step per image). ``(0,)`` here makes
#: II.1 descriptive (no verdict) and free beyond Table 1.
AUTOENCODER_SEEDS: dict[str, tuple[int, ...]] = {}


def autoencoder_seeds(profile: Profile) -> tuple[int, ...]:
    """The seeds II.1 trains the teacher's auto-encoder with (:data:`AUTOENCODER_SEEDS`, else Part II's,
    :func:`.scale.part2_seeds`); seed 0 is the run Table 1's factor methods read."""
    return AUTOENCODER_SEEDS.get(profile.name, scale.part2_seeds(profile))


def chapter_specs(profile: Profile) -> tuple[runs.RunSpec, dict[int, runs.RunSpec]]:
    """Chapter II.1's runs: the teacher of Part II's first pair and ``{seed: its auto-encoder}`` for each seed of
    :func:`autoencoder_seeds` (seed 0 is the run Table 1's factor methods read)."""
    teacher = scale.part2_teacher(profile, scale.part2_pairs(profile)[0][0])
    return teacher, {seed: scale.part2_autoencoder(teacher, profile, seed=seed) for seed in autoencoder_seeds(profile)}


def chapter_runs(profile: Profile) -> list[runs.RunSpec]:
    """:func:`chapter_specs` as one list, the teacher first (for ``python -m kdnb plan``)."""
    teacher, autoencoders = chapter_specs(profile)
    return [teacher, *autoencoders.values()]


def evaluation_batches(profile: Profile, spec: runs.RunSpec):
    """Part II's evaluation images (Part III's: the whole test split at ``book``), normalised for ``spec``."""
    return runs.batches(part3_scale.part3_evaluation_spec(spec, profile), "test").batches(0, 0)


def _ncm_accuracy(train: Tensor, train_labels: Tensor, test: Tensor, test_labels: Tensor) -> float:
    """Accuracy (%) of the nearest class mean (Euclidean) fitted on ``train``."""
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    means = torch.stack([train[train_labels == k].mean(0) for k in range(classes)])
    predicted = torch.cdist(test.double(), means.double()).argmin(1)
    return 100.0 * float((predicted == test_labels).double().mean())


def components_for(variances: Tensor, share: float = VARIANCE_SHARE) -> int:
    """The fewest principal components whose variances (descending) explain ``share`` of the total."""
    total = float(variances.sum())
    if total <= 0:
        return 0
    cumulative = torch.cumsum(variances, 0) / total
    return int(torch.nonzero(cumulative >= share - 1e-12)[0]) + 1


def _spectrum(x: Tensor) -> Tensor:
    x = x.double() - x.double().mean(0, keepdim=True)
    return (torch.linalg.svdvals(x) ** 2 / max(x.shape[0] - 1, 1)).float()


def _compute_report(teacher_run: runs.Run, ae_run: runs.Run, profile: Profile) -> dict:
    teacher = teacher_run.model()
    autoencoder = ae_run.network("autoencoder").to(next(teacher.parameters()).device).eval()
    layer = autoencoder.layer
    head = representation_head(teacher, layer)
    test = collect_features(teacher, evaluation_batches(profile, teacher_run.spec), [layer, "logits"])
    train_spec = teacher_run.spec.replace(train_per_class=NCM_TRAIN_PER_CLASS, augment=None)
    train = collect_features(teacher, runs.batches(train_spec, "train").batches(0, 0), [layer])
    device = next(teacher.parameters()).device

    def encode(features: Tensor, batch: int = 500) -> tuple[Tensor, Tensor]:
        factors, recons = [], []
        with torch.no_grad():
            for start in range(0, len(features), batch):
                factor, recon = autoencoder(features[start:start + batch].to(device))
                factors.append(factor.cpu())
                recons.append(recon.cpu())
        return torch.cat(factors), torch.cat(recons)

    f_test, labels = test[layer], test["labels"]
    factor_test, recon_test = encode(f_test)
    factor_train, _ = encode(train[layer])
    with torch.no_grad():
        recon_logits = torch.cat([head(recon_test[i:i + 500].to(device)).cpu() for i in range(0, len(labels), 500)])
    original = 100.0 * float((test["logits"].argmax(1) == labels).double().mean())
    through = 100.0 * float((recon_logits.argmax(1) == labels).double().mean())
    agreement = 100.0 * float((recon_logits.argmax(1) == test["logits"].argmax(1)).double().mean())
    residual = float((f_test - recon_test).double().pow(2).sum())
    spread = float((f_test.double() - f_test.double().mean(0, keepdim=True)).pow(2).sum())
    pooled = {"feature": (train[layer].mean((2, 3)), f_test.mean((2, 3))),
              "factor": (factor_train.mean((2, 3)), factor_test.mean((2, 3)))}
    ncm = {name: _ncm_accuracy(tr, train["labels"], te, labels) for name, (tr, te) in pooled.items()}
    return {"layer": layer, "feature_shape": list(f_test.shape[1:]), "factor_shape": list(factor_test.shape[1:]),
            "images": int(len(labels)), "teacher_accuracy": original, "reconstruction_accuracy": through,
            "agreement": agreement, "unexplained_variance": residual / spread if spread > 0 else float("nan"),
            "ncm_feature": ncm["feature"], "ncm_factor": ncm["factor"],
            "spectrum_feature": _spectrum(pooled["feature"][1]), "spectrum_factor": _spectrum(pooled["factor"][1])}


def factor_report(teacher_run: runs.Run, ae_run: runs.Run, profile: Profile) -> dict:
    """What the factor of ``ae_run`` (an auto-encoder of ``teacher_run``'s last stage) keeps (module docstring),
    cached. Accuracies in %, on Part II's evaluation images; ``spectrum_*``: PCA variances of the pooled
    representations, descending."""
    return cache.cached("part2_factor_report", lambda: _compute_report(teacher_run, ae_run, profile),
                        runs=[teacher_run, ae_run],
                        args={"evaluation": part3_scale.part3_evaluation(profile), "ncm": NCM_TRAIN_PER_CLASS},
                        version=VERSION)


def reports_frame(reports: dict[int, dict]) -> pd.DataFrame:
    """One row per auto-encoder seed: the scalar measurements of :func:`factor_report`, with the PCA component
    counts (:func:`components_for`) of the pooled feature and factor."""
    rows = []
    for seed, r in reports.items():
        rows.append({"seed": seed, "teacher accuracy (%)": r["teacher_accuracy"],
                     "through reconstruction (%)": r["reconstruction_accuracy"],
                     "same prediction (%)": r["agreement"], "unexplained variance": r["unexplained_variance"],
                     "NCM, pooled feature (%)": r["ncm_feature"], "NCM, pooled factor (%)": r["ncm_factor"],
                     f"PCs for {VARIANCE_SHARE:.0%}, feature": components_for(r["spectrum_feature"]),
                     f"PCs for {VARIANCE_SHARE:.0%}, factor": components_for(r["spectrum_factor"])})
    return pd.DataFrame(rows).set_index("seed")


def reconstruction_curve(ae_runs: dict[int, runs.Run]) -> pd.DataFrame:
    """Eq. 1's training loss (``train_rec``, mean squared error per element) per epoch and seed."""
    return pd.DataFrame([{"seed": seed, "epoch": row["epoch"], "reconstruction loss": row["train_rec"]}
                         for seed, run in ae_runs.items() for row in run.history])


def autoencoder_premise(curve: pd.DataFrame) -> Premise:
    """II.1's premise: every seed's auto-encoder learned, i.e. Eq. 1's training loss after its last epoch is
    below that after its first. Without it an encoder is close to a random projection of the feature, which can
    keep nearest-class-mean accuracy by itself and make the factor claims vacuous."""
    losses = {seed: part.sort_values("epoch")["reconstruction loss"] for seed, part in curve.groupby("seed")}
    ends = {seed: (loss.iloc[0], loss.iloc[-1]) for seed, loss in losses.items()}
    measured = ", ".join(f"seed {seed}: {first:.3g} → {last:.3g}" for seed, (first, last) in ends.items())
    return Premise("Eq. 1's loss fell during training (last epoch < first), every auto-encoder seed", measured,
                   held=all(last < first for first, last in ends.values()),
                   remedy="train the auto-encoder longer (its schedule is the teacher's, scale.part2_autoencoder)")


def compact_figure(curve: pd.DataFrame, reports: dict[int, dict], title: str = "") -> Figure:
    """Left: Eq. 1's loss per epoch (one line per seed). Middle: share of variance explained by the first k
    principal components of the pooled feature and the pooled factor (seed 0's auto-encoder, or the first).
    Right: accuracy of the teacher on its own feature and through the reconstruction, and NCM accuracy on the
    pooled feature and factor, one dot per seed."""
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(13, 3.6), gridspec_kw={"width_ratios": [1, 1, 1.3]})
    for seed, part in curve.groupby("seed"):
        left.plot(part["epoch"], part["reconstruction loss"], marker="o", label=f"seed {seed}")
    left.set_xlabel("epoch")
    left.set_ylabel("Eq. 1 loss (MSE per element)")
    left.legend(fontsize=8)
    left.set_title("training the auto-encoder")
    first = reports[min(reports)]
    for name, key in (("pooled feature", "spectrum_feature"), ("pooled factor", "spectrum_factor")):
        v = first[key].double()
        share = torch.cumsum(v, 0) / v.sum()
        middle.plot(np.arange(1, len(share) + 1), share.numpy(), marker=".", label=f"{name} ({len(v)} dims)")
    middle.axhline(VARIANCE_SHARE, color="gray", ls="--", lw=1)
    middle.set_xscale("log")
    middle.set_xlabel("principal components")
    middle.set_ylabel("variance explained")
    middle.legend(fontsize=8)
    middle.set_title("how many directions the two use")
    labels = ["teacher", "teacher through R(f_T)", "NCM feature", "NCM factor"]
    keys = ["teacher_accuracy", "reconstruction_accuracy", "ncm_feature", "ncm_factor"]
    for i, key in enumerate(keys):
        values = [r[key] for r in reports.values()]
        right.scatter(np.full(len(values), i) + np.linspace(-0.08, 0.08, len(values)), values, s=30, alpha=0.8)
        right.plot([i - 0.2, i + 0.2], [np.mean(values)] * 2, color="black")
    right.set_xticks(range(len(labels)), labels, rotation=15, fontsize=8)
    right.set_ylabel("accuracy (%)")
    right.set_title("what the factor keeps")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def seeds_values(reports: dict[int, dict], key: str) -> list[float]:
    """``key`` of every report, in seed order."""
    return [float(reports[s][key]) for s in sorted(reports)]


def check_seeds(seeds: Sequence[int]) -> None:
    if 0 not in seeds:
        raise ValueError("II.1's seeds must include 0, the auto-encoder Table 1's factor methods read")
