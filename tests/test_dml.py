"""Deep mutual learning: the multi-update path of the trainer (two networks, two optimisers, alternating)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_resume_equals_uninterrupted
from kdnb import distill, runs
from kdnb.distill.base import Stage
from kdnb.distill.kd import kd_divergence
from kdnb.train import Schedule, Trainer


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_spec(epochs: int = 2, **changes) -> runs.RunSpec:
    schedule = changes.pop("schedule", None) or Schedule(epochs=epochs, batch_size=16, lr=0.05)
    return runs.RunSpec("fashion_mnist", "resnet8", schedule, method="dml", method_args={"peer": "resnet8"},
                        train_per_class=4, test_per_class=2, **changes)


def make_dml(spec: runs.RunSpec) -> distill.DML:
    return distill.create("dml", runs.build_model(spec), None, **dict(spec.method_args))


def sgd(params, schedule: Schedule) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=schedule.lr, momentum=schedule.momentum, nesterov=True,
                           weight_decay=schedule.weight_decay)


def _prediction_without_side_effects(network: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The network's training-mode prediction used as a target: its buffers (BN running statistics) are put
    back exactly as they were, because this is not a training pass of that network."""
    buffers = {name: b.clone() for name, b in network.named_buffers()}
    with torch.no_grad():
        logits = network(x)
    for name, b in network.named_buffers():
        b.copy_(buffers[name])
    return logits


