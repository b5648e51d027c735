"""Tests for :mod:`train.data`: the three image tasks load through the real code from (tiny) files, and training
batches are a deterministic function of (seed, step)."""

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from train.data import (
    DataError,
    TensorImages,
    TrainBatches,
    augment_uint8,
    eval_batches,
    load_cifar10,
    load_digits,
    load_image_data,
    load_imagenet,
)


def write_tiny_cifar10(root, per_batch=20, test=30, seed=0):
    """Write CIFAR-10-format pickle batches (data_batch_1..5, test_batch, batches.meta) with random images."""
    rng = np.random.default_rng(seed)
    base = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(base, exist_ok=True)

    def batch(n, name):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        with open(os.path.join(base, name), "wb") as f:
            pickle.dump({"data": data, "labels": labels, "batch_label": name}, f)
        return data, labels

    train = [batch(per_batch, f"data_batch_{i}") for i in range(1, 6)]
    batch(test, "test_batch")
    with open(os.path.join(base, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)], "num_cases_per_batch": per_batch}, f)
    return train


def write_tiny_imagefolder(root, classes=3, per_class=4, size=40):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            d = os.path.join(root, split, f"class{c}")
            os.makedirs(d, exist_ok=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, size=(size, size + 4, 3), dtype=np.uint8)
                Image.fromarray(arr).save(os.path.join(d, f"{i}.png"))


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_digits_split_sizes_and_format(digits):
    assert len(digits.train) == 1437 and len(digits.test) == 360
    assert digits.train.images.shape[1:] == (3, 32, 32) and digits.train.images.dtype == torch.uint8
    assert set(digits.test.labels.tolist()) == set(range(10))
    # The three channels are copies of the grey image, and the images are real (not blank).
    img = digits.train.images[0]
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2]) and img.max() > 100
    # The split is fixed: the same seed gives the same split, train and test are disjoint in content.
    again = load_digits()
    assert torch.equal(again.test.images, digits.test.images)
    train = {bytes(im.numpy()) for im in digits.train.images}
    assert not any(bytes(im.numpy()) in train for im in digits.test.images)


