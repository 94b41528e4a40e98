"""CRD (Tian et al. 2020) with its memory bank: the NCE loss, the scores and the momentum update by hand, negatives
from other classes only, the whole loss from the networks, training with the trainer's sample indices, and a
resume that restores the memory (sized at the first step) exactly."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_resume_equals_uninterrupted
from kdnb import distill, models, runs
from kdnb.distill import Context
from kdnb.distill.contrastive import ContrastMemory, NegativeSampler, nce_loss
from kdnb.train import Schedule, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def net(name: str, seed: int = 0) -> models.FeatureModel:
    torch.manual_seed(seed)
    return models.create(name, num_classes=10, in_channels=1)


def test_nce_loss_by_hand():
    torch.manual_seed(0)
    p = torch.rand(3, 5) * 0.01
    n, k = 50, 4
    expected = 0.0
    for row in p.tolist():
        expected -= math.log(row[0] / (row[0] + k / n + 1e-7))
        expected -= sum(math.log((k / n) / (v + k / n + 1e-7)) for v in row[1:])
    assert nce_loss(p, n).item() == pytest.approx(expected / 3, rel=1e-5)


def test_negatives_come_uniformly_from_other_classes():
    labels = torch.tensor([0, 1, 2, 1, 0, 2, 2, 1, 0, 2])
    sampler = NegativeSampler(labels)
    assert sampler.distinct == 10 - 4
    torch.manual_seed(1)
    anchors = torch.tensor([0, 1, 2, 6])
    negatives = sampler(anchors, 6000)
    for anchor, row in zip(anchors.tolist(), negatives.tolist()):
        others = [i for i in range(10) if labels[i] != labels[anchor]]
        assert set(row) == set(others)  # never the anchor's class, every other sample reached
        expected = 6000 / len(others)
        assert all(abs(row.count(i) - expected) < 5 * math.sqrt(expected) for i in others)  # uniform


def test_memory_scores_and_momentum_update_by_hand():
    torch.manual_seed(2)
    memory = ContrastMemory(dim=4, temperature=0.5, momentum=0.25)
    memory.ensure(6)
    assert memory.student.shape == (6, 4) and float(memory.student.abs().max()) <= 1 / math.sqrt(4 / 3)
    student_memory, teacher_memory = memory.student.clone(), memory.teacher.clone()
    v_s, v_t = F.normalize(torch.randn(2, 4), dim=1), F.normalize(torch.randn(2, 4), dim=1)
    index = torch.tensor([[3, 0, 5], [1, 2, 2]])
    out_s, out_t = memory.scores(v_s, v_t, index)
    raw_s = [[math.exp(sum(a * b for a, b in zip(teacher_memory[j].tolist(), v_s[i].tolist())) / 0.5)
              for j in index[i].tolist()] for i in range(2)]
    raw_t = [[math.exp(sum(a * b for a, b in zip(student_memory[j].tolist(), v_t[i].tolist())) / 0.5)
              for j in index[i].tolist()] for i in range(2)]
    z_s, z_t = sum(map(sum, raw_s)) / 6 * 6, sum(map(sum, raw_t)) / 6 * 6  # mean over the B(K+1) scores, × N
    assert memory.z.tolist() == pytest.approx([z_s, z_t], rel=1e-5)
    assert torch.allclose(out_s, torch.tensor(raw_s) / z_s, rtol=1e-5)
    assert torch.allclose(out_t, torch.tensor(raw_t) / z_t, rtol=1e-5)
    memory.update(v_s, v_t, torch.tensor([3, 1]))
    for i, sample in enumerate((3, 1)):
        mixed = [0.25 * a + 0.75 * b for a, b in zip(student_memory[sample].tolist(), v_s[i].tolist())]
        norm = math.sqrt(sum(v * v for v in mixed))
        assert memory.student[sample].tolist() == pytest.approx([v / norm for v in mixed], rel=1e-5)
    untouched = [0, 2, 4, 5]
    assert torch.equal(memory.student[untouched], student_memory[untouched])
    z_before = memory.z.clone()
    memory.scores(v_s, v_t, index)
    assert torch.equal(memory.z, z_before)  # Z is fixed at the first batch


def test_crd_loss_from_the_networks():
    student, teacher = net("resnet8"), net("resnet14", 1)
    method = distill.create("crd", student, teacher, nce_k=3, dim=8).eval()
    labels = torch.arange(20) % 10
    x, indices = torch.randn(4, 1, 28, 28), torch.tensor([0, 5, 11, 19])
    y = labels[indices]
    context = Context(indices=indices, num_samples=20, dataset_labels=labels)
    torch.manual_seed(3)
    method.memory.ensure(20)
    memory = ContrastMemory(8, 0.07, 0.5)
    memory.load_state_dict(method.memory.state_dict())  # resized to 20 entries by the load
    torch.manual_seed(4)
    logits, terms = method(x, y, context)
    assert method.k_used == 3
    torch.manual_seed(4)
    negatives = NegativeSampler(labels)(indices, 3)
    assert not bool((labels[negatives] == y[:, None]).any())
    v_s = method.embed_student(student.forward_features(x)[1]["pooled"])
    v_t = method.embed_teacher(teacher.forward_features(x)[1]["pooled"])
    out_s, out_t = memory.scores(v_s, v_t, torch.cat([indices[:, None], negatives], 1))
    expected = 0.8 * (nce_loss(out_s, 20) + nce_loss(out_t, 20))
    assert terms["crd"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms["ce"].item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    with pytest.raises(ValueError, match="sample indices"):
        method(x, y)


def tiny_spec(epochs: int) -> runs.RunSpec:
    return runs.RunSpec("fashion_mnist", "resnet8", Schedule(epochs=epochs, batch_size=16, lr=0.05),
                        train_per_class=4, test_per_class=2)


def trainer(spec, run_dir=None, **kwargs) -> Trainer:
    torch.manual_seed(0)
    method = distill.create("crd", runs.build_model(spec), net("resnet14", 1), nce_k=64)
    return Trainer(method, runs.batches(spec, "train", "cpu"), spec.schedule, seed=spec.seed, device="cpu",
                   run_dir=run_dir, **kwargs)


def test_crd_trains_and_its_resume_restores_the_memory(tmp_path):
    spec = tiny_spec(epochs=3)
    # The resumed run is a fresh method: an empty memory, sized by the load.
    reference = assert_resume_equals_uninterrupted(lambda run_dir, **kw: trainer(spec, run_dir, **kw), tmp_path)
    history = reference.history
    assert all({"train_ce", "train_crd"} <= set(row) for row in history)
    assert reference.method.memory.student.shape == (40, 128) and reference.method.k_used == 36
    assert bool((reference.method.memory.z > 0).all())
