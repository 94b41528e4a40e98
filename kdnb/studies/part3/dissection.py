"""Dissecting dark knowledge and LE (Gu et al. 2020, §3 / Table 1 and §5.4 / Table 6): run lists, result frames,
the paper's numbers and the figures of chapters III.1 and III.4.

What each transform of §3 does to a batch (Eqs. 2–5) is computed by the methods' own functions in
:mod:`kdnb.distill.dark_knowledge`; this module only lays their outputs side by side:

* :func:`sample_weights_frame`: the weight each sample of a batch gets under plain cross-entropy (Eq. 2–3,
  :math:`1/b`), CWTM (Eq. 5, :math:`q_i^{max}/\\sum_j q_j^{max}`), CWTM-Permut (the same weights permuted in the
  batch) and CWTM-Random (:math:`q_i^{max}` drawn from :math:`[\\beta, 1)`), against the teacher's confidence;
* :func:`dkpp_frame`: one sample's softened teacher output (Eq. 4's :math:`q_i`) before and after DKPP's
  permutation of the non-argmax entries.

The run lists (:func:`table1_spec`, :func:`table6_spec`, :func:`warmup_spec`) build every run through
:func:`.scale.part3`, so a run another chapter asks for (the CE and LE ResNets, the MLP, LS) is
one cached run.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from torch import Tensor

from ... import distill, runs
from ...profiles import Profile
from . import scale

VALUE = "test accuracy (%)"

# ------------------------------------------------------------------------------------------------ Table 1 (§3)
#: Table 1's columns: label -> (method name, method arguments). β = 0.5 for CWTM-Random as in §3; KD and DKPP
#: keep KD's defaults (T = 4, α = 0.9: the paper hides T in §3 and states T = 4, λ = 0.1 for KD in §5.3).
TABLE1_METHODS: dict[str, tuple[str, dict]] = {
    "CE": ("ce", {}),
    "KD": ("kd", {}),
    "CWTM": ("cwtm", {}),
    "CWTM-Permut": ("cwtm_permut", {}),
    "CWTM-Random": ("cwtm_random", {"beta": 0.5}),
    "DKPP": ("dkpp", {}),
}
#: Table 1 (CIFAR-10, five trials, mean and std): the teacher CNN-10 reaches 90.04 %.
TABLE1_TEACHER_PAPER = 90.04
TABLE1_PAPER: dict[str, dict[str, tuple[float, float]]] = {
    "cnn8": {"CE": (86.86, 0.30), "KD": (88.48, 0.33), "CWTM": (87.03, 0.26), "CWTM-Permut": (87.41, 0.32),
             "CWTM-Random": (87.22, 0.17), "DKPP": (87.73, 0.37)},
    "cnn6": {"CE": (85.18, 0.32), "KD": (86.55, 0.32), "CWTM": (85.65, 0.38), "CWTM-Permut": (85.74, 0.33),
             "CWTM-Random": (85.25, 0.31), "DKPP": (86.30, 0.42)},
}
PAPER_TRIALS = 5

#: The students of Table 1 trained at each profile. The paper's two (CNN-8, CNN-6) at ``paper``; below it CNN-6
#: alone: 6 methods x 3 seeds of CNN-8 cost ~15 min at Part III's book scale (2-core CPU), over the chapter's
#: budget, while CNN-6's cost ~10 min with the teacher.
TABLE1_STUDENTS: dict[str, tuple[str, ...]] = {"smoke": ("cnn6",), "book": ("cnn6",), "paper": ("cnn8", "cnn6")}


def table1_students(profile: Profile) -> tuple[str, ...]:
    """The students of Table 1 at ``profile`` (:data:`TABLE1_STUDENTS`)."""
    if profile.name not in TABLE1_STUDENTS:
        raise ValueError(f"no Table 1 students for profile {profile.name!r}; choose one of: "
                         f"{', '.join(TABLE1_STUDENTS)}")
    return TABLE1_STUDENTS[profile.name]


def table1_teacher(profile: Profile) -> runs.RunSpec:
    """Table 1's teacher (:func:`.scale.part3_teacher` for CNN students): the paper's CNN-10 at ``paper``;
    below it Part 0's teacher, trained once on ten times the students' data, so that it leads them as the
    paper's teacher leads its students (the KD-family premise)."""
    return scale.part3_teacher(profile, "cnn")


#: Table 1's columns whose claims decide §3's argument (KD − CE and DKPP − CE): at ``book`` they run on
#: :func:`.scale.part3_seeds`' five seeds, the CWTM family on its three.
TABLE1_DECISIVE: tuple[str, ...] = ("CE", "KD", "DKPP")


