"""The core pieces the Part II methods stand on: every trainable parameter in exactly one update, sample indices
through the Context, a frozen pre-trained child, a part trained as a run of its own, the teacher's features."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdnb import distill, models, runs, storage
from kdnb.distill import Context, Method, Update
from kdnb.distill.base import check_updates
from kdnb.train import Schedule, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def net(name: str = "resnet8", seed: int = 0) -> models.FeatureModel:
    torch.manual_seed(seed)
    return models.create(name, num_classes=10, in_channels=1)


def tiny_spec(**changes) -> runs.RunSpec:
    values = dict(train_per_class=3, test_per_class=2)
    values.update(changes)
    return runs.RunSpec("fashion_mnist", "resnet8", Schedule(epochs=1, batch_size=8, lr=0.05), **values)


# ------------------------------------------------------------------------------------- update coverage
class WithExtra(distill.DML):
    """DML plus a module that neither update lists: it would never train."""

    def __init__(self, student, teacher=None, **kwargs):
        super().__init__(student, teacher, **kwargs)
        self.extra = nn.Linear(3, 3)


class Overlapping(distill.DML):
    def updates(self):
        return [Update("all"), Update("peer", ("peer",))]


def test_a_parameter_in_no_update_is_an_error_naming_it():
    method = WithExtra(net(), peer="resnet8")
    with pytest.raises(ValueError, match=r"in no update, so never trained: extra .*student=\['student'\]"):
        check_updates(method)
    spec = tiny_spec()
    with pytest.raises(ValueError, match="extra"):  # the trainer checks before anything trains
        Trainer(method, runs.batches(spec, "train", "cpu"), spec.schedule, device="cpu")


def test_a_parameter_in_two_updates_is_an_error_naming_both():
    with pytest.raises(ValueError, match=r"more than one update: peer\.\S+ \(all, peer\)"):
        check_updates(Overlapping(net(), peer="resnet8"))


def test_frozen_parameters_need_no_update_and_the_shipped_methods_pass():
    method = WithExtra(net(), peer="resnet8")
    method.extra.requires_grad_(False)
    check_updates(method)  # a parameter that never trains needs no optimiser
    check_updates(distill.create("dml", net()))
    check_updates(distill.create("kd", net(), net("resnet14")))


# ------------------------------------------------------------------------------------- sample indices
class Recorder(Method):
    """CE, recording what the context says about each batch."""

    def __init__(self, student, teacher=None):
        super().__init__(student, teacher)
        self.seen = []

    def forward(self, x, y, context=None):
        context = context or Context.everything()
        self.seen.append((x.detach().clone(), y.clone(), context.indices, context.num_samples,
                          context.dataset_labels))
        logits = self.student(x)
        return logits, {"ce": F.cross_entropy(logits, y)}


def test_context_carries_each_batchs_sample_indices_and_the_training_set():
    spec = tiny_spec(augment=None)
    schedule = Schedule(epochs=2, batch_size=8, lr=0.05)
    batches = runs.batches(spec, "train", "cpu")
    method = Recorder(net())
    Trainer(method, batches, schedule, seed=3, device="cpu").fit()
    assert len(method.seen) == 2 * len(batches)
    epoch_indices = [[], []]
    for step, (x, y, indices, n, labels) in enumerate(method.seen):
        assert n == batches.num_samples == 30
        assert torch.equal(labels, batches.labels)
        assert torch.equal(batches.images[indices], x)  # the very samples of the batch (no augmentation)
        assert torch.equal(batches.labels[indices], y)
        epoch_indices[step // len(batches)].append(indices)
    for indices in epoch_indices:  # each epoch visits every sample once
        assert sorted(torch.cat(indices).tolist()) == list(range(30))
    assert not torch.equal(torch.cat(epoch_indices[0]), torch.cat(epoch_indices[1]))  # reshuffled
    assert Context.everything().indices is None


# ------------------------------------------------------------------------------------- frozen child
class WithFrozenPiece(Method):
    """CE plus a term through a frozen, pre-trained piece with BatchNorm (an auto-encoder, say)."""

    def __init__(self, student, teacher=None):
        super().__init__(student, teacher)
        torch.manual_seed(5)
        piece = nn.Sequential(nn.Conv2d(64, 4, 1), nn.BatchNorm2d(4))
        self.hold_frozen("piece", piece)
        self.modes = []

    def forward(self, x, y, context=None):
        logits, features = self.student.forward_features(x)
        self.modes.append(self.piece.training)
        code = self.piece(features["stage3"])
        return logits, {"ce": F.cross_entropy(logits, y), "code": code.pow(2).mean()}


def test_a_frozen_child_never_trains_keeps_its_statistics_moves_and_is_saved():
    spec = tiny_spec()
    method = WithFrozenPiece(net())
    before = {k: v.clone() for k, v in method.piece.state_dict().items()}
    student_before = {k: v.clone() for k, v in method.student.state_dict().items()}
    Trainer(method, runs.batches(spec, "train", "cpu"), spec.schedule, device="cpu").fit()
    assert method.modes and not any(method.modes)  # eval mode at every step, though the method trains
    for k, v in method.piece.state_dict().items():
        assert torch.equal(before[k], v), k  # weights and BatchNorm running statistics alike
    assert any(not torch.equal(v, method.student.state_dict()[k]) for k, v in student_before.items())
    assert all(not p.requires_grad for p in method.piece.parameters())
    assert any(k.startswith("piece.") for k in method.state_dict())  # saved and resumed with the run
    method.train()
    assert not method.piece.training and method.student.training
    method.to(torch.float64)
    assert method.piece[0].weight.dtype == torch.float64  # a registered child moves with the method


# ------------------------------------------------------------------------------------- a part run
class LinearReadout(Method):
    """A part: a 1x1 readout of the teacher's stage-3 map that reconstructs its channel mean."""

    requires_teacher = True
    part = True

    def __init__(self, student, teacher=None, width: int = 4):
        super().__init__(student, teacher)
        self.readout = nn.Conv2d(64, width, 1)

    def forward(self, x, y, context=None):
        with torch.no_grad():
            feature = self.teacher_features(x)[1]["stage3"]
        guess = self.readout(feature).mean(1)
        return None, {"readout": (guess - feature.mean(1)).pow(2).mean()}


