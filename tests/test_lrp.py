"""LRP twins and LRP maps (kdnb.explain.lrp_twins, kdnb.explain.lrp) against Captum, zennit and closed forms.

References come from the libraries and from the definitions, never from our engine:

* Captum's ``InputXGradient`` on the unmodified model: LRP-0 on a ReLU network is Gradient × Input (Montavon et
  al. 2019, §10.2.1);
* Captum's ``LRP`` with its own ``EpsilonRule`` / ``GammaRule`` on the (BN-merged) twin: the twin's
  parameter-free modules are what Captum needs, and our one-backward engine must give Captum's numbers;
* zennit 0.5.1 on the *unmodified* ResNet, with the canonizers written here (a ``Sum`` module for
  ``BasicBlock.residual_sum``, a pooling module, zennit's ``SequentialMergeBatchNorm``) and zennit's own rules
  (``Epsilon``, the generalised ``Gamma``, ``Norm`` on sums and pooling, ``Pass`` on merged BatchNorms).

Networks are small and random, with random BatchNorm statistics and affine parameters so that folding and biases
matter. Tolerances are stated where they are used, with the reason for each.
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from captum.attr import LRP, InputXGradient
from captum.attr._utils.lrp_rules import EpsilonRule, GammaRule
from torch import nn

from kdnb import models
from kdnb.distill.inheritance import ChannelSplit
from kdnb.explain import lrp_twins
from kdnb.explain.lrp import Epsilon, Gamma, group_relevance, heatmap, layer_rules, lrp
from kdnb.explain.lrp_twins import fold_batchnorm, last_feature_map, lrp_twin
from kdnb.models.resnet_cifar import BasicBlock, CifarResNet

warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")

FAMILIES = {  # name -> create() options; the smallest member of each family
    "resnet8": {},
    "wrn-10-1": {},
    "vgg8": {},
    "cnn8": {},
    "mobilenet": {"width": 0.25},
}


def randomized(name: str, seed: int = 0, biases: bool = True, bn_eps: float | None = None) -> nn.Module:
    """A model with random BN statistics and affine parameters (a stand-in for a trained one), in eval mode.
    ``biases=False``: no bias anywhere after BN merging (BN shift and running mean 0, classifier bias 0)."""
    torch.manual_seed(seed)
    model = models.create(name, **FAMILIES.get(name, {}))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            if biases:
                module.running_mean.uniform_(-0.5, 0.5)
                module.bias.data.uniform_(-0.3, 0.3)
            if bn_eps is not None:
                module.eps = bn_eps
    if not biases:
        nn.init.zeros_(model.classifier.bias)
    return model.eval()


def images(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def scale(t: torch.Tensor) -> float:
    return float(t.detach().abs().max())


# ------------------------------------------------------------------------------------------------ the twin
@pytest.mark.parametrize("name", list(FAMILIES))
def test_twin_loads_state_dict_strictly_and_computes_the_model(name):
    model = randomized(name)
    twin = lrp_twin(model)
    assert list(twin.state_dict()) == list(model.state_dict())
    fresh = lrp_twin(models.create(name, **FAMILIES[name]))  # another initialisation of the same architecture
    fresh.load_state_dict(model.state_dict(), strict=True)
    x = images()
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
        assert torch.equal(twin(x), model(x))
    # only parameter-free modules were added
    source_ids = {id(p) for p in model.parameters()}
    assert sum(p.numel() for p in twin.parameters()) == sum(p.numel() for p in model.parameters())
    assert not any(id(p) in source_ids for p in twin.parameters()), "the twin must copy, not share, parameters"
    for module in twin.modules():
        if type(module).__name__ in ("ReLU", "Addition_Module", "AdaptiveAvgPool2d", "MaxPool2d"):
            assert not list(module.parameters()) and not list(module.buffers())


def test_twin_carries_unused_children_and_keeps_keys():
    model = randomized("resnet8")
    split = nn.Module()
    split.register_buffer("inheritance", torch.arange(32))
    model.add_module("split", split)
    twin = lrp_twin(model)
    assert set(twin.state_dict()) == set(model.state_dict())
    twin.load_state_dict(model.state_dict(), strict=True)
    assert all(not name.startswith("split") for names in twin.layer_groups().values() for name in names)


def test_layer_groups_of_a_resnet():
    twin = lrp_twin(randomized("resnet14"))
    groups = twin.layer_groups()
    expected = {"first": [], "lower": [], "middle": [], "upper": []}
    for name, module in randomized("resnet14").named_modules():  # written from the architecture, not the twin
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            top = name.split(".")[0]
            expected[{"stem": "first", "stage1": "lower", "stage2": "middle"}.get(top, "upper")].append(name)
    assert groups == expected
    for name in FAMILIES:
        twin = lrp_twin(randomized(name))
        listed = [n for names in twin.layer_groups().values() for n in names]
        weights = [n for n, m in twin.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert sorted(listed) == sorted(weights) and len(set(listed)) == len(listed), name


def test_fold_batchnorm_keeps_the_function_and_the_twin():
    twin = lrp_twin(randomized("resnet8"))
    before = copy.deepcopy(twin.state_dict())
    folded = fold_batchnorm(twin)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = images()
    with torch.no_grad():
        assert torch.allclose(folded(x), twin(x), atol=1e-5, rtol=1e-5)  # float rounding of the merge
    assert all(torch.equal(before[k], v) for k, v in twin.state_dict().items())


def test_unsupported_model_and_bad_arguments():
    with pytest.raises(TypeError, match="supported"):
        lrp_twin(models.create("mlp", in_channels=1))
    model, x = randomized("resnet8"), images(2)
    with pytest.raises(ValueError, match="unknown LRP rules"):
        lrp(model, x, 0, rules="zplus")
    with pytest.raises(ValueError, match="target"):
        lrp(model, x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="channel indices"):
        lrp(model, x, 0, channels=torch.tensor([64]))
    assert last_feature_map(model) == "stage3"


# ------------------------------------------------------------------------------------------------ Captum
@pytest.mark.parametrize("name", ["resnet8", "wrn-10-1", "vgg8", "cnn8"])
def test_lrp0_without_biases_equals_input_x_gradient(name):
    """The issue's gate: LRP-ε with ε -> 0 and no biases equals InputXGradient within 1e-6 (float32; the
    maps' scale is 1e-3..1e-1), and relevance is conserved: the map sums to the target logit."""
    model = randomized(name, biases=False)
    x, target = images(), torch.tensor([0, 3, 7])
    ours = lrp(model, x, target, rules="lrp0")
    reference = InputXGradient(model).attribute(x.clone(), target=target)
    assert scale(reference) > 1e-4
    assert scale(ours - reference) < 1e-6
    with torch.no_grad():
        logits = model(x)[torch.arange(3), target]
    assert torch.allclose(ours.sum(dim=(1, 2, 3)), logits, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["resnet8", "wrn-10-1"])
