"""``python -m kdnb bench``: performance ratios measured side by side in one run, printed as JSON.

Ratios, not absolute times, are the contract: both sides run in the same process, interleaved, on the same
model, data and batches, so machine load affects them alike.
"""
from __future__ import annotations

import json
import platform
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F


def _bare_loop(model: torch.nn.Module, batches, epoch: int, lr: float) -> None:
    """The minimal PyTorch training loop the trainer is compared with."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model.train()
    for x, y in batches.batches(epoch, 0):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def trainer_vs_bare_loop(model_name: str = "resnet8", batch_size: int = 128, steps: int = 20,
                         repeats: int = 21) -> dict:
    """Trainer images/s divided by a bare loop's images/s (same model, data and batches). Target: >= 0.95."""
    from . import data, device, distill, models
    from .train import Schedule, Trainer

    dev = device()
    info = data.info("fashion_mnist")
    ds = data.dataset("fashion_mnist", "train")
    per_class = -(-steps * batch_size // info.num_classes)
    images, labels = data.as_tensors(ds, data.stratified_subset(torch.as_tensor(ds.targets), per_class, seed=0))
    batches = data.TensorBatches(images[: steps * batch_size], labels[: steps * batch_size], batch_size,
                                 info.mean, info.std, shuffle=True, augment="crop_flip", drop_last=True, device=dev)
    torch.manual_seed(0)
    model = models.create(model_name, num_classes=info.num_classes, in_channels=info.in_channels).to(dev)
    schedule = Schedule(epochs=1, batch_size=batch_size, lr=0.05, lr_schedule="constant")
    n_images = len(batches) * batch_size

    def run_trainer(epoch: int) -> None:
        Trainer(distill.create("ce", model), batches, schedule, seed=epoch, device=dev, desc="bench").fit()

    def timed(fn: Callable[[int], None], epoch: int) -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        fn(epoch)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return n_images / (time.perf_counter() - began)

    run_trainer(0)  # warm-up (allocator, kernels) for both sides
    _bare_loop(model, batches, 0, 0.05)
    trainer_ips, bare_ips = [], []
    for r in range(repeats):  # interleaved, alternating who goes first
        order = [("t", run_trainer), ("b", lambda e: _bare_loop(model, batches, e, 0.05))]
        for tag, fn in (order if r % 2 == 0 else order[::-1]):
            (trainer_ips if tag == "t" else bare_ips).append(timed(fn, r + 1))
    # Short segments, many alternations: load from neighbours on a shared machine drifts over seconds and
    # would otherwise land on one side. The ratio is of the medians; the pairwise quartiles show the noise.
    ratios = sorted(t / b for t, b in zip(trainer_ips, bare_ips))
    quartiles = statistics.quantiles(ratios, n=4)
    return {
        "name": "trainer_vs_bare_loop",
        "ratio": statistics.median(trainer_ips) / statistics.median(bare_ips),
        "target": ">= 0.95",
        "pairwise_ratio_quartiles": [quartiles[0], statistics.median(ratios), quartiles[2]],
        "trainer_images_per_s": statistics.median(trainer_ips),
        "bare_images_per_s": statistics.median(bare_ips),
        "model": model_name, "dataset": "fashion_mnist", "batch_size": batch_size, "steps": len(batches),
        "repeats": repeats,
    }


def estimator_batched_vs_loop(model_name: str = "alexnet_small", feature: str = "fc1.pre", images: int = 8,
                              grid: int = 16, samples: int = 8, steps: int = 10, repeats: int = 3) -> dict:
    """Entropy-estimator images/s, batched (all ``images`` in one :func:`kdnb.concepts.estimate_entropy` call)
    over a per-image loop (one call per image), same settings and noise seeds, on cluttered Fashion-MNIST test
    images and an untrained ``model_name``'s ``feature``. Faithful mode, ``steps`` SGD steps without the extra
    ones (``extra_steps=0``) and ``samples`` noise samples a step; ``noise_samples_per_s`` counts the perturbed
    forward+backward passes (``s_f`` draws included) per second of the batched side.

    The batched call cuts its work into forward passes of at most ``max_batch`` perturbed inputs, which the
    estimator picks by device when not given (``chosen_max_batch``: 32 on a CPU, where larger passes leave the
    cache and run slower per input; 1024 on CUDA). Beside the two, ``one_pass_images_per_s`` times the batched
    call with every image's samples in one pass (``max_batch = images × samples``, the old default's layout),
    so the cost of that choice is measured in the same run (``one_pass_ratio`` over the loop)."""
    from . import concepts, data, device, models

    dev = device()
    info = data.info("cluttered_fashion_mnist")
    ds = data.dataset("cluttered_fashion_mnist", "test")
    x = (ds.data[:images, None].float() / 255 - info.mean[0]) / info.std[0]
    torch.manual_seed(0)
    net = models.create(model_name, num_classes=info.num_classes, in_channels=info.in_channels).to(dev)
    fn = concepts.feature_fn(net, feature)
    settings = dict(samples=samples, sf_samples=samples, steps=steps, extra_steps=0, device=dev)
    seeds = list(range(images))
    chosen: dict[str, int] = {}

    def batched() -> None:
        result = concepts.estimate_entropy(fn, x, grid, image_seeds=seeds, **settings)
        chosen["max_batch"] = result.settings["max_batch"]

    def one_pass() -> None:
        concepts.estimate_entropy(fn, x, grid, image_seeds=seeds, max_batch=images * samples, **settings)

    def loop() -> None:
        for i in range(images):
            concepts.estimate_entropy(fn, x[i:i + 1], grid, image_seeds=[seeds[i]], **settings)

    def timed(run: Callable[[], None]) -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        run()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return images / (time.perf_counter() - began)

    sides = {"batched": batched, "one_pass": one_pass, "loop": loop}
    for run in sides.values():  # warm-up
        run()
    ips: dict[str, list[float]] = {name: [] for name in sides}
    order = list(sides)
    for r in range(repeats):  # interleaved, rotating who goes first
        for name in order[r % 3:] + order[:r % 3]:
            ips[name].append(timed(sides[name]))
    median = {name: statistics.median(values) for name, values in ips.items()}
    per_image = samples * (steps - 1) + samples  # SGD steps (the last one only records) and the s_f draw
    return {
        "name": "estimator_batched_vs_loop",
        "ratio": median["batched"] / median["loop"],
        "target": ">= 1.0",
        "batched_images_per_s": median["batched"],
        "loop_images_per_s": median["loop"],
        "one_pass_images_per_s": median["one_pass"],
        "one_pass_ratio": median["one_pass"] / median["loop"],
        "chosen_max_batch": chosen["max_batch"],
        "noise_samples_per_s": median["batched"] * per_image,
        "model": model_name, "feature": feature, "dataset": "cluttered_fashion_mnist", "images": images,
        "image_size": info.image_size, "grid": grid, "samples": samples, "steps": steps, "mode": "faithful",
        "repeats": repeats,
    }


BENCHES = {"trainer": trainer_vs_bare_loop, "estimator": estimator_batched_vs_loop}
# --quick: tiny sizes that only check that a bench runs (QUICK_DEFAULT for a bench not listed).
QUICK_DEFAULT = {"steps": 4, "repeats": 3}
QUICK = {"estimator": {"images": 2, "samples": 4, "steps": 2, "repeats": 1}}


def le_step_vs_ce_step(model_name: str = "resnet8", batch_size: int = 128, steps: int = 10,
                       repeats: int = 7) -> dict:
    """Gu et al.'s LE: one training step with Grad-CAM targets over one cross-entropy step, same model and batch
    (target: <= 1.2). Also, each per CE step: an LE step with input-gradient maps, the all-class maps alone
    (``kdnb.explain.class_maps``: Grad-CAM at a layer without the closed form, grad, grad x input, guided
    backprop; eval mode) and Captum's one-call-per-class loop as the reference (``Saliency``; ``LayerGradCam`` at
    the last block's ``bn2``, a module the ResNet calls), once per repeat. Interleaved segments of ``steps``
    steps (a fifth of them for the LE(grad) step); medians."""
    from captum.attr import LayerGradCam, Saliency

    from . import data, device, distill, explain, models
    from .distill import Context, Stage

    dev = device()
    info = data.info("fashion_mnist")
    ds = data.dataset("fashion_mnist", "train")
    images, labels = data.as_tensors(ds, data.stratified_subset(torch.as_tensor(ds.targets),
                                                                -(-batch_size // info.num_classes), seed=0))
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (info.mean, info.std))
    x = ((images[:batch_size].float() / 255 - mean) / std).to(dev)
    y = labels[:batch_size].to(dev)
    torch.manual_seed(0)
    model = models.create(model_name, num_classes=info.num_classes, in_channels=info.in_channels).to(dev)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    stage = Context(stage=Stage("introspect"))
    methods = {"ce": distill.create("ce", model), "le": distill.create("le", model),
               "le_grad": distill.create("le", model, explanation="grad")}

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def train_steps(name: str, count: int = steps) -> float:
        model.train()
        sync()
        began = time.perf_counter()
        for _ in range(count):
            optimizer.zero_grad(set_to_none=True)
            terms = methods[name](x, y, stage)[1]
            sum(terms.values()).backward()
            optimizer.step()
        sync()
        return (time.perf_counter() - began) / count

    last_bn = model.stage3[-1].bn2 if hasattr(model, "stage3") else None
    calls: dict[str, Callable[[], object]] = {
        "class_maps_gradcam_stage2": lambda: explain.class_maps(model, x, "gradcam", layer="stage2"),
        **{f"class_maps_{m}": (lambda m=m: explain.class_maps(model, x, m)) for m in explain.INPUT_METHODS},
        "captum_saliency_per_class": lambda: [Saliency(model).attribute(x, target=k, abs=False)
                                              for k in range(info.num_classes)],
    }
    if last_bn is not None:
        calls["captum_layergradcam_per_class"] = lambda: [
            LayerGradCam(model, last_bn).attribute(x, target=k, relu_attributions=True)
            for k in range(info.num_classes)]

    def timed_call(fn: Callable[[], object]) -> float:
        model.eval()
        sync()
        began = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - began

    train_steps("ce"), train_steps("le"), train_steps("le_grad")  # warm-up
    for fn in calls.values():
        timed_call(fn)
    times: dict[str, list[float]] = {name: [] for name in [*methods, *calls]}
    for r in range(repeats):  # interleaved, alternating who goes first
        for name in (["ce", "le"] if r % 2 == 0 else ["le", "ce"]):
            times[name].append(train_steps(name))
        times["le_grad"].append(train_steps("le_grad", max(1, steps // 5)))  # ~10 CE steps each
        for name, fn in calls.items():
            times[name].append(timed_call(fn))
    median = {name: statistics.median(values) for name, values in times.items()}
    pairwise = sorted(le / ce for le, ce in zip(times["le"], times["ce"]))
    quartiles = statistics.quantiles(pairwise, n=4) if len(pairwise) > 1 else [pairwise[0]] * 3
    return {
        "name": "le_step_vs_ce_step",
        "ratio": median["le"] / median["ce"],
        "target": "<= 1.2",
        "pairwise_ratio_quartiles": [quartiles[0], statistics.median(pairwise), quartiles[2]],
        "ce_step_s": median["ce"],
        "per_ce_step": {name: median[name] / median["ce"] for name in ["le_grad", *calls]},
        "model": model_name, "dataset": "fashion_mnist", "batch_size": batch_size, "classes": info.num_classes,
        "steps": steps, "repeats": repeats,
    }


BENCHES["le"] = le_step_vs_ce_step


def main(names: list[str] | None = None, quick: bool = False) -> list[dict]:
    from . import device

    chosen = names or list(BENCHES)
    unknown = [n for n in chosen if n not in BENCHES]
    if unknown:
        raise SystemExit(f"unknown bench {unknown}; choose from: {', '.join(BENCHES)}")
    results = []
    for name in chosen:
        kwargs = QUICK.get(name, QUICK_DEFAULT) if quick else {}
        entry = BENCHES[name](**kwargs)
        entry.update(device=str(device()), threads=torch.get_num_threads(), torch=torch.__version__,
                     machine=platform.machine())
        results.append(entry)
    print(json.dumps(results, indent=2))
    return results

from .bench_methods import method_steps_vs_ce, method_steps_vs_ce_remembered  # noqa: E402  (a module of its own)

BENCHES["methods"] = method_steps_vs_ce
QUICK["methods"] = {"steps": 2, "repeats": 1, "batch_size": 16}
BENCHES["methods_remembered"] = method_steps_vs_ce_remembered
QUICK["methods_remembered"] = QUICK["methods"]
