"""What the book knows about each data set: classes, shape, normalisation, default augmentation."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a data set (no files are read).

    ``mean``/``std`` are the per-channel statistics of the training images in [0, 1], the values the
    community uses for normalisation.
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]


_FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# CIFAR-100 fine labels in label order (alphabetical, as in the archive's `meta` file).
_CIFAR100_CLASSES = tuple("""
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can
castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin
elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster
man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck
pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk
skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger
tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm
""".split())

_INFOS = {
    info.name: info
    for info in (
        DatasetInfo("fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,), _FASHION_CLASSES),
        DatasetInfo("mnist", 10, 1, 28, (0.1307,), (0.3081,), tuple(str(d) for d in range(10))),
        DatasetInfo("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), _CIFAR10_CLASSES),
        DatasetInfo("cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                    _CIFAR100_CLASSES),
    )
}

# Horizontal flips are harmless for clothes and natural images, but turn digits into non-digits.
_DEFAULT_AUGMENT = {"fashion_mnist": "crop_flip", "mnist": "crop", "cifar10": "crop_flip", "cifar100": "crop_flip"}

NAMES: tuple[str, ...] = tuple(_INFOS)  # data sets read from files of their own

# Data sets generated deterministically from the embedded ones (kdnb.data.cluttered); the statistics are those
# of the generated training split.
_GENERATED_INFOS = (
    DatasetInfo("cluttered_fashion_mnist", 10, 1, 48, (0.1749,), (0.2475,), _FASHION_CLASSES),
)
_INFOS.update((info.name, info) for info in _GENERATED_INFOS)
_DEFAULT_AUGMENT["cluttered_fashion_mnist"] = "crop_flip"
GENERATED: tuple[str, ...] = tuple(info.name for info in _GENERATED_INFOS)
ALL_NAMES: tuple[str, ...] = NAMES + GENERATED
SPLITS: tuple[str, ...] = ("train", "test")


def check_name(name: str) -> str:
    """Return ``name`` if it is a known data set, else raise ``ValueError`` listing the choices."""
    if name not in _INFOS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(ALL_NAMES)}")
    return name


def check_split(split: str) -> str:
    """Return ``split`` if it is ``train`` or ``test``, else raise ``ValueError`` listing the choices."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return split


def info(name: str) -> DatasetInfo:
    """Classes, image shape and normalisation statistics of data set ``name``."""
    return _INFOS[check_name(name)]


def default_augment(name: str) -> str | None:
    """The training augmentation the book uses for ``name`` (see :class:`kdnb.data.TensorBatches`)."""
    return _DEFAULT_AUGMENT[check_name(name)]
