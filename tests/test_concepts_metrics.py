"""Concept metrics (Cheng et al., Eqs. 3–5, as the released code computes them), the per-image tables and mode
agreement built on them (kdnb.concepts.summaries) and the concept figures, on hand-made entropy maps. Every
expected value below is worked out by hand from the definitions."""
from __future__ import annotations

import math

import pytest
import torch

from kdnb.concepts import (background_baseline, concept_map, count_concepts, effect_images, lambda_ratio,
                           learning_speed, stability, weight_distance)

NAN = float("nan")


def maps(*rows_per_image):
    return torch.tensor(rows_per_image, dtype=torch.float32)


# 2 × 2 grids; foreground = the left column.
FG = torch.tensor([[True, False], [True, False]])


def test_background_baseline_is_the_mean_of_per_image_background_means():
    entropy = maps([[-4.0, -1.0], [-4.0, -3.0]],   # background cells -1, -3: mean -2
                   [[-5.0, -2.0], [-5.0, -2.0]])   # background mean -2 ... and
    assert float(background_baseline(entropy, FG)) == pytest.approx(-2.0)
    entropy[1, :, 1] = -4.0                        # ... now -4: H̄ = mean(-2, -4) = -3
    assert float(background_baseline(entropy, FG)) == pytest.approx(-3.0)
    # per-image masks: image 1 has three background cells (-5, -4, -4 → -13/3)
    masks = torch.stack([FG, torch.tensor([[True, False], [False, False]])])
    assert float(background_baseline(entropy, masks)) == pytest.approx((-2.0 - 13 / 3) / 2)


def test_background_baseline_edge_cases():
    entropy = maps([[-1.0, -2.0], [-3.0, -4.0]], [[-5.0, -5.0], [-5.0, -5.0]])
    none = torch.zeros(2, 2, dtype=torch.bool)  # all background: the mean of every cell of every image
    assert float(background_baseline(entropy, none)) == pytest.approx((-2.5 + -5.0) / 2)
    everything = torch.ones(2, 2, dtype=torch.bool)  # no background anywhere: undefined
    assert math.isnan(float(background_baseline(entropy, everything)))
    # an image with no background cell, or an invalid (NaN) image, takes no part
    masks = torch.stack([FG, torch.ones(2, 2, dtype=torch.bool)])
    assert float(background_baseline(entropy, masks)) == pytest.approx(-3.0)
    entropy[1] = NAN
    assert float(background_baseline(entropy, FG)) == pytest.approx(-3.0)


def test_background_baseline_per_checkpoint():
    entropy = torch.stack([maps([[0.0, -1.0], [0.0, -1.0]], [[0.0, -3.0], [0.0, -3.0]]),
                           maps([[0.0, 1.0], [0.0, 1.0]], [[0.0, 5.0], [0.0, 5.0]])], dim=1)  # (2 images, 2 ckpts)
    assert background_baseline(entropy, FG).tolist() == pytest.approx([-2.0, 3.0])


def test_count_concepts_strict_threshold_and_empty_sets():
    # H̄ = 0, b = 0.25: a cell is a concept iff H < -0.25 strictly; -0.25 itself (a tie) is not.
    entropy = maps([[-0.5, -0.25], [-0.25, -1.0]],  # fg: -0.5 (yes), -0.25 (tie: no); bg: -0.25 (no), -1 (yes)
                   [[0.0, 0.0], [0.0, 0.0]])        # no concepts at all
    n_fg, n_bg = count_concepts(entropy, FG, 0.0, b=0.25)
    assert n_fg.tolist() == [1, 0] and n_bg.tolist() == [1, 0]
    assert n_fg.dtype == torch.long
    assert concept_map(entropy, 0.0, b=0.25)[0].tolist() == [[True, False], [False, True]]
    # all background: every concept is a background one
    n_fg, n_bg = count_concepts(entropy, torch.zeros(2, 2, dtype=torch.bool), 0.0, b=0.25)
    assert n_fg.tolist() == [0, 0] and n_bg.tolist() == [2, 0]
    # NaN maps (rejected images) hold no concepts
    n_fg, n_bg = count_concepts(torch.full((1, 2, 2), NAN), FG, 0.0)
    assert n_fg.tolist() == [0] and n_bg.tolist() == [0]


def test_count_concepts_with_one_baseline_per_checkpoint():
    entropy = torch.full((1, 2, 2, 2), -1.0)  # one image, two checkpoints, all cells -1
    n_fg, n_bg = count_concepts(entropy, FG, torch.tensor([0.0, -1.0]))  # H̄ − H = 1 then 0
    assert n_fg.tolist() == [[2, 0]] and n_bg.tolist() == [[2, 0]]


