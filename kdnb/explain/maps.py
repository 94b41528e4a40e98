"""One explanation map per class for every image of a batch: ``class_maps(model, x, method, layer)``.

Methods (Gu et al. 2020, §2; the references the tests check against are Captum's):

* ``"gradcam"`` (Selvaraju et al. 2017) at a layer with activations ``A`` (N, C, h, w): per class k,
  :math:`\\mathrm{ReLU}(\\sum_c \\alpha_{kc} A_c)` with :math:`\\alpha_{kc}` the spatial mean of
  :math:`\\partial z_k / \\partial A_c`. Map shape ``(h, w)``. Equals Captum's
  ``LayerGradCam(model, layer).attribute(x, target=k, relu_attributions=True)``.
* ``"grad"``: :math:`\\partial z_k / \\partial x`, signed (Captum ``Saliency(abs=False)``).
* ``"grad_x_input"``: :math:`x \\odot \\partial z_k / \\partial x` (Captum ``InputXGradient``).
* ``"guided_backprop"`` (Springenberg et al. 2015): the gradient with every ReLU passing back only positive
  gradients (Captum ``GuidedBackprop``). Input-space maps have the input's shape ``(C, H, W)``.

**All classes at once.** Grad-CAM at the output of the last stage, when global average pooling and one
``nn.Linear`` follow it (kdnb's ResNets, WRNs, VGGs and plain CNNs at their default layer), has the closed form
:math:`\\partial z_k / \\partial A_{cij} = W_{kc} / (hw)`, so the K maps are
:math:`\\mathrm{ReLU}(\\sum_c W_{kc} A_c) / (hw)`: one forward, no backward. Everywhere else the K gradients come
from one forward and K backwards over its graph (one per class; measured faster on the CPU than the vectorised
``is_grads_batched``, see :func:`all_class_gradients`), from the logits to the layer (Grad-CAM) or to the input.

**Per class, batch-summed, as Captum.** The gradient for class k is that of :math:`\\sum_i z_{ik}` (Captum's
``target=k`` on a batch). In eval mode that is each image's own gradient; in train mode BatchNorm normalises by
the batch, so an image's map also carries the (small) influence of the others through the batch statistics,
exactly as Captum's would. Grad-CAM at the last stage is unaffected (no BatchNorm after it).

**No side effects.** The model is run in the mode it is in (train: batch statistics), inside
:func:`kdnb.modules.batchnorm_statistics_fixed`, so running statistics and ``num_batches_tracked`` do not move;
gradients are taken with ``torch.autograd.grad`` with respect to the input or the layer only, so no parameter's
``.grad`` is touched. Dropout, where a model has it, draws new masks in train mode (as any forward does).
Maps are detached.

**Layers.** For a :class:`kdnb.models.FeatureModel` a layer is a feature name of ``forward_features``
(``"stage3"``, ``"stage2.block1"``, ``"conv5.pre"``, ...). The default is the last spatial (≥ 3-D) feature the
model records: the stage output that global pooling reads in GAP models (``"stage3"`` in ResNets/WRNs,
``"block5"`` in VGGs, the last ``convJ`` in plain CNNs) and the last conv map before the FC head in FC-headed nets.
For any other ``nn.Module`` pass the submodule whose output is the layer (a forward hook records it; the module
must run once per forward). kdnb's ResNets run their blocks through ``residual_sum``, so hooks on a block or
stage module never fire: name the feature instead.

**Guided backprop** intercepts ``F.relu`` / ``torch.relu`` / ``Tensor.relu`` (and ``nn.ReLU``, which calls
``F.relu``) for the duration of the call with a ``TorchFunctionMode``, so it works on kdnb's models, which use
functional ReLUs (Captum's ``GuidedBackprop`` only sees ``nn.ReLU`` modules and silently returns the plain
gradient on them). An in-place ``F.relu(x, inplace=True)`` runs out of place under it; models must use the
returned tensor (all of kdnb's do). Other activations are left as they are.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..modules import batchnorm_statistics_fixed

METHODS = ("gradcam", "grad", "grad_x_input", "guided_backprop")
INPUT_METHODS = ("grad", "grad_x_input", "guided_backprop")


def _gap_linear_families() -> tuple[type, ...]:
    """Model classes whose ``pooled`` feature is the global average of the feature right before it, fed to the
    single ``nn.Linear`` ``classifier`` (no dropout, ReLU or BatchNorm in between)."""
    from ..models import VGG, CifarResNet, PlainCNN, WideResNet

    return (CifarResNet, PlainCNN, VGG, WideResNet)


def gap_linear_layer(model: nn.Module) -> str | None:
    """The feature that global average pooling reads right before the single linear classifier, if ``model`` is
    one of the families where that holds (then Grad-CAM there has the closed form); ``None`` otherwise."""
    if not isinstance(model, _gap_linear_families()):
        return None
    names = list(model.feature_names)
    return names[names.index("pooled") - 1]


def gradcam_closed_form(activations: Tensor, weight: Tensor) -> Tensor:
    """All-class Grad-CAM for ``logits = Linear(mean_hw(A))``: ``ReLU(einsum(W, A)) / (h w)``, shape
    ``(N, K, h, w)``, detached. ``activations``: ``A`` (N, C, h, w); ``weight``: the Linear's (K, C)."""
    a = activations.detach()
    area = a[0, 0].numel()
    return F.relu(torch.einsum("kc,nc...->nk...", weight.detach(), a)).div_(area)


