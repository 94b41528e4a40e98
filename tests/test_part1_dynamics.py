"""kdnb.studies.part1.dynamics: trajectories of concepts over g_1 … g_M, Fig. 4's sets, Table 3, the H2 control and
the one rule for Hypotheses 1–3 (Holm over a family of seed-paired comparisons).

Every expected value is worked out by hand from the paper's Eqs. 3–5 on small maps written out below.
"""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from kdnb.analysis import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED
from kdnb.studies.part1 import dynamics

# A 2×2 grid; foreground = the left column. With H̄ computed from these maps and b = 0.2:
FG = torch.tensor([[True, False], [True, False]])


def _maps(*cells_per_checkpoint):
    """Entropy maps (1 image, K checkpoints, 2, 2) from lists of 4 numbers (row-major)."""
    return torch.tensor([[list(c) for c in cells_per_checkpoint]], dtype=torch.float64).reshape(1, -1, 2, 2)


def test_trajectory_counts_with_baseline_per_checkpoint():
    # checkpoint 1: bg cells (0,1),(1,1) = -3, -3 -> H̄ = -3; fg cells -3.5 (concept), -3.1 (not: 0.1 <= 0.2)
    # checkpoint 2: bg = -2, -4 -> H̄ = -3; fg -3.3 (concept: 0.3 > 0.2), -3.5 (concept); bg -4 is a concept
    entropy = _maps([-3.5, -3.0, -3.1, -3.0], [-3.3, -2.0, -3.5, -4.0])
    t = dynamics.trajectory(entropy, FG, epochs=[1, 2], distance=[1.0, 2.0])
    assert t.baseline.tolist() == pytest.approx([-3.0, -3.0])
    assert t.n_fg.tolist() == [[1, 2]]
    assert t.n_bg.tolist() == [[0, 1]]
    summary = t.summary()
    assert summary["n_fg"] == 2 and summary["n_bg"] == 1
    assert summary["lambda"] == pytest.approx(2 / 3)
    assert summary["d_mean"] == pytest.approx(2.0)  # m̂ = the second checkpoint, the distance there
    assert summary["d_var"] == 0 and summary["d_std"] == 0
    assert summary["rho"] == pytest.approx(1.0)  # fg final {a, c} = union {a, c}
    assert summary["path"] == 2.0 and summary["d_mean_rel"] == pytest.approx(1.0)  # peak at the path's end


def test_the_initial_weights_are_not_a_checkpoint_of_eq4_and_eq5():
    # Eqs. 4-5 run over g_1 ... g_M; g_0 (epoch 0, the initial weights) is dropped. One image, foreground a, c:
    #   epoch 0: fg concepts {a, c} (2)  -- the random network's "concepts"
    #   epoch 1: {a}; epoch 2: {a}      (bg cells b, d at -3 everywhere: H̄ = -3, a concept is H < -3.2)
    # Over g_1..g_2: m̂ = epoch 1 (first of the tie), D = 1.0; ρ = |{a}| / |{a}| = 1.
    # Including g_0 would give m̂ = epoch 0, D = 0, and ρ = 1/2 (c was "tried" by the initial weights).
    entropy = _maps([-4, -3, -4, -3], [-4, -3, -3, -3], [-4, -3, -3, -3])
    distance = [0.0, 1.0, 3.0]
    t = dynamics.trajectory(entropy, FG, epochs=[0, 1, 2], distance=distance)
    assert t.epochs == (1.0, 2.0) and t.distance.tolist() == [1.0, 3.0]
    assert t.speed().mean == pytest.approx(1.0) and t.speed().m_hat.tolist() == [0]
    assert t.rho().item() == pytest.approx(1.0)
    # the same maps with g_0 counted (what the paper's j = 1..M rules out) give other answers
    from kdnb.concepts import learning_speed, stability
    with_g0 = dynamics.trajectory(entropy, FG, epochs=[0.5, 1, 2], distance=distance)  # g_0 relabelled as trained
    assert learning_speed(with_g0.n_fg, with_g0.distance).mean == 0.0
    assert float(stability(with_g0.concepts, mask=FG)) == pytest.approx(0.5)
    peaks = dynamics.peaks_frame({("a", "fc1", "student", 0): t})
    assert peaks["epoch at m̂"].tolist() == [1.0] and peaks["share of the path at m̂"].tolist() == [pytest.approx(1 / 3)]
    with pytest.raises(ValueError, match="after the initial weights"):
        dynamics.trajectory(entropy[:, :1], FG, epochs=[0], distance=[0.0])


