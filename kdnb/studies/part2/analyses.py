"""Chapter II.5, how IE-KD works (Huang et al. 2021, §4.7, Figs. 1, 3 and 4): LRP heat maps, CKA between the
inheritance and exploration features, active neurons and sharpness, for the students of Table 1's first pair.

Every network here is a Table 1 run (:func:`.scale.part2_student`: the CE, KD and IE-FT students, the teacher),
so II.5 trains nothing of its own; every measurement is cached by the runs it reads (:func:`kdnb.cache.cached`).

* :func:`lrp_maps`: LRP heat maps (:func:`kdnb.explain.lrp`, the composite rules) of the teacher, the CE and KD
  students, and the IE-FT student whole and through its inheritance and exploration channels (the masked head of
  :func:`kdnb.explain.group_relevance`; the two group maps sum to the whole map), for the true class of each image;
* :func:`map_similarity`: the cosine between two networks' heat maps of the same image, the measure of "resemble"
  (§4.7: the inheritance part's maps resemble the teacher's; Fig. 1: the KD student's resemble the teacher's);
* :func:`split_cka`: linear CKA between the inheritance and the exploration channels of the last feature map, for
  the IE-FT student and for the CE student of the same seed (the same initial weights, the same data, the IE
  run's channel split), Fig. 4a;
* :func:`active_counts`: active neurons (:func:`kdnb.analysis.active_neurons`) of the pooled penultimate vector
  and of the last feature map before its final ReLU, Fig. 4b;
* :func:`sharpness_curve`: the training loss under Gaussian noise on the weights (:func:`kdnb.analysis.noisy_loss`),
  Fig. 4c.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ... import cache, runs
from ...analysis.representation import ACTIVE_THRESHOLD, active_neurons, collect_features, feature_matrix, linear_cka
from ...analysis.sharpness import noisy_loss
from ...distill.features import last_stage
from ...explain.lrp import group_relevance, heatmap, lrp
from ...profiles import Profile
from ..part3 import scale as part3_scale
from . import scale

VERSION = 1
#: The four networks of Figs. 1 and 3 (and the explorer), with the CE student and the whole IE-FT map beside.
NETWORKS = ("teacher", "CE", "KD", "IE-FT", "IE-FT inheritance", "IE-FT exploration")
#: Test images per class whose maps :func:`map_similarity` averages over (a fixed draw, subset seed 0).
LRP_PER_CLASS = {"book": 20, "smoke": 3, "paper": 20}
#: Noise scales σ of Fig. 4c (absolute: every parameter gets σ·z, the paper's wording) and draws per σ.
SIGMAS = (0.0, 0.01, 0.02, 0.03, 0.04, 0.05)
DRAWS = {"book": 3, "smoke": 1}
#: Evaluation images per class for CKA and active neurons (a fixed draw of the test split).
REPRESENTATION_PER_CLASS = {"book": 100, "paper": 100}


def first_pair(profile: Profile) -> tuple[str, str]:
    """The (teacher, student) models II.5 studies: Table 1's first pair (:func:`.scale.part2_pairs`)."""
    return scale.part2_pairs(profile)[0]


def analysis_runs(profile: Profile, seeds: Sequence[int], student: str | None = None,
                  labels: Sequence[str] = ("CE", "KD", "IE-FT"),
                  ) -> tuple[runs.RunSpec, dict[tuple[str, int], runs.RunSpec]]:
    """The teacher spec and ``{(label, seed): spec}`` of the students II.5 reads, all through
    :func:`.scale.part2_student` (so they are Table 1's runs)."""
    teacher_model, default_student = first_pair(profile)
    teacher = scale.part2_teacher(profile, teacher_model)
    student = student or default_student
    return teacher, {(label, seed): scale.part2_student(profile, teacher, student, label, seed)
                     for label in labels for seed in seeds}


def chapter_runs(profile: Profile, sharpness_student: str | None = None) -> list[runs.RunSpec]:
    """The runs chapter II.5 trains: the teacher and the CE, KD and IE-FT students of :func:`analysis_runs` on
    Part II's decisive seeds, and, when ``sharpness_student`` (the chapter's ``SHARPNESS_STUDENT``) names another
    architecture, its students for Fig. 4c."""
    seeds = scale.part2_seeds(profile, decisive=True)
    teacher, students = analysis_runs(profile, seeds)
    out = [teacher, *students.values()]
    if sharpness_student is not None and sharpness_student != first_pair(profile)[1]:
        out += analysis_runs(profile, seeds, student=sharpness_student)[1].values()
    return out


