"""Part II's result tables (Huang et al. 2021, §4.3–4.6 and supplement §2): which runs make each table, the
paper's numbers beside ours, and the frames the chapters show.

Every cell is a :class:`Cell` — a table row, a method, a seed, the spec of its run and, for mutual learning, which
of the run's networks it measures — so that the run lists can be read (and tested) without training, and every
table is measured by one function (:func:`measure`). The tables share runs by construction:

- Table 1 (:func:`table1_cells`): each pair of :func:`.scale.part2_pairs` × :func:`table1_labels`, all built by
  :func:`.scale.part2_student` — so its CE and KD ResNet-8 students are Part III's, and its IE-FT column is
  Table 5's η = 0.5 and Table 6's L1, λ = 50/50;
- supplement Table 2 (:func:`table_s2_cells`): a small teacher, a larger student;
- Table 4 (:func:`table4_cells`): independent training (Table 1's CE runs), DML and IE-DML, both networks;
- Table 5 (:func:`table5_cells`): IE-FT's inheriting share η;
- Table 6 (:func:`table6_cells`): IE-FT's metric and loss weights (partial L2 is the IE-OD run of Table 1, the
  baseline row the CE run).

The paper reports test **error** (%); the book reports accuracy, so the paper's figures are shown as
``100 − error`` (:func:`paper_accuracy`). Claims and premises are in :mod:`.table_verdicts`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import pandas as pd

from ... import cache, runs
from ...profiles import Profile
from ...runs import Run, RunSpec
from . import scale

ACCURACY = "test accuracy (%)"

# ------------------------------------------------------------------------------------------------ the paper
#: Table 1 (CIFAR-10, error %), by the paper's (teacher, student); "teacher" is the teacher's own error.
PAPER_TABLE1: dict[tuple[str, str], dict[str, float]] = {
    ("resnet56", "resnet20"): {"teacher": 6.39, "CE": 7.78, "KD": 7.37, "AT": 7.13, "FT": 6.85, "OD": 6.81,
                               "Tf-KD (S)": 7.41, "CRD": 6.80, "IE-AT": 6.70, "IE-FT": 6.57, "IE-OD": 6.53},
    ("wrn-40-1", "resnet20"): {"teacher": 6.84, "CE": 7.78, "KD": 7.46, "AT": 7.14, "FT": 6.85, "OD": 6.69,
                               "Tf-KD (S)": 7.51, "CRD": 6.77, "IE-AT": 6.81, "IE-FT": 6.57, "IE-OD": 6.49},
    ("wrn-46-4", "vgg13"): {"teacher": 4.44, "CE": 5.99, "KD": 5.59, "AT": 5.48, "FT": 4.84, "OD": 4.81,
                            "Tf-KD (S)": 5.48, "CRD": 4.81, "IE-AT": 4.75, "IE-FT": 4.67, "IE-OD": 4.65},
    ("wrn-16-2", "wrn-16-1"): {"teacher": 6.27, "CE": 8.62, "KD": 8.22, "AT": 8.01, "FT": 7.64, "OD": 7.48,
                               "Tf-KD (S)": 8.10, "CRD": 7.49, "IE-AT": 7.76, "IE-FT": 7.38, "IE-OD": 7.26},
}
#: Supplement Table 2 (CIFAR-10, error %): small teacher → large student (the pairs of Table 1 reversed).
PAPER_TABLE_S2: dict[tuple[str, str], dict[str, float]] = {
    ("resnet20", "resnet56"): {"teacher": 7.78, "CE": 6.39, "KD": 7.16, "AT": 6.90, "FT": 6.38, "OD": 6.45,
                               "Tf-KD (S)": 6.40, "CRD": 6.68, "IE-AT": 6.01, "IE-FT": 5.65, "IE-OD": 5.44},
    ("resnet20", "wrn-40-1"): {"teacher": 7.78, "CE": 6.84, "KD": 7.38, "AT": 7.14, "FT": 6.85, "OD": 6.69,
                               "Tf-KD (S)": 6.79, "CRD": 6.77, "IE-AT": 6.32, "IE-FT": 6.90, "IE-OD": 5.68},
    ("vgg13", "wrn-46-4"): {"teacher": 5.99, "CE": 4.44, "KD": 4.71, "AT": 4.78, "FT": 4.84, "OD": 4.51,
                            "Tf-KD (S)": 4.48, "CRD": 4.51, "IE-AT": 4.40, "IE-FT": 4.31, "IE-OD": 4.24},
    ("wrn-16-1", "wrn-16-2"): {"teacher": 8.62, "CE": 6.27, "KD": 6.83, "AT": 6.51, "FT": 6.32, "OD": 6.48,
                               "Tf-KD (S)": 6.11, "CRD": 6.31, "IE-AT": 5.78, "IE-FT": 5.62, "IE-OD": 5.35},
}
#: Table 4 (CIFAR-100, error %): (Net 1, Net 2) → {method: (Net 1, Net 2)}.
PAPER_TABLE4: dict[tuple[str, str], dict[str, tuple[float, float]]] = {
    ("resnet32", "resnet110"): {"Independent": (31.01, 26.91), "DML": (28.69, 25.59), "IE-DML": (28.36, 24.99)},
    ("resnet32", "wrn-28-10"): {"Independent": (31.01, 21.31), "DML": (29.27, 21.04), "IE-DML": (28.06, 20.63)},
    ("resnet32", "mobilenet"): {"Independent": (31.01, 26.35), "DML": (28.90, 23.87), "IE-DML": (28.33, 23.24)},
    ("resnet32", "resnet32"): {"Independent": (31.01, 31.01), "DML": (29.25, 28.81), "IE-DML": (28.59, 28.15)},
}
#: Table 5, its CIFAR-10 row (ResNet-56 → ResNet-20, error %), by η (the inheriting share of channels).
PAPER_TABLE5 = {0.0: 7.56, 0.3: 6.84, 0.5: 6.53, 0.7: 6.71, 1.0: 6.86}
ETAS = tuple(PAPER_TABLE5)
#: Table 6a (CIFAR-100, ResNet-110 → ResNet-32, error %), by :data:`kdnb.distill.inheritance.METRICS` name;
#: "CE" is the paper's baseline row.
PAPER_TABLE6A = {"l1": 25.67, "l2": 25.76, "cos": 26.38, "partial_l2": 26.71, "l1_cka": 26.60, "CE": 31.01}
METRIC_LABELS = {"l1": "L1", "l2": "L2", "cos": "cos", "partial_l2": "partial L2", "l1_cka": "L1 + CKA",
                 "CE": "baseline (CE)"}
#: Table 6b: (λ_inh, λ_exp) → error %; (0, 0) is the baseline (the CE run).
PAPER_TABLE6B = {(5, 5): 29.84, (50, 50): 25.67, (500, 500): 27.77, (50, 500): 26.69, (500, 50): 26.33,
                 (0, 0): 31.01}
DEFAULT_WEIGHTS = (50, 50)

#: The paper's row that each book pair of Table 1 stands for: ResNet-20 → ResNet-8 keeps the blocks and drops
#: layers, as ResNet-56 → ResNet-20; the MobileNet student has another building block than its teacher, as
#: VGG-13 (no shortcuts) under a WRN teacher.
PAPER_ANALOG = {("resnet20", "resnet8"): ("resnet56", "resnet20"), ("resnet20", "mobilenet"): ("wrn-46-4", "vgg13"),
                ("resnet8", "resnet20"): ("resnet20", "resnet56"),
                ("resnet8", "resnet8"): ("resnet32", "resnet32"), ("resnet8", "mobilenet"): ("resnet32", "mobilenet")}


def paper_accuracy(error: float) -> float:
    """The paper's error (%) as an accuracy (%): ``100 − error``."""
    return round(100.0 - error, 2)


