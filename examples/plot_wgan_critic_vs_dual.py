"""The WGAN critic against the exact Kantorovich dual of a linear program.

Two point sets x_1..x_n (weights a_i) and y_1..y_m (weights b_j), cost C_ij = |x_i - y_j|.
The Wasserstein-1 distance is the value of a linear program and of its dual:

    primal:  W1 = min_{P >= 0}  sum_ij C_ij P_ij      s.t.  sum_j P_ij = a_i,  sum_i P_ij = b_j,
    dual:    W1 = max_{u, v}    sum_i a_i u_i + sum_j b_j v_j      s.t.  u_i + v_j <= C_ij.

(Strong duality: both optima are equal; P_ij > 0 only where u_i + v_j = C_ij.) From a dual
solution v, the c-transform

    f(z) = min_j ( |z - y_j| - v_j )

is a minimum of 1-Lipschitz functions, hence 1-Lipschitz on the whole plane, with f(x_i) >= u_i
and -f(y_j) >= v_j. So  sum_i a_i f(x_i) - sum_j b_j f(y_j) >= W1, and, since no 1-Lipschitz
function does better (weak duality), equality holds: this is the Kantorovich-Rubinstein duality

    W1(p, q) = max_{ ||f||_Lip <= 1 }  E_p f - E_q f,

with the potential f defined everywhere, not only on the points. A WGAN critic (Arjovsky et al.,
2017) is this f parametrised by a network and trained by gradient ascent on E_p f - E_q f. The
Lipschitz constraint is what the variants differ in: weight clipping (WGAN) bounds the Lipschitz
constant by some unknown K, so the critic estimates at most K * W1 and its level sets follow
the clipping rather than the geometry; the gradient penalty 10 * E(|grad f(x_hat)| - 1)^2 on
random interpolates x_hat (WGAN-GP, Gulrajani et al., 2017) asks for unit gradients where the
transport happens; it is a soft constraint, so the estimate can overshoot W1 where the slope
exceeds 1. For any f, (E_p f - E_q f) / Lip(f) <= W1; the script divides each estimate by the
largest gradient norm of f on a grid (a lower bound of Lip(f)).

The script solves the primal LP with scipy's HiGHS (``linprog``), reads the dual from its
equality-constraint marginals, checks strong duality and the 1-Lipschitz property, compares the
LP cost with the assignment cost (equal sizes, uniform weights: a permutation is optimal,
Birkhoff), then trains the two critics (``ae_ot.nets.MLPCritic``, the WGAN-GP penalty of
``ae_ot.generators.wgan.gradient_penalty``) on the same two sets and draws the learned f next to
the exact potential on a grid.

    python examples/plot_wgan_critic_vs_dual.py
    python examples/plot_wgan_critic_vs_dual.py --quick
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import sparse  # noqa: E402
from scipy.optimize import linprog  # noqa: E402

from ae_ot.generators.wgan import gradient_penalty  # noqa: E402
from ae_ot.nets import MLPCritic  # noqa: E402
from ae_ot.ot.minibatch import assignment  # noqa: E402


def point_sets(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """p: two Gaussian blobs on the left; q: a banana on the right (n points each, float64 [n, 2])."""
    rng = np.random.default_rng(seed)
    centres = np.array([[-1.0, 0.7], [-1.0, -0.7]])
    x = centres[rng.integers(0, 2, n)] + 0.25 * rng.normal(size=(n, 2))
    t = rng.uniform(-1.2, 1.2, n)
    y = np.stack([1.0 + 0.5 * t ** 2, t], 1) + 0.08 * rng.normal(size=(n, 2))
    return x, y


def _weights(w, size: int, name: str) -> np.ndarray:
    if w is None:
        return np.full(size, 1.0 / size)
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (size,) or (w <= 0).any() or abs(w.sum() - 1) > 1e-9:
        raise ValueError(f"{name} must be {size} positive weights summing to 1, got shape {w.shape} "
                         f"and sum {w.sum():.6g}")
    return w


def exact_w1_lp(x: np.ndarray, y: np.ndarray, a=None, b=None) -> dict:
    """W1 between sum a_i delta_{x_i} and sum b_j delta_{y_j} by the primal LP (HiGHS).

    Returns ``cost`` (primal optimum), ``plan`` [n, m], ``u`` [n], ``v`` [m] (the dual solution:
    the marginals of the equality constraints) and ``dual`` = a.u + b.v.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n, m = len(x), len(y)
    a, b = _weights(a, n, "a"), _weights(b, m, "b")
    cost = np.linalg.norm(x[:, None] - y[None], axis=-1)
    rows = sparse.kron(sparse.eye(n), np.ones((1, m)))          # sum_j P_ij = a_i
    cols = sparse.kron(np.ones((1, n)), sparse.eye(m))          # sum_i P_ij = b_j
    res = linprog(cost.ravel(), A_eq=sparse.vstack([rows, cols]).tocsr(), b_eq=np.r_[a, b], bounds=(0, None),
                  method="highs")
    if res.status != 0:
        raise RuntimeError(f"the transport LP did not solve: {res.message}")
    u, v = res.eqlin.marginals[:n], res.eqlin.marginals[n:]
    return {"cost": float(res.fun), "plan": res.x.reshape(n, m), "u": u, "v": v, "dual": float(a @ u + b @ v),
            "a": a, "b": b}