def probe(profile: Profile, spec: runs.RunSpec, per_class: Mapping[str, int]) -> tuple[Tensor, Tensor]:
    """A fixed draw of the test split (``per_class[profile]`` images per class, else Part III's own test size;
    subset seed 0), normalised for ``spec``, as ``(images, labels)`` on the default device."""
    count = per_class.get(profile.name, part3_scale.part3_profile(profile).test_per_class)
    batches = runs.batches(spec.replace(test_per_class=count, subset_seed=0), "test").batches(0, 0)
    images, labels = zip(*batches)
    return torch.cat(images), torch.cat(labels)


def split_of(ie_run: runs.Run) -> dict[str, Tensor]:
    """The IE-FT run's channel split of its student's last stage: ``{"inheritance": ..., "exploration": ...}``."""
    split = ie_run.network("split", device="cpu")
    return {"inheritance": split.inherit.clone(), "exploration": split.explore.clone()}


# ------------------------------------------------------------------------------------------------ LRP
def _lrp_maps(teacher: runs.Run, ce: runs.Run, kd: runs.Run, ie: runs.Run, images: Tensor, labels: Tensor) -> dict:
    maps = {"teacher": lrp(teacher.model(), images, labels), "CE": lrp(ce.model(), images, labels),
            "KD": lrp(kd.model(), images, labels)}
    groups = group_relevance(ie.model(), images, labels, split_of(ie))
    maps.update({"IE-FT": groups["full"], "IE-FT inheritance": groups["inheritance"],
                 "IE-FT exploration": groups["exploration"]})
    return {name: heatmap(m).cpu() for name, m in maps.items()}


def lrp_maps(teacher: runs.Run, ce: runs.Run, kd: runs.Run, ie: runs.Run, images: Tensor,
             labels: Tensor) -> dict[str, Tensor]:
    """Heat maps ``(N, H, W)`` of :data:`NETWORKS` for ``images`` and their true classes ``labels`` (composite
    LRP rules, relevance summed over colour channels), cached by the four runs and the images."""
    return cache.cached("part2_lrp_maps", lambda: _lrp_maps(teacher, ce, kd, ie, images, labels),
                        runs=[teacher, ce, kd, ie], args={"images": images, "labels": labels, "rules": "composite"},
                        version=VERSION)


def map_similarity(a: Tensor, b: Tensor) -> Tensor:
    """Per image, the cosine between two signed heat maps ``(N, H, W)`` (1: the same pattern up to scale; 0:
    unrelated; negative: opposite evidence); an all-zero map gives 0."""
    return F.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1, eps=1e-30).float()


def group_logits(model: torch.nn.Module, images: Tensor, channels: Tensor | None = None) -> Tensor:
    """Logits of ``model`` computed from the pooled last-stage channels ``channels`` only (all when None), the
    classifier's bias kept: the partial logit a group's LRP map explains (the masked head)."""
    labels = torch.zeros(len(images), dtype=torch.long, device=images.device)
    pooled = collect_features(model, (images, labels), ["pooled"])["pooled"].to(images.device)
    weight, bias = model.classifier.weight.detach(), model.classifier.bias
    if channels is not None:
        mask = torch.zeros(weight.shape[1], dtype=weight.dtype, device=weight.device)
        mask[torch.as_tensor(channels, device=weight.device).long()] = 1.0
        weight = weight * mask
    with torch.no_grad():
        return F.linear(pooled, weight, None if bias is None else bias.detach()).cpu()


# ------------------------------------------------------------------------------------------------ CKA
def _split_cka(run: runs.Run, split: Mapping[str, Tensor], images: Tensor, labels: Tensor) -> dict:
    model = run.model()
    layer = last_stage(model)
    features = collect_features(model, (images, labels), [layer])[layer]
    result = {}
    for pooled in (False, True):
        inh = feature_matrix(features, split["inheritance"], pooled=pooled)
        exp = feature_matrix(features, split["exploration"], pooled=pooled)
        result["pooled" if pooled else "map"] = linear_cka(inh, exp)
    return result


