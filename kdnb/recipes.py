"""Run specs that several chapters share, so that they ask the run cache for the very same run.

Part 0 trains the book's teacher with :func:`teacher`; Parts II and III get that cached run back by calling
the same function with the same profile (a spec written out by hand that differs in any field, even a
checkpoint, is another run). What a run's identity holds is listed in :mod:`kdnb.runs`.
"""
from __future__ import annotations

from .profiles import Profile
from .runs import RunSpec
from .train import Schedule


def schedule(profile: Profile) -> Schedule:
    """The book's standard schedule at ``profile``: SGD (Nesterov), cosine learning rate, weight decay 5e-4,
    the weights kept at initialisation and at the end."""
    return Schedule(epochs=profile.epochs, batch_size=profile.batch_size, lr=profile.lr, lr_schedule="cosine",
                    weight_decay=5e-4, checkpoints=(0, profile.epochs))


def teacher(profile: Profile, model: str = "resnet20", dataset: str = "fashion_mnist", seed: int = 0) -> RunSpec:
    """The teacher every part distils from at ``profile``: ``model`` trained with cross-entropy on the profile's
    class-stratified subset of ``dataset``."""
    return RunSpec(dataset=dataset, model=model, schedule=schedule(profile), train_per_class=profile.train_per_class,
                   test_per_class=profile.test_per_class, seed=seed)


# ------------------------------------------------------------------------------------------------ Part III
# Gu et al. (ACCV 2020) compare many students, each over >= 3 seeds, so Part III trains on a smaller subset than
# Part 0 to fit its budget (book: <= 40 min on 2 CPU cores). Every Part III chapter builds its runs here, so a
# run two chapters share (the CE and LE ResNet-8 students, the CNN-10 teacher) is one cached run.
PART3_BOOK = dict(train_per_class=100, test_per_class=100, epochs=6)
PART3_SMOKE = dict(train_per_class=20, test_per_class=10)  # ~60 tiny runs must fit the smoke budget (<= 3 min)


def part3_profile(profile: Profile) -> Profile:
    """Part III's scale at ``profile``: ``book`` uses a 1,000-image training subset (1,000 test images) and 6
    epochs (``PART3_BOOK``); ``smoke`` 20 training and 10 test images per class (``PART3_SMOKE``); ``paper`` is
    unchanged."""
    if profile.name == "book":
        return profile.with_(**PART3_BOOK)
    if profile.name == "smoke":
        return profile.with_(**PART3_SMOKE)
    return profile


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
    paper's MLP recipe (batch 16, lr 0.01, constant) shortened to Part III's epochs."""
    scale = part3_profile(profile)
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
          teacher: RunSpec | None = None, model_args: dict | None = None) -> RunSpec:
    """One Part III run: ``model`` trained with ``method`` at Part III's scale of ``profile`` (the one place that
    decides data, subset and schedule, so chapters asking for the same student get the same cached run)."""
    scale = part3_profile(profile)
    mlp = model.startswith("mlp")
    return RunSpec(dataset=part3_dataset(profile, mlp=mlp), model=model, schedule=part3_schedule(profile, model),
                   method=method, method_args=method_args or {}, teacher=teacher, model_args=model_args or {},
                   train_per_class=scale.train_per_class, test_per_class=scale.test_per_class, seed=seed)
