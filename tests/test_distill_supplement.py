"""The baselines of Huang et al.'s supplement (Table 1): SP, CC, VID, RKD, PKT, AB and NST.

Each loss is checked against a reference written here from its paper's formula with Python floats and loops
(never by calling the helper under test), plus a property the formula implies (scale invariance, a zero at the
teacher, a closed form). Each method then trains end to end through the real Trainer on a few Fashion-MNIST
images with a resnet8 student and a resnet14 teacher trained once for the module.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from kdnb import distill, models, modules, runs
from kdnb.distill import Context, Stage
from kdnb.distill.activation import ab_loss, polynomial_mmd
from kdnb.distill.relational import (cc_loss, correlation_matrix, pkt_loss, release_cc_loss, rkd_loss,
                                    similarity_loss)
from kdnb.distill.variational import vid_loss
from kdnb.runs import RunSpec
from kdnb.train import Schedule, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = {"sp": distill.SP, "cc": distill.CC, "vid": distill.VID, "rkd": distill.RKD, "pkt": distill.PKT,
         "ab": distill.AB, "nst": distill.NST}


def net(name: str, seed: int = 0) -> models.FeatureModel:
    torch.manual_seed(seed)
    return models.create(name, num_classes=10, in_channels=1)


def rows(t: torch.Tensor) -> list[list[float]]:
    return t.detach().double().flatten(1).tolist()


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def norm(a: list[float]) -> float:
    return math.sqrt(dot(a, a))


def huber(a: float, b: float) -> float:
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


# ----------------------------------------------------------------------------------------------- registry
def test_registered_with_repdistiller_defaults() -> None:
    for name, cls in NAMES.items():
        assert distill.method_class(name) is cls and cls.requires_teacher
    assert distill.bind("sp", {})["beta"] == 3000 and distill.bind("sp", {})["layers"] == "stage3"
    assert distill.bind("pkt", {})["beta"] == 30000 and distill.bind("pkt", {})["layers"] == "pooled"
    assert distill.bind("rkd", {}) == {"layers": "pooled", "beta": 1.0, "distance_weight": 25.0,
                                       "angle_weight": 50.0, "temperature": 4.0, "alpha": 0.0}
    assert distill.bind("nst", {})["beta"] == 50 and distill.bind("vid", {})["beta"] == 1
    assert distill.bind("ab", {})["beta"] == pytest.approx(3 / 1000)
    assert distill.bind("cc", {})["form"] == "kernel" and distill.bind("cc", {})["beta"] is None
    assert all(distill.bind(name, {})["alpha"] == 0.0 for name in NAMES)  # CE weight 1, no KD
    teacher = RunSpec("fashion_mnist", "resnet14", Schedule(epochs=1), train_per_class=2)
    for name in NAMES:  # a run of each can be described, keyed and read back
        spec = RunSpec("fashion_mnist", "resnet8", Schedule(epochs=2), method=name, teacher=teacher)
        spec.validate()
        again = RunSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert again.key() == spec.key()


# ------------------------------------------------------------------------------------------------------- SP
def reference_sp(fs: torch.Tensor, ft: torch.Tensor) -> float:
    """Tung & Mori Eqs. 1-3, by loops."""
    def g(q):
        b = len(q)
        gram = [[dot(q[i], q[j]) for j in range(b)] for i in range(b)]
        return [[v / norm(row) for v in row] for row in gram]

    gs, gt = g(rows(fs)), g(rows(ft))
    b = len(gs)
    return sum((gs[i][j] - gt[i][j]) ** 2 for i in range(b) for j in range(b)) / b**2


def test_sp_loss_by_hand_and_invariant_to_the_feature_scale() -> None:
    torch.manual_seed(0)
    fs, ft = torch.randn(4, 3, 2, 2), torch.randn(4, 5, 2, 2)  # widths need not agree
    loss = similarity_loss(fs, ft)
    assert loss.item() == pytest.approx(reference_sp(fs, ft), rel=1e-5)
    assert similarity_loss(7 * fs, ft).item() == pytest.approx(loss.item(), rel=1e-5)
    assert similarity_loss(ft, ft).item() == pytest.approx(0.0, abs=1e-7)


# ------------------------------------------------------------------------------------------------------ RKD
def reference_rkd(s: list[list[float]], t: list[list[float]], wd: float, wa: float) -> float:
    b = len(s)

    def dist(e, i, j):
        return norm([x - y for x, y in zip(e[i], e[j])])

    def psi_d(e):
        mu = sum(dist(e, i, j) for i in range(b) for j in range(b) if i != j) / (b * (b - 1))
        return [[dist(e, i, j) / mu for j in range(b)] for i in range(b)]

    def unit(e, i, j):  # (e_i - e_j) / |e_i - e_j|, zero for i = j
        d = [x - y for x, y in zip(e[i], e[j])]
        n = norm(d)
        return [v / n for v in d] if n > 0 else [0.0] * len(d)

    def psi_a(e):
        return [[[dot(unit(e, i, j), unit(e, k, j)) for k in range(b)] for i in range(b)] for j in range(b)]

    ds, dt = psi_d(s), psi_d(t)
    distance = sum(huber(ds[i][j], dt[i][j]) for i in range(b) for j in range(b)) / b**2
    as_, at = psi_a(s), psi_a(t)
    angle = sum(huber(as_[j][i][k], at[j][i][k]) for i in range(b) for j in range(b) for k in range(b)) / b**3
    return wd * distance + wa * angle


def test_rkd_loss_by_hand_and_invariant_to_scale_and_shift() -> None:
    torch.manual_seed(1)
    s, t = torch.randn(5, 3), torch.randn(5, 6)
    loss = rkd_loss(s, t, 25.0, 50.0)
    assert loss.item() == pytest.approx(reference_rkd(rows(s), rows(t), 25.0, 50.0), rel=1e-5)
    # Distances are divided by their mean and angles ignore lengths: a scaled, shifted embedding is the same.
    assert rkd_loss(3 * s + 1, t).item() == pytest.approx(loss.item(), rel=1e-4)
    assert rkd_loss(2 * t - 5, t).item() == pytest.approx(0.0, abs=1e-5)
    s.requires_grad_()
    (grad,) = torch.autograd.grad(rkd_loss(s, t), s)
    assert torch.isfinite(grad).all()  # the zero diagonal distances do not poison the gradient


# ------------------------------------------------------------------------------------------------------ PKT
def reference_pkt(s: list[list[float]], t: list[list[float]], eps: float = 1e-7) -> float:
    def probabilities(e):
        k = [[(dot(a, c) / (norm(a) * norm(c)) + 1) / 2 for c in e] for a in e]
        return [[v / sum(row) for v in row] for row in k]

    ps, pt = probabilities(s), probabilities(t)
    b = len(s)
    return sum(pt[i][j] * math.log((pt[i][j] + eps) / (ps[i][j] + eps)) for i in range(b) for j in range(b)) / b**2


def test_pkt_loss_by_hand_zero_at_the_teacher_and_positive_elsewhere() -> None:
    torch.manual_seed(2)
    s, t = torch.randn(6, 4), torch.randn(6, 9)
    loss = pkt_loss(s, t)
    assert loss.item() == pytest.approx(reference_pkt(rows(s), rows(t)), rel=1e-5)
    assert loss.item() > 0
    assert pkt_loss(4 * t, t).item() == pytest.approx(0.0, abs=1e-7)


# ------------------------------------------------------------------------------------------------------- CC
def test_cc_correlation_is_the_taylor_series_of_the_gaussian_kernel() -> None:
    torch.manual_seed(3)
    s, t = torch.randn(4, 5).double(), torch.randn(4, 3).double()
    gamma = 0.4
    unit_s = [[v / norm(r) for v in r] for r in rows(s)]
    # P = 2 by the paper's expansion, term by term.
    expected = [[math.exp(-2 * gamma) * (1 + 2 * gamma * dot(a, c) + (2 * gamma * dot(a, c)) ** 2 / 2)
                 for c in unit_s] for a in unit_s]
    assert torch.allclose(correlation_matrix(s, gamma, 2), torch.tensor(expected, dtype=s.dtype), atol=1e-12)
    # A long series is the exact Gaussian RBF exp(-gamma |x - y|^2) of the unit vectors.
    exact = [[math.exp(-gamma * sum((x - y) ** 2 for x, y in zip(a, c))) for c in unit_s] for a in unit_s]
    assert torch.allclose(correlation_matrix(s, gamma, 20), torch.tensor(exact, dtype=s.dtype), atol=1e-12)
    unit_t = [[v / norm(r) for v in r] for r in rows(t)]
    exact_t = [[math.exp(-gamma * sum((x - y) ** 2 for x, y in zip(a, c))) for c in unit_t] for a in unit_t]
    by_hand = sum((exact[i][j] - exact_t[i][j]) ** 2 for i in range(4) for j in range(4)) / 16
    assert cc_loss(s, t, gamma, 20).item() == pytest.approx(by_hand, rel=1e-9)
    assert cc_loss(t, t).item() == 0.0


def test_cc_release_form_by_hand_and_its_weights() -> None:
    torch.manual_seed(7)
    es, et = torch.randn(4, 3), torch.randn(4, 3)
    delta = [[abs(a - b) for a, b in zip(ra, rb)] for ra, rb in zip(es.tolist(), et.tolist())]
    expected = sum(sum(x * y for x, y in zip(delta[i], delta[i + 1])) for i in range(3)) / 3
    assert release_cc_loss(es, et).item() == pytest.approx(expected, rel=1e-6)
    kernel = distill.CC(net("resnet8"), net("resnet14", 1))
    release = distill.CC(net("resnet8"), net("resnet14", 1), form="release")
    assert (kernel.beta, release.beta) == (1.0, 0.02)  # each form's default weight
    assert not hasattr(kernel, "embed_student")
    assert (release.embed_student.in_features, release.embed_teacher.out_features) == (64, 128)
    with pytest.raises(ValueError, match="form"):
        distill.CC(net("resnet8"), net("resnet14", 1), form="paper")


# ------------------------------------------------------------------------------------------------------ VID
def test_vid_loss_by_hand_and_its_variance_optimum() -> None:
    torch.manual_seed(4)
    mean, target = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    variance = torch.tensor([0.5, 1.0, 4.0])
    total = 0.0
    for b in range(2):
        for c in range(3):
            for h in range(2):
                for w in range(2):
                    v = variance[c].item()
                    total += 0.5 * (target[b, c, h, w].item() - mean[b, c, h, w].item()) ** 2 / v + 0.5 * math.log(v)
    assert vid_loss(mean, variance, target).item() == pytest.approx(total / 24, rel=1e-5)
    # The Gaussian likelihood is best where sigma_c^2 is channel c's mean squared error.
    mse = (target - mean).pow(2).mean(dim=(0, 2, 3))
    var = mse.clone().requires_grad_()
    (grad,) = torch.autograd.grad(vid_loss(mean, var, target), var)
    assert grad.abs().max().item() < 1e-6
    method = distill.VID(net("resnet8"), net("resnet14", 1), init_variance=5.0)
    assert torch.allclose(method.regressors[0].variance(), torch.full((16,), 5.0))
    assert [r.mean[-1].out_channels for r in method.regressors] == [16, 32, 64]


# ------------------------------------------------------------------------------------------------------- AB
def test_ab_loss_by_hand_and_zero_beyond_the_margin() -> None:
    torch.manual_seed(5)
    s, t = torch.randn(2, 3, 2, 2) * 2, torch.randn(2, 3, 2, 2)
    margin = 1.0
    total = 0.0
    for sv, tv in zip(s.flatten().tolist(), t.flatten().tolist()):
        if tv > 0:  # the teacher's neuron fires: the student's response should exceed +margin
            total += max(margin - sv, 0.0) ** 2
        else:  # it does not: the student's should stay below -margin
            total += max(margin + sv, 0.0) ** 2
    assert ab_loss(s, t, margin).item() == pytest.approx(total / 2, rel=1e-5)
    beyond = torch.where(t > 0, 1.5, -1.5)
    assert ab_loss(beyond, t, margin).item() == 0.0
    assert ab_loss(-beyond, t, margin).item() == pytest.approx(2.5**2 * t.numel() / 2, rel=1e-6)


def test_ab_weights_layers_and_reads_pre_activations() -> None:
    student, teacher = net("resnet8"), net("resnet14", 1)
    method = distill.AB(student, teacher).eval()
    assert method.layer_weights == (0.25, 0.5, 1.0)
    x, y = torch.randn(3, 1, 28, 28), torch.randint(0, 10, (3,))
    _, terms = method(x, y, Context(stage=Stage("ab", terms=("ab",))))
    assert set(terms) == {"ab"}  # the initialisation stage computes no CE
    fs, ft = student.forward_features(x)[1], teacher.forward_features(x)[1]
    expected = 0.0
    for weight, layer, connector in zip((0.25, 0.5, 1.0), ("stage1.pre", "stage2.pre", "stage3.pre"),
                                        method.connectors):
        expected += weight * ab_loss(connector(fs[layer]), ft[layer]).item()
    assert terms["ab"].item() == pytest.approx(0.003 * expected, rel=1e-5)
    assert (ft["stage3.pre"] < 0).any()  # truly pre-ReLU: the boundary has two sides


# ------------------------------------------------------------------------------------------------------ NST
def reference_mmd(fs: torch.Tensor, ft: torch.Tensor, degree: int = 2, c: float = 0.0) -> float:
    total = 0.0
    for b in range(fs.shape[0]):
        # one unit row per neuron; a dead neuron (all zeros) stays a zero row
        s = [[v / max(norm(r), 1e-12) for v in r] for r in fs[b].double().flatten(1).tolist()]
        t = [[v / max(norm(r), 1e-12) for v in r] for r in ft[b].double().flatten(1).tolist()]

        def mean_k(a, z):
            return sum((dot(p, q) + c) ** degree for p in a for q in z) / (len(a) * len(z))

        total += mean_k(t, t) + mean_k(s, s) - 2 * mean_k(s, t)
    return total / fs.shape[0]


def test_nst_mmd_by_hand_and_blind_to_the_order_of_neurons() -> None:
    torch.manual_seed(6)
    fs, ft = torch.randn(2, 3, 3, 3), torch.randn(2, 5, 3, 3)
    loss = polynomial_mmd(fs, ft)
    assert loss.item() == pytest.approx(reference_mmd(fs, ft), rel=1e-5)
    assert polynomial_mmd(fs, ft, 1, 0.5).item() == pytest.approx(reference_mmd(fs, ft, 1, 0.5), rel=1e-4, abs=1e-7)
    assert polynomial_mmd(fs[:, [2, 0, 1]], ft).item() == pytest.approx(loss.item(), rel=1e-5)
    assert polynomial_mmd(ft * 3, ft).item() == pytest.approx(0.0, abs=1e-6)
    big = torch.randn(2, 5, 6, 6)  # a larger teacher map is pooled to the student's size
    pooled = torch.nn.functional.avg_pool2d(big, 2)
    assert polynomial_mmd(fs, big).item() == pytest.approx(reference_mmd(fs, pooled), rel=1e-5)


# ------------------------------------------------------------------------- methods from the networks
@pytest.mark.parametrize("name, reference", [("sp", lambda s, t: reference_sp(s["stage3"], t["stage3"])),
                                             ("pkt", lambda s, t: reference_pkt(rows(s["pooled"]),
                                                                                rows(t["pooled"]))),
                                             ("nst", lambda s, t: sum(reference_mmd(s[k], t[k]) for k in
                                                                      ("stage1", "stage2", "stage3")))])
def test_method_term_is_beta_times_the_loss_of_its_layers(name, reference) -> None:
    student, teacher = net("resnet8"), net("resnet14", 1)
    method = distill.create(name, student, teacher, beta=2.0).to(torch.float64).eval()  # teacher too
    # float64: untrained networks relate samples almost alike, and PKT's KL is then ~1e-7
    x, y = torch.randn(3, 1, 12, 12, dtype=torch.float64), torch.randint(0, 10, (3,))  # small maps: quick loops
    _, terms = method(x, y)
    assert set(terms) == {"ce", name}
    fs, ft = student.forward_features(x)[1], teacher.forward_features(x)[1]
    assert terms[name].item() == pytest.approx(2.0 * reference(fs, ft), rel=1e-8)
    assert terms[name].item() > 0


# ----------------------------------------------------------------------------- end to end through the Trainer
def tiny_spec(epochs: int) -> RunSpec:
    return RunSpec("fashion_mnist", "resnet8", Schedule(epochs=epochs, batch_size=8, lr=0.05),
                   train_per_class=2, test_per_class=1)


@pytest.fixture(scope="module")
def teacher() -> nn.Module:
    """A resnet14 trained one epoch on the tiny subset: shared by every end-to-end test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec = tiny_spec(1)
        model = net("resnet14", 1)
        Trainer(distill.CE(model), runs.batches(spec, "train", "cpu"), spec.schedule, seed=0, device="cpu").fit()
    finally:
        torch.set_num_threads(before)
    return model.eval()


