"""Sample-quality metrics on the project's MNIST classifier features (no downloads).

Every feature metric reads the 128-d penultimate activations of
:class:`~ae_ot.evaluation.classifier.MNISTClassifier`; a three-channel (Stacked MNIST) image is
described by the concatenation of its three channels' features (384-d) and classified channel by
channel (label ``100*c0 + 10*c1 + c2``). Names say which features they use: "FID (MNIST classifier
features)" is a Frechet distance, but not the Inception FID of the literature.

* Frechet distance between Gaussian fits of the features (own float64 implementation).
* Precision / recall (Kynkaanniemi et al. 2019, k = 3): a sample is "in" the real manifold when it
  lies within the k-NN radius of some real point, and vice versa for recall.
* Density / coverage (Naeem et al. 2020, k = 5).
* Modes: classes (digits, or 1,000 Stacked MNIST triples) covered, KL(histogram || uniform) in nats,
  mean classifier confidence.
* Exact minibatch W2 in feature space: optimal assignment
  (:func:`ae_ot.ot.minibatch.exact_ot_equal_size`) between equal-size minibatches of real and
  generated features, ``sqrt(mean squared distance)``, averaged over minibatch pairs.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ae_ot.checks import UserInputError
from ae_ot.datasets import stacked_label
from ae_ot.evaluation.features import check_features, check_images, extract_features, gaussian_stats
from ae_ot.evaluation.reference import get_reference
from ae_ot.ot.minibatch import exact_ot_equal_size

__all__ = [
    "METRIC_NAMES",
    "check_images",
    "check_features",
    "extract_features",
    "gaussian_stats",
    "frechet_distance",
    "fid_from_features",
    "knn_radii",
    "precision_recall",
    "density_coverage",
    "mode_stats",
    "kl_to_uniform",
    "minibatch_w2",
    "evaluate_samples",
]

#: JSON key -> honest display name (tables, plots)
METRIC_NAMES = {
    "fid_classifier": "FID (MNIST classifier features)",
    "precision_k3": "Precision (k=3, classifier features)",
    "recall_k3": "Recall (k=3, classifier features)",
    "density_k5": "Density (k=5, classifier features)",
    "coverage_k5": "Coverage (k=5, classifier features)",
    "w2_minibatch_classifier": "Minibatch W2 (classifier features)",
    "modes_covered": "Modes covered",
    "kl_to_uniform": "KL(class histogram ‖ uniform) [nats]",
    "mean_confidence": "Mean classifier confidence",
}

#: for bar charts / "best" marks: True when larger is better
HIGHER_IS_BETTER = {
    "fid_classifier": False, "precision_k3": True, "recall_k3": True, "density_k5": True,
    "coverage_k5": True, "w2_minibatch_classifier": False, "modes_covered": True,
    "kl_to_uniform": False, "mean_confidence": True,
}


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------
def _check_k(n: int, k: int, what: str, name: str) -> None:
    if not isinstance(k, int) or k <= 0:
        raise UserInputError(f"k must be a positive integer, got {k!r}")
    if n < k + 1:
        raise UserInputError(
            f"{what} needs at least k + 1 = {k + 1} {name} (k = {k} nearest neighbours besides the point "
            f"itself), got {n}; raise num_samples")


# --------------------------------------------------------------------------------------------
# Frechet distance
# --------------------------------------------------------------------------------------------
def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """``||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)``, the squared W2 distance of two
    Gaussians. Computed with symmetric eigen-decompositions in float64 (exact for PSD inputs, no
    complex parts as with ``scipy.linalg.sqrtm(S1 @ S2)``).

    Examples
    --------
    >>> import numpy as np
    >>> round(frechet_distance(np.zeros(2), np.eye(2), np.ones(2), np.eye(2)), 6)
    2.0
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise UserInputError(f"shapes disagree: mu1 {mu1.shape}, mu2 {mu2.shape}, sigma1 {s1.shape}, sigma2 {s2.shape}")
    root1 = _sqrt_psd(s1)
    cross = root1 @ s2 @ root1
    trace_cross = np.sqrt(np.clip(np.linalg.eigvalsh((cross + cross.T) / 2), 0, None)).sum()
    value = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_cross)
    return max(value, 0.0)


def fid_from_features(features1, features2) -> float:
    """Frechet distance between Gaussian fits of two feature sets [n1, d], [n2, d].

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> a, b = torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g)
    >>> fid_from_features(a, b) < fid_from_features(a, b + 1.0)
    True
    """
    return frechet_distance(*gaussian_stats(features1), *gaussian_stats(features2))


# --------------------------------------------------------------------------------------------
# k-NN manifold metrics
# --------------------------------------------------------------------------------------------
def _pairwise_chunks(a: torch.Tensor, b: torch.Tensor, chunk: int = 2048):
    for start in range(0, a.shape[0], chunk):
        yield start, torch.cdist(a[start:start + chunk], b)


