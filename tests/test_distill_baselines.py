"""The baselines of Gu et al. (2020, §5.1-5.3), reused by Part II: label smoothing, the confidence penalty,
born-again networks, FitNets, attention transfer and FSP.

Losses are checked against hand computations written from the papers' equations with Python floats and loops
(never by calling the helper under test); the two-stage methods run through the real Trainer, comparing
parameters and BatchNorm buffers before and after each stage.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdnb import distill, models, modules, runs
from kdnb.distill import Context, Stage
from kdnb.distill.attention import attention_loss, attention_map
from kdnb.distill.fsp import fsp_loss, fsp_matrix
from kdnb.distill.features import prefixes_above
from kdnb.distill.kd import kd_divergence
from kdnb.distill.regularizers import entropy, smoothed_targets
from kdnb.runs import RunSpec
from kdnb.train import Schedule, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


class Passthrough(nn.Module):
    """A "network" whose logits are its input: the losses can be fed chosen logits."""

    def forward(self, x):
        return x


class Scaled(nn.Module):
    """A fixed "teacher": logits = factor * input."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return self.factor * x


def log_softmax_row(row: list[float], temperature: float = 1.0) -> list[float]:
    scaled = [v / temperature for v in row]
    top = max(scaled)
    log_z = top + math.log(sum(math.exp(v - top) for v in scaled))
    return [v - log_z for v in scaled]


def net(name: str, seed: int = 0, **options) -> models.FeatureModel:
    torch.manual_seed(seed)
    return models.create(name, num_classes=10, in_channels=1, **options)


# ----------------------------------------------------------------------------------------------- registry
def test_registered_under_their_names() -> None:
    expected = {"ls": distill.LabelSmoothing, "cp": distill.ConfidencePenalty, "ban": distill.BornAgain,
                "hint": distill.FitNets, "at": distill.AttentionTransfer, "fsp": distill.FSP}
    for name, cls in expected.items():
        assert distill.method_class(name) is cls
    assert distill.bind("ls", {}) == {"alpha": 0.9}
    assert distill.bind("cp", {}) == {"beta": 0.5}
    assert distill.bind("ban", {"ce_weight": 0.1}) == {"temperature": 1.0, "ce_weight": 0.1}
    assert not distill.LabelSmoothing.takes_teacher and not distill.ConfidencePenalty.takes_teacher
    assert all(cls.requires_teacher for cls in (distill.BornAgain, distill.FitNets, distill.AttentionTransfer,
                                                distill.FSP))


# ------------------------------------------------------------------------------------------ label smoothing
def test_smoothed_targets_put_alpha_on_the_ground_truth_and_share_the_rest() -> None:
    y = torch.tensor([0, 3, 9, 3])
    q = smoothed_targets(y, 10, 0.7)
    assert torch.allclose(q.sum(1), torch.ones(4))
    for row, label in zip(q.tolist(), y.tolist()):
        assert row[label] == pytest.approx(0.7)
        assert all(v == pytest.approx(0.3 / 9) for k, v in enumerate(row) if k != label)
        assert max(range(10), key=row.__getitem__) == label
    # The same family as Szegedy et al.'s (1 - eps) one-hot + eps / K, with eps = K (1 - alpha) / (K - 1).
    eps = 10 * 0.3 / 9
    assert torch.allclose(q, (1 - eps) * F.one_hot(y, 10).float() + eps / 10)


def test_label_smoothing_loss_by_hand() -> None:
    torch.manual_seed(0)
    logits, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 1])
    alpha = 0.8
    method = distill.LabelSmoothing(Passthrough(), alpha=alpha)
    _, terms = method(logits, y)
    expected = 0.0
    for row, label in zip(logits.tolist(), y.tolist()):
        logp = log_softmax_row(row)
        expected -= alpha * logp[label] + sum((1 - alpha) / 3 * logp[k] for k in range(4) if k != label)
    assert set(terms) == {"ls"}
    assert terms["ls"].item() == pytest.approx(expected / 5, rel=1e-5)
    plain = distill.LabelSmoothing(Passthrough(), alpha=1.0)(logits, y)[1]["ls"]
    assert plain.item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)


