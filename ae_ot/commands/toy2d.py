"""``ae-ot toy2d``: semi-discrete OT from the uniform square to 2D point sets, in pictures.

For each point set (8 Gaussians, 25 Gaussians, a swiss roll) it solves OT from Uniform([-1, 1]^2),
then draws one figure with

* the power cells (pixels coloured by the mode of their target, cell edges in grey),
* the singular boundaries (edges between cells whose supporting planes make a large angle) in red,
* samples of the plain map (they are training points) and of the extended map,

and reports the fraction of samples that land *between* modes: farther from every target than
the 99th percentile of the targets' nearest-neighbour distances.

    ae-ot toy2d --output_dir toy2d      # writes toy2d/{8gaussians,25gaussians,swissroll}.png + toy2d.json

Examples
--------
The options are the parser's (``ae-ot toy2d --help``); ``main`` parses a list of them
and runs the command:

>>> from ae_ot.commands.toy2d import build_parser, main
>>> "--output_dir" in build_parser().format_help()
True
>>> main(["--output_dir", "toy2d"])  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

import torch

from ae_ot.checks import UserInputError
from ae_ot.evaluation.latent import gap_score, nearest_neighbour_distances
from ae_ot.io import write_json_atomic
from ae_ot.parsing import CommandParser, function_parser, run_function
from ae_ot.viz import save_figure

__all__ = ["point_set", "solve_toy", "between_modes_fraction", "run", "toy2d_figures", "build_parser", "main",
           "POINT_SETS", "PointSetName"]

#: the names of the point sets (the choices of ``--sets``)
PointSetName = Literal["8gaussians", "25gaussians", "swissroll"]
POINT_SETS: tuple[str, ...] = get_args(PointSetName)


def point_set(name: str, n: int = 1000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A 2D point set inside [-1, 1]^2 and its mode labels: ([n, 2], [n] long)."""
    g = torch.Generator().manual_seed(seed)
    if name == "8gaussians":
        angles = torch.arange(8) * (2 * math.pi / 8)
        centres = 0.65 * torch.stack([angles.cos(), angles.sin()], 1)
        labels = torch.randint(0, 8, (n,), generator=g)
        points = centres[labels] + 0.04 * torch.randn(n, 2, generator=g)
    elif name == "25gaussians":
        grid = torch.linspace(-0.7, 0.7, 5)
        centres = torch.cartesian_prod(grid, grid)
        labels = torch.randint(0, 25, (n,), generator=g)
        points = centres[labels] + 0.025 * torch.randn(n, 2, generator=g)
    elif name == "swissroll":
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g))
        points = torch.stack([t * t.cos(), t * t.sin()], 1) / 15.0 + 0.01 * torch.randn(n, 2, generator=g)
        labels = torch.zeros(n, dtype=torch.long)        # one (curved) mode
    else:
        raise UserInputError(f"unknown point set {name!r}: choose from {', '.join(POINT_SETS)}")
    return points.float(), labels


def between_modes_fraction(samples: torch.Tensor, targets: torch.Tensor, quantile: float = 0.99) -> float:
    """Fraction of samples farther from every target than the ``quantile`` of the targets'
    nearest-neighbour distances: samples that fell into a gap of the support."""
    return gap_score(samples, targets, quantile)


def solve_toy(targets: torch.Tensor, seed: int = 0, time_limit: float = 20.0, max_steps: int = 2000):
    from ae_ot.ot import SemiDiscreteOT

    solver = SemiDiscreteOT(targets, low=-1.0, high=1.0, seed=seed)
    # No tol: a stopping test evaluates on millions of samples every few steps, which in 2-D
    # costs more than the solve; the error is evaluated once afterwards instead.
    report = solver.fit(time_limit=time_limit, max_steps=max_steps, progress=False)
    return solver, report


