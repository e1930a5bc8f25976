r"""Copies of the training set in pixel space.

A sampler that returns (decoded) training codes can score well on every distribution metric while
only memorising. A generated image :math:`g` counts as a *pixel-space copy* when it lies closer
to its nearest training image than almost every real held-out image lies to its own:

.. math::

    \mathrm{copies}(G) = \frac{1}{|G|} \sum_{g \in G}
        \mathbf{1}\Big[\min_i \lVert g - x_i \rVert_2 < q_{0.01}\Big],\qquad
    q_{0.01} = \text{1\% quantile of } \big\{ \min_i \lVert t - x_i \rVert_2 : t \in T \big\},

with :math:`x_i` the training images and :math:`T` real test images (flattened pixels in [0, 1]).
Real test digits themselves score 1% by construction. Blur also shrinks the nearest-training
distance (a blurred digit is close to many), so a blurry sampler can score copies without copying.
"""

from __future__ import annotations

import torch

from ae_ot.checks import UserInputError, require_in_interval
from ae_ot.evaluation.latent import nearest_neighbour_distances

__all__ = ["nearest_training_distances", "pixel_copy_threshold", "pixel_copy_rate"]


def _flat(images: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() < 2 or images.shape[0] == 0:
        raise UserInputError(f"{name} must be a non-empty tensor [n, ...] of images, got "
                             f"{type(images).__name__} {tuple(getattr(images, 'shape', ()))}")
    return images.reshape(images.shape[0], -1).float()


def nearest_training_distances(images: torch.Tensor, train_images: torch.Tensor) -> torch.Tensor:
    """Euclidean pixel distance [n] of each image [n, C, H, W] to its nearest training image.

    Examples
    --------
    >>> import torch
    >>> train = torch.zeros(3, 1, 2, 2); train[1] = 1.0
    >>> nearest_training_distances(torch.full((1, 1, 2, 2), 0.9), train)
    tensor([0.2000])
    """
    train, queries = _flat(train_images, "train_images"), _flat(images, "images")
    if train.shape[1] != queries.shape[1]:
        raise UserInputError(f"images have {queries.shape[1]} pixels each and the training images {train.shape[1]}")
    return nearest_neighbour_distances(train, queries)


def pixel_copy_threshold(test_images: torch.Tensor, train_images: torch.Tensor, quantile: float = 0.01) -> float:
    """The ``quantile`` of the real test images' nearest-training distances (:math:`q_{0.01}`).

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> train, test = torch.rand(20, 1, 28, 28, generator=g), torch.rand(10, 1, 28, 28, generator=g)
    >>> pixel_copy_threshold(test, train) > 0
    True
    """
    require_in_interval(0, 1, quantile=quantile)
    return torch.quantile(nearest_training_distances(test_images, train_images), quantile).item()


def pixel_copy_rate(generated: torch.Tensor, train_images: torch.Tensor, test_images: torch.Tensor | None = None,
                    quantile: float = 0.01, threshold: float | None = None) -> dict:
    """Fraction of ``generated`` images closer to a training image than ``quantile`` of real test
    images are (module docstring), with the distances' medians.

    Returns
    -------
    dict
        ``pixel_copies`` (the fraction), ``copy_threshold``, ``median_nn_distance`` (generated) and,
        with ``test_images``, ``test_median_nn_distance``.
    """
    if threshold is None and test_images is None:
        raise UserInputError("pixel_copy_rate needs test_images (real held-out images) or a threshold")
    result = {}
    if test_images is not None:
        test_distances = nearest_training_distances(test_images, train_images)
        if threshold is None:
            require_in_interval(0, 1, quantile=quantile)
            threshold = torch.quantile(test_distances, quantile).item()
        result["test_median_nn_distance"] = test_distances.median().item()
    distances = nearest_training_distances(generated, train_images)
    result.update(pixel_copies=(distances < threshold).float().mean().item(), copy_threshold=threshold,
                  median_nn_distance=distances.median().item())
    return result
