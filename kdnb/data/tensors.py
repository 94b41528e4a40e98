"""Whole data sets as tensors, read straight from torchvision's arrays (no per-sample loop where avoidable)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Subset
from torchvision.transforms.v2 import functional as TF


def _image_to_uint8_chw(image) -> Tensor:
    if isinstance(image, Image.Image):
        return TF.pil_to_tensor(image)
    tensor = torch.as_tensor(np.asarray(image)) if not isinstance(image, Tensor) else image
    if tensor.dtype != torch.uint8:
        raise TypeError(f"as_tensors needs uint8 images (raw pixels), got {tensor.dtype}; "
                        f"build the dataset without a transform")
    if tensor.ndim == 2:
        return tensor.unsqueeze(0)
    if tensor.ndim == 3 and tensor.shape[-1] in (1, 3) and tensor.shape[0] not in (1, 3):
        return tensor.permute(2, 0, 1)  # HWC array
    return tensor


def _from_arrays(ds: Dataset) -> tuple[Tensor, Tensor] | None:
    """torchvision's MNIST family keeps ``data`` as a (N, H, W) uint8 tensor; CIFAR as a (N, H, W, C) array."""
    data, targets = getattr(ds, "data", None), getattr(ds, "targets", None)
    if data is None or targets is None:
        return None
    if isinstance(data, Tensor) and data.dtype == torch.uint8 and data.ndim == 3:
        images = data.unsqueeze(1)
    elif isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 4:
        images = torch.from_numpy(data).permute(0, 3, 1, 2)
    elif isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 3:
        images = torch.from_numpy(data).unsqueeze(1)
    else:
        return None
    return images, torch.as_tensor(np.asarray(targets), dtype=torch.long)


def as_tensors(ds: Dataset, indices: Tensor | Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """Images as uint8 (N, C, H, W) and labels as int64 (N,), optionally only ``indices``.

    For torchvision's MNIST/Fashion-MNIST/CIFAR classes (and ``Subset``\\ s of them) this reads the stored
    ``.data``/``.targets`` arrays directly, so the dataset's ``transform`` is *not* applied: these are the raw
    pixels. Other datasets are iterated; their items must be uint8 images (PIL, array or tensor) and labels.
    The result never shares memory with the dataset.
    """
    picked = None if indices is None else torch.as_tensor(np.asarray(indices), dtype=torch.long)
    if isinstance(ds, Subset):
        inner = torch.as_tensor(np.asarray(ds.indices), dtype=torch.long)
        return as_tensors(ds.dataset, inner if picked is None else inner[picked])
    arrays = _from_arrays(ds)
    if arrays is not None:
        images, labels = arrays
        if picked is None:
            return images.clone(memory_format=torch.contiguous_format), labels.clone()
        return images[picked].contiguous(), labels[picked]
    positions = range(len(ds)) if picked is None else picked.tolist()
    items = [ds[i] for i in positions]
    if not items:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long)
    images = torch.stack([_image_to_uint8_chw(image) for image, _ in items])
    labels = torch.tensor([int(label) for _, label in items], dtype=torch.long)
    return images, labels
