"""Part II's scale (Huang et al. 2021, IE-KD, at the book's size): the one place that decides the data, subsets,
schedules, seeds, teacher → student pairs and auto-encoder runs of every Part II run.

- :func:`part2` builds every student run; :func:`part2_teacher` every teacher; :func:`part2_autoencoder` the one
  factor auto-encoder per (teacher, layer) that FT, IE-FT, IE-AT and IE-OD share;
- :func:`part2_pairs`, :func:`part2_seeds`, :func:`part2_dataset` fix its size;
- :func:`part2_test_accuracy`, :func:`part2_train_accuracy` and :func:`part2_teacher_premise` are Part III's (one
  evaluation set, the whole test split at ``book``), so a run the two parts share is measured once.

Below ``paper`` Part II trains its students exactly as Part III does (:func:`kdnb.studies.part3.scale.part3`:
100 images per class, each seed its own draw, 10 epochs, no augmentation) and distils them from Part 0's teacher,
which has seen ten times their data: the CE and KD ResNet-8 students of the two parts are the same cached runs.
At ``paper`` it follows §4.1: CIFAR-10 (Tables 1, 5, 6a; CIFAR-100 for Tables 4 and 6b), SGD with Nesterov
momentum 0.9, lr 0.1 divided by 10 at epochs 80 and 120 of 160, batch 128.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from ...profiles import Profile
from ...recipes import teacher as book_teacher
from ...runs import Run, RunSpec, part
from ...train import Schedule
from ..part3 import scale as part3_scale

if TYPE_CHECKING:
    from ...analysis import Premise

#: §4.1's recipe, shared by every CIFAR run of the paper (teachers, students, both networks of DML/IE-DML).
PAPER_SCHEDULE = Schedule(epochs=160, batch_size=128, lr=0.1, nesterov=True, lr_schedule="multistep",
                          milestones=(0.5, 0.75), weight_decay=5e-4, checkpoints=(0, 160))
#: The supplement (Table 3's auto-encoder): "trained for the maximum of 30 epochs starting with learning rate 0.1".
PAPER_AUTOENCODER_EPOCHS = 30

#: Teacher → student pairs of the Table 1 analog at each profile. ``paper``: Table 1's four. Below it one teacher,
#: Part 0's ResNet-20 (ten times the students' data), and two students of different families: a ResNet-8 (same
#: blocks, fewer layers, as ResNet-56 → ResNet-20) and a MobileNet of width 0.25 (another building block, as in
#: Table 4's ResNet-32 / MobileNet). Training a second teacher to the required lead would cost more than the budget
#: allows; the chapter says so.
PART2_PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "paper": (("resnet56", "resnet20"), ("wrn-40-1", "resnet20"), ("wrn-46-4", "vgg13"), ("wrn-16-2", "wrn-16-1")),
    "book": (("resnet20", "resnet8"), ("resnet20", "mobilenet")),
    "smoke": (("resnet20", "resnet8"), ("resnet20", "mobilenet")),
}
#: Model arguments of the students named in :data:`PART2_PAIRS` below ``paper`` (the MobileNet's width). Width 0.25
#: for the budget: on the 2-core CPU (``python -m kdnb bench methods`` with ``student_args``) a CE step of width 0.5
#: cost 2.1 ResNet-8 CE steps and its IE-DML step 3.0 ResNet-8 IE-DML steps (the encoders on its 512-channel last
#: stage); width 0.25 costs 1.2 and 1.4. Chosen by cost; the premises (teacher lead, each network above chance) are
#: measured and printed at every width.
PART2_MODEL_ARGS: dict[str, dict] = {"mobilenet": {"width": 0.25}}
#: Seeds per claim: (decisive claims, the others). Decisive below ``paper``: IE-FT − FT, IE-AT − AT, IE-OD − OD on
#: the first pair (the paper's first observation); ``paper`` runs three trials everywhere (the paper gives none).
PART2_SEEDS = {"book": ((0, 1, 2, 3, 4), (0, 1, 2)), "paper": ((0, 1, 2), (0, 1, 2))}


def part2_profile(profile: Profile) -> Profile:
    """Part II's scale at ``profile``: Part III's below ``paper`` (so the students two parts share are one run),
    unchanged at ``paper``."""
    return part3_scale.part3_profile(profile)


def part2_seeds(profile: Profile, decisive: bool = False) -> tuple[int, ...]:
    """The seeds of Part II's runs at ``profile`` (:data:`PART2_SEEDS`; the profile's own at ``smoke``)."""
    if profile.name not in PART2_SEEDS:
        return tuple(profile.seeds)
    many, few = PART2_SEEDS[profile.name]
    return many if decisive else few


def part2_dataset(profile: Profile, cifar100: bool = False) -> str:
    """Fashion-MNIST below ``paper``; CIFAR-10 at ``paper``, CIFAR-100 for the tables the paper runs on it
    (Table 4, Table 6b: ``cifar100=True``)."""
    if profile.name != "paper":
        return "fashion_mnist"
    return "cifar100" if cifar100 else "cifar10"


def part2_pairs(profile: Profile) -> tuple[tuple[str, str], ...]:
    """The (teacher, student) model names of the Table 1 analog at ``profile`` (:data:`PART2_PAIRS`)."""
    return PART2_PAIRS.get(profile.name, PART2_PAIRS["book"])


def part2_model_args(profile: Profile, model: str) -> dict:
    """Model arguments of ``model`` in Part II at ``profile`` (the book's narrow MobileNet; none at ``paper``)."""
    return {} if profile.name == "paper" else dict(PART2_MODEL_ARGS.get(model, {}))


def part2(profile: Profile, model: str, method: str = "ce", seed: int = 0, method_args: dict | None = None,
          teacher: RunSpec | None = None, cifar100: bool = False, subset_seed: int | None = None) -> RunSpec:
    """One Part II student run: ``model`` trained with ``method`` at Part II's scale of ``profile``. Below
    ``paper`` this is :func:`~kdnb.studies.part3.scale.part3` (the same spec, hence the same cached run, as Part
    III's student of that model, method and seed); at ``paper`` §4.1's recipe on the whole of CIFAR-10 (or
    CIFAR-100) with the standard augmentation."""
    model_args = part2_model_args(profile, model)
    if profile.name != "paper":
        return part3_scale.part3(profile, model, method, seed, method_args=method_args, teacher=teacher,
                                 model_args=model_args or None, subset_seed=subset_seed)
    return RunSpec(dataset=part2_dataset(profile, cifar100), model=model, schedule=PAPER_SCHEDULE, method=method,
                   method_args=method_args or {}, teacher=teacher, model_args=model_args,
                   train_per_class=None, test_per_class=None, subset_seed=seed if subset_seed is None else subset_seed,
                   seed=seed)


def part2_teacher(profile: Profile, model: str = "resnet20", cifar100: bool = False) -> RunSpec:
    """The pre-trained teacher ``model`` at ``profile``: below ``paper`` Part 0's teacher (the very run Part 0
    trains; only ``resnet20`` is one), at ``paper`` ``model`` trained with §4.1's recipe, seed 0."""
    if profile.name != "paper":
        if model != "resnet20":
            raise ValueError(f"below paper Part II's teacher is Part 0's resnet20, not {model!r}")
        return book_teacher(profile, dataset=part2_dataset(profile))
    return part2(profile, model, "ce", 0, cifar100=cifar100)


def part2_autoencoder(teacher: RunSpec, profile: Profile, layer: str | None = None, seed: int = 0) -> RunSpec:
    """The factor auto-encoder of ``teacher``'s ``layer`` (its last stage when None) as a part run of its own
    (Eq. 1): one per (teacher, layer), shared by FT, IE-FT, IE-AT and IE-OD (``method_args={"autoencoder": ...}``).
    Trained on the teacher's own data, for the teacher's schedule below ``paper`` (the book's cosine lr at its
    length) and for the supplement's 30 epochs from lr 0.1 at ``paper``."""
    if profile.name == "paper":
        schedule = Schedule(epochs=PAPER_AUTOENCODER_EPOCHS, batch_size=128, lr=0.1, nesterov=True,
                            lr_schedule="cosine", weight_decay=5e-4, checkpoints=(0, PAPER_AUTOENCODER_EPOCHS))
    else:
        schedule = teacher.schedule
    return part(teacher, "autoencoder", schedule, method_args={} if layer is None else {"layer": layer}, seed=seed)


def part2_test_accuracy(run: Run, profile: Profile) -> float:
    """``run``'s final test accuracy (%) on Part II's evaluation set: Part III's (:func:`part3_test_accuracy`)."""
    return part3_scale.part3_test_accuracy(run, profile)


def part2_train_accuracy(run: Run) -> float:
    """``run``'s final accuracy (%) on its own training images, without augmentation (Part III's measure)."""
    return part3_scale.part3_train_accuracy(run)


def part2_teacher_premise(teacher_run: Run, ce_runs: Sequence[Run], profile: Profile,
                          what: str = "teacher") -> "Premise":
    """The IE-KD premise: ``teacher_run`` leads the mean CE student ``ce_runs`` by
    :data:`kdnb.analysis.TEACHER_MARGIN` points on the evaluation set (Part III's rule, the same numbers)."""
    return part3_scale.part3_teacher_premise(teacher_run, ce_runs, profile, what=what)


#: The methods of Table 1 by column label: (method name, fixed arguments). KD is Part III's (T = 4, α = 0.9), so
#: the KD ResNet-8 students of the two parts are one run; AT is attention transfer with cross-entropy (``alpha=0``,
#: no KD term: the baseline IE-AT extends); FT, IE-FT, IE-AT and IE-OD take the teacher's auto-encoder run
#: (:func:`part2_autoencoder`) as an input; λ_inh = λ_exp = 50 (§4.2, CIFAR-10) are the IE methods' defaults.
PART2_METHODS: dict[str, tuple[str, dict]] = {
    "CE": ("ce", {}),
    "KD": ("kd", {"temperature": 4.0, "alpha": 0.9}),
    "AT": ("at", {"alpha": 0.0}),
    "FT": ("ft", {}),
    "OD": ("od", {}),
    "Tf-KD (S)": ("tfkd_self", {}),
    "CRD": ("crd", {}),
    "IE-AT": ("ie_at", {}),
    "IE-FT": ("ie_ft", {}),
    "IE-OD": ("ie_od", {}),
}
#: Methods that read the teacher's factor and so take its auto-encoder run.
FACTOR_METHODS = ("ft", "ie_ft", "ie_at", "ie_od")


def part2_student(profile: Profile, teacher: RunSpec, student: str, label: str, seed: int,
                  cifar100: bool = False, **overrides) -> RunSpec:
    """The run of column ``label`` of :data:`PART2_METHODS` for ``student`` distilled from ``teacher`` (``CE``:
    no teacher), seed ``seed``; ``overrides`` change method arguments (η, the split, λs, the metric of Tables 5–6).
    Every Part II table and figure asks for its students here, so the chapters share runs."""
    if label not in PART2_METHODS:
        raise ValueError(f"unknown Part II method {label!r}; choose one of: {', '.join(PART2_METHODS)}")
    method, args = PART2_METHODS[label]
    args = {**args, **overrides}
    if method == "ce":
        return part2(profile, student, "ce", seed, method_args=args, cifar100=cifar100)
    if method == "tfkd_self":  # the self-teacher: the student's own CE run of this seed (Yuan et al.'s Tf-KD (S))
        return part2(profile, student, method, seed, method_args=args, cifar100=cifar100,
                     teacher=part2(profile, student, "ce", seed, cifar100=cifar100))
    if method in FACTOR_METHODS:
        args["autoencoder"] = part2_autoencoder(teacher, profile)
    return part2(profile, student, method, seed, method_args=args, teacher=teacher, cifar100=cifar100)