def test_regularizers_reject_bad_arguments_and_teachers() -> None:
    with pytest.raises(ValueError, match="alpha"):
        distill.LabelSmoothing(Passthrough(), alpha=1.2)
    with pytest.raises(ValueError, match="beta"):
        distill.ConfidencePenalty(Passthrough(), beta=-1)
    with pytest.raises(ValueError, match="no teacher"):
        distill.LabelSmoothing(Passthrough(), Passthrough())
    spec = RunSpec("fashion_mnist", "resnet8", Schedule(epochs=1))
    with pytest.raises(ValueError, match="takes no teacher"):
        spec.replace(method="cp", teacher=spec).validate()


# --------------------------------------------------------------------------------------- confidence penalty
def test_confidence_penalty_by_hand() -> None:
    torch.manual_seed(1)
    logits, y = torch.randn(4, 5) * 3, torch.tensor([4, 0, 2, 2])
    beta = 0.5
    _, terms = distill.ConfidencePenalty(Passthrough(), beta=beta)(logits, y)
    ce, ent = 0.0, 0.0
    for row, label in zip(logits.tolist(), y.tolist()):
        logp = log_softmax_row(row)
        ce -= logp[label]
        ent -= sum(math.exp(v) * v for v in logp)
    assert set(terms) == {"ce", "cp"}
    assert terms["ce"].item() == pytest.approx(ce / 4, rel=1e-5)
    assert terms["cp"].item() == pytest.approx(-beta * ent / 4, rel=1e-5)
    assert terms["cp"].item() <= 0


def test_confidence_penalty_gradient_raises_the_entropy() -> None:
    torch.manual_seed(2)
    logits = (torch.randn(8, 10) * 4).requires_grad_()
    y = torch.randint(0, 10, (8,))
    cp = distill.ConfidencePenalty(Passthrough(), beta=1.0)(logits, y)[1]["cp"]
    (grad,) = torch.autograd.grad(cp, logits)
    before = entropy(logits.detach())
    after = entropy(logits.detach() - 0.05 * grad)  # one gradient-descent step on the penalty alone
    assert bool((after > before).all())
    # The penalty pushes every row towards uniform: its gradient along a row's top logit is positive.
    top = logits.detach().argmax(1)
    assert bool((grad[torch.arange(8), top] > 0).all())


# ------------------------------------------------------------------------------------------------------ BAN
def test_ban_is_the_temperature_scaled_kl_and_an_optional_ce() -> None:
    torch.manual_seed(3)
    logits, y = torch.randn(6, 4), torch.randint(0, 4, (6,))
    teacher = Scaled(1.7)
    T = 2.0
    _, terms = distill.BornAgain(Passthrough(), teacher, temperature=T)(logits, y)
    assert set(terms) == {"kd"}
    assert torch.equal(terms["kd"], kd_divergence(logits, 1.7 * logits, T))
    expected = 0.0
    for s_row, t_row in zip(logits.tolist(), (1.7 * logits).tolist()):
        log_s, log_t = log_softmax_row(s_row, T), log_softmax_row(t_row, T)
        expected += sum(math.exp(lt) * (lt - ls) for ls, lt in zip(log_s, log_t))
    assert terms["kd"].item() == pytest.approx(T**2 * expected / 6, rel=1e-5)
    _, with_labels = distill.BornAgain(Passthrough(), teacher, temperature=T, ce_weight=0.1)(logits, y)
    assert set(with_labels) == {"kd", "ce"}
    assert with_labels["ce"].item() == pytest.approx(0.1 * F.cross_entropy(logits, y).item(), rel=1e-6)


def test_ban_needs_a_teacher_of_its_own_architecture() -> None:
    with pytest.raises(ValueError, match="needs a teacher"):
        distill.BornAgain(net("resnet8"))
    with pytest.raises(ValueError, match="'resnet14'.*'resnet8'"):
        distill.BornAgain(net("resnet8"), net("resnet14"))


def test_ban_chain_trains_through_the_run_cache(count_trainers) -> None:
    teacher = RunSpec("fashion_mnist", "resnet8", Schedule(epochs=1, batch_size=16, lr=0.05), train_per_class=4,
                      test_per_class=2)
    first, born_again = runs.chain(teacher, teacher.replace(method="ban", method_args={"ce_weight": 0.1}))
    run = runs.train_or_load(born_again)
    assert len(count_trainers) == 2  # the CE generation, then the born-again one
    assert {"train_kd", "train_ce"} <= set(run.history[-1])


