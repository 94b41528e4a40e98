"""Layer-wise relevance propagation (LRP) heat maps for Huang et al. (2021) §4.7, Figs. 1 and 3: the teacher, the
KD student, and the inheritance and exploration channels of the IE-KD student.

``lrp(model, x, target)`` returns the relevance of every input value for the target logit, ``(B, C, H, W)``;
:func:`heatmap` sums it over colour channels. It runs on the model's LRP twin with its BatchNorms merged into
their convolutions (:mod:`kdnb.explain.lrp_twins`: same parameters and logits, explicit parameter-free modules).

Rules. A weight layer with input activations :math:`a_j`, weights :math:`w_{jk}`, bias :math:`b_k` and outputs
:math:`z_k = \\sum_j a_j w_{jk} + b_k` passes down (Montavon et al. 2019, "Layer-wise relevance propagation: an
overview", the paper's ref. [21], §10.2.1):

* LRP-0: :math:`R_j = \\sum_k a_j w_{jk} R_k / z_k` (stabiliser :data:`STABILIZER`, 1e-9, added with z's sign).
  On a ReLU network, LRP-0 at every layer equals Gradient × Input (tested against Captum's ``InputXGradient``).
* LRP-ε: :math:`R_j = \\sum_k a_j w_{jk} R_k / (z_k + \\epsilon\\,\\mathrm{sign}(z_k))`; ε absorbs weak or
  contradictory relevance (less noise).
* LRP-γ: :math:`R_j = \\sum_k a_j (w_{jk} + \\gamma w_{jk}^+) R_k / \\sum_j a_j (w_{jk} + \\gamma w_{jk}^+)`,
  favouring positive contributions, in its *generalised* form (the one zennit implements): for an output
  :math:`z_k > 0` the positive contributions are boosted, :math:`a^+ (w + \\gamma w^+) + a^- (w + \\gamma w^-)`
  with bias :math:`b + \\gamma b^+`; for :math:`z_k < 0` the negative ones, :math:`a^+ (w + \\gamma w^-) +
  a^- (w + \\gamma w^+)` with bias :math:`b + \\gamma b^-`. It equals the overview's rule where inputs are
  non-negative and outputs positive (tested against Captum's ``GammaRule``). Why generalised: in a ResNet the
  convolution before a residual sum and the projection shortcut pass relevance to *negative* outputs, and the
  overview's rule divides those by :math:`\\sum_j a_j (w + \\gamma w^+)`, which crosses zero there: measured on a
  random ResNet-20, Captum's rule and a second implementation of the same formula (zennit) then differ by
  2-7 % of the map's scale (float rounding amplified by near-zero denominators), the generalised rule by 1e-6.

The paper cites the overview and states no rule. Its maps are signed ("negative relevance of the leaf part
(indicated by blue)", §4.7), so the z⁺ / α1β0 rule, which gives no negative relevance, is not what it shows. Our
presets (``rules=``):

* ``"composite"`` (default; the overview's §10.3 recommendation): LRP-0 in the *upper* layers (last stage and
  classifier), LRP-ε in the *middle* layers, LRP-γ in the *lower* layers. The overview puts the z^B rule on the
  pixel layer; we have no pixel bounds here, so the *first* layer gets LRP-ε. Which layers are
  lower/middle/upper is each twin's :meth:`~kdnb.explain.lrp_twins.LRPTwin.layer_groups` (ResNets: stage 1 /
  stage 2 / stage 3). ε = 0.25 and γ = 0.25 are the overview's values (its ε is 0.25 standard deviations of the
  activations; kdnb's networks normalise pre-activations with BatchNorm, so their scale is near 1).
* ``"epsilon"``: LRP-ε at every weight layer.
* ``"lrp0"``: LRP-0 at every weight layer (= Gradient × Input: the correctness gate).

Everything between weight layers is parameter-free and piecewise linear: residual sums split relevance in
proportion to the contributions, :math:`R_i = x_i R / (x_1 + x_2)`; average pooling by each position's share
:math:`A_{ij} / \\sum A \\cdot R` (zennit's ``Norm`` rule); max pooling gives all of it to the maximum; ReLUs pass
it unchanged; a BatchNorm that follows no convolution (WRN's pre-activation BNs) is an affine layer under LRP-0.
These are the rules that ``relevance = activation × gradient`` gives for such operations, so no hook is needed
there (sums of exactly zero, a measure-zero event, are not stabilised).

How it is computed. One forward and one backward: each weight layer's output is passed on unchanged, but its
backward is replaced by the rule: with :math:`s_k = z_k / z^\\rho_k` (detached), the gradient sent to the input is
:math:`\\partial (\\sum_k z^\\rho_k s_k g_k) / \\partial a`, where :math:`z^\\rho` is the layer evaluated with the
rule's modified weights and inputs and :math:`g_k` the gradient arriving from above. Then
:math:`R = \\text{activation} \\times \\text{gradient}` holds at every tensor, and the input relevance is
:math:`x \\odot \\partial z_{target} / \\partial x` (Montavon et al. 2019, §10.2.2, "implementing LRP
efficiently"). This is not Captum's ``LRP`` (which has no generalised γ and needs two forwards); the tests check
it against Captum's ``LRP`` and ``InputXGradient`` and against zennit 0.5.1 on the unmodified ResNet.

BatchNorm is merged into the convolution before it (as the overview and zennit's canonizers do), so a rule sees
conv + BN as the one affine layer it is in eval mode. Relevance is not conserved once layers have biases (they
absorb their share), and ε absorbs more; maps are returned as they are, not normalised.

Channel groups (IE-KD's inheritance and exploration channels of the last feature map): ``channels=`` explains the
*masked head*, the target logit computed from those channels' pooled features only
(:meth:`~kdnb.explain.lrp_twins.LRPTwin.masked_head`). With LRP-0 at the classifier a channel receives
:math:`\\bar A_c W_{kc}` whatever the other channels hold, and every rule below is linear in the relevance it
receives, so the maps of disjoint groups that cover all channels sum to the full map (tested). A group whose
partial logit is near 0 divides by a near-zero denominator at the classifier: LRP-0 is unstable there.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .lrp_twins import LRPTwin, fold_batchnorm, lrp_twin

__all__ = ["RULES", "STABILIZER", "EPSILON", "GAMMA", "Epsilon", "Gamma", "Rule", "lrp", "group_relevance",
           "heatmap", "layer_rules"]

#: LRP-0's ε and the stabiliser of every rule's denominator, added with the denominator's sign (+ at 0).
STABILIZER = 1e-9
#: Default ε of LRP-ε and γ of LRP-γ (Montavon et al. 2019, §10.3).
EPSILON = 0.25
GAMMA = 0.25
RULES = ("composite", "epsilon", "lrp0")


def _stabilize(z: Tensor, epsilon: float) -> Tensor:
    """``z + ε sign(z)`` with sign(0) = +1 (Captum's and zennit's convention)."""
    return z + epsilon * torch.where(z >= 0, 1.0, -1.0).to(z)


class _Relay(torch.autograd.Function):
    """Forward: ``z`` unchanged. Backward: nothing to ``z``; ``grad * scale_i`` to each ``term_i`` (whose graphs
    lead to the layer input)."""

    @staticmethod
    def forward(ctx, z: Tensor, *terms_and_scales: Tensor) -> Tensor:  # type: ignore[override]
        half = len(terms_and_scales) // 2
        ctx.half = half
        ctx.save_for_backward(*terms_and_scales[half:])
        return z.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        scales = ctx.saved_tensors
        return (None, *(grad * scale for scale in scales), *([None] * ctx.half))


def _linear_map(module: nn.Module) -> Callable[[Tensor, Tensor, Tensor | None], Tensor]:
    if isinstance(module, nn.Conv2d):
        return module._conv_forward
    if isinstance(module, nn.Linear):
        return F.linear
    raise TypeError(f"LRP rules apply to Conv2d and Linear layers, not {type(module).__name__}")


@dataclass(frozen=True)
class Epsilon:
    """LRP-ε (LRP-0 for ε = :data:`STABILIZER`): :math:`R_j = \\sum_k a_j w_{jk} R_k / (z_k + \\epsilon\\,
    \\mathrm{sign}\\, z_k)` (Montavon et al. 2019, §10.2.1)."""

    epsilon: float = STABILIZER

    def __call__(self, module: nn.Module, a: Tensor, z: Tensor) -> Tensor:
        scale = (z / _stabilize(z, self.epsilon)).detach()
        return _Relay.apply(z, z, scale)


@dataclass(frozen=True)
class Gamma:
    """Generalised LRP-γ (see the module docstring; Montavon et al. 2019, §10.2.1, for non-negative inputs and
    positive outputs), the bias treated as a weight on a constant positive input."""

    gamma: float = GAMMA
    stabilizer: float = STABILIZER

    def __call__(self, module: nn.Module, a: Tensor, z: Tensor) -> Tensor:
        f = _linear_map(module)
        w, b = module.weight, module.bias
        g = self.gamma
        w_up, w_down = w + g * w.clamp(min=0), w + g * w.clamp(max=0)
        b_up = None if b is None else b + g * b.clamp(min=0)
        b_down = None if b is None else b + g * b.clamp(max=0)
        a_pos, a_neg = a.clamp(min=0), a.clamp(max=0)
        up = f(a_pos, w_up, b_up) + f(a_neg, w_down, None)      # denominators of positive outputs
        down = f(a_pos, w_down, b_down) + f(a_neg, w_up, None)  # ... of negative outputs
        zd = z.detach()
        scale_up = (torch.where(zd > 0, zd, 0.0) / _stabilize(up.detach(), self.stabilizer)).detach()
        scale_down = (torch.where(zd < 0, zd, 0.0) / _stabilize(down.detach(), self.stabilizer)).detach()
        return _Relay.apply(z, up, down, scale_up, scale_down)


Rule = Callable[[nn.Module, Tensor, Tensor], Tensor]


def layer_rules(twin: LRPTwin, rules: str = "composite", epsilon: float = EPSILON,
                gamma: float = GAMMA) -> dict[str, Rule]:
    """The rule of every weight layer of ``twin`` under a preset (see the module docstring), by module name."""
    if rules not in RULES:
        raise ValueError(f"unknown LRP rules {rules!r}; choose one of: {', '.join(RULES)}")
    if epsilon < 0 or gamma < 0:
        raise ValueError(f"epsilon and gamma must be >= 0; got {epsilon}, {gamma}")
    eps = Epsilon(max(epsilon, STABILIZER))
    by_group: dict[str, Rule] = {
        "lrp0": dict.fromkeys(("first", "lower", "middle", "upper"), Epsilon()),
        "epsilon": dict.fromkeys(("first", "lower", "middle", "upper"), eps),
        "composite": {"first": eps, "lower": Gamma(gamma), "middle": eps, "upper": Epsilon()},
    }[rules]
    return {name: by_group[group] for group, names in twin.layer_groups().items() for name in names}


def _prepared(model: nn.Module) -> LRPTwin:
    """The model's twin with BatchNorms merged, on the model's device, in eval mode, parameters frozen."""
    twin = fold_batchnorm(lrp_twin(model))
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


def _attribute(twin: LRPTwin, x: Tensor, target: int | Tensor, rules: Mapping[str, Rule],
               channels: Tensor | None) -> Tensor:
    modules = dict(twin.named_modules())

    def hook(rule: Rule) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], Tensor]:
        return lambda module, inputs, output: rule(module, inputs[0], output)

    handles = [modules[name].register_forward_hook(hook(rule)) for name, rule in rules.items()]
    try:
        with torch.enable_grad(), twin.masked_head(channels):
            inputs = x.detach().clone().requires_grad_(True)
            logits = twin(inputs)
            index = torch.as_tensor(target, device=logits.device).long()
            index = index.expand(logits.shape[0]) if index.ndim == 0 else index
            if index.shape != (logits.shape[0],):
                raise ValueError(f"target must be one class or one per image ({logits.shape[0]}); "
                                 f"got shape {tuple(index.shape)}")
            selected = logits.gather(1, index[:, None]).sum()
            (grad,) = torch.autograd.grad(selected, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return (inputs * grad).detach()


def _chosen(twin: LRPTwin, rules: str | Mapping[str, Rule], epsilon: float, gamma: float) -> Mapping[str, Rule]:
    if isinstance(rules, str):
        return layer_rules(twin, rules, epsilon, gamma)
    modules = dict(twin.named_modules())
    unknown = [name for name in rules if not isinstance(modules.get(name), (nn.Conv2d, nn.Linear))]
    if unknown:
        raise ValueError(f"rules name no weight layer of the twin: {', '.join(unknown)}")
    return rules


def lrp(model: nn.Module, x: Tensor, target: int | Tensor, rules: str | Mapping[str, Rule] = "composite",
        epsilon: float = EPSILON, gamma: float = GAMMA, channels: Tensor | None = None) -> Tensor:
    """LRP relevance of each input value for the ``target`` logit, ``(B, C, H, W)`` like ``x``.

    Args:
        model: a trained kdnb model (or its twin); it is copied, never modified, and explained in eval mode.
        x: normalised input images on the model's device.
        target: the class to explain, one for all images or a ``(B,)`` tensor (e.g. the labels or predictions).
        rules: ``"composite"`` (default), ``"epsilon"`` or ``"lrp0"`` (see the module docstring), or a rule per
            weight layer, ``{module name: Epsilon(...) | Gamma(...)}`` (names as in the model; layers not named
            are LRP-0 without stabiliser, i.e. plain gradient).
        epsilon, gamma: ε of LRP-ε and γ of LRP-γ (presets only).
        channels: explain only these channels of the last feature map (index tensor or boolean mask): the
            masked head of the module docstring, e.g. IE-KD's inheritance channels.

    The sum of a map is the target logit minus what biases and ε absorbed (exactly the logit for ``"lrp0"`` on
    a network without biases). Deterministic: no randomness is involved.
    """
    twin = _prepared(model)
    return _attribute(twin, x, target, _chosen(twin, rules, epsilon, gamma), channels)


def group_relevance(model: nn.Module, x: Tensor, target: int | Tensor, groups: Mapping[str, Tensor],
                    rules: str | Mapping[str, Rule] = "composite", epsilon: float = EPSILON,
                    gamma: float = GAMMA) -> dict[str, Tensor]:
    """The full map (key ``"full"``) and one map per channel group of the last feature map (e.g.
    ``{"inheritance": inh_index, "exploration": exp_index}``), from one prepared twin. Disjoint groups covering
    every channel sum to the full map (up to float rounding)."""
    if "full" in groups:
        raise ValueError("'full' is reserved for the whole map; name the groups otherwise")
    twin = _prepared(model)
    chosen = _chosen(twin, rules, epsilon, gamma)
    maps = {"full": _attribute(twin, x, target, chosen, None)}
    for name, channels in groups.items():
        maps[name] = _attribute(twin, x, target, chosen, channels)
    return maps


def heatmap(relevance: Tensor) -> Tensor:
    """A relevance map summed over the colour channels: ``(B, C, H, W) -> (B, H, W)``, the heat map the paper
    draws (red positive, blue negative)."""
    if relevance.ndim != 4:
        raise ValueError(f"expected (B, C, H, W) relevance, got shape {tuple(relevance.shape)}")
    return relevance.sum(dim=1)
