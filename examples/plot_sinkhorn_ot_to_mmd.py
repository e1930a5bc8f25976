"""Sinkhorn divergences interpolate between optimal transport and MMD.

For two uniform point clouds alpha = 1/n sum_i delta_{x_i} and beta = 1/n sum_j delta_{y_j}, the
entropic OT cost with a cost c and temperature eps > 0 is

    OT_eps(alpha, beta) = min_{P in Pi(alpha, beta)} <P, C> + eps KL(P | alpha x beta),

and the (debiased) Sinkhorn divergence of Feydy et al. (AISTATS 2019) is

    S_eps(alpha, beta) = OT_eps(alpha, beta) - OT_eps(alpha, alpha) / 2 - OT_eps(beta, beta) / 2.

It is positive, convex, metrises weak convergence, and interpolates between the two classical
families of distances:

    eps -> 0:    S_eps -> OT_0(alpha, beta)                       (exact optimal transport),
    eps -> inf:  S_eps -> 1/2 || alpha - beta ||^2_{-c}           (an MMD with kernel k = -c).

With the cost c(x, y) = |x - y| (GeomLoss ``p=1``, where ``blur`` = eps), the eps -> 0 limit is
W1, computed here exactly as an assignment problem (equal sizes, uniform weights), and the
eps -> inf limit is half the energy distance,

    1/2 ||alpha - beta||^2_{-c} = E|X - Y| - E|X - X'| / 2 - E|Y - Y'| / 2.

The script plots S_eps against eps (log axis) between its two limits, the gradient field
-grad_x S_eps at three values of eps (small eps: each point moves towards its OT partner; large
eps: a smooth, global MMD flow), and times S_eps plus its gradient against the number of points
for GeomLoss' backends ("tensorized": dense n x n matrices; "online": KeOps, no n x n matrix;
"multiscale": KeOps with a coarse-to-fine clustering), stopping a backend once one call takes
longer than ``--time_budget`` seconds.

    python examples/plot_sinkhorn_ot_to_mmd.py
    python examples/plot_sinkhorn_ot_to_mmd.py --quick        # no KeOps timings, seconds
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ae_ot.ot.minibatch import assignment, sinkhorn_divergence  # noqa: E402


def two_clouds(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A Gaussian blob and a noisy ring of ``n`` points each, float64 [n, 2]."""
    g = torch.Generator().manual_seed(seed)
    x = 0.25 * torch.randn(n, 2, generator=g, dtype=torch.float64) + torch.tensor([-0.9, 0.0], dtype=torch.float64)
    t = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    r = 0.6 + 0.04 * torch.randn(n, generator=g, dtype=torch.float64)
    y = torch.stack([r * t.cos(), r * t.sin()], 1) + torch.tensor([0.7, 0.0], dtype=torch.float64)
    return x, y


def check_eps(eps_values) -> list[float]:
    """The temperatures as floats; ``ValueError`` unless every one is a finite number > 0."""
    out = []
    for eps in eps_values:
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
            raise ValueError(f"eps (the entropic temperature) must be a finite number > 0, got eps={eps!r}")
        out.append(float(eps))
    if not out:
        raise ValueError("eps_values is empty: pass at least one temperature eps > 0")
    return out


def exact_ot_cost(x: torch.Tensor, y: torch.Tensor) -> float:
    """W1 = min_sigma 1/n sum_i |x_i - y_sigma(i)| (equal sizes, uniform weights), exactly, by
    the assignment problem (the eps -> 0 limit of S_eps with cost |x - y|)."""
    cost = torch.cdist(x, y)
    rows, cols = assignment(cost)
    return float(cost[rows, cols].mean())


def mmd_limit(x: torch.Tensor, y: torch.Tensor) -> float:
    """1/2 ||alpha - beta||^2_{-c} with c = |x - y|: E|X-Y| - E|X-X'|/2 - E|Y-Y'|/2 (the eps -> inf
    limit of S_eps), with the empirical measures (V-statistics, diagonal terms included)."""
    return float(torch.cdist(x, y).mean() - 0.5 * torch.cdist(x, x).mean() - 0.5 * torch.cdist(y, y).mean())


