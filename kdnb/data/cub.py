"""CUB-200-2011 (Wah et al., 2011): bird images cropped by their bounding boxes, with foreground masks.

Part I's ``paper`` profile (Cheng et al., CVPR 2020, §4.1: "for the CUB200-2011 dataset, we used object images
cropped by object bounding boxes for both training and testing"; the segmentation masks give the foreground
Λ_fg on which visual concepts are counted).

**Never downloaded by the book** (1.1 GB, research-use terms). Put the files in place yourself:

- ``CUB_200_2011.tgz`` from Caltech DATA, https://data.caltech.edu/records/65de6-vp158, extracted in ``<root>``
  (it creates ``<root>/CUB_200_2011/``);
- for the silhouette masks only, ``segmentations.tgz`` from https://data.caltech.edu/records/w9d68-gec53,
  extracted in ``<root>`` (it creates ``<root>/segmentations/``; ``<root>/CUB_200_2011/segmentations/``, where
  many scripts move it, is read too).

``<root>`` defaults to ``<data>/downloads`` (``$KDNB_DATA/downloads`` when ``$KDNB_DATA`` is set, see
:mod:`kdnb.data.locations`); a ``root`` that is the ``CUB_200_2011`` folder itself is accepted as well.

The on-disk layout read here (the archive's own), one image per line, ids 1-based, fields separated by spaces:

- ``images/<class folder>/<file>.jpg``, e.g. ``images/001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg``
  (a few images are greyscale; every image is handed out as RGB);
- ``images.txt``: ``<image id> <path under images/>``;
- ``image_class_labels.txt``: ``<image id> <class id>``, class ids 1..200 (labels here are 0-based: class id − 1);
- ``train_test_split.txt``: ``<image id> <is_training_image>`` (1 train, 0 test: 5,994 and 5,794 images);
- ``bounding_boxes.txt``: ``<image id> <x> <y> <width> <height>``, floats in pixels, (x, y) the top-left corner;
- ``classes.txt``: ``<class id> <class folder>``, e.g. ``1 001.Black_footed_Albatross``;
- ``segmentations/<class folder>/<file>.png``: grey levels = how many annotators marked the pixel; as in the
  released code, **any nonzero level is foreground** (soft edges count).

A sample: the image, cropped by its bounding box (``crop="bbox"``, the paper's setting; ``crop=None`` keeps the
whole image), then resized to ``size × size`` (PIL bilinear, as the released code resizes to 224²; the aspect
ratio is not kept). The pixel box of ``(x, y, w, h)`` is the smallest pixel rectangle holding it,
columns ``floor(x) .. ceil(x + w) - 1`` and rows ``floor(y) .. ceil(y + h) - 1``, clipped to the image (CUB's
boxes are whole numbers, so this is the box itself). Masks go through the same crop and resize:

- **silhouette**: segmentation → grey → crop → bilinear resize → ``> 0`` (the released code's rule);
- **box**: the pixel box → crop → nearest resize (all true after a bounding-box crop).

:meth:`CUB200.masks` hands them out at image resolution or on an estimator grid (:func:`~kdnb.data.downsample_mask`,
the same rules as cluttered Fashion-MNIST's masks).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from . import locations
from .cluttered import downsample_mask
from .errors import DatasetDamaged, DatasetNotFound

NAME = "cub200"
FOLDER = "CUB_200_2011"
SEGMENTATIONS = "segmentations"
ARCHIVE = "CUB_200_2011.tgz"
ARCHIVE_URL = "https://data.caltech.edu/records/65de6-vp158"
SEGMENTATIONS_ARCHIVE = "segmentations.tgz"
SEGMENTATIONS_URL = "https://data.caltech.edu/records/w9d68-gec53"
DEFAULT_SIZE = 224  # the released code's input size
SPLITS = ("train", "test")
CROPS = ("bbox", None)
KINDS = ("box", "silhouette")
METADATA = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt", "classes.txt")


def _where_to_get(root: Path) -> str:
    return (f"Download {ARCHIVE} from {ARCHIVE_URL} and extract it in {root}/ (it creates {root / FOLDER}/); the "
            f"book never downloads it. Pass root=... or set $KDNB_DATA (then $KDNB_DATA/downloads is read).")


def _where_to_get_masks(root: Path) -> str:
    return (f"Download {SEGMENTATIONS_ARCHIVE} from {SEGMENTATIONS_URL} and extract it in {root}/ (it creates "
            f"{root / SEGMENTATIONS}/).")


# ----------------------------------------------------------------------------------------------- metadata files

def _read_table(path: Path, fields: tuple[str, ...], convert: Callable[[list[str]], tuple]) -> dict[int, tuple]:
    """``{id: convert(values)}`` for the lines ``<id> <values...>`` of ``path`` (blank lines skipped); a line
    with the wrong number of fields, a bad value or a repeated id raises :class:`DatasetDamaged` naming the file
    and the line number."""
    rows: dict[int, tuple] = {}
    expected = " ".join(f"<{field}>" for field in fields)
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=len(fields) - 1)
        try:
            if len(parts) != len(fields):
                raise ValueError(f"{len(parts)} fields instead of {len(fields)}")
            key = int(parts[0])
            if key in rows:
                raise ValueError(f"id {key} already given")
            rows[key] = convert(parts[1:])
        except ValueError as err:
            raise DatasetDamaged(f"{path}, line {number}: expected `{expected}`, got {line!r} ({err})") from None
    return rows


def _path(values: list[str]) -> tuple[str]:
    return (values[0].strip(),)


def _positive_int(values: list[str]) -> tuple[int]:
    value = int(values[0])
    if value < 1:
        raise ValueError("ids start at 1")
    return (value,)


def _flag(values: list[str]) -> tuple[bool]:
    if values[0] not in ("0", "1"):
        raise ValueError("is_training_image is 0 or 1")
    return (values[0] == "1",)


def _box(values: list[str]) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in values)
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise ValueError("width and height must be positive")
    return x, y, w, h


@dataclass(frozen=True)
class Metadata:
    """The archive's text files, joined on the image id (all images, both splits, in id order)."""

    ids: tuple[int, ...]
    paths: tuple[str, ...]           # under images/
    labels: tuple[int, ...]          # 0-based
    is_train: tuple[bool, ...]
    boxes: tuple[tuple[float, float, float, float], ...]  # x, y, width, height in pixels
    class_folders: tuple[str, ...]   # "001.Black_footed_Albatross", ... in label order


