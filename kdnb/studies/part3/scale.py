"""Part III's scale (Gu, Wu, Tresp, ACCV 2020, at the book's size): the one place that decides data, subsets,
schedules, seeds, teachers and the evaluation set of every Part III run, and the two premises its claims stand on.

- :func:`part3` builds every run (so chapters asking for the same student get the same cached run);
  :func:`part3_profile`, :func:`part3_schedule`, :func:`part3_dataset`, :func:`part3_seeds` fix its size;
- :func:`part3_teacher`: Part 0's teacher below ``paper`` (ten times the students' data), the paper's CNN-10 and
  ResNet-26 at ``paper``;
- :func:`part3_test_accuracy` / :func:`part3_train_accuracy`: final accuracies on one evaluation set for every
  network, and on a run's own training images;
- :func:`part3_teacher_premise` (the teacher leads the CE student by :data:`kdnb.analysis.TEACHER_MARGIN`) and
  :func:`part3_overfit_premise` (the CE runs over-fit by :data:`kdnb.analysis.OVERFIT_GAP`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from ... import cache
from ...profiles import Profile
from ...recipes import schedule, teacher
from ...runs import Run, RunSpec, batches
from ...train import Schedule

if TYPE_CHECKING:
    import pandas as pd

    from ... import data
    from ...analysis import Premise


# Gu et al. (ACCV 2020) compare many students, each over several seeds, so Part III trains its students on a
# smaller subset than Part 0 and distils them from Part 0's teacher, which has seen ten times their data (the
# premise of every KD-family claim: a teacher clearly ahead of its students). Every Part III chapter builds its
# runs here, so a run two chapters share (the CE and LE ResNet-8 students, the teacher) is one cached run.
#
# The book scale was chosen by measuring the premises (seed 0, a 2-core CPU, accuracies on the whole test split):
# a CE ResNet-8 on 100 images per class with augmentation under-fits — 6 epochs: train 71.8 / test 70.2 (a
# 1.6-point gap), 12 epochs: 78.8 / 75.4 (3.4) — while without augmentation it over-fits by 10 epochs: 84.0 /
# 76.7 (7.3; 12 epochs: 87.6 / 78.2, 9.4). The MLP over-fits by far more (10 epochs: 97.1 / 80.0). Part 0's
# ResNet-20 teacher reaches 88.3, 13 points above a CE CNN-6 of 6 epochs with augmentation (75.3) and 11.6
# above the ResNet-8 of 10 epochs without.
PART3_BOOK = dict(train_per_class=100, test_per_class=20, epochs=10)
PART3_SMOKE = dict(train_per_class=20, test_per_class=10)  # ~70 tiny runs must fit the smoke budget (<= 3 min)
#: Epochs of the CNN students of Table 1 below ``paper`` (their claims need a teacher ahead of them, not
#: over-fitting, and their teacher's forward pass doubles their cost); the other students train
#: ``part3_profile(profile).epochs``.
PART3_CNN_EPOCHS = {"book": 6}
#: The students' augmentation below ``paper``: none, so that a CE student fits its subset within the budget
#: and over-fits as the paper's do after 160 epochs (the premise of every regularization claim). ``paper``
#: keeps the data set's standard augmentation, as the paper does.
PART3_AUGMENT = {"book": None, "smoke": None}
#: Seeds per claim below ``paper``: the decisive claims (KD − CE and DKPP − CE in III.1, LE − CE in III.2) get
#: five, the others three; ``paper`` runs the paper's five trials everywhere.
PART3_SEEDS = {"book": ((0, 1, 2, 3, 4), (0, 1, 2)), "paper": ((0, 1, 2, 3, 4), (0, 1, 2, 3, 4))}


def part3_profile(profile: Profile) -> Profile:
    """Part III's scale at ``profile``: ``book`` trains its students on 100 images per class (each seed its own
    draw) for ``PART3_BOOK["epochs"]`` epochs (CNNs: :data:`PART3_CNN_EPOCHS`), without augmentation
    (:data:`PART3_AUGMENT`), with per-epoch learning curves on 20 test images per class and final accuracies on
    the whole test split (:func:`part3_test_accuracy`); ``smoke`` 20 training and 10 test images per class
    (``PART3_SMOKE``); ``paper`` is unchanged."""
    if profile.name == "book":
        return profile.with_(**PART3_BOOK)
    if profile.name == "smoke":
        return profile.with_(**PART3_SMOKE)
    return profile


def part3_seeds(profile: Profile, decisive: bool = False) -> tuple[int, ...]:
    """The seeds of Part III's runs at ``profile``: five for a decisive claim at ``book`` (``decisive=True``),
    three for the others; five for every claim at ``paper`` (the paper's trials); the profile's own below."""
    if profile.name not in PART3_SEEDS:
        return tuple(profile.seeds)
    many, few = PART3_SEEDS[profile.name]
    return many if decisive else few


def part3_dataset(profile: Profile, mlp: bool = False) -> str:
    """The data set of Part III's tables: Fashion-MNIST below ``paper``; CIFAR-10 at ``paper`` (MNIST for the
    MLP of Table 3, as in the paper)."""
    if profile.name != "paper":
        return "fashion_mnist"
    return "mnist" if mlp else "cifar10"


def part3_schedule(profile: Profile, model: str) -> Schedule:
    """Part III's optimisation at ``profile``. At ``paper`` the paper's recipes: CNNs (Table 1) SGD lr 0.01,
    momentum 0.9, batch 128, 160 epochs; ResNets lr 0.1 divided by 10 at epochs 80 and 120 of 160; the MLP (Table
    3) batch 16, 50 epochs, lr 0.01. Below ``paper``: the book's cosine schedule at Part III's scale, and the
    paper's MLP recipe (batch 16, lr 0.01, constant) shortened to Part III's epochs; CNNs train
    :data:`PART3_CNN_EPOCHS` where it has the profile."""
    scale = part3_profile(profile)
    if model.startswith("cnn") and profile.name in PART3_CNN_EPOCHS:
        scale = scale.with_(epochs=PART3_CNN_EPOCHS[profile.name])
    if profile.name != "paper" and model.startswith("mlp"):
        # The paper's MLP recipe at Part III's length: without BatchNorm, the book's lr 0.1 diverges (NaN).
        return Schedule(epochs=scale.epochs, batch_size=16, lr=0.01, nesterov=False, lr_schedule="constant",
                        weight_decay=0.0, checkpoints=(0, scale.epochs))
    if profile.name != "paper":
        return schedule(scale)
    if model.startswith("mlp"):
        return Schedule(epochs=50, batch_size=16, lr=0.01, nesterov=False, lr_schedule="constant", weight_decay=0.0,
                        checkpoints=(0, 50))
    if model.startswith("cnn"):
        return Schedule(epochs=160, batch_size=128, lr=0.01, nesterov=False, lr_schedule="constant",
                        weight_decay=5e-4, checkpoints=(0, 160))
    return Schedule(epochs=160, batch_size=128, lr=0.1, nesterov=False, lr_schedule="multistep",
                    milestones=(0.5, 0.75), weight_decay=5e-4, checkpoints=(0, 160))


def part3(profile: Profile, model: str, method: str = "ce", seed: int = 0, method_args: dict | None = None,
          teacher: RunSpec | None = None, model_args: dict | None = None,
          subset_seed: int | None = None) -> RunSpec:
    """One Part III run: ``model`` trained with ``method`` at Part III's scale of ``profile`` (the one place that
    decides data, subset and schedule, so chapters asking for the same student get the same cached run).

    ``seed`` fixes the initialisation and the batches and, unless ``subset_seed`` is given, the training subset
    too: each seed of a claim trains on its own draw of the training split (the claims are about methods, not
    about one subset), and the runs of one seed share it, so they are compared pair by pair."""
    scale = part3_profile(profile)
    mlp = model.startswith("mlp")
    return RunSpec(dataset=part3_dataset(profile, mlp=mlp), model=model, schedule=part3_schedule(profile, model),
                   method=method, method_args=method_args or {}, teacher=teacher, model_args=model_args or {},
                   train_per_class=scale.train_per_class, test_per_class=scale.test_per_class,
                   subset_seed=seed if subset_seed is None else subset_seed,
                   augment=PART3_AUGMENT.get(profile.name, "default"), seed=seed)


#: The teachers of Part III below ``paper``: Part 0's (a ResNet-20 on ten times the students' data, 1,000
#: images per class). At ``paper`` the paper's own: a CNN-10 for Table 1, a ResNet-26 for Table 5, trained
#: with the students' recipe on the whole of CIFAR-10.
PART3_PAPER_TEACHERS = {"cnn": "cnn10", "resnet": "resnet26"}


def part3_teacher(profile: Profile, family: str = "resnet") -> RunSpec:
    """The teacher Part III distils from at ``profile``: for CNN students (``family="cnn"``, Table 1) or ResNet
    students (``"resnet"``, Table 5). Below ``paper`` both are Part 0's teacher (:func:`teacher`), the very run
    Part 0 trains; at ``paper`` the paper's CNN-10 or ResNet-26 (:data:`PART3_PAPER_TEACHERS`), seed 0."""
    if family not in PART3_PAPER_TEACHERS:
        raise ValueError(f"no Part III teacher for {family!r}; choose one of: {', '.join(PART3_PAPER_TEACHERS)}")
    if profile.name != "paper":
        return teacher(profile, dataset=part3_dataset(profile))
    return part3(profile, PART3_PAPER_TEACHERS[family], "ce", 0)


