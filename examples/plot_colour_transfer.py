"""Colour transfer at one million pixels with the averaged minibatch transport plan.

The pixels of an image are a point cloud in RGB space. Colour transfer moves the cloud of a source
image x_1..x_N onto the cloud of a target image y_1..y_N: optimal transport gives a plan Pi [N, N]
and each pixel takes the *barycentric projection* of its row,

    T(x_i) = N * sum_j Pi_ij y_j      (the average target colour that x_i is sent to).

The exact plan for N = 10^6 pixels would hold 10^12 entries (8 TB in float64) and cost an
assignment problem of that size. The minibatch plan of Fatras et al. (AISTATS 2020) replaces it
by an average of exact plans between size-m minibatches (``ae_ot.ot.minibatch``): for a pair of
index sets (I, J) with an optimal permutation sigma of the m x m assignment problem,

    Pi = 1/k * sum_{l=1..k} 1/m * sum_{a=1..m} delta(I_l[a], J_l[sigma_l(a)]),

and its barycentric projection is the mean of the target colours that pixel i was matched to.
It is accumulated pair by pair, so memory stays O(N + m^2): the N x N plan is never formed.
Pairs are drawn by shuffling both clouds and cutting them into blocks of m (each block is a
uniformly random m-subset, as in ``draw_minibatch_pairs``; one shuffle gives N/m pairs and
matches every pixel once). ``--epochs`` shuffles give every pixel that many matches.

Small m loses colour diversity: with m = 10 a pixel is matched to whatever the random block
offers, the average of its matches moves towards the mean target colour, exactly as a large
entropic blur does. The diversity returns as m grows (Fatras et al.: m = 1,000 keeps it at 10^6
pixels). The sliced Wasserstein distance SW2 between the output's and the target's colour clouds
measures how close the colours got.

Images: ``--source`` and ``--target`` (any file Pillow reads), by default two pictures that ship
with matplotlib (``grace_hopper.jpg`` and ``Minduka_Present_Blue_Pack.png``), resized to
``--size`` x ``--size``. Nothing is downloaded.

    python examples/plot_colour_transfer.py                             # 1000 x 1000 pixels, m = 10, 100
    python examples/plot_colour_transfer.py --size 200 --m 10 100 1000  # with m = 1,000 (see docs/gallery.md)
    python examples/plot_colour_transfer.py --quick                     # 64 x 64 pixels, seconds
"""

from __future__ import annotations

import argparse
import io
import resource
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.cbook import get_sample_data  # noqa: E402
from PIL import Image, UnidentifiedImageError  # noqa: E402

from ae_ot.ot.minibatch import assignment  # noqa: E402

DEFAULT_SOURCE = "grace_hopper.jpg"
DEFAULT_TARGET = "Minduka_Present_Blue_Pack.png"


def load_image(path: str | Path, size: int) -> np.ndarray:
    """RGB pixels of the image at ``path`` resized to ``size`` x ``size``: float64 [size, size, 3]
    in [0, 1]. A bare name of matplotlib's sample data (e.g. ``grace_hopper.jpg``) also works;
    transparent pixels are composited on white."""
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"size must be a positive integer (pixels per side), got {size!r}")
    path = Path(path)
    if not path.is_file():
        try:
            sample = Path(get_sample_data(str(path), asfileobj=False))
        except (OSError, ValueError):
            sample = None
        if sample is None or not sample.is_file():
            raise FileNotFoundError(f"image file not found: {str(path)!r} (neither a file nor one of "
                                    f"matplotlib's sample images)")
        path = sample
    try:
        with Image.open(path) as im:
            im = im.convert("RGBA")
            canvas = Image.new("RGBA", im.size, (255, 255, 255, 255))
            rgb = Image.alpha_composite(canvas, im).convert("RGB").resize((size, size), Image.BICUBIC)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read {str(path)!r} as an image: {err}") from err
    return np.asarray(rgb, dtype=np.float64) / 255.0