def test_h2_control_is_blind_to_the_scale_of_the_steps():
    # Two images peaking at the 1st and 3rd checkpoints; distances 1, 2, 4 (W_M = 4): D = (1, 4), D_mean = 2.5,
    # D_std = 1.5 (population), control D_mean / W_M = 0.625, D_std / W_M = 0.375. A loss c times larger (every
    # step c times longer) multiplies D_mean and D_std by c and leaves the control unchanged.
    c, p = -4.0, -3.0
    img0 = [[c, -3, p, -3], [p, -3, p, -3], [p, -3, p, -3]]
    img1 = [[p, -3, p, -3], [c, -3, p, -3], [c, -3, c, -3]]
    entropy = torch.tensor([img0, img1], dtype=torch.float64).reshape(2, 3, 2, 2)
    for scale in (1.0, 10.0):
        s = dynamics.trajectory(entropy, FG, [1, 2, 3], [scale * d for d in (1.0, 2.0, 4.0)]).summary()
        assert s["d_mean"] == pytest.approx(2.5 * scale) and s["d_std"] == pytest.approx(1.5 * scale)
        assert s["d_mean_rel"] == pytest.approx(0.625) and s["d_std_rel"] == pytest.approx(0.375)


def test_threshold_is_strict_and_b_matters():
    # fg cell exactly 0.2 below H̄ is not a concept (H̄ − H > b, strictly); with b = 0.1 it is
    entropy = _maps([-3.25, -3.0, -3.0, -3.0])
    entropy[0, 0, 0, 0] = -3.0 - 0.25
    assert dynamics.trajectory(entropy, FG, [1], [0.0], b=0.25).n_fg.item() == 0
    assert dynamics.trajectory(entropy, FG, [1], [0.0], b=0.2).n_fg.item() == 1


def test_learning_speed_first_argmax_on_ties_and_population_variance():
    # image 0: N_fg = 1, 2, 2 -> m̂ = 1 (first of the tie), D = 0.5
    # image 1: N_fg = 2, 0, 2 -> m̂ = 0, D = 0
    # D_mean = 0.25, D_var = ((0.25)^2 + (0.25)^2) / 2 = 0.0625 (population), D_std = 0.25
    bg = -3.0
    concept, plain = -4.0, -3.0
    img0 = [[concept, bg, plain, bg], [concept, bg, concept, bg], [concept, bg, concept, bg]]
    img1 = [[concept, bg, concept, bg], [plain, bg, plain, bg], [concept, bg, concept, bg]]
    entropy = torch.tensor([img0, img1], dtype=torch.float64).reshape(2, 3, 2, 2)
    t = dynamics.trajectory(entropy, FG, [1, 2, 3], [0.0, 0.5, 1.5])
    speed = t.speed()
    assert speed.m_hat.tolist() == [1, 0]
    assert speed.mean == pytest.approx(0.25)
    assert speed.var == pytest.approx(0.0625)
    assert speed.std == pytest.approx(0.25)
    peaks = dynamics.peaks_frame({("a", "fc1", "student", 0): t})
    assert peaks["distance at m̂"].tolist() == pytest.approx([0.5, 0.0])
    assert peaks["epoch at m̂"].tolist() == [2.0, 1.0]


