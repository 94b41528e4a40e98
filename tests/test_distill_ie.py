"""IE-KD (Huang et al. §3.2, §4.2): the loss of every Table 6a metric by hand, the fixed channel split, IE-FT,
IE-AT and IE-OD from the networks by hand, the ends of Table 5 (η = 0 and 1), a cross-family pair (a 3×3 student
map against a 7×7 teacher map), and the three variants trained through the run cache on one auto-encoder run."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdnb import distill, models, runs
from kdnb.analysis.representation import linear_cka
from kdnb.distill.features import match_size
from kdnb.distill.inheritance import ChannelSplit
from kdnb.train import Schedule

pytestmark = pytest.mark.usefixtures("one_thread")


def net(name: str, seed: int = 0) -> models.FeatureModel:
    torch.manual_seed(seed)
    return models.create(name, num_classes=10, in_channels=1)


# ---------------------------------------------------------------------------------- losses by hand
def unit_rows(x: torch.Tensor) -> list[list[float]]:
    rows = []
    for row in x.flatten(1).tolist():
        norm = math.sqrt(sum(v * v for v in row))
        rows.append([v / norm for v in row])
    return rows


def mean_abs(a, b) -> float:
    values = [abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)]
    return sum(values) / len(values)


def rms(a, b) -> float:
    values = [(x - y) ** 2 for ra, rb in zip(a, b) for x, y in zip(ra, rb)]
    return math.sqrt(sum(values) / len(values))


def cosines(a, b) -> list[float]:
    return [sum(x * y for x, y in zip(ra, rb)) for ra, rb in zip(a, b)]


def relu_rows(rows):
    return [[max(v, 0.0) for v in row] for row in rows]


@pytest.fixture
def factors():
    torch.manual_seed(0)
    return torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2).requires_grad_()


def test_eq2_eq3_l1_by_hand_and_the_teacher_is_detached(factors):
    f_inh, f_exp, f_t = factors
    l_inh, l_exp = distill.ie_losses(f_inh, f_exp, f_t)
    ui, ue, ut = unit_rows(f_inh), unit_rows(f_exp), unit_rows(f_t.detach())
    assert l_inh.item() == pytest.approx(mean_abs(ui, ut), rel=1e-5)
    assert l_exp.item() == pytest.approx(-mean_abs(ue, ut), rel=1e-5)  # Eq. 3: the negative distance
    assert torch.equal(l_inh, distill.factor_distance(f_inh, f_t.detach()))
    f_inh.requires_grad_()
    distill.ie_losses(f_inh, None, f_t)[0].backward()
    assert f_t.grad is None and f_inh.grad is not None


def test_table_6a_metrics_by_hand(factors):
    f_inh, f_exp, f_t = factors
    ui, ue, ut = unit_rows(f_inh), unit_rows(f_exp), unit_rows(f_t.detach())
    l2 = distill.ie_losses(f_inh, f_exp, f_t, "l2")
    assert [v.item() for v in l2] == pytest.approx([rms(ui, ut), -rms(ue, ut)], rel=1e-5)
    cos = distill.ie_losses(f_inh, f_exp, f_t, "cos")
    assert cos[0].item() == pytest.approx(sum(1 - c for c in cosines(ui, ut)) / 4, rel=1e-5)
    assert cos[1].item() == pytest.approx(sum(abs(c) for c in cosines(ue, ut)) / 4, rel=1e-5)
    partial = distill.ie_losses(f_inh, f_exp, f_t, "partial_l2")
    assert partial[0].item() == pytest.approx(rms(relu_rows(ui), relu_rows(ut)), rel=1e-5)
    assert partial[1].item() == pytest.approx(-rms(relu_rows(ue), relu_rows(ut)), rel=1e-5)
    cka = distill.ie_losses(f_inh, f_exp, f_t, "l1_cka")
    assert cka[0].item() == pytest.approx(mean_abs(ui, ut), rel=1e-5)
    assert cka[1].item() == pytest.approx(linear_cka(f_exp, f_t.detach()), rel=1e-5)  # the analysis module's CKA
    with pytest.raises(ValueError, match="l1, l2, cos, partial_l2, l1_cka"):
        distill.ie_losses(f_inh, f_exp, f_t, "l3")


def test_exploration_is_bounded_and_pushes_away(factors):
    f_inh, f_exp, f_t = factors
    for metric in ("l1", "l2", "partial_l2"):
        assert distill.ie_losses(None, f_t.detach(), f_t, metric)[1].item() == pytest.approx(0.0, abs=1e-5)
        # However large the exploration factor grows, the normalised distance stays bounded.
        assert distill.ie_losses(None, 1e6 * f_exp, f_t, metric)[1].item() == pytest.approx(
            distill.ie_losses(None, f_exp, f_t, metric)[1].item(), rel=1e-5)
    f_exp = f_exp.clone().requires_grad_()
    l_exp = distill.ie_losses(None, f_exp, f_t)[1]
    l_exp.backward()
    stepped = f_exp.detach() - 0.5 * f_exp.grad  # a descent step on L_exp moves F_exp away from F_T
    assert distill.factor_distance(stepped, f_t.detach()) > distill.factor_distance(f_exp.detach(), f_t.detach())


def test_sizes_meet_at_the_smaller_map():
    torch.manual_seed(1)
    small, big = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 7, 7)
    l_inh, _ = distill.ie_losses(small, None, big)
    assert torch.allclose(l_inh, distill.factor_distance(*match_size(small, big)))


# ---------------------------------------------------------------------------------- the split
def test_split_is_fixed_random_or_natural_and_covers_every_channel():
    torch.manual_seed(0)
    a = ChannelSplit(64, 0.5)
    torch.manual_seed(0)
    b = ChannelSplit(64, 0.5)
    torch.manual_seed(1)
    c = ChannelSplit(64, 0.5)
    assert torch.equal(a.inherit, b.inherit) and not torch.equal(a.inherit, c.inherit)  # fixed per seed
    assert sorted(torch.cat([a.inherit, a.explore]).tolist()) == list(range(64)) and a.inherit.numel() == 32
    natural = ChannelSplit(10, 0.3, "natural")
    assert natural.inherit.tolist() == [0, 1, 2] and natural.explore.tolist() == list(range(3, 10))
    feature = torch.randn(2, 10, 3, 3)
    inh, exp = natural(feature)
    assert torch.equal(inh, feature[:, :3]) and torch.equal(exp, feature[:, 3:])
    assert ChannelSplit(8, 1.0)(torch.randn(1, 8, 2, 2))[1] is None  # Table 5's "1.0/0.0": inheritance only
    with pytest.raises(ValueError, match="random, natural"):
        ChannelSplit(8, 0.5, "relation")


# ---------------------------------------------------------------------------------- methods by hand
def tiny_teacher(model: str = "resnet14") -> runs.RunSpec:
    return runs.RunSpec("fashion_mnist", model, Schedule(epochs=1, batch_size=8, lr=0.05), train_per_class=3,
                        test_per_class=2)


def autoencoder_spec(teacher: runs.RunSpec) -> runs.RunSpec:
    return runs.part(teacher, "autoencoder", Schedule(epochs=1, batch_size=8, lr=0.1, lr_schedule="constant"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny teacher and its auto-encoder run (trained once for the module)."""
    root = tmp_path_factory.mktemp("ie-runs")
    teacher = tiny_teacher()
    ae = runs.train_or_load(autoencoder_spec(teacher), root=root, device="cpu")
    return root, teacher, runs.train_or_load(teacher, root=root).model(device="cpu"), ae