def test_lrp0_with_biases_equals_input_x_gradient_in_float64(name):
    """With biases LRP-0 is still Gradient × Input (biases absorb relevance, the identity holds). In float64 and
    with a stabiliser of 1e-30 instead of the preset's 1e-9 (which shifts neurons with |z| ~ 1e-4 by 1e-5,
    measured 1.1e-5 of the scale) the identity holds to 1e-12 of the scale (measured 3e-16)."""
    model = randomized(name).double()
    x, target = images().double(), torch.tensor([1, 2, 5])
    rules = {layer: Epsilon(1e-30) for layer, _ in lrp_twins.weight_layers(lrp_twin(model))}
    ours = lrp(model, x, target, rules=rules)
    reference = InputXGradient(model).attribute(x.clone(), target=target)
    assert scale(ours - reference) < 1e-12 * scale(reference)
    assert scale(lrp(model, x, target, rules="lrp0") - reference) < 1e-4 * scale(reference)


def _captum_rules(twin, ours):
    """Captum's own rules on the twin's weight layers, mirroring a preset of ours."""
    modules = dict(twin.named_modules())
    for name, rule in ours.items():
        modules[name].rule = GammaRule(gamma=rule.gamma) if isinstance(rule, Gamma) else EpsilonRule(rule.epsilon)


def test_epsilon_rule_matches_captum_lrp_on_the_twin():
    """Captum's LRP runs on the BN-merged twin (it raises on the model itself, see below) and gives our numbers
    for LRP-ε (tolerance 1e-6 of the scale: float32 rounding of two different evaluation orders)."""
    model, x, target = randomized("resnet8"), images(), torch.tensor([2, 4, 6])
    twin = fold_batchnorm(lrp_twin(model))
    _captum_rules(twin, layer_rules(twin, "epsilon", epsilon=0.25))
    reference = LRP(twin).attribute(x.clone(), target=target)
    ours = lrp(model, x, target, rules="epsilon", epsilon=0.25)
    assert scale(reference) > 1e-4 and scale(ours - reference) < 1e-6 * max(1.0, scale(reference))


