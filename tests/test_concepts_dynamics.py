"""kdnb.concepts.dynamics: trajectories of concepts over checkpoints, Fig. 4's sets, Table 3's wins.

Every expected value is worked out by hand from the paper's Eqs. 3–5 on small maps written out below.
"""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from kdnb.analysis import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED
from kdnb.concepts import dynamics

# A 2×2 grid; foreground = the left column. With H̄ computed from these maps and b = 0.2:
FG = torch.tensor([[True, False], [True, False]])


def _maps(*cells_per_checkpoint):
    """Entropy maps (1 image, K checkpoints, 2, 2) from lists of 4 numbers (row-major)."""
    return torch.tensor([[list(c) for c in cells_per_checkpoint]], dtype=torch.float64).reshape(1, -1, 2, 2)


def test_trajectory_counts_with_baseline_per_checkpoint():
    # checkpoint 0: bg cells (0,1),(1,1) = -3, -3 -> H̄ = -3; fg cells -3.5 (concept), -3.1 (not: 0.1 <= 0.2)
    # checkpoint 1: bg = -2, -4 -> H̄ = -3; fg -3.3 (concept: 0.3 > 0.2), -3.5 (concept); bg -4 is a concept
    entropy = _maps([-3.5, -3.0, -3.1, -3.0], [-3.3, -2.0, -3.5, -4.0])
    t = dynamics.trajectory(entropy, FG, epochs=[0, 1], distance=[0.0, 2.0])
    assert t.baseline.tolist() == pytest.approx([-3.0, -3.0])
    assert t.n_fg.tolist() == [[1, 2]]
    assert t.n_bg.tolist() == [[0, 1]]
    summary = t.summary()
    assert summary["n_fg"] == 2 and summary["n_bg"] == 1
    assert summary["lambda"] == pytest.approx(2 / 3)
    assert summary["d_mean"] == pytest.approx(2.0)  # m̂ = 1, the distance there
    assert summary["d_var"] == 0 and summary["d_std"] == 0
    assert summary["rho"] == pytest.approx(1.0)  # fg final {a, c} = union {a, c}


def test_threshold_is_strict_and_b_matters():
    # fg cell exactly 0.2 below H̄ is not a concept (H̄ − H > b, strictly); with b = 0.1 it is
    entropy = _maps([-3.25, -3.0, -3.0, -3.0])
    entropy[0, 0, 0, 0] = -3.0 - 0.25
    assert dynamics.trajectory(entropy, FG, [0], [0.0], b=0.25).n_fg.item() == 0
    assert dynamics.trajectory(entropy, FG, [0], [0.0], b=0.2).n_fg.item() == 1


def test_learning_speed_first_argmax_on_ties_and_population_variance():
    # image 0: N_fg = 1, 2, 2 -> m̂ = 1 (first of the tie), D = 0.5
    # image 1: N_fg = 2, 0, 2 -> m̂ = 0, D = 0
    # D_mean = 0.25, D_var = ((0.25)^2 + (0.25)^2) / 2 = 0.0625 (population), D_std = 0.25
    bg = -3.0
    concept, plain = -4.0, -3.0
    img0 = [[concept, bg, plain, bg], [concept, bg, concept, bg], [concept, bg, concept, bg]]
    img1 = [[concept, bg, concept, bg], [plain, bg, plain, bg], [concept, bg, concept, bg]]
    entropy = torch.tensor([img0, img1], dtype=torch.float64).reshape(2, 3, 2, 2)
    t = dynamics.trajectory(entropy, FG, [0, 1, 2], [0.0, 0.5, 1.5])
    speed = t.speed()
    assert speed.m_hat.tolist() == [1, 0]
    assert speed.mean == pytest.approx(0.25)
    assert speed.var == pytest.approx(0.0625)
    assert speed.std == pytest.approx(0.25)
    peaks = dynamics.peaks_frame({("a", "fc1", "student"): t})
    assert peaks["distance at m̂"].tolist() == pytest.approx([0.5, 0.0])
    assert peaks["epoch at m̂"].tolist() == [1.0, 0.0]


