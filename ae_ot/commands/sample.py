"""``ae-ot sample``: images from any generator of the zoo, as a PNG grid or an array.

    ae-ot sample --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt --num_samples 64 --output samples.png
    ae-ot sample --ckpt_path P --num_samples 10000 --output samples.npy      # [n, C, 28, 28] float32 in [0, 1]

Examples
--------
The options are the parser's (``ae-ot sample --help``); ``main`` parses a list of them
and runs the command:

>>> from ae_ot.commands.sample import build_parser, main
>>> "--num_samples" in build_parser().format_help()
True
>>> main(["--ckpt_path", "last.ckpt", "--num_samples", "64", "--output", "samples.png"])  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ae_ot.checks import UserInputError
from ae_ot.parsing import CommandParser, function_parser, run_function

__all__ = ["main", "sample", "build_parser", "write_samples", "IMAGE_SUFFIXES", "ARRAY_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARRAY_SUFFIXES = (".npy", ".pt")


def check_output_path(output: str | Path) -> Path:
    """Validate an output path before any work is done: known suffix, an existing folder that can
    be written."""
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix not in IMAGE_SUFFIXES + ARRAY_SUFFIXES:
        raise UserInputError(f"unknown output suffix {output.suffix!r} in {output}: use one of "
                             f"{', '.join(IMAGE_SUFFIXES + ARRAY_SUFFIXES)}")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"the folder of the output {output} does not exist: create it first "
                                f"(mkdir -p {output.parent})")
    from ae_ot.io import check_writable_path

    return check_writable_path(output, "--output")


def write_samples(images: torch.Tensor, output: str | Path, nrow: int | None = None) -> Path:
    """Write images [n, C, 28, 28] in [0, 1]: a grid for .png/.jpg, the array for .npy/.pt.

    The write is atomic: a failure (a full disk, a kill) leaves the previous ``output`` intact and
    no temporary file behind.
    """
    from ae_ot.io import atomic_write
    from ae_ot.viz import save_image_grid

    output = check_output_path(output)
    suffix = output.suffix.lower()
    # Atomic (ae_ot.io.atomic_write): a full disk or a kill mid-write leaves the previous file whole.
    if suffix == ".npy":
        array = images.numpy().astype(np.float32)
        atomic_write(output, lambda tmp: np.save(tmp, array))
    elif suffix == ".pt":
        atomic_write(output, lambda tmp: torch.save(images.float(), tmp))
    else:
        save_image_grid(images, output, nrow=nrow or max(1, int(round(images.shape[0] ** 0.5))))
    return output


def sample(ckpt_path: str, num_samples: int = 64, output: str = "samples.png", seed: int = 0,
           nrow: int | None = None) -> Path:
    """Draw ``num_samples`` images from a checkpoint's generator and write them to ``output``.

    Parameters
    ----------
    ckpt_path : str
        checkpoint written by `ae-ot fit`
    num_samples : int
        images to draw (at least 1)
    output : str
        a .png/.jpg grid, or a .npy/.pt array
    seed : int
        the same seed gives the same samples
    nrow : int, optional
        images per grid row (default: square)

    Returns
    -------
    Path
        The file written.
    """
    from ae_ot.checkpoint import load_generator
    from ae_ot.checks import require_positive_int

    require_positive_int(num_samples=num_samples)
    output = check_output_path(output)
    model = load_generator(ckpt_path)
    images = model.sample(num_samples, seed=seed)
    write_samples(images, output, nrow=nrow)
    print(f"wrote {num_samples} samples of {type(model).__name__} to {output}")
    return output


def build_parser() -> CommandParser:
    """``ae-ot sample``'s options: the parameters of :func:`sample`."""
    return function_parser("ae-ot sample", sample, description=__doc__)


def main(argv: list[str] | None = None) -> Path:
    return run_function(build_parser(), sample, argv)
