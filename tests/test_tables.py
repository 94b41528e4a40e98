"""kdnb.analysis.tables: per-method summaries and seed-paired comparisons of a results frame."""
import math

import pandas as pd
import pytest

from kdnb import analysis


@pytest.fixture
def frame():
    return pd.DataFrame({"method": ["CE", "CE", "CE", "LE", "LE", "LE"], "seed": [0, 1, 2, 2, 0, 1],
                         "test accuracy (%)": [80.0, 82.0, 84.0, 86.0, 81.0, 84.0]})


def test_by_method_gives_mean_std_n_and_the_paper_beside(frame):
    table = analysis.by_method(frame, paper={"LE": 88.1}, order=["LE", "CE"])
    assert list(table.index) == ["LE", "CE"]
    assert table.iloc[1, 0] == "82.00 ± 2.00 (n=3)"   # mean 82, sample std 2
    assert list(table["paper"]) == ["88.10", "—"]


def test_paired_by_seed_matches_rows_by_seed_not_by_position(frame):
    result = analysis.paired_by_seed(frame, "LE", "CE")
    # LE - CE per seed: 0: 81-80, 1: 84-82, 2: 86-84  ->  1, 2, 2
    assert result.difference.mean == pytest.approx(5 / 3)
    assert result.difference.n == 3
    assert math.isfinite(result.p_value)


def test_unknown_group_and_duplicate_seed_are_named(frame):
    with pytest.raises(ValueError, match="KD"):
        analysis.paired_by_seed(frame, "KD", "CE")
    doubled = pd.concat([frame, frame.iloc[[0]]])
    with pytest.raises(ValueError, match="several rows"):
        analysis.paired_by_seed(doubled, "CE", "LE")
