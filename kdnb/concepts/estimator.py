"""The pixel-wise conditional-entropy ("information discarding") estimator of Cheng et al. (CVPR 2020, §3.1).

For an image ``x`` and a feature map ``f``, the estimator looks for the largest Gaussian perturbation
``x' = x + up(σ) ⊙ ε`` (``ε ~ N(0, I)``, one ``σ`` per cell of a ``grid × grid`` partition of the image,
shared by the channels) that leaves ``f(x')`` close to ``f(x)``. The entropy of a cell is that of one scalar
Gaussian, ``H_g = log σ_g + ½ log 2πe``: a low ``H_g`` means the feature depends on that cell (it is used),
a high one that its information is discarded.

Three modes, all with the *mean* entropy over cells pinned at the same ``target`` (−2.8 nats), so that only the
spatial pattern of ``H`` carries information:

``"faithful"`` — the semantics of the authors' released code (see ``shared/notes/estimator.md`` §2): σ is a
    raw parameter initialised at ``sigma0`` and clamped into ``[sigma_min, sigma_max]`` before every forward
    pass; the loss per image is ``mse(relu(f(x')), relu(f(x))) / s_f − λ · mean_g H_g``, where ``s_f`` is the
    same distortion at ``σ ≡ sigma0`` from its own noise draw; plain SGD on σ; fresh noise every step;
    ``steps`` steps, then ``extra_steps`` more with ``λ × boost`` for the images whose mean entropy never rose
    above ``target``; the kept σ is the iterate whose mean entropy is nearest ``target``. It is a point on an
    early-stopped SGD path, not an optimum (its contrasts are flatter than the optimum's).

``"converged"`` — the λ-free ablation: σ minimises the same normalised distortion on the set
    ``{mean_g log σ_g = target − ½ log 2πe, sigma_min ≤ σ ≤ sigma_max}``, found by a damped fixed-point
    iteration of the optimality conditions with Monte-Carlo gradients (``converged_steps`` steps): a control
    variate along the feature change's dominant directions, inverse-variance weights and a trust region keep
    it converging when the Jacobian has a common direction (all-positive weights, features after a ReLU or a
    shared BN shift; see ``_converged`` for the measurements). On a linear feature map with no cell at a bound
    its optimum is ``H_g − mean H = −½ (log C_g − mean log C)``, ``C_g`` the cell's squared sensitivity
    (estimator.md, T2). It costs ``samples × converged_steps + sf_samples`` passes per image plus
    ``converged_directions`` vector–Jacobian products at the clean image.

``"linearised"`` — a cheap proxy (estimator.md §7): the cells' squared sensitivities ``C_g`` of
    ``x ↦ relu(f(x))`` at the image (ReLU mask included) from ``vjps`` random vector–Jacobian products, then the
    estimator's answer for that linear map with exact expectations — ``predict="faithful"``: the released SGD loop
    on the expected gradient (clamp, stop, boost, selection); ``predict="converged"``: the T2 optimum. About
    ``vjps`` forward+backward passes per image instead of ``samples × steps``. It is exact for linear maps; for a
    network it assumes the map is linear over sub-grey-level perturbations, which must be checked against the
    Monte-Carlo modes before it is trusted.

Implementation: all images of a call are optimised together with **exactly per-image gradients** (the loss is
the *sum* of the per-image losses, never their mean), per-image ``λ`` and stopping; noise samples are drawn
per image from the image's own generator, in chunks of ``chunk`` samples, so an image's noise and trajectory
do not depend on which other images share the batch; at most ``max_batch`` perturbed inputs go through
``feature_fn`` at once (gradients accumulate over chunks, exactly). The network must be per-sample (BatchNorm in
eval mode, no dropout): :func:`feature_fn` builds such a callable from a model. Everything runs in strict fp32
(TF32 and autocast off), on ``device`` (default :func:`kdnb.device`: CUDA when present).

Defaults, and how they are adapted to our inputs (Fashion-MNIST-based canvases normalised by the dataset's mean
and std, grids other than 16 × 16, CPU budgets):

=================  ===================  ==========================================================================
option             default              released code / why ours
=================  ===================  ==========================================================================
``sigma0``         0.01                 same (normalised units; at H = −2.8 the geometric-mean σ is 0.0147, about
                                        one grey level on our canvases as on the paper's ImageNet inputs)
``sigma_min/max``  1e-3 / 1             same clamp
``lam``            7.0                  7 (VGG, AlexNet), 6 (ResNet); a float or one value per image
``boost``          1.5                  same
``target``         −2.8                 same
``steps``          60 (+20 extra)       same
``lr``             1e-4 · G / 256       1e-4 at G = 256 cells (16 × 16). The distortion is normalised by ``s_f`` and
                                        the entropy term is a mean over cells, so a cell's pull scales as 1 / G; the
                                        lr scales with G to keep the paper's path per step at any grid
``samples``        32                   96. The kept σ is a point on the gradient flow; fewer samples add Monte-Carlo
                                        noise to each step (on the linear test maps σ stays within 0.6 % mean,
                                        5 % worst cell, of the flow at 32). Pass 96 for the released setting
``sf_samples``     96                   96 (``s_f`` is drawn once per image; its noise biases every step)
``relu``           True                 same (ReLU on clean and perturbed features, also on logits)
``chunk``          16                   samples per image per forward pass (memory). An image's noise depends on
                                        its seed and ``chunk`` only, not on the other images of the batch
``max_batch``      1024 CUDA / 32 CPU   perturbed inputs per forward pass at most (``None``: by device). On a CPU
                                        a pass of more inputs runs slower per input once its activations leave
                                        the cache (alexnet_small, 48 px, one thread: 56, 60, 62, 53 inputs/s at
                                        8, 16, 32, 64 a pass; the BN-backward, ReLU and clamp kernels halve their
                                        speed at 64), so a batched call is cut into passes of 32: with 64 it was
                                        slower than a per-image loop (0.91–0.98), with 32 it is not (1.04)
=================  ===================  ==========================================================================

An image whose ``s_f`` is 0 (its feature does not move at ``sigma0``, e.g. a ReLU'd logit at 0) is rejected,
as in the released code: ``valid`` is False and its ``sigma``/``entropy`` are NaN.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["HALF_LOG_2PI_E", "EntropyResult", "estimate_entropy", "entropy_of", "sigma_at", "upsample",
           "feature_fn", "strict_fp32", "MODES"]

HALF_LOG_2PI_E = 0.5 * math.log(2 * math.pi * math.e)  # 1.4189385...
MODES = ("faithful", "converged", "linearised")

_FAITHFUL = dict(sigma0=0.01, sigma_min=1e-3, sigma_max=1.0, lam=7.0, boost=1.5, target=-2.8, steps=60,
                 extra_steps=20, lr=None, samples=32, sf_samples=96, relu=True, chunk=16, max_batch=None, seed=0,
                 image_seeds=None, device=None)
_CONVERGED = {k: v for k, v in _FAITHFUL.items() if k not in ("lam", "boost", "steps", "extra_steps", "lr")}
_CONVERGED.update(converged_steps=100, converged_average=0.02, converged_damping=0.5, converged_directions=8,
                  converged_trust=0.25)
_LINEARISED = {k: v for k, v in _FAITHFUL.items() if k not in ("samples", "sf_samples")}
_LINEARISED.update(vjps=32, predict="faithful")
DEFAULTS = {"faithful": _FAITHFUL, "converged": _CONVERGED, "linearised": _LINEARISED}


def entropy_of(sigma: Tensor | float) -> Tensor:
    """``H = log σ + ½ log 2πe``, the entropy of one scalar Gaussian of standard deviation σ."""
    return torch.log(torch.as_tensor(sigma, dtype=torch.float32)) + HALF_LOG_2PI_E


def sigma_at(entropy: Tensor | float) -> Tensor:
    """The σ whose entropy is ``entropy`` (inverse of :func:`entropy_of`)."""
    return torch.exp(torch.as_tensor(entropy, dtype=torch.float32) - HALF_LOG_2PI_E)


def upsample(sigma: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour upsampling of ``(N, grid, grid)`` cell values to ``(N, 1, H, W)`` pixels (as the released
    code; at 224 px a 16 × 16 grid gives cells of exactly 14 × 14 px)."""
    return F.interpolate(sigma[:, None], size=size, mode="nearest")


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """TF32 off for matmuls and cuDNN, and no autocast, for the duration (the perturbations are below one grey
    level; TF32 errors of ~1e-3 per feature would bias ``s_f`` and the distortion). Restores the settings."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    precision = torch.get_float32_matmul_precision()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.autocast("cpu", enabled=False))
            if torch.cuda.is_available():
                stack.enter_context(torch.autocast("cuda", enabled=False))
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
        torch.set_float32_matmul_precision(precision)


def feature_fn(model: nn.Module, feature: str) -> Callable[[Tensor], Tensor]:
    """A callable ``x -> model.forward_features(x)[1][feature]`` on a frozen model: ``eval()`` (BatchNorm
    statistics fixed, no dropout, so every sample is independent of the others in its batch) and no weight
    gradients (only the input gradient is needed). ``feature="logits"`` gives the logits (the FC3 output)."""
    model.eval().requires_grad_(False)
    names = getattr(model, "feature_names", ())
    if feature != "logits" and feature not in names:
        raise ValueError(f"{type(model).__name__} has no feature {feature!r}; it has: {', '.join(names)}, logits")

    def fn(x: Tensor) -> Tensor:
        logits, features = model.forward_features(x)
        return logits if feature == "logits" else features[feature]

    return fn


@dataclass
class EntropyResult:
    """What :func:`estimate_entropy` returns; every tensor is on the CPU.

    ``sigma``, ``entropy``: ``(N, grid, grid)``, the kept σ and ``H = log σ + ½ log 2πe`` (NaN for invalid
    images). ``mean_entropy``: ``(N,)`` their mean over cells. ``valid``: ``(N,)`` False where ``s_f`` was 0.
    ``pinned``: ``(N, grid, grid)`` cells at ``sigma_min`` or ``sigma_max`` (a cell pinned at the floor by the
    faithful mode's sign flip counts as a strong concept, estimator.md pitfall 2: look at these). ``s_f``:
    ``(N,)`` the normaliser. ``lam``: ``(N,)`` each image's final λ (faithful; boosted ones are ×1.5).
    ``step``: ``(N,)`` the kept step. ``history``: ``(N, T)`` the mean entropy at every step (faithful) or the
    normalised distortion (converged), NaN where an image had stopped. ``settings``: every option used.
    ``sensitivity``: ``(N, grid, grid)`` the cells' squared sensitivities C_g (linearised mode only).
    """

    sigma: Tensor
    entropy: Tensor
    mean_entropy: Tensor
    valid: Tensor
    pinned: Tensor
    s_f: Tensor
    lam: Tensor
    step: Tensor
    history: Tensor
    mode: str
    settings: dict = field(default_factory=dict)
    sensitivity: Tensor | None = None

    def to_dict(self) -> dict:
        """Plain tensors and values (what the analysis cache stores); :meth:`from_dict` reverses it."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict) -> "EntropyResult":
        return cls(**data)

    def __len__(self) -> int:
        return self.sigma.shape[0]


# --------------------------------------------------------------------------------------------- internals
class _Noise:
    """One generator per image: image i's noise depends only on its seed and the order of its own draws."""

    def __init__(self, seeds: Sequence[int], shape: tuple[int, ...], device: torch.device) -> None:
        self.shape, self.device = shape, device
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    def draw(self, images: Sequence[int], count: int) -> Tensor:
        """``(len(images), count, *shape)``: the next ``count`` samples of each listed image."""
        return torch.stack([torch.randn((count, *self.shape), generator=self.generators[i], device=self.device)
                            for i in images])


def _blocks(active: Tensor, samples: int, chunk: int, max_batch: int) -> Iterator[tuple[Tensor, int, int]]:
    """``(image indices, first sample, count)`` per forward pass: sample chunks of ``chunk`` per image and as
    many images as fit ``max_batch`` perturbed inputs. For every image, its chunks come in sample order."""
    per_pass = max(1, max_batch // max(1, min(chunk, samples)))
    for first in range(0, samples, chunk):
        count = min(chunk, samples - first)
        for start in range(0, len(active), per_pass):
            yield active[start:start + per_pass], first, count


def _distortion(fn, x: Tensor, clean: Tensor, sigma: Tensor, noise: _Noise, images: Tensor, count: int,
                relu: bool, keep: bool = False) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """Per image: ``Σ over this chunk's samples and feature elements of (relu(f(x')) − clean)²`` divided by
    the number of feature elements (the caller divides by the total sample count). With ``keep``, also the
    noise ``ε`` ``(n, count, C, H, W)`` and the feature changes ``(n, count, D)`` (detached)."""
    n = len(images)
    eps = noise.draw(images.tolist(), count)  # (n, count, C, H, W)
    spread = upsample(sigma, x.shape[-2:])  # (n, 1, H, W)
    perturbed = (x[:, None] + spread[:, None] * eps).reshape(n * count, *x.shape[1:])
    out = fn(perturbed)
    if relu:
        out = F.relu(out)
    change = out.reshape(n, count, -1) - clean.reshape(n, 1, -1)
    total = (change ** 2).sum(dim=1).mean(dim=1)
    return (total, eps, change.detach()) if keep else total


def _default_max_batch(dev: torch.device) -> int:
    """Perturbed inputs per forward pass when ``max_batch`` is None: 1024 on CUDA (memory is the only limit), 32
    on a CPU (cache: module docstring). Results depend on it only through fp32 rounding."""
    return 1024 if dev.type == "cuda" else 32


def _options(mode: str, options: dict) -> dict:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from: {', '.join(MODES)}")
    defaults = DEFAULTS[mode]
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise TypeError(f"estimate_entropy(mode={mode!r}) got unknown options {unknown}; "
                        f"it takes: {', '.join(sorted(defaults))}")
    return {**defaults, **options}


def _project(y: Tensor, mean: float, lo: float, hi: float, iterations: int = 60) -> Tensor:
    """Euclidean projection of each row of ``y`` (N, G) onto ``{x : lo ≤ x ≤ hi, mean x = mean}``: ``clip(y + τ)``
    with the per-row shift τ found by bisection (the mean of the clip is monotone in τ)."""
    low = (lo - y.max(dim=1).values)[:, None]
    high = (hi - y.min(dim=1).values)[:, None]
    for _ in range(iterations):
        mid = (low + high) / 2
        too_big = (y + mid).clamp(lo, hi).mean(dim=1, keepdim=True) > mean
        high = torch.where(too_big, mid, high)
        low = torch.where(too_big, low, mid)
    return (y + (low + high) / 2).clamp(lo, hi)


# --------------------------------------------------------------------------------------------- public
def estimate_entropy(feature_fn: Callable[[Tensor], Tensor], images: Tensor, grid: int, mode: str = "faithful",
                     **options: Any) -> EntropyResult:
    """Pixel-wise conditional entropy maps ``(N, grid, grid)`` of ``images`` ``(N, C, H, W)`` (normalised as
    the network sees them) given the features ``feature_fn(images)``.

    ``feature_fn``: any callable from an image batch to a feature batch whose samples are independent (see
    :func:`feature_fn` for a model's named feature). ``mode``: ``"faithful"``, ``"converged"`` or
    ``"linearised"`` (module docstring). Options (with their defaults there): ``sigma0``, ``sigma_min``, ``sigma_max``, ``target``,
    ``samples``, ``sf_samples``, ``relu``, ``chunk``, ``max_batch``, ``seed`` (image i's noise generator is
    seeded ``seed * 1_000_003 + i``), ``image_seeds`` (one seed per image instead, e.g. to repeat one image of
    a batch alone), ``device``; faithful only: ``lam`` (float or one per image), ``boost``, ``steps``,
    ``extra_steps`` (0 disables the boost), ``lr`` (also for linearised); linearised only: ``vjps`` (32),
    ``predict`` (``"faithful"`` or ``"converged"``; no ``samples``/``sf_samples``); converged only: ``converged_steps`` (100),
    ``converged_average`` (0.02, the floor of the averaging weight), ``converged_damping`` (0.5),
    ``converged_directions`` (8: directions of the control variate; 0 turns it off), ``converged_trust`` (0.25:
    the largest move of log σ_g in one step; None turns it off). ``max_batch=None`` picks the pass size by
    device (module docstring).
    Pass ``target=None`` in faithful mode to keep the last iterate instead (for checking the loss's stationary
    point).
    """
    opts = _options(mode, options)
    from .. import device as default_device

    dev = torch.device(opts["device"]) if opts["device"] is not None else default_device()
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W); got shape {tuple(images.shape)}")
    n = images.shape[0]
    seeds = opts["image_seeds"]
    if seeds is None:
        seeds = [opts["seed"] * 1_000_003 + i for i in range(n)]
    if len(seeds) != n:
        raise ValueError(f"image_seeds has {len(seeds)} seeds for {n} images")
    if opts["max_batch"] is None:
        opts["max_batch"] = _default_max_batch(dev)
    settings = {k: v for k, v in opts.items() if k not in ("device", "image_seeds")}
    settings.update(grid=grid, image_seeds=[int(s) for s in seeds])
    if mode == "linearised" and opts["predict"] not in ("faithful", "converged"):
        raise ValueError(f"predict must be 'faithful' or 'converged'; got {opts['predict']!r}")
    if "lr" in settings and settings["lr"] is None:
        settings["lr"] = 1e-4 * grid * grid / 256
    if isinstance(settings.get("lam"), Tensor):
        settings["lam"] = settings["lam"].tolist()
    with strict_fp32():
        x = images.detach().to(dev, torch.float32)
        noise = _Noise(seeds, tuple(x.shape[1:]), dev)
        with torch.no_grad():
            clean = feature_fn(x)
            clean = (F.relu(clean) if opts["relu"] else clean).reshape(n, -1).float()
            directions = opts["converged_directions"] if mode == "converged" else 0
            omega = _omega(seeds, clean.shape[1], directions, dev) if directions > 0 else None
            s_f, sketch = (_normaliser(feature_fn, x, clean, noise, opts, omega) if mode != "linearised"
                           else (None, None))
        sensitivity = None
        if mode == "linearised":
            sensitivity, s_f = _sensitivities(feature_fn, x, clean, seeds, grid, opts)
            valid = s_f > 0
            sigma, step, lam, history = _linearised(sensitivity, valid, grid, opts, settings)
            sensitivity = sensitivity.cpu()
        elif mode == "faithful":
            valid = s_f > 0
            sigma, step, lam, history = _faithful(feature_fn, x, clean, s_f, valid, noise, grid, opts, settings)
        else:
            valid = s_f > 0
            sigma, step, lam, history = _converged(feature_fn, x, clean, s_f, valid, noise, grid, opts, sketch)
    sigma = sigma.detach().cpu()
    lo, hi = opts["sigma_min"], opts["sigma_max"]
    pinned = ((sigma <= lo * (1 + 1e-6)) | (sigma >= hi * (1 - 1e-6))) & valid.cpu()[:, None, None]
    sigma[~valid.cpu()] = float("nan")
    entropy = torch.log(sigma) + HALF_LOG_2PI_E
    return EntropyResult(sigma=sigma, entropy=entropy, mean_entropy=entropy.mean(dim=(1, 2)), valid=valid.cpu(),
                         pinned=pinned, s_f=s_f.cpu(), lam=lam.cpu(), step=step.cpu(), history=history.cpu(),
                         mode=mode, settings=settings, sensitivity=sensitivity)


def _normaliser(fn, x: Tensor, clean: Tensor, noise: _Noise, opts: dict, omega: Tensor | None = None
                ) -> tuple[Tensor, Tensor | None]:
    """``s_f`` (N,): the distortion at ``σ ≡ sigma0`` from each image's own ``sf_samples`` draw. With ``omega``
    (N, D, p), also the sketch ``Σ_s Δf_s Δf_sᵀ Ω`` (N, D, p) of the feature changes' second moment (randomised
    range finder; its span holds their dominant directions; see :func:`_feature_directions`)."""
    n, samples = x.shape[0], opts["sf_samples"]
    sigma = torch.full((n, 1, 1), opts["sigma0"], device=x.device).expand(n, 1, 1)
    total = torch.zeros(n, device=x.device)
    sketch = torch.zeros_like(omega) if omega is not None else None
    everyone = torch.arange(n, device=x.device)
    for images, _, count in _blocks(everyone, samples, opts["chunk"], opts["max_batch"]):
        part, _, change = _distortion(fn, x[images], clean[images], sigma[images], noise, images.cpu(), count,
                                      opts["relu"], keep=True)
        total[images] += part
        if sketch is not None:
            sketch[images] += change.transpose(1, 2) @ (change @ omega[images])
    return total / samples, sketch


def _omega(seeds: Sequence[int], features: int, directions: int, dev) -> Tensor:
    """The range finder's Gaussian test matrix (N, D, p), one per image from a generator of its own (seeded from
    the image's seed, but not its noise stream), so an image's directions do not depend on its batch."""
    mats = [torch.randn(features, directions, generator=torch.Generator().manual_seed(int(s) * 7919 + 104729))
            for s in seeds]
    return torch.stack(mats).to(dev)


def _feature_directions(fn, x: Tensor, sketch: Tensor, opts: dict) -> Tensor:
    """``A = Uᵀ J(x)`` (N, p, C, H, W): the Jacobian of ``x ↦ relu(f(x))`` at the clean image (ReLU mask
    included), projected on ``U``, the orthonormal basis of the sketch's span (QR), by ``p`` vector–Jacobian
    products per image (``min(p, D)`` directions)."""
    u = torch.linalg.qr(sketch).Q  # (N, D, p)
    n, p = x.shape[0], u.shape[2]
    out = torch.zeros(n, p, *x.shape[1:], device=x.device)
    per_pass = max(1, opts["max_batch"] // p)
    for start in range(0, n, per_pass):
        part = slice(start, start + per_pass)
        m = x[part].shape[0]
        xi = x[part][:, None].expand(-1, p, *x.shape[1:]).reshape(m * p, *x.shape[1:]).clone()
        xi.requires_grad_(True)
        with torch.enable_grad():
            features = fn(xi)
            if opts["relu"]:
                features = F.relu(features)
            (features.reshape(m, p, -1) * u[part].transpose(1, 2)).sum().backward()
        out[part] = xi.grad.reshape(m, p, *x.shape[1:])
    return out


def _cross_terms(directions: Tensor, eps: Tensor, sigma: Tensor, cells: Tensor, grid: int) -> Tensor:
    """The control variate (N, G) for one chunk: ``Σ_s 2 Σ_j w_jg (Z_j − σ_g w_jg)`` with ``w_jg = Σ_{i∈g}
    A_ji ε_i`` (cell g's share of the change along direction j, per unit σ) and ``Z_j = Σ_h σ_h w_jh``: the
    cross-cell part of ``∂‖Δf‖²/∂σ_g`` along ``U`` for a map that is linear at this scale. Each term is a
    product of a function of cell g's noise and one of the other cells' noise, independent and zero-mean, so its
    expectation is 0 for every map. ``cells``: the cell of every element of a flattened (C, H, W) image."""
    n, count = eps.shape[:2]
    g = grid * grid
    flat = eps.reshape(n, count, -1)
    w = torch.stack([torch.zeros(n * count, g, device=eps.device).index_add_(
        1, cells, (flat * directions[:, None, j].reshape(n, 1, -1)).reshape(n * count, -1))
        for j in range(directions.shape[1])], dim=1).reshape(n, count, -1, g)  # (n, count, p, G)
    z = w * sigma.reshape(n, 1, 1, g)
    return 2 * (w * (z.sum(dim=-1, keepdim=True) - z)).sum(dim=(1, 2))


def _loss_backward(fn, x, clean, s_f, sigma, active: Tensor, noise, opts) -> None:
    """Accumulate into ``sigma.grad`` the gradient of Σ_active mse/s_f, chunk by chunk (exact)."""
    samples = opts["samples"]
    for images, _, count in _blocks(active, samples, opts["chunk"], opts["max_batch"]):
        dev_images = images.to(x.device)
        part = _distortion(fn, x[dev_images], clean[dev_images], sigma[dev_images], noise, images, count,
                           opts["relu"])
        (part / s_f[dev_images]).sum().div(samples).backward()


def _sgd_path(n: int, grid: int, dev, valid: Tensor, opts: dict, settings: dict,
              gradient: Callable[[Tensor, Tensor, Tensor], Tensor]):
    """The released code's loop: clamp, record mean H, step, stop/boost at step ``steps``, keep the iterate
    nearest the target. ``gradient(sigma, active, lam)`` gives ∂/∂σ of Σ_active (distortion/s_f − λ·H)."""
    lo, hi, target = opts["sigma_min"], opts["sigma_max"], opts["target"]
    lr, steps, extra = settings["lr"], opts["steps"], opts["extra_steps"]
    lam = torch.as_tensor(opts["lam"], dtype=torch.float32, device=dev).expand(n).clone()
    sigma = torch.full((n, grid, grid), float(opts["sigma0"]), device=dev)
    active = valid.clone()
    total = steps + extra
    history = torch.full((n, total), float("nan"))
    kept = sigma.clone()
    best = torch.full((n,), float("inf"), device=dev)
    kept_step = torch.zeros(n, dtype=torch.long, device=dev)
    for t in range(total):
        sigma.clamp_(lo, hi)
        h = torch.log(sigma).mean(dim=(1, 2)) + HALF_LOG_2PI_E
        history[active.cpu(), t] = h[active].cpu()
        gap = (h - target).abs() if target is not None else torch.zeros_like(h)
        better = active & (gap <= best if target is None else gap < best)
        best = torch.where(better, gap, best)
        kept[better] = sigma[better]
        kept_step[better] = t
        if t == total - 1 or not bool(active.any()):
            break
        # One SGD step on the images still running.
        grad = gradient(sigma, active, lam)
        sigma[active] -= lr * grad[active]
        if t == steps - 1 and target is not None:
            # The released stop rule: an image whose mean entropy rose above the target stops; the others
            # go on with a boosted λ.
            reached = (torch.nan_to_num(history[:, :steps], nan=-float("inf")).max(dim=1).values > target).to(dev)
            lam = torch.where(active & ~reached, lam * opts["boost"], lam)
            active = active & ~reached
    return kept.clamp(lo, hi), kept_step, lam, history


def _faithful(fn, x, clean, s_f, valid, noise, grid, opts, settings):
    def gradient(sigma: Tensor, active: Tensor, lam: Tensor) -> Tensor:
        leaf = sigma.clone().requires_grad_(True)
        h = torch.log(leaf).mean(dim=(1, 2)) + HALF_LOG_2PI_E
        (-(lam * h)[active].sum()).backward()
        _loss_backward(fn, x, clean, s_f, leaf, torch.nonzero(active).flatten().cpu(), noise, opts)
        return leaf.grad

    return _sgd_path(x.shape[0], grid, x.device, valid, opts, settings, gradient)


def _converged(fn, x, clean, s_f, valid, noise, grid, opts, sketch: Tensor | None):
    """Minimise the normalised distortion D(σ) = mse/s_f over σ with mean log σ fixed and σ in the clamp box.

    Stationarity (KKT) says: ``2 σ_g² C_g(σ) = μ`` for every cell inside the box, where ``C_g(σ) = (∂D/∂σ_g) /
    (2 σ_g)`` is the cell's local squared sensitivity (for a linear map a constant), and a cell at a bound is
    one whose unconstrained value lies beyond it. So ``log σ = clip(−½ log C(σ) + τ)`` with τ fixing the mean —
    the Euclidean projection of ``−½ log C`` onto the constraint set — is the fixed point. We iterate it:
    ``C`` is estimated from the reparameterised Monte-Carlo gradient (``samples`` fresh draws a step), averaged
    over steps (weights below), and log σ moves ``converged_damping`` of the way to the projected fixed point
    each step, by at most ``converged_trust`` nats per cell. ``history`` records D per step.

    **Why it failed on correlated maps (measured, estimator.md T2).** One sample's gradient for cell g,
    ``2 (J_g ε_g)ᵀ Δf``, holds, besides the cell's own term (mean ``2 σ_g C_g``), the cross terms ``2 (J_g
    ε_g)ᵀ J_h σ_h ε_h`` of every other cell h: zero-mean, but when the Jacobian has a dominant common direction
    they add up over the G cells. On the all-positive linear map of the tests (W = U[0,1) × log-normal cell
    scale, 48 × 256, grid 8), at the optimum one sample's estimate of C_g has a relative s.d. of 6.2 (1.4 with
    zero-mean Gaussian weights) and 42 % of them are negative. With the exact expected gradient the iteration
    converges (error 0); with Monte-Carlo gradients it did at 512 samples a step (mean error 0.012 nats) but not
    at 32 or 128 (1.3–2.0 nats, 20–27 % of cells at ``sigma_min``). So the noise is the cause, and the old
    averaging turned it into divergence instead of a proportionate error: the noise of a step's estimate for
    cell g scales as 1/σ_g (the cross terms do not shrink with σ_g, the signal does), yet every step had the same
    weight, so steps at small σ_g swamped the average; an average that came out ≤ 0 read as "insensitive" and
    sent the cell up, and, through the mean constraint, the others down to the floor, where their estimates grew
    noisier still. Three remedies, each measured (mean / max error in nats, 3 noise seeds):

    1. **Inverse-variance weights**: ``Ĉ_g = Σ_t w_t σ_{g,t}² c_{g,t} / Σ_t w_t σ_{g,t}²`` (``w_t = max(1/(t+1),
       converged_average)``: all steps alike at first, then a moving window, since ``C`` changes with σ for a
       non-linear map). Alone, on the all-positive map at 32 samples × 100 steps: 0.049–0.051 / 0.17–0.19, the
       Monte-Carlo floor (s.d. ½ · 6.2 / √(32 · 88) ≈ 0.06), instead of 1.3–1.5 / 3.3–4.5.
    2. **Control variate** (``converged_directions`` = p > 0): subtract, sample by sample, the cross terms along
       the p dominant directions U of the feature change (a randomised range finder on the ``s_f`` draw,
       :func:`_normaliser`), computed with the Jacobian at the clean image ``A = Uᵀ J(x)`` (p vector–Jacobian
       products per image, :func:`_feature_directions`): ``Σ_j w_jg Σ_{h≠g} σ_h w_jh``, ``w_jg = Σ_{i∈g} A_ji
       ε_i`` (:func:`_cross_terms`). Each term is a function of ε_g times one of ε_{−g}, so its mean is 0 for any
       f: the estimate stays unbiased whatever the map. For a linear map it removes the cross terms along U
       exactly: relative s.d. 6.2 → 1.2 (p ≥ 1) on the all-positive map, 1.37 → 1.24 (p = 8) on Gaussian
       weights; with 1 and 2: 0.008–0.009 / 0.024–0.032. On untrained Part I networks' fc1 features (ReLU'd), where the
       Jacobian at the perturbed points differs from J(x), it helps less (resnet20-fc: 5.3 → 4.0; conv features
       0.6 → 0.6).
    3. **Trust region** (``converged_trust``, 0.25 nats a step): bounds how far one noisy early average can move
       a cell. Without it, resnet20-fc's fc1 at the book's 16 samples × 30 steps: 0.18–0.29 / 0.8–1.1 mean / max
       against a 64 × 100 reference (Spearman 0.70–0.86); with 1–3: 0.085–0.091 / 0.3–0.45 (Spearman 0.97; the
       old iteration: 1.2–1.4 / 3.5, Spearman 0.15–0.22, 14–18 cells pinned). On the linear maps it changes
       nothing measurable.
    """
    n, dev = x.shape[0], x.device
    lo, hi = math.log(opts["sigma_min"]), math.log(opts["sigma_max"])
    mean = opts["target"] - HALF_LOG_2PI_E
    steps, forget, damping = opts["converged_steps"], opts["converged_average"], opts["converged_damping"]
    trust = opts["converged_trust"]
    samples, features = opts["samples"], clean.shape[1]
    log_sigma = _project(torch.full((n, grid * grid), math.log(opts["sigma0"]), device=dev), mean, lo, hi)
    log_sigma = log_sigma.reshape(n, grid, grid)
    c_sum = torch.zeros(n, grid, grid, device=dev)
    w_sum = torch.zeros(n, grid, grid, device=dev)
    history = torch.full((n, max(steps, 1)), float("nan"))
    idx = torch.nonzero(valid).flatten().cpu()
    directions = _feature_directions(fn, x, sketch, opts) if sketch is not None and steps > 0 else None
    cells = _cell_index(grid, x.shape[-2:], dev).repeat(x.shape[1])  # (C·H·W,): channels share a cell
    for t in range(steps):
        sigma = torch.exp(log_sigma).requires_grad_(True)
        record = torch.zeros(n, device=dev)
        cross = torch.zeros(n, grid * grid, device=dev)
        for images, _, count in _blocks(idx, samples, opts["chunk"], opts["max_batch"]):
            d_images = images.to(dev)
            part, eps, _ = _distortion(fn, x[d_images], clean[d_images], sigma[d_images], noise, images, count,
                                       opts["relu"], keep=True)
            part = part / s_f[d_images] / samples
            part.sum().backward()
            record[d_images] += part.detach()
            if directions is not None:
                cross[d_images] += (_cross_terms(directions[d_images], eps, sigma.detach()[d_images], cells, grid)
                                    / (features * samples * s_f[d_images, None]))
        with torch.no_grad():
            spread = sigma.detach()
            c_t = (sigma.grad - cross.reshape(n, grid, grid)) / (2 * spread)
            # Inverse-variance weights: the noise of c_t for cell g scales as 1/σ_g (see the docstring).
            weight = max(1.0 / (t + 1), forget)
            c_sum = (1 - weight) * c_sum + weight * spread ** 2 * c_t
            w_sum = (1 - weight) * w_sum + weight * spread ** 2
            c_hat = c_sum / w_sum
            floor = c_hat.flatten(1).abs().amax(dim=1).clamp(min=1e-30)[:, None, None] * 1e-12
            target_log = _project((-0.5 * torch.log(torch.maximum(c_hat, floor))).flatten(1), mean, lo, hi)
            step = damping * (target_log.reshape(n, grid, grid) - log_sigma)
            if trust is not None:
                step = step.clamp(-trust, trust)
            log_sigma = _project((log_sigma + step).flatten(1), mean, lo, hi).reshape(n, grid, grid)
        history[:, t] = record.cpu()
        history[~valid.cpu(), t] = float("nan")
    sigma = torch.exp(log_sigma)
    step = torch.full((n,), steps, dtype=torch.long)
    return sigma, step, torch.full((n,), float("nan")), history


def _cell_index(grid: int, size: tuple[int, int], dev) -> Tensor:
    """The cell of every pixel (flattened), as the nearest upsampling of :func:`upsample` assigns it."""
    cells = torch.arange(grid * grid, dtype=torch.float32, device=dev).reshape(1, grid, grid)
    return upsample(cells, size).reshape(-1).long()


def _sensitivities(fn, x: Tensor, clean: Tensor, seeds: Sequence[int], grid: int, opts: dict
                   ) -> tuple[Tensor, Tensor]:
    """Per image, the cells' squared sensitivities ``C_g = Σ_{i ∈ g} (JᵀJ)_ii / D`` of ``x ↦ relu(f(x))`` (its
    ReLU mask included; D feature elements, as the distortion is a mean over them), from ``vjps`` random
    vector–Jacobian products: ``E_v[(Jᵀv)_i²] = (JᵀJ)_ii`` for ``v ~ N(0, I)``. Also the linearised ``s_f =
    sigma0² Σ_g C_g``. Each image draws its probe vectors from its own generator."""
    n, dev, vjps = x.shape[0], x.device, opts["vjps"]
    features = clean.shape[1]
    probes = _Noise(seeds, (features,), dev)
    total = torch.zeros_like(x)
    for images, _, count in _blocks(torch.arange(n), vjps, opts["chunk"], opts["max_batch"]):
        d_images = images.to(dev)
        xi = x[d_images][:, None].expand(-1, count, *x.shape[1:]).reshape(-1, *x.shape[1:]).clone()
        xi.requires_grad_(True)
        out = fn(xi)
        if opts["relu"]:
            out = F.relu(out)
        v = probes.draw(images.tolist(), count)
        (out.reshape(len(images), count, -1) * v).sum().backward()
        total[d_images] += (xi.grad.reshape(len(images), count, *x.shape[1:]) ** 2).sum(dim=1)
    pixel = total.sum(dim=1).reshape(n, -1) / vjps  # channels share a cell's σ
    cells = torch.zeros(n, grid * grid, device=dev).index_add_(1, _cell_index(grid, x.shape[-2:], dev), pixel)
    sensitivity = cells.reshape(n, grid, grid) / features
    return sensitivity, opts["sigma0"] ** 2 * sensitivity.sum(dim=(1, 2))


def _linearised(sensitivity: Tensor, valid: Tensor, grid: int, opts: dict, settings: dict):
    """The estimator's answer for the linearised feature map with sensitivities C (exact expectations, no
    Monte-Carlo): ``predict="faithful"`` runs the released SGD loop on the expected gradient
    ``2 σ_g C_g / (σ0² C_tot) − λ / (G σ_g)`` (clamp, stop, boost and selection included; estimator.md T3 is its
    gradient flow); ``predict="converged"`` is the T2 optimum ``log σ = −½ log C + τ``, projected onto the
    clamp box at the target mean entropy."""
    n, dev = sensitivity.shape[0], sensitivity.device
    total = sensitivity.sum(dim=(1, 2)).clamp(min=1e-38)[:, None, None]
    if opts["predict"] == "faithful":
        a = torch.where(valid[:, None, None], sensitivity / (opts["sigma0"] ** 2 * total), 0.0)
        cells = grid * grid

        def gradient(sigma: Tensor, active: Tensor, lam: Tensor) -> Tensor:
            return 2 * sigma * a - lam[:, None, None] / (cells * sigma)

        return _sgd_path(n, grid, dev, valid, opts, settings, gradient)
    lo, hi = math.log(opts["sigma_min"]), math.log(opts["sigma_max"])
    floor = sensitivity.flatten(1).amax(dim=1).clamp(min=1e-30)[:, None, None] * 1e-12
    wanted = -0.5 * torch.log(torch.maximum(sensitivity, floor))
    log_sigma = _project(wanted.flatten(1), opts["target"] - HALF_LOG_2PI_E, lo, hi).reshape(n, grid, grid)
    sigma = torch.exp(log_sigma)
    distortion = (sigma ** 2 * sensitivity).sum(dim=(1, 2)) / (opts["sigma0"] ** 2 * total[:, 0, 0])
    history = torch.where(valid, distortion, float("nan")).cpu()[:, None]
    return sigma, torch.zeros(n, dtype=torch.long), torch.full((n,), float("nan")), history
