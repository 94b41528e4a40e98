"""Tests of kdnb.data: embedded Fashion-MNIST, torchvision loaders on tiny files, subsets, batches.

No network: MNIST and CIFAR are exercised on tiny files written in their real on-disk formats.
"""
from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
from torch.utils.data import Dataset, Subset
from torchvision.transforms.v2 import functional as TF

import kdnb.data as data
from kdnb.data import DatasetDamaged, DatasetNotFound, TensorBatches
from kdnb.data import fashion_mnist, files, locations

EMBEDDED = locations.REPO_DATA_DIR / "fashion-mnist"


# ---------------------------------------------------------------------------------------------- Fashion-MNIST

@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    """Train and test splits of the embedded data, decompressed into a private cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("KDNB_DATA", raising=False)
        mp.setenv("KDNB_CACHE", str(tmp_path_factory.mktemp("cache")))
        return data.dataset("fashion_mnist", "train"), data.dataset("fashion_mnist", "test")


def test_embedded_fashion_mnist_loads(fmnist):
    train, test = fmnist
    facts = data.info("fashion_mnist")
    assert (len(train), len(test)) == (60000, 10000)
    assert facts.num_classes == 10 and tuple(train.classes) == facts.class_names
    for split, per_class in ((train, 6000), (test, 1000)):
        images, labels = data.as_tensors(split)
        assert images.dtype == torch.uint8 and images.shape[1:] == (1, 28, 28)
        assert labels.dtype == torch.int64
        assert torch.bincount(labels, minlength=10).tolist() == [per_class] * 10


def test_embedded_statistics_match_info(fmnist):
    images, _ = data.as_tensors(fmnist[0])
    pixels = images.float() / 255
    facts = data.info("fashion_mnist")
    assert pixels.mean().item() == pytest.approx(facts.mean[0], abs=5e-4)
    assert pixels.std().item() == pytest.approx(facts.std[0], abs=5e-4)


def test_embedded_checksums_verified():
    sums = files.read_sha256sums(EMBEDDED / "SHA256SUMS")
    assert sorted(sums) == sorted(fashion_mnist.GZ_FILES)
    for name, digest in sums.items():
        assert files.sha256_of(EMBEDDED / name) == digest
    assert (EMBEDDED / "LICENSE.md").read_text().count("Zalando SE") >= 1


def _copy_embedded(target: Path, real_copy: str) -> Path:
    """A data folder whose ``fashion-mnist/`` links to the embedded files, except ``real_copy`` (copied)."""
    folder = target / "fashion-mnist"
    folder.mkdir(parents=True)
    for name in (*fashion_mnist.GZ_FILES, "SHA256SUMS"):
        if name == real_copy:
            shutil.copy(EMBEDDED / name, folder / name)
        else:
            os.symlink(EMBEDDED / name, folder / name)  # the big files need not be copied
    return folder


def test_corrupted_embedded_file_gives_clear_error(tmp_path, monkeypatch):
    folder = _copy_embedded(tmp_path, "t10k-labels-idx1-ubyte.gz")
    damaged = folder / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(damaged.read_bytes())
    raw[100] ^= 0xFF
    damaged.write_bytes(bytes(raw))
    monkeypatch.setenv("KDNB_DATA", str(tmp_path))
    monkeypatch.setenv("KDNB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DatasetDamaged) as err:
        data.dataset("fashion_mnist", "test")
    message = str(err.value)
    assert str(damaged) in message and "damaged" in message
    assert "git checkout" in message and "apt-get install dataset-fashion-mnist" in message
    assert not (tmp_path / "cache" / "FashionMNIST").exists()  # nothing was derived from a bad file


def test_missing_embedded_file_gives_clear_error(tmp_path):
    folder = _copy_embedded(tmp_path, "SHA256SUMS")
    (folder / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFound, match="train-images-idx3-ubyte.gz"):
        data.dataset("fashion_mnist", root=folder)


def test_damaged_decompressed_cache_is_redone(tmp_path, monkeypatch):
    monkeypatch.setenv("KDNB_CACHE", str(tmp_path))
    expected = data.as_tensors(data.dataset("fashion_mnist", "test"))
    cached = tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte"
    intact = cached.read_bytes()

    cached.write_bytes(intact[: len(intact) // 2])  # truncated, as by an interrupted copy
    again = data.as_tensors(data.dataset("fashion_mnist", "test"))
    assert cached.read_bytes() == intact
    assert torch.equal(again[0], expected[0]) and torch.equal(again[1], expected[1])

    flipped = bytearray(intact)
    flipped[5000] ^= 0x01  # same size, one bit wrong: only the CRC-32 sees it
    cached.write_bytes(bytes(flipped))
    fashion_mnist._checked.clear()  # as in a fresh process
    data.dataset("fashion_mnist", "test")
    assert cached.read_bytes() == intact
    assert not list(cached.parent.glob("*.tmp"))  # no temporary files left behind


# ------------------------------------------------------------------------------ torchvision loaders, tiny files

class _Py2Str(bytes):
    """A Python 2 ``str``. The real CIFAR files were written by Python 2's cPickle: their keys and label names
    are Python 2 strings, which Python 3 reads as ``b"data"`` with ``encoding="bytes"`` and as ``"data"`` with
    ``encoding="latin1"`` (what torchvision uses). Python 3's pickler cannot write them, hence this marker."""


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler, whose dispatch table can be extended
    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: _Py2Str) -> None:
        self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + bytes(obj))

    dispatch[_Py2Str] = _save_py2_str


