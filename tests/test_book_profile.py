"""Chapters at the `book` profile: the numbers the site shows (minutes each; `pytest -m slow`, not in CI)."""
from __future__ import annotations

import nbformat
import pytest

import kdnb.analysis
from kdnb import book_layout, notebooks

from test_notebooks import glued


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_distillation_chapter_at_book_profile():
    chapter = next(c for c in book_layout.chapters() if c.stem == "distillation")
    outcome = notebooks.execute(chapter, "book", {"SHOW_WIDGETS": False})
    assert outcome.error is None, outcome.error
    values = glued(nbformat.read(book_layout.executed_path(chapter), as_version=4))
    assert values["n_seeds"] == 3
    assert 80 < values["teacher_acc"] <= 100  # a ResNet-20 on 10,000 Fashion-MNIST images, 6 epochs
    # KD - CE as measured on two 2-core CPU machines of this project (torch 2.14.1, 2 threads): +1.12 points,
    # 95% CI [+0.05, +2.19] (the first session's machine) and +1.17, CI [+0.70, +1.64] (AMD EPYC; the old and the new
    # trainer give bit-identical runs there). CPU runs repeat exactly on one machine, but another CPU's kernels
    # round differently. The bands hold both measurements with room for a third machine, and not a different result
    # (a KD gain below half a point, or an interval that no longer sits around +1).
    assert 0.6 <= values["kd_minus_ce"] <= 1.8
    assert -0.3 <= values["kd_minus_ce_low"] < values["kd_minus_ce"] < values["kd_minus_ce_high"] <= 2.6
    expected = kdnb.analysis.REPRODUCED if values["kd_minus_ce_low"] > 0 else kdnb.analysis.INCONCLUSIVE
    assert values["verdict"] == (expected if values["premise_held"] else kdnb.analysis.PREMISE_UNMET)