# ------------------------------------------------------------------------------------------ attention maps
def test_attention_map_by_hand() -> None:
    torch.manual_seed(4)
    feature = torch.randn(2, 3, 2, 2)
    for b in range(2):
        q = [sum(feature[b, c, h, w].item() ** 2 for c in range(3)) / 3 for h in range(2) for w in range(2)]
        norm = math.sqrt(sum(v * v for v in q))
        assert attention_map(feature)[b].tolist() == pytest.approx([v / norm for v in q], rel=1e-5)


def test_attention_loss_by_hand_and_invariant_to_the_feature_scale() -> None:
    torch.manual_seed(5)
    s, t = torch.randn(3, 4, 2, 3), torch.randn(3, 8, 2, 3)  # channel counts may differ
    expected = 0.0
    for b in range(3):
        qs = [sum(s[b, c, h, w].item() ** 2 for c in range(4)) / 4 for h in range(2) for w in range(3)]
        qt = [sum(t[b, c, h, w].item() ** 2 for c in range(8)) / 8 for h in range(2) for w in range(3)]
        ns, nt = math.sqrt(sum(v * v for v in qs)), math.sqrt(sum(v * v for v in qt))
        expected += sum((a / ns - c / nt) ** 2 for a, c in zip(qs, qt))
    assert attention_loss(s, t).item() == pytest.approx(expected / (3 * 6), rel=1e-5)
    assert torch.allclose(attention_loss(37.0 * s, 0.01 * t), attention_loss(s, t), rtol=1e-5)
    assert attention_loss(s, s).item() == pytest.approx(0.0, abs=1e-7)
    # Maps of different sizes meet at the smaller one (tests/test_distill_features.py checks it by hand).
    assert attention_loss(s, torch.randn(3, 8, 4, 6)).shape == ()


def test_attention_transfer_terms_from_the_networks() -> None:
    student, teacher = net("resnet8", 0), net("resnet14", 1)
    method = distill.AttentionTransfer(student, teacher, alpha=0.9, temperature=4.0)
    x, y = torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6,))
    method.eval()
    logits, terms = method(x, y)
    assert set(terms) == {"at", "kd", "ce"}
    s_logits, s_features = student.forward_features(x)
    t_logits, t_features = teacher.forward_features(x)
    expected_at = 1000 / 2 * sum(
        ((attention_map(s_features[n]) - attention_map(t_features[n])) ** 2).mean() for n in ("stage1", "stage2",
                                                                                             "stage3"))
    assert terms["at"].item() == pytest.approx(expected_at.item(), rel=1e-5)
    assert terms["kd"].item() == pytest.approx(0.9 * kd_divergence(s_logits, t_logits, 4.0).item(), rel=1e-5)
    assert terms["ce"].item() == pytest.approx(0.1 * F.cross_entropy(s_logits, y).item(), rel=1e-5)
    assert set(distill.AttentionTransfer(student, teacher, alpha=0.0)(x, y)[1]) == {"at", "ce"}


def test_attention_transfer_names_unknown_layers() -> None:
    with pytest.raises(ValueError, match="no feature 'stage4'.*stage3"):
        distill.AttentionTransfer(net("resnet8"), net("resnet14"), layers=("stage4",))


# ------------------------------------------------------------------------------------------------------ FSP
def test_fsp_matrix_by_an_explicit_loop() -> None:
    torch.manual_seed(6)
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4)
    g = fsp_matrix(a, b)
    assert g.shape == (2, 3, 5)
    for n in range(2):
        for i in range(3):
            for j in range(5):
                value = sum(a[n, i, h, w].item() * b[n, j, h, w].item() for h in range(4) for w in range(4)) / 16
                assert g[n, i, j].item() == pytest.approx(value, rel=1e-5, abs=1e-6)