def _py2(obj):
    """Turn the str keys/values of a CIFAR dict into Python 2 strings (numbers and arrays stay)."""
    if isinstance(obj, dict):
        return {_py2(k): _py2(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_py2(v) for v in obj]
    return _Py2Str(obj.encode()) if isinstance(obj, str) else obj


def _pickle(path: Path, obj) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(_py2(obj))


def _cifar_images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)  # rows: R plane, G plane, B plane (32x32 each)


def _as_nchw(rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rows.reshape(-1, 3, 32, 32))


@pytest.fixture
def cifar_md5_off(monkeypatch):
    # torchvision pins the MD5 of the real CIFAR files; tiny stand-ins cannot match them, so in these tests
    # torchvision checks only that the files exist. (What we test is our layout, errors and tensor reading.)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))


def test_cifar10_loader_reads_real_format(tmp_path, cifar_md5_off):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train_rows, train_labels = [], []
    for i in range(1, 6):
        rows, labels = _cifar_images(rng, 4), rng.integers(0, 10, 4).tolist()
        _pickle(folder / f"data_batch_{i}", {"batch_label": "training batch", "data": rows, "labels": labels})
        train_rows.append(rows)
        train_labels += labels
    test_rows, test_labels = _cifar_images(rng, 3), [9, 0, 4]
    _pickle(folder / "test_batch", {"data": test_rows, "labels": test_labels})
    _pickle(folder / "batches.meta", {"label_names": list(data.info("cifar10").class_names)})

    with open(folder / "data_batch_1", "rb") as f:  # read the way the CIFAR web page shows
        assert {b"data", b"labels"} <= set(pickle.load(f, encoding="bytes"))

    train = data.dataset("cifar10", "train", root=tmp_path)
    images, labels = data.as_tensors(train)
    assert torch.equal(images, _as_nchw(np.concatenate(train_rows))) and labels.tolist() == train_labels
    assert images.is_contiguous()  # CIFAR is stored HWC; batches want a plain NCHW tensor
    assert tuple(train.classes) == data.info("cifar10").class_names
    images, labels = data.as_tensors(data.dataset("cifar10", "test", root=tmp_path))
    assert torch.equal(images, _as_nchw(test_rows)) and labels.tolist() == test_labels


def test_cifar100_loader_reads_fine_labels(tmp_path, cifar_md5_off, monkeypatch):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    splits = {}
    for name, n in (("train", 6), ("test", 2)):
        rows, fine = _cifar_images(rng, n), rng.integers(0, 100, n).tolist()
        _pickle(folder / name, {"data": rows, "fine_labels": fine, "coarse_labels": [f // 5 for f in fine]})
        splits[name] = rows, fine
    _pickle(folder / "meta", {"fine_label_names": list(data.info("cifar100").class_names),
                              "coarse_label_names": [f"superclass_{i}" for i in range(20)]})
    monkeypatch.setenv("KDNB_DATA", str(tmp_path.parent))  # root= wins over the environment
    for name, (rows, fine) in splits.items():
        loaded = data.dataset("cifar100", name, root=tmp_path)
        images, labels = data.as_tensors(loaded)
        assert torch.equal(images, _as_nchw(rows)) and labels.tolist() == fine
        assert tuple(loaded.classes) == data.info("cifar100").class_names


def test_cifar_with_wrong_checksums_is_reported_damaged(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"not the real file")
    with pytest.raises(DatasetDamaged, match="cifar-10-batches-py"):
        data.dataset("cifar10", root=tmp_path)


def _write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


@pytest.mark.parametrize("compressed", [False, True], ids=["idx", "idx.gz"])
def test_mnist_loader_reads_idx_files(tmp_path, compressed):
    rng = np.random.default_rng(2)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    written = {}
    for prefix, n in (("train", 7), ("t10k", 3)):
        images, labels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)
        suffix = ".gz" if compressed else ""  # copied by hand as .gz: decompressed for torchvision
        _write_idx(raw / f"{prefix}-images-idx3-ubyte{suffix}", images, compressed)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compressed)
        written["train" if prefix == "train" else "test"] = images, labels
    for split, (images, labels) in written.items():
        got_images, got_labels = data.as_tensors(data.dataset("mnist", split, root=tmp_path))
        assert torch.equal(got_images, torch.from_numpy(images).unsqueeze(1))
        assert torch.equal(got_labels, torch.from_numpy(labels).long())


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST/raw"), ("cifar10", "cifar-10-batches-py"),
                                          ("cifar100", "cifar-100-python")])
