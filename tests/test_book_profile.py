"""Chapters at the `book` profile: the numbers the site shows (minutes each; `pytest -m slow`, not in CI)."""
from __future__ import annotations

import nbformat
import pytest

import kdnb.analysis
from kdnb import notebooks

from test_notebooks import glued


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_distillation_chapter_at_book_profile():
    chapter = next(c for c in notebooks.chapters() if c.stem == "distillation")
    outcome = notebooks.execute(chapter, "book", {"SHOW_WIDGETS": False})
    assert outcome.error is None, outcome.error
    values = glued(nbformat.read(notebooks.executed_path(chapter), as_version=4))
    assert values["n_seeds"] == 3
    assert 80 < values["teacher_acc"] <= 100  # a ResNet-20 on 10,000 Fashion-MNIST images, 6 epochs
    assert values["verdict"] in (kdnb.analysis.REPRODUCED, kdnb.analysis.NOT_REPRODUCED,
                                 kdnb.analysis.INCONCLUSIVE)