def test_all_background_image_has_no_rho_and_lambda_zero():
    # every cell equal: H̄ − H = 0, no concept anywhere, at every checkpoint
    entropy = torch.full((1, 3, 2, 2), -3.0, dtype=torch.float64)
    t = dynamics.trajectory(entropy, FG, [0, 1, 2], [0.0, 1.0, 2.0])
    s = t.summary()
    assert s["n_fg"] == 0 and s["n_bg"] == 0 and s["lambda"] == 0
    assert math.isnan(s["rho"])  # 0/0: no ρ
    assert s["d_mean"] == 0.0  # N_fg constant 0: the first checkpoint is the (tied) maximum
    sets = dynamics.union_sets(t.concepts, FG)
    assert not sets.union.any() and (sets.first_seen == -1).all()
    assert math.isnan(sets.sizes()["rho"].iloc[0])


def test_union_sets_by_hand():
    # 1 image, 3 checkpoints, 2×2 cells a b / c d; foreground a, c.
    # k0: {a, b}; k1: {c}; k2 (final): {c, d}
    concepts = torch.tensor([[[[1, 1], [0, 0]], [[0, 0], [1, 0]], [[0, 0], [1, 1]]]], dtype=torch.bool)
    everywhere = dynamics.union_sets(concepts)
    assert everywhere.union.sum().item() == 4 and everywhere.final.sum().item() == 2
    assert everywhere.discarded[0].tolist() == [[True, True], [False, False]]
    assert everywhere.first_seen[0].tolist() == [[0, 0], [1, 2]]
    on_fg = dynamics.union_sets(concepts, FG)
    assert on_fg.union[0].tolist() == [[True, False], [True, False]]
    assert on_fg.final[0].tolist() == [[False, False], [True, False]]
    assert on_fg.first_seen[0].tolist() == [[0, -1], [1, -1]]
    sizes = on_fg.sizes()
    assert sizes.loc[0, ["final", "union", "discarded"]].tolist() == [1, 2, 1]
    assert sizes.loc[0, "rho"] == pytest.approx(0.5)
    # the trajectory's ρ is on foreground concepts (Eq. 5): the same 1/2
    # maps that give those sets: each checkpoint's H̄ (mean of b, d) is -3, concepts are the cells at -4
    entropy = _maps([-4, -4, -3, -2], [-3, -3, -4, -3], [-3, -2, -4, -4])
    t = dynamics.trajectory(entropy, FG, [0, 1, 2], [0.0, 1.0, 2.0])
    assert t.concepts.equal(concepts)
    assert t.rho().item() == pytest.approx(0.5)


def _frame(rows):
    return pd.DataFrame([{"architecture": a, "layer": l, "network": n, "n_fg": v[0], "n_bg": v[1], "lambda": v[2],
                          "d_mean": v[3], "d_std": v[4], "rho": v[5]} for a, l, n, v in rows])