#: Images per class of the test split on which Part III measures every final accuracy: all of it (None) at
#: ``book``, whatever the profile's runs evaluate on elsewhere.
PART3_EVALUATION = {"book": None}


def part3_evaluation(profile: Profile) -> int | None:
    """Images per class of the test split that Part III's final accuracies are measured on at ``profile``:
    ``PART3_EVALUATION``'s entry, else the runs' own test set (Part III's ``test_per_class``)."""
    return PART3_EVALUATION.get(profile.name, part3_profile(profile).test_per_class)


def part3_evaluation_spec(spec: RunSpec, profile: Profile) -> RunSpec:
    """``spec`` with its test set replaced by Part III's evaluation set at ``profile`` (:func:`part3_evaluation`
    images per class, subset seed 0): the one draw every final accuracy, and Part II's factor report, is
    measured on."""
    return spec.replace(test_per_class=part3_evaluation(profile), subset_seed=0)


def _evaluate(run: Run, spec: RunSpec, split: str) -> float:
    from ...train import evaluate

    return float(evaluate(run.model(), batches(spec, split).batches(0, 0))["acc"])


def part3_test_accuracy(run: Run, profile: Profile) -> float:
    """``run``'s final test accuracy (%) on Part III's evaluation set at ``profile`` (:func:`part3_evaluation`):
    the run's own final metric when that is the set it was evaluated on, else measured once on ``per_class``
    images per class of the test split (all of it when None; a draw with subset seed 0 otherwise) and cached. One
    evaluation set for every run — students of every seed, teachers — so accuracies and their differences are
    comparable."""
    per_class = part3_evaluation(profile)
    spec = run.spec
    if per_class == spec.test_per_class and (per_class is None or spec.subset_seed == 0):
        return 100.0 * float(run.final["test_acc"])
    target = part3_evaluation_spec(spec, profile)
    return 100.0 * cache.cached("part3_test_accuracy", lambda: _evaluate(run, target, "test"), runs=run,
                                args={"test_per_class": per_class})