def paper_pair(pair: tuple[str, str]) -> tuple[str, str]:
    """The paper's pair that ``pair`` stands for (itself at ``paper``; :data:`PAPER_ANALOG` below)."""
    return PAPER_ANALOG.get(tuple(pair), tuple(pair))


def arrow(pair: Sequence[str]) -> str:
    """``"resnet20 → resnet8"``."""
    return " → ".join(pair)


# ------------------------------------------------------------------------------------------------ cells
@dataclass(frozen=True)
class Cell:
    """One measured value of a table: ``row`` (a pair, an η, a metric), ``method`` (the column), ``seed``, the
    ``spec`` of the run and the ``network`` of it that is measured (``""``: the student; ``"peer"``: DML's
    other network)."""

    row: str
    method: str
    seed: int
    spec: RunSpec
    network: str = ""


#: The columns of Table 1 at each profile. ``book`` leaves out Tf-KD (S) (a second CE run per seed as teacher)
#: and CRD (a memory bank of the training set) to fit its time budget; ``smoke`` and ``paper`` run them.
TABLE1_LABELS = ("CE", "KD", "AT", "FT", "OD", "IE-AT", "IE-FT", "IE-OD")
TABLE1_EXTRA = ("Tf-KD (S)", "CRD")
IE_OF = {"IE-AT": "AT", "IE-FT": "FT", "IE-OD": "OD"}


