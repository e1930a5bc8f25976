"""``ae-ot train-classifier``: train (or check) the MNIST feature classifier behind the metrics.

    ae-ot train-classifier            # train once and cache (no-op when already cached)
    ae-ot train-classifier --force    # retrain over the cache

The weights go to ``$AE_OT_CACHE`` or ``~/.cache/ae-ot`` as ``classifier-<key>.pt``.

Examples
--------
The options are the parser's (``ae-ot train-classifier --help``); ``main`` parses a list of them
and runs the command:

>>> from ae_ot.commands.train_classifier import build_parser, main
>>> "--force" in build_parser().format_help()
True
>>> main(["--force"])  # doctest: +SKIP
"""

from __future__ import annotations

from ae_ot.parsing import CommandParser, function_parser, run_function

__all__ = ["main", "train_classifier", "build_parser"]


def train_classifier(force: bool = False, data_dir: str = "data", no_progress: bool = False):
    """Train and cache the MNIST classifier whose features the metrics use (or load the cached one),
    and print its test accuracy.

    Parameters
    ----------
    force : bool
        retrain even when cached weights exist
    data_dir : str
        where MNIST IDX files are looked for
    no_progress : bool
        no progress bar

    Returns
    -------
    MNISTClassifier
        The classifier, with ``cache_path`` and ``info``.
    """
    from ae_ot.datasets import load_mnist
    from ae_ot.evaluation.classifier import CODE_VERSION, classifier_accuracy, get_classifier

    splits = load_mnist(data_dir)
    model = get_classifier(train_if_missing=True, progress=not no_progress, splits=splits, force_retrain=force)
    info = getattr(model, "info", {}) or {}
    accuracy = classifier_accuracy(model, splits.test_images, splits.test_labels)
    seconds = info.get("train_seconds")
    print(f"MNIST feature classifier ({CODE_VERSION})")
    print(f"  weights:       {model.cache_path}")
    print(f"  test accuracy: {accuracy:.4f}" + (f"   (trained in {seconds:.0f} s)" if seconds else ""))
    if accuracy < 0.99:
        print("  warning: below the 99.0% the metrics assume")
    return model


def build_parser() -> CommandParser:
    """``ae-ot train-classifier``'s options: the parameters of :func:`train_classifier`."""
    return function_parser("ae-ot train-classifier", train_classifier,
                           description="Train and cache the MNIST classifier whose features the metrics use.")


def main(argv: list[str] | None = None):
    return run_function(build_parser(), train_classifier, argv)