def split_cka(run: runs.Run, split: Mapping[str, Tensor], images: Tensor, labels: Tensor) -> dict[str, float]:
    """Linear CKA (Kornblith et al.'s biased form) between ``run``'s inheritance and exploration channels of its
    last feature map (``split``: an IE-FT run's, :func:`split_of`) over ``images``: ``"map"`` on the flattened
    maps, ``"pooled"`` on the spatially averaged channels. Cached."""
    return cache.cached("part2_split_cka", lambda: _split_cka(run, split, images, labels), runs=run,
                        args={"split": dict(split), "images": images, "labels": labels}, version=VERSION)


# ------------------------------------------------------------------------------------------------ active neurons
def _active(run: runs.Run, images: Tensor, labels: Tensor, channels: Mapping[str, Tensor | None],
            threshold: float) -> dict:
    model = run.model()
    layer = last_stage(model)
    result = {"pooled": active_neurons(model, (images, labels), "pooled", threshold=threshold)["count"]}
    for name, index in channels.items():
        found = active_neurons(model, (images, labels), f"{layer}.pre", channels=index, threshold=threshold)
        result[f"map:{name}"] = found["count"]
        result[f"dim:{name}"] = found["dim"]
    return result


def active_counts(run: runs.Run, images: Tensor, labels: Tensor, channels: Mapping[str, Tensor | None] | None = None,
                  threshold: float = ACTIVE_THRESHOLD) -> dict[str, int]:
    """Active neurons (τ = ``threshold``) of ``run``'s network over ``images``: ``"pooled"`` for the penultimate
    vector (at most K − 1 with K classes), ``"map:<name>"`` for the last feature map before its final ReLU,
    restricted to each of ``channels`` (``{"all": None}`` by default; e.g. an IE-FT split's two groups), with
    ``"dim:<name>"`` its dimension. Cached."""
    channels = dict(channels or {"all": None})
    return cache.cached("part2_active_neurons", lambda: _active(run, images, labels, channels, threshold), runs=run,
                        args={"images": images, "labels": labels, "channels": channels, "threshold": threshold},
                        version=VERSION)


# ------------------------------------------------------------------------------------------------ sharpness
def training_batches(spec: runs.RunSpec):
    """The run's own training images, without augmentation, as a list of batches."""
    return list(runs.batches(spec.replace(augment=None), "train").batches(0, 0))


def sharpness_curve(run: runs.Run, sigmas: Sequence[float] = SIGMAS, draws: int = 3, seed: int = 0) -> dict:
    """Mean training loss of ``run``'s network on its own training images (no augmentation) with absolute
    Gaussian noise of each σ on every parameter (:func:`kdnb.analysis.noisy_loss`, common random numbers:
    ``seed``'s draws for every network of an architecture). Cached."""
    return cache.cached("part2_sharpness",
                        lambda: noisy_loss(run.model(), training_batches(run.spec), list(sigmas), draws=draws,
                                           seed=seed),
                        runs=run, args={"sigmas": list(sigmas), "draws": draws, "seed": seed}, version=VERSION)


def loss_increase(curve: Mapping) -> float:
    """The mean, over the noise scales of the curve, of the training loss's increase over the clean loss (the
    area under the curve of increases divided by the number of scales): one number per network for Fig. 4c's
    claim, fixed before any curve was seen."""
    return float((curve["mean"] - curve["clean"]).mean())


# ------------------------------------------------------------------------------------------------ figures
#: The four networks of the paper's Figs. 1 and 3, as the figures and the explorer show them.
SHOWN = ("teacher", "KD", "IE-FT inheritance", "IE-FT exploration")
#: The networks of the explorer: the four, with the independently trained (CE) student beside, as in Fig. 3.
EXPLORED = ("teacher", "CE", "KD", "IE-FT inheritance", "IE-FT exploration")
#: How many images the explorer offers beyond the first of each class: ones the CE student gets wrong and the
#: IE-FT student right (Fig. 3's choice).
EXPLORER_FIXED = 6


