"""Part 0's runs ("Distillation in one notebook"): the book's teacher and, per seed, a CE and a KD student.

The chapter asks for its runs here, and ``python -m kdnb plan`` lists them from here, so the two cannot disagree.
The students are Part III's standard students (:func:`kdnb.studies.part3.scale.part3`), so Parts II and III
reuse the very runs this chapter trains; the teacher is :func:`kdnb.recipes.teacher`, the one every part distils
from. The defaults are the chapter's parameters.
"""
from __future__ import annotations

from .. import recipes
from ..profiles import Profile
from ..runs import RunSpec
from .part3 import scale

TEACHER = "resnet20"
STUDENT = "resnet8"
TEMPERATURE = 4.0
ALPHA = 0.9


def teacher(profile: Profile, model: str = TEACHER, seed: int = 0) -> RunSpec:
    """The book's teacher on Part III's data set at ``profile`` (the run Parts II and III ask for)."""
    return recipes.teacher(profile, model=model, dataset=scale.part3_dataset(profile), seed=seed)


def students(profile: Profile, teacher_spec: RunSpec, model: str = STUDENT, temperature: float = TEMPERATURE,
             alpha: float = ALPHA) -> dict[int, dict[str, RunSpec]]:
    """``{seed: {"CE": spec, "KD": spec}}`` on Part III's decisive seeds: per seed one student trained with
    cross-entropy and one distilled from ``teacher_spec``, same initialisation and batches (a paired comparison)."""
    return {seed: {"CE": scale.part3(profile, model, "ce", seed),
                   "KD": scale.part3(profile, model, "kd", seed, teacher=teacher_spec,
                                     method_args={"temperature": temperature, "alpha": alpha})}
            for seed in scale.part3_seeds(profile, decisive=True)}


def chapter_runs(profile: Profile, teacher_model: str = TEACHER, student: str = STUDENT,
                 temperature: float = TEMPERATURE, alpha: float = ALPHA, seed: int = 0) -> list[RunSpec]:
    """Every run Part 0 trains at ``profile`` with the chapter's default parameters (``teacher_model`` is its
    ``TEACHER``, ``seed`` its ``SEED``): the teacher, then each seed's CE and KD students."""
    base = teacher(profile, teacher_model, seed)
    pairs = students(profile, base, student, temperature, alpha)
    return [base, *(spec for pair in pairs.values() for spec in pair.values())]