def read_metadata(folder: Path) -> Metadata:
    """Read and cross-check the five text files of ``folder`` (a ``CUB_200_2011`` folder)."""
    images = _read_table(folder / "images.txt", ("image_id", "path"), _path)
    labels = _read_table(folder / "image_class_labels.txt", ("image_id", "class_id"), _positive_int)
    split = _read_table(folder / "train_test_split.txt", ("image_id", "is_training_image"), _flag)
    boxes = _read_table(folder / "bounding_boxes.txt", ("image_id", "x", "y", "width", "height"), _box)
    classes = _read_table(folder / "classes.txt", ("class_id", "class_folder"), _path)
    if sorted(classes) != list(range(1, len(classes) + 1)):
        raise DatasetDamaged(f"{folder / 'classes.txt'}: class ids must be 1..{len(classes)}, each once")
    for name, table in (("image_class_labels.txt", labels), ("train_test_split.txt", split),
                        ("bounding_boxes.txt", boxes)):
        missing = sorted(set(images) - set(table))
        if missing:
            raise DatasetDamaged(f"{folder / name}: no line for image id {missing[0]} ({images[missing[0]][0]}), "
                                 f"{len(missing)} image(s) of images.txt missing in all")
    for key in images:
        if labels[key][0] > len(classes):
            raise DatasetDamaged(f"{folder / 'image_class_labels.txt'}: image id {key} has class id "
                                 f"{labels[key][0]}, but classes.txt lists {len(classes)} classes")
    ids = tuple(sorted(images))
    return Metadata(ids=ids, paths=tuple(images[k][0] for k in ids), labels=tuple(labels[k][0] - 1 for k in ids),
                    is_train=tuple(split[k][0] for k in ids), boxes=tuple(boxes[k] for k in ids),
                    class_folders=tuple(classes[k][0] for k in sorted(classes)))


