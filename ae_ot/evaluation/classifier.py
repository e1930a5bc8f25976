"""The project's own MNIST feature extractor: a small CNN trained once, cached, deterministic.

No Inception weights can be downloaded here, so every feature-based metric of
:mod:`ae_ot.evaluation.metrics` reads the 128-d penultimate activations of this classifier, and the
mode statistics read its predictions. Metrics computed on these features are named after them
("FID (MNIST classifier features)"), never plain "FID": the numbers are not comparable with
Inception-based FIDs from papers.

The weights are cached as ``<cache>/classifier-<key>.pt`` where ``<cache>`` is ``$AE_OT_CACHE`` or
``~/.cache/ae-ot`` and ``<key>`` hashes :data:`CODE_VERSION` with a digest of the training data, so
a change of architecture/recipe or of the data gives a new file instead of stale weights.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ae_ot.checks import UserInputError
from ae_ot.io import atomic_torch_save, cache_dir, check_cache_dir, data_digest
from ae_ot.nets import to_channels_last

__all__ = [
    "CODE_VERSION",
    "FEATURE_DIM",
    "MNISTClassifier",
    "classifier_key",
    "classifier_path",
    "train_classifier",
    "classifier_accuracy",
    "get_classifier",
]

#: bump whenever the architecture or the training recipe changes (it is part of the cache key)
CODE_VERSION = "ae-ot-mnist-cnn-v2 (3 conv+BN + 2 fc, adam 2e-3 cosine, 3 epochs, batch 128, seed 0)"
FEATURE_DIM = 128

_LOADED: dict[str, "MNISTClassifier"] = {}


class MNISTClassifier(nn.Module):
    """Small CNN for 28x28 grey digits (188k parameters).

    conv 3x3 1->32, maxpool (14x14); conv 3x3 32->64, maxpool (7x7); conv 3x3 stride 2 64->64
    (4x4), each conv with batch norm and ReLU; fc 1024->128 + ReLU (the **features**); dropout 0.2;
    fc 128->10 (the logits).
    Input: images [B, 1, 28, 28] in [0, 1].

    Examples
    --------
    >>> import torch
    >>> MNISTClassifier()(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    feature_dim = FEATURE_DIM
    num_classes = 10

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.Flatten(),
        )
        self.fc = nn.Sequential(nn.Linear(64 * 4 * 4, FEATURE_DIM), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(FEATURE_DIM, 10)
        self.to(memory_format=torch.channels_last)  # NHWC convolutions on CPU, see to_channels_last

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations [B, 128] (post-ReLU) of images [B, 1, 28, 28]."""
        return self.fc(self.conv(to_channels_last(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return f, self.head(f)


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------
def classifier_key(splits, subset: int | None = None, epochs: int = 3) -> str:
    """Cache key: hash of :data:`CODE_VERSION`, the training-data digest, and the recipe knobs."""
    digest = data_digest(splits.train_images, splits.train_labels)
    text = f"{CODE_VERSION}|data={digest}|subset={subset}|epochs={epochs}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def classifier_path(key: str) -> Path:
    """The cache file of the classifier with cache key ``key`` (:func:`classifier_key`).

    Examples
    --------
    >>> classifier_path("0123abcd").name
    'classifier-0123abcd.pt'
    """
    return cache_dir() / f"classifier-{key}.pt"


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def classifier_accuracy(model: MNISTClassifier, images: torch.Tensor, labels: torch.Tensor,
                        batch_size: int = 2000) -> float:
    """Fraction of ``images`` whose predicted digit equals ``labels``.

    Examples
    --------
    >>> import torch
    >>> model = MNISTClassifier().eval()
    >>> 0.0 <= classifier_accuracy(model, torch.rand(8, 1, 28, 28), torch.arange(8)) <= 1.0
    True
    """
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        logits = model(images[start:start + batch_size])
        correct += int((logits.argmax(1) == labels[start:start + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, images.shape[0])


def train_classifier(splits, epochs: int = 3, batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                     subset: int | None = None, progress: bool = True) -> tuple[MNISTClassifier, dict]:
    """Train :class:`MNISTClassifier` on ``splits.train_images`` (optionally the first ``subset``
    of them) with Adam and a cosine learning-rate decay; deterministic for a given seed.

    Returns the model in eval mode and ``info`` (test accuracy, seconds, epochs, ...).

    Examples
    --------
    >>> classifier = train_classifier(epochs=3)  # doctest: +SKIP
    """
    if epochs <= 0:
        raise UserInputError(f"epochs must be positive, got {epochs}")
    if subset is not None and subset <= 0:
        raise UserInputError(f"subset must be positive or None, got {subset}")
    images, labels = splits.train_images, splits.train_labels
    if subset is not None:
        images, labels = images[:subset], labels[:subset]
    n = images.shape[0]
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = MNISTClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = (n + batch_size - 1) // batch_size
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs * steps_per_epoch, desc="training the MNIST feature classifier", unit="batch")
    start_time = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            loss = F.cross_entropy(model(images[idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}", refresh=False)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start_time
    model.eval()
    accuracy = classifier_accuracy(model, splits.test_images, splits.test_labels)
    info = {"test_accuracy": accuracy, "train_seconds": seconds, "epochs": epochs, "subset": subset,
            "num_train_images": n, "seed": seed, "code_version": CODE_VERSION}
    return model, info


# --------------------------------------------------------------------------------------------
# Cached access
# --------------------------------------------------------------------------------------------
def _load_cached(path: Path, key: str) -> MNISTClassifier | None:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(blob, dict) or blob.get("key") != key:
            raise UserInputError("key mismatch")
        model = MNISTClassifier()
        model.load_state_dict(blob["state_dict"])
    except Exception as err:  # corrupt or foreign file: say so, then retrain over it
        warnings.warn(f"ignoring unreadable classifier cache {path} ({type(err).__name__}: {err})", stacklevel=2)
        return None
    model.info = blob.get("info", {})
    return model.eval()


def get_classifier(train_if_missing: bool = True, progress: bool = True, splits=None, data_dir: str = "data",
                   subset: int | None = None, epochs: int = 3, force_retrain: bool = False) -> MNISTClassifier:
    """The MNIST classifier in eval mode (``requires_grad`` off), from memory, the disk cache, or
    trained now (with a progress bar) and cached.

    Parameters
    ----------
    train_if_missing : bool
        Train it when no cached weights exist; otherwise raise :class:`FileNotFoundError`
        naming the command that trains it (``ae-ot train-classifier``).
    progress : bool
        Show a progress bar while training.
    splits : ImageSplits, optional
        MNIST to train on / key the cache with (default ``load_mnist(data_dir)``).
    subset : int, optional
        Train on the first ``subset`` training images only (quick classifiers for tests; it has its
        own cache key and does not reach 99 %).

    Examples
    --------
    >>> classifier = get_classifier()   # trains once (a few minutes), then reads the cache  # doctest: +SKIP
    >>> classifier.features(images).shape  # doctest: +SKIP
    torch.Size([n, 128])
    """
    if splits is None:
        from ae_ot.datasets import load_mnist

        splits = load_mnist(data_dir)
    key = classifier_key(splits, subset=subset, epochs=epochs)
    if not force_retrain and key in _LOADED:
        return _LOADED[key]
    path = classifier_path(key)
    model = None
    if path.is_file() and not force_retrain:
        model = _load_cached(path, key)
    if model is None:
        if not train_if_missing and not force_retrain:
            raise FileNotFoundError(
                f"no trained MNIST feature classifier at {path}; run `ae-ot train-classifier` first "
                "(about 1-2 minutes on a 2-core CPU)")
        check_cache_dir()  # a cache that cannot hold the weights is refused before the training, not after
        model, info = train_classifier(splits, epochs=epochs, subset=subset, progress=progress)
        atomic_torch_save({"key": key, "state_dict": model.state_dict(), "info": info}, path)
        model.info = info
    for p in model.parameters():
        p.requires_grad_(False)
    model.cache_path = path
    _LOADED[key] = model
    return model
