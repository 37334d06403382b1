"""image_exps.data: the real loaders (sklearn digits, torchvision CIFAR and ImageFolder) read
tiny data sets written in the real on-disk formats; missing or corrupt data is a DataError."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from image_fixtures import (
    CIFAR10_NAMES,
    cifar_pixel,
    corrupt,
    write_cifar10,
    write_cifar100,
    write_cifar_archive,
    write_image_folder,
)
from torch.utils.data import DataLoader, Subset

from image_exps.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    DATASETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SPLITS,
    CIFAR10Files,
    CIFAR100Files,
    Cutout,
    DataError,
    TensorImages,
    build_image_data,
    canonical_name,
)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every download attempt fails at once, as offline, and is recorded."""
    calls: list[str] = []

    def offline(request, *args, **kwargs):
        calls.append(getattr(request, "full_url", str(request)))
        raise urllib.error.URLError("network unreachable (test)")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    return calls


def expected_cifar(index: int, mean, std) -> torch.Tensor:
    """Eval transform of the fixture's image ``index``: ToTensor + Normalize."""
    value = cifar_pixel(index)
    img = torch.full((3, 32, 32), value / 255.0)
    img[0, 0, 0] = (255 - value) / 255.0
    return (img - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


# --------------------------------------------------------------------------- CIFAR


def test_cifar10_real_loader_reads_pickle_batches(tmp_path):
    write_cifar10(tmp_path, n_per_batch=4, n_test=6)
    s = build_image_data("cifar10", tmp_path, download=False, val_fraction=0.25)
    assert (s.num_classes, s.inputs["in_channels"], s.inputs["image_size"]) == (10, 3, 32)
    assert (len(s.train), len(s.val), len(s.test)) == (15, 5, 6)
    assert s.meta["dataset"] == "cifar10" and s.meta["synthetic"] is False
    assert (s.meta["n_train"], s.meta["n_val"], s.meta["n_test"]) == (15, 5, 6)
    assert s.meta["classes"] == CIFAR10_NAMES
    assert s.meta["source"].endswith("cifar-10-batches-py")
    for k in range(6):  # test images follow the 20 training ones
        x, y = s.test[k]
        assert x.dtype == torch.float32 and x.shape == (3, 32, 32)
        assert isinstance(y, int) and y == (20 + k) % 10
        torch.testing.assert_close(x, expected_cifar(20 + k, CIFAR10_MEAN, CIFAR10_STD))
    # validation: the eval transform over training images, deterministic
    assert isinstance(s.val, Subset)
    for pos, idx in enumerate(s.val.indices):
        x, y = s.val[pos]
        assert y == idx % 10
        torch.testing.assert_close(x, expected_cifar(idx, CIFAR10_MEAN, CIFAR10_STD))
    # training: augmented (padding-crop / flip) images of the other indices, with labels
    train_idx = list(s.train.indices)
    assert sorted(train_idx + list(s.val.indices)) == list(range(20))
    torch.manual_seed(0)
    xs = torch.stack([s.train[i][0] for i in range(len(s.train))])
    assert xs.shape == (15, 3, 32, 32)
    assert not all(
        torch.equal(xs[i], expected_cifar(idx, CIFAR10_MEAN, CIFAR10_STD))
        for i, idx in enumerate(train_idx)
    )
    assert [s.train[i][1] for i in range(15)] == [i % 10 for i in train_idx]
    x, y = next(iter(DataLoader(s.train, batch_size=4)))
    assert x.shape == (4, 3, 32, 32) and y.dtype == torch.int64


def test_cifar_without_augment_train_equals_eval(tmp_path):
    write_cifar10(tmp_path)
    s = build_image_data("CIFAR-10", tmp_path, download=False, augment=False)
    for pos, idx in enumerate(s.train.indices[:4]):
        torch.testing.assert_close(s.train[pos][0], expected_cifar(idx, CIFAR10_MEAN, CIFAR10_STD))


def test_cifar_val_carve_and_n_examples_are_deterministic(tmp_path):
    write_cifar10(tmp_path, n_per_batch=8)  # 40 training images
    a = build_image_data("cifar10", tmp_path, download=False, split_seed=3, n_examples=7)
    b = build_image_data("cifar10", tmp_path, download=False, split_seed=3, n_examples=7)
    c = build_image_data("cifar10", tmp_path, download=False, split_seed=4, n_examples=7)
    full = build_image_data("cifar10", tmp_path, download=False, split_seed=3)
    assert len(a.val) == 4 and len(a.train) == 7 and a.meta["n_train"] == 7
    assert a.val.indices == b.val.indices and a.train.indices == b.train.indices
    assert (a.val.indices, a.train.indices) != (c.val.indices, c.train.indices)
    assert full.val.indices == a.val.indices  # n_examples does not move the validation set
    assert set(a.train.indices) <= set(full.train.indices)
    assert not set(a.train.indices) & set(a.val.indices)
    assert len(a.test) == 6  # n_examples limits the training part only


def test_cifar_image_size_and_cutout(tmp_path):
    write_cifar10(tmp_path)
    s = build_image_data("cifar10", tmp_path, download=False, image_size=48, cutout=8)
    assert s.inputs["image_size"] == 48
    assert s.train[0][0].shape == s.val[0][0].shape == s.test[0][0].shape == (3, 48, 48)
    assert "Cutout(size=8)" in repr(s.train.dataset.transform)
    assert "Cutout" not in repr(s.val.dataset.transform) + repr(s.test.transform)


def test_cifar100_real_loader(tmp_path):
    write_cifar100(tmp_path, n_train=20, n_test=10)
    s = build_image_data("cifar100", tmp_path, download=False, val_fraction=0.1)
    assert (s.num_classes, len(s.train), len(s.val), len(s.test)) == (100, 18, 2, 10)
    assert s.meta["classes"][:2] == ["fine_00", "fine_01"]
    for k in range(10):
        x, y = s.test[k]
        assert y == (7 * (20 + k)) % 100
        torch.testing.assert_close(x, expected_cifar(20 + k, CIFAR100_MEAN, CIFAR100_STD))


def test_cifar_archive_in_root_is_extracted(tmp_path, no_network):
    write_cifar_archive(tmp_path, "cifar10")
    s = build_image_data("cifar10", tmp_path, download=False, val_fraction=0.0)
    assert (len(s.train), len(s.val), len(s.test)) == (20, 0, 6)
    assert (tmp_path / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert not no_network


def test_cifar_missing_offline_is_a_clear_error(tmp_path, no_network):
    with pytest.raises(DataError) as info:
        build_image_data("cifar10", tmp_path, download=False)
    msg = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg
    assert "data_batch_1" in msg and "test_batch" in msg and "batches.meta" in msg
    assert "cifar-10-python.tar.gz" in msg and "https://www.cs.toronto.edu/" in msg
    assert info.value.__cause__ is None and info.value.__context__ is None  # no traceback chain
    assert not no_network

    with pytest.raises(DataError) as info:
        build_image_data("cifar100", tmp_path / "nowhere", download=True)
    msg = str(info.value)
    assert no_network and "cifar-100-python.tar.gz" in no_network[0]
    assert "Downloading" in msg and "URLError" in msg
    assert str(tmp_path / "nowhere" / "cifar-100-python") in msg


def test_cifar_partly_missing_names_missing_files(tmp_path):
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_4").unlink()
    with pytest.raises(DataError, match=r"missing: data_batch_4\)"):
        build_image_data("cifar10", tmp_path, download=True)


@pytest.mark.parametrize(
    "name, damage",
    [
        ("data_batch_3", "truncate"),
        ("test_batch", "not-pickle"),
        ("batches.meta", "truncate"),
        ("data_batch_2", "wrong-size"),
    ],
)
def test_corrupt_cifar_file_is_named(tmp_path, name, damage):
    import pickle

    folder = write_cifar10(tmp_path)
    path = folder / name
    if damage == "truncate":
        corrupt(path)
    elif damage == "not-pickle":
        path.write_text("<html>404 not found</html>")
    else:
        with open(path, "wb") as f:
            pickle.dump({"data": np.zeros((4, 100), np.uint8), "labels": [0] * 4}, f)
    with pytest.raises(DataError) as info:
        build_image_data("cifar10", tmp_path, download=False)
    msg = str(info.value)
    assert str(path) in msg and "corrupt" in msg and "Delete" in msg


def test_corrupt_archive_is_named(tmp_path):
    archive = corrupt(write_cifar_archive(tmp_path, "cifar100"), keep=100)
    with pytest.raises(DataError, match=r"cifar-100-python\.tar\.gz") as info:
        build_image_data("cifar100", tmp_path, download=False)
    assert "delete it" in str(info.value) and str(archive) in str(info.value)


# --------------------------------------------------------------------------- ImageFolder


def colour_class(x: torch.Tensor) -> int:
    """Recover the fixture's class from the (normalised) red channel: red = 40 * class."""
    red = x[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    return round(float(red.mean()) * 255 / 40)


def test_image_folder_train_test_carves_val(tmp_path):
    write_image_folder(tmp_path, "flowers", ("train", "test"), n_per_class=4)
    # past SMALL_IMAGE: ImageNet's resized crop (a padded crop would blacken the fill)
    s = build_image_data("flowers", tmp_path, val_fraction=0.25, image_size=72, split_seed=1)
    assert (s.num_classes, s.inputs["in_channels"], s.inputs["image_size"]) == (3, 3, 72)
    assert (len(s.train), len(s.val), len(s.test)) == (9, 3, 12)
    assert s.meta["classes"] == ["daisy", "rose", "tulip"]
    assert s.meta["source"] == str(tmp_path / "flowers")
    for ds in (s.train, s.val, s.test):
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.shape == (3, 72, 72) and x.dtype == torch.float32
            assert isinstance(y, int) and colour_class(x) == y
    assert not set(s.train.indices) & set(s.val.indices)
    # validation uses the eval transform (resize + centre crop): deterministic
    torch.manual_seed(0)
    first = [s.val[i][0] for i in range(3)]
    torch.manual_seed(1)
    assert all(torch.equal(a, s.val[i][0]) for i, a in enumerate(first))
    again = build_image_data("flowers", tmp_path, val_fraction=0.25, image_size=72, split_seed=1)
    assert again.val.indices == s.val.indices and again.train.indices == s.train.indices
    small = build_image_data("flowers", tmp_path, image_size=8, split_seed=1, n_examples=2)
    assert len(small.train) == 2


def test_a_folder_given_by_path_is_read_with_the_cifar_recipe_for_small_images(tmp_path):
    base = write_image_folder(tmp_path / "mine", "cifar-jpeg", ("train", "test"), size=(32, 32))
    s = build_image_data(str(base), "unused-root", image_size=32, val_fraction=1 / 3)
    assert s.meta["dataset"] == str(base) and s.meta["source"] == str(base)
    assert (len(s.train), len(s.val), len(s.test)) == (6, 3, 9)
    for i in range(len(s.test)):  # eval: resize only, every pixel is the class colour
        x, y = s.test[i]
        assert x.shape == (3, 32, 32) and colour_class(x) == y
        assert torch.allclose(x[0], x[0, 0, 0].expand(32, 32))
    # training: a 4-pixel-padded crop (a black border of at most 4 pixels) and flip
    torch.manual_seed(0)
    green = [s.train[i][0][1] * IMAGENET_STD[1] + IMAGENET_MEAN[1] for i in range(len(s.train))]
    black = [float((g < 1e-6).float().mean()) for g in green]  # green > 0 in every class
    assert max(black) <= 1 - (28 / 32) ** 2 + 1e-6 and any(b > 0 for b in black)
    assert canonical_name(f"{base}/") == str(base) and canonical_name("CIFAR-10") == "cifar10"
    assert canonical_name("./cifar-jpeg") == str(Path.cwd() / "cifar-jpeg")  # absolute
    with pytest.raises(DataError, match="ImageFolder layout"):
        build_image_data(str(tmp_path / "absent"), tmp_path)


def test_image_folder_val_and_test_both_used(tmp_path):
    write_image_folder(
        tmp_path, "cub200", ("train", "val", "test"), n_per_class={"train": 2, "val": 1, "test": 3}
    )
    s = build_image_data("cub200", tmp_path, image_size=16, augment=False)
    assert (len(s.train), len(s.val), len(s.test)) == (6, 3, 9)
    assert s.val.root.endswith("val") and s.test.root.endswith("test")
    assert s.train[0][0].shape == (3, 16, 16)


def test_image_folder_only_val_is_the_test_set(tmp_path):
    write_image_folder(tmp_path, "imagenet", ("train", "val"), n_per_class={"train": 4, "val": 2})
    s = build_image_data("imagenet", tmp_path, image_size=8, val_fraction=0.5)
    assert (len(s.train), len(s.val), len(s.test)) == (6, 6, 6)
    assert s.test.root.endswith("val")


def test_image_folder_missing_describes_layout(tmp_path):
    with pytest.raises(DataError) as info:
        build_image_data("dogs", tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "dogs" / "train") + "/<class>/<image>.jpg" in msg
    assert "Stanford Dogs" in msg and "no train/val/test" in msg
    write_image_folder(tmp_path, "dogs", ("train",))
    with pytest.raises(DataError, match="has only train"):
        build_image_data("dogs", tmp_path)


def test_image_folder_class_mismatch(tmp_path):
    write_image_folder(tmp_path, "aircraft", ("train",), classes=("a", "b", "c"))
    write_image_folder(tmp_path, "aircraft", ("test",), classes=("a", "b"))
    with pytest.raises(DataError, match=r"only in train: \['c'\]"):
        build_image_data("aircraft", tmp_path)


def test_image_folder_corrupt_image_is_named(tmp_path):
    base = write_image_folder(tmp_path, "indoor", ("train", "test"), n_per_class=2)
    bad = corrupt(base / "test" / "rose" / "1.png")
    s = build_image_data("indoor", tmp_path, image_size=8)
    with pytest.raises(DataError) as info:
        [s.test[i] for i in range(len(s.test))]
    assert str(bad) in str(info.value) and "corrupt" in str(info.value)


# --------------------------------------------------------------------------- Cutout


def test_cutout_zeroes_a_size_square_and_is_seeded():
    size, inside = 4, 0
    for seed in range(40):
        torch.manual_seed(seed)
        out = Cutout(size)(torch.ones(3, 12, 10))
        torch.manual_seed(seed)
        assert torch.equal(out, Cutout(size)(torch.ones(3, 12, 10)))
        zero = out == 0
        assert torch.equal(zero[0], zero[1]) and torch.equal(zero[0], zero[2])
        rows, cols = zero[0].any(1).nonzero(), zero[0].any(0).nonzero()
        box = zero[0][rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all() and int(zero[0].sum()) == box.numel()  # one solid rectangle
        assert box.shape[0] <= size and box.shape[1] <= size
        clipped = rows.min() == 0 or cols.min() == 0 or rows.max() == 11 or cols.max() == 9
        if box.shape == (size, size):
            inside += 1
        else:
            assert clipped
    assert inside > 5


# --------------------------------------------------------------------------- digits


def test_digits_split_sizes_stratified_deterministic():
    s = build_image_data("digits", "unused")
    assert (s.num_classes, s.inputs["in_channels"], s.inputs["image_size"]) == (10, 1, 8)
    assert (len(s.train), len(s.val), len(s.test)) == (1293, 144, 360)
    assert s.meta["source"] == "sklearn.datasets.load_digits" and not s.meta["synthetic"]
    x, y = s.train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and isinstance(y, int)
    assert float(s.train.images.min()) == 0.0 and float(s.train.images.max()) == 1.0
    total = Counter(s.train.targets + s.val.targets + s.test.targets)
    for part, frac in ((s.test, 0.2), (s.val, 0.08)):
        counts = Counter(part.targets)
        assert all(abs(counts[c] - frac * total[c]) <= 1.5 for c in range(10))
    again = build_image_data("digits", "unused")
    other = build_image_data("digits", "unused", split_seed=1)
    assert torch.equal(again.test.images, s.test.images) and again.val.targets == s.val.targets
    assert not torch.equal(other.test.images, s.test.images)
    # augmentation options are ignored: items are the raw images
    aug = build_image_data("digits", "unused", augment=True, cutout=4)
    assert torch.equal(aug.train.images, s.train.images)
    small = build_image_data("digits", "unused", n_examples=50)
    assert len(small.train) == 50 and small.meta["n_train"] == 50
    assert torch.equal(small.test.images, s.test.images)


def test_unknown_name_and_bad_options():
    with pytest.raises(DataError, match="Did you mean 'cifar10'") as info:
        build_image_data("cifr10", ".")
    assert all(name in str(info.value) for name in DATASETS)
    with pytest.raises(DataError, match="val_fraction"):
        build_image_data("digits", ".", val_fraction=1.0)
    with pytest.raises(DataError, match="too small for digits"):
        build_image_data("digits", ".", val_fraction=0.001)
    with pytest.raises(DataError, match="n_examples"):
        build_image_data("digits", ".", n_examples=0)
    with pytest.raises(DataError, match="split_seed"):
        build_image_data("digits", ".", split_seed=-1)


# --------------------------------------------------------------------------- split seed


def build_under_run_seed(run_seed: int, *args, **kwargs):
    """build_image_data after seeding the global RNGs as a run with ``run_seed`` would."""
    torch.manual_seed(run_seed)
    np.random.seed(run_seed)
    return build_image_data(*args, **kwargs)


def test_split_depends_only_on_split_seed_digits():
    a = build_under_run_seed(0, "digits", "unused", n_examples=100)
    b = build_under_run_seed(1, "digits", "unused", n_examples=100)
    c = build_under_run_seed(0, "digits", "unused", n_examples=100, split_seed=7)
    for part in ("train", "val", "test"):
        assert torch.equal(getattr(a, part).images, getattr(b, part).images)
        assert np.array_equal(a.labels(part), b.labels(part))
    assert not torch.equal(a.test.images, c.test.images)
    assert not torch.equal(a.train.images, c.train.images)
    assert (a.meta["split_seed"], c.meta["split_seed"]) == (0, 7)
    with pytest.raises(TypeError, match="seed"):  # the run seed has no way in
        build_image_data("digits", "unused", seed=1)


def test_split_depends_only_on_split_seed_cifar(tmp_path):
    write_cifar10(tmp_path, n_per_batch=8)  # 40 training images
    kw = {"download": False, "n_examples": 10}
    a = build_under_run_seed(0, "cifar10", tmp_path, **kw)
    b = build_under_run_seed(1, "cifar10", tmp_path, **kw)
    c = build_under_run_seed(0, "cifar10", tmp_path, split_seed=2, **kw)
    assert a.val.indices == b.val.indices and a.train.indices == b.train.indices
    assert a.train_eval.indices == b.train_eval.indices
    assert a.val.indices != c.val.indices and a.train.indices != c.train.indices
    assert (a.meta["split_seed"], b.meta["split_seed"], c.meta["split_seed"]) == (0, 0, 2)
    with pytest.raises(TypeError, match="seed"):
        build_image_data("cifar10", tmp_path, download=False, seed=1)


def test_split_depends_only_on_split_seed_image_folder(tmp_path):
    write_image_folder(tmp_path, "flowers", ("train", "test"), n_per_class=6)
    kw = {"image_size": 8, "val_fraction": 0.25}
    a = build_under_run_seed(0, "flowers", tmp_path, split_seed=3, **kw)
    b = build_under_run_seed(1, "flowers", tmp_path, split_seed=3, **kw)
    c = build_under_run_seed(0, "flowers", tmp_path, split_seed=4, **kw)
    assert a.val.indices == b.val.indices and a.train.indices == b.train.indices
    assert a.val.indices != c.val.indices
    assert a.meta["split_seed"] == 3


# --------------------------------------------------------------------------- train_eval


def test_cifar_train_eval_is_train_with_the_eval_transform(tmp_path):
    write_cifar10(tmp_path, n_per_batch=8)
    s = build_image_data("cifar10", tmp_path, download=False, cutout=8, n_examples=12)
    assert len(s.train_eval) == len(s.train) == 12
    assert list(s.train_eval.indices) == list(s.train.indices)
    assert "Random" not in repr(s.train_eval.dataset.transform)
    assert "Cutout" not in repr(s.train_eval.dataset.transform)
    for i, idx in enumerate(s.train.indices):
        want = expected_cifar(idx, CIFAR10_MEAN, CIFAR10_STD)
        torch.manual_seed(i)
        x1, y1 = s.train_eval[i]
        torch.manual_seed(i + 100)
        x2, y2 = s.train_eval[i]
        torch.testing.assert_close(x1, want)
        assert torch.equal(x1, x2) and y1 == y2 == s.train[i][1] == idx % 10
        draws = []
        for seed in range(4):  # the augmented image of the same example follows torch's RNG
            torch.manual_seed(seed)
            draws.append(s.train[i][0])
        assert not all(torch.equal(draws[0], d) for d in draws[1:])
        assert not torch.equal(draws[0], want)


def test_train_eval_without_subset_and_for_digits(tmp_path):
    write_image_folder(
        tmp_path, "cub200", ("train", "val", "test"), n_per_class={"train": 2, "val": 1, "test": 3}
    )
    s = build_image_data("cub200", tmp_path, image_size=16)  # own val: train is the whole set
    assert isinstance(s.train, torchvision.datasets.ImageFolder)
    assert s.train_eval.samples == s.train.samples
    assert "RandomCrop(size=(16, 16), padding=4)" in repr(s.train.transform)  # a small image
    large = build_image_data("cub200", tmp_path, image_size=72)
    assert "RandomResizedCrop" in repr(large.train.transform)
    assert repr(s.train_eval.transform) == repr(s.test.transform)
    d = build_image_data("digits", "unused")
    assert d.train_eval is d.train  # no transforms to remove


# --------------------------------------------------------------------------- labels


def assert_labels(splits) -> None:
    """labels(split) equals the labels of the items, in order, for every split."""
    for part in SPLITS:
        ds = getattr(splits, part)
        got = splits.labels(part)
        assert got.dtype == np.int64 and got.shape == (len(ds),)
        assert got.tolist() == [ds[i][1] for i in range(len(ds))]


def no_item_loads(monkeypatch) -> None:
    """Any item read from the data sets' classes fails from now on."""

    def boom(self, index):
        raise AssertionError(f"labels() loaded item {index} of {type(self).__name__}")

    for cls in (CIFAR10Files, CIFAR100Files, torchvision.datasets.ImageFolder, TensorImages):
        monkeypatch.setattr(cls, "__getitem__", boom)


def test_labels_match_the_items_without_loading_them(tmp_path, monkeypatch):
    write_cifar10(tmp_path, n_per_batch=8)
    write_cifar100(tmp_path, n_train=20, n_test=10)
    write_image_folder(tmp_path, "flowers", ("train", "test"), n_per_class=4)
    write_image_folder(
        tmp_path, "cub200", ("train", "val", "test"), n_per_class={"train": 2, "val": 1, "test": 3}
    )
    cases = [
        build_image_data("cifar10", tmp_path, download=False, n_examples=9, split_seed=1),
        build_image_data("cifar100", tmp_path, download=False, val_fraction=0.2),
        build_image_data("flowers", tmp_path, image_size=8, val_fraction=0.25, n_examples=5),
        build_image_data("cub200", tmp_path, image_size=8),
        build_image_data("digits", "unused", n_examples=77),
    ]
    for splits in cases:
        assert_labels(splits)
    want = [{p: s.labels(p).tolist() for p in SPLITS} for s in cases]
    assert want[0]["train"] == [i % 10 for i in cases[0].train.indices]
    no_item_loads(monkeypatch)
    with pytest.raises(AssertionError, match="loaded item"):
        cases[0].train[0]
    assert [{p: s.labels(p).tolist() for p in SPLITS} for s in cases] == want
    with pytest.raises(ValueError, match="train_eval"):
        cases[0].labels("training")


def test_labels_none_without_a_label_list():
    images = torch.zeros(3, 1, 2, 2)
    s = build_image_data("digits", "unused")
    s.val = [(images[i], 0) for i in range(3)]  # a plain list: nothing to read labels from
    assert s.labels("val") is None
    s.test = Subset(TensorImages(images, [2, 0, 1]), [2, 0])
    assert s.labels("test").tolist() == [1, 2]


# --------------------------------------------------------------------------- n_examples


def test_n_examples_is_a_seeded_random_subset_not_the_first_files(tmp_path):
    # ImageFolder lists files class by class: the first 6 are all "a", the next 6 "b", ...
    write_image_folder(
        tmp_path, "flowers", ("train", "test"), classes=("a", "b", "c", "d"), n_per_class=6
    )
    counts: Counter = Counter()
    for split_seed in range(8):
        kw = {"image_size": 8, "split_seed": split_seed}
        full = build_image_data("flowers", tmp_path, **kw)
        s = build_image_data("flowers", tmp_path, n_examples=4, **kw)
        again = build_image_data("flowers", tmp_path, n_examples=4, **kw)
        assert len(s.train) == 4 and s.train.indices == again.train.indices
        assert set(s.train.indices) <= set(full.train.indices)
        assert s.val.indices == full.val.indices  # the subset leaves validation alone
        assert full.labels("train")[:4].tolist() == [0, 0, 0, 0]  # what "the first n" gives
        counts.update(s.labels("train").tolist())
    assert sorted(counts) == [0, 1, 2, 3] and min(counts.values()) >= 4  # of 32 draws