def test_wins_directions_ties_and_missing_values():
    frame = _frame([
        ("net", "fc1", "student", (10, 2, 0.8, 1.0, 0.5, 0.6)),
        ("net", "fc1", "baseline", (8, 3, 0.7, 2.0, 0.1, 0.6)),     # S wins n_fg, n_bg, λ, D_mean; B D_std; tie ρ
        ("net", "fc2", "student", (5, 5, 0.5, 3.0, 1.0, math.nan)),
        ("net", "fc2", "baseline", (6, 4, 0.6, 3.0, 2.0, 0.5)),     # B, B, B, tie, S, n/a
        ("net", "fc3", "student", (1, 1, 0.5, 1.0, 1.0, 1.0)),      # no baseline row: left out
    ])
    decided = dynamics.wins(frame)
    assert decided.groupby("layer").size().to_dict() == {"fc1": 6, "fc2": 6}
    assert decided[decided.layer == "fc1"].winner.tolist() == ["S", "S", "S", "S", "B", "tie"]
    assert decided[decided.layer == "fc2"].winner.tolist() == ["B", "B", "B", "tie", "S", "n/a"]
    counts = dynamics.win_counts(decided)
    assert counts.loc["H1", ["S wins", "B wins", "ties", "n/a"]].tolist() == [3, 3, 0, 0]
    assert counts.loc["H2", ["S wins", "B wins", "ties", "n/a"]].tolist() == [2, 1, 1, 0]
    assert counts.loc["H3", ["S wins", "B wins", "ties", "n/a"]].tolist() == [0, 0, 1, 1]
    assert counts.loc["all", ["comparisons", "S wins", "B wins"]].tolist() == [12, 5, 4]
    assert counts.loc["all", "S share"] == pytest.approx(5 / 9)
    assert math.isnan(counts.loc["H3", "S share"]) and counts.loc["H3", "verdict"] == INCONCLUSIVE
    values, better = dynamics.table3(frame)
    assert values.shape == (5, 6)  # fc3 has an S row only: shown, never bold
    assert better.loc[("net", "fc1", "S")].tolist() == [True, True, True, True, False, False]
    assert better.loc[("net", "fc1", "B")].tolist() == [False, False, False, False, True, False]
    assert not better.loc[("net", "fc3", "S")].any()


def test_sign_test_by_hand():
    # two-sided exact binomial: 6-0 -> 2/64 = 0.03125; 5-0 -> 2/32 = 0.0625; 7-1 -> 2*9/256 = 0.0703
    assert dynamics.sign_test(6, 0) == (pytest.approx(2 / 64), REPRODUCED)
    assert dynamics.sign_test(0, 6) == (pytest.approx(2 / 64), NOT_REPRODUCED)
    assert dynamics.sign_test(5, 0) == (pytest.approx(2 / 32), INCONCLUSIVE)
    assert dynamics.sign_test(7, 1) == (pytest.approx(2 * 9 / 256), INCONCLUSIVE)
    p, verdict = dynamics.sign_test(0, 0)
    assert math.isnan(p) and verdict == INCONCLUSIVE


def test_paper_table3_reproduces_the_papers_stated_failures():
    # Sec. 4.4: D_mean and D_std fail (baseline smaller) at AlexNet FC1; Sec. 4.4: D at VGG-11 FC2 (D_std)
    decided = dynamics.wins(dynamics.paper_metrics_frame())
    cell = decided.set_index(["architecture", "layer", "metric"])["winner"]
    assert cell[("AlexNet", "fc1", "d_mean")] == "B" and cell[("AlexNet", "fc1", "d_std")] == "B"
    assert cell[("VGG-11", "fc2", "d_std")] == "B" and cell[("VGG-11", "fc2", "d_mean")] == "S"
    # Table 2's VGG-16 baseline on CUB (N_fg, λ) is Table 3's
    frame = dynamics.paper_metrics_frame(["VGG-16"]).set_index(["layer", "network"])
    assert frame.loc[("fc1", "baseline"), ["n_fg", "lambda"]].tolist() == [22.50, 0.68]
    assert frame.loc[("fc2", "baseline"), ["n_fg", "lambda"]].tolist() == [23.31, 0.67]
    assert len(decided) == 7 * 3 * 6
    with pytest.raises(ValueError, match="choose from"):
        dynamics.paper_metrics_frame(["VGG-13"])