def by_hand(method, student, teacher_net, x, reduce=lambda f: f):
    feature = student.forward_features(x)[1]["stage3"]
    f_t = method.autoencoder.encoder(teacher_net.forward_features(x)[1]["stage3"])
    parts = {}
    for name, index in (("inherit", method.split.inherit), ("explore", method.split.explore)):
        if index.numel():
            parts[name] = method.encoders[name](feature[:, index.tolist()])
    return {k: unit_rows(reduce(v)) for k, v in parts.items()}, unit_rows(reduce(f_t))


@pytest.mark.parametrize("name", ["ie_ft", "ie_at", "ie_od"])
def test_ie_variants_from_the_networks_by_hand(trained, name):
    _, _, teacher_net, ae = trained
    student = net("resnet8", 3)
    method = distill.create(name, student, teacher_net, autoencoder=ae, lambda_inh=2.0, lambda_exp=3.0).eval()
    x, y = torch.randn(3, 1, 28, 28), torch.randint(0, 10, (3,))
    logits, terms = method(x, y)
    assert set(terms) == {"ce", "inh", "exp"}
    if name == "ie_at":  # the factors' attention maps: channel mean of the squares
        parts, ut = by_hand(method, student, teacher_net, x, lambda f: f.pow(2).mean(1))
    else:
        parts, ut = by_hand(method, student, teacher_net, x)
    if name == "ie_od":
        distance = lambda a: rms(relu_rows(a), relu_rows(ut))  # noqa: E731
    else:
        distance = lambda a: mean_abs(a, ut)  # noqa: E731
    assert terms["inh"].item() == pytest.approx(2.0 * distance(parts["inherit"]), rel=1e-4)
    assert terms["exp"].item() == pytest.approx(-3.0 * distance(parts["explore"]), rel=1e-4)
    assert terms["ce"].item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert not any(p.requires_grad for p in method.autoencoder.parameters())
    assert [(c.in_channels, c.out_channels) for c in method.encoders["inherit"] if hasattr(c, "in_channels")] == \
        [(32, 32), (32, 32), (32, 32)]  # 32 student channels -> the teacher factor's 32


