"""Cluttered Fashion-MNIST: an item on a larger canvas over task-irrelevant clutter, with its foreground mask.

Part I (Cheng et al., CVPR 2020) counts "visual concepts" on the foreground and on the background of an image,
so every sample needs a foreground region. Sample ``i`` of a split is Fashion-MNIST image ``i`` of the same
split (same label), pasted at a random position on a ``canvas × canvas`` canvas (48 px by default) over clutter:

- uniform noise of up to ``noise`` grey levels on every pixel;
- ``fragments`` square crops (``fragment_size`` px) of *other* items of the split, dimmed by a random gain in
  ``fragment_gain``, at random positions (anywhere, so inside the item's box too, as background shows through
  a real object's box).

Layers are combined by a pixel-wise maximum, item last, so the item's pixels are never hidden. Its masks:

- **box**: the tight bounding box of the item's pixels brighter than ``threshold`` (not the 28 × 28 frame);
- **silhouette**: those pixels themselves ("any nonzero", as the released code treats segmentation masks).

:meth:`ClutteredFashionMNIST.masks` gives either at full resolution or downsampled to an estimator grid
(:func:`downsample_mask`: the released code's nearest, top-left-pixel sampling by default; ``any``, ``majority``
or the covered ``fraction`` of each cell on request).

Everything is generated from the embedded Fashion-MNIST and a seed: randomness comes in chunks of 1,000
samples, each from a generator seeded by a hash of (seed, split, chunk), so the data never depend on the global
RNG, the machine or the order of calls. A split is generated once per process (the train split takes a few
seconds and ~110 MB) and kept.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

NAME = "cluttered_fashion_mnist"
SEED = 0  # the registered data set's seed
CHUNK = 1000
RULES = ("nearest", "any", "majority", "fraction")
KINDS = ("box", "silhouette")


@dataclass(frozen=True)
class ClutterSpec:
    """How a cluttered canvas is made (the registered data set uses the defaults)."""

    canvas: int = 48
    fragments: int = 6
    fragment_size: int = 10
    fragment_gain: tuple[float, float] = (0.3, 0.8)
    noise: int = 24
    threshold: int = 0  # item pixels brighter than this are the silhouette (and define the box)

    def __post_init__(self) -> None:
        if self.canvas < 28:
            raise ValueError(f"canvas must hold a 28 px item; got {self.canvas}")
        if not 1 <= self.fragment_size <= 28:
            raise ValueError(f"fragment_size must be in 1..28; got {self.fragment_size}")
        if self.fragments < 0 or not 0 <= self.noise <= 255:
            raise ValueError(f"fragments must be >= 0 and noise in 0..255; got {self.fragments}, {self.noise}")


def _generator(seed: int, stream: str, chunk: int) -> torch.Generator:
    digest = hashlib.sha256(f"kdnb.cluttered:{seed}:{stream}:{chunk}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _paste_max(canvas: Tensor, patch: Tensor, tops: Tensor, lefts: Tensor) -> None:
    """``canvas[n, top:top+h, left:left+w] = max(canvas there, patch[n])`` for every n, in place."""
    n, h, w = patch.shape
    rows = (tops[:, None] + torch.arange(h))[:, :, None]
    cols = (lefts[:, None] + torch.arange(w))[:, None, :]
    who = torch.arange(n)[:, None, None]
    canvas[who, rows, cols] = torch.maximum(canvas[who, rows, cols], patch)


def item_boxes(items: Tensor, threshold: int = 0) -> Tensor:
    """``(N, 4)`` tight boxes ``(top, left, bottom, right)`` (exclusive ends) of each item's pixels above
    ``threshold`` in its own 28 × 28 frame; an empty item gets the whole frame."""
    on = items > threshold
    rows, cols = on.any(dim=2), on.any(dim=1)
    size = items.shape[-1]

    def span(flags: Tensor) -> tuple[Tensor, Tensor]:
        index = torch.arange(flags.shape[1]).expand_as(flags)
        first = torch.where(flags, index, size).min(dim=1).values
        last = torch.where(flags, index, -1).max(dim=1).values + 1
        empty = ~flags.any(dim=1)
        return torch.where(empty, 0, first), torch.where(empty, size, last)

    top, bottom = span(rows)
    left, right = span(cols)
    return torch.stack([top, left, bottom, right], dim=1)


def generate(items: Tensor, seed: int = SEED, spec: ClutterSpec = ClutterSpec(), stream: str = "train"
             ) -> tuple[Tensor, Tensor]:
    """Canvases ``(N, canvas, canvas)`` uint8 and item offsets ``(N, 2)`` (top, left of the 28 × 28 frame) for
    ``items`` ``(N, 28, 28)`` uint8; fragments come from the other items. Deterministic in (items, seed, spec,
    stream)."""
    if items.dtype != torch.uint8 or items.dim() != 3:
        raise ValueError(f"items must be uint8 (N, H, W); got {items.dtype} {tuple(items.shape)}")
    n_all, size = items.shape[0], items.shape[-1]
    c, k, fs = spec.canvas, spec.fragments, spec.fragment_size
    canvases = torch.empty(n_all, c, c, dtype=torch.uint8)
    offsets = torch.empty(n_all, 2, dtype=torch.long)
    for chunk, start in enumerate(range(0, n_all, CHUNK)):
        index = torch.arange(start, min(start + CHUNK, n_all))
        n = len(index)
        gen = _generator(seed, stream, chunk)
        place = torch.randint(0, c - size + 1, (n, 2), generator=gen)
        canvas = torch.randint(0, spec.noise + 1, (n, c, c), generator=gen).float()
        if k and n_all > 1:
            source = torch.randint(0, n_all - 1, (n, k), generator=gen)
            source = source + (source >= index[:, None]).long()  # any item but the sample's own
            crop = torch.randint(0, size - fs + 1, (n, k, 2), generator=gen)
            where = torch.randint(0, c - fs + 1, (n, k, 2), generator=gen)
            low, high = spec.fragment_gain
            gain = low + (high - low) * torch.rand(n, k, generator=gen)
            for j in range(k):
                rows = (crop[:, j, 0, None] + torch.arange(fs))[:, :, None]
                cols = (crop[:, j, 1, None] + torch.arange(fs))[:, None, :]
                patch = items[source[:, j, None, None], rows, cols].float() * gain[:, j, None, None]
                _paste_max(canvas, patch, where[:, j, 0], where[:, j, 1])
        _paste_max(canvas, items[index].float(), place[:, 0], place[:, 1])
        canvases[index] = canvas.round().clamp(0, 255).to(torch.uint8)
        offsets[index] = place
    return canvases, offsets


def downsample_mask(mask: Tensor, grid: int, rule: str = "nearest") -> Tensor:
    """A full-resolution mask ``(N, H, W)`` on a ``grid × grid`` estimator grid.

    ``"nearest"``: the released code's rule (nearest interpolation, i.e. each cell takes its top-left pixel);
    ``"any"``: a cell is foreground if any of its pixels is; ``"majority"``: if at least half of them are;
    ``"fraction"``: the covered fraction, float. Cells follow the estimator's nearest upsampling, so for sizes
    that ``grid`` divides a cell is exactly a ``H/grid × W/grid`` block.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
    m = mask.float()[:, None]
    h, w = mask.shape[-2:]
    if rule == "nearest":
        return F.interpolate(m, size=(grid, grid), mode="nearest")[:, 0] > 0
    # Pixel → cell as the estimator's nearest upsampling assigns it (cell of pixel y is floor(y * grid / H)).
    rows = torch.div(torch.arange(h) * grid, h, rounding_mode="floor")
    cols = torch.div(torch.arange(w) * grid, w, rounding_mode="floor")
    cell = (rows[:, None] * grid + cols[None, :]).flatten()
    flat = mask.reshape(mask.shape[0], -1).float()
    covered = torch.zeros(mask.shape[0], grid * grid).index_add_(1, cell, flat)
    count = torch.zeros(grid * grid).index_add_(0, cell, torch.ones(h * w))
    fraction = (covered / count).reshape(-1, grid, grid)
    if rule == "fraction":
        return fraction
    return fraction > 0 if rule == "any" else fraction >= 0.5


