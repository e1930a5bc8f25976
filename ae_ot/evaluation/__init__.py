"""Evaluation without downloads: the project's own MNIST feature classifier and the metrics that
read its features (FID on classifier features, precision/recall, density/coverage, modes, minibatch
W2). (Loading a generator from a checkpoint is :func:`ae_ot.checkpoint.load_generator`.)
"""

from ae_ot.checks import require_positive_int
from ae_ot.evaluation.classifier import CODE_VERSION, MNISTClassifier, get_classifier, train_classifier
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
    "METRIC_NAMES", "check_images", "density_coverage", "evaluate_samples", "extract_features",
    "fid_from_features", "frechet_distance", "kl_to_uniform", "minibatch_w2", "mode_stats",
    "precision_recall", "RealReference", "get_reference", "evaluate_generator",
]


def evaluate_generator(model, num_samples: int = 10000, seed: int = 0, **kwargs) -> dict:
    """``model.sample(num_samples, seed)`` scored by :func:`evaluate_samples`."""
    require_positive_int(num_samples=num_samples)
    return evaluate_samples(model.sample(num_samples, seed=seed), seed=seed, **kwargs)