def dual_potential(z: np.ndarray, y: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The c-transform f(z) = min_j |z - y_j| - v_j: a 1-Lipschitz Kantorovich potential on R^D."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty(len(z))
    for s in range(0, len(z), 4096):  # chunks: never a [len(z), m] block larger than 4096 rows
        out[s:s + 4096] = (np.linalg.norm(z[s:s + 4096, None] - y[None], axis=-1) - v[None]).min(1)
    return out


def assignment_cost(x: np.ndarray, y: np.ndarray) -> float:
    """min_sigma 1/n sum_i |x_i - y_sigma(i)| (equal sizes, uniform weights), by the assignment."""
    cost = torch.cdist(torch.as_tensor(x), torch.as_tensor(y))
    rows, cols = assignment(cost)
    return float(cost[rows, cols].mean())


def train_critic(x: torch.Tensor, y: torch.Tensor, kind: str, steps: int, width: int = 128, seed: int = 0):
    """Train an MLP critic to maximise E_p f - E_q f on the full sets (x ~ p, y ~ q, equal sizes).

    ``kind="clip"``: RMSProp (lr 5e-4), weights clipped to [-0.01, 0.01] (WGAN);
    ``kind="gp"``: Adam (lr 1e-3, betas (0.5, 0.9)), penalty 10 E(|grad f| - 1)^2 (WGAN-GP).
    Returns the critic and its estimate E_p f - E_q f after every step.
    """
    torch.manual_seed(seed)
    critic = MLPCritic(data_dim=2, width=width).double()
    if kind == "clip":
        opt = torch.optim.RMSprop(critic.parameters(), lr=5e-4)
    elif kind == "gp":
        opt = torch.optim.Adam(critic.parameters(), lr=1e-3, betas=(0.5, 0.9))
    else:
        raise ValueError(f"kind must be 'clip' (WGAN) or 'gp' (WGAN-GP), got {kind!r}")
    history = []
    for _ in range(steps):
        estimate = critic(x).mean() - critic(y).mean()
        loss = -estimate
        if kind == "gp":
            loss = loss + 10.0 * gradient_penalty(critic, x, y)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if kind == "clip":
            with torch.no_grad():
                for p in critic.parameters():
                    p.clamp_(-0.01, 0.01)
        history.append(float(estimate.detach()))
    with torch.no_grad():
        history.append(float(critic(x).mean() - critic(y).mean()))
    return critic, history


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="points per set (<= 500)")
    parser.add_argument("--steps", type=int, default=3000, help="critic training steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default="outputs/gallery")
    parser.add_argument("--quick", action="store_true", help="40 points, 100 steps: seconds")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.steps = 40, 100
    if not 1 <= args.n <= 500:
        raise ValueError(f"n must be between 1 and 500 (the LP has n^2 variables), got n={args.n}")
    torch.manual_seed(args.seed)

    x, y = point_sets(args.n, args.seed)
    t0 = time.perf_counter()
    lp = exact_w1_lp(x, y)
    t_lp = time.perf_counter() - t0
    f_x, f_y = dual_potential(x, y, lp["v"]), dual_potential(y, y, lp["v"])
    w1_potential = float(lp["a"] @ f_x - lp["b"] @ f_y)
    z = np.concatenate([x, y])
    fz = np.concatenate([f_x, f_y])
    lipschitz_excess = float((fz[:, None] - fz[None] - np.linalg.norm(z[:, None] - z[None], axis=-1)).max())
    w1_assign = assignment_cost(x, y)
    print(f"{args.n} + {args.n} points: LP (HiGHS, {args.n ** 2:,} variables) in {t_lp:.2f} s")
    print(f"  primal cost W1          = {lp['cost']:.8f}")
    print(f"  dual a.u + b.v          = {lp['dual']:.8f}")
    print(f"  E_p f - E_q f, c-transform potential = {w1_potential:.8f} (gap {abs(w1_potential - lp['cost']):.1e})")
    print(f"  max_(z,w) f(z) - f(w) - |z - w| over all pairs = {lipschitz_excess:.1e} (<= 0: 1-Lipschitz)")
    print(f"  assignment cost         = {w1_assign:.8f} (LP - assignment: {lp['cost'] - w1_assign:.1e})")

    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    results = {"n": args.n, "w1_lp": lp["cost"], "w1_dual": lp["dual"], "w1_potential": w1_potential,
               "lipschitz_excess": lipschitz_excess, "w1_assignment": w1_assign, "critics": {}}
    lo, hi = z.min(0) - 0.5, z.max(0) + 0.5
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 120), np.linspace(lo[1], hi[1], 120))
    grid = np.stack([gx.ravel(), gy.ravel()], 1)
    f_grid = dual_potential(grid, y, lp["v"])
    maps, histories = {}, {}
    for kind, name in (("clip", "WGAN (clipping)"), ("gp", "WGAN-GP")):
        t0 = time.perf_counter()
        critic, history = train_critic(xt, yt, kind, args.steps, seed=args.seed)
        seconds = time.perf_counter() - t0
        g = torch.from_numpy(grid).requires_grad_(True)
        values = critic(g)
        (grads,) = torch.autograd.grad(values.sum(), g)
        values, slope = values.detach().numpy(), float(grads.norm(dim=1).max())
        # how well the learned f matches the exact potential up to a constant and a scale
        corr = float(np.corrcoef(values, f_grid)[0, 1])
        maps[name], histories[name] = values, history
        results["critics"][kind] = {"estimate": history[-1], "max_grad_norm": slope,
                                    "estimate_over_lipschitz": history[-1] / slope, "corr_with_dual": corr,
                                    "seconds": seconds}
        print(f"{name:16s}: E_p f - E_q f = {history[-1]:.5f} (W1 = {lp['cost']:.5f}) after {args.steps} steps "
              f"({seconds:.1f} s); max |grad f| on the grid {slope:.4f}, estimate / max|grad f| = "
              f"{history[-1] / slope:.5f}; correlation with the exact potential on the grid {corr:.3f}")

    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    used = lp["plan"] > 1e-9
    for ax, (title, values) in zip(axes[:3], [("exact dual potential f (LP)", f_grid), *maps.items()]):
        ax.contourf(gx, gy, values.reshape(gx.shape), levels=20, cmap="RdBu_r")
        ax.contour(gx, gy, values.reshape(gx.shape), levels=20, colors="k", linewidths=0.3)
        ax.scatter(*x.T, s=4, c="C1", label="x ~ p")
        ax.scatter(*y.T, s=4, c="C2", label="y ~ q")
        ax.set(title=title, aspect="equal")
        ax.set_xticks([]), ax.set_yticks([])
    for i, j in zip(*np.nonzero(used)):
        axes[0].plot([x[i, 0], y[j, 0]], [x[i, 1], y[j, 1]], color="k", lw=0.3, alpha=0.4)
    axes[0].legend(fontsize=7, loc="lower left")
    ax = axes[3]
    for (name, history), c, kind in zip(histories.items(), ("C0", "C3"), ("clip", "gp")):
        ratio = results["critics"][kind]["estimate_over_lipschitz"]
        ax.plot(history, color=c, label=f"{name}: {history[-1]:.3f} (/ max|grad f|: {ratio:.3f})")
    ax.axhline(lp["cost"], color="k", ls="--", label=f"exact W1 (LP) {lp['cost']:.3f}")
    ax.set(xlabel="critic step", ylabel="E_p f - E_q f", title="critic estimates of W1")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "wgan_critic_vs_dual.png"
    fig.savefig(path, dpi=60)
    plt.close(fig)
    print(f"wrote {path}")
    results["figure"] = str(path)
    return results


if __name__ == "__main__":
    main()