def test_all_background_image_has_no_rho_and_lambda_zero():
    # every cell equal: H̄ − H = 0, no concept anywhere, at every checkpoint
    entropy = torch.full((1, 3, 2, 2), -3.0, dtype=torch.float64)
    t = dynamics.trajectory(entropy, FG, [1, 2, 3], [0.5, 1.0, 2.0])
    s = t.summary()
    assert s["n_fg"] == 0 and s["n_bg"] == 0 and s["lambda"] == 0
    assert math.isnan(s["rho"])  # 0/0: no ρ
    assert s["d_mean"] == 0.5  # N_fg constant 0: the first checkpoint g_1 is the (tied) maximum
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
    t = dynamics.trajectory(entropy, FG, [1, 2, 3], [0.5, 1.0, 2.0])
    assert t.concepts.equal(concepts)
    assert t.rho().item() == pytest.approx(0.5)


def _frame(rows):
    return pd.DataFrame([{"architecture": a, "layer": l, "network": n, "seed": 0, "n_fg": v[0], "n_bg": v[1],
                          "lambda": v[2], "d_mean": v[3], "d_std": v[4], "rho": v[5]} for a, l, n, v in rows])


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
    t = dynamics.trajectory(entropy, FG, [0.25, 0.5, 1], [0.05, 0.1, 0.2])
    frame = dynamics.curves_frame({("a", "fc2", "baseline", 3): t})
    assert len(frame) == 2 * 3 and frame["weight distance"].tolist()[:3] == pytest.approx([0.05, 0.1, 0.2])
    assert set(frame.seed) == {3}
    with pytest.raises(ValueError, match="network one of"):
        dynamics.curves_frame({("a", "fc2", "teacher", 0): t})
    with pytest.raises(ValueError, match="network one of"):
        dynamics.curves_frame({("a", "fc2", "student"): t})  # no seed
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
    t = dynamics.trajectory(entropy, FG, [1, 2, 3], [0.5, 1.0, 2.0])
    frame = dynamics.stability_frame({("a", "fc1", "student", 0): t})
    assert frame[["final", "union", "discarded"]].values.tolist() == [[1, 2, 1], [0, 0, 0]]
    assert frame.rho.iloc[0] == pytest.approx(0.5) and math.isnan(frame.rho.iloc[1])
    assert t.rho().item() == pytest.approx(0.5)  # the mean leaves the undefined image out


def _pair():
    # 2 images, 3 checkpoints, 2x2 grid; the student's fg concepts appear at checkpoint 1 and stay
    student = torch.stack([_maps([-3, -3, -3, -3], [-4, -3, -4, -3], [-4, -3, -4, -3])[0]] * 2)
    baseline = torch.stack([_maps([-4, -3, -3, -3], [-3, -3, -4, -3], [-3, -3, -3, -3])[0]] * 2)
    return {n: dynamics.trajectory(e, FG, [1, 2, 3], [0.25, 0.5, 1.0])
            for n, e in (("student", student), ("baseline", baseline))}


def test_figures_draw_what_the_frames_hold():
    import io

    from PIL import Image

    from kdnb.studies.part1 import plots_dynamics

    pair = _pair()
    trajectories = {("a", "fc1", n, 0): t for n, t in pair.items()}
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


# ------------------------------------------------------------------------- the one rule (Holm over a family)
from kdnb.analysis import PREMISE_UNMET, Premise  # noqa: E402

SEEDS = range(5)


def _seed_frame(cells):
    """A metrics frame with 5 seeds per network: ``cells`` maps (layer) to (student n_fg − baseline n_fg, student
    n_bg − baseline n_bg) per seed, the baseline at n_fg 10, n_bg 5 on every seed."""
    rows = []
    for layer, (d_fg, d_bg) in cells.items():
        for seed in SEEDS:
            rows.append({"architecture": "net", "layer": layer, "network": "baseline", "seed": seed, "n_fg": 10.0,
                         "n_bg": 5.0})
            rows.append({"architecture": "net", "layer": layer, "network": "student", "seed": seed,
                         "n_fg": 10.0 + d_fg[seed], "n_bg": 5.0 + d_bg[seed]})
    return pd.DataFrame(rows)


CELLS = {"fc1": ([3.0, 3.1, 2.9, 3.2, 2.8], [-1.0, -1.1, -0.9, -1.2, -0.8]),   # both for the student
         "fc2": ([0.5, -0.4, 0.2, -0.1, 0.0], [2.0, 2.1, 1.9, 2.2, 1.8])}       # undecided; N_bg against
