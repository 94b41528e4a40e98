"""Cluttered Fashion-MNIST (Part I): determinism, composition, boxes and silhouettes, masks on the estimator
grid, and the registered data set through kdnb.data and kdnb.runs. Synthetic items keep most tests instant;
the registered data set is used on its test split only (generated once, ~1 s)."""
from __future__ import annotations

import pytest
import torch

from kdnb import data
from kdnb.data import cluttered
from kdnb.data.cluttered import ClutteredFashionMNIST, ClutterSpec, downsample_mask, generate, item_boxes


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run faster on one thread


def block_items(n: int = 30) -> torch.Tensor:
    """Item i: the value i + 1 in rows 5..10 and columns 3..20 of its 28 × 28 frame, 0 elsewhere."""
    items = torch.zeros(n, 28, 28, dtype=torch.uint8)
    for i in range(n):
        items[i, 5:11, 3:21] = i + 1
    return items


def test_generation_is_deterministic_in_seed_and_stream():
    items = block_items()
    a, offsets_a = generate(items, seed=1)
    b, offsets_b = generate(items, seed=1)
    assert torch.equal(a, b) and torch.equal(offsets_a, offsets_b)
    assert not torch.equal(a, generate(items, seed=2)[0])
    assert not torch.equal(a, generate(items, seed=1, stream="test")[0])
    state = torch.random.get_rng_state()
    generate(items, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is neither used nor moved
    assert a.shape == (30, 48, 48) and a.dtype == torch.uint8


def test_without_clutter_the_canvas_is_the_item_at_its_offset():
    items = block_items()
    canvases, offsets = generate(items, seed=0, spec=ClutterSpec(canvas=40, fragments=0, noise=0))
    for i in (0, 7, 29):
        top, left = offsets[i].tolist()
        expected = torch.zeros(40, 40, dtype=torch.uint8)
        expected[top:top + 28, left:left + 28] = items[i]
        assert torch.equal(canvases[i], expected)
    assert int(offsets.min()) >= 0 and int(offsets.max()) <= 40 - 28


def test_clutter_comes_from_other_items_and_never_hides_the_item():
    items = block_items()
    spec = ClutterSpec(canvas=48, fragments=8, fragment_size=10, fragment_gain=(1.0, 1.0), noise=0)
    canvases, offsets = generate(items, seed=3, spec=spec)
    ds_boxes = item_boxes(items) + offsets.repeat(1, 2)
    for i in range(len(items)):
        top, left, bottom, right = ds_boxes[i].tolist()
        inside = canvases[i, top:bottom, left:right]
        assert bool((inside >= i + 1).all())  # max-compositing: the item's pixels stay at least its value
        outside = canvases[i].clone()
        outside[top:bottom, left:right] = 0
        assert not bool((outside == i + 1).any())  # no fragment of its own
        assert bool((outside > 0).any())  # but fragments of others
    noisy, _ = generate(items, seed=3, spec=ClutterSpec(fragments=0, noise=24))
    assert int(noisy.max()) >= 24 and bool(((noisy == 0) | (noisy <= 30)).all())


def test_tight_item_boxes():
    items = block_items(3)
    assert item_boxes(items).tolist() == [[5, 3, 11, 21]] * 3
    items[1, 27, 27] = 1  # one stray pixel widens the box ...
    items[2] = 0          # ... and an empty item gets its whole frame
    assert item_boxes(items).tolist() == [[5, 3, 11, 21], [5, 3, 28, 28], [0, 0, 28, 28]]
    assert item_boxes(items, threshold=1).tolist()[1] == [5, 3, 11, 21]


def test_masks_full_resolution_and_on_the_grid():
    items = block_items(4)
    items[:, 7, 5] = 0  # a hole in the silhouette, not in the box
    ds = ClutteredFashionMNIST(items, torch.arange(4), seed=5, spec=ClutterSpec(canvas=48))
    top, left = ds.offsets[2].tolist()
    box = ds.masks([2], "box")[0]
    expected = torch.zeros(48, 48, dtype=torch.bool)
    expected[top + 5:top + 11, left + 3:left + 21] = True
    assert torch.equal(box, expected)
    silhouette = ds.masks([2], "silhouette")[0]
    expected[top + 7, left + 5] = False
    assert torch.equal(silhouette, expected)
    assert ds.masks(kind="box", grid=16).shape == (4, 16, 16)
    assert torch.equal(ds.masks([2], "box", grid=16, rule="any")[0], downsample_mask(box[None], 16, "any")[0])
    sample = ds.sample(2, grid=16)
    assert sample["label"] == 2 and sample["image"].shape == (1, 48, 48)
    assert sample["box"] == tuple(ds.boxes[2].tolist()) and sample["box_mask"].shape == (16, 16)
    image, label = ds[2]
    assert torch.equal(image, sample["image"]) and label == 2
    with pytest.raises(ValueError, match="box, silhouette"):
        ds.masks(kind="bbox")


def test_downsample_rules_on_a_hand_made_mask():
    mask = torch.zeros(1, 6, 6, dtype=torch.bool)  # 3 × 3 grid of 2 × 2 cells
    mask[0, 1, 1] = True                           # cell (0,0): 1 of 4, not its top-left pixel
    mask[0, 2:4, 2] = True                         # cell (1,1): 2 of 4, including its top-left (2,2)
    mask[0, 4:6, 4:6] = True                       # cell (2,2): 4 of 4
    nearest = downsample_mask(mask, 3, "nearest")[0]
    assert nearest.tolist() == [[False, False, False], [False, True, False], [False, False, True]]
    assert downsample_mask(mask, 3, "any")[0].tolist() == [[True, False, False], [False, True, False],
                                                           [False, False, True]]
    assert downsample_mask(mask, 3, "majority")[0].tolist() == nearest.tolist()
    fraction = downsample_mask(mask, 3, "fraction")[0]
    assert fraction.tolist() == [[0.25, 0, 0], [0, 0.5, 0], [0, 0, 1.0]]
    # a size the grid does not divide: cells follow the estimator's nearest upsampling (pixel y → y·g // H:
    # pixels 0-2 in cell 0, 3-4 in cell 1)
    odd = torch.ones(1, 5, 5, dtype=torch.bool)
    odd[0, :, 4] = False
    assert downsample_mask(odd, 2, "fraction")[0].tolist() == [[1.0, 0.5], [1.0, 0.5]]
    cells = torch.nn.functional.interpolate(torch.arange(4.0).reshape(1, 1, 2, 2), size=(5, 5), mode="nearest")
    assert cells[0, 0, :, 0].tolist() == [0, 0, 0, 2, 2] and cells[0, 0, 0].tolist() == [0, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="nearest, any, majority, fraction"):
        downsample_mask(mask, 3, "mode")


@pytest.fixture(scope="module")
def registered_test_split():
    return data.dataset("cluttered_fashion_mnist", "test")


def test_registered_data_set(registered_test_split):
    ds = registered_test_split
    facts = data.info("cluttered_fashion_mnist")
    assert (facts.num_classes, facts.in_channels, facts.image_size) == (10, 1, 48)
    assert "cluttered_fashion_mnist" in data.ALL_NAMES and data.default_augment("cluttered_fashion_mnist")
    base = data.dataset("fashion_mnist", "test")
    assert len(ds) == len(base) == 10_000 and ds.data.shape == (10_000, 48, 48)
    assert torch.equal(torch.as_tensor(ds.targets), torch.as_tensor(base.targets))  # sample i is item i
    assert data.dataset("cluttered_fashion_mnist", "test") is ds  # generated once per process
    pixels = ds.data.double() / 255  # the test split's statistics are close to the train split's in info()
    assert abs(float(pixels.mean()) - facts.mean[0]) < 0.01 and abs(float(pixels.std()) - facts.std[0]) < 0.01
    # every item sits inside its box, which lies on the canvas
    assert int(ds.boxes.min()) >= 0 and int(ds.boxes[:, 2:].max()) <= 48
    images, labels = data.as_tensors(ds, data.stratified_subset(ds.targets, 3, seed=0))
    assert images.shape == (30, 1, 48, 48) and images.dtype == torch.uint8 and labels.bincount().tolist() == [3] * 10
    fg = ds.masks(range(100), grid=16)
    assert 0.1 < float(fg.float().mean()) < 0.5  # a foreground and a background on every image
    assert bool(fg.flatten(1).any(1).all()) and bool((~fg).flatten(1).any(1).all())
    with pytest.raises(ValueError, match="cluttered_fashion_mnist"):
        data.dataset("cluttered_mnist")


def test_regenerated_split_is_identical(registered_test_split):
    before = registered_test_split.data
    cluttered._split.cache_clear()
    try:
        again = data.dataset("cluttered_fashion_mnist", "test")
        assert again is not registered_test_split and torch.equal(again.data, before)
        assert torch.equal(again.boxes, registered_test_split.boxes)
    finally:
        cluttered._split.cache_clear()


def test_run_specs_take_it(registered_test_split):
    """A run spec validates and gets its batches (training itself is the trainer's, tested elsewhere; the train
    split is not generated here to keep the test short)."""
    from kdnb import runs
    from kdnb.train import Schedule

    spec = runs.RunSpec("cluttered_fashion_mnist", "alexnet_small", Schedule(epochs=1, batch_size=8),
                        train_per_class=2, test_per_class=2)
    spec.validate()
    x, y = next(iter(runs.batches(spec, "test", device="cpu").batches(0, 0)))
    assert x.shape == (20, 1, 48, 48) and x.dtype == torch.float32 and y.bincount().tolist() == [2] * 10
    mean = (0 - 0.1749) / 0.2475
    assert float(x.min()) >= mean - 1e-4  # normalised with the registered statistics
