"""Image data for training and evaluating a GHN: scikit-learn digits (offline default), CIFAR-10, ImageNet.

Every training batch is a deterministic function of ``(seed, step)``: the order of images is a seeded
permutation per epoch and the augmentation of each image is drawn from a generator seeded by
``(seed, step, position)``. Resuming a run at step ``t`` therefore sees exactly the batches an uninterrupted run
would have seen, without saving any iterator state beyond the step counter.

Recipes (Knyazev et al., NeurIPS 2021, Sec. 5 and Appendix; reference ``ppuda/utils/data.py``):

- CIFAR-10: 45,000 training images and 5,000 held out (seeded split of the official training set), random crop
  32 with padding 4, horizontal flip, per-channel normalisation; the official 10,000-image test set.
- ImageNet: ``ImageFolder`` over ``root/train`` and ``root/val``; random resized crop, flip, colour jitter for
  training; resize 256 (scaled with ``image_size``) + centre crop for evaluation.
- digits (offline yardstick): ``sklearn.datasets.load_digits`` (1,797 real 8x8 grey images, 10 classes) resized to
  32x32 with 3 channels, a fixed stratified 1,437/360 train/test split; random crop with padding, no flip (digits
  are not mirror-symmetric).

A dataset that is missing or corrupt, or a setting it cannot serve (an unknown name, a batch larger than the
training set), raises :class:`DataError`, a :class:`archspace.errors.UsageError` that says which folder was expected
and which override (``data.root=...``) points elsewhere.

Shapes: images are ``(B, C, H, W)`` float tensors, normalised; labels are ``(B,)`` int64.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from archspace.errors import UsageError
from archspace.seeding import mix_seed

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DATASETS = ("digits", "cifar10", "imagenet")


class DataError(UsageError):
    """An image dataset that is missing, corrupt or cannot serve the requested setting (one line, exit status 2)."""


# ---------------------------------------------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------------------------------------------


class TensorImages(Dataset):
    """Images held in memory as one uint8 tensor (digits, CIFAR-10).

    Args:
        images: uint8 tensor ``(N, C, H, W)`` with values in 0..255.
        labels: int64 tensor ``(N,)``.

    Raises:
        ValueError: if the shapes or dtypes do not match.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be a uint8 (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    def __repr__(self) -> str:
        return f"TensorImages({len(self)}, shape={tuple(self.images.shape[1:])})"


@dataclass
class ImageData:
    """The images of one task: a training set, a held-out set (model selection) and a test set.

    ``train``/``heldout``/``test`` are either :class:`TensorImages` (in memory, batched augmentation) or any
    ``Dataset`` returning ``(PIL image, label)`` with the transforms in ``train_transform``/``eval_transform``.
    """

    name: str
    train: Dataset
    heldout: Dataset | None
    test: Dataset
    num_classes: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pad: int = 4  # in-memory augmentation: random crop with this zero padding (0: off)
    hflip: bool = True  # in-memory augmentation: random horizontal flip
    train_transform: object | None = None  # file datasets: per-image training transform (PIL -> tensor)
    eval_transform: object | None = None  # file datasets: per-image evaluation transform (PIL -> tensor)
    extra: dict = field(default_factory=dict)

    def split(self, name: str) -> Dataset:
        """The dataset of split ``name`` (``train``, ``heldout``/``val``, ``test``).

        Raises:
            DataError: unknown split, or a held-out split that this task does not have.
        """
        if name == "train":
            return self.train
        if name in ("heldout", "val"):
            if self.heldout is None:
                raise DataError(f"dataset {self.name!r} has no held-out split; use the test split or set data.heldout")
            return self.heldout
        if name == "test":
            return self.test
        raise DataError(f"unknown image split {name!r}; expected train, heldout (val) or test")

    def __repr__(self) -> str:
        held = len(self.heldout) if self.heldout is not None else 0
        return (f"ImageData({self.name}, train={len(self.train)}, heldout={held}, test={len(self.test)}, "
                f"classes={self.num_classes}, size={self.image_size})")


# ---------------------------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------------------------


def load_digits(image_size: int = 32, test_size: int = 360, seed: int = 0) -> ImageData:
    """scikit-learn's bundled digits as a 32x32 RGB task (offline yardstick, no download).

    The 8x8 images (values 0..16) are scaled to 0..255, resized bilinearly to ``image_size`` and repeated over 3
    channels. The train/test split is stratified and fixed by ``seed`` (1,437/360 by default).

    Args:
        image_size: side of the resized images.
        test_size: number of test images.
        seed: seed of the split.

    Returns:
        :class:`ImageData` with ``train`` (1,437), ``heldout`` = ``test`` (360) and no flip augmentation.

    Raises:
        DataError: ``image_size`` below 8.
    """
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    if image_size < 8:
        raise DataError(f"data.image_size must be >= 8 for digits, got {image_size}")
    bunch = _sk_load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) * (255.0 / 16.0)).unsqueeze(1)  # (N, 1, 8, 8)
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)  # (N, 1, S, S)
    x = x.clamp(0, 255).round().to(torch.uint8).repeat(1, 3, 1, 1)  # (N, 3, S, S)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=test_size, random_state=seed, stratify=bunch.target)
    tr, te = torch.from_numpy(np.sort(tr)), torch.from_numpy(np.sort(te))
    train = TensorImages(x[tr], y[tr])
    test = TensorImages(x[te], y[te])
    mean = tuple((train.images.float() / 255).mean(dim=(0, 2, 3)).tolist())
    std = tuple((train.images.float() / 255).std(dim=(0, 2, 3)).tolist())
    return ImageData("digits", train, test, test, 10, image_size, mean, std, crop_pad=max(1, image_size // 8),
                     hflip=False)


def _cifar10_class():
    """torchvision's ``CIFAR10`` with an integrity check that only requires the files to exist.

    torchvision 0.29 checks the md5 of every batch file and of ``batches.meta`` even with ``download=False``; we
    check existence and leave content checks to the pickle loader, so small files in the same format (tests) load
    too.
    """
    from torchvision.datasets import CIFAR10

    class _CIFAR10(CIFAR10):
        def _check_integrity(self) -> bool:
            return all(os.path.isfile(os.path.join(self.root, self.base_folder, f))
                       for f, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:  # the parent also md5-checks batches.meta
            import pickle

            with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return _CIFAR10


def load_cifar10(root: str, heldout: int = 5000, seed: int = 0, verify_md5: bool = False) -> ImageData:
    """CIFAR-10 from ``root/cifar-10-batches-py`` (the python pickle batches), split 45k/5k + the test set.

    Args:
        root: folder containing ``cifar-10-batches-py``.
        heldout: number of training images held out (seeded permutation); 0 for none.
        seed: seed of the held-out split.
        verify_md5: also check the official md5 sums (fails on anything but the official files).

    Returns:
        :class:`ImageData` (augmentation: random crop 32 pad 4 + horizontal flip; CIFAR-10 mean/std).

    Raises:
        DataError: the batch files are missing (the message says where to put them) or cannot be read, or
            ``heldout`` is not smaller than the training set.
    """
    from torchvision.datasets import CIFAR10

    root = os.path.expanduser(str(root))
    base = os.path.join(root, CIFAR10.base_folder)
    needed = [f for f, _ in CIFAR10.train_list + CIFAR10.test_list] + [CIFAR10.meta["filename"]]
    missing = [f for f in needed if not os.path.isfile(os.path.join(base, f))]
    if missing:
        what = f"{base} does not exist" if not os.path.isdir(base) else f"{base} lacks {', '.join(missing)}"
        raise DataError(f"CIFAR-10 not found: {what}; extract {CIFAR10.url} (downloaded elsewhere if offline) so "
                        f"that {base} holds data_batch_1..5, test_batch and batches.meta, or point data.root=... "
                        f"(ghn-train, ghn-eval) or --data-root (ghn commands) at the folder that contains "
                        f"cifar-10-batches-py")
    cls = CIFAR10 if verify_md5 else _cifar10_class()
    try:
        tr = cls(root, train=True, download=False)
        te = cls(root, train=False, download=False)
    except (pickle.UnpicklingError, EOFError, KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
        detail = " ".join(str(e).split())[:120] or type(e).__name__
        raise DataError(f"CIFAR-10 in {base} is corrupt ({detail}); extract {CIFAR10.url} there again, or set "
                        f"data.root=... to another folder that contains cifar-10-batches-py") from e

    def to_tensors(ds) -> TensorImages:
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
        return TensorImages(x, torch.as_tensor(ds.targets, dtype=torch.long))

    full, test = to_tensors(tr), to_tensors(te)
    n = len(full)
    if not 0 <= heldout < n:
        raise DataError(f"data.heldout must be in [0, {n}) for CIFAR-10, got {heldout}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    keep, held = perm[heldout:].sort().values, perm[:heldout].sort().values
    train = TensorImages(full.images[keep], full.labels[keep])
    held_ds = TensorImages(full.images[held], full.labels[held]) if heldout else None
    return ImageData("cifar10", train, held_ds, test, 10, 32, CIFAR10_MEAN, CIFAR10_STD, crop_pad=4, hflip=True)



def _read_image(path: str):
    """torchvision's image loader (an RGB PIL image), with a one-line :class:`DataError` naming an unreadable file.

    Raises:
        DataError: ``path`` is not an image PIL can read (truncated, or another format under an image name).
    """
    from torchvision.datasets.folder import default_loader

    try:
        return default_loader(path)
    except OSError as e:  # PIL.UnidentifiedImageError is an OSError
        detail = " ".join(str(e).split())[:120]
        raise DataError(f"cannot read the image {path} ({detail}); replace or delete it") from None


def load_imagenet(root: str, image_size: int = 224, heldout: int = 0, seed: int = 0) -> ImageData:
    """ImageNet (or any class-per-folder image set) through ``torchvision.datasets.ImageFolder``.

    Training transform: ``RandomResizedCrop(image_size)``, horizontal flip, ``ColorJitter(0.4, 0.4, 0.4)``;
    evaluation: resize to ``image_size * 8 / 7`` then centre crop ``image_size``. Both normalise with the ImageNet
    mean/std.

    Args:
        root: folder with ``train/`` and ``val/`` sub-folders of class folders.
        image_size: crop size.
        heldout: images of ``train`` held out for model selection (0: use ``val`` as held-out).
        seed: seed of the held-out split.

    Returns:
        :class:`ImageData` whose splits yield PIL images (transforms applied by the batch iterators).

    Raises:
        DataError: ``root/train`` or ``root/val`` is missing, holds no class folder of images, or the two
            have different classes.
    """
    import torchvision.transforms as T
    from torch.utils.data import Subset
    from torchvision.datasets import ImageFolder

    root = os.path.expanduser(str(root))
    layout = (f"put the images as {root}/train/<class>/<image> and {root}/val/<class>/<image>, or point "
              "data.root=... (ghn-train, ghn-eval) or --data-root (ghn commands) at the folder that holds them")
    for sub in ("train", "val"):
        if not os.path.isdir(os.path.join(root, sub)):
            raise DataError(f"ImageNet not found: {os.path.join(root, sub)} does not exist; {layout}")
    folders = {}
    for sub in ("train", "val"):
        try:
            folders[sub] = ImageFolder(os.path.join(root, sub), loader=_read_image)
        except (FileNotFoundError, OSError) as e:  # no class folder, or class folders without images
            detail = " ".join(str(e).split())[:160]
            raise DataError(f"ImageNet in {os.path.join(root, sub)} is corrupt ({detail}); {layout}") from e
    train, test = folders["train"], folders["val"]
    if train.classes != test.classes:
        raise DataError(f"ImageNet in {root}: train/ and val/ have different class folders "
                        f"({len(train.classes)} vs {len(test.classes)}); both need the same classes")
    held = test
    if heldout:
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
        held = Subset(train, sorted(perm[:heldout]))
        train = Subset(train, sorted(perm[heldout:]))
    norm = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(),
                          T.ColorJitter(0.4, 0.4, 0.4), T.ToTensor(), norm])
    eval_tf = T.Compose([T.Resize(int(round(image_size * 8 / 7))), T.CenterCrop(image_size), T.ToTensor(), norm])
    n_cls = len(test.classes)
    return ImageData("imagenet", train, held, test, n_cls, image_size, IMAGENET_MEAN, IMAGENET_STD,
                     crop_pad=0, hflip=True, train_transform=train_tf, eval_transform=eval_tf)


def load_image_data(name: str, root: str | None = None, image_size: int | None = None, seed: int = 0,
                    heldout: int | None = None, **kwargs) -> ImageData:
    """Load a task by name (``digits``, ``cifar10``, ``imagenet``).

    Args:
        name: dataset name.
        root: folder of the files (ignored by ``digits``).
        image_size: image side (``digits``: resize target; ``imagenet``: crop size; CIFAR-10 is always 32).
        seed: seed of the fixed splits.
        heldout: size of the held-out split taken from the training images (dataset default when ``None``).
        **kwargs: passed to the specific loader.

    Raises:
        DataError: unknown name, a file dataset without ``root``, or one that is missing or corrupt.
    """
    if name == "digits":
        return load_digits(image_size=image_size or 32, seed=seed, **kwargs)
    if name in ("cifar10", "imagenet") and not root:
        raise DataError(f"dataset {name!r} needs a root folder: set data.root=...")
    if name == "cifar10":
        if image_size not in (None, 32):
            raise DataError(f"CIFAR-10 images are 32x32, got data.image_size={image_size}")
        return load_cifar10(root, heldout=5000 if heldout is None else heldout, seed=seed, **kwargs)
    if name == "imagenet":
        return load_imagenet(root, image_size=image_size or 224, heldout=heldout or 0, seed=seed, **kwargs)
    raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


# ---------------------------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------------------------


def normalize(x_uint8: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 images ``(B, C, H, W)`` -> float, scaled to [0, 1] and normalised per channel."""
    m = torch.as_tensor(mean, dtype=torch.float32, device=x_uint8.device).view(1, -1, 1, 1)  # (1, C, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x_uint8.device).view(1, -1, 1, 1)  # (1, C, 1, 1)
    return (x_uint8.float() / 255.0 - m) / s


def augment_uint8(x: torch.Tensor, generator: torch.Generator, crop_pad: int = 4,
                  hflip: bool = True) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip of a uint8 batch, drawn from ``generator``.

    Equivalent to torchvision's ``RandomCrop(H, padding=crop_pad)`` + ``RandomHorizontalFlip()`` per image.

    Shapes:
        x: ``(B, C, H, W)`` -> ``(B, C, H, W)``.
    """
    b, _, h, w = x.shape
    if crop_pad > 0:
        xp = F.pad(x, (crop_pad, crop_pad, crop_pad, crop_pad))  # (B, C, H + 2p, W + 2p)
        off = torch.randint(0, 2 * crop_pad + 1, (b, 2), generator=generator)  # (B, 2)
        x = torch.stack([xp[i, :, oy:oy + h, ox:ox + w] for i, (oy, ox) in enumerate(off.tolist())])
    if hflip:
        flip = torch.rand(b, generator=generator) < 0.5  # (B,)
        x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
    return x


class _SeededTransform(Dataset):
    """Wraps a PIL dataset; item ``(i, seed)`` applies ``transform`` under ``torch.manual_seed(seed)``."""

    def __init__(self, dataset: Dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        i, seed = item
        img, label = self.dataset[i]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            x = self.transform(img)
        return x, label


class _StepSampler(Sampler):
    """Yields, for steps ``start..``, the list of ``(index, augmentation seed)`` of that step's batch."""

    def __init__(self, batches: TrainBatches, start: int, stop: int | None):
        self.batches, self.start, self.stop = batches, start, stop

    def __iter__(self):
        step = self.start
        while self.stop is None or step < self.stop:
            idx = self.batches.indices(step).tolist()
            yield [(i, mix_seed(self.batches.seed, 2, step, j)) for j, i in enumerate(idx)]
            step += 1


class TrainBatches:
    """Augmented training batches as a deterministic function of ``(seed, step)``.

    Epoch ``e`` visits the training images in a permutation seeded by ``(seed, e)``; step ``t`` takes the
    ``t % steps_per_epoch``-th slice of ``batch_size`` images (the last partial slice is dropped).

    Args:
        data: the task.
        batch_size: images per step (the paper: 64 for CIFAR-10, 256 for ImageNet).
        seed: run seed.
        augment: apply the training augmentation.
        num_workers: loader processes for file datasets (ignored for in-memory data).
        rank, world_size: take the ``rank``-th of ``world_size`` equal shards of each batch (all ranks of a
            DDP run see disjoint parts of the same global batch); defaults: the whole batch.

    Raises:
        DataError: ``batch_size`` is not in ``[1, training images]``.
    """

    def __init__(self, data: ImageData, batch_size: int = 64, seed: int = 0, augment: bool = True,
                 num_workers: int = 0, rank: int = 0, world_size: int = 1):
        n = len(data.train)
        if not 0 < batch_size <= n:
            raise DataError(f"batch_size must be in [1, {n}] (the training images of {data.name}), got {batch_size}")
        self.data, self.batch_size, self.seed, self.augment = data, batch_size, seed, augment
        self.num_workers, self.rank, self.world_size = num_workers, rank, world_size
        self.steps_per_epoch = n // batch_size
        self._perm_cache: tuple[int, torch.Tensor] | None = None

    def indices(self, step: int) -> torch.Tensor:
        """Indices into ``data.train`` of the batch at ``step`` (all ranks), ``(batch_size,)``."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            g = torch.Generator().manual_seed(mix_seed(self.seed, 1, epoch))
            self._perm_cache = (epoch, torch.randperm(len(self.data.train), generator=g))
        return self._perm_cache[1][pos * self.batch_size:(pos + 1) * self.batch_size]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The (normalised, augmented) batch at ``step``: images ``(B, C, H, W)``, labels ``(B,)``."""
        return next(self.iterate(step, step + 1))

    def iterate(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches for steps ``start, start + 1, ...`` (up to ``stop``, exclusive; forever if ``None``)."""
        d = self.data
        if isinstance(d.train, TensorImages):
            step = start
            while stop is None or step < stop:
                idx = self.indices(step)
                x = d.train.images[idx]
                if self.augment:
                    g = torch.Generator().manual_seed(mix_seed(self.seed, 2, step))
                    x = augment_uint8(x, g, crop_pad=d.crop_pad, hflip=d.hflip)
                x, y = normalize(x, d.mean, d.std), d.train.labels[idx]
                yield self._shard(x, y)
                step += 1
        else:
            tf = d.train_transform if self.augment else d.eval_transform
            loader = DataLoader(_SeededTransform(d.train, tf), batch_sampler=_StepSampler(self, start, stop),
                                num_workers=self.num_workers, persistent_workers=False)
            for x, y in loader:
                yield self._shard(x, torch.as_tensor(y, dtype=torch.long))

    def _shard(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.world_size == 1:
            return x, y
        if x.shape[0] % self.world_size:
            raise ValueError(f"batch of {x.shape[0]} does not split over {self.world_size} ranks")
        k = x.shape[0] // self.world_size
        return x[self.rank * k:(self.rank + 1) * k], y[self.rank * k:(self.rank + 1) * k]


def eval_batches(data: ImageData, split: str = "test", batch_size: int = 64, limit: int | None = None,
                 num_workers: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]] | Iterator:
    """Evaluation batches of a split in a fixed order, without augmentation.

    In-memory data is returned as a list (reused across many networks); file datasets as a ``DataLoader``.

    Args:
        data: the task.
        split: ``train``, ``heldout`` (``val``) or ``test``.
        batch_size: images per batch (64 in the paper, with BatchNorm in batch-statistics mode).
        limit: use only the first ``limit`` images.
        num_workers: loader processes for file datasets.

    Returns:
        Batches ``(images (B, C, H, W), labels (B,))``; the last one may be smaller.
    """
    ds = data.split(split)
    n = len(ds) if limit is None else min(limit, len(ds))
    if isinstance(ds, TensorImages):
        x = normalize(ds.images[:n], data.mean, data.std)  # (n, C, H, W)
        y = ds.labels[:n]
        return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, n, batch_size)]
    from torch.utils.data import Subset

    from_files = _EvalTransform(Subset(ds, range(n)) if n < len(ds) else ds, data.eval_transform)
    return DataLoader(from_files, batch_size=batch_size, shuffle=False, num_workers=num_workers)


class _EvalTransform(Dataset):
    def __init__(self, dataset: Dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        img, label = self.dataset[i]
        return self.transform(img), label