def test_composite_matches_captum_gamma_rule_on_a_plain_cnn():
    """On a plain CNN whose convolutions all feed ReLUs, without biases, the generalised γ rule equals Captum's
    (the overview's) γ rule: inputs of γ layers are non-negative and negative outputs receive no relevance."""
    model, x, target = randomized("cnn8", biases=False), images(), torch.tensor([0, 1, 9])
    twin = fold_batchnorm(lrp_twin(model))
    chosen = layer_rules(twin, "composite")
    assert any(isinstance(rule, Gamma) for rule in chosen.values())
    _captum_rules(twin, chosen)
    reference = LRP(twin).attribute(x.clone(), target=target)
    ours = lrp(model, x, target)
    assert scale(reference) > 1e-5 and scale(ours - reference) < 1e-6 * scale(reference)


def test_captum_fails_on_the_model_and_on_functional_sums_and_pooling():
    """Why the twin: Captum raises on the model (its nn.Identity shortcut), and a twin with a functional residual
    sum or functional pooling gives relevance far from Gradient × Input (> 10 % of the map's scale)."""
    model, x, target = randomized("resnet8", biases=False), images(2), torch.tensor([1, 2])
    with pytest.raises(TypeError, match="no rule"):
        LRP(copy.deepcopy(model)).attribute(x.clone(), target=target)
    reference = InputXGradient(model).attribute(x.clone(), target=target)

    def captum_lrp0(twin):
        for _, module in lrp_twins.weight_layers(twin):
            module.rule = EpsilonRule(1e-9)
        return LRP(twin).attribute(x.clone(), target=target)

    good = fold_batchnorm(lrp_twin(model))
    assert scale(captum_lrp0(good) - reference) < 1e-6  # the twin as built: right

    functional_sum = fold_batchnorm(lrp_twin(model))
    for module in functional_sum.modules():
        if hasattr(module, "add") and isinstance(module.add, nn.Module):
            del module._modules["add"]
            object.__setattr__(module, "add", lambda a, b: a + b)
    assert scale(captum_lrp0(functional_sum) - reference) > 0.1 * scale(reference)

    functional_pool = fold_batchnorm(lrp_twin(model))
    del functional_pool._modules["pool"]
    object.__setattr__(functional_pool, "pool", lambda t: F.adaptive_avg_pool2d(t, 1))
    assert scale(captum_lrp0(functional_pool) - reference) > 0.1 * scale(reference)


# ------------------------------------------------------------------------------------------------ zennit
def _zennit_lrp(model: CifarResNet, x, target, preset: str, epsilon=0.25, gamma=0.25):
    """zennit 0.5.1 on the unmodified model: canonizers for the residual sum and the pooling, BN merging, and
    zennit's rules mapped by module name (groups written from the architecture: stem / stage1 / stage2 / rest)."""
    from zennit.attribution import Gradient
    from zennit.canonizers import AttributeCanonizer, SequentialMergeBatchNorm
    from zennit.composites import NameMapComposite
    from zennit.layer import Sum
    from zennit.rules import Epsilon, Gamma as ZGamma, Norm, Pass

    def residual_sum(self, inputs):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(inputs)))))
        return self.canonizer_sum(torch.stack([out, self.shortcut(inputs)], dim=-1))

    def run(self, inputs, features):
        return self.classifier(self.canonizer_pool(self._run_body(inputs, None)).flatten(1))

    def attributes(name, module):
        if isinstance(module, BasicBlock):
            return {"residual_sum": residual_sum.__get__(module), "canonizer_sum": Sum()}
        if isinstance(module, CifarResNet):
            return {"_run": run.__get__(module), "canonizer_pool": nn.AdaptiveAvgPool2d(1)}
        return None

    groups = {"first": [], "lower": [], "middle": [], "upper": []}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            groups[{"stem": "first", "stage1": "lower", "stage2": "middle"}.get(name.split(".")[0], "upper")].append(name)
    rules = {
        "lrp0": {g: Epsilon(1e-9) for g in groups},
        "epsilon": {g: Epsilon(epsilon) for g in groups},
        "composite": {"first": Epsilon(epsilon), "lower": ZGamma(gamma, stabilizer=1e-9), "middle": Epsilon(epsilon),
                      "upper": Epsilon(1e-9)},
    }[preset]
    blocks = [name for name, module in model.named_modules() if isinstance(module, BasicBlock)]
    name_map = [(tuple(names), rules[group]) for group, names in groups.items()]
    name_map += [(tuple(f"{b}.canonizer_sum" for b in blocks) + ("canonizer_pool",), Norm(1e-30)),
                 (tuple(n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)), Pass())]
    composite = NameMapComposite(name_map, canonizers=[SequentialMergeBatchNorm(), AttributeCanonizer(attributes)])
    one_hot = F.one_hot(target, model.num_classes).to(x)
    with Gradient(model, composite, attr_output=lambda out: one_hot * out) as attributor:
        _, relevance = attributor(x.clone().requires_grad_(True))
    return relevance.detach()