def table1_seeds(profile: Profile, label: str) -> tuple[int, ...]:
    """The seeds column ``label`` of Table 1 runs at ``profile`` (:data:`TABLE1_DECISIVE` on the decisive
    seeds)."""
    _checked(label, TABLE1_METHODS)
    return scale.part3_seeds(profile, decisive=label in TABLE1_DECISIVE)


def table1_specs(profile: Profile, student: str, teacher: runs.RunSpec) -> list[tuple[dict, runs.RunSpec]]:
    """Every run of Table 1 for ``student``: ``({"model", "method", "seed"}, spec)`` per column and seed."""
    return [({"model": student, "method": label, "seed": seed}, table1_spec(profile, student, label, seed, teacher))
            for label in TABLE1_METHODS for seed in table1_seeds(profile, label)]


def _checked(label: str, columns: Mapping[str, tuple[str, dict]]) -> tuple[str, dict]:
    if label not in columns:
        raise ValueError(f"unknown column {label!r}; choose one of: {', '.join(columns)}")
    return columns[label]


def table1_spec(profile: Profile, student: str, label: str, seed: int, teacher: runs.RunSpec) -> runs.RunSpec:
    """The run of Table 1's column ``label`` for ``student`` and ``seed``; the teacher run only goes to methods
    that require one (CE and CWTM-Random take none)."""
    method, args = _checked(label, TABLE1_METHODS)
    needs_teacher = distill.method_class(method).requires_teacher
    return scale.part3(profile, student, method, seed, dict(args), teacher if needs_teacher else None)


# ------------------------------------------------------------------------------------------------ Table 6 (§5.4)
#: Table 6's rows per model: label -> (method, arguments). "LE" is LE(Grad-CAM) on the ResNets and LE(Grad) on
#: the MLP (Grad-CAM needs a convolutional layer), as in the paper; LE-Permut uses the same explanation. LS is
#: label smoothing at α = 0.9, the value §5.1 found best and §5.4.1 quotes.
TABLE6_MODELS: tuple[str, ...] = ("resnet8", "resnet14", "mlp")
#: The models of Table 6 trained below ``paper``: the ResNet-14's twelve runs (twice a ResNet-8's cost each) do
#: not fit Part III's budget once its students train long enough to over-fit; ``paper`` trains all three.
TABLE6_BOOK_MODELS: tuple[str, ...] = ("resnet8", "mlp")
TABLE6_ROWS: tuple[str, ...] = ("CE", "LS", "LE-Permut", "LE")
TABLE6_PAPER: dict[str, dict[str, tuple[float, float]]] = {
    "resnet8": {"CE": (87.95, 0.32), "LS": (88.14, 0.16), "LE-Permut": (88.22, 0.05), "LE": (88.70, 0.18)},
    "resnet14": {"CE": (90.26, 0.33), "LS": (90.52, 0.12), "LE-Permut": (90.91, 0.16), "LE": (91.21, 0.07)},
    # MNIST; LS from Table 3 (test error 1.25 ± 0.02 %).
    "mlp": {"CE": (98.61, 0.05), "LS": (98.75, 0.02), "LE-Permut": (98.81, 0.04), "LE": (98.90, 0.03)},
}


def table6_models(profile: Profile) -> tuple[str, ...]:
    """The models of Table 6 at ``profile``: :data:`TABLE6_MODELS` at ``paper``, :data:`TABLE6_BOOK_MODELS`
    below."""
    return TABLE6_MODELS if profile.name == "paper" else TABLE6_BOOK_MODELS


def explanation_args(model: str) -> dict:
    """LE's arguments for ``model``: none (Grad-CAM, the shared run) for CNNs, ``{"explanation": "grad"}`` for
    the MLP."""
    return {"explanation": "grad"} if model.startswith("mlp") else {}


def table6_spec(profile: Profile, model: str, label: str, seed: int) -> runs.RunSpec:
    """The run of Table 6's row ``label`` (one of :data:`TABLE6_ROWS`) for ``model`` and ``seed``."""
    methods = {"CE": ("ce", {}), "LS": ("ls", {"alpha": 0.9}), "LE-Permut": ("le_permut", explanation_args(model)),
               "LE": ("le", explanation_args(model))}
    method, args = _checked(label, methods)
    return scale.part3(profile, model, method, seed, dict(args))


def available_rows(rows: Sequence[str] = TABLE6_ROWS) -> list[str]:
    """The rows of Table 6 whose method is registered (LS lands in :mod:`kdnb.distill` separately)."""
    method_of = {"CE": "ce", "LS": "ls", "LE-Permut": "le_permut", "LE": "le"}
    return [r for r in rows if method_of[r] in distill.METHODS]


