"""Part I's protocol (kdnb.studies.part1.protocol) and proxy check (kdnb.studies.part1.proxy): the run specs are valid for every architecture and layer (built on
the meta device, stages fitting the schedule), one teacher per architecture and seed-distinct subsets for
students and baselines, checkpoints g_1 … g_M increasing, dense early and never the initial weights, the probe
images are the test images normalised as the trainer does with their boxes on the grid, the weight distance is
the hand sum of the per-step path lengths over ‖w_0‖, networks below twice chance are found, and the premise
(teacher ≥ baseline + 3 points, baseline ≥ twice chance) holds or fails with its numbers."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from kdnb import data, distill, models
from kdnb.studies.part1 import protocol as P
from kdnb.modules import parameters_under
from kdnb.train import _stage_plan

PROFILES = ("smoke", "book", "paper")


def meta_method(spec):
    """The method of ``spec`` around meta-device student and teacher (no memory, no time)."""
    info = data.info("cluttered_fashion_mnist")  # same shape facts as the runs below paper
    with torch.device("meta"):
        student = models.create(spec.model, num_classes=info.num_classes, in_channels=info.in_channels,
                                **dict(spec.model_args))
        teacher = models.create(spec.teacher.model, num_classes=info.num_classes, in_channels=info.in_channels,
                                **dict(spec.teacher.model_args)) if spec.teacher else None
    return distill.create(spec.method, student, teacher, **dict(spec.method_args))


@pytest.mark.parametrize("arch", P.ARCHITECTURES)
@pytest.mark.parametrize("layer", P.LAYERS)
@pytest.mark.parametrize("profile", ("smoke", "book"))
def test_specs_are_valid_for_every_architecture_and_layer(profile: str, arch: str, layer: str) -> None:
    s = P.scale(profile)
    spec = P.student(profile, arch, layer)
    spec.validate()  # models with their arguments, probes, the teacher: on the meta device
    assert spec.method == "mimic" and dict(spec.method_args)["layer"] == layer
    assert spec.teacher == P.teacher(profile, arch) and spec.teacher.augment == "default"
    assert spec.teacher.train_per_class > spec.train_per_class  # the teacher has seen more data
    assert spec.schedule.epochs == s.epochs + s.classify_epochs and spec.schedule.checkpoints == s.checkpoints
    method = meta_method(spec)
    plan = _stage_plan(method.stages(spec.schedule.epochs), spec.schedule.epochs)
    mimic_epochs = plan[0][2]
    assert plan[0][0].name == "mimic" and mimic_epochs == (s.student_epochs if layer == "fc3" else s.epochs)
    assert max(s.checkpoints) <= mimic_epochs  # every analysed checkpoint lies in the mimic stage
    for stage, _, _ in plan:
        parameters_under(method, stage.frozen)  # frozen prefixes name real parameters
    base = P.baseline(profile, arch)
    base.validate()
    assert base.method == "ce" and base.schedule.epochs == s.epochs and base.schedule.checkpoints == s.checkpoints
    assert (base.dataset, base.model, base.model_args, base.train_per_class, base.augment) == \
        (spec.dataset, spec.model, spec.model_args, spec.train_per_class, spec.augment)
    assert set(base.probes) == set(spec.probes) == {"path_length:fc1", "path_length:fc2", "path_length:classifier"}


@pytest.mark.parametrize("profile", ("smoke", "book"))
def test_seeds_pair_students_with_baselines_on_their_own_subsets(profile: str) -> None:
    s = P.scale(profile)
    assert len(s.seeds) >= 3 and len(set(s.seeds)) == len(s.seeds)  # a verdict needs three paired seeds
    if profile == "book":
        assert len(s.seeds) >= 5  # decisive claims get at least five seeds
    arch = s.architectures[0]
    for seed in s.seeds[:2]:
        student, base = P.student(profile, arch, "fc2", seed), P.baseline(profile, arch, seed)
        assert (student.seed, student.subset_seed) == (base.seed, base.subset_seed) == (seed, seed)
        assert student.teacher == P.teacher(profile, arch)  # one teacher, whatever the seed
    keys = {P.baseline(profile, arch, seed).key for seed in s.seeds}
    assert len(keys) == len(s.seeds)  # distinct runs: initialisation and subset differ


def test_paper_scale_is_the_released_setting() -> None:
    s = P.scale("paper")
    assert s.dataset == "cub200" and s.grid == 16 and s.mode == "faithful" and s.images == 50
    assert (s.epochs, s.classify_epochs) == (150, 100) and s.mimic_share == pytest.approx(0.6)
    # the released checkpoint list without epoch 0 (Eqs. 4-5 run over j = 1..M)
    assert s.checkpoints == (2, 5, 10, 15, 20, 25, 30, 40, 50, 70, 90, 110, 130, 150)
    assert s.options["faithful"]["samples"] == 96 and all(not a for a in s.model_args.values())
    spec = P.student("paper", "vgg11-fc", "fc2")
    assert spec.dataset == "cub200" and spec.train_per_class is None


@pytest.mark.parametrize("profile", PROFILES)
def test_checkpoints_are_increasing_and_dense_early(profile: str) -> None:
    points = P.scale(profile).checkpoints
    assert points[0] > 0 and points[-1] == P.scale(profile).epochs  # g_1 ... g_M: never the initial weights
    gaps = [b - a for a, b in zip(points, points[1:])]
    assert all(g > 0 for g in gaps)
    assert all(a <= b for a, b in zip(gaps, gaps[1:]))  # the spacing never shrinks: dense early, sparse late
    assert gaps[0] < gaps[-1]


def test_constants_and_errors() -> None:
    assert P.LAYERS == ("fc1", "fc2", "fc3") and set(P.B) == set(P.ARCHITECTURES)
    assert P.B["alexnet_small"] == 0.25 and P.B["vgg11-fc"] == P.B["resnet20-fc"] == 0.2
    assert [P.feature_of(layer) for layer in P.LAYERS] == ["fc1.pre", "fc2.pre", "fc3"]
    assert P.estimator_options("book", "resnet20-fc", "faithful")["lam"] == 6.0
    assert P.estimator_options("book", "vgg11-fc", "linearised")["lam"] == 7.0
    with pytest.raises(ValueError, match="alexnet_small"):
        P.student("smoke", "resnet56", "fc1")
    with pytest.raises(ValueError, match="fc1, fc2, fc3"):
        P.student("smoke", "vgg11-fc", "conv")
    with pytest.raises(ValueError, match="smoke"):
        P.scale("huge")


def test_a_scale_rejects_the_initial_weights_as_a_checkpoint() -> None:
    import dataclasses

    with pytest.raises(ValueError, match="never the initial"):
        dataclasses.replace(P.scale("smoke"), checkpoints=(0, 1, 2))
    with pytest.raises(ValueError, match="seeds"):
        dataclasses.replace(P.scale("smoke"), seeds=(0, 0, 1))


def _accuracies(teacher: float, baselines, students) -> "pd.DataFrame":
    import pandas as pd

    rows = [{"architecture": "vgg11-fc", "network": "teacher", "layer": "", "seed": 0, "accuracy": teacher}]
    for seed, b in enumerate(baselines):
        rows.append({"architecture": "vgg11-fc", "network": "baseline", "layer": "", "seed": seed, "accuracy": b})
        for layer, acc in zip(P.LAYERS, students[seed]):
            rows.append({"architecture": "vgg11-fc", "network": "student", "layer": layer, "seed": seed,
                         "accuracy": acc})
    return pd.DataFrame(rows)


def test_weak_networks_and_the_premise() -> None:
    # ten classes: chance 10%, the floor 20%. Students at FC3 of seeds 0 and 2 are below it (19.9 and 10).
    frame = _accuracies(70.0, [55.0, 60.0, 65.0], [(50, 45, 19.9), (52, 47, 25.0), (51, 44, 10.0)])
    assert P.chance("book") == pytest.approx(10.0)
    weak = P.weak(frame, "book")
    assert sorted(zip(weak.layer, weak.seed)) == [("fc3", 0), ("fc3", 2)]
    premise = P.premise(frame, "vgg11-fc", "book")  # 70 vs mean 60: +10 >= 3; baselines 60% >= 20%
    assert premise.held and "70.00 vs 60.00 (+10.00)" in premise.measured and "60.00%" in premise.measured
    close = P.premise(_accuracies(62.0, [55.0, 60.0, 65.0], [(50, 45, 30)] * 3), "vgg11-fc", "book")
    assert not close.held and "+2.00" in close.measured and "stronger vgg11-fc teacher" in close.remedy
    unlearned = P.premise(_accuracies(40.0, [15.0, 18.0, 24.0], [(15, 15, 15)] * 3), "vgg11-fc", "book")
    assert not unlearned.held and "19.00%" in unlearned.measured  # mean 19 < 20, although the lead is +21
    assert P.teacher_leads(_accuracies(40.0, [15.0, 18.0, 24.0], [(15, 15, 15)] * 3), "vgg11-fc").held
    over = P.premise_over({"vgg11-fc": close, "alexnet_small": premise})
    assert over.held and "vgg11-fc" in over.measured and "(unmet)" in over.measured  # one architecture suffices
    assert not P.premise_over({"vgg11-fc": close}).held


def test_weight_distances_are_the_hand_sum_of_the_step_series() -> None:
    steps_per_epoch = 4
    series = torch.tensor([0.5, 0.25, 0.25, 1.0, 2.0, 0.5, 0.5, 1.0])  # two epochs of per-step ||w_t - w_t-1||
    run = SimpleNamespace(spec=SimpleNamespace(label="stub"), metrics={"steps_per_epoch": steps_per_epoch},
                          final={"init_norm:fc2": 2.0}, history=[], series=lambda: {"path_length:fc2/step": series})
    got = P.weight_distances(run, "fc2", [0, 0.5, 1, 2])
    # epoch 0: nothing; 0.5: steps 1-2 (0.75); 1: steps 1-4 (2.0); 2: all (6.0); each over ||w_0|| = 2
    torch.testing.assert_close(got, torch.tensor([0.0, 0.375, 1.0, 3.0]))
    with pytest.raises(ValueError, match="path_length:classifier"):
        P.weight_distances(run, "fc3", [0])


def test_probe_images_are_normalised_test_images_with_boxes_on_the_grid() -> None:
    s = P.scale("smoke")
    probe = P.probe_images("smoke")
    ds = data.dataset(s.dataset, "test")
    info = data.info(s.dataset)
    assert len(probe) == s.images and probe.images.shape == (s.images, 1, 48, 48)
    assert probe.fg.shape == (s.images, s.grid, s.grid) and probe.fg.dtype == torch.bool
    assert torch.equal(probe.indices, probe.indices.sort().values) and len(set(probe.indices.tolist())) == s.images
    raw = torch.stack([ds[i][0] for i in probe.indices.tolist()]).float()
    torch.testing.assert_close(probe.images * info.std[0] + info.mean[0], raw / 255.0)
    assert torch.equal(probe.labels, torch.as_tensor(ds.targets)[probe.indices])
    for k, i in enumerate(probe.indices.tolist()):  # the box on the grid: top-left pixel of each cell inside it
        top, left, bottom, right = ds.boxes[i].tolist()
        cell = 48 // s.grid
        corners = torch.arange(s.grid) * cell
        inside = ((corners[:, None] >= top) & (corners[:, None] < bottom)
                  & (corners[None, :] >= left) & (corners[None, :] < right))
        assert torch.equal(probe.fg[k], inside)
    assert probe.fg.any(dim=(1, 2)).all() and (~probe.fg).any(dim=(1, 2)).all()
    assert torch.equal(P.probe_images("smoke").images, probe.images)  # deterministic


# ---------------------------------------------------------------- the proxy against the faithful estimator
from kdnb.studies.part1 import proxy  # noqa: E402
from test_concepts_metrics import result_of  # noqa: E402  (an entropy result made by hand)


def test_proxy_validation_rule_per_architecture_and_layer() -> None:
    g = torch.Generator().manual_seed(1)
    entropy = torch.randn(4, 6, 6, generator=g)
    fg = torch.zeros(4, 6, 6, dtype=torch.bool)
    fg[:, 2:4, 2:4] = True
    noisy = entropy + 0.05 * torch.randn(4, 6, 6, generator=g)
    maps = {("a", "fc1", "faithful"): entropy, ("a", "fc1", "linearised"): entropy.clone(),
            ("a", "fc2", "faithful"): entropy, ("a", "fc2", "linearised"): noisy,
            ("b", "fc1", "faithful"): entropy, ("b", "fc1", "linearised"): -entropy}

    def fn(run, layer, mode):
        return result_of(maps[(run, layer, mode)])

    table = proxy.validate_proxy({"a": "a"}, fn, ["fc1", "fc2"], fg, {"a": 0.2})
    assert table.spearman_mean.iloc[0] == pytest.approx(1.0) and table.spearman_std.iloc[0] == pytest.approx(0.0)
    assert table.trusted.tolist() == [True, True] and proxy.proxy_verdict(table) == "reproduced"
    flipped = proxy.validate_proxy({"a": "a", "b": "b"}, fn, ["fc1"], fg, {"a": 0.2, "b": 0.2})
    assert flipped.trusted.tolist() == [True, False]  # one failing architecture fails the claim
    assert flipped.spearman_mean.iloc[1] == pytest.approx(-1.0)
    assert proxy.proxy_verdict(flipped) == "not reproduced"
    few = proxy.validate_proxy({"a": "a"}, lambda run, layer, mode: result_of(maps[(run, layer, mode)][:2]),
                                   ["fc1"], fg[:2], {"a": 0.2})
    assert proxy.proxy_verdict(few) == "inconclusive at this scale" and not few.trusted.iloc[0]
