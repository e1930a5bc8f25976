"""Pictures: image grids (without torchvision), and helpers to save figures.

Heavier figures (UMAP latent gaps, power diagrams, convergence curves) live beside their
commands; everything here needs only numpy, PIL and matplotlib.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from ae_ot.checks import UserInputError
from ae_ot.io import atomic_write

__all__ = ["make_grid", "save_image_grid", "pil_format", "grid_to_pil", "save_figure", "quantize_png", "MAX_PICTURE_BYTES"]


def make_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """Tile images [B, C, H, W] (values in [0, 1]) into one image [C', H', W'] with ``nrow`` per row.

    One- and three-channel images are kept as they are; a padding of ``pad_value`` separates tiles.
    Equivalent to ``torchvision.utils.make_grid`` for our use, which is an optional dependency.

    Examples
    --------
    >>> import torch
    >>> make_grid(torch.rand(4, 1, 28, 28), nrow=2).shape
    torch.Size([1, 62, 62])
    """
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4:
        raise UserInputError(f"images must be [B, C, H, W], got shape {tuple(images.shape)}")
    images = images.detach().float().cpu().clamp(0, 1)
    b, c, h, w = images.shape
    ncol = min(nrow, b)
    nrows = math.ceil(b / ncol)
    grid = torch.full((c, nrows * (h + padding) + padding, ncol * (w + padding) + padding), pad_value)
    for k in range(b):
        r, q = divmod(k, ncol)
        top, left = padding + r * (h + padding), padding + q * (w + padding)
        grid[:, top: top + h, left: left + w] = images[k]
    return grid


def grid_to_pil(grid: torch.Tensor, scale: int = 2):
    """A grid [C, H, W] in [0, 1] -> PIL image (grayscale or RGB), enlarged ``scale`` times.

    Examples
    --------
    >>> import torch
    >>> grid_to_pil(make_grid(torch.rand(4, 1, 28, 28), nrow=2), scale=1).size
    (62, 62)
    """
    from PIL import Image

    array = (grid.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(array[0], mode="L") if array.shape[0] == 1 else \
        Image.fromarray(np.transpose(array[:3], (1, 2, 0)), mode="RGB")
    if scale != 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    return image


def save_image_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int = 8, scale: int = 2) -> Path:
    """Save images [B, C, H, W] in [0, 1] as one image grid, atomically (a failed write leaves the
    previous file intact); the format follows the suffix (.png, .jpg, ...). Returns the path written.

    Examples
    --------
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> save_image_grid(torch.rand(4, 1, 28, 28), Path(tempfile.mkdtemp()) / "grid.png", nrow=2).suffix
    '.png'
    """
    path = Path(path)
    image = grid_to_pil(make_grid(images, nrow=nrow), scale=scale)
    image_format = pil_format(path)
    return atomic_write(path, lambda tmp: image.save(tmp, format=image_format))


def pil_format(path: str | os.PathLike, what: str = "an image to") -> str:
    """The PIL format that writes ``path``'s suffix ("PNG" for ``.png``), or :class:`UserInputError`
    (naming ``what``, e.g. ``"--grid"``) for a suffix PIL cannot write (``.npy``, none).

    Examples
    --------
    >>> pil_format("samples.png"), pil_format("samples.jpg")
    ('PNG', 'JPEG')
    """
    from PIL import Image

    Image.init()
    suffix = Path(path).suffix.lower()
    image_format = Image.EXTENSION.get(suffix)
    if image_format is None or image_format not in Image.SAVE:
        writable = sorted(ext for ext, fmt in Image.EXTENSION.items() if fmt in Image.SAVE and ext in
                          (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"))
        raise UserInputError(f"cannot write {what} {path}: the suffix {suffix or '(none)'!r} is not an image "
                             f"format; use one of {', '.join(writable)} (e.g. {Path(path).with_suffix('.png')})")
    return image_format


#: the size every picture of the project stays under
MAX_PICTURE_BYTES = 200_000


def quantize_png(source, path: str | os.PathLike, colours: int = 256, max_bytes: int = MAX_PICTURE_BYTES) -> Path:
    """Write the image ``source`` (a path or a file object of a PNG) to ``path`` as an optimised
    palette PNG of at most ``colours`` colours, atomically; while the file is larger than
    ``max_bytes``, use a quarter of the colours (down to 16).

    Plots hold few distinct colours, so a palette keeps them exact to the eye at a third to a
    tenth of the bytes of a true-colour PNG.

    Examples
    --------
    >>> import io, tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> buffer = io.BytesIO()
    >>> Image.new("RGB", (8, 8), "white").save(buffer, format="PNG")
    >>> _ = buffer.seek(0)
    >>> quantize_png(buffer, Path(tempfile.mkdtemp()) / "small.png").suffix
    '.png'
    """
    from PIL import Image

    with Image.open(source) as image:
        rgb = image.convert("RGB")
    while True:
        palette = rgb.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        atomic_write(path, lambda tmp: palette.save(tmp, format="PNG", optimize=True))
        if colours <= 16 or Path(path).stat().st_size <= max_bytes:
            return Path(path)
        colours //= 4


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Save a matplotlib figure: a palette PNG (:func:`quantize_png`) for ``.png`` paths, any
    other format as matplotlib writes it; atomic either way. Returns the path.

    Examples
    --------
    >>> import tempfile
    >>> import matplotlib.pyplot as plt
    >>> from pathlib import Path
    >>> fig, ax = plt.subplots(figsize=(2, 2))
    >>> save_figure(fig, Path(tempfile.mkdtemp()) / "plot.png").suffix
    '.png'
    """
    import io

    path = Path(path)
    if path.suffix.lower() != ".png":
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".")))
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    buffer.seek(0)
    return quantize_png(buffer, path)
