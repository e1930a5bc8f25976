"""``ae-ot sample``: images from any generator of the zoo, as a PNG grid or an array.

    ae-ot sample --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt --num_samples 64 --output samples.png
    ae-ot sample --ckpt_path P --num_samples 10000 --output samples.npy      # [n, C, 28, 28] float32 in [0, 1]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ae_ot.checks import UserInputError
from ae_ot.commands.parsing import CommandParser, command_parser

__all__ = ["main", "write_samples", "IMAGE_SUFFIXES", "ARRAY_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARRAY_SUFFIXES = (".npy", ".pt")


def check_output_path(output: str | Path) -> Path:
    """Validate an output path before any work is done: known suffix, existing folder."""
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix not in IMAGE_SUFFIXES + ARRAY_SUFFIXES:
        raise UserInputError(f"unknown output suffix {output.suffix!r} in {output}: use one of "
                             f"{', '.join(IMAGE_SUFFIXES + ARRAY_SUFFIXES)}")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"the folder of the output {output} does not exist: create it first "
                                f"(mkdir -p {output.parent})")
    return output


def write_samples(images: torch.Tensor, output: str | Path, nrow: int | None = None) -> Path:
    """Write images [n, C, 28, 28] in [0, 1]: a grid for .png/.jpg, the array for .npy/.pt."""
    from ae_ot.viz import save_image_grid

    output = check_output_path(output)
    suffix = output.suffix.lower()
    if suffix == ".npy":
        np.save(output, images.numpy().astype(np.float32))
    elif suffix == ".pt":
        torch.save(images.float(), output)
    else:
        save_image_grid(images, output, nrow=nrow or max(1, int(round(images.shape[0] ** 0.5))))
    return output


def build_parser() -> CommandParser:
    parser = command_parser("ae-ot sample", description=__doc__)
    parser.add_argument("--ckpt_path", required=True, help="checkpoint written by `ae-ot fit`")
    parser.add_argument("--num_samples", type=int, default=64)
    parser.add_argument("--output", default="samples.png", help="a .png/.jpg grid, or a .npy/.pt array")
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same samples")
    parser.add_argument("--nrow", type=int, default=None, help="images per grid row (default: square)")
    return parser


def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    from ae_ot.checkpoint import load_generator
    from ae_ot.checks import require_positive_int

    require_positive_int(num_samples=args.num_samples)
    output = check_output_path(args.output)
    model = load_generator(args.ckpt_path)
    images = model.sample(args.num_samples, seed=args.seed)
    write_samples(images, output, nrow=args.nrow)
    print(f"wrote {args.num_samples} samples of {type(model).__name__} to {output}")
    return output
