"""``python -m kdnb bench methods`` runs every main method through the trainer and reports ratios to a CE step."""
from __future__ import annotations

import math

import pytest

from kdnb import bench
from kdnb.bench_methods import MAIN_METHODS, method_steps_vs_ce


def test_bench_methods_quick_runs_every_main_method():
    entry = method_steps_vs_ce(student="resnet8", teacher="resnet8", steps=1, repeats=1, batch_size=8)
    assert set(entry["per_ce_step"]) == set(MAIN_METHODS)
    assert entry["per_ce_step"]["ce"] == 1.0
    assert all(v > 0 and math.isfinite(v) for v in entry["per_ce_step"].values())
    assert {"ie_ft/kd", "ie_at/kd", "ie_od/kd", "ie_dml/dml"} <= set(entry["pairs"])
    assert entry["ie_kd_vs_kd_max"] == max(entry["pairs"][k] for k in ("ie_ft/kd", "ie_at/kd", "ie_od/kd"))
    assert "methods" in bench.BENCHES and bench.QUICK["methods"]["repeats"] == 1


def test_bench_methods_rejects_unknown_names():
    with pytest.raises(ValueError, match="choose from: ce, kd"):
        method_steps_vs_ce(methods=("kd", "nonsense"))


def test_bench_methods_remembered_times_fixed_inputs_with_another_student():
    from kdnb.bench_methods import method_steps_vs_ce_remembered

    entry = method_steps_vs_ce_remembered(student="mobilenet", student_args={"width": 0.25}, teacher="resnet8",
                                          steps=2, repeats=1, batch_size=8, methods=("kd", "ie_ft"))
    assert entry["name"] == "method_steps_vs_ce_remembered" and entry["augment"] is None
    assert entry["student_args"] == {"width": 0.25} and set(entry["per_ce_step"]) == {"ce", "kd", "ie_ft"}
    assert bench.BENCHES["methods_remembered"] is method_steps_vs_ce_remembered
