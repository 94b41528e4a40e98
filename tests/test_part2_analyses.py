"""Part II's analyses (chapters II.1 and II.5): the properties the chapters rely on, on small hand-made inputs and
tiny networks (no run is trained)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdnb import models, profiles
from kdnb.analysis.representation import active_subspace, linear_cka
from kdnb.analysis.sharpness import noisy_loss
from kdnb.distill.inheritance import ChannelSplit
from kdnb.studies.part2 import analyses, compact, scale, tables


class FakeRun:
    """What the analyses read from a run: the trained student and the IE run's split."""

    def __init__(self, net, split=None):
        self.net, self.split = net, split

    def model(self, epoch=None, device=None):
        return self.net

    def network(self, name, epoch=None, device=None):
        assert name == "split"
        return self.split


def trained_ish_resnet8(seed: int = 0):
    """A ResNet-8 after a few SGD steps on random images (weights and BN statistics off their initial values)."""
    torch.manual_seed(seed)
    net = models.create("resnet8", num_classes=10, in_channels=1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    net.train()
    for _ in range(5):
        x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
    return net.eval()


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(1)
    split = ChannelSplit(64, 0.5, "random")
    return {name: trained_ish_resnet8(i) for i, name in enumerate(("teacher", "CE", "KD", "IE"))}, split


# ------------------------------------------------------------------------------------------------ LRP
def test_group_maps_sum_to_the_full_map(nets):
    networks, split = nets
    torch.manual_seed(2)
    x, y = torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6,))
    maps = analyses._lrp_maps(*(FakeRun(networks[n]) for n in ("teacher", "CE", "KD")),
                              FakeRun(networks["IE"], split), x, y)
    assert set(maps) == set(analyses.NETWORKS)
    assert all(m.shape == (6, 28, 28) for m in maps.values())
    whole = maps["IE-FT"]
    parts = maps["IE-FT inheritance"] + maps["IE-FT exploration"]
    assert float(whole.abs().max()) > 0
    assert torch.allclose(parts, whole, atol=1e-5 * float(whole.abs().max()))
    # each part alone is not the whole: the split matters
    assert not torch.allclose(maps["IE-FT inheritance"], whole, atol=1e-3 * float(whole.abs().max()))


def test_group_logits_add_up_to_the_logits(nets):
    networks, split = nets
    net = networks["IE"]
    x = torch.randn(5, 1, 28, 28)
    inh = analyses.group_logits(net, x, split.inherit)
    exp = analyses.group_logits(net, x, split.explore)
    with torch.no_grad():
        full = net(x)
    assert torch.allclose(inh + exp - net.classifier.bias.detach(), full, atol=1e-5)
    assert torch.allclose(analyses.group_logits(net, x), full, atol=1e-5)


def test_map_similarity():
    a = torch.randn(4, 7, 7)
    assert torch.allclose(analyses.map_similarity(a, 3 * a), torch.ones(4), atol=1e-6)
    assert torch.allclose(analyses.map_similarity(a, -a), -torch.ones(4), atol=1e-6)
    assert float(analyses.map_similarity(torch.zeros(1, 7, 7), a[:1])) == 0.0


# ------------------------------------------------------------------------------------------------ CKA
def test_linear_cka_invariances():
    torch.manual_seed(3)
    x = torch.randn(200, 12, dtype=torch.float64)  # float64: the transforms add no rounding above 1e-12
    y = x @ torch.randn(12, 8, dtype=torch.float64) + 0.5 * torch.randn(200, 8, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    base = linear_cka(x, y)
    assert 0 < base < 1
    assert linear_cka(x, y @ q) == pytest.approx(base, abs=1e-9)      # orthogonal transform
    assert linear_cka(x, 7.5 * y) == pytest.approx(base, abs=1e-9)    # isotropic scale
    rotation = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64))[0]
    assert linear_cka(x, x @ rotation) == pytest.approx(1.0, abs=1e-9)


def test_split_cka_compares_the_two_channel_groups(nets):
    networks, split = nets
    x, y = torch.randn(40, 1, 28, 28), torch.randint(0, 10, (40,))
    result = analyses._split_cka(FakeRun(networks["CE"]), {"inheritance": split.inherit,
                                                            "exploration": split.explore}, x, y)
    with torch.no_grad():
        feature = networks["CE"].forward_features(x)[1]["stage3"]
    inh, exp = feature[:, split.inherit], feature[:, split.explore]
    assert result["map"] == pytest.approx(linear_cka(inh.flatten(1), exp.flatten(1)), abs=1e-9)
    assert result["pooled"] == pytest.approx(linear_cka(inh.mean((2, 3)), exp.mean((2, 3))), abs=1e-9)
    same = analyses._split_cka(FakeRun(networks["CE"]), {"inheritance": split.inherit,
                                                          "exploration": split.inherit}, x, y)
    assert same["map"] == pytest.approx(1.0, abs=1e-9)


