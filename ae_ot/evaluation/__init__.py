"""Evaluation without downloads: the project's own MNIST feature classifier and the metrics that
read its features (FID on classifier features, precision/recall, density/coverage, modes, minibatch
W2), plus :func:`load_generator` to restore any generator of the zoo from a checkpoint.

Heavy imports (the generators, Lightning) happen only when a function needs them.
"""

from ae_ot.evaluation.classifier import CODE_VERSION, MNISTClassifier, get_classifier, train_classifier
from ae_ot.evaluation.loading import known_generators, load_generator
from ae_ot.evaluation.metrics import (
    METRIC_NAMES,
    check_images,
    density_coverage,
    evaluate_samples,
    extract_features,
    fid_from_features,
    frechet_distance,
    kl_to_uniform,
    minibatch_w2,
    mode_stats,
    precision_recall,
)
from ae_ot.evaluation.reference import RealReference, get_reference

__all__ = [
    "CODE_VERSION", "MNISTClassifier", "get_classifier", "train_classifier",
    "load_generator", "known_generators",
    "METRIC_NAMES", "check_images", "density_coverage", "evaluate_samples", "extract_features",
    "fid_from_features", "frechet_distance", "kl_to_uniform", "minibatch_w2", "mode_stats",
    "precision_recall", "RealReference", "get_reference", "evaluate_generator",
]


def evaluate_generator(model, num_samples: int = 10000, seed: int = 0, **kwargs) -> dict:
    """``model.sample(num_samples, seed)`` scored by :func:`evaluate_samples`."""
    from ae_ot.generators.base import check_num_samples

    check_num_samples(num_samples)
    return evaluate_samples(model.sample(num_samples, seed=seed), seed=seed, **kwargs)