def _show_map(ax, relevance: Tensor, title: str = "") -> None:
    """A signed heat map, red positive and blue negative, on its own symmetric scale (max |R| = 1)."""
    scale = float(relevance.abs().max()) or 1.0
    ax.imshow((relevance / scale).numpy(), cmap="bwr", vmin=-1, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def _show_image(ax, image: Tensor, title: str = "") -> None:
    ax.imshow(image.detach().cpu().float().mean(0).numpy(), cmap="gray")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def lrp_figure(images: Tensor, labels: Tensor, maps: Mapping[str, Tensor], indices: Sequence[int],
               class_names: Sequence[str], networks: Sequence[str] = SHOWN, panel: float = 1.45):
    """One row per image of ``indices``: the image (its true class above) and the heat map of each network, each
    map on its own symmetric colour scale."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(indices), len(networks) + 1, squeeze=False,
                             figsize=(panel * (len(networks) + 1), panel * len(indices) + 0.3))
    for row, i in enumerate(indices):
        _show_image(axes[row, 0], images[i].cpu(), class_names[int(labels[i])])
        for column, name in enumerate(networks, start=1):
            _show_map(axes[row, column], maps[name][i], name if row == 0 else "")
    fig.tight_layout()
    return fig


def lrp_drawer(images: Tensor, labels: Tensor, maps: Mapping[str, Tensor], predictions: Mapping[str, Tensor],
               class_names: Sequence[str], networks: Sequence[str] = SHOWN):
    """``draw(image=i)`` for :func:`kdnb.widgets.explorer`: image ``i`` and its maps, each titled with the
    network and what it predicts for the image (``predictions[network]``: the network's class per image)."""
    import matplotlib.pyplot as plt

    def draw(image: int):
        fig, axes = plt.subplots(1, len(networks) + 1, figsize=(1.75 * (len(networks) + 1), 2.1))
        _show_image(axes[0], images[image].cpu(), f"true: {class_names[int(labels[image])]}")
        for ax, name in zip(axes[1:], networks):
            said = class_names[int(predictions[name][image])]
            _show_map(ax, maps[name][image], f"{name}\n→ {said}")
        fig.tight_layout()
        return fig

    return draw


def figure4(cka, active, sharp, claim_map: str = "map"):
    """The Fig. 4 analog, three panels: (a) inheritance–exploration CKA of the CE and IE-FT students, one line per
    seed joining the two; (b) active neurons of the last map before its ReLU, one dot per seed and network; (c)
    training loss against the noise scale, mean over seeds with one thin line per seed. ``cka``: rows (seed,
    network, map, pooled); ``active``: rows (seed, network, count); ``sharp``: rows (seed, network, σ, loss)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 3.6))
    for seed, part in cka.groupby("seed"):
        part = part.set_index("network").loc[["CE", "IE-FT"]]
        a.plot([0, 1], part[claim_map].to_numpy(), marker="o", color="gray", alpha=0.7)
    a.set_xticks([0, 1], ["CE (independent)", "IE-FT"])
    a.set_xlim(-0.4, 1.4)
    a.set_ylabel("linear CKA, inheritance vs exploration")
    a.set_title("(a) feature similarity")
    order = [n for n in ("CE", "KD", "IE-FT") if n in set(active["network"])]
    sns.stripplot(active, x="network", y="count", order=order, ax=b, size=6, jitter=0.08)
    b.set_ylabel("active neurons")
    b.set_xlabel("")
    b.set_title("(b) active neurons")
    palette = dict(zip(("CE", "KD", "IE-FT"), sns.color_palette(n_colors=3)))
    for (network, seed), part in sharp.groupby(["network", "seed"]):
        c.plot(part["sigma"], part["loss"], color=palette.get(network), alpha=0.3, lw=1)
    for network, part in sharp.groupby("network"):
        mean = part.groupby("sigma")["loss"].mean()
        c.plot(mean.index, mean.to_numpy(), color=palette.get(network), lw=2.2, marker="o", label=network)
    c.set_xlabel("σ of the Gaussian noise on the weights")
    c.set_ylabel("training loss")
    c.legend(fontsize=8)
    c.set_title("(c) loss under weight noise")
    fig.tight_layout()
    return fig