H1_TWO = [m for m in dynamics.METRICS if m.key in ("n_fg", "n_bg")]


def test_judge_holm_over_the_family_by_hand():
    from scipy import stats as st

    family = dynamics.judge(_seed_frame(CELLS), H1_TWO, "H1")
    table = family.table.set_index(["layer", "metric"])
    # the reference: one-sided t-tests of the paired improvements (fewer N_bg is better: baseline − student)
    improvement = {("fc1", "n_fg"): CELLS["fc1"][0], ("fc1", "n_bg"): [-d for d in CELLS["fc1"][1]],
                   ("fc2", "n_fg"): CELLS["fc2"][0], ("fc2", "n_bg"): [-d for d in CELLS["fc2"][1]]}
    p = {}
    for key, d in improvement.items():
        p[(key, "for")] = st.ttest_1samp(d, 0, alternative="greater").pvalue
        p[(key, "against")] = st.ttest_1samp(d, 0, alternative="less").pvalue
        assert table.loc[key, "p_for"] == pytest.approx(p[(key, "for")])
        assert table.loc[key, "improvement"] == pytest.approx(sum(d) / 5)
    # Holm over the 8 one-sided tests at 0.05: sorted p against 0.05/8, 0.05/7, ...: the three tiny ones pass
    order = sorted(p, key=p.get)
    rejected = set()
    for step, key in enumerate(order):
        if p[key] > 0.05 / (8 - step):
            break
        rejected.add(key)
    assert rejected == {(("fc1", "n_fg"), "for"), (("fc1", "n_bg"), "for"), (("fc2", "n_bg"), "against")}
    assert table.decision.to_dict() == {("fc1", "n_fg"): "for", ("fc1", "n_bg"): "for",
                                        ("fc2", "n_fg"): "undecided", ("fc2", "n_bg"): "against"}
    # 2 of 4 for is not "most" (more than half), 1 of 4 against neither: inconclusive
    assert family.verdict == INCONCLUSIVE and family.support() == "2 of 4" and family.size == 4
    assert (family.count.favour, family.count.against, family.count.total) == (2, 1, 4)
    assert family.left_out.empty
    # resolution of one comparison at Holm's first step: t_{1 - 0.05/(2*4)}(df 4) * s / sqrt(5)
    s = st.tstd(CELLS["fc2"][0])
    assert table.loc[("fc2", "n_fg"), "resolution"] == pytest.approx(st.t.ppf(1 - 0.05 / 8, 4) * s / 5 ** 0.5)


def test_weak_networks_and_failed_premises_leave_the_tally():
    frame = _seed_frame(CELLS)
    # the fc2 student is below twice chance on seeds 0-2: two seeds are left, too few, so the cell leaves the tally
    weak = pd.DataFrame([{"architecture": "net", "network": "student", "layer": "fc2", "seed": s, "accuracy": 12.0}
                         for s in (0, 1, 2)])
    family = dynamics.judge(frame, H1_TWO, "H1", weak=weak)
    assert set(family.table.layer) == {"fc1"} and family.verdict == REPRODUCED  # 2 of 2 for
    left = family.left_out
    assert sorted(left[left.seed != "all"].seed) == [0, 1, 2]
    assert set(left[left.seed != "all"].reason) == {"student below twice chance"}
    assert "2 seed(s) left" in left[left.seed == "all"].reason.iloc[0]
    # a weak baseline takes its seed out of every cell of its architecture: one seed fewer everywhere
    weak_base = pd.DataFrame([{"architecture": "net", "network": "baseline", "layer": "", "seed": 4,
                               "accuracy": 11.0}])
    assert set(dynamics.judge(frame, H1_TWO, weak=weak_base).table.n) == {4}
    # an architecture whose premise failed is left out whole: an empty family is inconclusive ...
    empty = dynamics.judge(frame, H1_TWO, "H1", architectures=["other"])
    assert empty.size == 0 and empty.verdict == INCONCLUSIVE and set(empty.left_out.reason) == {"premise unmet"}
    # ... and its claim, with the premise that failed, is "premise unmet" with the numbers and the remedy
    unmet = Premise("teacher ≥ baseline + 3 points", "60.00 vs 59.00 (+1.00)", held=False, remedy="A stronger teacher.")
    claim = dynamics.family_claim("H1", "Table 3", empty, unmet, {"n_fg": 1.0, "n_bg": 0.5})
    assert claim.verdict == PREMISE_UNMET and claim.premise_held is False and "60.00 vs 59.00" in claim.premise
    assert claim.note.startswith("A stronger teacher.") and claim.n is None


