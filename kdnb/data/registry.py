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

# Data sets the reader puts in place by hand, never downloaded by the book (kdnb.data.cub). Kept out of NAMES:
# nothing below the `paper` profile reads them, and no test run can have their files.
# CUB-200-2011's classes in label order (classes.txt of the archive, without the "001." prefixes). Its
# statistics are ImageNet's, which the paper's ImageNet-pretrained networks expect (not CUB's own).
_CUB200_CLASSES = tuple("""
Black_footed_Albatross Laysan_Albatross Sooty_Albatross Groove_billed_Ani Crested_Auklet Least_Auklet
Parakeet_Auklet Rhinoceros_Auklet Brewer_Blackbird Red_winged_Blackbird Rusty_Blackbird Yellow_headed_Blackbird
Bobolink Indigo_Bunting Lazuli_Bunting Painted_Bunting Cardinal Spotted_Catbird Gray_Catbird Yellow_breasted_Chat
Eastern_Towhee Chuck_will_Widow Brandt_Cormorant Red_faced_Cormorant Pelagic_Cormorant Bronzed_Cowbird
Shiny_Cowbird Brown_Creeper American_Crow Fish_Crow Black_billed_Cuckoo Mangrove_Cuckoo Yellow_billed_Cuckoo
Gray_crowned_Rosy_Finch Purple_Finch Northern_Flicker Acadian_Flycatcher Great_Crested_Flycatcher
Least_Flycatcher Olive_sided_Flycatcher Scissor_tailed_Flycatcher Vermilion_Flycatcher Yellow_bellied_Flycatcher
Frigatebird Northern_Fulmar Gadwall American_Goldfinch European_Goldfinch Boat_tailed_Grackle Eared_Grebe
Horned_Grebe Pied_billed_Grebe Western_Grebe Blue_Grosbeak Evening_Grosbeak Pine_Grosbeak Rose_breasted_Grosbeak
Pigeon_Guillemot California_Gull Glaucous_winged_Gull Heermann_Gull Herring_Gull Ivory_Gull Ring_billed_Gull
Slaty_backed_Gull Western_Gull Anna_Hummingbird Ruby_throated_Hummingbird Rufous_Hummingbird Green_Violetear
Long_tailed_Jaeger Pomarine_Jaeger Blue_Jay Florida_Jay Green_Jay Dark_eyed_Junco Tropical_Kingbird Gray_Kingbird
Belted_Kingfisher Green_Kingfisher Pied_Kingfisher Ringed_Kingfisher White_breasted_Kingfisher
Red_legged_Kittiwake Horned_Lark Pacific_Loon Mallard Western_Meadowlark Hooded_Merganser Red_breasted_Merganser
Mockingbird Nighthawk Clark_Nutcracker White_breasted_Nuthatch Baltimore_Oriole Hooded_Oriole Orchard_Oriole
Scott_Oriole Ovenbird Brown_Pelican White_Pelican Western_Wood_Pewee Sayornis American_Pipit Whip_poor_Will
Horned_Puffin Common_Raven White_necked_Raven American_Redstart Geococcyx Loggerhead_Shrike Great_Grey_Shrike
Baird_Sparrow Black_throated_Sparrow Brewer_Sparrow Chipping_Sparrow Clay_colored_Sparrow House_Sparrow
Field_Sparrow Fox_Sparrow Grasshopper_Sparrow Harris_Sparrow Henslow_Sparrow Le_Conte_Sparrow Lincoln_Sparrow
Nelson_Sharp_tailed_Sparrow Savannah_Sparrow Seaside_Sparrow Song_Sparrow Tree_Sparrow Vesper_Sparrow
White_crowned_Sparrow White_throated_Sparrow Cape_Glossy_Starling Bank_Swallow Barn_Swallow Cliff_Swallow
Tree_Swallow Scarlet_Tanager Summer_Tanager Artic_Tern Black_Tern Caspian_Tern Common_Tern Elegant_Tern
Forsters_Tern Least_Tern Green_tailed_Towhee Brown_Thrasher Sage_Thrasher Black_capped_Vireo Blue_headed_Vireo
Philadelphia_Vireo Red_eyed_Vireo Warbling_Vireo White_eyed_Vireo Yellow_throated_Vireo Bay_breasted_Warbler
Black_and_white_Warbler Black_throated_Blue_Warbler Blue_winged_Warbler Canada_Warbler Cape_May_Warbler
Cerulean_Warbler Chestnut_sided_Warbler Golden_winged_Warbler Hooded_Warbler Kentucky_Warbler Magnolia_Warbler
Mourning_Warbler Myrtle_Warbler Nashville_Warbler Orange_crowned_Warbler Palm_Warbler Pine_Warbler
Prairie_Warbler Prothonotary_Warbler Swainson_Warbler Tennessee_Warbler Wilson_Warbler Worm_eating_Warbler
Yellow_Warbler Northern_Waterthrush Louisiana_Waterthrush Bohemian_Waxwing Cedar_Waxwing
American_Three_toed_Woodpecker Pileated_Woodpecker Red_bellied_Woodpecker Red_cockaded_Woodpecker
Red_headed_Woodpecker Downy_Woodpecker Bewick_Wren Cactus_Wren Carolina_Wren House_Wren Marsh_Wren Rock_Wren
Winter_Wren Common_Yellowthroat
""".split())
_EXTERNAL_INFOS = (
    DatasetInfo("cub200", 200, 3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), _CUB200_CLASSES),
)
_INFOS.update((info.name, info) for info in _EXTERNAL_INFOS)
_DEFAULT_AUGMENT["cub200"] = "crop_flip"
EXTERNAL: tuple[str, ...] = tuple(info.name for info in _EXTERNAL_INFOS)
ALL_NAMES: tuple[str, ...] = NAMES + GENERATED + EXTERNAL
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