def _figure(name, solver, labels, plain, extended, angle_threshold, path, stats, resolution=400):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ae_ot.ot.extension import normal_angles

    # pixel centres, image row 0 at the top (y = 1)
    ys, xs = torch.meshgrid(torch.linspace(1, -1, resolution), torch.linspace(-1, 1, resolution), indexing="ij")
    grid = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)
    _, top2 = solver.topk(grid, 2)
    cell = top2[:, 0].view(resolution, resolution)
    singular = normal_angles(solver.targets, top2[:, 0], top2[:, 1:])[:, 0] >= angle_threshold
    singular = singular.view(resolution, resolution)
    edge = torch.zeros_like(cell, dtype=torch.bool)
    edge[:, 1:] |= cell[:, 1:] != cell[:, :-1]
    edge[1:, :] |= cell[1:, :] != cell[:-1, :]
    mode = labels[cell]
    colours = plt.get_cmap("tab20")((mode % 20).numpy())[..., :3] * 0.35 + 0.65
    colours[edge.numpy()] = (0.55, 0.55, 0.55)
    colours[(edge & singular).numpy()] = (0.85, 0.1, 0.1)

    fig, axes = plt.subplots(1, 2, figsize=(12, 6))
    for ax, samples, title in ((axes[0], plain, "plain OT map"), (axes[1], extended, "extended OT map")):
        ax.imshow(colours, extent=(-1, 1, -1, 1))
        t = solver.targets
        ax.scatter(t[:, 0], t[:, 1], s=2, c="k", label="targets")
        ax.scatter(samples[:, 0], samples[:, 1], s=3, c="tab:blue", alpha=0.6, label="samples")
        ax.set_title(f"{name}: {title}\nbetween modes: {100 * stats[title]:.2f}% of samples")
        ax.set_xlim(-1, 1), ax.set_ylim(-1, 1), ax.set_aspect("equal")
    axes[0].legend(loc="lower left", fontsize=8)
    fig.suptitle("power cells (grey edges), singular boundaries (red): samples never cross them")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def run(names=POINT_SETS, output_dir: str | Path = "toy2d", num_points: int = 1000, num_samples: int = 4000,
        angle_threshold_deg: float = 8.0, radius: float = 0.6, topk: int = 8, seed: int = 0,
        time_limit: float = 20.0, make_figures: bool = True) -> dict:
    """Solve, sample and (optionally) draw each point set; returns the per-set numbers."""
    from ae_ot.ot.extension import extended_map

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in names:
        targets, labels = point_set(name, num_points, seed)
        solver, report = solve_toy(targets, seed=seed, time_limit=time_limit)
        noise = torch.rand(num_samples, 2, generator=torch.Generator().manual_seed(seed + 1)) * 2 - 1
        values, indices = solver.topk(noise, topk)
        extended, ext_stats = extended_map(values, indices, solver.targets, return_stats=True,
                                           angle_threshold=math.radians(angle_threshold_deg),
                                           radius=radius)
        plain = solver.transport(noise)
        errors = solver.errors(num_samples=2_000_000, seed=seed + 2)
        stats = {
            "plain OT map": between_modes_fraction(plain, targets),
            "extended OT map": between_modes_fraction(extended, targets),
        }
        novel = (nearest_neighbour_distances(targets, extended) > 1e-6).float().mean().item()
        results[name] = {
            "between_modes_plain": stats["plain OT map"],
            "between_modes_extended": stats["extended OT map"],
            "extended_not_a_target": novel,
            "held_out_mean_rel_error": float(errors["mean_rel"]),
            "solver_seconds": float(getattr(report, "wall_time", float("nan"))),
        }
        if make_figures:
            _figure(name, solver, labels, plain, extended, math.radians(angle_threshold_deg),
                    output_dir / f"{name}.png", stats)
    write_json_atomic(results, output_dir / "toy2d.json")
    return results


def toy2d_figures(output_dir: str = "toy2d", sets: Sequence[PointSetName] = POINT_SETS, num_points: int = 1000,
                  num_samples: int = 4000, angle_threshold: float = 8.0, radius: float = 0.6, seed: int = 0,
                  time_limit: float = 20.0) -> dict:
    """Solve, sample and draw each point set (module docstring) and print how many samples land
    between modes; :func:`run` with the command's options.

    Parameters
    ----------
    output_dir : str
        folder of the figures (<set>.png) and the numbers (toy2d.json)
    sets : sequence of str
        point sets to solve and draw: 8gaussians, 25gaussians, swissroll
    num_points : int
        targets per point set (at least 2)
    num_samples : int
        samples of the plain and the extended map (at least 1)
    angle_threshold : float
        degrees
    radius : float
        interpolation band, fraction of the farthest runner-up facet distance
    seed : int
        seed of the point sets, the solver and the samples
    time_limit : float
        seconds of OT solve per set

    Returns
    -------
    dict
        Per point set, the numbers of :func:`run`.
    """
    if num_points < 2 or num_samples < 1:
        raise UserInputError("num_points must be >= 2 and num_samples >= 1")
    results = run(list(sets), output_dir, num_points, num_samples, angle_threshold, radius, seed=seed,
                  time_limit=time_limit)
    for name, r in results.items():
        print(f"{name:12s} between modes: plain {100 * r['between_modes_plain']:.2f}%  extended "
              f"{100 * r['between_modes_extended']:.2f}%  new points {100 * r['extended_not_a_target']:.1f}%  "
              f"OT error {100 * r['held_out_mean_rel_error']:.2f}%")
    print(f"figures in {output_dir}/")
    return results


def build_parser() -> CommandParser:
    """``ae-ot toy2d``'s options: the parameters of :func:`toy2d_figures`."""
    return function_parser("ae-ot toy2d", toy2d_figures, description=__doc__)


def main(argv: list[str] | None = None) -> dict:
    return run_function(build_parser(), toy2d_figures, argv)
