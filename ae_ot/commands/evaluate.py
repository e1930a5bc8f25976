"""``ae-ot evaluate``: score one generator checkpoint on the MNIST classifier's features.

    ae-ot evaluate --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt --num_samples 10000 \
        --output metrics.json

``--real test`` scores the real MNIST test split instead (the best a generator can hope for).

Examples
--------
The options are the parser's (``ae-ot evaluate --help``); ``main`` parses a list of them
and runs the command:

>>> from ae_ot.commands.evaluate import build_parser, main
>>> "--num_samples" in build_parser().format_help()
True
>>> main(["--ckpt_path", "last.ckpt", "--num_samples", "10000", "--output", "metrics.json"])  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Literal

from ae_ot.checks import UserInputError
from ae_ot.evaluation.scoring import evaluate_real
from ae_ot.experiments.checkpoints import evaluate_checkpoint
from ae_ot.parsing import CommandParser, function_parser, run_function

__all__ = ["main", "evaluate", "build_parser", "format_report", "check_outputs"]

DESCRIPTION = ("Evaluate a generator on the project's MNIST classifier features: FID (MNIST classifier features), "
               "precision/recall (k=3), density/coverage (k=5), modes covered, KL to uniform, mean confidence, "
               "minibatch W2. Three-channel generators are scored as Stacked MNIST (1,000 modes; use --num_samples "
               "26000 for PacGAN's protocol).")


def format_report(result: dict) -> str:
    """The printed report of a scored generator (or real images): one line per metric."""
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
        The result of :func:`ae_ot.experiments.checkpoints.evaluate_checkpoint` or
        :func:`ae_ot.evaluation.scoring.evaluate_real`.
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
