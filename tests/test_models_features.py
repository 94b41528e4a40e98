"""Per-block features of the residual families (for FSP) and ``prefixes_up_to`` for every family:
the parameters it names are exactly those a feature depends on, checked through autograd."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdnb import models
from kdnb.models import FeatureModel

torch.set_num_threads(2)


def under(name: str, prefix: str) -> bool:
    """The project's prefix rule: a prefix names a module and its children."""
    return name == prefix or name.startswith(prefix + ".")


# ---------------------------------------------------------------- per-block features


def test_resnet_block_features() -> None:
    torch.manual_seed(0)
    model = models.create("resnet14").eval()  # two blocks per stage
    with torch.no_grad():
        _, f = model.forward_features(torch.randn(2, 3, 16, 16))
        stage_input = f["stem"]
        for k, stage in enumerate((model.stage1, model.stage2, model.stage3), start=1):
            block_input = stage_input
            for j, block in enumerate(stage, start=1):
                # Block J is the module stageK.{J-1}: its residual sum and its output.
                assert torch.equal(f[f"stage{k}.block{j}.pre"], block.residual_sum(block_input))
                assert torch.equal(f[f"stage{k}.block{j}"], block(block_input))
                block_input = f[f"stage{k}.block{j}"]
            # The last block's output is the stage feature; first and last map have equal size (FSP pairs).
            assert f[f"stage{k}.block2"] is f[f"stage{k}"] and f[f"stage{k}.block2.pre"] is f[f"stage{k}.pre"]
            assert f[f"stage{k}.block1"].shape == f[f"stage{k}.block2"].shape
            stage_input = f[f"stage{k}"]


def test_wrn_block_features() -> None:
    torch.manual_seed(0)
    model = models.create("wrn-16-2").eval()
    stages = (model.stage1, model.stage2, model.stage3)
    with torch.no_grad():
        _, f = model.forward_features(torch.randn(2, 3, 16, 16))
        raw = f["stem"]
        for k, stage in enumerate(stages, start=1):
            for j, block in enumerate(stage, start=1):
                assert torch.equal(f[f"stage{k}.block{j}.sum"], block(raw))
                raw = f[f"stage{k}.block{j}.sum"]
                # .pre is the BN the network applies next: the next block's bn1, or the next stage's, or final_bn.
                following = stage[j] if j < len(stage) else stages[k][0] if k < 3 else None
                next_bn = following.bn1 if following is not None else model.final_bn
                assert torch.equal(f[f"stage{k}.block{j}.pre"], next_bn(raw))
                assert torch.equal(f[f"stage{k}.block{j}"], F.relu(f[f"stage{k}.block{j}.pre"]))
            for suffix in (".sum", ".pre", ""):
                assert f[f"stage{k}.block2{suffix}"] is f[f"stage{k}{suffix}"]
            assert f[f"stage{k}.block1"].shape == f[f"stage{k}.block2"].shape


@pytest.mark.parametrize(
    ("name", "old_names"),
    [
        (
            "resnet20",
            ("stem", "stage1.pre", "stage1", "stage2.pre", "stage2", "stage3.pre", "stage3", "pooled", "logits"),
        ),
        (
            "wrn-16-2",
            ("stem", "stage1.sum", "stage1.pre", "stage1", "stage2.sum", "stage2.pre", "stage2",
             "stage3.sum", "stage3.pre", "stage3", "pooled", "logits"),
        ),
    ],
)  # fmt: skip
def test_block_features_keep_the_existing_names_and_order(name: str, old_names: tuple[str, ...]) -> None:
    model = models.create(name)
    assert tuple(n for n in model.feature_names if ".block" not in n) == old_names
    n = 3 if name == "resnet20" else 2
    per_block = 2 if name == "resnet20" else 3  # (pre, post) or (sum, pre, post)
    assert len(model.feature_names) == len(old_names) + 3 * n * per_block


