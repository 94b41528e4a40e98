"""CUB-200-2011 loader (Part I, ``paper`` profile) on a tiny folder fabricated in the archive's on-disk layout:
3 classes × 2 images of 40 × 30 px (real JPEGs, quality 100, one greyscale), PNG segmentations, the five text
files. Every picture is black, its bounding box grey (100) and the bird an L-shaped white (255) region inside
the box; the segmentation marks the L (255) plus one faint row (1) that only "any nonzero" counts."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdnb import data
from kdnb.data import CUB200, DatasetDamaged, DatasetNotFound, cub

pytestmark = pytest.mark.usefixtures("one_thread")

WIDTH, HEIGHT = 40, 30
CLASS_FOLDERS = ("001.Alpha_Bird", "002.Beta_Bird", "003.Gamma_Bird")
# image id -> (class id (1-based), is_training_image, box x y w h as written in bounding_boxes.txt)
IMAGES = {
    1: (1, 1, "5.0 4.0 16.0 12.0"),
    2: (1, 0, "6.7 4.25 15.0 11.5"),   # fractional: pixel box columns 6..21, rows 4..15
    3: (2, 1, "12.0 10.0 20.0 16.0"),
    4: (2, 1, "0.0 0.0 40.0 30.0"),    # the whole image
    5: (3, 0, "20.0 2.0 18.0 24.0"),
    6: (3, 1, "3.0 14.0 24.0 14.0"),
}
PIXEL_BOXES = {1: (5, 4, 21, 16), 2: (6, 4, 22, 16), 3: (12, 10, 32, 26), 4: (0, 0, 40, 30),
               5: (20, 2, 38, 26), 6: (3, 14, 27, 28)}  # left, top, right, bottom, worked out by hand
GREYSCALE = 3  # stored as a one-channel JPEG, as a few CUB images are


def file_name(image_id: int) -> str:
    label = IMAGES[image_id][0]
    return f"{CLASS_FOLDERS[label - 1]}/{CLASS_FOLDERS[label - 1].split('.')[1]}_{image_id:04d}_{image_id}.jpg"


def drawing(image_id: int) -> tuple[np.ndarray, np.ndarray]:
    """The picture (H, W) uint8 and the segmentation (H, W) uint8 of ``image_id``."""
    left, top, right, bottom = PIXEL_BOXES[image_id]
    picture = np.zeros((HEIGHT, WIDTH), np.uint8)
    picture[top:bottom, left:right] = 100
    segmentation = np.zeros((HEIGHT, WIDTH), np.uint8)
    segmentation[top + 2:bottom - 2, left + 3:left + 9] = 255      # the L's upright ...
    segmentation[bottom - 5:bottom - 2, left + 3:right - 2] = 255  # ... and its foot
    picture[segmentation == 255] = 255
    segmentation[top + 1, left + 3:left + 9] = 1                   # a faint annotator-agreement row
    return picture, segmentation


def fabricate(root: Path, segmentations_inside: bool = False) -> Path:
    """``root/CUB_200_2011/`` and ``root/segmentations/`` (or inside the former) in the archive's layout."""
    folder = root / "CUB_200_2011"
    masks = folder / "segmentations" if segmentations_inside else root / "segmentations"
    for image_id in IMAGES:
        picture, segmentation = drawing(image_id)
        path = folder / "images" / file_name(image_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        pil = Image.fromarray(picture) if image_id == GREYSCALE else Image.fromarray(np.stack([picture] * 3, -1))
        pil.save(path, quality=100, subsampling=0)
        png = (masks / file_name(image_id)).with_suffix(".png")
        png.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(segmentation).save(png)
    ids = list(IMAGES)
    (folder / "images.txt").write_text("".join(f"{k} {file_name(k)}\n" for k in ids))
    (folder / "image_class_labels.txt").write_text("".join(f"{k} {IMAGES[k][0]}\n" for k in ids))
    # Lines in another order than images.txt, and a blank line: the files are joined on the id.
    (folder / "train_test_split.txt").write_text("".join(f"{k} {IMAGES[k][1]}\n" for k in reversed(ids)) + "\n")
    (folder / "bounding_boxes.txt").write_text("".join(f"{k} {IMAGES[k][2]}\n" for k in ids))
    (folder / "classes.txt").write_text("".join(f"{j} {name}\n" for j, name in enumerate(CLASS_FOLDERS, 1)))
    return folder


@pytest.fixture
def root(tmp_path) -> Path:
    fabricate(tmp_path)
    return tmp_path


TRAIN_IDS, TEST_IDS = [1, 3, 4, 6], [2, 5]


# ---------------------------------------------------------------------------------------------- splits, labels

def test_splits_follow_train_test_split_and_labels_are_zero_based(root):
    train, test = CUB200(root, "train", size=None), CUB200(root, "test", size=None)
    assert (len(train), len(test)) == (4, 2)
    assert list(train.image_ids) == TRAIN_IDS and list(test.image_ids) == TEST_IDS
    assert train.targets.tolist() == [IMAGES[k][0] - 1 for k in TRAIN_IDS] == [0, 1, 1, 2]
    assert test.targets.tolist() == [0, 2] and train.targets.dtype == torch.int64
    assert train.classes == ("Alpha_Bird", "Beta_Bird", "Gamma_Bird")
    assert [int(test[i][1]) for i in range(2)] == [0, 2]
    assert test.boxes[0].tolist() == [6.7, 4.25, 15.0, 11.5]


def test_root_may_be_the_archive_folder_or_come_from_kdnb_data(root, monkeypatch):
    assert CUB200(root / "CUB_200_2011", "test").image_ids == (2, 5)
    downloads = root / "data" / "downloads"
    downloads.mkdir(parents=True)
    shutil.move(root / "CUB_200_2011", downloads / "CUB_200_2011")
    monkeypatch.setenv("KDNB_DATA", str(root / "data"))
    assert CUB200(split="test").image_ids == (2, 5)


# ---------------------------------------------------------------------------------------------- images, crops

@pytest.mark.parametrize("index", range(4))
def test_bbox_crop_takes_exactly_the_box(root, index):
    ds = CUB200(root, "train", crop="bbox", size=None)
    image_id = ds.image_ids[index]
    left, top, right, bottom = PIXEL_BOXES[image_id]
    image = ds.image(index)
    assert image.dtype == torch.uint8 and image.shape == (3, bottom - top, right - left)
    expected = torch.from_numpy(drawing(image_id)[0][top:bottom, left:right]).int()
    assert (image.int() - expected).abs().max() <= 6  # JPEG at quality 100: a few grey levels at most
    assert torch.equal(ds[index][0], image)


def test_fractional_box_is_the_smallest_pixel_rectangle_holding_it():
    assert cub.pixel_box((6.7, 4.25, 15.0, 11.5), WIDTH, HEIGHT) == PIXEL_BOXES[2]
    assert cub.pixel_box((-2.0, 25.0, 50.0, 10.0), WIDTH, HEIGHT) == (0, 25, 40, 30)  # clipped to the image
    with pytest.raises(ValueError, match="outside"):
        cub.pixel_box((41.0, 0.0, 5.0, 5.0), WIDTH, HEIGHT)


def test_uncropped_images_are_the_whole_picture_in_rgb(root):
    ds = CUB200(root, "train", crop=None, size=None)
    for index, image_id in enumerate(ds.image_ids):
        image = ds.image(index)
        assert image.shape == (3, HEIGHT, WIDTH)
        assert (image.int() - torch.from_numpy(drawing(image_id)[0]).int()).abs().max() <= 6
    grey = ds.image(ds.image_ids.index(GREYSCALE))
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])  # greyscale JPEG → 3 equal channels