def part3_train_accuracy(run: Run) -> float:
    """``run``'s final accuracy (%) on its own training images, without augmentation (cached): with
    :func:`part3_test_accuracy`, the train − test gap of the over-fitting premise."""
    target = run.spec.replace(augment=None)
    return 100.0 * cache.cached("part3_train_accuracy", lambda: _evaluate(run, target, "train"), runs=run)


def part3_teacher_premise(teacher_run: Run, ce_runs: Sequence[Run], profile: Profile, what: str = "teacher",
                          margin: float | None = None) -> Premise:
    """The KD-family premise (:func:`kdnb.analysis.teacher_beats_student`): ``teacher_run`` leads the mean of
    the cross-entropy students ``ce_runs`` by :data:`kdnb.analysis.TEACHER_MARGIN` points (or ``margin``), every
    accuracy measured on Part III's evaluation set (:func:`part3_test_accuracy`)."""
    from ... import analysis

    margin = analysis.TEACHER_MARGIN if margin is None else margin
    student = ce_runs[0].spec.model
    return analysis.teacher_beats_student(
        part3_test_accuracy(teacher_run, profile), [part3_test_accuracy(r, profile) for r in ce_runs],
        margin=margin, what=f"{what} ({teacher_run.spec.model})", against=f"CE {student}",
        remedy=(f"A {what} that leads the CE {student} by {margin:g} points: trained on more data or for longer "
                f"than its students, or a larger network."))