#: The columns of the pairs after the first below ``paper``: the baseline and the factor path (auto-encoder, FT,
#: IE-FT, the paper's own instantiation) on another architecture. The MobileNet's steps cost about three
#: ResNet-8 steps on a CPU, so every column on it would not fit the ``book`` budget; ``paper`` runs them all.
OTHER_PAIR_LABELS = {"book": ("CE", "FT", "IE-FT"), "smoke": ("CE", "FT", "IE-FT")}
#: Seeds of the pairs after the first at ``book`` (two: descriptive); the first pair has the decisive seeds.
OTHER_PAIR_SEEDS = {"book": (0, 1)}


def table1_labels(profile: Profile, index: int = 0) -> tuple[str, ...]:
    """Table 1's columns at ``profile`` for pair number ``index`` (:data:`TABLE1_LABELS`, plus
    :data:`TABLE1_EXTRA` at ``paper`` and on the first pair at ``smoke``; :data:`OTHER_PAIR_LABELS` on the other
    pairs below ``paper``)."""
    if index > 0 and profile.name in OTHER_PAIR_LABELS:
        return OTHER_PAIR_LABELS[profile.name]
    extra = profile.name == "paper" or (profile.name == "smoke" and index == 0)
    labels = TABLE1_LABELS + TABLE1_EXTRA if extra else TABLE1_LABELS
    return tuple(label for label in ("CE", "KD", "AT", "FT", "OD", "Tf-KD (S)", "CRD", "IE-AT", "IE-FT", "IE-OD")
                 if label in labels)


#: Seeds of every table at ``smoke``: one (the smoke budget; every code path still runs, and every claim is
#: descriptive there).
SMOKE_SEEDS = (0,)


def seeds(profile: Profile, decisive: bool = False) -> tuple[int, ...]:
    """The seeds of Part II's tables: :func:`.scale.part2_seeds`, except :data:`SMOKE_SEEDS` at ``smoke``."""
    return SMOKE_SEEDS if profile.name == "smoke" else scale.part2_seeds(profile, decisive)


def table1_seeds(profile: Profile, index: int) -> tuple[int, ...]:
    """Seeds of Table 1's pair number ``index``: the decisive seeds on the first pair (IE-X − X is the paper's
    first observation, and the first pair's CE and KD runs are Part III's five); :data:`OTHER_PAIR_SEEDS` (else
    the others) on the rest."""
    if index == 0:
        return seeds(profile, decisive=True)
    return OTHER_PAIR_SEEDS.get(profile.name, seeds(profile))


def table1_cells(profile: Profile) -> list[Cell]:
    """Every cell of Table 1: each pair × each column × its seeds, from the pair's teacher."""
    cells = []
    for index, (teacher, student) in enumerate(scale.part2_pairs(profile)):
        teacher_spec = scale.part2_teacher(profile, teacher)
        for label in table1_labels(profile, index):
            for seed in table1_seeds(profile, index):
                cells.append(Cell(arrow((teacher, student)), label, seed,
                                  scale.part2_student(profile, teacher_spec, student, label, seed)))
    return cells


# Supplement Table 2: a small teacher and a large student.
TABLE_S2_PAIRS = {"paper": tuple(PAPER_TABLE_S2), "book": (("resnet8", "resnet20"),),
                  "smoke": (("resnet8", "resnet20"),)}
#: Its columns below ``paper``: the baseline, KD (which the paper's small teacher makes *worse*) and IE-FT (the
#: budget: a ResNet-20 step costs about three ResNet-8 steps); all of Table 1's at ``paper``.
TABLE_S2_LABELS = ("CE", "KD", "IE-FT")
#: Its seeds below ``paper``: two at ``book``, so its cells are descriptive (no verdict; see :mod:`.table_verdicts`).
TABLE_S2_SEEDS = {"book": (0, 1)}