def knn_radii(features, k: int) -> torch.Tensor:
    """Distance of every point to its k-th nearest neighbour among the others, [n].

    Examples
    --------
    >>> import torch
    >>> knn_radii(torch.tensor([[0.0], [1.0], [3.0]]), k=1).tolist()
    [1.0, 1.0, 2.0]
    """
    x = check_features(features)
    _check_k(x.shape[0], k, "a k-NN radius", "points")
    radii = torch.empty(x.shape[0])
    for start, dist in _pairwise_chunks(x, x):
        # the k+1 smallest include the point itself (distance 0)
        radii[start:start + dist.shape[0]] = dist.topk(k + 1, dim=1, largest=False).values[:, k]
    return radii


def _fraction_inside(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    inside = 0
    for _, dist in _pairwise_chunks(queries, centres):
        inside += int((dist <= radii[None]).any(1).sum())
    return inside / queries.shape[0]


def precision_recall(real_features, fake_features, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN balls, k = 3.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> real, fake = torch.randn(200, 4, generator=g), torch.randn(200, 4, generator=g)
    >>> precision, recall = precision_recall(real, fake)
    >>> precision > 0.8 and recall > 0.8
    True
    """
    real, fake = check_features(real_features, "real features"), check_features(fake_features, "generated features")
    _check_k(real.shape[0], k, "precision/recall", "real samples")
    _check_k(fake.shape[0], k, "precision/recall", "generated samples")
    precision = _fraction_inside(fake, real, knn_radii(real, k))
    recall = _fraction_inside(real, fake, knn_radii(fake, k))
    return precision, recall


def density_coverage(real_features, fake_features, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020), k = 5, balls around the real samples only.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> real = torch.randn(200, 4, generator=g)
    >>> density_coverage(real, real + 100.0)   # generated samples far from every real one
    (0.0, 0.0)
    """
    real, fake = check_features(real_features, "real features"), check_features(fake_features, "generated features")
    _check_k(real.shape[0], k, "density/coverage", "real samples")
    _check_k(fake.shape[0], k, "density/coverage", "generated samples")
    radii = knn_radii(real, k)
    count = 0
    for _, dist in _pairwise_chunks(fake, real):
        count += int((dist <= radii[None]).sum())
    density = count / (k * fake.shape[0])
    covered = 0
    for start, dist in _pairwise_chunks(real, fake):
        nearest = dist.min(1).values
        covered += int((nearest <= radii[start:start + dist.shape[0]]).sum())
    return density, covered / real.shape[0]


# --------------------------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------------------------
def kl_to_uniform(counts) -> float:
    """KL(p || uniform) in nats for a histogram of counts over K classes (0 log 0 = 0).

    Examples
    --------
    >>> kl_to_uniform([5, 5, 5, 5]), round(kl_to_uniform([10, 0, 0, 0]), 4)
    (0.0, 1.3863)
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0 or counts.sum() <= 0 or (counts < 0).any():
        raise UserInputError("counts must be a non-empty, non-negative histogram with a positive total")
    p = counts / counts.sum()
    nz = p > 0
    return float((p[nz] * np.log(p[nz] * counts.size)).sum())


def mode_stats(labels, num_modes: int, min_count: int = 1) -> dict:
    """Histogram of predicted modes: how many have at least ``min_count`` samples, and the KL to
    uniform (PacGAN's protocol counts a mode covered with ``min_count = 1``).

    Examples
    --------
    >>> import torch
    >>> stats = mode_stats(torch.tensor([0, 0, 1, 1, 2]), num_modes=4)
    >>> sorted(stats)
    ['histogram', 'kl_to_uniform', 'mode_min_count', 'modes_covered', 'num_modes']
    """
    labels = torch.as_tensor(labels).long().flatten()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_modes):
        raise UserInputError(f"labels must lie in [0, {num_modes}), got [{int(labels.min())}, {int(labels.max())}]")
    counts = torch.bincount(labels, minlength=num_modes).numpy()
    return {"modes_covered": int((counts >= min_count).sum()), "num_modes": num_modes,
            "mode_min_count": int(min_count), "kl_to_uniform": kl_to_uniform(counts),
            "histogram": counts.tolist()}


# --------------------------------------------------------------------------------------------
# Minibatch W2
# --------------------------------------------------------------------------------------------
def minibatch_w2(real_features, fake_features, batch_size: int = 500, num_batches: int = 10, seed: int = 0) -> float:
    """Exact W2 between random equal-size minibatches of real and generated features (optimal
    assignment with squared Euclidean cost), ``sqrt(mean cost)`` averaged over ``num_batches``
    disjoint minibatch pairs (fewer when the sets are small).

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> real = torch.randn(100, 2, generator=g)
    >>> minibatch_w2(real, real + 3.0, batch_size=50, num_batches=2) > minibatch_w2(real, real, batch_size=50, num_batches=2)
    True
    """
    real, fake = check_features(real_features, "real features"), check_features(fake_features, "generated features")
    if real.shape[1] != fake.shape[1]:
        raise UserInputError(f"feature dimensions differ: {real.shape[1]} vs {fake.shape[1]}")
    if batch_size <= 0 or num_batches <= 0:
        raise UserInputError("batch_size and num_batches must be positive")
    b = min(batch_size, real.shape[0], fake.shape[0])
    pairs = max(1, min(num_batches, real.shape[0] // b, fake.shape[0] // b))
    g = torch.Generator().manual_seed(seed)
    pr, pf = torch.randperm(real.shape[0], generator=g), torch.randperm(fake.shape[0], generator=g)
    values = []
    for i in range(pairs):
        x = real[pr[i * b:(i + 1) * b]].double()
        y = fake[pf[i * b:(i + 1) * b]].double()
        values.append(math.sqrt(float(exact_ot_equal_size(x, y)[0])))
    return float(np.mean(values))


# --------------------------------------------------------------------------------------------
# Everything at once
# --------------------------------------------------------------------------------------------
def evaluate_samples(fake_images: torch.Tensor, *, classifier=None, reference=None, k_pr: int = 3, k_dc: int = 5,
                     num_reference: int | None = None, w2_batch_size: int = 500, w2_num_batches: int = 10,
                     class_min_fraction: float = 0.1, seed: int = 0) -> dict:
    """All metrics of generated images [n, C, 28, 28] in [0, 1] against real data.

    ``reference`` is a :class:`~ae_ot.evaluation.reference.RealReference` (default: MNIST training
    split for one channel, seeded Stacked MNIST triples of it for three). The Frechet distance uses
    all reference features; the k-NN metrics and minibatch W2 a seeded random subset of
    ``num_reference`` real samples (default: as many as generated, at most 10,000).

    Modes: one-channel images count a digit class covered when it receives at least
    ``class_min_fraction`` of its uniform share n/10; three-channel images count each of the 1,000
    triples with at least one sample (PacGAN).

    Examples
    --------
    >>> metrics = evaluate_samples(model.sample(10000, seed=0))   # the cached classifier and MNIST  # doctest: +SKIP
    >>> metrics["fid"], metrics["modes_covered"]  # doctest: +SKIP
    """
    fake_images = check_images(fake_images, "generated images")
    n, c = fake_images.shape[:2]
    _check_k(n, max(k_pr, k_dc), "the k-NN metrics (precision/recall k=3, density/coverage k=5)",
             "generated samples (num_samples)")
    if reference is None:
        reference = get_reference(channels=c, classifier=classifier)
    if reference.channels != c:
        raise UserInputError(f"generated images have {c} channel(s) but the reference has {reference.channels}")
    classifier = reference.classifier
    fake_features, probs = extract_features(fake_images, classifier, check=False)
    m = min(num_reference or min(n, 10000), reference.features.shape[0])
    _check_k(m, max(k_pr, k_dc), "the k-NN metrics", "reference samples")
    idx = torch.randperm(reference.features.shape[0], generator=torch.Generator().manual_seed(seed + 1))[:m]
    real_subset = reference.features[idx]

    precision, recall = precision_recall(real_subset, fake_features, k_pr)
    density, coverage = density_coverage(real_subset, fake_features, k_dc)
    digits = probs.argmax(2)  # [n, C]
    if c == 1:
        labels, num_modes = digits[:, 0], 10
        min_count = max(1, math.ceil(class_min_fraction * n / num_modes))
    else:
        labels = stacked_label(digits)
        num_modes, min_count = 10 ** c, 1
    modes = mode_stats(labels, num_modes, min_count)
    metrics = {
        "fid_classifier": frechet_distance(*gaussian_stats(fake_features), reference.mu, reference.sigma),
        "precision_k3": precision,
        "recall_k3": recall,
        "density_k5": density,
        "coverage_k5": coverage,
        "w2_minibatch_classifier": minibatch_w2(real_subset, fake_features, w2_batch_size, w2_num_batches, seed),
        "modes_covered": modes["modes_covered"],
        "num_modes": num_modes,
        "mode_min_count": min_count,
        "kl_to_uniform": modes["kl_to_uniform"],
        "mean_confidence": float(probs.max(2).values.mean()),
        "num_samples": n,
        "num_reference_knn": m,
        "num_reference_fid": int(reference.features.shape[0]),
        "reference": reference.description,
        "k_precision_recall": k_pr,
        "k_density_coverage": k_dc,
        "class_histogram": modes["histogram"] if num_modes <= 10 else None,
    }
    return metrics