#: Our ablation (not in the paper): LE's warm-up share. 0.2 is the book's default (the paper's 10 of 50 MLP
#: epochs); 0 starts LE's targets from the untrained network's explanations, which §4 says would mislead it.
WARMUPS: tuple[float, ...] = (0.0, 0.2)


def warmup_spec(profile: Profile, model: str, warmup: float, seed: int) -> runs.RunSpec:
    """LE(Grad-CAM) on ``model`` with a warm-up of ``warmup`` of the epochs (0.2 is the shared LE run)."""
    return scale.part3(profile, model, "le", seed, {**explanation_args(model), "warmup": float(warmup)})


def table6_specs(profile: Profile, models: Sequence[str], seeds: Sequence[int] | None = None,
                 rows: Sequence[str] | None = None) -> list[tuple[dict, runs.RunSpec]]:
    """Every run of Table 6 for ``models``: ``({"model", "method", "seed"}, spec)`` per model, seed (default
    :func:`.scale.part3_seeds`) and row (default :func:`available_rows`)."""
    seeds = scale.part3_seeds(profile) if seeds is None else seeds
    rows = available_rows() if rows is None else rows
    return [({"model": model, "method": row, "seed": seed}, table6_spec(profile, model, row, seed))
            for model in models for seed in seeds for row in rows]


def warmup_specs(profile: Profile, model: str, seeds: Sequence[int] | None = None) -> list[tuple[dict, runs.RunSpec]]:
    """The warm-up ablation on ``model``: per share of :data:`WARMUPS` and seed (default
    :func:`.scale.part3_seeds`), ``({"model", "method", "warmup", "seed", "warm-up epochs"}, spec)``."""
    seeds = scale.part3_seeds(profile) if seeds is None else seeds
    epochs = scale.part3_profile(profile).epochs
    return [({"model": model, "method": f"warm-up {w:g}", "warmup": w, "seed": seed,
              "warm-up epochs": distill.LE(torch.nn.Identity(), warmup=w).warmup_epochs(epochs)},
             warmup_spec(profile, model, w, seed))
            for w in WARMUPS for seed in seeds]


# ------------------------------------------------------------------------------------------------ chapter runs
# What chapters III.1 and III.4 train, from the functions they call, so that `python -m kdnb plan` agrees with them.
def dark_knowledge_runs(profile: Profile, students: Sequence[str] | None = None) -> list[runs.RunSpec]:
    """The runs chapter III.1 trains: Table 1's teacher and every run of Table 1 for each of ``students`` (the
    chapter's ``STUDENTS``; default :func:`table1_students`)."""
    teacher = table1_teacher(profile)
    return [teacher, *(spec for student in (students or table1_students(profile))
                       for _, spec in table1_specs(profile, student, teacher))]


def ablations_runs(profile: Profile, models: Sequence[str] | None = None,
                   warmup_model: str = "resnet8") -> list[runs.RunSpec]:
    """The runs chapter III.4 trains: Table 6 for ``models`` (the chapter's ``MODELS``; default
    :func:`table6_models`) and the warm-up ablation on ``warmup_model`` (its ``WARMUP_MODEL``)."""
    chosen = list(models or table6_models(profile))
    return [spec for _, spec in table6_specs(profile, chosen) + warmup_specs(profile, warmup_model)]


# ------------------------------------------------------------------------------------------------ results
def results_frame(specs: Iterable[tuple[dict, runs.RunSpec]], profile: Profile) -> pd.DataFrame:
    """Train or load every run and return one row per run: the given labels (e.g. model, method, seed), the
    final test accuracy in percent on Part III's evaluation set (:func:`.scale.part3_test_accuracy`), and
    the run's key."""
    rows = []
    for labels, spec in specs:
        run = runs.train_or_load(spec)
        rows.append({**labels, VALUE: scale.part3_test_accuracy(run, profile), "run": spec.key()})
    return pd.DataFrame(rows)


def paper_column(paper: Mapping[str, tuple[float, float]], trials: int = PAPER_TRIALS) -> dict[str, str]:
    """The paper's ``(mean, std)`` per label as ``"mean ± std (n=trials)"`` strings for a table's paper column."""
    return {label: f"{mean:.2f} ± {std:.2f} (n={trials})" for label, (mean, std) in paper.items()}


def paper_gain(paper: Mapping[str, tuple[float, float]], a: str, b: str) -> float:
    """The paper's difference of means ``a − b`` (accuracy points)."""
    return paper[a][0] - paper[b][0]