@pytest.mark.parametrize("preset", ["composite", "lrp0", "epsilon"])
def test_matches_zennit_on_the_unmodified_resnet(preset):
    """Agreement with zennit to 1e-10 of the map's scale in float64 (measured 1e-14..1e-16). In float32 the maps
    differ by up to 1.4e-4 of the scale for LRP-0 (measured): near-zero denominators amplify the rounding of two
    different BN merges; so the check runs in float64. Two settings make both sides compute the same rules:
    BatchNorm eps is 0 in this network (zennit 0.5.1's merge leaves each BN computing x / sqrt(1 + eps) instead
    of x, fixed later upstream), and zennit's ``Norm`` on sums and pooling gets a 1e-30 stabiliser (ours splits
    sums exactly; zennit's default 1e-6 shifts the split by ~1e-7 relative)."""
    # resnet8: one block per stage, an identity shortcut in stage 1 and projections in stages 2 and 3
    model = randomized("resnet8", bn_eps=0.0).double()
    x, target = images(2).double(), torch.tensor([3, 8])
    before = copy.deepcopy(model.state_dict())
    reference = _zennit_lrp(model, x, target, preset)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "zennit must restore the model"
    ours = lrp(model, x, target, rules=preset)
    assert scale(reference) > 1e-4
    assert scale(ours - reference) < 1e-10 * scale(reference)


# ------------------------------------------------------------------------------------------------ groups, API
@pytest.mark.parametrize("rules", ["composite", "lrp0"])
def test_channel_group_maps_sum_to_the_full_map(rules):
    model, x, target = randomized("resnet8"), images(2), torch.tensor([0, 5])
    torch.manual_seed(3)
    split = ChannelSplit(64, eta=0.5, mode="random")  # IE-KD's split of the last stage, as a run holds it
    groups = {"inheritance": split.inherit, "exploration": split.explore}
    maps = group_relevance(model, x, target, groups, rules=rules)
    assert scale(maps["inheritance"]) > 1e-3 * scale(maps["full"])
    # float32 sums of two maps of larger magnitude than the full one: 1e-5 of the largest
    largest = max(scale(m) for m in maps.values())
    assert scale(maps["inheritance"] + maps["exploration"] - maps["full"]) < 1e-5 * largest
    alone = lrp(model, x, target, rules=rules, channels=groups["inheritance"])
    assert torch.equal(alone, maps["inheritance"])
    mask = torch.zeros(64, dtype=torch.bool)
    mask[groups["exploration"]] = True
    assert torch.equal(lrp(model, x, target, rules=rules, channels=mask), maps["exploration"])


def test_group_map_with_lrp0_is_input_x_gradient_of_the_partial_logit():
    """The masked head explains the group's share of the logit, sum_c in G W_kc mean(A_c) + b_k: with LRP-0 that
    is Gradient × Input of that partial logit (computed here from the unmodified model's features), float64."""
    model = randomized("resnet8").double()
    x, target = images(2).double(), torch.tensor([4, 1])
    group = torch.arange(0, 64, 2)

    class Partial(nn.Module):
        def forward(self, inputs):
            pooled = model.forward_features(inputs)[1]["pooled"]
            return pooled[:, group] @ model.classifier.weight[:, group].T + model.classifier.bias

    reference = InputXGradient(Partial()).attribute(x.clone(), target=target)
    rules = {layer: Epsilon(1e-30) for layer, _ in lrp_twins.weight_layers(lrp_twin(model))}
    ours = lrp(model, x, target, rules=rules, channels=group)
    assert scale(ours - reference) < 1e-12 * scale(reference)


def test_targets_determinism_heatmap_and_no_side_effects():
    model = randomized("resnet8")
    model.train()
    before = copy.deepcopy(model.state_dict())
    x, target = images(), torch.tensor([2, 2, 7])
    maps = lrp(model, x, target)
    assert torch.equal(maps, lrp(model, x, target))  # deterministic
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    one = lrp(model, x[2:], 7)  # an int target for all images; images are explained independently (eval)
    assert torch.allclose(one, maps[2:], atol=1e-7)
    assert heatmap(maps).shape == (3, 32, 32)
    assert torch.equal(heatmap(maps), maps.sum(dim=1))
    with pytest.raises(ValueError):
        heatmap(maps[0])