def table_s2_pairs(profile: Profile) -> tuple[tuple[str, str], ...]:
    return TABLE_S2_PAIRS.get(profile.name, TABLE_S2_PAIRS["book"])


def table_s2_labels(profile: Profile) -> tuple[str, ...]:
    return table1_labels(profile) if profile.name == "paper" else TABLE_S2_LABELS


def table_s2_seeds(profile: Profile) -> tuple[int, ...]:
    return TABLE_S2_SEEDS.get(profile.name, seeds(profile))


def table_s2_teacher(profile: Profile, model: str) -> RunSpec:
    """The small teacher. At ``paper`` the paper's CE ``model`` on CIFAR-10 (:func:`.scale.part2_teacher`). Below
    it, the CE ``model`` student of seed 0 at Part II's scale — trained on a student's 100 images per class, as
    the paper's small teacher trains on the same data as its large student, so that the teacher is the *weaker*
    network (the paper's ResNet-20 teacher: 92.22% against its ResNet-56 student's 93.61%). Part 0's recipe on
    ten times the data would give a smaller but stronger teacher: ordinary distillation, not the regime of the
    supplement."""
    if profile.name == "paper":
        return scale.part2_teacher(profile, model)
    return scale.part2(profile, model, "ce", 0)


def table_s2_cells(profile: Profile) -> list[Cell]:
    cells = []
    for teacher, student in table_s2_pairs(profile):
        teacher_spec = table_s2_teacher(profile, teacher)
        for label in table_s2_labels(profile):
            for seed in table_s2_seeds(profile):
                cells.append(Cell(arrow((teacher, student)), label, seed,
                                  scale.part2_student(profile, teacher_spec, student, label, seed)))
    return cells


# Table 4: mutual learning.
TABLE4_PAIRS = {"paper": tuple(PAPER_TABLE4), "book": (("resnet8", "resnet8"), ("resnet8", "mobilenet")),
                "smoke": (("resnet8", "resnet8"), ("resnet8", "mobilenet"))}
TABLE4_METHODS = ("Independent", "DML", "IE-DML")
#: Seeds per pair at ``book``: three for the two ResNet-8s, two (descriptive) with the MobileNet, whose IE-DML step
#: costs about 1.4 times the ResNet-8 pair's (the budget); the other profiles use :func:`seeds` for every pair.
TABLE4_SEEDS = {"book": {("resnet8", "resnet8"): (0, 1, 2), ("resnet8", "mobilenet"): (0, 1)}}


def table4_seeds(profile: Profile, pair: tuple[str, str]) -> tuple[int, ...]:
    return TABLE4_SEEDS.get(profile.name, {}).get(tuple(pair), seeds(profile))


def table4_pairs(profile: Profile) -> tuple[tuple[str, str], ...]:
    return TABLE4_PAIRS.get(profile.name, TABLE4_PAIRS["book"])


def mutual(profile: Profile, net1: str, net2: str, method: str, seed: int) -> RunSpec:
    """One mutual-learning run of the pair (``net1``, ``net2``): the run's student is ``net2`` (with its Part II
    model arguments, e.g. the book's narrow MobileNet) and its peer ``net1`` (Table 4's fixed first network,
    built with the defaults of its architecture, or the student's own options when the two are one model). DML
    at its paper's λ = 1, T = 1 (Zhang et al.); IE-DML at λ_rec, λ_inh, λ_exp = 0.8, 50, 50 (§4.5)."""
    if method not in ("dml", "ie_dml"):
        raise ValueError(f"Table 4 runs 'dml' or 'ie_dml', not {method!r}")
    return scale.part2(profile, net2, method, seed, method_args={"peer": net1},
                       cifar100=profile.name == "paper")


def independent(profile: Profile, model: str, seed: int) -> RunSpec:
    """A network of Table 4 trained alone: Table 1's CE run of ``model`` (CIFAR-100 at ``paper``)."""
    return scale.part2(profile, model, "ce", seed, cifar100=profile.name == "paper")


def network_label(index: int, model: str) -> str:
    return f"Net {index}: {model}"


