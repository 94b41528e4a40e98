"""The contracts Parts I–III stand on (issue 5): freezing, the prefix rule, stage-aware methods, run specs with
bound arguments and runs as inputs, cache identity, bugs versus damage, step checkpoints and series, helper
forwards that leave BatchNorm alone, deterministic kernels and no per-step device reads.

Every comparison goes through the real :class:`~kdnb.train.Trainer` and the real run cache, buffers included.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdnb import book_layout, distill, modules, probes, runs, storage
from kdnb.distill import Context, Stage
from kdnb.runs import RunSpec
from kdnb.train import NonFiniteLoss, Schedule, Trainer, epoch_seed

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_spec(epochs: int = 2, per_class: int = 8, **changes) -> RunSpec:
    schedule = changes.pop("schedule", None) or Schedule(epochs=epochs, batch_size=16, lr=0.05)
    return RunSpec("fashion_mnist", changes.pop("model", "resnet8"), schedule, train_per_class=per_class,
                   test_per_class=4, **changes)


def trainer_for(method, spec: RunSpec, evaluation: bool = True, **kwargs) -> Trainer:
    return Trainer(method, runs.batches(spec, "train", "cpu"), spec.schedule, seed=spec.seed,
                   evaluation=runs.batches(spec, "test", "cpu") if evaluation else None, device="cpu", **kwargs)


def state_under(module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """Parameters and buffers under ``prefix``, copied."""
    return {k: v.detach().clone() for k, v in module.state_dict().items() if modules.under(k, prefix)}


@pytest.fixture
def register(monkeypatch):
    """Register a method class under a name for one test."""
    def add(name: str, cls: type) -> type:
        monkeypatch.setitem(distill.METHODS, name, cls)
        return cls
    return add


# -------------------------------------------------------------------------------- 1. frozen means frozen
class DropoutNet(nn.Module):
    """A small student with BatchNorm and dropout in the part that gets frozen."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.body(x))


class FreezeBodyFirst(distill.CE):
    """Stage 1 freezes the body; records what the frozen part looks like at every step."""

    def __init__(self, student):
        super().__init__(student)
        self.seen = []

    def stages(self, epochs):
        return [Stage("head only", 1, frozen=("student.body",)), Stage("all")]

    def forward(self, x, y, context=None):
        if context is not None and context.stage.name == "head only":
            body = self.student.body
            self.seen.append({
                "modes": [m.training for m in body.modules()],
                "requires_grad": [p.requires_grad for p in body.parameters()],
                "grads": [p.grad is None for p in body.parameters()],
                "same_twice": torch.equal(body(x), body(x)),  # dropout off
            })
        return super().forward(x, y, context)


def test_frozen_part_keeps_every_parameter_and_buffer_and_is_restored(tmp_path):
    spec = tiny_spec(schedule=Schedule(epochs=2, batch_size=16, lr=0.05, checkpoints=(0, 1, 2)))
    torch.manual_seed(0)
    method = FreezeBodyFirst(DropoutNet())
    trainer = trainer_for(method, spec, run_dir=tmp_path)
    trainer.fit()
    at = {e: storage.load_torch(trainer.checkpoint_path(e))["student"] for e in (0, 1, 2)}
    body = [k for k in at[0] if k.startswith("body.")]
    assert any("running_mean" in k for k in body) and any("num_batches_tracked" in k for k in body)
    for k in body:  # parameters *and* BN buffers untouched during the frozen stage
        assert torch.equal(at[0][k], at[1][k]), f"frozen {k} changed in stage 1"
    assert any(not torch.equal(at[0][k], at[1][k]) for k in at[0] if k.startswith("head.")), "head did not train"
    for k in ("body.1.weight", "body.2.running_mean", "body.2.num_batches_tracked"):
        assert not torch.equal(at[1][k], at[2][k]), f"{k} did not train once unfrozen"
    assert method.seen and all(not any(s["modes"]) for s in method.seen), "frozen modules must run in eval mode"
    assert all(not any(s["requires_grad"]) and all(s["grads"]) for s in method.seen), "frozen params got grad"
    assert all(s["same_twice"] for s in method.seen), "dropout inside the frozen part must be off"
    # Restored afterwards: trainable, and in whatever mode the method was left.
    assert all(p.requires_grad for p in method.parameters())
    assert method.student.body[4].training == method.training