CLASSES_PER_PASS = 16  # one-hot gradients per vectorised backward: bounds memory for many classes (CIFAR-100)
STRATEGIES = ("loop", "batched")


def all_class_gradients(logits: Tensor, inputs: Tensor, retain_graph: bool = False, strategy: str = "loop",
                        classes_per_pass: int = CLASSES_PER_PASS) -> Tensor:
    """:math:`\\partial (\\sum_i z_{ik}) / \\partial \\text{inputs}` for every class k, shape
    ``(N, K, *inputs.shape[1:])``, by one backward per class over the same graph (``"loop"``, the default) or by
    vectorised backwards (``"batched"``: ``is_grads_batched``, ``classes_per_pass`` classes a pass). Parameter
    ``.grad`` is untouched.

    Why the loop: ``is_grads_batched`` runs on PyTorch's legacy vmap prototype, which has no batching rule for
    ``convolution_backward`` or ``native_batch_norm_backward`` and falls back to a slow per-example loop (torch
    2.14 warns so with vmap fallback warnings on). Measured on the 2-core CPU, resnet8, 64 images of 28x28, all
    10 classes: loop 1.49 s, ``is_grads_batched`` 3.45 s, ``torch.func.vmap`` over ``torch.func.vjp`` 1.36 s
    (5 interleaved repeats, medians; one CE forward+backward: 0.28 s). ``torch.func`` would need its own forward,
    which Grad-CAM from the training forward cannot have; the loop serves every path. GPU not measured."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    n, k = logits.shape
    eye = torch.eye(k, dtype=logits.dtype, device=logits.device)
    step = 1 if strategy == "loop" else classes_per_pass
    parts = []
    for first in range(0, k, step):
        rows = eye[first:first + step]
        keep = retain_graph or first + step < k
        if strategy == "loop":
            (grads,) = torch.autograd.grad(logits, inputs, grad_outputs=rows[0].expand(n, k), retain_graph=keep)
            parts.append(grads[None])
        else:
            (grads,) = torch.autograd.grad(logits, inputs, grad_outputs=rows[:, None, :].expand(len(rows), n, k),
                                           is_grads_batched=True, retain_graph=keep)
            parts.append(grads)
    return torch.cat(parts).transpose(0, 1)


def gradcam_from_gradients(activations: Tensor, grads: Tensor) -> Tensor:
    """Grad-CAM maps from ``A`` (N, C, *s) and all-class gradients (N, K, C, *s): ``ReLU(Σ_c mean_s(g) A_c)``."""
    spatial = tuple(range(3, grads.dim()))
    alpha = grads.mean(dim=spatial)  # (N, K, C)
    return F.relu(torch.einsum("nkc,nc...->nk...", alpha, activations.detach()))


def gradcam_from_forward(model: nn.Module, logits: Tensor, features: dict[str, Tensor],
                         layer: str | None = None) -> Tensor:
    """All-class Grad-CAM from a forward that already ran (``logits, features = model.forward_features(x)``,
    e.g. the training forward): the closed form where it holds, else one backward per class from ``logits`` to
    ``features[layer]``, keeping the graph (``retain_graph``) for the training loss. Detached, ``(N, K, h, w)``."""
    layer = _resolve_feature(model, features, layer)
    activations = features[layer]
    if activations.dim() < 3:
        raise ValueError(f"Grad-CAM needs a spatial layer; {layer!r} has shape {tuple(activations.shape)}")
    fast = gap_linear_layer(model)
    if fast is not None and activations is features[fast]:
        return gradcam_closed_form(activations, model.classifier.weight)
    if not activations.requires_grad:
        raise ValueError(f"feature {layer!r} does not require grad; run the forward with autograd enabled")
    with torch.enable_grad():
        grads = all_class_gradients(logits, activations, retain_graph=True)
    return gradcam_from_gradients(activations, grads).detach()


def class_maps(model: nn.Module, x: Tensor, method: str = "gradcam", layer: str | nn.Module | None = None) -> Tensor:
    """One map per class for each image: ``(N, K, h, w)`` for ``"gradcam"`` at ``layer``, ``(N, K, C, H, W)``
    for ``"grad"``, ``"grad_x_input"`` and ``"guided_backprop"`` (raw signed values). Detached; no side effects
    on the model (see the module docstring for the methods, the fast path, layers and train mode)."""
    if method not in METHODS:
        raise ValueError(f"unknown explanation method {method!r}; choose one of: {', '.join(METHODS)}")
    if method != "gradcam" and layer is not None:
        raise ValueError(f"{method!r} explains the input; it takes no layer")
    with batchnorm_statistics_fixed(model):
        if method == "gradcam":
            return _gradcam(model, x, layer)
        return _input_maps(model, x, method)


def _input_maps(model: nn.Module, x: Tensor, method: str) -> Tensor:
    inputs = x.detach().requires_grad_(True)
    relus = _guided_relus() if method == "guided_backprop" else contextlib.nullcontext()
    with torch.enable_grad(), relus:
        logits = model(inputs)
        grads = all_class_gradients(logits, inputs)
    if method == "grad_x_input":
        grads = grads * x.detach().unsqueeze(1)
    return grads.detach()


def _gradcam(model: nn.Module, x: Tensor, layer: str | nn.Module | None) -> Tensor:
    if isinstance(layer, nn.Module):
        return _gradcam_at_module(model, x, layer)
    if not hasattr(model, "forward_features"):
        raise TypeError(f"{type(model).__name__} has no forward_features: pass the layer as a submodule")
    fast = gap_linear_layer(model)
    if fast is not None and layer in (None, fast):  # closed form: no graph, no backward
        with torch.no_grad():
            _, features = model.forward_features(x)
        return gradcam_closed_form(features[fast], model.classifier.weight)
    with torch.enable_grad():
        logits, features = model.forward_features(x.detach().requires_grad_(True))
        return gradcam_from_forward(model, logits, features, layer)


def _gradcam_at_module(model: nn.Module, x: Tensor, module: nn.Module) -> Tensor:
    seen: list[Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, output: seen.append(output))
    try:
        with torch.enable_grad():
            logits = model(x.detach().requires_grad_(True))
    finally:
        handle.remove()
    if len(seen) != 1:
        raise ValueError(f"the layer module ran {len(seen)} times in one forward; Grad-CAM needs exactly one")
    activations = seen[0]
    if not isinstance(activations, Tensor) or activations.dim() < 3:
        raise ValueError("Grad-CAM needs a layer whose output is a spatial tensor")
    with torch.enable_grad():
        grads = all_class_gradients(logits, activations)
    return gradcam_from_gradients(activations, grads).detach()


def _resolve_feature(model: nn.Module, features: dict[str, Tensor], layer: str | None) -> str:
    if layer is None:
        fast = gap_linear_layer(model)
        if fast is not None:
            return fast
        spatial = [name for name, t in features.items() if t.dim() >= 3]
        if not spatial:
            raise ValueError(f"{getattr(model, 'name', type(model).__name__)} records no spatial feature; "
                             "Grad-CAM needs one (use an input-space method such as 'grad')")
        return spatial[-1]
    if layer not in features:
        raise ValueError(f"{getattr(model, 'name', type(model).__name__)} has no feature {layer!r}; "
                         f"its features are: {', '.join(features)}")
    return layer


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward passes only positive gradients where the input was positive."""

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return x.clamp(min=0)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (output,) = ctx.saved_tensors
        return grad.clamp(min=0) * (output > 0)


_RELUS = {F.relu, F.relu_, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_}


class _GuidedReLUMode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _RELUS:
            return _GuidedReLU.apply(args[0])
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def _guided_relus() -> Iterator[None]:
    with _GuidedReLUMode():
        yield
