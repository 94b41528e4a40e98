"""IE-DML (Huang et al. §3.3): two IE-KD processes in opposite directions replace DML's KL; the four steps
(predict both, update Θ1, predict both again, update Θ2) written out by hand; each network's (and auto-encoder's)
BatchNorm statistics advance once per step; resume of the two-update run equals an uninterrupted one."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_resume_equals_uninterrupted
from kdnb import distill, runs
from kdnb.distill.factor import reconstruction_loss
from kdnb.train import Schedule, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_spec(epochs: int = 1, **changes) -> runs.RunSpec:
    schedule = changes.pop("schedule", None) or Schedule(epochs=epochs, batch_size=16, lr=0.05)
    return runs.RunSpec("fashion_mnist", "resnet8", schedule, method="ie_dml", method_args={"peer": "resnet8"},
                        train_per_class=4, test_per_class=2, **changes)


def make(spec: runs.RunSpec) -> distill.IEDML:
    return runs.build_method(spec, None, {})


def sgd(params, schedule: Schedule) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=schedule.lr, momentum=schedule.momentum, nesterov=True,
                           weight_decay=schedule.weight_decay)


def target_without_side_effects(network, autoencoder, layer, x):
    """The other network's factor: a training-mode forward whose BatchNorm buffers are put back as they were."""
    saved = [{k: b.clone() for k, b in m.named_buffers()} for m in (network, autoencoder)]
    with torch.no_grad():
        factor = autoencoder.encoder(network.forward_features(x)[1][layer])
    for module, buffers in zip((network, autoencoder), saved):
        for k, b in module.named_buffers():
            b.copy_(buffers[k])
    return factor


def test_no_kl_term_and_one_process_per_direction():
    method = make(tiny_spec())
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    _, terms = method.update_losses("student", x, y)
    assert set(terms) == {"ce", "rec", "inh", "exp"}  # Eq. 5: goal, reconstruction, inheritance, exploration
    _, terms = method.update_losses("peer", x, y)
    assert set(terms) == {"peer_ce", "peer_rec", "peer_inh", "peer_exp"}  # Eq. 6
    assert [u.name for u in method.updates()] == ["student", "peer"]
    # Each network's encoders map its parts to the *other* network's factor width.
    assert method.encoders["inherit"][-3].out_channels == method.peer_autoencoder.factor_channels


def test_four_steps_by_hand_and_batchnorm_once_per_step():
    spec = tiny_spec(schedule=Schedule(epochs=1, batch_size=16, lr=0.05, lr_schedule="constant"))
    method = make(spec)
    hand = copy.deepcopy(method)
    batches = runs.batches(spec, "train", "cpu")
    Trainer(method, batches, spec.schedule, seed=spec.seed, device="cpu").fit()

    sides = {
        "student": (hand.student, hand.layer, hand.split, hand.encoders, hand.autoencoder,
                    hand.peer, hand.peer_layer, hand.peer_autoencoder),
        "peer": (hand.peer, hand.peer_layer, hand.peer_split, hand.peer_encoders, hand.peer_autoencoder,
                 hand.student, hand.layer, hand.autoencoder),
    }
    optimizers = {name: sgd([p for m in (side[0], side[3], side[4]) for p in m.parameters()], spec.schedule)
                  for name, side in sides.items()}
    hand.train()
    steps = 0
    for x, y in batches.batches(0, spec.seed):
        for name in ("student", "peer"):  # (a)+(b), then (c)+(d): a fresh forward of both before each update
            net, layer, split, encoders, own_ae, other, other_layer, other_ae = sides[name]
            logits, features = net.forward_features(x)
            teacher_factor = target_without_side_effects(other, other_ae, other_layer, x)
            inh, exp = split(features[layer])
            l_inh, l_exp = distill.ie_losses(encoders["inherit"](inh), encoders["explore"](exp), teacher_factor)
            f = features[layer].detach()
            loss = (F.cross_entropy(logits, y) + 0.8 * reconstruction_loss(f, own_ae(f)[1]) + 50 * l_inh
                    + 50 * l_exp)
            optimizers[name].zero_grad()
            loss.backward()
            optimizers[name].step()
        steps += 1
    for k, v in method.state_dict().items():
        assert torch.allclose(v.float(), hand.state_dict()[k].float(), atol=1e-5, rtol=1e-4), k
    counters = {k: int(v) for k, v in method.state_dict().items() if k.endswith("num_batches_tracked")}
    for prefix in ("student.", "peer.", "autoencoder.", "peer_autoencoder.", "encoders.", "peer_encoders."):
        assert any(k.startswith(prefix) for k in counters), prefix
    assert set(counters.values()) == {steps}  # every BN advanced once per step, in its own network's update


def test_resume_of_the_two_update_run_equals_uninterrupted(tmp_path):
    spec = tiny_spec(epochs=3)

    def trainer(run_dir, **kwargs):
        return Trainer(make(spec), runs.batches(spec, "train", "cpu"), spec.schedule, seed=spec.seed,
                       device="cpu", run_dir=run_dir, **kwargs)

    assert_resume_equals_uninterrupted(trainer, tmp_path)


def test_run_records_both_networks_and_their_splits(tmp_path):
    run = runs.train_or_load(tiny_spec(), root=tmp_path, device="cpu")
    assert {"test_acc", "peer_test_acc", "train_inh", "train_peer_inh", "train_rec", "train_peer_rec"} <= set(run.final)
    assert "train_kl" not in run.final
    split, peer_split = run.network("split", device="cpu"), run.network("peer_split", device="cpu")
    assert split.inherit.numel() == peer_split.inherit.numel() == 32
    with pytest.raises(ValueError, match="no teacher"):
        distill.create("ie_dml", runs.build_model(tiny_spec()), runs.build_model(tiny_spec()))
