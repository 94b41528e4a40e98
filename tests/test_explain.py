"""kdnb.explain.class_maps against Captum, class by class, and its lack of side effects.

References are Captum's own attributions, one call per class (``target=k``):
``LayerGradCam(..., relu_attributions=True)``, ``Saliency(abs=False)``, ``InputXGradient``, ``GuidedBackprop``.

Two facts about kdnb's models shape the references. Their ResNets run each block through ``residual_sum`` and
functional ReLUs, so a forward hook on a block or stage module never fires and Captum's ``GuidedBackprop``, which
hooks ``nn.ReLU`` modules only, would silently return the plain gradient. The ResNet reference is therefore a
*twin*: a forward written here, independently of the library, from the same submodules (convs, BatchNorms,
shortcuts, classifier) but with one ``nn.ReLU`` module per use; its logits equal the model's (checked), and
Captum hooks its ReLU modules, whose outputs are the ``stageK`` features. Saliency and InputXGradient need no
hooks and run on the model itself; so does Grad-CAM on the plain CNN at ``conv5.pre``, the output of a module
the CNN really calls.
"""
from __future__ import annotations

import copy

import pytest
import torch
from captum.attr import GuidedBackprop, InputXGradient, LayerGradCam, Saliency
from torch import nn

from kdnb import explain, models

TOL = 1e-5
K = 10


class ReLUModuleResNet(nn.Module):
    """The same CIFAR ResNet computation as ``net``, with an ``nn.ReLU`` module per ReLU (see module doc)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.stem_relu = nn.ReLU()
        self.relus = nn.ModuleList(
            nn.ModuleList(nn.ModuleList([nn.ReLU(), nn.ReLU()]) for _ in stage)
            for stage in (net.stage1, net.stage2, net.stage3))

    def stage_output(self, k: int) -> nn.ReLU:
        """The module whose output is feature ``stage{k}``: the last block's final ReLU."""
        return self.relus[k - 1][-1][1]

    def forward(self, x):
        net = self.net
        x = self.stem_relu(net.stem(x))
        for stage, relus in zip((net.stage1, net.stage2, net.stage3), self.relus):
            for block, (inner, outer) in zip(stage, relus):
                h = inner(block.bn1(block.conv1(x)))
                x = outer(block.bn2(block.conv2(h)) + block.shortcut(x))
        return net.classifier(x.mean(dim=(2, 3)))


class PlainNet(nn.Module):
    """Not a kdnb model: conv-BN-ReLU, max-pool, conv-BN-ReLU, then a two-layer FC head (no GAP-Linear)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, K))

    def forward(self, x):
        return self.head(self.features(x))


def randomise_batchnorm(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model


def per_class(attribute, x, **kwargs) -> torch.Tensor:
    """Captum's attribution for each class in turn, stacked as (N, K, ...)."""
    return torch.stack([attribute(x, target=k, **kwargs).detach() for k in range(K)], dim=1)


def max_diff(a, b) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run faster on one thread


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return randomise_batchnorm(models.create("resnet8", num_classes=K, in_channels=1), seed=1)


@pytest.fixture(scope="module")
def images():
    return torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(2))


def test_twin_computes_the_model(resnet, images):
    for mode in (False, True):
        net = copy.deepcopy(resnet).train(mode)
        with torch.no_grad():
            logits, features = net.forward_features(images)
            assert max_diff(ReLUModuleResNet(net)(images), logits) < 1e-6


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_resnet_matches_captum(resnet, images, train):
    model = copy.deepcopy(resnet).train(train)
    mine = {m: explain.class_maps(model, images, m) for m in explain.METHODS}
    mine["gradcam@stage2"] = explain.class_maps(model, images, "gradcam", layer="stage2")
    # Captum runs extra forwards (which move BN statistics in train mode): on copies, never on `model`.
    ref_model = copy.deepcopy(model)
    twin = ReLUModuleResNet(copy.deepcopy(model)).train(train)
    reference = {
        "gradcam": per_class(LayerGradCam(twin, twin.stage_output(3)).attribute, images,
                             relu_attributions=True).squeeze(2),
        "gradcam@stage2": per_class(LayerGradCam(twin, twin.stage_output(2)).attribute, images,
                                    relu_attributions=True).squeeze(2),
        "grad": per_class(Saliency(ref_model).attribute, images, abs=False),
        "grad_x_input": per_class(InputXGradient(ref_model).attribute, images),
        "guided_backprop": per_class(GuidedBackprop(twin).attribute, images),
    }
    for name, ref in reference.items():
        assert ref.abs().max() > 1e-4, name  # a real map, not all zeros
        assert max_diff(mine[name], ref) < TOL, name
    # Guided backprop really differs from the gradient here (Captum did hook the twin's ReLUs).
    assert max_diff(mine["guided_backprop"], mine["grad"]) > 1e-3


def test_resnet_gradcam_fast_path_is_the_closed_form(resnet, images):
    """Grad-CAM at stage3 is ReLU(W A) / (h w) (one forward, no backward) and equals the batched backward."""
    model = copy.deepcopy(resnet).eval()
    assert explain.gap_linear_layer(model) == "stage3"
    with torch.enable_grad():
        logits, features = model.forward_features(images.clone().requires_grad_(True))
        grads = explain.all_class_gradients(logits, features["stage3"])
    a = features["stage3"].detach()
    by_backward = torch.relu(torch.einsum("nkchw,nchw->nkhw", grads.mean(dim=(3, 4), keepdim=True), a))
    assert max_diff(explain.class_maps(model, images), by_backward) < 1e-6


