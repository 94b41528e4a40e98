"""``python -m kdnb bench methods``: each main distillation method's training step over a cross-entropy step.

Huang et al. (2021) compare IE-KD with KD, AT, FT, OD, CRD and DML; what a step of each costs decides what a
``book`` budget can afford, and IE-KD's own overhead (two encoders on a channel split, a frozen teacher encoder)
should stay small: its step is ≤ 1.3× KD's (issue target). Every step is the trainer's own (``Trainer.fit`` on
one epoch of the same batches, the method built by :func:`kdnb.runs.build_method` exactly as a run builds it),
so the numbers include what a run pays: stage and update handling, the teacher's forward, probes off.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time

import torch

#: name -> method arguments; "autoencoder" is replaced by the shared factor auto-encoder run of the teacher.
MAIN_METHODS: dict[str, dict] = {
    "ce": {}, "kd": {}, "at": {}, "ft": {"autoencoder": None}, "od": {}, "crd": {},
    "ie_ft": {"autoencoder": None}, "ie_at": {"autoencoder": None}, "ie_od": {"autoencoder": None},
    "dml": {}, "ie_dml": {},
}
#: IE-KD against the method it upgrades (Huang et al. §4.2) and against KD (the issue's ≤ 1.3× target).
PAIRS = (("ie_ft", "kd"), ("ie_at", "kd"), ("ie_od", "kd"), ("ie_ft", "ft"), ("ie_at", "at"), ("ie_od", "od"),
         ("ie_dml", "dml"))


@contextlib.contextmanager
def _quiet_progress():
    saved = os.environ.get("KDNB_PROGRESS")
    os.environ["KDNB_PROGRESS"] = "off"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("KDNB_PROGRESS", None)
        else:
            os.environ["KDNB_PROGRESS"] = saved


def method_steps_vs_ce(student: str = "resnet8", teacher: str = "resnet20", batch_size: int = 64, steps: int = 8,
                       repeats: int = 5, methods: tuple[str, ...] | None = None,
                       student_args: dict | None = None, augment: str | None = "default") -> dict:
    """Per method, the median time of one trainer step over that of a cross-entropy step of the same student on
    the same ``steps`` batches of Fashion-MNIST; ``repeats`` interleaved rounds (the method order rotates each
    round). The teacher and its factor auto-encoder are trained briefly first (their quality does not change a
    step's cost). ``student_args``: the student's model arguments (e.g. ``{"width": 0.25}``, the book's MobileNet).
    ``augment``: the batches' augmentation (``"default"``: the data set's, so the teacher runs every step, as in a
    CIFAR run of the paper); ``None``: fixed inputs, as the book's students train, where the teacher's outputs are
    remembered per sample (:meth:`kdnb.distill.base.Method.remembered`) after the warm-up epoch, so the steps timed
    are those of every epoch after a run's first."""
    from . import distill, runs
    from .distill.base import Method
    from .train import Schedule, Trainer

    chosen = tuple(methods) if methods is not None else tuple(m for m in MAIN_METHODS if m in distill.METHODS)
    unknown = [m for m in chosen if m not in MAIN_METHODS]
    if unknown:
        raise ValueError(f"unknown bench method(s) {unknown}; choose from: {', '.join(MAIN_METHODS)}")
    if "ce" not in chosen:
        chosen = ("ce", *chosen)
    per_class = -(-steps * batch_size // 10)
    schedule = Schedule(epochs=1, batch_size=batch_size, lr=0.01, lr_schedule="constant", checkpoints=())
    teacher_spec = runs.RunSpec("fashion_mnist", teacher, schedule, train_per_class=per_class, test_per_class=2)
    autoencoder_spec = runs.part(teacher_spec, "autoencoder", schedule)
    with tempfile.TemporaryDirectory() as root, _quiet_progress():
        teacher_run = runs.train_or_load(teacher_spec, root=root)
        autoencoder_run = runs.train_or_load(autoencoder_spec, root=root)
        teacher_model = teacher_run.model()
        built: dict[str, Method] = {}
        specs = {}
        for name in chosen:
            args = {k: (autoencoder_spec if k == "autoencoder" else v) for k, v in MAIN_METHODS[name].items()}
            needs_teacher = distill.method_class(name).requires_teacher
            spec = runs.RunSpec("fashion_mnist", student, schedule, method=name, method_args=args,
                                teacher=teacher_spec if needs_teacher else None, train_per_class=per_class,
                                test_per_class=2, model_args=dict(student_args or {}), augment=augment)
            specs[name] = spec
            built[name] = runs.build_method(spec, teacher_model if needs_teacher else None,
                                            {k: autoencoder_run for k in spec.inputs() if k == "autoencoder"})
        train = runs.batches(specs["ce"], "train")

        def one_epoch(name: str) -> float:
            trainer = Trainer(built[name], train, schedule, seed=0, desc=f"bench {name}")
            began = time.perf_counter()
            trainer.fit()
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            return (time.perf_counter() - began) / len(train)

        for name in chosen:  # warm-up
            one_epoch(name)
        times: dict[str, list[float]] = {name: [] for name in chosen}
        for r in range(repeats):
            order = chosen[r % len(chosen):] + chosen[:r % len(chosen)]
            for name in order:
                times[name].append(one_epoch(name))
    median = {name: statistics.median(values) for name, values in times.items()}
    ratios = {name: median[name] / median["ce"] for name in chosen}
    pairs = {f"{a}/{b}": median[a] / median[b] for a, b in PAIRS if a in median and b in median}
    worst = max((v for k, v in pairs.items() if k.endswith("/kd")), default=float("nan"))
    return {
        "name": "method_steps_vs_ce",
        "per_ce_step": ratios,
        "pairs": pairs,
        "ie_kd_vs_kd_max": worst,
        "target": "IE-KD step <= 1.3 x KD step",
        "ce_step_s": median["ce"],
        "student": student, "student_args": dict(student_args or {}), "augment": augment, "teacher": teacher,
        "dataset": "fashion_mnist", "batch_size": batch_size,
        "steps": steps, "repeats": repeats,
    }


def method_steps_vs_ce_remembered(**kwargs) -> dict:
    """:func:`method_steps_vs_ce` on fixed inputs (no augmentation), the book's regime: the teacher's outputs are
    remembered after the first epoch, so a distillation step costs about what the student's side of it costs."""
    result = method_steps_vs_ce(augment=None, **kwargs)
    result["name"] = "method_steps_vs_ce_remembered"
    return result