class ClutteredFashionMNIST(Dataset):
    """A split of cluttered Fashion-MNIST. ``data`` ``(N, canvas, canvas)`` uint8 and ``targets`` ``(N,)``
    (as torchvision's MNIST family, so :func:`kdnb.data.as_tensors` reads them directly), ``boxes`` ``(N, 4)``
    (top, left, bottom, right on the canvas, exclusive ends). ``dataset[i]`` is ``(image, label)`` with a uint8
    ``(1, canvas, canvas)`` image (``transform`` applied if given); :meth:`sample` adds the masks;
    :meth:`masks` gives them for many samples at once."""

    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")

    def __init__(self, items: Tensor, targets: Tensor, seed: int = SEED, spec: ClutterSpec = ClutterSpec(),
                 stream: str = "train", transform: Callable | None = None) -> None:
        self.items = items
        self.targets = torch.as_tensor(targets, dtype=torch.long)
        self.seed, self.spec, self.stream, self.transform = seed, spec, stream, transform
        self.data, self.offsets = generate(items, seed, spec, stream)
        frame = item_boxes(items, spec.threshold)
        shift = self.offsets.repeat(1, 2)
        self.boxes = frame + shift

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, i: int):
        image = self.data[i][None]
        return (self.transform(image) if self.transform else image), int(self.targets[i])

    def masks(self, indices: Tensor | Sequence[int] | None = None, kind: str = "box", grid: int | None = None,
              rule: str = "nearest") -> Tensor:
        """Foreground masks of ``indices`` (all by default): ``(n, canvas, canvas)`` bool, or on the estimator
        grid ``(n, grid, grid)`` when ``grid`` is given (:func:`downsample_mask` with ``rule``). ``kind``:
        ``"box"`` or ``"silhouette"``."""
        if kind not in KINDS:
            raise ValueError(f"unknown mask kind {kind!r}; choose one of {', '.join(KINDS)}")
        index = torch.arange(len(self)) if indices is None else torch.as_tensor(indices, dtype=torch.long)
        c, n = self.spec.canvas, len(index)
        ys, xs = torch.arange(c)[None, :, None], torch.arange(c)[None, None, :]
        if kind == "box":
            b = self.boxes[index]
            full = ((ys >= b[:, 0, None, None]) & (ys < b[:, 2, None, None])
                    & (xs >= b[:, 1, None, None]) & (xs < b[:, 3, None, None]))
        else:
            full = torch.zeros(n, c, c)
            _paste_max(full, (self.items[index] > self.spec.threshold).float(), self.offsets[index, 0],
                       self.offsets[index, 1])
            full = full > 0
        return full if grid is None else downsample_mask(full, grid, rule)

    def sample(self, i: int, grid: int | None = None, rule: str = "nearest") -> dict:
        """Sample ``i`` with its masks: ``image`` (1, canvas, canvas) uint8, ``label``, ``box`` (top, left, bottom,
        right), ``box_mask`` and ``silhouette`` (full resolution, or on ``grid``)."""
        return {"image": self.data[i][None], "label": int(self.targets[i]), "box": tuple(self.boxes[i].tolist()),
                "box_mask": self.masks([i], "box", grid, rule)[0],
                "silhouette": self.masks([i], "silhouette", grid, rule)[0]}


@functools.lru_cache(maxsize=4)
def _split(split: str, folder: str | None) -> ClutteredFashionMNIST:
    from . import fashion_mnist

    base = fashion_mnist.load(split, folder=Path(folder) if folder is not None else None)
    return ClutteredFashionMNIST(base.data, base.targets, SEED, ClutterSpec(), stream=split)


def load(split: str, folder: Path | None = None, transform: Callable | None = None) -> ClutteredFashionMNIST:
    """The registered data set's ``split`` (seed :data:`SEED`, default :class:`ClutterSpec`), generated once per
    process from the embedded Fashion-MNIST (or the one in ``folder``)."""
    ds = _split(split, None if folder is None else str(folder))
    if transform is None:
        return ds
    view = object.__new__(ClutteredFashionMNIST)  # the same arrays, another transform
    view.__dict__.update(ds.__dict__, transform=transform)
    return view