def test_fast_path_is_the_plain_module_composition() -> None:
    """``model(x)`` runs the same operations as calling the modules in order, bit for bit."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    resnet = models.create("resnet14").eval()
    wrn = models.create("wrn-16-2").eval()
    with torch.no_grad():
        trunk = resnet.stage3(resnet.stage2(resnet.stage1(F.relu(resnet.stem(x)))))
        assert torch.equal(resnet(x), resnet.classifier(trunk.mean(dim=(2, 3))))
        trunk = F.relu(wrn.final_bn(wrn.stage3(wrn.stage2(wrn.stage1(wrn.stem(x))))))
        assert torch.equal(wrn(x), wrn.classifier(trunk.mean(dim=(2, 3))))


# ---------------------------------------------------------------- prefixes_up_to


@functools.cache
def built(name: str) -> FeatureModel:
    """One default instance per name, for tests that only read the structure."""
    return models.create(name)


def small(name: str) -> FeatureModel:
    options = {"mlp": {"hidden": (32, 16), "image_size": 8}, "alexnet_small": {"fc_width": 32}}
    options |= {"vgg11-fc": {"fc_width": 32}, "resnet8-fc": {"fc_width": 32}}
    return models.create(name, in_channels=1, **options.get(name, {}))


CHECKED_FEATURES = {  # one model per family; features at both ends and at every kind of boundary
    "resnet14": ["stem", "stage1.block1.pre", "stage2.block1", "stage2.pre", "stage3.block1", "pooled", "logits"],
    "wrn-16-2": ["stem", "stage1.block1.sum", "stage1.block1.pre", "stage1.sum", "stage1", "stage2.block2",
                 "stage3.pre", "logits"],
    "vgg8": ["block1.pre", "block3", "block5", "pooled", "logits"],
    "cnn6": ["conv1", "conv2.pre", "conv4", "pooled", "logits"],
    "mlp": ["fc1.pre", "fc2", "pooled", "logits"],
    "alexnet_small": ["conv1.pre", "conv5", "fc1.pre", "fc1", "fc2.pre", "pooled", "fc3"],
    "vgg11-fc": ["block5.pre", "fc1.pre", "fc3"],  # the VGG trunk is also checked on vgg8
    "resnet8-fc": ["stage3", "head_conv1.pre", "head_conv2", "fc1.pre", "fc2", "pooled", "logits"],
}  # fmt: skip


@pytest.mark.parametrize("name", list(CHECKED_FEATURES))
def test_prefixes_are_exactly_the_parameters_a_feature_depends_on(name: str) -> None:
    torch.manual_seed(0)
    model = small(name).train()
    params = dict(model.named_parameters())
    module_names = [n for n, _ in model.named_modules()]
    _, features = model.forward_features(torch.randn(2, 1, 8, 8))
    for feature in CHECKED_FEATURES[name]:
        prefixes = model.prefixes_up_to(feature)
        # Names of existing modules, in forward (registration) order, none inside another.
        assert all(p in module_names for p in prefixes), (feature, prefixes)
        assert list(prefixes) == sorted(prefixes, key=module_names.index)
        assert not any(under(p, q) for p in prefixes for q in prefixes if p != q)

        projection = torch.randn(features[feature].shape, generator=torch.Generator().manual_seed(1))
        grads = torch.autograd.grad(
            (features[feature] * projection).sum(), list(params.values()), retain_graph=True, allow_unused=True
        )
        depends = {n for n, g in zip(params, grads) if g is not None and g.abs().sum() > 0}
        selected = {n for n in params if any(under(n, p) for p in prefixes)}
        # Not too small: nothing outside the prefixes moves the feature. Not too large: everything inside does.
        assert depends == selected, (feature, sorted(depends ^ selected)[:5])


@pytest.mark.parametrize(
    ("name", "feature", "expected"),
    [
        ("resnet20", "stem", ("stem",)),
        ("resnet20", "stage2.block1", ("stem", "stage1", "stage2.0")),
        ("resnet20", "stage2.block2.pre", ("stem", "stage1", "stage2.0", "stage2.1")),
        ("resnet20", "stage2.block3", ("stem", "stage1", "stage2")),
        ("resnet20", "stage2", ("stem", "stage1", "stage2")),
        ("resnet20", "pooled", ("stem", "stage1", "stage2", "stage3")),
        ("wrn-16-2", "stage1.sum", ("stem", "stage1")),
        ("wrn-16-2", "stage1", ("stem", "stage1", "stage2.0.bn1")),
        ("wrn-16-2", "stage1.block1.pre", ("stem", "stage1.0", "stage1.1.bn1")),
        ("wrn-16-2", "stage3.pre", ("stem", "stage1", "stage2", "stage3", "final_bn")),
        ("vgg8", "block2", ("blocks.0", "blocks.1")),
        ("vgg8", "block5.pre", ("blocks",)),
        ("cnn6", "conv2", ("groups.0", "groups.1.0")),
        ("cnn6", "conv3.pre", ("groups.0", "groups.1")),
        ("mlp", "fc1.pre", ("hidden_layers.0",)),
        ("mlp", "pooled", ("hidden_layers",)),
        ("alexnet_small", "conv2", ("conv1", "conv2")),
        ("alexnet_small", "fc1.pre", ("conv1", "conv2", "conv3", "conv4", "conv5", "fc1")),
        ("vgg11-fc", "fc2", ("blocks", "fc1", "fc2")),
        ("vgg11-fc", "fc3", ("blocks", "fc1", "fc2", "classifier")),
        ("resnet20-fc", "head_conv1", ("stem", "stage1", "stage2", "stage3", "head_conv1")),
        ("resnet20-fc", "pooled", ("stem", "stage1", "stage2", "stage3", "head_conv1", "head_conv2", "fc1", "fc2")),
    ],
)
def test_prefixes_up_to_examples(name: str, feature: str, expected: tuple[str, ...]) -> None:
    assert built(name).prefixes_up_to(feature) == expected


@pytest.mark.parametrize("name", ["resnet8", "wrn-10-1", "vgg8", "cnn6", "mlp", "alexnet_small", "resnet8-fc"])
def test_logits_depend_on_every_top_level_module(name: str) -> None:
    model = built(name)
    with_parameters = tuple(n for n, m in model.named_children() if any(True for _ in m.parameters()))
    assert model.prefixes_up_to("logits") == with_parameters


@pytest.mark.parametrize(("name", "distilled"), [("alexnet_small", "fc1"), ("resnet8-fc", "fc2"), ("vgg8", "block4")])
def test_freezing_up_to_a_layer_leaves_the_layers_above(name: str, distilled: str) -> None:
    """Cheng et al.'s second stage: freeze everything computing the distilled layer, train the rest."""
    model = built(name)
    frozen = model.prefixes_up_to(distilled)
    trainable = {n.split(".")[0] for n, _ in model.named_parameters() if not any(under(n, p) for p in frozen)}
    expected = {"alexnet_small": {"fc2", "classifier"}, "resnet8-fc": {"classifier"}, "vgg8": {"blocks", "classifier"}}
    assert trainable == expected[name]
    if name == "vgg8":  # block 5 only, inside the blocks container
        assert {n.split(".")[1] for n, _ in model.named_parameters() if n.startswith("blocks.")
                and not any(under(n, p) for p in frozen)} == {"4"}  # fmt: skip


def test_unknown_feature_lists_the_model_features() -> None:
    model = models.create("resnet8")
    with pytest.raises(ValueError) as error:
        model.prefixes_up_to("fc2")
    message = str(error.value)
    assert "'fc2'" in message and "resnet8" in message
    assert all(name in message for name in model.feature_names)
    with pytest.raises(ValueError):
        model.prefixes_up_to("stage1.0")  # a module name is not a feature name


def test_layout_and_recorded_features_agree_for_deep_models() -> None:
    # feature_names come from the same layout that prefixes_up_to reads; the recorded order must match it.
    for name in ("resnet32", "wrn-22-1"):
        model = models.create(name).eval()
        with torch.no_grad():
            _, f = model.forward_features(torch.randn(1, 3, 8, 8))
        assert tuple(f) == model.feature_names
        assert isinstance(model.classifier, nn.Linear)