def test_cnn_layer_not_covered_matches_captum():
    """Plain CNN at conv5.pre (BatchNorm output before the last ReLU): the batched backward, not the closed form."""
    torch.manual_seed(3)
    model = randomise_batchnorm(models.create("cnn6", num_classes=K, in_channels=1), seed=4).eval()
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    layer = model.groups[2][1]  # conv5's conv+BN module: its output is feature "conv5.pre"
    with torch.no_grad():
        out = []
        handle = layer.register_forward_hook(lambda _m, _i, o: out.append(o))
        features = model.forward_features(x)[1]
        handle.remove()
        assert max_diff(out[0], features["conv5.pre"]) == 0
    mine = explain.class_maps(model, x, "gradcam", layer="conv5.pre")
    ref_model = copy.deepcopy(model)
    ref = per_class(LayerGradCam(ref_model, ref_model.groups[2][1]).attribute, x, relu_attributions=True).squeeze(2)
    assert ref.abs().max() > 1e-4 and max_diff(mine, ref) < TOL
    assert explain.class_maps(model, x).shape == (3, K, 4, 4)  # default: conv5, the map GAP reads


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_plain_model_matches_captum(train):
    """A model outside kdnb.models (no forward_features, FC head): layer given as a module."""
    torch.manual_seed(6)
    model = randomise_batchnorm(PlainNet(), seed=7).train(train)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(8))
    ref_model = copy.deepcopy(model)
    pairs = [
        (explain.class_maps(model, x, "gradcam", layer=model.features[6]),
         per_class(LayerGradCam(ref_model, ref_model.features[6]).attribute, x, relu_attributions=True).squeeze(2)),
        (explain.class_maps(model, x, "grad"), per_class(Saliency(ref_model).attribute, x, abs=False)),
        (explain.class_maps(model, x, "grad_x_input"), per_class(InputXGradient(ref_model).attribute, x)),
        (explain.class_maps(model, x, "guided_backprop"), per_class(GuidedBackprop(ref_model).attribute, x)),
    ]
    for mine, ref in pairs:
        assert ref.abs().max() > 1e-4 and max_diff(mine, ref) < TOL


@pytest.mark.parametrize("name", ["cnn6", "vgg8", "wrn-16-1"])
def test_other_gap_families_match_captum_at_default_layer(name):
    """The closed form on every other family it is declared for. No module outputs the post-ReLU map these models
    pool, so Captum's LayerGradCam runs on the exposed feature through a head written here (an ``nn.Identity``
    tap, global average pooling, the model's classifier), after checking that this head gives the model's logits."""
    torch.manual_seed(9)
    model = randomise_batchnorm(models.create(name, num_classes=K, in_channels=1), seed=10).eval()
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(11))
    layer = explain.gap_linear_layer(model)

    class Head(nn.Module):
        """The part after the layer, as the library's model defines it: global average pooling + classifier."""

        def __init__(self):
            super().__init__()
            self.tap = nn.Identity()

        def forward(self, a):
            return model.classifier(self.tap(a).mean(dim=(2, 3)))

    with torch.no_grad():
        logits, features = model.forward_features(x)
    head = Head()
    assert max_diff(head(features[layer]), logits) < 1e-5  # the model really is GAP + Linear after `layer`
    ref = per_class(LayerGradCam(head, head.tap).attribute, features[layer], relu_attributions=True).squeeze(2)
    assert max_diff(explain.class_maps(model, x), ref) < TOL


def test_gradient_strategies_agree(resnet, images):
    """One backward per class (the default) and vectorised passes (is_grads_batched, a few classes at a time for
    CIFAR-100) give the same gradients."""
    model = copy.deepcopy(resnet).train()
    xi = images.clone().requires_grad_(True)
    logits = model(xi)
    loop = explain.all_class_gradients(logits, xi, retain_graph=True)
    assert max_diff(explain.all_class_gradients(logits, xi, retain_graph=True, strategy="batched"), loop) < 1e-7
    assert max_diff(explain.all_class_gradients(logits, xi, strategy="batched", classes_per_pass=3), loop) < 1e-7
    with pytest.raises(ValueError, match="strategy"):
        explain.all_class_gradients(logits, xi, strategy="vmap")


def snapshot(model: nn.Module):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()})


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_no_side_effects(resnet, images, train):
    model = copy.deepcopy(resnet).train(train)
    # Some parameters carry a gradient from an earlier backward, others none: both must stay as they are.
    model.classifier(torch.ones(1, 64)).sum().backward()
    before = snapshot(model)
    calls = [(m, None) for m in explain.METHODS] + [("gradcam", "stage2"), ("gradcam", "stage1.block1")]
    for method, layer in calls:
        maps = explain.class_maps(model, images, method, layer=layer)
        assert not maps.requires_grad
    after = snapshot(model)
    assert model.training is train
    for key, value in before[0].items():
        assert torch.equal(after[0][key], value), key
    for key, grad in before[1].items():
        assert (grad is None and after[1][key] is None) or torch.equal(after[1][key], grad), key
    # The input is not modified and gets no gradient either.
    x = images.clone()
    explain.class_maps(model, x, "grad")
    assert torch.equal(x, images) and x.grad is None


def test_errors(resnet, images):
    with pytest.raises(ValueError, match="unknown explanation method"):
        explain.class_maps(resnet, images, "lrp")
    with pytest.raises(ValueError, match="no feature"):
        explain.class_maps(resnet, images, "gradcam", layer="stage9")
    with pytest.raises(ValueError, match="spatial"):
        explain.class_maps(models.create("mlp", in_channels=1, image_size=16), images, "gradcam")