def test_fsp_matrix_pools_the_larger_map_first() -> None:
    torch.manual_seed(7)
    big, small = torch.randn(1, 2, 4, 4), torch.randn(1, 3, 2, 2)
    g = fsp_matrix(big, small)
    pooled = [[[sum(big[0, c, 2 * h + dh, 2 * w + dw].item() for dh in range(2) for dw in range(2)) / 4
                for w in range(2)] for h in range(2)] for c in range(2)]
    for i in range(2):
        for j in range(3):
            value = sum(pooled[i][h][w] * small[0, j, h, w].item() for h in range(2) for w in range(2)) / 4
            assert g[0, i, j].item() == pytest.approx(value, rel=1e-5, abs=1e-6)
    assert torch.allclose(fsp_matrix(small, big), g.transpose(1, 2))
    with pytest.raises(ValueError, match="divide"):
        fsp_matrix(torch.randn(1, 2, 5, 5), small)


def test_fsp_loss_by_hand() -> None:
    torch.manual_seed(8)
    gs = [torch.randn(2, 3, 4), torch.randn(2, 4, 2)]
    gt = [torch.randn(2, 3, 4), torch.randn(2, 4, 2)]
    expected = sum(sum((s - t) ** 2 for s, t in zip(a.flatten().tolist(), b.flatten().tolist())) / a.numel()
                   for a, b in zip(gs, gt))
    assert fsp_loss(gs, gt).item() == pytest.approx(expected, rel=1e-5)


def test_fsp_needs_equal_widths_and_names_them() -> None:
    with pytest.raises(ValueError, match="same channel widths.*stage1->stage2: student 16x32, teacher 32x64"):
        distill.FSP(net("resnet8"), net("wrn-16-2"))
    distill.FSP(net("resnet8"), net("resnet26"))  # the CIFAR ResNets share widths 16/32/64


# ------------------------------------------------------------------------- stages through the real Trainer
def tiny_spec(per_class: int = 8) -> RunSpec:
    return RunSpec("fashion_mnist", "resnet8", Schedule(epochs=2, batch_size=16, lr=0.05),
                   train_per_class=per_class, test_per_class=4)