def test_family_claim_reports_resolution_and_seeds_to_settle():
    family = dynamics.judge(_seed_frame(CELLS), H1_TWO, "H1")
    held = Premise("teacher ≥ baseline + 3 points", "70.00 vs 60.00 (+10.00)", held=True)
    claim = dynamics.family_claim("H1", "Table 3", family, held, {"n_fg": 0.2, "n_bg": None})
    assert claim.verdict == INCONCLUSIVE and claim.n == 5 and claim.premise_held is True
    assert "n=5" in claim.resolution and "4 comparisons" in claim.resolution
    assert claim.paper_effect == "N_fg +0.2 concepts"
    # the paper's +0.2 is far below the N_fg resolution: the note says so and how many seeds would find it
    assert "below this design's resolution" in claim.note and "seeds would find it" in claim.note
    assert "N_bg" not in claim.note  # no paper effect given for N_bg: nothing to settle


def test_paper_effects_in_our_units():
    effects = dynamics.paper_effects(grid=16)
    assert effects["d_mean"] is None  # relative effects need our baselines
    small = dynamics.paper_effects(grid=8)
    assert small["n_fg"] == pytest.approx(effects["n_fg"] / 4)  # 64 cells instead of 256
    assert effects["n_fg"] > 0 and 0 < effects["lambda"] < 1
    # the paper's Table 3, λ column (CUB; S − B per cell): the median of these 21 differences
    lam = [0.90 - 0.81, 0.92 - 0.80, 0.89 - 0.83, 0.75 - 0.70, 0.78 - 0.72, 0.72 - 0.69, 0.84 - 0.68, 0.77 - 0.67,
           0.77 - 0.71, 0.80 - 0.67, 0.82 - 0.70, 0.82 - 0.74, 0.81 - 0.79, 0.83 - 0.79, 0.77 - 0.79, 0.81 - 0.78,
           0.85 - 0.78, 0.82 - 0.80, 0.79 - 0.81, 0.81 - 0.81, 0.79 - 0.81]
    assert effects["lambda"] == pytest.approx(sorted(lam)[10])
    frame = pd.DataFrame([{"network": "baseline", "d_mean": 2.0, "d_std": 1.0, "d_mean_rel": 0.5, "d_std_rel": 0.2},
                          {"network": "baseline", "d_mean": 4.0, "d_std": 3.0, "d_mean_rel": 0.7, "d_std_rel": 0.4},
                          {"network": "student", "d_mean": 100.0, "d_std": 100.0, "d_mean_rel": 9.0,
                           "d_std_rel": 9.0}])
    ours = dynamics.paper_effects(grid=16, frame=frame)
    assert ours["d_mean"] / 3.0 == pytest.approx(ours["d_mean_rel"] / 0.6)  # one relative effect, two scales
    assert 0 < ours["d_mean"] < 3.0


def test_win_grid_draws_holm_decisions_and_an_empty_tally():
    import matplotlib.pyplot as plt

    from kdnb.studies.part1 import plots_dynamics

    family = dynamics.judge(_seed_frame(CELLS), H1_TWO, "H1")
    fig = plots_dynamics.win_grid(family.table)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts.count("S") == 2 and texts.count("B") == 1 and texts.count("·") == 1  # for, for, against, undecided
    plt.close(fig)
    empty = dynamics.judge(_seed_frame(CELLS), H1_TWO, architectures=[])
    fig = plots_dynamics.win_grid(empty.table)
    assert [t.get_text() for t in fig.axes[0].texts] == ["no comparison in the tally"]
    plt.close(fig)