def test_resized_samples_and_as_tensors(root):
    ds = CUB200(root, "test", size=16)
    images, labels = data.as_tensors(ds)
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.uint8 and labels.tolist() == [0, 2]
    scaled = CUB200(root, "test", size=16, transform=lambda x: x.float() / 255)
    assert torch.allclose(scaled[1][0], images[1].float() / 255)


# ------------------------------------------------------------------------------------------------------ masks

def test_masks_at_crop_resolution_are_the_drawn_regions(root):
    ds = CUB200(root, "train", crop="bbox", size=None)
    for index, image_id in enumerate(ds.image_ids):
        left, top, right, bottom = PIXEL_BOXES[image_id]
        box = ds.masks([index], "box")[0]
        assert box.shape == (bottom - top, right - left) and bool(box.all())  # a bounding-box crop is all box
        silhouette = ds.masks([index], "silhouette")[0]
        expected = drawing(image_id)[1][top:bottom, left:right] > 0
        assert torch.equal(silhouette, torch.from_numpy(expected))
        assert bool(silhouette[1, 3])  # the faint row (grey level 1) counts: any nonzero is foreground


def test_masks_of_uncropped_images(root):
    ds = CUB200(root, "test", crop=None, size=None)
    masks = ds.masks(kind="box")
    for index, image_id in enumerate(ds.image_ids):
        left, top, right, bottom = PIXEL_BOXES[image_id]
        expected = torch.zeros(HEIGHT, WIDTH, dtype=torch.bool)
        expected[top:bottom, left:right] = True
        assert torch.equal(masks[index], expected)
        assert torch.equal(ds.masks([index], "silhouette")[0], torch.from_numpy(drawing(image_id)[1] > 0))