def state(module: nn.Module, prefixes) -> dict[str, torch.Tensor]:
    """Parameters and buffers under ``prefixes`` (all when empty), copied."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()
            if not prefixes or modules.under_any(k, prefixes)}


def train_two_stages(method: distill.Method) -> tuple[dict, dict, dict, list[dict]]:
    """State of the method at the start, after the first stage's epoch and after the second's."""
    spec = tiny_spec()
    snapshots = [state(method, ())]
    trainer = Trainer(method, runs.batches(spec, "train", "cpu"), spec.schedule, seed=0, device="cpu",
                      on_epoch_end=lambda metrics: snapshots.append(state(method, ())))
    history = trainer.fit()
    return *snapshots, history


def changed(before: dict, after: dict, prefixes) -> dict[str, bool]:
    return {k: not torch.equal(before[k], after[k]) for k in before if modules.under_any(k, prefixes)}


def test_fitnets_hint_stage_trains_only_up_to_the_guided_layer() -> None:
    method = distill.FitNets(net("resnet8", 0), net("resnet14", 1), hint_layer="stage2")
    above = tuple(f"student.{p}" for p in prefixes_above(method.student, "stage2"))
    assert above == ("student.stage3", "student.classifier")
    assert [(s.name, s.epochs, s.restart_schedule) for s in method.stages(2)] == [("hint", 1, True),
                                                                                  ("kd", None, True)]
    start, after_hint, after_kd, history = train_two_stages(method)
    frozen = changed(start, after_hint, above)
    assert frozen and not any(frozen.values())  # parameters AND BatchNorm buffers of stage3 + classifier
    assert any(k.endswith("running_mean") for k in frozen)
    trained = changed(start, after_hint, ("student.stem", "student.stage1", "student.stage2", "regressor"))
    assert trained and all(trained.values())
    regressor = changed(after_hint, after_kd, ("regressor",))
    assert regressor and not any(regressor.values())  # frozen in the kd stage
    student = changed(after_hint, after_kd, ("student",))
    assert all(student.values())  # the kd stage trains the whole student
    assert [row["stage"] for row in history] == ["hint", "kd"]
    assert {k for k in history[0] if k.startswith("train_") and k not in ("train_time_s", "train_loss", "train_acc")} \
        == {"train_hint"}
    assert {"train_ce", "train_kd"} <= set(history[1])


def test_fitnets_loss_by_hand_and_its_kd_stage_runs_only_the_teacher_logits() -> None:
    student, teacher = net("resnet8", 0), net("resnet14", 1)
    method = distill.FitNets(student, teacher, hint_layer="stage2", guided_layer="stage2", beta=2.0).eval()
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    _, terms = method(x, y, Context(stage=Stage("hint", terms=("hint",))))
    assert set(terms) == {"hint"}
    guided = student.forward_features(x)[1]["stage2"]
    hint = teacher.forward_features(x)[1]["stage2"]
    fitted = F.relu(method.regressor.conv(guided))  # the hint is a ReLU output: so is the regression
    assert method.regressor.conv.kernel_size == (1, 1)
    assert terms["hint"].item() == pytest.approx(2.0 * ((fitted - hint) ** 2).mean().item(), rel=1e-5)

    def no_features(*args, **kwargs):
        raise AssertionError("the kd stage must not run the teacher's hint layer")

    teacher.forward_features = no_features
    _, terms = method(x, y, Context(stage=Stage("kd", terms=("ce", "kd"))))
    assert set(terms) == {"ce", "kd"}


def test_fitnets_regressor_shrinks_a_larger_guided_map_and_refuses_a_smaller_one() -> None:
    method = distill.FitNets(net("resnet8"), net("resnet14"), hint_layer="stage2", guided_layer="stage1")
    assert method.regressor.conv.kernel_size == method.regressor.conv.stride == (2, 2)
    for size in (28, 32):  # Fashion-MNIST and CIFAR: the maps keep their ratio
        x, y = torch.randn(2, 1, size, size), torch.tensor([0, 1])
        hint = method(x, y, Context(stage=Stage("hint", terms=("hint",))))[1]["hint"]
        assert hint.shape == () and math.isfinite(hint.item())
    with pytest.raises(ValueError, match="smaller than the hint"):
        distill.FitNets(net("resnet8"), net("resnet14"), hint_layer="stage1", guided_layer="stage3")
    with pytest.raises(ValueError, match="at least 2 epochs"):
        method.stages(1)


def test_fsp_stage_freezes_the_classifier_then_kd_trains_everything() -> None:
    method = distill.FSP(net("resnet8", 0), net("resnet14", 1))
    assert method.deepest == "stage3"
    start, after_fsp, after_kd, history = train_two_stages(method)
    classifier = changed(start, after_fsp, ("student.classifier",))
    assert classifier and not any(classifier.values())
    body = changed(start, after_fsp, ("student.stage1", "student.stage2", "student.stage3"))
    assert body and all(body.values())
    assert all(changed(after_fsp, after_kd, ("student",)).values())
    assert [row["stage"] for row in history] == ["fsp", "kd"]
    assert "train_fsp" in history[0] and "train_kd" not in history[0]
    assert {"train_ce", "train_kd"} <= set(history[1]) and "train_fsp" not in history[1]


def test_fsp_method_loss_from_the_networks() -> None:
    student, teacher = net("resnet8", 0), net("resnet20", 1)
    method = distill.FSP(student, teacher, beta=3.0).eval()
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    _, terms = method(x, y, Context(stage=Stage("fsp", terms=("fsp",))))
    fs, ft = student.forward_features(x)[1], teacher.forward_features(x)[1]
    pairs = (("stage1", "stage2"), ("stage2", "stage3"))
    expected = sum(((fsp_matrix(fs[a], fs[b]) - fsp_matrix(ft[a], ft[b])) ** 2).mean() for a, b in pairs)
    assert set(terms) == {"fsp"}
    assert terms["fsp"].item() == pytest.approx(3.0 * expected.item(), rel=1e-5)


def test_at_trains_through_the_trainer_with_all_terms() -> None:
    spec = tiny_spec(per_class=4)
    method = distill.AttentionTransfer(net("resnet8", 0), net("resnet14", 1))
    history = Trainer(method, runs.batches(spec, "train", "cpu"), spec.schedule, seed=0, device="cpu").fit()
    assert all({"train_at", "train_kd", "train_ce"} <= set(row) for row in history)
    assert all(math.isfinite(row["train_loss"]) for row in history)