def table4_cells(profile: Profile) -> list[Cell]:
    """Both networks of each pair, trained alone (``Independent``), by DML and by IE-DML, on the seeds of
    :func:`.scale.part2_seeds`. The cell's ``row`` is ``"<net1> / <net2>"`` and its ``method``
    ``"<method> | Net k: <model>"``; the peer is measured with ``network="peer"``."""
    cells = []
    for net1, net2 in table4_pairs(profile):
        row = f"{net1} / {net2}"
        for seed in table4_seeds(profile, (net1, net2)):
            for index, model in ((1, net1), (2, net2)):
                cells.append(Cell(row, f"Independent | {network_label(index, model)}", seed,
                                  independent(profile, model, seed)))
            for label, method in (("DML", "dml"), ("IE-DML", "ie_dml")):
                spec = mutual(profile, net1, net2, method, seed)
                cells.append(Cell(row, f"{label} | {network_label(1, net1)}", seed, spec, network="peer"))
                cells.append(Cell(row, f"{label} | {network_label(2, net2)}", seed, spec))
    return cells


# Tables 5 and 6: IE-FT on the first pair (at ``paper``, Table 6 on CIFAR-100, ResNet-110 → ResNet-32).
TABLE6_PAPER_PAIR = ("resnet110", "resnet32")
#: Seeds of Table 6 below ``paper`` (two at ``book``: descriptive; the budget).
TABLE6_SEEDS = {"book": (0, 1)}
METRIC_ROW, WEIGHTS_ROW = "(a) metric", "(b) loss weights"


def ablation_pair(profile: Profile, table: int) -> tuple[str, str]:
    """The (teacher, student) of Table ``table`` (5 or 6): Table 1's first pair, except Table 6 at ``paper``."""
    if table == 6 and profile.name == "paper":
        return TABLE6_PAPER_PAIR
    return scale.part2_pairs(profile)[0]


def ablation_teacher(profile: Profile, table: int) -> RunSpec:
    """The teacher of Table ``table`` (5 or 6) at ``profile``."""
    teacher = ablation_pair(profile, table)[0]
    return scale.part2_teacher(profile, teacher, cifar100=table == 6 and profile.name == "paper")


def ablation_student(profile: Profile, table: int, label: str, seed: int, **overrides) -> RunSpec:
    """The student of Table ``table`` (5 or 6) trained with column ``label`` of Table 1 (``"CE"``: its baseline)."""
    student = ablation_pair(profile, table)[1]
    return scale.part2_student(profile, ablation_teacher(profile, table), student, label, seed,
                               cifar100=table == 6 and profile.name == "paper", **overrides)


def _ie_ft(profile: Profile, table: int, seed: int, **overrides) -> RunSpec:
    return ablation_student(profile, table, "IE-FT", seed, **overrides)


def table5_cells(profile: Profile) -> list[Cell]:
    """IE-FT at each η of :data:`ETAS` (η = 0.5 is Table 1's IE-FT run), on :func:`.scale.part2_seeds`."""
    row = arrow(ablation_pair(profile, 5))
    return [Cell(row, eta_label(eta), seed, _ie_ft(profile, 5, seed, eta=eta))
            for eta in table5_etas(profile) for seed in table5_seeds(profile)]


#: Seeds of Table 5 at ``book``: two (descriptive; the budget).
TABLE5_SEEDS = {"book": (0, 1)}


def table5_seeds(profile: Profile) -> tuple[int, ...]:
    return TABLE5_SEEDS.get(profile.name, seeds(profile))


def table5_etas(profile: Profile) -> tuple[float, ...]:
    """The η of Table 5 at ``profile``: :data:`ETAS`; at ``smoke`` the two ends and the middle."""
    return (0.0, 0.5, 1.0) if profile.name == "smoke" else ETAS


def eta_label(eta: float) -> str:
    return f"η = {eta:g}"


def table6_seeds(profile: Profile) -> tuple[int, ...]:
    return TABLE6_SEEDS.get(profile.name, seeds(profile))


#: Table 6b's (λ_inh, λ_exp) below ``paper``: the symmetric ones (the budget: the asymmetric 50/500 and 500/50
#: run at ``paper``); at ``smoke`` the default, one other and the baseline.
TABLE6_WEIGHTS = {"book": ((5, 5), (50, 50), (500, 500), (0, 0)), "smoke": ((5, 5), (50, 50), (0, 0))}