def test_ghn_train_splits_the_data_as_every_other_command_whatever_its_seed():
    """ghn-train with seed 3 trains on the split ghn-eval, ghn rank, ... evaluate on (split seed 0), so a GHN of any
    seed is evaluated on images it never trained on (the run seed drew the split before, 292 of 360 test images
    of seed 0 were in seed 1's training set)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from train.cli import load_data
    from train.config import find_conf_dir

    with initialize_config_dir(config_dir=find_conf_dir("train"), version_base="1.3"):
        c = OmegaConf.to_container(compose("train", overrides=["seed=3"]), resolve=True)
    data = load_data(c["data"])
    reference = load_digits(image_size=c["data"]["image_size"], seed=0)
    assert torch.equal(data.test.images, reference.test.images)
    assert torch.equal(data.train.images, reference.train.images)


def test_batches_are_a_function_of_seed_and_step(digits):
    a = TrainBatches(digits, 64, seed=3)
    b = TrainBatches(digits, 64, seed=3)
    x7, y7 = a.batch(7)
    list(b.iterate(0, 5))  # consuming other steps first changes nothing
    xs = list(b.iterate(5, 8))
    assert torch.equal(xs[2][0], x7) and torch.equal(xs[2][1], y7)
    assert x7.shape == (64, 3, 32, 32) and x7.dtype == torch.float32
    assert not torch.equal(a.batch(8)[0], x7)
    assert not torch.equal(TrainBatches(digits, 64, seed=4).batch(7)[0], x7)
    # One epoch visits every image once.
    idx = torch.cat([a.indices(s) for s in range(a.steps_per_epoch)])
    assert len(set(idx.tolist())) == a.steps_per_epoch * 64


def test_batches_shard_over_ranks(digits):
    full = TrainBatches(digits, 64, seed=0).batch(2)
    parts = [TrainBatches(digits, 64, seed=0, rank=r, world_size=2).batch(2) for r in range(2)]
    assert torch.equal(torch.cat([p[0] for p in parts]), full[0])


def test_augmentation_crops_and_flips():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).view(2, 1, 4, 4)
    g = torch.Generator().manual_seed(0)
    out = augment_uint8(x, g, crop_pad=0, hflip=True)
    for i in range(2):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))
    out = augment_uint8(x, torch.Generator().manual_seed(1), crop_pad=2, hflip=False)
    assert out.shape == x.shape
    # Each crop is a shifted window: every non-zero value comes from the same image.
    for i in range(2):
        assert set(out[i][out[i] > 0].tolist()) <= set(x[i].flatten().tolist())


def test_eval_batches_cover_the_split_in_order(digits):
    batches = eval_batches(digits, "test", batch_size=64)
    assert sum(len(y) for _, y in batches) == 360 and len(batches[-1][1]) == 360 - 5 * 64
    assert torch.equal(torch.cat([y for _, y in batches]), digits.test.labels)


def test_cifar10_loads_tiny_files_with_split(tmp_path):
    train = write_tiny_cifar10(tmp_path)
    data = load_cifar10(str(tmp_path), heldout=30, seed=0)
    assert len(data.train) == 70 and len(data.heldout) == 30 and len(data.test) == 30
    # Images are the written pixels (CHW, uint8) and the split partitions the training set.
    written = np.concatenate([d for d, _ in train]).reshape(-1, 3, 32, 32)
    all_imgs = torch.cat([data.train.images, data.heldout.images]).reshape(100, -1)
    assert sorted(map(bytes, all_imgs.numpy())) == sorted(map(bytes, written.reshape(100, -1)))
    x, y = TrainBatches(data, 16).batch(0)
    assert x.shape == (16, 3, 32, 32) and y.dtype == torch.int64
    assert load_image_data("cifar10", root=str(tmp_path), heldout=10).heldout is not None


def test_cifar10_missing_files_say_where_to_put_them(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py does not exist.*data.root="):
        load_cifar10(str(tmp_path))
    write_tiny_cifar10(tmp_path)
    os.remove(tmp_path / "cifar-10-batches-py" / "test_batch")
    with pytest.raises(DataError, match="cifar-10-batches-py lacks test_batch"):
        load_cifar10(str(tmp_path))
    with pytest.raises(DataError, match="data.root"):
        load_image_data("cifar10", root=None)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "wrong content"])
def test_corrupt_cifar10_is_a_data_error(damage, tmp_path):
    write_tiny_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(b"not a pickle at all")
    else:
        with open(path, "wb") as f:
            pickle.dump({"labels": [1, 2]}, f)
    with pytest.raises(DataError, match=f"CIFAR-10 in {tmp_path / 'cifar-10-batches-py'} is corrupt"):
        load_cifar10(str(tmp_path))


def test_imagefolder_loads_tiny_tree(tmp_path):
    write_tiny_imagefolder(tmp_path)
    data = load_imagenet(str(tmp_path), image_size=16)
    assert data.num_classes == 3 and len(data.train) == 12 and len(data.test) == 12
    a = list(TrainBatches(data, 4, seed=1).iterate(0, 2))
    b = list(TrainBatches(data, 4, seed=1).iterate(1, 2))
    assert a[0][0].shape == (4, 3, 16, 16)
    assert torch.equal(a[1][0], b[0][0])  # augmentation is seeded per (seed, step, position)
    ev = list(eval_batches(data, "test", batch_size=5))
    assert sum(len(y) for _, y in ev) == 12 and ev[0][0].shape[-1] == 16


def test_imagefolder_missing_or_corrupt_says_where(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'train'} does not exist.*data.root="):
        load_imagenet(str(tmp_path))
    for split in ("train", "val"):
        os.makedirs(tmp_path / split / "cat")  # a class folder without images
    with pytest.raises(DataError, match=f"ImageNet in {tmp_path / 'train'} is corrupt"):
        load_imagenet(str(tmp_path))
    write_tiny_imagefolder(tmp_path / "other", classes=3)
    os.rename(tmp_path / "other" / "val" / "class2", tmp_path / "other" / "val" / "dog")
    with pytest.raises(DataError, match="different class folders"):
        load_imagenet(str(tmp_path / "other"))


def test_an_unreadable_image_is_named(tmp_path):
    write_tiny_imagefolder(tmp_path)
    bad = tmp_path / "val" / "class1" / "2.png"
    bad.write_bytes(b"\x89PNG but not really an image")
    data = load_imagenet(str(tmp_path), image_size=16)
    with pytest.raises(DataError, match=f"cannot read the image {bad} .*replace or delete it"):
        list(eval_batches(data, "test", batch_size=5))


def test_bad_input_is_explained(digits):
    with pytest.raises(ValueError, match="uint8"):
        TensorImages(torch.zeros(2, 3, 4, 4), torch.zeros(2))
    with pytest.raises(DataError, match=r"batch_size must be in \[1, 1437\]"):
        TrainBatches(digits, 5000)
    with pytest.raises(DataError, match="unknown dataset 'mnist'; expected one of digits, cifar10, imagenet"):
        load_image_data("mnist")
    with pytest.raises(DataError, match="unknown image split 'dev'"):
        digits.split("dev")
    with pytest.raises(DataError, match="CIFAR-10 images are 32x32"):
        load_image_data("cifar10", root="somewhere", image_size=64)