def part3_overfit_premise(ce_runs: Sequence[Run], profile: Profile, what: str | None = None) -> Premise:
    """The regularization premise (:func:`kdnb.analysis.overfits`): the cross-entropy runs ``ce_runs`` fit their
    training images (clean accuracy, :func:`part3_train_accuracy`) at least :data:`kdnb.analysis.OVERFIT_GAP`
    points better than the test split (:func:`part3_test_accuracy`), means over the runs."""
    from ... import analysis

    model = ce_runs[0].spec.model
    return analysis.overfits([part3_train_accuracy(r) for r in ce_runs],
                             [part3_test_accuracy(r, profile) for r in ce_runs], what=what or f"CE {model}",
                             remedy=(f"A CE {model} that over-fits by {analysis.OVERFIT_GAP:g} points: more epochs "
                                     f"on its training images, or fewer images."))


def part3_networks_frame(roles: dict[str, Sequence[Run]], profile: Profile,
                         train_accuracy: bool = False) -> "pd.DataFrame":
    """Teacher beside students, one row per role (``{"teacher": [run], "CE cnn6": [runs...]}``): the network,
    what it trained on (images per class, epochs, augmentation), how many runs, and its mean accuracy on the
    evaluation set (:func:`part3_test_accuracy`); with ``train_accuracy``, also on its own training images
    (:func:`part3_train_accuracy`) and the gap between the two."""
    import numpy as np
    import pandas as pd

    rows = []
    for role, group in roles.items():
        spec = group[0].spec
        test = float(np.mean([part3_test_accuracy(r, profile) for r in group]))
        row = {"role": role, "network": spec.model, "train images / class": spec.train_per_class or "all",
               "epochs": spec.schedule.epochs, "augmentation": spec.augment or "none", "runs": len(group),
               "test accuracy (%)": test}
        if train_accuracy:
            train = float(np.mean([part3_train_accuracy(r) for r in group]))
            row.update({"train accuracy (%)": train, "train − test (points)": train - test})
        rows.append(row)
    return pd.DataFrame(rows).set_index("role")


#: Images per class of the test split on which Part III draws its figures of explanations and confusions (III.2's
#: Figs. 1–2): a fixed draw (subset seed 0), the same for every network.
PART3_PROBE = {"book": 100}


def part3_probe(profile: Profile, spec: RunSpec) -> "data.TensorBatches":
    """The test images Part III's figures are drawn on, normalised for ``spec``'s network (:data:`PART3_PROBE`
    per class at ``profile``, else the runs' own test set size), in a fixed order."""
    per_class = PART3_PROBE.get(profile.name, part3_profile(profile).test_per_class)
    return batches(spec.replace(test_per_class=per_class, subset_seed=0), "test")


#: The input-space explanations III.2 trains LE with beside Grad-CAM (Fig. 3) at each profile. Each costs a
#: backward pass per class and step (about four CE steps on a ResNet-8); below ``paper`` only Grad, the one whose
#: LE accuracy the paper gives in numbers (Table 6), fits Part III's budget.
PART3_EXPLANATIONS = {"book": ("grad",)}
ALL_INPUT_EXPLANATIONS = ("grad", "guided_backprop", "grad_x_input")


def part3_explanations(profile: Profile) -> tuple[str, ...]:
    """The input-space explanation methods of III.2's Fig. 3 at ``profile`` (:data:`PART3_EXPLANATIONS`, else all
    three: Grad, GuidedBP, Grad×Input)."""
    return PART3_EXPLANATIONS.get(profile.name, ALL_INPUT_EXPLANATIONS)


def part3_introspective_specs(profile: Profile, model: str,
                              explanations: Sequence[str] | None = None) -> dict[tuple[str, int], RunSpec]:
    """Chapter III.2's runs of ``model``: ``("ce", seed)`` and ``("le", seed)`` (LE with Grad-CAM) on the decisive
    seeds, then ``(explanation, seed)`` (LE with that input-space explanation) for each of ``explanations``
    (default :func:`part3_explanations`) on the other seeds (:func:`part3_seeds`)."""
    specs = {(method, seed): part3(profile, model, method, seed)
             for method in ("ce", "le") for seed in part3_seeds(profile, decisive=True)}
    for explanation in explanations or part3_explanations(profile):
        for seed in part3_seeds(profile):
            specs[explanation, seed] = part3(profile, model, "le", seed, method_args={"explanation": explanation})
    return specs


def introspective_runs(profile: Profile, model: str = "resnet8",
                       explanations: Sequence[str] | None = None) -> list[RunSpec]:
    """:func:`part3_introspective_specs` as one list (for ``python -m kdnb plan``); the defaults are chapter
    III.2's ``MODEL`` and ``EXPLANATIONS``."""
    return list(part3_introspective_specs(profile, model, explanations).values())