def test_frozen_context_manager_restores_on_error():
    net = DropoutNet().train()
    with pytest.raises(RuntimeError):
        with modules.frozen(net, ["body"]):
            assert not net.body.training and not net.body[1].weight.requires_grad
            raise RuntimeError("boom")
    assert net.body.training and net.body[1].weight.requires_grad


# ------------------------------------------------------------------------------------- 2. one prefix rule
def test_prefix_names_a_module_and_its_children_only():
    assert modules.under("student.stem.0.weight", "student")
    assert modules.under("student", "student")
    assert not modules.under("student_inherit.weight", "student")
    assert not modules.under("student.stem10.weight", "student.stem1")
    assert modules.under("anything", "")


class WithInherit(distill.CE):
    """An extra module whose name starts with the student's: freezing "student" must not freeze it."""

    def __init__(self, student):
        super().__init__(student)
        self.student_inherit = nn.Linear(10, 10)

    def forward(self, x, y, context=None):
        logits, terms = super().forward(x, y, context)
        return logits, {**terms, "inherit": F.cross_entropy(self.student_inherit(logits), y)}

    def stages(self, epochs):
        return [Stage("extra only", epochs, frozen=("student",))]


def test_freezing_student_leaves_student_inherit_trainable():
    spec = tiny_spec(epochs=1)
    method = WithInherit(runs.build_model(spec))
    before = copy.deepcopy(method.state_dict())
    trainer_for(method, spec).fit()
    after = method.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("student."))
    assert not torch.equal(before["student_inherit.weight"], after["student_inherit.weight"])


def test_unknown_frozen_prefix_fails_before_training():
    class Typo(distill.CE):
        def stages(self, epochs):
            return [Stage("x", epochs, frozen=("student.stemm",))]

    spec = tiny_spec(epochs=1)
    with pytest.raises(ValueError, match="student.stemm"):
        trainer_for(Typo(runs.build_model(spec)), spec)