def test_uncropped_resized_box_mask_samples_pixel_centres(root):
    ds = CUB200(root, "test", crop=None, size=16)
    for index, image_id in enumerate(ds.image_ids):
        left, top, right, bottom = PIXEL_BOXES[image_id]
        # Nearest resizing: output pixel j looks at the source pixel under its centre, floor((j + 0.5) · W / 16).
        cols = torch.floor((torch.arange(16) + 0.5) * WIDTH / 16).long()
        rows = torch.floor((torch.arange(16) + 0.5) * HEIGHT / 16).long()
        expected = ((rows >= top) & (rows < bottom))[:, None] & ((cols >= left) & (cols < right))[None, :]
        assert torch.equal(ds.masks([index], "box")[0], expected)


@pytest.mark.parametrize("crop", ["bbox", None])
def test_silhouette_stays_aligned_with_the_image_after_crop_and_resize(root, crop):
    ds = CUB200(root, "train", crop=crop, size=16)
    masks = ds.masks(kind="silhouette")
    assert masks.shape == (4, 16, 16) and masks.dtype == torch.bool
    for index in range(len(ds)):
        bright = ds.image(index)[0] > 200   # mostly bird
        assert bool(bright.any()) and bool((~masks[index]).any())
        assert bool(masks[index][bright].all())               # the bird's pixels are in the mask ...
        assert bool((ds.image(index)[0][~masks[index]] < 150).all())  # ... and off-mask pixels show no bird
        mirrored = masks[index].flip(-1)
        assert not bool(mirrored[bright].all()) or not bool((ds.image(index)[0][~mirrored] < 150).all())


def test_masks_on_the_estimator_grid(root):
    ds = CUB200(root, "train", crop="bbox", size=16)
    full = ds.masks(kind="silhouette")
    # Nearest: each 4 × 4 cell takes its top-left pixel; any: a cell is foreground if any of its pixels is.
    assert torch.equal(ds.masks(kind="silhouette", grid=4), full[:, ::4, ::4])
    blocks = full.reshape(4, 4, 4, 4, 4)
    assert torch.equal(ds.masks(kind="silhouette", grid=4, rule="any"), blocks.any(dim=4).any(dim=2))
    fraction = ds.masks(kind="silhouette", grid=4, rule="fraction")
    assert torch.allclose(fraction, blocks.float().mean(dim=(2, 4)))
    assert bool(ds.masks(kind="box", grid=4).all())  # after a bounding-box crop every cell is foreground
    sample = ds.sample(2, grid=4)
    assert sample["label"] == 1 and sample["box"] == (0.0, 0.0, 40.0, 30.0)
    assert torch.equal(sample["silhouette"], ds.masks([2], "silhouette", grid=4)[0])
    assert ds.masks([], "box").shape == (0, 16, 16)


# ----------------------------------------------------------------------------------------------------- errors

def test_missing_folder_says_where_the_files_go(tmp_path):
    with pytest.raises(DatasetNotFound) as err:
        CUB200(tmp_path / "nowhere")
    message = str(err.value)
    assert str(tmp_path / "nowhere" / "CUB_200_2011") in message
    assert "CUB_200_2011.tgz" in message and "https://data.caltech.edu/records/65de6-vp158" in message
    assert "KDNB_DATA" in message


def test_missing_text_file_is_named(root):
    (root / "CUB_200_2011" / "bounding_boxes.txt").unlink()
    with pytest.raises(DatasetNotFound, match="bounding_boxes.txt"):
        CUB200(root)