def test_curves_frame_rows_and_bad_inputs():
    entropy = torch.full((2, 3, 2, 2), -3.0, dtype=torch.float64)
    t = dynamics.trajectory(entropy, FG, [0, 0.5, 1], [0.0, 0.1, 0.2])
    frame = dynamics.curves_frame({("a", "fc2", "baseline"): t})
    assert len(frame) == 2 * 3 and frame["weight distance"].tolist()[:3] == pytest.approx([0.0, 0.1, 0.2])
    with pytest.raises(ValueError, match="network one of"):
        dynamics.curves_frame({("a", "fc2", "teacher"): t})
    with pytest.raises(ValueError, match="must agree"):
        dynamics.trajectory(entropy, FG, [0, 1], [0.0, 1.0])
    with pytest.raises(ValueError, match="must increase"):
        dynamics.trajectory(entropy, FG, [0, 1, 1], [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="images, checkpoints"):
        dynamics.union_sets(torch.zeros(2, 2, 2, dtype=torch.bool))


def test_stability_frame_matches_the_sets():
    # image 0 as in test_union_sets_by_hand (fg ρ = 1/2); image 1 never has a concept (ρ undefined)
    entropy = torch.cat([_maps([-4, -4, -3, -2], [-3, -3, -4, -3], [-3, -2, -4, -4]),
                         torch.full((1, 3, 2, 2), -3.0, dtype=torch.float64)])
    t = dynamics.trajectory(entropy, FG, [0, 1, 2], [0.0, 1.0, 2.0])
    frame = dynamics.stability_frame({("a", "fc1", "student"): t})
    assert frame[["final", "union", "discarded"]].values.tolist() == [[1, 2, 1], [0, 0, 0]]
    assert frame.rho.iloc[0] == pytest.approx(0.5) and math.isnan(frame.rho.iloc[1])
    assert t.rho().item() == pytest.approx(0.5)  # the mean leaves the undefined image out


def _pair():
    # 2 images, 3 checkpoints, 2x2 grid; the student's fg concepts appear at checkpoint 1 and stay
    student = torch.stack([_maps([-3, -3, -3, -3], [-4, -3, -4, -3], [-4, -3, -4, -3])[0]] * 2)
    baseline = torch.stack([_maps([-4, -3, -3, -3], [-3, -3, -4, -3], [-3, -3, -3, -3])[0]] * 2)
    return {n: dynamics.trajectory(e, FG, [0, 1, 2], [0.0, 0.5, 1.0])
            for n, e in (("student", student), ("baseline", baseline))}


def test_figures_draw_what_the_frames_hold():
    import io

    from PIL import Image

    from kdnb.concepts import plots_dynamics

    pair = _pair()
    trajectories = {("a", "fc1", n): t for n, t in pair.items()}
    fig = plots_dynamics.concept_curves(dynamics.curves_frame(trajectories))
    lines = {line.get_label(): line.get_ydata().tolist() for line in fig.axes[0].get_lines()}
    assert lines["student"] == [0, 2, 2] and lines["baseline"] == [1, 1, 0]  # mean N_fg per checkpoint
    sets = {n: dynamics.union_sets(t.concepts, t.fg) for n, t in pair.items()}
    images = torch.zeros(2, 1, 8, 8)
    fig = plots_dynamics.union_sets_figure(images[0], pair, sets, 0)
    titles = [ax.get_title() for ax in fig.axes]
    assert "union: 2/2 kept, ρ=1.00" in titles and "union: 0/2 kept, ρ=0.00" in titles
    png = plots_dynamics.compact_png(plots_dynamics.concepts_at_checkpoint(images, pair, 1, [0, 1]), colors=16)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.mode == "P" and len(image.getcolors()) <= 16
    metrics = dynamics.metrics_frame(trajectories)
    values, better = dynamics.table3(metrics)
    html = plots_dynamics.style_table3(values, better).to_html()
    assert html.count("font-weight: bold") == 1  # one CSS rule lists every bold cell
    fig = plots_dynamics.win_grid(dynamics.wins(metrics))
    assert [t.get_text() for t in fig.axes[0].texts].count("S") == (dynamics.wins(metrics).winner == "S").sum()
