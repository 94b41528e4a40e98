"""Class similarity from explanations (Gu et al. 2020, Eq. 6 cosines and Fig. 2) and the Fig. 1 drawing helpers:
matrices by hand on tiny maps, invariances, and the agreement statistic against its definition."""
from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch

from kdnb import models
from kdnb.distill import le_targets
from kdnb.explain import class_maps, figures, similarity

matplotlib.use("Agg")
pytestmark = pytest.mark.usefixtures("one_thread")

R = 1 / math.sqrt(2)


def tiny_maps() -> tuple[torch.Tensor, torch.Tensor]:
    """Two images, three classes, maps of two pixels (2 × 1 pictures), labels (0, 2).
    Image 0: e0 = (1, 0), e1 = (0, 1), e2 = (1, 1).  Image 1: e0 = (1, 0), e1 = (1, 0), e2 = (0, 2)."""
    maps = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
                         [[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]]]).reshape(2, 3, 2, 1)
    return maps, torch.tensor([0, 2])


def test_map_cosines_by_hand_symmetric_unit_diagonal():
    maps, _ = tiny_maps()
    cos = similarity.map_cosines(maps)
    expected0 = torch.tensor([[1, 0, R], [0, 1, R], [R, R, 1]])
    expected1 = torch.tensor([[1.0, 1, 0], [1, 1, 0], [0, 0, 1]])
    assert torch.allclose(cos, torch.stack([expected0, expected1]), atol=1e-6)
    assert torch.allclose(cos, cos.transpose(1, 2))


def test_cosine_of_identical_maps_is_one_and_scale_free():
    g = torch.Generator().manual_seed(0)
    e = torch.rand(5, 7, 3, generator=g)
    maps = torch.stack([e, 3.0 * e, e + 0.0], dim=1)  # (5, 3, 7, 3): class 1 is class 0 scaled, class 2 a copy
    cos = similarity.cosine_to_truth(maps, torch.zeros(5, dtype=torch.long))
    assert torch.allclose(cos, torch.ones(5, 3), atol=1e-6)


def test_cosine_to_truth_is_the_truth_row_and_feeds_eq6():
    g = torch.Generator().manual_seed(1)
    maps = torch.randn(6, 4, 3, 3, generator=g)
    y = torch.tensor([0, 1, 2, 3, 1, 2])
    to_truth = similarity.cosine_to_truth(maps, y)
    assert torch.allclose(to_truth, similarity.map_cosines(maps)[torch.arange(6), y], atol=1e-6)
    # Eq. 6 from these cosines, written out, equals the library's LE targets
    alpha = 0.9
    shifted = (to_truth.double() + 1).masked_fill(torch.nn.functional.one_hot(y, 4).bool(), 0.0)
    q = (1 - alpha) * shifted / shifted.sum(dim=1, keepdim=True)
    q[torch.arange(6), y] = alpha
    assert torch.allclose(le_targets(maps, y, alpha).double(), q, atol=1e-6)


def test_zero_map_has_cosine_zero():
    maps = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]]).reshape(1, 2, 2)
    cos = similarity.map_cosines(maps)[0]
    assert cos.tolist() == [[pytest.approx(1.0), 0.0], [0.0, 0.0]]


def test_class_similarity_by_hand():
    # per ground-truth class c: S[c, k] = mean over the images of class c of cos(e^k, e^c)
    maps, y = tiny_maps()
    s = similarity.class_similarity(maps, y)
    assert s.shape == (3, 3)
    assert torch.allclose(s[0], torch.tensor([1.0, 0.0, R]), atol=1e-6)  # image 0 only, truth 0
    assert torch.isnan(s[1]).all()  # no image of class 1
    assert torch.allclose(s[2], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)  # image 1 only, truth 2


def test_class_similarity_averages_over_images_of_a_class():
    maps, _ = tiny_maps()
    s = similarity.class_similarity(maps, torch.tensor([1, 1]))
    # class 1, image 0: cos(e0,e1)=0, 1, cos(e2,e1)=R; image 1: cos(e0,e1)=1, 1, cos(e2,e1)=0
    assert torch.allclose(s[1], torch.tensor([0.5, 1.0, R / 2]), atol=1e-6)


def test_pairwise_class_similarity_is_symmetric_mean():
    maps, _ = tiny_maps()
    p = similarity.pairwise_class_similarity(maps)
    assert torch.allclose(p, p.T)
    assert torch.allclose(p, torch.tensor([[1.0, 0.5, R / 2], [0.5, 1.0, R / 2], [R / 2, R / 2, 1.0]]), atol=1e-6)