def test_alternating_updates_match_algorithm_1_by_hand():
    """One epoch of the trainer equals Zhang et al. (2018), Algorithm 1, written out here: per batch, compute
    both predictions and update the student; recompute both and update the peer. Each network's BatchNorm
    statistics advance in its own update only (once per batch), never when it merely provides a target."""
    spec = tiny_spec(epochs=1, schedule=Schedule(epochs=1, batch_size=16, lr=0.05, lr_schedule="constant"))
    method = make_dml(spec)
    by_hand = copy.deepcopy(method)
    batches = runs.batches(spec, "train", "cpu")
    Trainer(method, batches, spec.schedule, seed=spec.seed, device="cpu").fit()

    student, peer = by_hand.student, by_hand.peer
    opt_student, opt_peer = sgd(student.parameters(), spec.schedule), sgd(peer.parameters(), spec.schedule)
    student.train(), peer.train()
    steps = 0
    for x, y in batches.batches(0, spec.seed):
        for net, other, opt in ((student, peer, opt_student), (peer, student, opt_peer)):
            logits = net(x)
            target = _prediction_without_side_effects(other, x)
            loss = F.cross_entropy(logits, y) + kd_divergence(logits, target, 1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
        steps += 1
    for name, mine in method.state_dict().items():
        theirs = by_hand.state_dict()[name]
        assert torch.allclose(mine.float(), theirs.float(), atol=1e-6, rtol=1e-5), name
    # Once per batch, not twice: the BN batch counters equal the number of steps.
    counters = [v for k, v in method.state_dict().items() if k.endswith("num_batches_tracked")]
    assert counters and all(int(c) == steps for c in counters)


def test_simultaneous_update_would_differ():
    """Guard for the test above: updating both from the same forward pass gives other weights."""
    spec = tiny_spec(epochs=1, schedule=Schedule(epochs=1, batch_size=16, lr=0.05, lr_schedule="constant"))
    method = make_dml(spec)
    simultaneous = copy.deepcopy(method)
    batches = runs.batches(spec, "train", "cpu")
    Trainer(method, batches, spec.schedule, seed=spec.seed, device="cpu").fit()
    opt = sgd(simultaneous.parameters(), spec.schedule)
    simultaneous.train()
    for x, y in batches.batches(0, spec.seed):
        _, terms = simultaneous(x, y)
        opt.zero_grad()
        sum(terms.values()).backward()
        opt.step()
    peer_a, peer_b = method.peer.state_dict(), simultaneous.peer.state_dict()
    assert any(not torch.allclose(peer_a[k].float(), peer_b[k].float()) for k in peer_a)


def test_dml_resumes_both_optimizers(tmp_path):
    spec = tiny_spec(epochs=3)

    def trainer(run_dir, **kwargs):
        return Trainer(make_dml(spec), runs.batches(spec, "train", "cpu"), spec.schedule, seed=spec.seed,
                       device="cpu", run_dir=run_dir, **kwargs)

    assert_resume_equals_uninterrupted(trainer, tmp_path)


def test_stage_can_freeze_the_peer():
    class FrozenPeer(distill.DML):
        def stages(self, epochs):
            return [Stage("student only", epochs, frozen=("peer",))]

    spec = tiny_spec(epochs=1)
    method = FrozenPeer(runs.build_model(spec), peer="resnet8")
    before = copy.deepcopy(method.peer.state_dict())
    student_before = copy.deepcopy(method.student.state_dict())
    Trainer(method, runs.batches(spec, "train", "cpu"), spec.schedule, seed=0, device="cpu").fit()
    after = method.peer.state_dict()
    # Frozen means frozen: weights and buffers (BN running statistics) alike.
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert method.peer.training and all(p.requires_grad for p in method.peer.parameters()), "not restored"
    assert any(not torch.equal(v, method.student.state_dict()[k]) for k, v in student_before.items())


def test_train_or_load_records_both_networks(tmp_path):
    spec = tiny_spec(epochs=1)
    run = runs.train_or_load(spec, root=tmp_path, device="cpu")
    assert {"test_acc", "peer_test_acc", "train_ce", "train_kl", "train_peer_ce", "train_peer_kl"} <= set(run.final)
    peer = run.network("peer", device="cpu")
    saved = runs.storage.load_torch(run.path / "final.pt")["extras"]
    for k, v in peer.state_dict().items():
        assert torch.equal(v, saved[f"peer.{k}"]), k
    batches = runs.batches(spec, "test", "cpu")
    from kdnb.train import evaluate
    assert evaluate(peer, batches.batches(0, 0))["acc"] == pytest.approx(run.final["peer_test_acc"])
    with pytest.raises(ValueError, match="no network 'nope'.*peer"):
        run.network("nope")


def test_dml_takes_no_teacher():
    spec = tiny_spec()
    with pytest.raises(ValueError, match="no teacher"):
        distill.create("dml", runs.build_model(spec), runs.build_model(spec))


def test_kl_weight_scales_the_mutual_term_only():
    """Gu et al. (§5.2) weigh DML's KL term λ = 0.1: the ``weight`` argument multiplies it and nothing else."""
    from kdnb import models
    torch.manual_seed(0)
    student = models.create("resnet8", num_classes=10, in_channels=1)
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    full, tenth = distill.create("dml", student, weight=1.0), distill.create("dml", student, weight=0.1)
    tenth.peer.load_state_dict(full.peer.state_dict())
    full.eval(), tenth.eval()
    _, with_full = full.update_losses("student", x, y)
    _, with_tenth = tenth.update_losses("student", x, y)
    assert with_full["kl"] > 0
    assert torch.allclose(with_tenth["kl"], 0.1 * with_full["kl"])
    assert torch.equal(with_tenth["ce"], with_full["ce"])


def test_a_peer_of_the_students_architecture_gets_the_students_model_options():
    """A dropout (or narrowed) student's peer is the same network: same options, same parameter shapes."""
    spec = tiny_spec(model_args={"dropout": 0.3})
    method = make_dml(spec)
    assert method.peer.config == method.student.config and method.peer.config["dropout"] == 0.3
    x = torch.randn(4, 1, 28, 28)
    method.peer.train()
    assert not torch.equal(method.peer(x), method.peer(x)), "the peer drops nothing in training mode"
    method.peer.eval()
    assert torch.equal(method.peer(x), method.peer(x))
    other = distill.create("dml", runs.build_model(spec), None, peer="cnn6")  # another family: its defaults
    assert "dropout" not in other.peer.config or other.peer.config["dropout"] == 0.0