def table6_weights(profile: Profile) -> tuple[tuple[float, float], ...]:
    """Table 6b's (λ_inh, λ_exp) at ``profile`` (:data:`TABLE6_WEIGHTS`; the paper's six at ``paper``)."""
    return TABLE6_WEIGHTS.get(profile.name, tuple(PAPER_TABLE6B))


def table6_cells(profile: Profile) -> list[Cell]:
    """Table 6a (row :data:`METRIC_ROW`, one column per metric) and 6b (row :data:`WEIGHTS_ROW`, one column per
    (λ_inh, λ_exp)). L1 at λ = 50/50 is Table 1's IE-FT; partial L2 is Table 1's IE-OD run (IE-OD *is* IE-FT
    with the partial-L2 metric, §4.2); the baseline row is the CE run."""
    cells = []
    for seed in table6_seeds(profile):
        for metric in PAPER_TABLE6A:
            if metric == "CE":
                spec = ablation_student(profile, 6, "CE", seed)
            elif metric == "partial_l2":
                spec = ablation_student(profile, 6, "IE-OD", seed)
            else:
                spec = _ie_ft(profile, 6, seed, metric=metric)
            cells.append(Cell(METRIC_ROW, METRIC_LABELS[metric], seed, spec))
        for inh, exp in table6_weights(profile):
            if (inh, exp) == (0, 0):
                spec = ablation_student(profile, 6, "CE", seed)
            else:
                spec = _ie_ft(profile, 6, seed, lambda_inh=float(inh), lambda_exp=float(exp))
            cells.append(Cell(WEIGHTS_ROW, weights_label(inh, exp), seed, spec))
    return cells


def weights_label(inh: float, exp: float) -> str:
    if (inh, exp) == (0, 0):
        return "0 / 0 (CE)"
    return f"{inh:g} / {exp:g}"


# ------------------------------------------------------------------------------------------------ the paper's cells
Paper = dict[tuple[str, str], float]


def table1_paper(profile: Profile, pairs: Sequence[tuple[str, str]] | None = None,
                 source: dict | None = None) -> Paper:
    """The paper's accuracy for each (row, column) of Table 1 at ``profile`` (the analog row below ``paper``),
    ``"teacher"`` included. ``pairs``/``source`` serve supplement Table 2 too."""
    pairs = scale.part2_pairs(profile) if pairs is None else pairs
    source = PAPER_TABLE1 if source is None else source
    out: Paper = {}
    for pair in pairs:
        for label, error in source.get(paper_pair(pair), {}).items():
            out[arrow(pair), label] = paper_accuracy(error)
    return out


def table_s2_paper(profile: Profile) -> Paper:
    return table1_paper(profile, table_s2_pairs(profile), PAPER_TABLE_S2)


def table4_paper(profile: Profile) -> Paper:
    out: Paper = {}
    for net1, net2 in table4_pairs(profile):
        for method, errors in PAPER_TABLE4.get(paper_pair((net1, net2)), {}).items():
            for index, (model, error) in enumerate(zip((net1, net2), errors), start=1):
                out[f"{net1} / {net2}", f"{method} | {network_label(index, model)}"] = paper_accuracy(error)
    return out


def table5_paper(profile: Profile) -> Paper:
    row = arrow(ablation_pair(profile, 5))
    return {(row, eta_label(eta)): paper_accuracy(error) for eta, error in PAPER_TABLE5.items()}


def table6_paper(profile: Profile) -> Paper:
    out: Paper = {(METRIC_ROW, METRIC_LABELS[m]): paper_accuracy(e) for m, e in PAPER_TABLE6A.items()}
    out.update({(WEIGHTS_ROW, weights_label(*w)): paper_accuracy(e) for w, e in PAPER_TABLE6B.items()})
    return out


# ------------------------------------------------------------------------------------------------ measuring
def network_accuracy(run: Run, profile: Profile, network: str = "") -> float:
    """``run``'s final test accuracy (%) on Part II's evaluation set: the student's
    (:func:`.scale.part2_test_accuracy`) or another network's it trained (``network="peer"``), the latter
    measured on the same images and cached."""
    if not network:
        return scale.part2_test_accuracy(run, profile)
    from ...train import evaluate
    from ..part3 import scale as part3_scale

    per_class = part3_scale.part3_evaluation(profile)
    target = run.spec.replace(test_per_class=per_class, subset_seed=0)

    def compute() -> float:
        return float(evaluate(run.network(network), runs.batches(target, "test").batches(0, 0))["acc"])

    return 100.0 * cache.cached("part2_network_accuracy", compute, runs=run,
                                args={"network": network, "test_per_class": per_class})


