"""``ae-ot evaluate``: score one generator checkpoint on the MNIST classifier's features.

    ae-ot evaluate --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt --num_samples 10000 \
        --output metrics.json

``--real test`` scores the real MNIST test split instead (the best a generator can hope for).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from ae_ot.checks import UserInputError
from ae_ot.parsing import CommandParser, function_parser, run_function

__all__ = ["main", "evaluate", "build_parser", "evaluate_checkpoint", "evaluate_real", "format_report", "finish_result",
           "check_outputs"]

DESCRIPTION = ("Evaluate a generator on the project's MNIST classifier features: FID (MNIST classifier features), "
               "precision/recall (k=3), density/coverage (k=5), modes covered, KL to uniform, mean confidence, "
               "minibatch W2. Three-channel generators are scored as Stacked MNIST (1,000 modes; use --num_samples "
               "26000 for PacGAN's protocol).")


def _classifier_info(classifier) -> dict:
    info = dict(getattr(classifier, "info", {}) or {})
    info["cache_path"] = str(getattr(classifier, "cache_path", ""))
    return info


def finish_result(result: dict, images, classifier, started: float) -> dict:
    """Add the metric names, the classifier's description and the elapsed seconds to ``result``."""
    from ae_ot.evaluation.metrics import METRIC_NAMES

    result["metric_names"] = METRIC_NAMES
    result["classifier"] = _classifier_info(classifier)
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def evaluate_checkpoint(ckpt_path: str | Path, num_samples: int = 10000, seed: int = 0, progress: bool = True,
                        return_samples: bool = False):
    """Load a checkpoint with :func:`~ae_ot.checkpoint.load_generator`, draw ``num_samples`` and score
    them. Returns the result dict (and the samples when ``return_samples``)."""
    from ae_ot.checkpoint import load_generator
    from ae_ot.checks import require_positive_int
    from ae_ot.evaluation import evaluate_samples, get_classifier

    require_positive_int(num_samples=num_samples)
    if num_samples < 6:
        raise UserInputError(f"num_samples must be at least 6 (k + 1 for the k=5 density/coverage), got {num_samples}")
    started = time.perf_counter()
    model = load_generator(ckpt_path)
    classifier = get_classifier(progress=progress)
    t0 = time.perf_counter()
    samples = model.sample(num_samples, seed=seed)
    sample_seconds = time.perf_counter() - t0
    metrics = evaluate_samples(samples, classifier=classifier, seed=seed)
    result = {"checkpoint": str(ckpt_path), "generator": f"{type(model).__module__}.{type(model).__qualname__}",
              "num_samples": num_samples, "seed": seed, "sample_seconds": round(sample_seconds, 3),
              "metrics": metrics}
    result = finish_result(result, samples, classifier, started)
    return (result, samples) if return_samples else result


def evaluate_real(split: str = "test", num_samples: int = 10000, seed: int = 0, stacked: bool = False,
                  progress: bool = True, return_samples: bool = False):
    """Score real images (MNIST ``split``, or Stacked MNIST triples of it) as if they were generated."""
    import torch

    from ae_ot.datasets import load_mnist, load_stacked_mnist
    from ae_ot.evaluation import evaluate_samples, get_classifier

    started = time.perf_counter()
    classifier = get_classifier(progress=progress)
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
    metrics = evaluate_samples(images, classifier=classifier, seed=seed)
    result = {"checkpoint": None, "generator": name, "num_samples": num_samples, "seed": seed,
              "metrics": metrics}
    result = finish_result(result, images, classifier, started)
    return (result, images) if return_samples else result


def format_report(result: dict) -> str:
    from ae_ot.evaluation.metrics import METRIC_NAMES

    m = result["metrics"]
    lines = [f"{result['generator']}  ({result['num_samples']} samples, seed {result['seed']})"]
    for key, name in METRIC_NAMES.items():
        value = m[key]
        if key == "modes_covered":
            text = f"{value} of {m['num_modes']}"
        else:
            text = f"{value:.4f}"
        lines.append(f"  {name:45s} {text}")
    return "\n".join(lines)


def check_outputs(output: str | None, grid: str | None) -> None:
    """Refuse, before any work, an ``output`` or ``grid`` path that cannot be written (a folder, a
    file where a folder should be, a read-only folder) and a ``grid`` whose suffix is not an image
    format (see :func:`ae_ot.viz.pil_format`)."""
    from ae_ot.io import check_writable_path
    from ae_ot.viz import pil_format

    if output:
        check_writable_path(output, "--output")
    if grid:
        pil_format(grid, "--grid")
        check_writable_path(grid, "--grid")


def evaluate(ckpt_path: str | None = None, real: Literal["test", "train"] | None = None, num_samples: int = 10000,
             seed: int = 0, output: str | None = None, grid: str | None = None, stacked: bool = False,
             no_progress: bool = False) -> dict:
    """Score a generator's checkpoint, or real MNIST images, on the classifier's features; print the
    report and write what ``output`` and ``grid`` ask for.

    Exactly one of ``ckpt_path`` and ``real`` is given (checked here rather than by the parser:
    argparse's required groups ignore ``--config`` files).

    Parameters
    ----------
    ckpt_path : str, optional
        Lightning checkpoint written by `ae-ot fit`
    real : {"test", "train"}, optional
        score real images of this MNIST split instead of a generator
    num_samples : int
        generated samples
    seed : int
        sampling seed
    output : str, optional
        write the metrics as JSON to this file
    grid : str, optional
        also save a grid of 64 samples to this PNG
    stacked : bool
        with --real: score real Stacked MNIST
    no_progress : bool
        no progress bar if the classifier trains

    Returns
    -------
    dict
        The result of :func:`evaluate_checkpoint` or :func:`evaluate_real`.
    """
    if bool(ckpt_path) == bool(real):
        raise UserInputError("give exactly one of --ckpt_path (a generator's checkpoint) and --real test|train "
                             f"(real MNIST images), got ckpt_path={ckpt_path!r}, real={real!r}")
    if stacked and not real:
        raise UserInputError("--stacked only applies with --real (a generator's channel count decides by itself)")
    check_outputs(output, grid)
    if ckpt_path:
        result, samples = evaluate_checkpoint(ckpt_path, num_samples, seed, progress=not no_progress,
                                              return_samples=True)
    else:
        result, samples = evaluate_real(real, num_samples, seed, stacked, progress=not no_progress,
                                        return_samples=True)
    print(format_report(result))
    if output:
        from ae_ot.io import write_json_atomic

        print(f"metrics written to {write_json_atomic(result, output)}")
    if grid:
        from ae_ot.viz import save_image_grid

        print(f"sample grid written to {save_image_grid(samples[:64], grid)}")
    return result


def build_parser() -> CommandParser:
    """``ae-ot evaluate``'s options: the parameters of :func:`evaluate`."""
    return function_parser("ae-ot evaluate", evaluate, description=DESCRIPTION)


def main(argv: list[str] | None = None) -> dict:
    return run_function(build_parser(), evaluate, argv)