def locate(root: Path | None = None) -> Path:
    """The ``CUB_200_2011`` folder under ``root`` (default ``<data>/downloads``), or ``root`` itself if it is
    one; :class:`DatasetNotFound` saying where the files go when it or one of its text files is missing."""
    root = Path(root).expanduser() if root is not None else locations.downloads_dir()
    folder = root if (root / "images.txt").is_file() else root / FOLDER
    if not folder.is_dir():
        raise DatasetNotFound(f"{NAME}: folder {folder}/ not found. {_where_to_get(root)}")
    missing = [name for name in METADATA if not (folder / name).is_file()]
    if missing or not (folder / "images").is_dir():
        missing += [] if (folder / "images").is_dir() else ["images/"]
        raise DatasetNotFound(f"{NAME}: {folder}/ lacks {', '.join(missing)}. {_where_to_get(folder.parent)}")
    return folder


def pixel_box(box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` (exclusive ends): the smallest pixel rectangle holding the box
    ``(x, y, w, h)``, clipped to a ``width × height`` image."""
    x, y, w, h = box
    left, top = max(0, math.floor(x)), max(0, math.floor(y))
    right, bottom = min(width, math.ceil(x + w)), min(height, math.ceil(y + h))
    if right <= left or bottom <= top:
        raise ValueError(f"box {box} lies outside the {width} × {height} image")
    return left, top, right, bottom


# ----------------------------------------------------------------------------------------------------- data set

class CUB200(Dataset):
    """A split of CUB-200-2011. ``dataset[i]`` is ``(image, label)``: a uint8 ``(3, size, size)`` tensor
    (``transform`` applied if given; ``size=None`` keeps the crop's own size) and the 0-based class.

    ``targets`` ``(N,)`` int64, ``boxes`` ``(N, 4)`` float (x, y, w, h as in ``bounding_boxes.txt``), ``paths``
    (under ``images/``), ``image_ids`` (the archive's ids) and ``classes`` (the class folders' names without
    their number, e.g. ``Black_footed_Albatross``) describe the split; :meth:`masks` gives the foreground.
    Images are decoded when asked for (the full train split at 224² is ~0.9 GB as uint8).
    """

    def __init__(self, root: str | Path | None = None, split: str = "train", crop: str | None = "bbox",
                 size: int | None = DEFAULT_SIZE, transform: Callable | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        if crop not in CROPS:
            raise ValueError(f"unknown crop {crop!r}; choose one of {', '.join(map(repr, CROPS))}")
        if size is not None and (not isinstance(size, int) or size < 1):
            raise ValueError(f"size must be a positive int or None (no resize); got {size!r}")
        self.folder = locate(None if root is None else Path(root))
        meta = read_metadata(self.folder)
        keep = [j for j, train in enumerate(meta.is_train) if train == (split == "train")]
        self.split, self.crop, self.size, self.transform = split, crop, size, transform
        self.image_ids = tuple(meta.ids[j] for j in keep)
        self.paths = tuple(meta.paths[j] for j in keep)
        self.targets = torch.tensor([meta.labels[j] for j in keep], dtype=torch.long)
        self.boxes = torch.tensor([meta.boxes[j] for j in keep], dtype=torch.float64).reshape(-1, 4)
        self.class_folders = meta.class_folders
        self.classes = tuple(folder.split(".", 1)[-1] for folder in meta.class_folders)

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return (f"CUB200(split={self.split!r}, crop={self.crop!r}, size={self.size}, {len(self)} images, "
                f"folder={str(self.folder)!r})")

    # -- geometry shared by images and masks
    def _image_path(self, i: int) -> Path:
        path = self.folder / "images" / self.paths[i]
        if not path.is_file():
            raise DatasetNotFound(f"{NAME}: image {path} not found (listed in {self.folder / 'images.txt'}). "
                                  f"{_where_to_get(self.folder.parent)}")
        return path

    def _region(self, i: int, width: int, height: int) -> tuple[int, int, int, int]:
        if self.crop is None:
            return 0, 0, width, height
        return pixel_box(tuple(self.boxes[i].tolist()), width, height)

    def _geometry(self, picture: Image.Image, i: int, resample: Image.Resampling) -> Image.Image:
        """Crop ``picture`` (an image of sample ``i``'s size) as the sample is cropped, then resize it."""
        picture = picture.crop(self._region(i, *picture.size))
        return picture if self.size is None else picture.resize((self.size, self.size), resample)

    def image(self, i: int) -> Tensor:
        """Sample ``i``'s image, cropped and resized: uint8 ``(3, size, size)``, no ``transform``."""
        with Image.open(self._image_path(i)) as picture:
            picture = picture.convert("RGB")
        array = np.asarray(self._geometry(picture, i, Image.Resampling.BILINEAR))
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()

    def __getitem__(self, i: int):
        image = self.image(i)
        return (self.transform(image) if self.transform else image), int(self.targets[i])

    def segmentation_path(self, i: int) -> Path:
        """Where sample ``i``'s segmentation is read (the first existing segmentations folder)."""
        bases = (self.folder.parent / SEGMENTATIONS, self.folder / SEGMENTATIONS)
        base = next((b for b in bases if b.is_dir()), None)
        if base is None:
            raise DatasetNotFound(f"{NAME}: no segmentations folder ({bases[0]}/ or {bases[1]}/); the silhouette "
                                  f"masks need it. {_where_to_get_masks(self.folder.parent)}")
        return base / Path(self.paths[i]).with_suffix(".png")

    def _mask(self, i: int, kind: str) -> Tensor:
        with Image.open(self._image_path(i)) as picture:
            width, height = picture.size  # the header only, no decoding
        if kind == "silhouette":
            path = self.segmentation_path(i)
            if not path.is_file():
                raise DatasetNotFound(f"{NAME}: segmentation {path} of image {self.paths[i]} not found. "
                                      f"{_where_to_get_masks(self.folder.parent)}")
            with Image.open(path) as picture:
                grey = picture.convert("L")
            if grey.size != (width, height):
                raise DatasetDamaged(f"{NAME}: segmentation {path} is {grey.size[0]} × {grey.size[1]}, its image "
                                     f"{self.paths[i]} {width} × {height}")
            resample = Image.Resampling.BILINEAR
        else:
            left, top, right, bottom = pixel_box(tuple(self.boxes[i].tolist()), width, height)
            grey = Image.new("L", (width, height), 0)
            grey.paste(255, (left, top, right, bottom))
            resample = Image.Resampling.NEAREST
        return torch.from_numpy(np.asarray(self._geometry(grey, i, resample)) > 0)

    def masks(self, indices: Tensor | Sequence[int] | None = None, kind: str = "box", grid: int | None = None,
              rule: str = "nearest") -> Tensor:
        """Foreground masks of ``indices`` (all by default), aligned with the images: ``(n, size, size)`` bool,
        or ``(n, grid, grid)`` on an estimator grid (:func:`~kdnb.data.downsample_mask` with ``rule``).
        ``kind``: ``"box"`` (the bounding box) or ``"silhouette"`` (segmentation nonzero)."""
        if kind not in KINDS:
            raise ValueError(f"unknown mask kind {kind!r}; choose one of {', '.join(KINDS)}")
        index = range(len(self)) if indices is None else torch.as_tensor(indices, dtype=torch.long).tolist()
        full = [self._mask(i, kind) for i in index]
        if not full:
            side = self.size if self.size is not None else 0
            full_stack = torch.zeros(0, side, side, dtype=torch.bool)
        elif len({m.shape for m in full}) > 1:
            raise ValueError(f"the masks of these samples differ in size (size=None); build CUB200 with size=... "
                             f"to stack them")
        else:
            full_stack = torch.stack(full)
        return full_stack if grid is None else downsample_mask(full_stack, grid, rule)

    def sample(self, i: int, grid: int | None = None, rule: str = "nearest") -> dict:
        """Sample ``i`` with its masks: ``image`` (uint8, no ``transform``), ``label``, ``box`` (x, y, w, h),
        ``box_mask`` and ``silhouette`` (image resolution, or on ``grid``)."""
        return {"image": self.image(i), "label": int(self.targets[i]), "box": tuple(self.boxes[i].tolist()),
                "box_mask": self.masks([i], "box", grid, rule)[0],
                "silhouette": self.masks([i], "silhouette", grid, rule)[0]}


def load(split: str, folder: Path | None = None, transform: Callable | None = None) -> CUB200:
    """The registered data set's ``split``: bounding-box crops at 224² (§4.1), from ``folder`` (the folder that
    holds ``CUB_200_2011/``; default ``<data>/downloads``)."""
    return CUB200(folder, split, crop="bbox", size=DEFAULT_SIZE, transform=transform)