def _padded_permutation(n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of range(n), padded with random other indices up to a multiple of m
    (so the last block is full and every index appears at least once)."""
    perm = rng.permutation(n)
    rest = (-n) % m
    if rest:
        perm = np.concatenate([perm, rng.choice(perm[: n - (n % m)], rest, replace=False)])
    return perm


def minibatch_barycentric_projection(source: np.ndarray, target: np.ndarray, m: int, epochs: int = 1,
                                     seed: int = 0, max_block_floats: int = 1 << 22) -> np.ndarray:
    """T(x_i) = N sum_j Pi_ij y_j for the averaged minibatch plan Pi (see the module docstring),
    accumulated block by block without forming Pi.

    Parameters
    ----------
    source, target : array [N, D]
        Two clouds of the same size (uniform weights).
    m : int
        Minibatch size, 1 <= m <= N.
    epochs : int
        Shuffles of both clouds; each matches every source point at least once.
    seed : int
    max_block_floats : int
        Cost entries computed at once (memory of one chunk of m x m cost matrices).

    Returns
    -------
    array [N, D]: the projected source points.
    """
    source, target = np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if source.ndim != 2 or source.shape != target.shape:
        raise ValueError(f"source and target must be clouds [N, D] of the same shape, got "
                         f"{source.shape} and {target.shape}")
    n = source.shape[0]
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m <= n:
        raise ValueError(f"m (minibatch size) must be an integer between 1 and the number of pixels "
                         f"({n}), got m={m!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    rng = np.random.default_rng(seed)
    total = np.zeros_like(source)
    count = np.zeros(n)
    chunk = max(1, max_block_floats // (m * m))            # blocks whose costs are held at once
    for _ in range(epochs):
        px, py = _padded_permutation(n, m, rng), _padded_permutation(n, m, rng)
        blocks = len(px) // m
        for start in range(0, blocks, chunk):
            stop = min(blocks, start + chunk)
            ix = px[start * m: stop * m].reshape(-1, m)
            iy = py[start * m: stop * m].reshape(-1, m)
            xb, yb = torch.from_numpy(source[ix]), torch.from_numpy(target[iy])
            cost = torch.cdist(xb, yb).square_()                       # [B, m, m] squared distances
            matched = np.empty_like(iy)
            for b in range(cost.shape[0]):
                rows, cols = assignment(cost[b])                        # exact m x m OT (a permutation)
                matched[b, rows.numpy()] = iy[b, cols.numpy()]
            np.add.at(total, ix.reshape(-1), target[matched.reshape(-1)])
            np.add.at(count, ix.reshape(-1), 1.0)
    return total / count[:, None]


def sliced_w2(a: np.ndarray, b: np.ndarray, num_directions: int = 64, max_points: int = 100_000,
              seed: int = 0) -> float:
    """Sliced Wasserstein-2 distance between two clouds [n, D] (equal-size random subsamples of at
    most ``max_points``; ``num_directions`` random unit directions)."""
    rng = np.random.default_rng(seed)
    n = min(len(a), len(b), max_points)
    a = a[rng.choice(len(a), n, replace=False)]
    b = b[rng.choice(len(b), n, replace=False)]
    theta = rng.normal(size=(a.shape[1], num_directions))
    theta /= np.linalg.norm(theta, axis=0)
    pa, pb = np.sort(a @ theta, axis=0), np.sort(b @ theta, axis=0)
    return float(np.sqrt(((pa - pb) ** 2).mean()))


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; Linux reports ru_maxrss in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="source image (path or matplotlib sample name)")
    parser.add_argument("--target", default=DEFAULT_TARGET, help="target image (path or matplotlib sample name)")
    parser.add_argument("--size", type=int, default=1000, help="images are resized to size x size")
    parser.add_argument("--m", type=int, nargs="+", default=None,
                        help="minibatch sizes (default 10 100; with --quick 10 100 400)")
    parser.add_argument("--epochs", type=int, default=4, help="shuffles (matches per pixel)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default="outputs/gallery")
    parser.add_argument("--quick", action="store_true", help="64 x 64 pixels, 2 epochs: a seconds-long smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.epochs = 64, 2
    if args.m is None:
        args.m = [10, 100, 400] if args.quick else [10, 100]

    src = load_image(args.source, args.size)
    tgt = load_image(args.target, args.size)
    x, y = src.reshape(-1, 3), tgt.reshape(-1, 3)
    n = x.shape[0]
    for m in args.m:
        if m > n:
            raise ValueError(f"m (minibatch size) must be at most the number of pixels ({n}), got m={m}")
    print(f"colour transfer: {args.size} x {args.size} = {n:,} pixels per image; the full plan would hold "
          f"{n * n:.2e} entries ({8 * n * n / 1e9:,.0f} GB in float64)")
    sw_before = sliced_w2(x, y, seed=args.seed)
    print(f"sliced W2(source colours, target colours) = {sw_before:.4f}")
    results = {"pixels": n, "sliced_w2_source": sw_before, "runs": []}
    outputs = []
    for m in args.m:
        rss0 = peak_rss_mb()
        t0 = time.perf_counter()
        mapped = minibatch_barycentric_projection(x, y, m, epochs=args.epochs, seed=args.seed)
        seconds = time.perf_counter() - t0
        sw = sliced_w2(mapped, y, seed=args.seed)
        rss = peak_rss_mb()
        run = {"m": m, "pairs": args.epochs * -(-n // m), "seconds": seconds, "sliced_w2": sw,
               "colour_std": float(mapped.std(0).mean()), "peak_rss_mb": rss, "rss_increase_mb": rss - rss0}
        results["runs"].append(run)
        outputs.append(mapped.reshape(src.shape).clip(0, 1))
        print(f"m={m:5d}: {run['pairs']:,} minibatch pairs in {seconds:.1f} s; sliced W2 to target {sw:.4f}; "
              f"mean colour std {run['colour_std']:.3f} (target {y.std(0).mean():.3f}); "
              f"peak RSS {rss:.0f} MB (+{rss - rss0:.0f} MB)")

    fig, axes = plt.subplots(2, 2 + len(outputs), figsize=(2.2 * (2 + len(outputs)), 4.6))
    rng = np.random.default_rng(args.seed)
    show = rng.choice(n, min(n, 3000), replace=False)
    panels = [("source", src), ("target", tgt)] + [(f"m = {r['m']}", o) for r, o in zip(results["runs"], outputs)]
    for col, (title, img) in enumerate(panels):
        axes[0, col].imshow(img, interpolation="bilinear")
        axes[0, col].set_title(title, fontsize=9)
        cloud = img.reshape(-1, 3)[show]
        axes[1, col].scatter(cloud[:, 0], cloud[:, 2], c=cloud, s=2, linewidths=0)
        axes[1, col].set(xlim=(0, 1), ylim=(0, 1), xlabel="red", ylabel="blue" if col == 0 else None)
        if col >= 2:
            axes[1, col].set_title(f"SW2 to target {results['runs'][col - 2]['sliced_w2']:.3f}", fontsize=8)
        for ax in axes[:, col]:
            ax.tick_params(labelsize=6)
        axes[0, col].axis("off")
    fig.suptitle(f"Minibatch OT colour transfer, {n:,} pixels, barycentric projection of the averaged plan",
                 fontsize=9)
    fig.tight_layout()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"colour_transfer_{args.size}px.png"
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=70)
    plt.close(fig)
    with Image.open(buffer) as png:  # a 256-colour palette keeps the photographs' PNG small
        png.convert("RGB").quantize(256).save(path, optimize=True)
    print(f"wrote {path}")
    results["figure"] = str(path)
    return results


if __name__ == "__main__":
    main()