def test_missing_files_raise_dataset_not_found(tmp_path, name, folder):
    with pytest.raises(DatasetNotFound) as err:
        data.dataset(name, "train", root=tmp_path)
    assert isinstance(err.value, FileNotFoundError)
    message = str(err.value)
    assert str(tmp_path / folder) in message and "download=True" in message and name in message


def test_default_download_root_follows_kdnb_data(tmp_path, monkeypatch):
    monkeypatch.setenv("KDNB_DATA", str(tmp_path))
    with pytest.raises(DatasetNotFound, match=str(tmp_path / "downloads" / "cifar-10-batches-py")):
        data.dataset("cifar10")


def test_unknown_name_or_split_lists_choices():
    with pytest.raises(ValueError, match="fashion_mnist, mnist, cifar10, cifar100"):
        data.dataset("imagenet")
    with pytest.raises(ValueError, match="train, test"):
        data.dataset("mnist", "validation")
    with pytest.raises(ValueError, match="cifar10"):
        data.info("svhn")


def test_info_and_default_augment():
    for name, classes, channels, size in (("fashion_mnist", 10, 1, 28), ("mnist", 10, 1, 28),
                                          ("cifar10", 10, 3, 32), ("cifar100", 100, 3, 32)):
        facts = data.info(name)
        assert (facts.name, facts.num_classes, facts.in_channels, facts.image_size) == (name, classes, channels, size)
        assert len(facts.mean) == len(facts.std) == channels and len(facts.class_names) == classes
    assert data.info("cifar100").class_names[:2] == ("apple", "aquarium_fish")
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.info("mnist").num_classes = 3
    assert [data.default_augment(n) for n in data.NAMES] == ["crop_flip", "crop", "crop_flip", "crop_flip"]


# ------------------------------------------------------------------------------------------- tensors, subsets

class _PilItems(Dataset):
    """A generic dataset (no .data/.targets): PIL images and int labels."""

    def __init__(self, images: torch.Tensor, labels: list[int]):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return TF.to_pil_image(self.images[i]), self.labels[i]


def test_as_tensors_indices_subsets_and_generic_datasets(fmnist):
    test = fmnist[1]
    everything = data.as_tensors(test)
    picked = [5, 0, 9999]
    images, labels = data.as_tensors(test, picked)
    assert torch.equal(images, everything[0][picked]) and torch.equal(labels, everything[1][picked])
    nested = data.as_tensors(Subset(test, [9999, 0, 5, 7]), [2, 1, 0])
    assert torch.equal(nested[0], images) and torch.equal(nested[1], labels)
    generic = _PilItems(everything[0][:4], everything[1][:4].tolist())
    assert all(torch.equal(a, b) for a, b in zip(data.as_tensors(generic), (everything[0][:4], everything[1][:4])))
    images[0] += 1
    assert not torch.equal(data.as_tensors(test, picked)[0], images)  # no shared memory with the dataset


def test_stratified_subset_properties():
    targets = torch.arange(10).repeat_interleave(torch.tensor([30, 12, 50, 9, 20, 20, 20, 20, 20, 25]))
    rng_before = torch.get_rng_state()
    first = data.stratified_subset(targets, 9, seed=3)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is untouched
    assert first.dtype == torch.int64 and torch.equal(first, first.sort().values)
    assert torch.bincount(targets[first], minlength=10).tolist() == [9] * 10
    assert torch.equal(first, data.stratified_subset(targets.numpy(), 9, seed=3))
    assert torch.equal(first, data.stratified_subset(targets.tolist(), 9, seed=3))
    assert not torch.equal(first, data.stratified_subset(targets, 9, seed=4))
    assert torch.equal(data.stratified_subset(targets, None, seed=0), torch.arange(len(targets)))
    with pytest.raises(ValueError, match="class 3 has only 9"):
        data.stratified_subset(targets, 10, seed=0)