# -------------------------------------------------------------------------------- 3. stage-aware methods
class CountingTeacher(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


class WarmupThenKD(distill.KD):
    def stages(self, epochs):
        return [Stage("ce warm-up", 1, terms=("ce",)), Stage("kd")]


def test_ce_only_stage_never_runs_the_teacher():
    spec = tiny_spec(epochs=2)
    teacher = CountingTeacher(runs.build_model(spec.replace(seed=5)))
    calls = []
    method = WarmupThenKD(runs.build_model(spec), teacher)
    trainer_for(method, spec, evaluation=False, on_epoch_end=lambda m: calls.append(teacher.calls)).fit()
    assert calls[0] == 0, "the teacher ran during the CE-only stage"
    assert calls[1] == 5  # 80 images / 16: once per step of the KD stage


class Recorder(distill.CE):
    """Records the context of every step."""

    def __init__(self, student, stages=None):
        super().__init__(student)
        self._stages = stages
        self.contexts: list[Context] = []

    def stages(self, epochs):
        return self._stages(epochs) if self._stages else super().stages(epochs)

    def forward(self, x, y, context=None):
        self.contexts.append(context)
        return super().forward(x, y, context)


def test_lr_schedule_runs_over_the_whole_run_unless_a_stage_restarts_it():
    spec = tiny_spec(schedule=Schedule(epochs=4, batch_size=16, lr=0.1, milestones=(0.5, 0.75)))
    one = Recorder(runs.build_model(spec))
    trainer_for(one, spec, evaluation=False).fit()
    two = Recorder(runs.build_model(spec), lambda e: [Stage("warm-up", 1), Stage("main")])
    trainer_for(two, spec, evaluation=False).fit()
    lrs = [c.lr for c in one.contexts]
    assert len(lrs) == 20 and lrs == [c.lr for c in two.contexts]
    assert lrs[:10] == [0.1] * 10 and lrs[10] == pytest.approx(0.01) and lrs[-1] == pytest.approx(0.001)
    # The context says where training is.
    c = two.contexts[7]
    assert (c.stage.name, c.epoch, c.step, c.global_step, c.progress) == ("main", 1, 2, 7, 7 / 20)
    assert c.stage_progress == pytest.approx(2 / 15)

    restarted = Recorder(runs.build_model(spec), lambda e: [Stage("pre", 2, restart_schedule=True),
                                                           Stage("main", restart_schedule=True)])
    trainer_for(restarted, spec, evaluation=False).fit()
    r = [c.lr for c in restarted.contexts]
    assert r[:5] == [0.1] * 5 and r[5] == pytest.approx(0.01) and r[8] == pytest.approx(0.001)
    assert r[10:15] == [0.1] * 5  # the second stage starts its own schedule


def test_stage_weights_scale_a_term():
    """Halving the only term equals halving the learning rate (SGD with momentum, no weight decay)."""
    plain = Schedule(epochs=1, batch_size=16, lr=0.05, weight_decay=0.0, lr_schedule="constant")
    spec = tiny_spec(schedule=plain)
    weighted = Recorder(runs.build_model(spec), lambda e: [Stage("half", e, weights={"ce": 0.5})])
    history = trainer_for(weighted, spec, evaluation=False).fit()
    reference = distill.CE(runs.build_model(spec))
    trainer_for(reference, spec.replace(schedule=Schedule(epochs=1, batch_size=16, lr=0.025, weight_decay=0.0,
                                                          lr_schedule="constant")), evaluation=False).fit()
    for k, v in reference.state_dict().items():
        assert torch.allclose(v.float(), weighted.state_dict()[k].float(), atol=1e-6), k
    assert weighted.contexts[0].stage.weight("ce") == 0.5 and history[0]["train_ce"] > 0
    assert not Stage("no kd", weights={"kd": 0}).uses("kd") and Stage("no kd", weights={"kd": 0}).uses("ce")


# ------------------------------------------------------------------------------------- 4. RunSpec grows up
def test_model_args_reach_the_model_and_the_key():
    spec = tiny_spec(model="mlp", model_args={"hidden": [32, 16], "dropout": 0.25})
    net = runs.build_model(spec)
    assert [m.out_features for m in net.modules() if isinstance(m, nn.Linear)] == [32, 16, 10]
    assert spec.key() == tiny_spec(model="mlp", model_args={"dropout": 0.25, "hidden": (32, 16)}).key()
    assert spec.key() != tiny_spec(model="mlp", model_args={"hidden": [32, 16]}).key()
    with pytest.raises(TypeError, match="widht"):
        tiny_spec(model="resnet8", model_args={"widht": 2}).validate()


def test_method_arguments_are_bound_and_defaulted_before_hashing():
    teacher = tiny_spec()
    assert tiny_spec(method="kd", teacher=teacher).key() == \
        tiny_spec(method="kd", teacher=teacher, method_args={"temperature": 4, "alpha": 0.9}).key()
    assert dict(tiny_spec(method="kd", teacher=teacher).method_args) == {"temperature": 4.0, "alpha": 0.9}
    with pytest.raises(TypeError, match="'temprature'.*temperature, alpha"):
        tiny_spec(method="kd", teacher=teacher, method_args={"temprature": 2})


def test_missing_required_argument_is_named(register):
    class NeedsLayers(distill.CE):
        def __init__(self, student, teacher=None, layers=None, beta=1000.0, *, margin):
            super().__init__(student)
            self.layers = layers

    register("needs_layers", NeedsLayers)
    with pytest.raises(TypeError, match="'margin'"):
        tiny_spec(method="needs_layers")
    spec = tiny_spec(method="needs_layers", method_args={"margin": 1, "layers": ["stage1", "stage2"]})
    assert dict(spec.method_args)["layers"] == ("stage1", "stage2")  # lists as tuples: hashable
    assert RunSpec.from_dict(spec.to_dict()) == spec


class UsesAnEncoder(distill.CE):
    """A method whose argument is another run: it receives the finished :class:`Run` and uses its network."""

    def __init__(self, student, teacher=None, encoder=None, weight: float = 0.1):
        super().__init__(student)
        assert isinstance(encoder, runs.Run), type(encoder)
        # A frozen input, not part of this run's trained state: kept outside the registered submodules.
        object.__setattr__(self, "encoder", encoder.model(device="cpu").requires_grad_(False))
        self.weight = weight

    def forward(self, x, y, context=None):
        logits, terms = super().forward(x, y, context)
        with torch.no_grad():
            target = self.encoder(x)
        return logits, {**terms, "match": self.weight * F.mse_loss(logits, target)}


def test_runs_as_inputs_are_trained_once_and_shared(register, tmp_path, count_trainers):
    register("uses_encoder", UsesAnEncoder)
    encoder = tiny_spec(epochs=1, model="cnn6")
    first = tiny_spec(epochs=1, method="uses_encoder", method_args={"encoder": encoder})
    second = first.replace(seed=1, method_args={"encoder": encoder, "weight": 0.5})
    assert first.inputs() == {"encoder": encoder}
    assert first.key() != first.replace(method_args={"encoder": encoder.replace(seed=3)}).key()
    a = runs.train_or_load(first, root=tmp_path, device="cpu")
    runs.train_or_load(second, root=tmp_path, device="cpu")
    assert count_trainers == [encoder.label, first.label, second.label]  # the input trained once
    assert "train_match" in a.final
    back = RunSpec.from_dict(storage.load_json(a.path / "spec.json"))
    assert back == first and back.key() == first.key()


def test_the_whole_chain_is_validated_before_anything_trains(register, tmp_path, count_trainers):
    register("uses_encoder", UsesAnEncoder)
    good_teacher = tiny_spec(epochs=1)
    with pytest.raises(ValueError, match="resnet9"):
        runs.train_or_load(tiny_spec(epochs=1, model="resnet9", method="kd", teacher=good_teacher),
                           root=tmp_path, device="cpu")
    bad_input = tiny_spec(epochs=1, model="cnn66")
    with pytest.raises(ValueError, match="cnn66"):
        runs.train_or_load(tiny_spec(epochs=1, method="uses_encoder", method_args={"encoder": bad_input}),
                           root=tmp_path, device="cpu")
    with pytest.raises(ValueError, match="path_length:stemm"):
        runs.train_or_load(tiny_spec(epochs=1, method="kd", teacher=good_teacher, probes=("path_length:stemm",)),
                           root=tmp_path, device="cpu")
    with pytest.raises(ValueError, match="unknown method 'kdd'"):
        tiny_spec(method="kdd", teacher=good_teacher)
    assert count_trainers == []


# ----------------------------------------------------------------------------------------- 5. identity
def test_method_version_redoes_that_method_only(monkeypatch):
    teacher = tiny_spec()
    kd = tiny_spec(method="kd", teacher=teacher)
    on_kd = tiny_spec(model="cnn6", method="kd", teacher=kd)
    before = {s: s.key() for s in (teacher, kd, on_kd)}
    dml = tiny_spec(method="dml", method_args={"peer": "resnet8"})
    dml_key = dml.key()
    monkeypatch.setattr(distill.KD, "version", distill.KD.version + 1)
    assert teacher.key() == before[teacher] and dml.key() == dml_key  # other methods keep their runs
    assert kd.key() != before[kd] and on_kd.key() != before[on_kd]    # KD runs, and runs standing on them


def test_identity_ignores_device_threads_and_where_the_spec_came_from(monkeypatch):
    spec = tiny_spec(method="kd", teacher=tiny_spec())
    key = spec.key()
    monkeypatch.setenv("KDNB_DEVICE", "meta")
    monkeypatch.setenv("KDNB_PROFILE", "paper")
    torch.set_num_threads(2)
    assert RunSpec.from_dict(spec.to_dict()).key() == key
    assert "device" not in spec.identity() and "method_version" in spec.identity()


def test_part0_teacher_is_the_shared_recipe(smoke_book):
    """Chapter 0 trains its teacher through :func:`kdnb.recipes.teacher`, the spec Parts II and III ask for."""
    import nbformat

    from kdnb import notebooks, profiles, recipes
    from test_notebooks import glued

    chapter = next(c for c in smoke_book if c.stem == "distillation")
    assert smoke_book[chapter].error is None, smoke_book[chapter].error
    values = glued(nbformat.read(book_layout.executed_path(chapter), as_version=4))
    assert values["teacher_key"] == recipes.teacher(profiles.get("smoke"), model="resnet20").key()


# ------------------------------------------------------------------------------- 6. a bug is not damage
def test_a_state_that_does_not_unpickle_is_raised_not_restarted(tmp_path):
    spec = tiny_spec(epochs=2)
    storage.save_torch({"epoch": 1, "method": {}, "history": [{"x": np.float64(1.0)}], "optimizers": {},
                        "probes": []}, tmp_path / "state.pt")
    trained = []
    trainer = trainer_for(distill.CE(runs.build_model(spec)), spec, run_dir=tmp_path,
                          on_epoch_end=lambda m: trained.append(m))
    with pytest.raises(storage.UnreadableFile, match="state.pt"):
        trainer.fit()
    assert trained == []


class NumpyProbe(probes.WeightPathLength):
    def epoch_metrics(self):
        return {"numpy_metric": np.float64(super().epoch_metrics()[self.name])}


def test_a_metric_that_cannot_be_saved_is_an_error_naming_run_and_value(tmp_path):
    spec = tiny_spec(epochs=2)
    trainer = trainer_for(distill.CE(runs.build_model(spec)), spec, run_dir=tmp_path,
                          probes=[NumpyProbe("classifier")], desc="ce:resnet8 seed=0")
    with pytest.raises(storage.UnsaveableValue, match=r"ce:resnet8 seed=0.*'numpy_metric'.*numpy"):
        trainer.fit()
    assert not (tmp_path / "state.pt").exists()  # nothing half-saved that would fail to load later


# ------------------------------------------------------------------------- 7. checkpoints, series, networks
def test_fractional_checkpoints_are_the_weights_after_that_many_steps(tmp_path):
    schedule = Schedule(epochs=2, batch_size=16, lr=0.05, lr_schedule="constant", checkpoints=(0, 0.5, 1.7))
    assert schedule.checkpoints == (0, 0.5, 1.7)
    spec = tiny_spec(schedule=schedule)
    run = runs.train_or_load(spec, root=tmp_path, device="cpu")
    # 5 steps per epoch: 0.5 -> after 3 steps (halves round up), 1.7 -> after 9 steps.
    assert run.checkpoint_path(0.5).name == "step_00000003.pt" and run.checkpoint_path(1.7).name == "step_00000009.pt"
    net = runs.build_model(spec)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    net.train()
    batches = runs.batches(spec, "train", "cpu")
    torch.manual_seed(epoch_seed(spec.seed, 0))
    for step, (x, y) in enumerate(batches.batches(0, spec.seed)):
        if step == 3:
            break
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
    for k, v in run.model(epoch=0.5, device="cpu").state_dict().items():
        assert torch.allclose(v.float(), net.state_dict()[k].float(), atol=1e-6), k
    with pytest.raises(ValueError, match=r"\[0, 0.5, 1.7\]"):
        run.model(epoch=0.6)


def test_probe_keeps_a_per_step_series(tmp_path):
    spec = tiny_spec(schedule=Schedule(epochs=2, batch_size=16, lr=0.05, checkpoints=(0,)),
                     probes=("path_length:classifier",))
    run = runs.train_or_load(spec, root=tmp_path, device="cpu")
    steps = run.series()["path_length:classifier/step"]
    assert steps.shape == (10,) and bool((steps > 0).all())
    assert steps.double().sum().item() == pytest.approx(run.final["path_length:classifier"], rel=1e-6)
    w0 = run.model(epoch=0, device="cpu")
    norm0 = torch.cat([w0.classifier.weight.flatten(), w0.classifier.bias.flatten()]).norm().item()
    assert run.final["init_norm:classifier"] == pytest.approx(norm0, rel=1e-6)


def test_series_survive_a_resume(tmp_path):
    spec = tiny_spec(epochs=3)

    def make(**kwargs):
        return trainer_for(distill.CE(runs.build_model(spec)), spec, run_dir=tmp_path / kwargs.pop("name"),
                           probes=[probes.create("path_length:stem")], **kwargs)

    reference = make(name="a")
    reference.fit()

    def stop(metrics):
        if metrics["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make(name="b", on_epoch_end=stop).fit()
    resumed = make(name="b")
    resumed.fit()
    assert torch.equal(resumed.series()["path_length:stem/step"], reference.series()["path_length:stem/step"])


def test_checkpoints_hold_every_evaluated_network(tmp_path):
    spec = tiny_spec(epochs=1, method="dml", method_args={"peer": "cnn6"},
                     schedule=Schedule(epochs=1, batch_size=16, lr=0.05, checkpoints=(0, 1)))
    run = runs.train_or_load(spec, root=tmp_path, device="cpu")
    peer0, peer1 = run.network("peer", epoch=0, device="cpu"), run.network("peer", epoch=1, device="cpu")
    torch.manual_seed(spec.seed)
    fresh = distill.create("dml", runs.build_model(spec), None, **dict(spec.method_args)).peer
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, peer0.state_dict()[k]), k
    final = run.network("peer", device="cpu")
    for k, v in final.state_dict().items():
        assert torch.equal(v, peer1.state_dict()[k]), k


class KDWithRegressor(distill.KD):
    """A method that holds an extra trained module and needs its teacher to build it (a Hint-style head)."""

    def __init__(self, student, teacher=None, temperature: float = 4.0, alpha: float = 0.9):
        super().__init__(student, teacher, temperature, alpha)
        self.regressor = nn.Linear(teacher.classifier.out_features, student.classifier.out_features)

    def forward(self, x, y, context=None):
        logits, terms = super().forward(x, y, context)
        with torch.no_grad():
            target = self.teacher(x)
        return logits, {**terms, "hint": F.mse_loss(self.regressor(target), logits.detach()) * 0.1}


def test_network_of_a_method_that_takes_a_teacher(register, tmp_path):
    register("kd_regressor", KDWithRegressor)
    spec = tiny_spec(epochs=1, method="kd_regressor", teacher=tiny_spec(epochs=1))
    run = runs.train_or_load(spec, root=tmp_path, device="cpu")
    regressor = run.network("regressor", device="cpu")
    saved = storage.load_torch(run.path / "final.pt")["extras"]
    assert torch.equal(regressor.weight, saved["regressor.weight"])
    with pytest.raises(ValueError, match="no network 'nope'.*regressor"):
        run.network("nope")


# -------------------------------------------------------------------------- 8. BatchNorm left alone
def test_helper_forward_leaves_batchnorm_statistics_alone():
    torch.manual_seed(0)
    net = runs.build_model(tiny_spec()).train()
    x = torch.randn(8, 1, 28, 28)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad(), modules.batchnorm_statistics_fixed(net):
        inside = net(x)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert net.training and all(m.track_running_stats for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    with torch.no_grad():
        plain = net(x)  # a normal training-mode forward: same output (batch statistics), but it records them
    assert torch.equal(inside, plain)
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items() if "running_mean" in k)
    net.eval()
    with modules.batchnorm_statistics_fixed(net):
        assert all(m.track_running_stats for m in net.modules() if isinstance(m, nn.BatchNorm2d))


# ------------------------------------------------------------------- 12. determinism and device reads
def test_deterministic_kernels_while_training_and_restored_after(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    seen = []

    class Looks(distill.CE):
        def forward(self, x, y, context=None):
            seen.append((torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark))
            return super().forward(x, y, context)

    spec = tiny_spec(epochs=1)
    trainer_for(Looks(runs.build_model(spec)), spec, evaluation=False).fit()
    assert seen and set(seen) == {(True, False)}
    assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (False, True)


def _device_reads(per_class: int) -> int:
    """How many times the trainer reads a tensor back to the host during one epoch without evaluation."""
    reads = []
    spec = tiny_spec(epochs=1, per_class=per_class)
    trainer = trainer_for(distill.CE(runs.build_model(spec)), spec, evaluation=False, check_every=10_000,
                          probes=[probes.create("path_length:classifier")])
    with pytest.MonkeyPatch.context() as patch:
        for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
            original = getattr(torch.Tensor, name)

            def counting(self, *args, _original=original, **kwargs):
                reads.append(1)
                return _original(self, *args, **kwargs)

            patch.setattr(torch.Tensor, name, counting)
        trainer.fit()
    return len(reads)


def test_no_device_read_per_step():
    """One epoch of 5 steps and one of 20 read the device equally often: reads are per epoch, not per step."""
    few, many = _device_reads(per_class=8), _device_reads(per_class=32)
    assert few == many, (few, many)


def test_deferred_non_finite_check_still_names_the_first_bad_step():
    class InfAtStep7(distill.CE):
        calls = 0

        def forward(self, x, y, context=None):
            logits, terms = super().forward(x, y, context)
            InfAtStep7.calls += 1
            if InfAtStep7.calls >= 7:
                terms["ce"] = terms["ce"] * float("inf")
            return logits, terms

    spec = tiny_spec(epochs=2)
    with pytest.raises(NonFiniteLoss, match=r"epoch 2, step 2 .*ce=inf"):
        trainer_for(InfAtStep7(runs.build_model(spec)), spec, check_every=50).fit()