def sinkhorn_curve(x: torch.Tensor, y: torch.Tensor, eps_values, scaling: float = 0.95) -> list[float]:
    """S_eps(x, y) with cost |x - y| (GeomLoss p=1, blur = eps) for every eps of ``eps_values``."""
    eps_values = check_eps(eps_values)
    return [float(sinkhorn_divergence(x, y, blur=eps, p=1, scaling=scaling)) for eps in eps_values]


def sinkhorn_gradient(x: torch.Tensor, y: torch.Tensor, eps: float, backend: str = "tensorized") -> torch.Tensor:
    """n * grad_x S_eps(x, y) [n, D] (the gradient per unit mass: the velocity of each point)."""
    (eps,) = check_eps([eps])
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(sinkhorn_divergence(x, y, blur=eps, p=1, backend=backend), x)
    return grad * x.shape[0]


def time_backends(sizes, backends, time_budget: float, seed: int = 0, max_dense_gb: float = 2.0) -> dict:
    """Seconds for S_eps + its gradient (float32, eps = 0.05, GeomLoss' default scaling 0.5) per
    backend and size. A backend stops after the first call over ``time_budget`` s, an error, or
    before a size whose time, extrapolated quadratically from the last one, exceeds 3 x the budget;
    "tensorized" also stops before its three n x n float32 matrices would pass ``max_dense_gb``."""
    timings = {}
    for backend in backends:
        timings[backend] = {}
        last = None
        try:  # warm-up: KeOps compiles (and caches) its formulas on first use
            x, y = (c.float() for c in two_clouds(200, seed))
            sinkhorn_divergence(x, y, blur=0.05, p=1, scaling=0.5, backend=backend)
        except (RuntimeError, MemoryError) as err:
            print(f"  {backend:10s}: failed ({type(err).__name__}: {str(err).splitlines()[0][:80]})")
            continue
        for n in sizes:
            if backend == "tensorized" and 3 * 4 * n * n / 1e9 > max_dense_gb:
                print(f"  {backend:10s} n={n:>9,}: not run (three dense n x n matrices > {max_dense_gb:g} GB)")
                break
            if last is not None and last[1] * (n / last[0]) ** 2 > 3 * time_budget:
                print(f"  {backend:10s} n={n:>9,}: not run (quadratic extrapolation of the last time "
                      f"> {3 * time_budget:g} s)")
                break
            x, y = (c.float() for c in two_clouds(n, seed))
            try:
                t0 = time.perf_counter()
                x.requires_grad_(True)
                value = sinkhorn_divergence(x, y, blur=0.05, p=1, scaling=0.5, backend=backend)
                torch.autograd.grad(value, x)
                seconds = time.perf_counter() - t0
            except (RuntimeError, MemoryError) as err:  # out of memory, or KeOps cannot compile
                print(f"  {backend:10s} n={n:>9,}: failed ({type(err).__name__}: {str(err).splitlines()[0][:80]})")
                break
            timings[backend][n] = seconds
            last = (n, seconds)
            print(f"  {backend:10s} n={n:>9,}: {seconds:8.2f} s")
            if seconds > time_budget:
                break
    return timings


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=400, help="points per cloud")
    parser.add_argument("--eps_min", type=float, default=1e-3)
    parser.add_argument("--eps_max", type=float, default=1e3)
    parser.add_argument("--num_eps", type=int, default=19)
    parser.add_argument("--sizes", type=int, nargs="+",
                        default=[1000, 3000, 10_000, 30_000, 100_000, 300_000, 1_000_000])
    parser.add_argument("--backends", nargs="+", default=["tensorized", "online", "multiscale"])
    parser.add_argument("--time_budget", type=float, default=20.0, help="seconds: a backend stops after a slower call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default="outputs/gallery")
    parser.add_argument("--quick", action="store_true", help="small clouds, tensorized timings only: seconds")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.num_eps, args.sizes, args.backends = 100, 5, [200, 400], ["tensorized"]
    check_eps([args.eps_min, args.eps_max])
    if args.eps_min >= args.eps_max:
        raise ValueError(f"eps_min must be below eps_max, got eps_min={args.eps_min} and eps_max={args.eps_max}")
    torch.manual_seed(args.seed)

    x, y = two_clouds(args.n, args.seed)
    eps_values = np.geomspace(args.eps_min, args.eps_max, args.num_eps).tolist()
    ot, mmd = exact_ot_cost(x, y), mmd_limit(x, y)
    t0 = time.perf_counter()
    curve = sinkhorn_curve(x, y, eps_values)
    print(f"two clouds of {args.n} points, cost |x - y|: exact OT (assignment) W1 = {ot:.5f}; "
          f"MMD limit (half the energy distance) = {mmd:.5f}")
    print(f"S_eps at {len(eps_values)} temperatures in {time.perf_counter() - t0:.1f} s:")
    for eps, s in zip(eps_values, curve):
        print(f"  eps = {eps:9.3g}   S_eps = {s:.5f}")
    rel_ot, rel_mmd = abs(curve[0] - ot) / ot, abs(curve[-1] - mmd) / mmd
    print(f"eps = {eps_values[0]:g}: S_eps is {100 * rel_ot:.2f}% from W1; "
          f"eps = {eps_values[-1]:g}: {100 * rel_mmd:.2f}% from the MMD limit")

    field_eps = [0.01, 0.3, 10.0]
    fields = [sinkhorn_gradient(x, y, eps) for eps in field_eps]

    print(f"time of S_eps + gradient (float32, eps = 0.05), stop after a call over {args.time_budget:g} s:")
    timings = time_backends(args.sizes, args.backends, args.time_budget, args.seed)
    largest = {b: max((n for n, s in t.items() if s <= args.time_budget), default=None) for b, t in timings.items()}
    for backend, n in largest.items():
        print(f"largest size within {args.time_budget:g} s per call, {backend}: {n if n is None else f'{n:,}'}")

    fig, axes = plt.subplots(1, 5, figsize=(19, 3.8))
    ax = axes[0]
    ax.semilogx(eps_values, curve, "o-", ms=3, label="S_eps (GeomLoss)")
    ax.axhline(ot, color="C1", ls="--", label=f"exact OT (W1) {ot:.3f}")
    ax.axhline(mmd, color="C2", ls="--", label=f"MMD, kernel -|x-y|: {mmd:.3f}")
    ax.set(xlabel="eps (blur)", ylabel="S_eps", title="Sinkhorn divergence: OT -> MMD")
    ax.legend(fontsize=7)
    arrows = torch.randperm(args.n, generator=torch.Generator().manual_seed(args.seed))[:80]
    for ax, eps, v in zip(axes[1:4], field_eps, fields):
        ax.scatter(*y.T, s=3, c="C1", label="y (target)")
        ax.scatter(*x.T, s=3, c="C0", label="x")
        ax.quiver(*x[arrows].T, *(-v[arrows]).T, angles="xy", scale_units="xy", scale=1 / 0.4, width=0.004,
                  color="k")
        ax.set(title=f"-grad_x S_eps, eps = {eps:g}", aspect="equal")
        ax.set_xticks([]), ax.set_yticks([])
    axes[1].legend(fontsize=7, loc="lower left")
    ax = axes[4]
    for backend, t in timings.items():
        if t:
            ax.loglog(list(t), list(t.values()), "o-", label=backend)
    ax.set(xlabel="points per cloud", ylabel="seconds (S_eps + gradient)", title="time on this CPU")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sinkhorn_ot_to_mmd.png"
    fig.savefig(path, dpi=60)
    plt.close(fig)
    print(f"wrote {path}")
    return {"eps": eps_values, "sinkhorn": curve, "exact_ot": ot, "mmd": mmd, "rel_error_ot": rel_ot,
            "rel_error_mmd": rel_mmd, "timings": timings, "largest": largest, "figure": str(path)}


if __name__ == "__main__":
    main()