def test_lambda_ratio():
    n_fg, n_bg = torch.tensor([3, 0, 1, 0]), torch.tensor([1, 2, 1, 0])
    # 3/4, 0/2, 1/2 and an image without concepts counting 0: mean = (0.75 + 0 + 0.5 + 0) / 4
    assert float(lambda_ratio(n_fg, n_bg)) == pytest.approx(0.3125)
    per_checkpoint = lambda_ratio(torch.tensor([[1, 2], [0, 2]]), torch.tensor([[1, 0], [0, 2]]))
    assert per_checkpoint.tolist() == pytest.approx([0.25, 0.75])


def test_learning_speed_first_argmax_and_population_variance():
    n_fg = torch.tensor([[1, 5, 5, 2],    # tie at checkpoints 1 and 2: the first wins, m̂ = 1
                         [0, 0, 0, 0],    # all equal: m̂ = 0
                         [1, 2, 3, 7]])   # m̂ = 3
    distance = torch.tensor([0.0, 1.0, 2.0, 4.0])
    speed = learning_speed(n_fg, distance)
    assert speed.m_hat.tolist() == [1, 0, 3]
    assert speed.distance.tolist() == [1.0, 0.0, 4.0]
    d_mean, d_var = speed
    assert d_mean == pytest.approx(5 / 3)
    assert d_var == pytest.approx(((1 - 5 / 3) ** 2 + (5 / 3) ** 2 + (4 - 5 / 3) ** 2) / 3)  # np.var: divide by n
    assert speed.std == pytest.approx(math.sqrt(d_var))
    with pytest.raises(ValueError, match="checkpoints"):
        learning_speed(n_fg, distance[:3])


def test_weight_distance_accumulates_step_norms():
    steps = [0.5, 0.25, 0.25, 1.0]          # ‖w_t − w_{t−1}‖ for steps 1..4
    assert weight_distance(steps, 2.0, [0, 1, 2, 4]).tolist() == pytest.approx([0.0, 0.25, 0.375, 1.0])
    with pytest.raises(ValueError, match="outside"):
        weight_distance(steps, 2.0, [5])


def test_stability():
    s = torch.zeros(3, 3, 2, 2, dtype=torch.bool)  # 3 images, 3 checkpoints, 2 × 2 cells
    s[0, 0, 0, 0] = s[0, 1, 0, 1] = True           # image 0: tried cells (0,0), (0,1), (1,0);
    s[0, 2, 1, 0] = s[0, 2, 0, 1] = True           # kept (0,1), (1,0): ρ = 2/3
    s[1, :, 1, 1] = True                           # image 1: the same cell throughout: ρ = 1
    # image 2: no concept ever: 0/0, left out of the mean
    assert stability(s, per_image=True)[:2].tolist() == pytest.approx([2 / 3, 1.0])
    assert math.isnan(float(stability(s, per_image=True)[2]))
    assert float(stability(s)) == pytest.approx((2 / 3 + 1) / 2)
    # restricted to the foreground (left column): image 0 tried (0,0), (1,0), kept (1,0) → 1/2; image 1 empty
    assert float(stability(s, mask=FG)) == pytest.approx(0.5)
    s[0, 2] = False                                # nothing kept at the last checkpoint: ρ = 0
    assert float(stability(s, per_image=True)[0]) == 0.0
    assert math.isnan(float(stability(torch.zeros(2, 3, 2, 2, dtype=torch.bool))))


def test_effect_images_filter():
    good = [[-3.0, -1.0], [-3.0, -1.0]]     # fg mean -3 ≤ bg mean -1: passes
    tie = [[-2.0, -2.0], [-2.0, -2.0]]      # equal means pass (≥ 0)
    bad = [[-1.0, -3.0], [-1.0, -3.0]]      # foreground discarded more than background: fails
    entropy = torch.tensor([[good, good], [good, bad], [tie, good], [good, good]])  # (4 images, 2 checkpoints)
    assert effect_images(entropy, FG).tolist() == [True, False, True, True]
    assert effect_images(entropy, FG, checkpoints=[0]).tolist() == [True, True, True, True]
    assert effect_images(entropy, FG, limit=2).tolist() == [True, False, True, False]
    assert effect_images(entropy, FG, valid=torch.tensor([True, True, False, True])).tolist() == \
        [True, False, False, True]
    entropy[3, 1, 0, 0] = NAN
    assert effect_images(entropy, FG).tolist() == [True, False, True, False]
    # all background: no foreground mean, no effect image
    assert not effect_images(entropy, torch.zeros(2, 2, dtype=torch.bool)).any()


# ---------------------------------------------------------------- summaries and plots of entropy maps
from kdnb.concepts import EntropyResult, summaries  # noqa: E402
from kdnb.concepts import plots as concept_plots  # noqa: E402