def gains_over(frame: pd.DataFrame, baseline: str, by: str = "model", method: str = "method",
               seed: str = "seed", value: str = VALUE) -> pd.DataFrame:
    """Per-seed gains ``value(method) − value(baseline)`` within each group of ``by`` (paired by ``seed``);
    one row per group, method and seed, the baseline's own rows left out."""
    rows = []
    for group, part in frame.groupby(by, sort=False):
        base = part[part[method] == baseline].set_index(seed)[value]
        if base.empty:
            raise ValueError(f"{by} == {group!r} has no {method} == {baseline!r} rows")
        for _, row in part[part[method] != baseline].iterrows():
            if row[seed] in base.index:
                rows.append({by: group, method: row[method], seed: row[seed],
                             "gain (points)": row[value] - base.loc[row[seed]]})
    return pd.DataFrame(rows, columns=[by, method, seed, "gain (points)"])


def accuracy_and_gain_figure(frame: pd.DataFrame, baseline: str, order: Sequence[str],
                             paper: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
                             by: str = "model", titles: Mapping[str, str] | None = None) -> Figure:
    """One column per group of ``by``: above, test accuracy per method (one dot per seed, mean ± std); below,
    each method's gain over ``baseline`` per seed (paired), with the paper's difference of means as a black ×
    where ``paper`` has the group (absolute accuracies are not comparable across data sets, gains more nearly)."""
    groups = list(dict.fromkeys(frame[by]))
    gains = gains_over(frame, baseline, by=by)
    fig, axes = plt.subplots(2, len(groups), figsize=(0.75 * len(order) * len(groups) + 1.5, 6.2), squeeze=False)
    palette = dict(zip(order, sns.color_palette(n_colors=len(order))))
    for column, group in enumerate(groups):
        part = frame[frame[by] == group]
        shown = [m for m in order if m in set(part["method"])]
        top, bottom = axes[0, column], axes[1, column]
        sns.stripplot(part, x="method", y=VALUE, hue="method", order=shown, palette=palette, legend=False,
                      ax=top, size=6, alpha=0.75, jitter=0.08)
        sns.pointplot(part, x="method", y=VALUE, order=shown, errorbar="sd", color="black", markers="_",
                      linestyles="none", capsize=0.15, ax=top)
        top.set_title((titles or {}).get(group, str(group)))
        top.set_xlabel("")
        top.tick_params(axis="x", labelrotation=35)
        others = [m for m in shown if m != baseline]
        part_gain = gains[gains[by] == group]
        sns.stripplot(part_gain, x="method", y="gain (points)", hue="method", order=others, palette=palette,
                      legend=False, ax=bottom, size=6, alpha=0.75, jitter=0.08)
        bottom.axhline(0, color="gray", lw=1, ls="--")
        if paper is not None and group in paper:
            xs = [i for i, m in enumerate(others) if m in paper[group]]
            ys = [paper_gain(paper[group], others[i], baseline) for i in xs]
            bottom.scatter(xs, ys, marker="x", color="black", s=50, zorder=5, label="paper (difference of means)")
            bottom.legend(loc="best", fontsize=7)
        bottom.set_ylabel(f"gain over {baseline} (points)")
        bottom.set_xlabel("")
        bottom.tick_params(axis="x", labelrotation=35)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------ §3 transforms