class UsesReadout(Method):
    """A student that takes the part run as an input and holds its piece frozen."""

    def __init__(self, student, teacher=None, readout=None):
        super().__init__(student, teacher)
        self.hold_frozen("readout", readout.network("readout", device="cpu"))

    def forward(self, x, y, context=None):
        logits = self.student(x)
        return logits, {"ce": F.cross_entropy(logits, y)}


def test_a_part_run_trains_its_piece_alone_and_serves_other_runs(tmp_path, monkeypatch, count_trainers):
    monkeypatch.setitem(distill.METHODS, "test_readout", LinearReadout)
    monkeypatch.setitem(distill.METHODS, "test_uses_readout", UsesReadout)
    teacher = tiny_spec()
    piece = runs.part(teacher, "test_readout", Schedule(epochs=2, batch_size=8, lr=0.05, lr_schedule="constant"),
                      {"width": 2})
    assert (piece.model, piece.teacher, piece.train_per_class) == ("resnet8", teacher, 3)
    run = runs.train_or_load(piece, root=tmp_path, device="cpu")
    assert len(count_trainers) == 2  # the teacher, then the part
    final = run.final
    assert "train_readout" in final and not any(k.endswith("acc") for k in final)  # nothing classified/evaluated
    saved = storage.load_torch(run.path / "final.pt")
    assert saved["student"] is None and set(saved["extras"]) == {"readout.weight", "readout.bias"}
    readout = run.network("readout", device="cpu")
    assert torch.equal(readout.weight, saved["extras"]["readout.weight"]) and readout.out_channels == 2
    with pytest.raises(ValueError, match="part, not a student"):
        run.model()
    student = teacher.replace(model="resnet8", method="test_uses_readout", method_args={"readout": piece}, seed=1)
    used = runs.train_or_load(student, root=tmp_path, device="cpu")
    assert len(count_trainers) == 3  # the part was reused, not retrained
    assert torch.equal(used.network("readout", device="cpu").weight, readout.weight)
    with pytest.raises(ValueError, match="trains a student"):
        runs.part(teacher, "kd", Schedule(epochs=1))
    with pytest.raises(ValueError, match="names its teacher's network"):
        piece.replace(model="resnet14").validate()


def test_teacher_features_run_without_gradient():
    student, teacher = net("resnet8"), net("resnet14", 1)
    teacher.requires_grad_(True)
    method = distill.create("kd", student, teacher)
    x = torch.randn(2, 1, 28, 28)
    logits, features = method.teacher_features(x)
    reference_logits, reference = teacher.eval().forward_features(x)
    assert torch.equal(logits, reference_logits) and torch.equal(features["stage3"], reference["stage3"])
    assert not features["stage3"].requires_grad and not logits.requires_grad
