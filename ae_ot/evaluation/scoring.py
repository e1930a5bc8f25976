"""One scoring of generated images, shared by ``ae-ot evaluate``, ``ae-ot compare`` and
``ae-ot latent-compare``.

:func:`score_samples` scores images with :func:`~ae_ot.evaluation.metrics.evaluate_samples` (FID,
precision/recall, density/coverage, classes covered and KL to uniform, mean confidence, minibatch
W2, all on the project's classifier features) and describes the result: the metrics' display names,
the classifier, the seconds. :func:`score_generator` draws the images from a generator first,
:func:`evaluate_real` scores real MNIST (or Stacked MNIST) images the same way. Every result is a
JSON-ready dict with the keys the callers put first (``checkpoint``, ``generator``, ...), then
``metrics``, ``metric_names``, ``classifier`` and ``seconds``.
"""

from __future__ import annotations

import time

import torch

from ae_ot.checks import UserInputError, require_positive_int
from ae_ot.evaluation.metrics import METRIC_NAMES, evaluate_samples

__all__ = ["KNN_K", "check_sample_count", "score_samples", "score_generator", "evaluate_real"]

#: the largest k of the k-NN metrics (density/coverage, k = 5): they need k + 1 samples
KNN_K = 5


def check_sample_count(n: int, option: str = "num_samples") -> int:
    """``n`` if the k-NN metrics can score that many samples (a positive integer of at least
    ``KNN_K + 1`` = 6), else :class:`~ae_ot.checks.UserInputError` naming ``--option`` and the fix.

    Examples
    --------
    >>> check_sample_count(10000)
    10000
    """
    require_positive_int(**{option: n})
    if n < KNN_K + 1:
        raise UserInputError(f"--{option} must be at least {KNN_K + 1} (k + 1 for the k={KNN_K} density/coverage), "
                             f"got {n}; raise --{option}")
    return n


def _classifier_info(classifier) -> dict:
    info = dict(getattr(classifier, "info", {}) or {})
    info["cache_path"] = str(getattr(classifier, "cache_path", ""))
    return info


def score_samples(images: torch.Tensor, head: dict | None = None, *, classifier=None, reference=None, seed: int = 0,
                  started: float | None = None, progress: bool = True) -> dict:
    """Score ``images`` [n, C, 28, 28] in [0, 1] on the classifier's features.

    Parameters
    ----------
    images : torch.Tensor
        Generated (or real) images; one channel is MNIST, three are Stacked MNIST.
    head : dict, optional
        Keys put first in the result, in their order (``generator``, ``num_samples``, ...).
    classifier, reference : optional
        Passed to :func:`~ae_ot.evaluation.metrics.evaluate_samples`; with neither, the project's
        classifier (:func:`ae_ot.evaluation.get_classifier`, trained on first use) and its reference.
    seed : int
        Seed of the reference subset and the minibatches.
    started : float, optional
        :func:`time.perf_counter` when the caller's work began (default: now); ``seconds`` counts from it.
    progress : bool
        Progress bar if the classifier trains.

    Returns
    -------
    dict
        ``head``, then ``metrics`` (:func:`~ae_ot.evaluation.metrics.evaluate_samples`),
        ``metric_names``, ``classifier`` (its description and cache file) and ``seconds``.

    Examples
    --------
    >>> row = score_samples(images, {"model": "wgan"}, progress=False)  # doctest: +SKIP
    >>> sorted(row)[:3]  # doctest: +SKIP
    """
    started = time.perf_counter() if started is None else started
    if classifier is None and reference is None:
        from ae_ot.evaluation import get_classifier  # looked up on call: tests put a small one there

        classifier = get_classifier(progress=progress)
    metrics = evaluate_samples(images, classifier=classifier, reference=reference, seed=seed)
    return {**(head or {}), "metrics": metrics, "metric_names": METRIC_NAMES,
            "classifier": _classifier_info(classifier if classifier is not None else reference.classifier),
            "seconds": round(time.perf_counter() - started, 2)}


def score_generator(model, num_samples: int, seed: int = 0, *, classifier=None, progress: bool = True,
                    started: float | None = None, **fields) -> tuple[dict, torch.Tensor]:
    """Draw ``model.sample(num_samples, seed=seed)`` and score the images (:func:`score_samples`).

    ``model`` is any object with that ``sample`` method (a generator of :mod:`ae_ot.generators`).
    The result holds ``fields`` (e.g. ``checkpoint``), ``generator`` (the model's class path),
    ``num_samples``, ``seed`` and ``sample_seconds`` (the sampling alone) before the scores.
    Returns the result and the samples.
    """
    check_sample_count(num_samples)
    started = time.perf_counter() if started is None else started
    t0 = time.perf_counter()
    samples = model.sample(num_samples, seed=seed)
    head = {**fields, "generator": f"{type(model).__module__}.{type(model).__qualname__}", "num_samples": num_samples,
            "seed": seed, "sample_seconds": round(time.perf_counter() - t0, 3)}
    return score_samples(samples, head, classifier=classifier, seed=seed, started=started, progress=progress), samples


def evaluate_real(split: str = "test", num_samples: int = 10000, seed: int = 0, stacked: bool = False,
                  progress: bool = True, return_samples: bool = False):
    """Score real images as if they were generated: ``num_samples`` seeded MNIST images of ``split``
    ("test" or "train"), or Stacked MNIST triples of it with ``stacked``.

    Returns the :func:`score_samples` result (``checkpoint`` None, ``generator`` naming the images),
    and the images too when ``return_samples``.
    """
    from ae_ot.datasets import load_mnist, load_stacked_mnist

    started = time.perf_counter()
    if stacked:
        images, _ = load_stacked_mnist(num_samples, split=split, seed=seed + 12345)
        name = f"real Stacked MNIST ({split} split)"
    else:
        splits = load_mnist()
        pool = splits.test_images if split == "test" else splits.train_images
        if num_samples > pool.shape[0]:
            raise UserInputError(f"--num_samples {num_samples} exceeds the {pool.shape[0]} images of the {split} split")
        idx = torch.randperm(pool.shape[0], generator=torch.Generator().manual_seed(seed + 12345))[:num_samples]
        images = pool[idx]
        name = f"real MNIST ({split} split)"
    head = {"checkpoint": None, "generator": name, "num_samples": num_samples, "seed": seed}
    result = score_samples(images, head, seed=seed, started=started, progress=progress)
    return (result, images) if return_samples else result
