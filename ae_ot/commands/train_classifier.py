"""``ae-ot train-classifier``: train (or check) the MNIST feature classifier behind the metrics.

    ae-ot train-classifier            # train once and cache (no-op when already cached)
    ae-ot train-classifier --force    # retrain over the cache

The weights go to ``$AE_OT_CACHE`` or ``~/.cache/ae-ot`` as ``classifier-<key>.pt``.
"""

from __future__ import annotations

from ae_ot.commands.parsing import CommandParser, command_parser

__all__ = ["main", "build_parser"]


def build_parser() -> CommandParser:
    parser = command_parser("ae-ot train-classifier",
                                     description="Train and cache the MNIST classifier whose features the metrics use.")
    parser.add_argument("--force", action="store_true", help="retrain even when cached weights exist")
    parser.add_argument("--data_dir", default="data", help="where MNIST IDX files are looked for (default data)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None):
    from ae_ot.evaluation.classifier import CODE_VERSION, classifier_accuracy, get_classifier

    args = build_parser().parse_args(argv)
    from ae_ot.data import load_mnist

    splits = load_mnist(args.data_dir)
    model = get_classifier(train_if_missing=True, progress=not args.no_progress, splits=splits,
                           force_retrain=args.force)
    info = getattr(model, "info", {}) or {}
    accuracy = classifier_accuracy(model, splits.test_images, splits.test_labels)
    seconds = info.get("train_seconds")
    print(f"MNIST feature classifier ({CODE_VERSION})")
    print(f"  weights:       {model.cache_path}")
    print(f"  test accuracy: {accuracy:.4f}" + (f"   (trained in {seconds:.0f} s)" if seconds else ""))
    if accuracy < 0.99:
        print("  warning: below the 99.0% the metrics assume")
    return model