# ------------------------------------------------------------------------------------------------- batches

def _uint8_images(n: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=generator)


def _normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    shape = (1, -1, 1, 1)
    return (images.float() / 255 - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)


def _collect(batches: TensorBatches, epoch: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(batches.batches(epoch, seed))


def test_batches_are_deterministic_per_seed_and_epoch():
    images, labels = _uint8_images(50, 3, 32), torch.arange(50)
    facts = data.info("cifar10")
    make = lambda: TensorBatches(images, labels, 16, facts.mean, facts.std, shuffle=True, augment="crop_flip")
    rng_before = torch.get_rng_state()
    first, resumed = make(), make()
    for epoch in range(3):  # resuming at epoch 2 in a new object reproduces epoch 2 exactly
        run = _collect(first, epoch, seed=7)
    again = _collect(resumed, 2, seed=7)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(run, again))
    other_epoch = _collect(resumed, 1, seed=7)
    other_seed = _collect(resumed, 2, seed=8)
    assert not torch.equal(run[0][1], other_epoch[0][1]) and not torch.equal(run[0][1], other_seed[0][1])


@pytest.mark.parametrize("drop_last, expected_sizes", [(False, [10] * 10 + [3]), (True, [10] * 10)])
def test_each_epoch_covers_every_sample_once(drop_last, expected_sizes):
    batches = TensorBatches(_uint8_images(103, 1, 28), torch.arange(103), 10, 0.5, 0.5, shuffle=True,
                            augment="crop", drop_last=drop_last)
    assert len(batches) == len(expected_sizes)
    for epoch in range(2):
        seen = torch.cat([y for _, y in batches.batches(epoch, seed=0)])
        assert [len(y) for _, y in batches.batches(epoch, seed=0)] == expected_sizes
        assert len(set(seen.tolist())) == len(seen)
        if not drop_last:
            assert torch.equal(seen.sort().values, torch.arange(103))
        assert not torch.equal(seen, torch.arange(len(seen)))  # shuffled


def test_unaugmented_batches_are_normalised_images_in_order():
    images, labels = _uint8_images(20, 3, 32), torch.randint(0, 10, (20,))
    facts = data.info("cifar100")
    batches = TensorBatches(images, labels, 8, facts.mean, facts.std, shuffle=False, augment=None)
    x = torch.cat([x for x, _ in batches.batches(0, seed=0)])
    y = torch.cat([y for _, y in batches.batches(0, seed=0)])
    assert x.dtype == torch.float32 and torch.equal(y, labels)
    torch.testing.assert_close(x, _normalise(images, facts.mean, facts.std), rtol=0, atol=1e-6)


@pytest.mark.parametrize("augment, channels, size, padding", [("crop_flip", 3, 32, 4), ("crop_flip", 1, 28, 2),
                                                                ("crop", 1, 28, 2)])
def test_augmentation_matches_torchvision_per_sample(augment, channels, size, padding):
    """Batched crop/flip == torchvision's pad(fill=0) + crop + hflip on each uint8 image, then normalising."""
    images, labels = _uint8_images(40, channels, size, seed=1), torch.arange(40)
    mean, std = (0.3,) * channels, (0.2,) * channels
    batches = TensorBatches(images, labels, 16, mean, std, shuffle=True, augment=augment)
    assert batches.padding == padding
    plan = batches.plan(epoch=4, seed=11)
    assert plan.flips.any() == (augment == "crop_flip")
    assert int(plan.tops.max()) <= 2 * padding and int(plan.lefts.min()) >= 0
    got = torch.cat([x for x, _ in batches.batches(epoch=4, seed=11)])
    expected = []
    for position, index in enumerate(plan.order.tolist()):
        image = TF.pad(images[index], [padding], fill=0)
        image = TF.crop(image, int(plan.tops[position]), int(plan.lefts[position]), size, size)
        if plan.flips[position]:
            image = TF.horizontal_flip(image)
        expected.append(image)
    torch.testing.assert_close(got, _normalise(torch.stack(expected), mean, std), rtol=0, atol=1e-6)


def test_batches_reject_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        TensorBatches(torch.zeros(4, 1, 28, 28), torch.zeros(4), 2, 0.5, 0.5, shuffle=False)
    with pytest.raises(ValueError, match="augmentation"):
        TensorBatches(_uint8_images(4, 1, 28), torch.zeros(4), 2, 0.5, 0.5, shuffle=False, augment="rotate")
