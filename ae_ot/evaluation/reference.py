"""Real-data references for the metrics: classifier features of MNIST (or Stacked MNIST) with
their Gaussian fit, computed once per process and classifier."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ae_ot.checks import UserInputError
from ae_ot.datasets import load_mnist, stacked_label, stacked_mnist_indices
from ae_ot.evaluation.features import extract_features, gaussian_stats
from ae_ot.io import atomic_torch_save, data_digest

__all__ = ["RealReference", "mnist_split_features", "get_reference"]

_FEATURES: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
_REFERENCES: dict[tuple, "RealReference"] = {}


@dataclass
class RealReference:
    """Features [N, 128 * channels] of N real images, their labels, mean and covariance.

    Examples
    --------
    >>> reference = get_reference(channels=1)  # doctest: +SKIP
    >>> reference.mu.shape, reference.sigma.shape  # doctest: +SKIP
    ((128,), (128, 128))
    """

    channels: int
    features: torch.Tensor
    labels: torch.Tensor
    mu: np.ndarray
    sigma: np.ndarray
    description: str
    classifier: torch.nn.Module


def _disk_cached_features(classifier, images, labels, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and probabilities of a whole split, cached beside the classifier's weights
    (``classifier-<key>-features-<split>-<data digest>.pt``; about 33 MB for the training split)."""
    cache_path = getattr(classifier, "cache_path", None)
    path = None
    if cache_path is not None:
        digest = data_digest(images, labels)[:12]
        path = Path(cache_path).with_name(f"{Path(cache_path).stem}-features-{split}-{digest}.pt")
        if path.is_file():
            try:
                blob = torch.load(path, map_location="cpu", weights_only=True)
                if blob["features"].shape[0] == images.shape[0]:
                    return blob["features"], blob["probs"]
            except Exception:
                pass  # unreadable: recompute and overwrite
    features, probs = extract_features(images, classifier, check=False)
    probs = probs[:, 0]
    if path is not None:
        try:
            atomic_torch_save({"features": features, "probs": probs}, path)
        except OSError:
            pass  # a read-only cache only costs time
    return features, probs


def mnist_split_features(classifier, split: str = "train", splits=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [n, 128] and probabilities [n, 10] of every image of an MNIST split (cached)."""
    if split not in ("train", "test"):
        raise UserInputError(f"split must be 'train' or 'test', got {split!r}")
    key = (id(classifier), split, id(splits))
    if key not in _FEATURES:
        if splits is None:
            splits = load_mnist()
        images = splits.train_images if split == "train" else splits.test_images
        labels = splits.train_labels if split == "train" else splits.test_labels
        _FEATURES[key] = _disk_cached_features(classifier, images, labels, split)
    return _FEATURES[key]


def get_reference(channels: int = 1, classifier=None, split: str = "train", num_stacked: int = 60000,
                  seed: int = 0, splits=None) -> RealReference:
    """The real reference of ``channels``-channel images.

    One channel: the whole MNIST ``split``. Three channels: ``num_stacked`` seeded Stacked MNIST
    triples of that split (their features are the cached single-digit features, concatenated).

    Examples
    --------
    >>> reference = get_reference(channels=1)   # MNIST training split on the cached classifier  # doctest: +SKIP
    >>> reference.features.shape  # doctest: +SKIP
    torch.Size([60000, 128])
    """
    if channels not in (1, 3):
        raise UserInputError(f"only 1-channel MNIST and 3-channel Stacked MNIST are supported, got {channels} channels")
    if classifier is None:
        from ae_ot.evaluation.classifier import get_classifier

        classifier = get_classifier(splits=splits)
    key = (id(classifier), channels, split, num_stacked, seed, id(splits))
    if key in _REFERENCES:
        return _REFERENCES[key]
    features, probs = mnist_split_features(classifier, split, splits)
    if splits is None:
        splits = load_mnist()
    labels = splits.train_labels if split == "train" else splits.test_labels
    if channels == 1:
        description = f"MNIST {split} split ({features.shape[0]} images)"
    else:
        triples = stacked_mnist_indices(num_stacked, features.shape[0], seed)
        features = features[triples].reshape(num_stacked, -1)
        labels = stacked_label(labels[triples])
        description = f"Stacked MNIST from the MNIST {split} split ({num_stacked} triples, seed {seed})"
    mu, sigma = gaussian_stats(features)
    reference = RealReference(channels, features, labels, mu, sigma, description, classifier)
    _REFERENCES[key] = reference
    return reference
