"""The shared feature helpers and the cross-family pairing rule of :mod:`kdnb.distill.features`: which features
pair (stage outputs of equal size; the last stages for FT and the IE family) and how different sizes meet (the
larger map average-pooled to the smaller). References are written from the definitions with loops."""
from __future__ import annotations

import math

import pytest
import torch

from kdnb import distill, models
from kdnb.distill.attention import attention_loss
from kdnb.distill.features import last_stage, layer_pairs, match_size, stage_outputs, stage_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


def net(name: str, seed: int = 0) -> models.FeatureModel:
    torch.manual_seed(seed)
    return models.create(name, num_classes=10, in_channels=1)


def adaptive_window(i: int, size: int, out: int) -> range:
    """Adaptive average pooling's i-th window over ``size`` positions into ``out``: from floor(i·size/out) to
    ceil((i+1)·size/out)."""
    return range(math.floor(i * size / out), math.ceil((i + 1) * size / out))


def pooled_by_hand(x: torch.Tensor, out: tuple[int, int]) -> list:
    b, c, h, w = x.shape
    return [[[[sum(x[n, k, r, s].item() for r in adaptive_window(i, h, out[0]) for s in adaptive_window(j, w, out[1]))
               / (len(adaptive_window(i, h, out[0])) * len(adaptive_window(j, w, out[1])))
               for j in range(out[1])] for i in range(out[0])] for k in range(c)] for n in range(b)]


@pytest.mark.parametrize("name, stages", [
    ("resnet8", ("stage1", "stage2", "stage3")), ("wrn-16-1", ("stage1", "stage2", "stage3")),
    ("vgg13", ("block1", "block2", "block3", "block4", "block5")),
    ("mobilenet", ("stage1", "stage2", "stage3", "stage4", "stage5")),
    ("cnn6", ("conv1", "conv2", "conv3", "conv4", "conv5"))])
def test_stage_outputs_and_last_stage_per_family(name, stages):
    model = net(name)
    assert stage_outputs(model) == stages
    assert last_stage(model) == stages[-1]


def test_stage_pairs_match_resolutions_across_families():
    # WRN teacher -> VGG student (the paper's WRN-46-4 -> VGG-13, smaller here): VGG's 4x4 blocks stay unpaired.
    assert stage_pairs(net("vgg13"), net("wrn-16-1")) == (("block1", "stage1"), ("block2", "stage2"),
                                                          ("block3", "stage3"))
    # VGG teacher -> ResNet student: teacher blocks 4 and 5 (4x4) have no student map of their size.
    assert stage_pairs(net("resnet8"), net("vgg8")) == (("stage1", "block1"), ("stage2", "block2"),
                                                        ("stage3", "block3"))
    # Same family: the identity pairing, as the AT default.
    assert stage_pairs(net("resnet8"), net("resnet14")) == (("stage1", "stage1"), ("stage2", "stage2"),
                                                            ("stage3", "stage3"))
    # Several student maps of the teacher's size: the deepest (MobileNet stage 5 is 2x2, VGG's blocks 4-5 4x4).
    assert ("block5", "stage4") in stage_pairs(net("vgg8"), net("mobilenet"))


def test_layer_pairs_accepts_names_pairs_and_stages():
    student, teacher = net("vgg8"), net("wrn-16-1")
    assert layer_pairs(student, teacher, "stages") == stage_pairs(student, teacher)
    assert layer_pairs(student, teacher, (("block5", "stage3"),)) == (("block5", "stage3"),)
    assert layer_pairs(net("resnet8"), net("resnet14"), ("stage2",)) == (("stage2", "stage2"),)
    with pytest.raises(ValueError, match="no feature 'stage3'"):
        layer_pairs(student, teacher, ("stage3",))  # VGG has blocks, not stages


def test_match_size_pools_the_larger_map_to_the_smaller_by_hand():
    torch.manual_seed(0)
    big, small = torch.randn(2, 3, 7, 7), torch.randn(2, 5, 3, 3)  # a 7x7 teacher map, a 3x3 student map
    for a, b in ((big, small), (small, big)):
        pa, pb = match_size(a, b)
        pooled = pa if a is big else pb
        assert (pa.shape[2:], pb.shape[2:]) == ((3, 3), (3, 3))
        assert (pb if a is big else pa) is small  # the smaller map is untouched
        assert torch.allclose(pooled, torch.tensor(pooled_by_hand(big, (3, 3))), rtol=1e-5, atol=1e-6)
    # Each dimension separately: 4x6 and 6x2 meet at 4x2.
    a, b = torch.randn(1, 1, 4, 6), torch.randn(1, 2, 6, 2)
    pa, pb = match_size(a, b)
    assert torch.allclose(pa, torch.tensor(pooled_by_hand(a, (4, 2))), rtol=1e-5, atol=1e-6)
    assert torch.allclose(pb, torch.tensor(pooled_by_hand(b, (4, 2))), rtol=1e-5, atol=1e-6)
    same = torch.randn(1, 1, 3, 3)
    assert match_size(same, same)[0] is same


def test_attention_loss_across_sizes_by_hand():
    torch.manual_seed(1)
    s, t = torch.randn(2, 4, 3, 3), torch.randn(2, 6, 7, 7)
    energy_t = [[[sum(t[n, c, h, w].item() ** 2 for c in range(6)) / 6 for w in range(7)] for h in range(7)]
                for n in range(2)]
    pooled = pooled_by_hand(torch.tensor(energy_t)[:, None], (3, 3))
    expected = 0.0
    for n in range(2):
        qs = [sum(s[n, c, h, w].item() ** 2 for c in range(4)) / 4 for h in range(3) for w in range(3)]
        qt = [pooled[n][0][h][w] for h in range(3) for w in range(3)]
        ns, nt = math.sqrt(sum(v * v for v in qs)), math.sqrt(sum(v * v for v in qt))
        expected += sum((a / ns - b / nt) ** 2 for a, b in zip(qs, qt))
    assert attention_loss(s, t).item() == pytest.approx(expected / (2 * 9), rel=1e-5)
    assert attention_loss(t, s).item() == pytest.approx(expected / (2 * 9), rel=1e-5)  # symmetric in the rule


def test_attention_transfer_between_wrn_and_vgg():
    student, teacher = net("vgg8"), net("wrn-16-1", 1)
    method = distill.AttentionTransfer(student, teacher, layers="stages").eval()
    assert method.pairs == (("block1", "stage1"), ("block2", "stage2"), ("block3", "stage3"))
    x, y = torch.randn(3, 1, 28, 28), torch.randint(0, 10, (3,))
    _, terms = method(x, y)
    fs, ft = student.forward_features(x)[1], teacher.forward_features(x)[1]
    expected = 500 * sum(attention_loss(fs[a], ft[b]) for a, b in method.pairs)
    assert terms["at"].item() == pytest.approx(expected.item(), rel=1e-6)
    # An explicit pair of last stages of different sizes (3x3 against 7x7 at 28 px) is allowed too.
    last = distill.AttentionTransfer(student, teacher, layers=(("block5", "stage3"),)).eval()
    assert math.isfinite(last(x, y)[1]["at"].item())