@pytest.mark.parametrize("file, line, number", [
    ("bounding_boxes.txt", "3 12.0 10.0 wide 16.0", 3),
    ("bounding_boxes.txt", "3 12.0 10.0 -20.0 16.0", 3),
    ("images.txt", "2", 2),
    ("train_test_split.txt", "4 yes", 3),
    ("image_class_labels.txt", "5 0", 5),
    ("images.txt", "1 duplicate.jpg", 6),
])
def test_malformed_line_names_file_and_line(root, file, line, number):
    path = root / "CUB_200_2011" / file
    lines = path.read_text().splitlines()
    lines[number - 1] = line
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetDamaged, match=rf"{file}, line {number}: expected"):
        CUB200(root)


def test_image_missing_from_a_table_is_named(root):
    path = root / "CUB_200_2011" / "image_class_labels.txt"
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines() if not line.startswith("4 ")))
    with pytest.raises(DatasetDamaged, match=r"image_class_labels.txt: no line for image id 4 \(002.Beta_Bird/"):
        CUB200(root)
    path.write_text("".join(f"{k} {9 if k == 4 else IMAGES[k][0]}\n" for k in IMAGES))
    with pytest.raises(DatasetDamaged, match="class id 9, but classes.txt lists 3 classes"):
        CUB200(root)


def test_missing_segmentation_is_named_and_spares_the_rest(root):
    ds = CUB200(root, "test", size=16)
    missing = root / "segmentations" / Path(file_name(5)).with_suffix(".png")
    missing.unlink()
    with pytest.raises(DatasetNotFound) as err:
        ds.masks(kind="silhouette")
    assert str(missing) in str(err.value) and "segmentations.tgz" in str(err.value)
    assert ds.masks([0], "silhouette").shape == (1, 16, 16)  # the others still load, as do boxes and images
    assert ds.masks(kind="box").shape == (2, 16, 16) and ds[1][0].shape == (3, 16, 16)
    shutil.rmtree(root / "segmentations")
    with pytest.raises(DatasetNotFound, match="w9d68-gec53"):
        ds.masks([0], "silhouette")


def test_segmentations_inside_the_archive_folder_are_found(tmp_path):
    fabricate(tmp_path, segmentations_inside=True)
    ds = CUB200(tmp_path, "test", size=None)
    left, top, right, bottom = PIXEL_BOXES[2]
    assert torch.equal(ds.masks([0], "silhouette")[0], torch.from_numpy(drawing(2)[1][top:bottom, left:right] > 0))


def test_missing_image_is_named(root):
    ds = CUB200(root, "test")
    (root / "CUB_200_2011" / "images" / file_name(5)).unlink()
    with pytest.raises(DatasetNotFound, match=file_name(5)):
        ds[1]


def test_bad_arguments_list_the_choices(root):
    with pytest.raises(ValueError, match="train, test"):
        CUB200(root, "validation")
    with pytest.raises(ValueError, match="'bbox', None"):
        CUB200(root, crop="centre")
    with pytest.raises(ValueError, match="positive int"):
        CUB200(root, size=0)
    with pytest.raises(ValueError, match="box, silhouette"):
        CUB200(root, "test").masks(kind="outline")
    with pytest.raises(ValueError, match="size=None"):
        CUB200(root, "test", size=None).masks(kind="box")  # crops of different sizes cannot be stacked


# --------------------------------------------------------------------------------------------------- registry

def test_registered_facts():
    facts = data.info("cub200")
    assert (facts.num_classes, facts.in_channels, facts.image_size) == (200, 3, 224)
    assert len(set(facts.class_names)) == 200
    assert facts.class_names[0] == "Black_footed_Albatross" and facts.class_names[140] == "Artic_Tern"
    assert facts.class_names[199] == "Common_Yellowthroat"
    assert "cub200" in data.ALL_NAMES and "cub200" in data.EXTERNAL and "cub200" not in data.NAMES
    assert data.default_augment("cub200") == "crop_flip"


def test_load_gives_the_papers_setting(root):
    ds = cub.load("test", root)
    assert (ds.crop, ds.size, len(ds)) == ("bbox", 224, 2) and ds[0][0].shape == (3, 224, 224)


def test_dataset_entry_point(root):
    ds = data.dataset("cub200", "test", root=root)
    assert isinstance(ds, CUB200) and len(ds) == 2