def test_class_similarity_invariant_to_image_order_and_map_scale():
    g = torch.Generator().manual_seed(2)
    maps = torch.rand(12, 5, 4, 4, generator=g)
    y = torch.arange(12) % 5
    order = torch.randperm(12, generator=g)
    scales = torch.rand(12, 5, 1, 1, generator=g) + 0.1
    base = similarity.class_similarity(maps, y)
    assert torch.allclose(base, similarity.class_similarity(maps[order], y[order]), atol=1e-6)
    assert torch.allclose(base, similarity.class_similarity(maps * scales, y), atol=1e-5)


def test_confusion_matrix_by_hand():
    y = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    predictions = torch.tensor([0, 0, 1, 2, 1, 0, 2])
    c = similarity.confusion_matrix(predictions, y, 3)
    assert torch.allclose(c, torch.tensor([[0.5, 0.25, 0.25], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]))
    logits = torch.nn.functional.one_hot(predictions, 3).float() * 5 - 1
    assert torch.equal(similarity.confusion_matrix(logits, y, 3), c)
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        similarity.confusion_matrix(torch.tensor([0, 3, 0, 0, 0, 0, 0]), y, 3)


def test_off_diagonal_and_top_pairs():
    m = torch.tensor([[1.0, 0.2, 0.9], [0.4, 1.0, 0.1], [0.7, 0.3, 1.0]])
    assert similarity.off_diagonal(m).tolist() == pytest.approx([0.2, 0.9, 0.4, 0.1, 0.7, 0.3])
    pairs = similarity.top_pairs(m, ["a", "b", "c"], count=2)  # symmetric part: ab 0.3, ac 0.8, bc 0.2
    assert [(a, b) for a, b, _ in pairs] == [("a", "c"), ("a", "b")]
    assert pairs[0][2] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="square"):
        similarity.off_diagonal(torch.zeros(2, 3))


def test_agreement_is_spearman_over_off_diagonal_entries():
    g = torch.Generator().manual_seed(3)
    a = torch.rand(6, 6, generator=g)
    b = torch.rand(6, 6, generator=g)
    got = similarity.agreement(a, b)
    # Spearman written out: Pearson correlation of the ranks (no ties in random floats)
    x, y = (similarity.off_diagonal(m).numpy() for m in (a, b))
    rx, ry = (np.argsort(np.argsort(v)).astype(float) for v in (x, y))
    assert got.rho == pytest.approx(np.corrcoef(rx, ry)[0, 1], abs=1e-9)
    assert got.n == 30
    # the diagonal does not count; a monotone transform of the off-diagonal entries gives rho = 1
    c = a.clone()
    c.fill_diagonal_(-5.0)
    assert similarity.agreement(a, c).rho == pytest.approx(1.0)
    assert similarity.agreement(a, torch.exp(3 * a)).rho == pytest.approx(1.0)
    assert similarity.agreement(a, -a).rho == pytest.approx(-1.0)
    assert math.isnan(similarity.agreement(a, torch.ones(6, 6)).rho)


def test_explain_images_matches_class_maps_in_batches():
    torch.manual_seed(0)
    model = models.create("resnet8", num_classes=10, in_channels=1).eval()
    x = torch.randn(7, 1, 28, 28)
    explained = similarity.explain_images(model, x, "gradcam", batch_size=3)
    assert torch.allclose(explained.maps, class_maps(model, x, "gradcam"), atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(explained.logits, model(x), atol=1e-5)
    assert explained.maps.shape == (7, 10, 7, 7)


def test_map_rows_and_figures_draw():
    g = torch.Generator().manual_seed(4)
    images = torch.rand(2, 1, 28, 28, generator=g)
    labels = torch.tensor([3, 1])
    layer_maps = torch.rand(2, 4, 7, 7, generator=g)
    input_maps = torch.randn(2, 4, 1, 28, 28, generator=g)
    names = ["a", "b", "c", "d"]
    rows = figures.map_rows(images, layer_maps, labels, le_targets(layer_maps, labels), labels, "LE")
    assert rows[0].cosines[3] == pytest.approx(1.0) and rows[1].cosines[1] == pytest.approx(1.0)
    assert float(rows[0].target[3]) == pytest.approx(0.9)
    signed = figures.map_rows(images, input_maps, labels, le_targets(input_maps, labels), labels, "CE")
    fig = figures.class_maps_figure(rows + signed, names)
    assert len(fig.axes) >= 4 * (len(names) + 2)
    draw = figures.frame_drawer({"LE": rows, "CE": signed}, names)
    assert draw(image=1, network="CE") is not None
    with pytest.raises(ValueError, match="choose one of: LE, CE"):
        draw(image=0, network="KD")
    with pytest.raises(ValueError, match="one entry per image"):
        figures.map_rows(images, layer_maps[:1], labels, labels, labels, "LE")
    heat = figures.similarity_heatmaps({"S": torch.rand(4, 4, generator=g), "C": torch.eye(4)}, names)
    assert len(heat.axes) == 4  # two panels, two colour bars
    assert figures.short_names(["T-shirt/top", "Bag"]) == ["T-shirt", "Bag"]
