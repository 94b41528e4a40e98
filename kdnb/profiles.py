"""Profiles: how big a run the book does (``smoke`` for CI, ``book`` for the site, ``paper`` for GPUs)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Profile:
    """The scale of every experiment in the book.

    Chapters read their sizes from here, never from literals, so one switch moves the whole book between
    a two-minute CI check and the papers' own settings.
    """

    name: str
    description: str
    train_per_class: int | None  # images per class in the training subset; None = the whole split
    test_per_class: int | None  # images per class in the evaluation subset; None = the whole split
    epochs: int  # epochs of a standard (teacher or student) run
    batch_size: int
    lr: float
    seeds: tuple[int, ...]  # seeds for claims that rest on several runs
    budget: str  # what it costs, said in the README and the book's index
    extra: dict = field(default_factory=dict, compare=False)  # chapter-specific knobs

    def with_(self, **changes) -> "Profile":
        return replace(self, **changes)


SMOKE = Profile(
    name="smoke",
    description="every code path on tiny data, 1-2 epochs (CI, papermill tests)",
    train_per_class=40,
    test_per_class=20,
    epochs=2,
    batch_size=32,
    lr=0.05,
    seeds=(0, 1),
    budget="whole book <= 10 min on 2 CPU cores",
)

BOOK = Profile(
    name="book",
    description="the numbers on the site: real data at reduced scale, >= 3 seeds per claim",
    train_per_class=1000,
    test_per_class=500,
    epochs=6,
    batch_size=64,  # small data, short schedule: more steps per image seen
    lr=0.1,
    seeds=(0, 1, 2),
    budget="Part 0 <= 10 min, each Part <= 30 min on 2 CPU cores",
)

PAPER = Profile(
    name="paper",
    description="the papers' own settings (full datasets, 160 epochs); for GPU boxes",
    train_per_class=None,
    test_per_class=None,
    epochs=160,
    batch_size=128,
    lr=0.1,
    seeds=(0, 1, 2),
    budget="GPU hours",
)

PROFILES: dict[str, Profile] = {p.name: p for p in (SMOKE, BOOK, PAPER)}
DEFAULT = "book"
ENV_VAR = "KDNB_PROFILE"


def get(name: str | Profile | None = None) -> Profile:
    """Return the named profile; ``None`` means ``$KDNB_PROFILE``, else ``book``.

    Unknown names raise ``ValueError`` listing the choices.
    """
    if isinstance(name, Profile):
        return name
    if name is None:
        name = os.environ.get(ENV_VAR) or DEFAULT
    key = str(name).strip().lower()
    if key not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}")
    return PROFILES[key]
