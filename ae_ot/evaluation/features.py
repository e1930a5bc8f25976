"""Classifier features of images: the input checks, the features and their Gaussian fit.

Every feature metric (:mod:`ae_ot.evaluation.metrics`) and every real reference
(:mod:`ae_ot.evaluation.reference`) reads images through these functions: the 128-d penultimate
activations of :class:`~ae_ot.evaluation.classifier.MNISTClassifier`, one block per channel.
"""

from __future__ import annotations

import numpy as np
import torch

from ae_ot.checks import UserInputError
from ae_ot.evaluation.classifier import get_classifier

__all__ = ["check_images", "check_features", "extract_features", "gaussian_stats"]


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------
def check_images(images, name: str = "images", channels: tuple[int, ...] = (1, 3), atol: float = 1e-4) -> torch.Tensor:
    """Validate images [n, C, 28, 28] with C in ``channels`` and values in [0, 1]; return them as
    float32 on the CPU. Anything else raises a ValueError saying what is wrong.

    Examples
    --------
    >>> import torch
    >>> check_images(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 1, 28, 28])
    """
    if not isinstance(images, torch.Tensor):
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(images)
        else:
            raise UserInputError(f"{name} must be a torch.Tensor [n, C, 28, 28], got {type(images).__name__}")
    if images.dim() != 4 or tuple(images.shape[2:]) != (28, 28) or images.shape[1] not in channels:
        raise UserInputError(
            f"{name} must have shape [n, C, 28, 28] with C in {channels}, got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise UserInputError(f"{name} is empty")
    if not (images.is_floating_point()):
        raise UserInputError(f"{name} must be floating point in [0, 1], got dtype {images.dtype} "
                             "(divide uint8 images by 255)")
    images = images.detach().float().cpu()
    if not torch.isfinite(images).all():
        raise UserInputError(f"{name} contain NaN or infinite values")
    lo, hi = float(images.min()), float(images.max())
    if lo < -atol or hi > 1 + atol:
        hint = " (images in [-1, 1]? map them with (x + 1) / 2)" if lo < -atol and lo >= -1 - atol else ""
        raise UserInputError(f"{name} must have values in [0, 1], got min {lo:.4g}, max {hi:.4g}{hint}")
    return images.clamp(0, 1)


def check_features(features, name: str = "features") -> torch.Tensor:
    """Features [n, d] (n >= 1) as a tensor, or :class:`UserInputError` naming ``name``.

    Examples
    --------
    >>> check_features([[0.0, 1.0], [2.0, 3.0]]).shape
    torch.Size([2, 2])
    """
    if not isinstance(features, torch.Tensor):
        features = torch.as_tensor(np.asarray(features))
    if features.dim() != 2 or features.shape[0] == 0:
        raise UserInputError(f"{name} must be a non-empty [n, d] array, got shape {tuple(features.shape)}")
    if not torch.isfinite(features).all():
        raise UserInputError(f"{name} contain NaN or infinite values")
    return features.detach().float().cpu()


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def extract_features(images: torch.Tensor, classifier=None, batch_size: int = 2000,
                     check: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Classifier features and class probabilities of images [n, C, 28, 28].

    Returns ``features`` [n, 128 * C] (channel features concatenated) and ``probs`` [n, C, 10].

    Examples
    --------
    >>> import torch
    >>> from ae_ot.evaluation import MNISTClassifier
    >>> features, probs = extract_features(torch.rand(4, 1, 28, 28), classifier=MNISTClassifier().eval())
    >>> features.shape, probs.shape
    (torch.Size([4, 128]), torch.Size([4, 1, 10]))
    """
    if check:
        images = check_images(images)
    if classifier is None:
        classifier = get_classifier()
    classifier.eval()
    n, c = images.shape[:2]
    flat = images.reshape(n * c, 1, 28, 28)  # channel-major inside each image
    feats, probs = [], []
    for start in range(0, flat.shape[0], batch_size):
        f, logits = classifier.features_and_logits(flat[start:start + batch_size])
        feats.append(f)
        probs.append(logits.softmax(1))
    features = torch.cat(feats).reshape(n, c * feats[0].shape[1])
    return features, torch.cat(probs).reshape(n, c, -1)


# --------------------------------------------------------------------------------------------
# Gaussian fit
# --------------------------------------------------------------------------------------------
def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of features [n, d], in float64.

    Examples
    --------
    >>> import torch
    >>> mean, cov = gaussian_stats(torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
    >>> mean.tolist(), cov.tolist()
    ([1.0, 2.0], [[2.0, 2.0], [2.0, 2.0]])
    """
    x = check_features(features).double().numpy()
    if x.shape[0] < 2:
        raise UserInputError(f"a covariance needs at least 2 samples, got {x.shape[0]}")
    return x.mean(0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])
