"""The per-sample memory of frozen networks' outputs (kdnb.distill.memory, Method.remembered).

The memory is exact only because a network in eval mode computes each sample on its own: at a given batch size,
its output for an image does not depend on the other images of the batch (the first test checks this bit for bit
on the book's networks; if it ever fails on a machine, that machine's kernels compute a sample differently by
batch and the memory is not exact there). Across batch sizes it may differ in the last bits (a MobileNet's or
VGG's wide classifier), which is why a memory serves only batches of its own size. The others check the
bookkeeping and that a run trained with the memory equals, weights and BatchNorm statistics included, the same
run trained without it.
"""
from __future__ import annotations

import pytest
import torch

from kdnb import distill, models, runs
from kdnb.distill import memory
from kdnb.distill.base import Context
from kdnb.train import Schedule


def frozen(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    model = models.create(name, in_channels=1, **kwargs)
    for module in model.modules():  # running statistics unlike the identity, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval().requires_grad_(False)


@pytest.mark.parametrize("name,kwargs", [("resnet20", {}), ("resnet8", {}), ("mobilenet", {"width": 0.25}),
                                         ("cnn6", {}), ("vgg11-fc", {})])
def test_a_frozen_network_computes_each_sample_independently_of_the_rest_of_its_batch(name, kwargs):
    model = frozen(name, **kwargs)
    images = torch.randn(192, 1, 28, 28, generator=torch.Generator().manual_seed(1))

    def per_sample(order: torch.Tensor) -> torch.Tensor:  # batches of 64, as a run's full batches
        out = torch.empty(192, 10)
        with torch.no_grad():
            for start in range(0, 192, 64):
                index = order[start:start + 64]
                out[index] = model(images[index])
        return out

    reference = per_sample(torch.arange(192))
    for seed in (2, 3):
        assert torch.equal(per_sample(torch.randperm(192, generator=torch.Generator().manual_seed(seed))),
                           reference)


def test_remembered_computes_each_sample_once_and_keeps_the_structure():
    calls = []

    def compute(x):
        calls.append(x.shape[0])
        return x * 2, {"f": x + 1}

    memories: dict = {}
    data = torch.arange(14.0).reshape(7, 2)

    def batch(*index):
        return memory.remembered(memories, "t", data[list(index)], torch.tensor(index), 7, compute)

    first = batch(0, 1, 2)
    batch(3, 4, 5)
    again = batch(5, 0, 3)
    assert calls == [3, 3]  # the third batch was read back
    assert torch.equal(again[0], data[[5, 0, 3]] * 2) and torch.equal(again[1]["f"], data[[5, 0, 3]] + 1)
    assert torch.equal(first[0], data[[0, 1, 2]] * 2)
    batch(6, 0)  # another batch size (an epoch's last batch): computed, never read from the memory
    batch(6, 0)
    assert calls[2:] == [2, 2]
    batch(6, 1, 2)  # a batch of the memory's size with an unseen sample: computed, then stored
    batch(2, 6, 1)
    assert calls[4:] == [3]


def test_without_indices_or_above_the_limit_it_computes_every_time(monkeypatch):
    calls = []

    def compute(x):
        calls.append(1)
        return x

    memories: dict = {}
    x = torch.ones(2, 3)
    for _ in range(2):
        memory.remembered(memories, "t", x, None, None, compute)
    assert len(calls) == 2 and not memories
    monkeypatch.setattr(memory, "LIMIT_BYTES", 8)  # 12 bytes per sample × 4 samples is more
    for _ in range(2):
        memory.remembered(memories, "t", x, torch.tensor([0, 1]), 4, compute)
    assert len(calls) == 4 and memories == {"t": None}


def test_the_method_remembers_only_when_the_trainer_says_the_inputs_are_fixed():
    method = distill.method_class("kd")(frozen("resnet8"), frozen("resnet8"))
    x = torch.randn(4, 1, 28, 28)
    indices = torch.arange(4)
    method.teacher_logits(x, Context(indices=indices, num_samples=4, fixed_inputs=False))
    method.teacher_logits(x, Context.everything())
    assert not method._memories
    logits = method.teacher_logits(x, Context(indices=indices, num_samples=4, fixed_inputs=True))
    assert torch.equal(method._memories["teacher_logits"].read(indices), logits)


TINY = Schedule(epochs=2, batch_size=8, lr=0.05, lr_schedule="constant", checkpoints=(0, 2))


@pytest.mark.parametrize("method", ["kd", "ie_ft", "at"])
def test_a_run_with_the_memory_equals_the_run_without_it(tmp_path, monkeypatch, method):
    teacher = runs.RunSpec("fashion_mnist", "resnet8", Schedule(epochs=1, batch_size=8, lr=0.05),
                           train_per_class=3, test_per_class=1, augment=None)
    args = {}
    if method == "ie_ft":
        args["autoencoder"] = runs.part(teacher, "autoencoder", Schedule(epochs=1, batch_size=8, lr=0.1,
                                                                         lr_schedule="constant"))
    spec = runs.RunSpec("fashion_mnist", "resnet8", TINY, method=method, method_args=args, teacher=teacher,
                        train_per_class=3, test_per_class=1, augment=None)
    reads = []
    read = memory.SampleMemory.read
    monkeypatch.setattr(memory.SampleMemory, "read", lambda self, indices: reads.append(1) or read(self, indices))
    with_memory = runs.train_or_load(spec, root=tmp_path / "with", device="cpu")
    assert reads, "the second epoch should read the teacher's outputs back"
    monkeypatch.setattr(memory, "LIMIT_BYTES", 0)  # nothing is kept: the teacher runs every step
    reads.clear()
    without = runs.train_or_load(spec, root=tmp_path / "without", device="cpu")
    assert not reads
    a = torch.load(with_memory.path / "final.pt", weights_only=True)
    b = torch.load(without.path / "final.pt", weights_only=True)
    flat_a, flat_b = _tensors(a), _tensors(b)
    assert flat_a.keys() == flat_b.keys() and any("running_mean" in k for k in flat_a)
    assert all(torch.equal(flat_a[k], flat_b[k]) for k in flat_a)


def _tensors(state, prefix: str = "") -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if isinstance(value, dict):
            out.update(_tensors(value, f"{prefix}{key}."))
        elif isinstance(value, torch.Tensor):
            out[prefix + key] = value
    return out