def measure(cells: Sequence[Cell], profile: Profile, train: Callable[[RunSpec], Run] | None = None,
            accuracy: Callable[[Run, str], float] | None = None) -> pd.DataFrame:
    """Train (or load) every cell's run once and measure it: one row per cell (``row``, ``method``, ``seed``,
    :data:`ACCURACY`). ``train``: spec → run (default :func:`kdnb.runs.train_or_load`); ``accuracy``: (run,
    network) → % (default :func:`network_accuracy` at ``profile``)."""
    train = train or runs.train_or_load
    accuracy = accuracy or (lambda run, network: network_accuracy(run, profile, network))
    trained: dict[str, Run] = {}
    rows = []
    for cell in cells:
        key = cell.spec.key()
        if key not in trained:
            trained[key] = train(cell.spec)
        rows.append({"row": cell.row, "method": cell.method, "seed": cell.seed,
                     ACCURACY: accuracy(trained[key], cell.network)})
    return pd.DataFrame(rows, columns=["row", "method", "seed", ACCURACY])


def distinct_runs(cells: Sequence[Cell]) -> set[str]:
    """The keys of the runs ``cells`` train (shared runs once; teachers and auto-encoders not counted)."""
    return {c.spec.key() for c in cells}


def summary(frame: pd.DataFrame, paper: dict[tuple[str, str], float] | None = None, descriptive: int = 0
            ) -> pd.DataFrame:
    """Mean ± std (n) per (row, method) as a table with rows × methods, and — when ``paper`` maps
    (row, method) to the paper's accuracy — "(paper …)" beside each of ours. ``descriptive``: cells with fewer
    seeds than this are marked "descriptive"."""
    from ...analysis import summarize

    out: dict[str, dict[str, str]] = {}
    for (row, method), values in frame.groupby(["row", "method"], sort=False)[ACCURACY]:
        s = summarize(values.to_numpy())
        text = s.format()
        if descriptive and s.n < descriptive:
            text += ", descriptive"
        if paper is not None and (row, method) in paper:
            text += f" · paper {paper[row, method]:.2f}"
        out.setdefault(row, {})[method] = text
    return pd.DataFrame.from_dict(out, orient="index").fillna("—")


def runs_of(cells: Sequence[Cell], row: str, method: str, train: Callable[[RunSpec], Run] | None = None
            ) -> list[Run]:
    """The runs of the cells of ``row`` and ``method`` (one per seed), trained or loaded."""
    train = train or runs.train_or_load
    return [train(c.spec) for c in cells if c.row == row and c.method == method]


# ------------------------------------------------------------------------------------------------ chapter runs
# What each chapter trains, from the functions it calls, so that `python -m kdnb plan` and the chapter agree.
def inheritance_exploration_runs(profile: Profile) -> list[RunSpec]:
    """The runs chapter II.2 trains: each pair's teacher and Table 1's cells, then supplement Table 2's teachers
    and cells."""
    return [*(scale.part2_teacher(profile, pair[0]) for pair in scale.part2_pairs(profile)),
            *(cell.spec for cell in table1_cells(profile)),
            *(table_s2_teacher(profile, pair[0]) for pair in table_s2_pairs(profile)),
            *(cell.spec for cell in table_s2_cells(profile))]


def mutual_learning_runs(profile: Profile) -> list[RunSpec]:
    """The runs chapter II.3 trains: Table 4's cells."""
    return [cell.spec for cell in table4_cells(profile)]


def ablations_runs(profile: Profile) -> list[RunSpec]:
    """The runs chapter II.4 trains: per table (5, 6) its teacher and the CE students of its seeds (the teacher
    premise), then the cells of Tables 5 and 6."""
    premises = [spec for table, table_seeds in ((5, table5_seeds(profile)), (6, table6_seeds(profile)))
                for spec in (ablation_teacher(profile, table),
                             *(ablation_student(profile, table, "CE", seed) for seed in table_seeds))]
    return [*premises, *(cell.spec for cell in table5_cells(profile) + table6_cells(profile))]