# ------------------------------------------------------------------------------------------------ active neurons
def test_active_neuron_count_on_a_hand_made_gradient_matrix():
    # Gradients along three orthogonal axes with energies 16 : 4 : 1 (and nothing else, in 10 dimensions).
    g = torch.zeros(300, 10)
    g[0:100, 0], g[100:200, 1], g[200:300, 2] = 4.0, 2.0, 1.0
    total = 16 + 4 + 1
    # τ = 0.05: the last axis holds 1/21 ≈ 4.8% <= 5% -> 2 active; τ = 0.04: 3; τ = 0.25: (1 + 4)/21 <= 0.25 -> 1
    assert active_subspace(g, 0.05)["count"] == 2
    assert active_subspace(g, 0.04)["count"] == 3
    assert active_subspace(g, 0.25)["count"] == 1
    eig = active_subspace(g, 0.05)["eigenvalues"]
    assert eig[:3].tolist() == pytest.approx([16 / 3, 4 / 3, 1 / 3])
    assert float(eig.sum()) == pytest.approx(total / 3)


def test_active_counts_of_the_penultimate_vector_stay_below_the_class_count(nets):
    networks, split = nets
    x, y = torch.randn(60, 1, 28, 28), torch.randint(0, 10, (60,))
    found = analyses._active(FakeRun(networks["IE"]), x, y, {"all": None, "inheritance": split.inherit}, 0.05)
    assert 1 <= found["pooled"] <= 9  # gradients W^T (p - e_y) span at most K - 1 = 9 directions
    assert found["dim:all"] == 64 * 7 * 7 and found["dim:inheritance"] == 32 * 7 * 7
    assert 1 <= found["map:inheritance"] <= min(60, found["dim:inheritance"])


# ------------------------------------------------------------------------------------------------ sharpness
def test_sharpness_at_zero_noise_is_the_clean_loss(nets):
    networks, _ = nets
    net = networks["CE"]
    x, y = torch.randn(50, 1, 28, 28), torch.randint(0, 10, (50,))
    curve = noisy_loss(net, [(x[:25], y[:25]), (x[25:], y[25:])], [0.0, 0.02], draws=2, seed=0)
    with torch.no_grad():
        clean = float(F.cross_entropy(net(x), y))
    assert curve["clean"] == pytest.approx(clean, rel=1e-5)
    assert curve["losses"][0].tolist() == pytest.approx([clean, clean], rel=1e-5)
    flat = {"mean": torch.tensor([clean, clean], dtype=torch.float64), "clean": clean}
    assert analyses.loss_increase(flat) == pytest.approx(0.0, abs=1e-12)
    rise = [float(m) - curve["clean"] for m in curve["mean"]]  # the first is 0 (σ = 0), up to float rounding
    assert analyses.loss_increase(curve) == pytest.approx(sum(rise) / 2, rel=1e-9)
    assert rise[0] == pytest.approx(0.0, abs=1e-5 * clean) and rise[1] > 0


# ------------------------------------------------------------------------------------------------ II.1
def test_components_and_nearest_class_mean():
    assert compact.components_for(torch.tensor([90.0, 6.0, 4.0])) == 2
    assert compact.components_for(torch.tensor([96.0, 3.0, 1.0])) == 1
    assert compact.components_for(torch.tensor([0.0, 0.0])) == 0
    train = torch.tensor([[0.0, 0.0], [0.2, 0.0], [5.0, 5.0], [5.2, 5.0]])
    labels = torch.tensor([0, 0, 1, 1])
    test = torch.tensor([[0.5, 0.5], [4.0, 4.0], [0.0, 0.1]])
    assert compact._ncm_accuracy(train, labels, test, torch.tensor([0, 1, 1])) == pytest.approx(200 / 3)


# ------------------------------------------------------------------------------------------------ the runs
@pytest.mark.parametrize("name", ["smoke", "book", "paper"])
def test_the_runs_are_table_1s(name):
    """II.5 reads exactly the runs Table 1 asks for (scale.part2_student), II.1's seed-0 auto-encoder is the one
    Table 1's factor methods take as input."""
    profile = profiles.get(name)
    seeds = scale.part2_seeds(profile, decisive=True)  # the seeds II.5 reads
    teacher, specs = analyses.analysis_runs(profile, seeds)
    pair = scale.part2_pairs(profile)[0]
    assert teacher == scale.part2_teacher(profile, pair[0])
    for (label, seed), spec in specs.items():
        assert spec == scale.part2_student(profile, teacher, pair[1], label, seed)
        assert spec.key() == scale.part2_student(profile, teacher, pair[1], label, seed).key()
    ie = specs[("IE-FT", seeds[0])]
    assert dict(ie.method_args)["autoencoder"] == scale.part2_autoencoder(teacher, profile, seed=0)
    assert 0 in compact.autoencoder_seeds(profile)
    assert math.isclose(len(specs), 3 * len(seeds))
    if name != "smoke":  # Table 1 itself runs one seed at smoke; II.5 trains its second there
        table1 = {cell.spec for cell in tables.table1_cells(profile)}
        assert set(specs.values()) <= table1


def test_autoencoder_premise_holds_only_when_every_seed_learned():
    import pandas as pd

    from kdnb.studies.part2 import compact

    curve = pd.DataFrame({"seed": [0, 0, 0, 1, 1, 1], "epoch": [3, 1, 2, 1, 2, 3],
                          "reconstruction loss": [0.10, 0.40, 0.20, 0.30, 0.25, 0.35]})
    premise = compact.autoencoder_premise(curve)
    assert not premise.held and "seed 0: 0.4 → 0.1" in premise.measured and "seed 1: 0.3 → 0.35" in premise.measured
    curve.loc[5, "reconstruction loss"] = 0.29
    assert compact.autoencoder_premise(curve).held
