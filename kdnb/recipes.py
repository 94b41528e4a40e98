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
