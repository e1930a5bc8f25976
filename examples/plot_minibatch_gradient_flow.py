"""Gradient flows of the minibatch Wasserstein loss: in 2-D and between two MNIST digit classes.

Particles x_1..x_n follow the gradient of a loss towards a fixed target cloud y_1..y_n:

    x_i <- x_i - lr_t * (n / 2) * grad_{x_i} L(x, y),      lr_t = lr * min(1, (T / 10) / t)

(T steps in all; the step size decays like 1/t after the first tenth, so that the noise of the
random minibatches averages out, as in stochastic approximation). With L the exact W2^2
(squared Euclidean cost, uniform weights) each particle moves a fraction lr_t of the way towards
its optimal partner (the factor n/2 makes the step per unit mass). The minibatch Wasserstein
loss of Fatras et al. (AISTATS 2020) replaces W2^2 by the average of exact OT costs between k
random pairs of size-m minibatches (the incomplete estimator of
``ae_ot.ot.minibatch.minibatch_wasserstein``; here k = n/m pairs per step, so that each particle
is drawn about once):

    h_k(x, y) = 1/k sum_l W(x[I_l], y[J_l]).

h is not a distance: h(y, y) > 0 for m < n (two random minibatches of one cloud differ), so its
minimiser is *not* x = y. Along the flow each particle is pulled to the average of the random
partners it meets, and the particles settle in a contracted, blurred version of the target: in
2-D a ring or a disc through the 8 modes instead of the modes themselves; on images, blurred
digits. The debiased loss

    h(x, y) - h(x, x) / 2 - h(y, y) / 2      (``debiased_minibatch_wasserstein``)

has x = y as a stationary point: the -h(x, x)/2 term pushes the particles apart. Its gradient
is noisier (a difference of two random matches), which the decaying step has to average out.
The script reports the exact W2^2 (one n x n assignment) between the final particles and the
target for each run, and for images the share of grey pixels (a blur indicator).

Images: 28 x 28 MNIST digits (class ``--digits``), read offline (``ae_ot.data.load_mnist``); with
``--quick`` synthetic bar images stand in for them, so that the smoke run takes seconds.

    python examples/plot_minibatch_gradient_flow.py
    python examples/plot_minibatch_gradient_flow.py --quick
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ae_ot.datasets import gaussians_on_circle  # noqa: E402
from ae_ot.ot.minibatch import (  # noqa: E402
    check_minibatch_args,
    debiased_minibatch_wasserstein,
    exact_ot_equal_size,
    minibatch_wasserstein,
)


def moons(n: int, seed: int = 0) -> torch.Tensor:
    """Two interleaved half circles, ``n`` points [n, 2], centred near the origin (radius ~0.5)."""
    g = torch.Generator().manual_seed(seed)
    t = math.pi * torch.rand(n, generator=g)
    upper = torch.rand(n, generator=g) < 0.5
    pts = torch.where(upper[:, None], torch.stack([t.cos(), t.sin()], 1),
                      torch.stack([1 - t.cos(), 0.5 - t.sin()], 1))
    return 0.3 * (pts - torch.tensor([0.5, 0.25])) + 0.03 * torch.randn(n, 2, generator=g)


def gradient_flow(x0: torch.Tensor, y: torch.Tensor, m: int, steps: int, lr: float = 0.1,
                  debiased: bool = False, snapshots=(), seed: int = 0, pair_factor: int = 1
                  ) -> tuple[torch.Tensor, dict]:
    """Run the flow x <- x - lr_t (n/2) grad h_k(x, y) with k = pair_factor * ceil(n/m) minibatch
    pairs per step (more pairs: less noise, same expected step) and lr_t = lr * min(1, (steps / 10) / t).

    Returns the final particles and ``{step: particles}`` for the requested ``snapshots``
    (step 0 is the start)."""
    n = x0.shape[0]
    check_minibatch_args(m, 1, n, y.shape[0])
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    k = pair_factor * max(1, -(-n // m))
    loss_fn = debiased_minibatch_wasserstein if debiased else minibatch_wasserstein
    g = torch.Generator().manual_seed(seed)
    x = x0.clone().requires_grad_(True)
    saved = {0: x0.clone()}
    for t in range(1, steps + 1):
        (grad,) = torch.autograd.grad(loss_fn(x, y, m, k, generator=g), x)
        with torch.no_grad():
            x -= lr * min(1.0, (steps / 10) / t) * (n / 2) * grad
        if t in snapshots:
            saved[t] = x.detach().clone()
    return x.detach(), saved


def exact_w2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Exact W2^2 (mean squared distance of the optimal assignment) between equal-size clouds."""
    return float(exact_ot_equal_size(x, y)[0])