def sample_weights_frame(teacher_logits: Tensor, beta: float = 0.5, seed: int = 0) -> pd.DataFrame:
    """The weight of each sample of a batch under CE (:math:`1/b`, Eq. 2), CWTM (Eq. 5), CWTM-Permut and
    CWTM-Random (β), beside the teacher's confidence :math:`q_i^{max}`. Weights are given relative to CE's
    (``b · w_i``: 1 means "as in plain cross-entropy"). The random draws use a generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    logits = teacher_logits.detach().float().cpu()
    b = logits.shape[0]
    confidence = distill.teacher_confidence(logits)
    weights = {
        "CE": torch.full((b,), 1.0 / b),
        "CWTM": distill.cwtm_weights(confidence),
        "CWTM-Permut": distill.cwtm_permut_weights(confidence, generator=generator),
        "CWTM-Random": distill.cwtm_weights(distill.cwtm_random_confidence(b, beta, generator=generator)),
    }
    return pd.DataFrame([{"sample": i, "teacher confidence": float(confidence[i]), "transform": name,
                          "relative weight": float(b * w[i])} for name, w in weights.items() for i in range(b)])


def dkpp_frame(teacher_logits: Tensor, index: int, class_names: Sequence[str], temperature: float = 4.0,
               seed: int = 0) -> pd.DataFrame:
    """Sample ``index``'s softened teacher output :math:`\\mathrm{softmax}(z/T)` and DKPP's target (the same
    output with its non-argmax entries permuted), one row per class and target."""
    generator = torch.Generator().manual_seed(seed)
    logits = teacher_logits.detach().float().cpu()
    permuted = distill.dkpp_permute(logits, generator=generator)[index]
    rows = []
    for name, z in (("teacher (KD)", logits[index]), ("permuted (DKPP)", permuted)):
        probs = torch.softmax(z / temperature, dim=0)
        rows += [{"class": class_names[k], "target": name, "probability": float(probs[k])}
                 for k in range(len(class_names))]
    return pd.DataFrame(rows)


def transforms_figure(weights: pd.DataFrame, targets: pd.DataFrame, label: str = "") -> Figure:
    """Left: relative sample weight against the teacher's confidence for each CWTM-family transform (CE at 1).
    Right: one sample's KD target and its DKPP permutation (``label`` names the sample's class)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12.5, 3.8), gridspec_kw={"width_ratios": [1, 1.3]})
    sns.scatterplot(weights, x="teacher confidence", y="relative weight", hue="transform", style="transform",
                    ax=left, s=28, alpha=0.8)
    sns.move_legend(left, "upper left", bbox_to_anchor=(1, 1), fontsize=8, title_fontsize=9)
    left.set_ylabel("sample weight × batch size")
    left.set_title("sample weights in one batch")
    sns.barplot(targets, x="class", y="probability", hue="target", ax=right)
    sns.move_legend(right, "upper left", bbox_to_anchor=(1, 1), fontsize=8, title_fontsize=9)
    right.tick_params(axis="x", labelrotation=40)
    right.set_xlabel("")
    right.set_title(f"one {label} sample: KD target vs. DKPP target" if label else "KD target vs. DKPP target")
    fig.tight_layout()
    return fig


def batch_logits(model: torch.nn.Module, spec: runs.RunSpec, split: str = "train") -> tuple[Tensor, Tensor]:
    """``model``'s logits on the first batch ``spec`` trains on (epoch 0, the run's seed) and its labels."""
    x, y = next(iter(runs.batches(spec, split).batches(0, spec.seed)))
    model.eval()
    with torch.no_grad():
        return model(x).cpu(), y.cpu()


def weight_spread(weights: pd.DataFrame) -> pd.DataFrame:
    """Per transform: the smallest and largest relative weight in the batch and their ratio (how unequal the
    batch's importance weighting is), and the correlation of the weight with the teacher's confidence."""
    rows = []
    for name, part in weights.groupby("transform", sort=False):
        w, c = part["relative weight"].to_numpy(), part["teacher confidence"].to_numpy()
        corr = float(np.corrcoef(w, c)[0, 1]) if w.std() > 0 and c.std() > 0 else float("nan")
        rows.append({"transform": name, "min": float(w.min()), "max": float(w.max()),
                     "max / min": float(w.max() / w.min()), "correlation with confidence": corr})
    return pd.DataFrame(rows).set_index("transform")


def le_target_frame(maps: Tensor, labels: Tensor, index: int, class_names: Sequence[str], alpha: float = 0.9,
                    seed: int = 0) -> pd.DataFrame:
    """Sample ``index``'s LE target (Eq. 6, from its class maps ``maps`` (N, K, ...)) and LE-Permut's (the same
    target with its non-ground-truth entries permuted, §5.4.1), one row per class and target."""
    generator = torch.Generator().manual_seed(seed)
    q = distill.le_targets(maps.detach().float().cpu(), labels.cpu(), alpha)
    permuted = distill.permute_except(q, labels.cpu(), generator=generator)
    return pd.DataFrame([{"class": class_names[k], "target": name, "probability": float(t[index, k])}
                         for name, t in (("LE", q), ("LE-Permut", permuted)) for k in range(len(class_names))])


def targets_figure(targets: pd.DataFrame, title: str = "") -> Figure:
    """Bars of the probability per class for each target in ``targets`` (as :func:`le_target_frame` makes)."""
    fig, ax = plt.subplots(figsize=(8.5, 3.4))
    sns.barplot(targets, x="class", y="probability", hue="target", ax=ax)
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1, 1), fontsize=8, title_fontsize=9)
    ax.tick_params(axis="x", labelrotation=40)
    ax.set_xlabel("")
    ax.set_title(title)
    fig.tight_layout()
    return fig
