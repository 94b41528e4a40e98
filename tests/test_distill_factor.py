"""The factor auto-encoder (Huang et al. §3.1, supplement Table 3) trained as a part run, and factor transfer.

Losses by hand from the equations (Python floats and loops); the auto-encoder's layers against the supplement's
table; the part run feeds FT through the run cache, trained once and shared."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdnb import distill, models, runs
from kdnb.distill.factor import FactorAutoencoder, coder, factor_distance, reconstruction_loss
from kdnb.train import Schedule

pytestmark = pytest.mark.usefixtures("one_thread")


def net(name: str, seed: int = 0) -> models.FeatureModel:
    torch.manual_seed(seed)
    return models.create(name, num_classes=10, in_channels=1)


def normalised(row: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in row))
    return [v / norm for v in row]


def test_autoencoder_layers_follow_the_supplements_table_3():
    ae = FactorAutoencoder(64)
    convs = [m for m in ae.encoder if isinstance(m, nn.Conv2d)]
    deconvs = [m for m in ae.decoder if isinstance(m, nn.ConvTranspose2d)]
    # Conv1 C->C, Conv2 C->C/2, Conv3 C/2->C/2; Deconv1 C/2->C/2, Deconv2 C/2->C, Deconv3 C->C.
    assert [(c.in_channels, c.out_channels) for c in convs] == [(64, 64), (64, 32), (32, 32)]
    assert [(c.in_channels, c.out_channels) for c in deconvs] == [(32, 32), (32, 64), (64, 64)]
    for layer in convs + deconvs:
        assert (layer.kernel_size, layer.stride, layer.padding) == ((3, 3), (1, 1), (1, 1))
    for part in (ae.encoder, ae.decoder):  # each of the six layers: BN then leaky ReLU of rate 0.1
        kinds = [type(m) for m in part]
        assert kinds[1::3] == [nn.BatchNorm2d] * 3 and kinds[2::3] == [nn.LeakyReLU] * 3
        assert all(m.negative_slope == 0.1 for m in part if isinstance(m, nn.LeakyReLU))
    factor, reconstruction = ae(torch.randn(2, 64, 7, 7))
    assert factor.shape == (2, 32, 7, 7) and reconstruction.shape == (2, 64, 7, 7)  # no spatial reduction
    with pytest.raises(ValueError, match="divide"):
        FactorAutoencoder(63)


def test_reconstruction_losses_by_hand():
    torch.manual_seed(0)
    f, r = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    pairs = list(zip(f.flatten().tolist(), r.flatten().tolist()))
    assert reconstruction_loss(f, r, "l2").item() == pytest.approx(sum((a - b) ** 2 for a, b in pairs) / 24, rel=1e-5)
    assert reconstruction_loss(f, r, "l1").item() == pytest.approx(sum(abs(a - b) for a, b in pairs) / 24, rel=1e-5)
    with pytest.raises(ValueError, match="l2, l1"):
        reconstruction_loss(f, r, "l3")


def test_factor_distance_by_hand():
    torch.manual_seed(1)
    a, b = torch.randn(3, 2, 2, 2), torch.randn(3, 2, 2, 2)
    expected = 0.0
    for row_a, row_b in zip(a.flatten(1).tolist(), b.flatten(1).tolist()):
        expected += sum(abs(x - y) for x, y in zip(normalised(row_a), normalised(row_b)))
    assert factor_distance(a, b).item() == pytest.approx(expected / (3 * 8), rel=1e-5)
    assert factor_distance(5.0 * a, 0.1 * a).item() == pytest.approx(0.0, abs=1e-7)  # scale-free per sample
    with pytest.raises(ValueError, match="different sizes"):
        factor_distance(a, torch.randn(3, 2, 3, 3))


def tiny_teacher() -> runs.RunSpec:
    return runs.RunSpec("fashion_mnist", "resnet14", Schedule(epochs=1, batch_size=8, lr=0.05), train_per_class=3,
                        test_per_class=2)


def autoencoder_run(teacher: runs.RunSpec, **args) -> runs.RunSpec:
    return runs.part(teacher, "autoencoder", Schedule(epochs=1, batch_size=8, lr=0.1, lr_schedule="constant"), args)


def test_autoencoder_part_run_trains_its_reconstruction_only(tmp_path, count_trainers):
    teacher = tiny_teacher()
    run = runs.train_or_load(autoencoder_run(teacher), root=tmp_path, device="cpu")
    assert len(count_trainers) == 2
    assert set(k for k in run.final if k.startswith("train_")) == {"train_rec", "train_loss"}
    ae = run.network("autoencoder", device="cpu")
    assert isinstance(ae, FactorAutoencoder) and (ae.layer, ae.channels, ae.factor_channels) == ("stage3", 64, 32)
    # By hand: the same auto-encoder (same seed) trained on Eq. 1 over the same batches of the teacher's stage 3.
    spec = autoencoder_run(teacher)
    teacher_net = runs.train_or_load(teacher, root=tmp_path).model(device="cpu")
    torch.manual_seed(spec.seed)
    by_hand = FactorAutoencoder(64, 2, "stage3")
    s = spec.schedule
    optimizer = torch.optim.SGD(by_hand.parameters(), lr=s.lr, momentum=s.momentum, nesterov=True,
                                weight_decay=s.weight_decay)
    total, count = 0.0, 0
    for x, _ in runs.batches(spec, "train", "cpu").batches(0, spec.seed):
        with torch.no_grad():
            feature = teacher_net.forward_features(x)[1]["stage3"]
        loss = (by_hand(feature)[1] - feature).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total, count = total + loss.item() * len(x), count + len(x)
    assert run.final["train_rec"] == pytest.approx(total / count, rel=1e-5)
    for k, v in by_hand.state_dict().items():
        assert torch.allclose(v.float(), ae.state_dict()[k].float(), atol=1e-6), k
    with pytest.raises(ValueError, match="no feature 'stage9'"):
        runs.train_or_load(autoencoder_run(teacher, layer="stage9"), root=tmp_path, device="cpu")


def test_ft_loss_by_hand_and_the_paraphraser_stays_frozen(tmp_path):
    teacher = tiny_teacher()
    ae_spec = autoencoder_run(teacher)
    ae_run = runs.train_or_load(ae_spec, root=tmp_path, device="cpu")
    teacher_net = runs.train_or_load(teacher, root=tmp_path).model(device="cpu")
    student = net("resnet8", 2)
    method = distill.create("ft", student, teacher_net, autoencoder=ae_run, beta=7.0).eval()
    assert not any(p.requires_grad for p in method.autoencoder.parameters())
    assert [(c.in_channels, c.out_channels) for c in method.translator if isinstance(c, nn.Conv2d)] == \
        [(64, 64), (64, 32), (32, 32)]
    x, y = torch.randn(3, 1, 28, 28), torch.randint(0, 10, (3,))
    logits, terms = method(x, y)
    s_factor = method.translator(student.forward_features(x)[1]["stage3"])
    t_factor = method.autoencoder.encoder(teacher_net.forward_features(x)[1]["stage3"])
    expected = 0.0
    for row_s, row_t in zip(s_factor.flatten(1).tolist(), t_factor.flatten(1).tolist()):
        expected += sum(abs(a - b) for a, b in zip(normalised(row_s), normalised(row_t)))
    assert terms["ft"].item() == pytest.approx(7.0 * expected / s_factor[0].numel() / 3, rel=1e-4)
    assert terms["ce"].item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    with pytest.raises(ValueError, match="trained on a 'resnet14' teacher"):
        distill.create("ft", net("resnet8"), net("resnet20"), autoencoder=ae_run)
    with pytest.raises(TypeError, match="needs argument 'autoencoder'"):
        teacher.replace(model="resnet8", method="ft", teacher=teacher)


def test_one_autoencoder_run_serves_several_students(tmp_path, count_trainers):
    teacher = tiny_teacher()
    ae_spec = autoencoder_run(teacher)
    schedule = Schedule(epochs=2, batch_size=8, lr=0.05)
    first = teacher.replace(model="resnet8", method="ft", teacher=teacher, schedule=schedule,
                            method_args={"autoencoder": ae_spec})
    run = runs.train_or_load(first, root=tmp_path, device="cpu")
    assert len(count_trainers) == 3  # teacher, auto-encoder, FT student
    assert all({"train_ce", "train_ft", "test_acc"} <= set(row) for row in run.history)
    runs.train_or_load(first.replace(seed=1), root=tmp_path, device="cpu")
    assert len(count_trainers) == 4  # the second student reuses the teacher and its auto-encoder
    # The frozen paraphraser the student trained with is the part run's, unchanged.
    kept = run.network("autoencoder", device="cpu").state_dict()
    for k, v in runs.train_or_load(ae_spec, root=tmp_path).network("autoencoder", device="cpu").state_dict().items():
        assert torch.equal(v, kept[k]), k
    # A different seed gives a different translator: loading the input run did not reseed the construction.
    a = runs.build_method(first, _arch(teacher), {"autoencoder": runs.train_or_load(ae_spec, root=tmp_path)})
    b = runs.build_method(first.replace(seed=1), _arch(teacher),
                          {"autoencoder": runs.train_or_load(ae_spec, root=tmp_path)})
    assert not torch.equal(a.translator[0].weight, b.translator[0].weight)


def _arch(spec: runs.RunSpec) -> nn.Module:
    return runs.build_model(spec).eval()