def state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict, after: dict, prefixes) -> dict[str, bool]:
    return {k: not torch.equal(before[k], after[k]) for k in before if modules.under_any(k, prefixes)}


@pytest.mark.parametrize("name, args", [("sp", {}), ("cc", {}), ("cc", {"form": "release"}), ("vid", {}),
                                        ("rkd", {}), ("pkt", {}), ("nst", {})])
def test_trains_end_to_end(name, args, teacher) -> None:
    spec = tiny_spec(1)
    method = distill.create(name, net("resnet8"), teacher, **args)
    start = state(method)
    history = Trainer(method, runs.batches(spec, "train", "cpu"), spec.schedule, seed=0, device="cpu").fit()
    assert f"train_{name}" in history[0] and "train_ce" in history[0] and "train_kd" not in history[0]
    assert math.isfinite(history[0]["train_loss"])
    student = changed(start, state(method), ("student",))
    assert any(student.values())
    if name == "vid":  # the regressors and the variances learn with the student
        assert all(changed(start, state(method), ("regressors",)).values())
    if args.get("form") == "release":  # both embeddings learn
        assert all(changed(start, state(method), ("embed_student", "embed_teacher")).values())


def test_ab_initialises_then_trains_on_labels(teacher) -> None:
    spec = tiny_spec(2)
    method = distill.AB(net("resnet8"), teacher, init_epochs=0.5)
    assert [(s.name, s.epochs) for s in method.stages(2)] == [("ab", 1), ("train", None)]
    snapshots = [state(method)]
    history = Trainer(method, runs.batches(spec, "train", "cpu"), spec.schedule, seed=0, device="cpu",
                      on_epoch_end=lambda metrics: snapshots.append(state(method))).fit()
    start, after_ab, after_train = snapshots
    classifier = changed(start, after_ab, ("student.classifier",))
    assert classifier and not any(classifier.values())
    assert all(changed(start, after_ab, ("connectors",)).values())
    assert any(changed(start, after_ab, ("student.stage1",)).values())
    connectors = changed(after_ab, after_train, ("connectors",))
    assert connectors and not any(connectors.values())  # frozen (BN statistics too) on the labels
    assert all(changed(after_ab, after_train, ("student.classifier",)).values())
    assert [row["stage"] for row in history] == ["ab", "train"]
    assert "train_ab" in history[0] and "train_ce" not in history[0]
    assert "train_ce" in history[1] and "train_ab" not in history[1]