def result_of(entropy: torch.Tensor, mode: str = "linearised", **settings) -> EntropyResult:
    n = entropy.shape[0]
    return EntropyResult(sigma=entropy.exp(), entropy=entropy, mean_entropy=entropy.mean(dim=(1, 2)),
                         valid=torch.ones(n, dtype=torch.bool), pinned=torch.zeros_like(entropy, dtype=torch.bool),
                         s_f=torch.ones(n), lam=torch.full((n,), 7.0), step=torch.zeros(n, dtype=torch.long),
                         history=settings.pop("history", torch.zeros(n, 1)), mode=mode, settings=settings)


def test_concept_table_counts_eq3_by_hand() -> None:
    # 2 images on a 2x2 grid, the left column foreground. Background H: image 0 (0, 0), image 1 (-1, 0) ->
    # H-bar = mean(0, -0.5) = -0.25; concepts where H < -0.25 - 0.2 = -0.45.
    entropy = torch.tensor([[[-1.0, 0.0], [-0.3, 0.0]], [[-0.5, -1.0], [0.0, 0.0]]])
    fg = torch.tensor([[True, False], [True, False]])
    table = summaries.concept_table(result_of(entropy), fg.expand(2, 2, 2), b=0.2)
    assert table.attrs["baseline"] == pytest.approx(-0.25)
    assert table.n_fg.tolist() == [1, 1] and table.n_bg.tolist() == [0, 1]
    assert table.ratio.tolist() == pytest.approx([1.0, 0.5])  # lambda = 0.75
    row = summaries.summary_row(table, network="x")
    assert row["ratio"] == pytest.approx(0.75) and row["n_bg_std"] == pytest.approx(2 ** -0.5)


def test_mode_agreement_contrast_passes_and_pairing() -> None:
    g = torch.Generator().manual_seed(0)
    entropy = torch.randn(3, 4, 4, generator=g)
    fg = torch.zeros(3, 4, 4, dtype=torch.bool)
    fg[:, 1:3, 1:3] = True
    same = summaries.mode_agreement(result_of(entropy), result_of(entropy.clone()), fg, b=0.2)
    assert same.spearman.tolist() == pytest.approx([1.0] * 3)
    assert all(v == 1.0 or v != v for v in same.iou)  # identical sets: IoU 1 (NaN when both are empty)
    flipped = summaries.mode_agreement(result_of(entropy), result_of(-entropy), fg, b=0.2)
    assert flipped.spearman.tolist() == pytest.approx([-1.0] * 3)
    contrast = summaries.foreground_contrast(result_of(entropy), fg)
    by_hand = [float(entropy[i][~fg[i]].mean() - entropy[i][fg[i]].mean()) for i in range(3)]
    assert contrast.tolist() == pytest.approx(by_hand, rel=1e-5)
    history = torch.tensor([[1.0, 2.0, float("nan")], [1.0, 2.0, 3.0], [1.0, float("nan"), float("nan")]])
    faithful = result_of(entropy, mode="faithful", samples=16, sf_samples=48, history=history)
    assert summaries.passes_per_image(faithful) == pytest.approx(16 * 2 + 48)  # 2 steps on average
    assert summaries.passes_per_image(result_of(entropy, vjps=16)) == 16
    a = summaries.concept_table(result_of(entropy), fg, b=0.0)
    c = a.assign(n_fg=a.n_fg + 2)
    diff = summaries.paired_over_images(c, a, "n_fg").difference
    assert diff.mean == 2 and diff.n == 3
    assert summaries.mean_std([1.0, 3.0]) == "2.00 ± 1.41" and summaries.mean_std([2.0]) == "2.00"
    assert summaries.mean_std([float("nan")]) == "—" and summaries.mean_std([0.5], 0.25) == "0.50 ± 0.25"


def test_concept_figures_draw() -> None:
    import matplotlib.pyplot as plt

    images = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8)
    fg = torch.zeros(2, 4, 4, dtype=torch.bool)
    fg[:, 1:3, 1:3] = True
    entropy = torch.randn(2, 4, 4)
    figures = [concept_plots.entropy_maps(images, {"fc1": entropy, "fc2": entropy}, fg, titles=["a", "b"]),
               concept_plots.concept_maps(images, {"s": entropy < 0, "b": entropy < 1}, fg),
               concept_plots.mode_agreement_scatter(entropy, entropy + 0.1, "x", "y"),
               concept_plots.samples_with_masks(images, torch.tensor([[2, 2, 10, 12], [0, 0, 16, 16]]),
                                                images[:, 0] > 100, fg, 4)]
    assert all(len(f.axes) > 0 for f in figures)
    for f in figures:
        plt.close(f)