def bar_images(n: int, horizontal: bool, seed: int = 0) -> torch.Tensor:
    """Synthetic 28 x 28 images of one bar (random position and width): a stand-in for MNIST."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.randint(6, 22, (n,), generator=g)
    width = torch.randint(2, 5, (n,), generator=g)
    coord = torch.arange(28)
    bar = ((coord[None] >= pos[:, None]) & (coord[None] < (pos + width)[:, None])).float()   # [n, 28]
    img = bar[:, :, None].expand(n, 28, 28) if horizontal else bar[:, None, :].expand(n, 28, 28)
    return img.reshape(n, 1, 28, 28).clone()


def digit_images(digit: int, n: int, seed: int = 0) -> torch.Tensor:
    from ae_ot.datasets import load_mnist

    splits = load_mnist(download=False)
    idx = (splits.train_labels == digit).nonzero().flatten()
    idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))[:n]]
    return splits.train_images[idx]


def grey_share(images: torch.Tensor) -> float:
    """Fraction of pixels strictly between 0.1 and 0.9: a blur indicator (MNIST digits are
    nearly binary)."""
    return float(((images > 0.1) & (images < 0.9)).float().mean())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=400, help="particles in 2-D")
    parser.add_argument("--m", type=int, nargs="+", default=[8, 32], help="minibatch sizes (2-D); m = n is added")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--n_images", type=int, default=300, help="particles (images)")
    parser.add_argument("--m_images", type=int, default=16)
    parser.add_argument("--steps_images", type=int, default=200)
    parser.add_argument("--digits", type=int, nargs=2, default=[3, 8], help="source and target MNIST classes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default="outputs/gallery")
    parser.add_argument("--quick", action="store_true", help="small clouds, bar images instead of MNIST")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.m, args.steps, args.n_images, args.m_images, args.steps_images = 64, [8], 30, 48, 8, 20
    torch.manual_seed(args.seed)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {"2d": {}, "images": {}}

    # ---- 2-D: moons -> 8 Gaussians -------------------------------------------------------------
    x0 = moons(args.n, args.seed)
    y = gaussians_on_circle(args.n, seed=args.seed + 1)[0]
    snaps = sorted({0, args.steps // 30, args.steps // 10, args.steps // 3, args.steps})
    runs = [(m, False) for m in args.m] + [(args.m[0], True), (args.n, False)]
    results["2d_start"] = exact_w2(x0, y)
    print(f"2-D: {args.n} particles (moons) -> {args.n} points of 8 Gaussians, {args.steps} steps, lr {args.lr}; "
          f"exact W2^2 at the start {results['2d_start']:.4f}")
    fig, axes = plt.subplots(len(runs), len(snaps), figsize=(2.1 * len(snaps), 2.1 * len(runs)))
    for row, (m, debiased) in enumerate(runs):
        t0 = time.perf_counter()
        final, saved = gradient_flow(x0, y, m, args.steps, args.lr, debiased, snaps, args.seed)
        name = f"m={m}" + (" (full OT)" if m == args.n else "") + (" debiased" if debiased else "")
        w2 = exact_w2(final, y)
        results["2d"][name] = w2
        print(f"  {name:18s}: exact W2^2(final, target) = {w2:.5f}  ({time.perf_counter() - t0:.1f} s)")
        for col, t in enumerate(snaps):
            ax = axes[row, col]
            ax.scatter(*y.T, s=1, c="0.75")
            ax.scatter(*saved[t].T, s=1, c="C3" if debiased else "C0")
            ax.set(xlim=(-1, 1), ylim=(-1, 1), aspect="equal", xticks=[], yticks=[])
            if row == 0:
                ax.set_title(f"step {t}", fontsize=9)
        axes[row, 0].set_ylabel(name, fontsize=8)
        axes[row, -1].set_xlabel(f"W2^2 = {w2:.4f}", fontsize=8)
    fig.suptitle("Minibatch Wasserstein gradient flow, moons -> 8 Gaussians (grey)", fontsize=10)
    fig.tight_layout()
    path_2d = out / "minibatch_gradient_flow_2d.png"
    fig.savefig(path_2d, dpi=60)
    plt.close(fig)

    # ---- images: digit a -> digit b ------------------------------------------------------------
    if args.quick:
        src, tgt, what = bar_images(args.n_images, True, args.seed), bar_images(args.n_images, False, args.seed + 1), \
            "horizontal bars -> vertical bars (synthetic)"
    else:
        a, b = args.digits
        src, tgt, what = digit_images(a, args.n_images, args.seed), digit_images(b, args.n_images, args.seed + 1), \
            f"MNIST {a}s -> {b}s"
    print(f"images: {args.n_images} particles, {what}, {args.steps_images} steps; exact W2^2 at the start "
          f"{exact_w2(src, tgt):.2f}; grey-pixel share of the target {grey_share(tgt):.3f}")
    image_runs = [(args.m_images, False), (args.m_images, True), (args.n_images, False)]
    finals = {}
    for m, debiased in image_runs:
        t0 = time.perf_counter()
        final, _ = gradient_flow(src.flatten(1), tgt.flatten(1), m, args.steps_images, args.lr, debiased,
                                 seed=args.seed)
        final = final.view_as(src)
        name = f"m={m}" + (" (full OT)" if m == args.n_images else "") + (" debiased" if debiased else "")
        finals[name] = final
        w2, grey = exact_w2(final, tgt), grey_share(final.clamp(0, 1))
        results["images"][name] = {"w2": w2, "grey_share": grey}
        print(f"  {name:18s}: exact W2^2(final, target) = {w2:.3f}; grey-pixel share {grey:.3f}  "
              f"({time.perf_counter() - t0:.1f} s)")

    rows = [("start", src)] + list(finals.items()) + [("target", tgt)]
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 1.25 * len(rows)))
    for ax, (name, imgs) in zip(axes, rows):
        strip = torch.cat(list(imgs[:10, 0].clamp(0, 1)), dim=1)
        ax.imshow(strip, cmap="gray_r", vmin=0, vmax=1)
        label = name if name in ("start", "target") else f"{name}\nW2^2 {results['images'][name]['w2']:.1f}"
        ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"Minibatch Wasserstein gradient flow between images ({what}), end states", fontsize=9)
    fig.tight_layout()
    path_img = out / "minibatch_gradient_flow_images.png"
    fig.savefig(path_img, dpi=80)
    plt.close(fig)
    print(f"wrote {path_2d} and {path_img}")
    results["figures"] = [str(path_2d), str(path_img)]
    return results


if __name__ == "__main__":
    main()