def test_the_ends_of_table_5_have_one_part(trained):
    _, _, teacher_net, ae = trained
    x, y = torch.randn(2, 1, 28, 28), torch.randint(0, 10, (2,))
    only_inherit = distill.create("ie_ft", net("resnet8"), teacher_net, autoencoder=ae, eta=1.0).eval()
    only_explore = distill.create("ie_ft", net("resnet8"), teacher_net, autoencoder=ae, eta=0.0).eval()
    assert set(only_inherit(x, y)[1]) == {"ce", "inh"} and set(only_inherit.encoders) == {"inherit"}
    assert set(only_explore(x, y)[1]) == {"ce", "exp"} and set(only_explore.encoders) == {"explore"}
    assert [m.in_channels for m in only_inherit.encoders["inherit"] if hasattr(m, "in_channels")][0] == 64


def test_cross_family_student_map_3x3_against_teacher_map_7x7(tmp_path):
    teacher = tiny_teacher("wrn-16-1")
    ae = runs.train_or_load(autoencoder_spec(teacher), root=tmp_path, device="cpu")
    teacher_net = runs.train_or_load(teacher, root=tmp_path).model(device="cpu")
    student = net("vgg8", 4)
    method = distill.create("ie_ft", student, teacher_net, autoencoder=ae).eval()
    assert method.layer == "block5"
    x, y = torch.randn(2, 1, 28, 28), torch.randint(0, 10, (2,))
    f_s = student.forward_features(x)[1]["block5"]
    f_t = teacher_net.forward_features(x)[1]["stage3"]
    assert f_s.shape[2:] == (3, 3) and f_t.shape[2:] == (7, 7)
    _, terms = method(x, y)
    f_inh = method.encoders["inherit"](f_s[:, method.split.inherit])
    teacher_factor = F.adaptive_avg_pool2d(method.autoencoder.encoder(f_t), (3, 3))  # the larger map pooled
    assert terms["inh"].item() == pytest.approx(50 * distill.factor_distance(f_inh, teacher_factor).item(), rel=1e-5)


# ---------------------------------------------------------------------------------- through the run cache
def test_the_three_variants_train_on_one_autoencoder_run(trained, count_trainers):
    root, teacher, _, _ = trained
    ae_spec = autoencoder_spec(teacher)
    schedule = Schedule(epochs=1, batch_size=8, lr=0.05)
    finished = {}
    for name in ("ie_ft", "ie_at", "ie_od"):
        spec = teacher.replace(model="resnet8", method=name, teacher=teacher, schedule=schedule,
                               method_args={"autoencoder": ae_spec})
        finished[name] = runs.train_or_load(spec, root=root, device="cpu")
    assert len(count_trainers) == 3  # the teacher and its auto-encoder were trained once, before
    for run in finished.values():
        assert {"train_ce", "train_inh", "train_exp", "test_acc"} <= set(run.final)
        assert run.final["train_exp"] <= 0 and all(math.isfinite(v) for v in run.final.values())
    run = finished["ie_ft"]
    split = run.network("split", device="cpu")
    rebuilt = runs.build_method(run.spec, runs.build_model(teacher), {"autoencoder": runs.train_or_load(ae_spec,
                                                                                                        root=root)})
    assert torch.equal(split.inherit, rebuilt.split.inherit)  # drawn from the run's seed: fixed per seed
    other = runs.build_method(run.spec.replace(seed=5), runs.build_model(teacher),
                              {"autoencoder": runs.train_or_load(ae_spec, root=root)})
    assert not torch.equal(split.inherit, other.split.inherit)
    natural = run.spec.replace(method_args={"autoencoder": ae_spec, "split": "natural"})
    assert runs.build_method(natural, runs.build_model(teacher), {"autoencoder": runs.train_or_load(
        ae_spec, root=root)}).split.inherit.tolist() == list(range(32))
