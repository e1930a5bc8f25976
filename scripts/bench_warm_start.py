#!/usr/bin/env python
"""The solver's warm start: the user's nearest-neighbour cells against the unit problem's.

    python scripts/bench_warm_start.py [--repeats 3]

For each problem it prints the chi-square divergence of the two starts' cell masses from the
weights (2^16 common samples; exact areas in 2-D), which one ``SemiDiscreteOT`` picks, and, on
the 2-D problems, the wall time of the user's call ``fit(tol=0.01)`` from each start (exact
areas, so the verdict is exact), alternating the two starts ``--repeats`` times in one process.
The user's cells are forced by setting them as the solution and fitting with
``NewtonOptions(warm_start="current")`` / ``Exact2DOptions(warm_start="current")``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_sdot import gmm, mnist_codes  # noqa: E402

from ae_ot.commands.toy2d import point_set  # noqa: E402
from ae_ot.ot import SemiDiscreteOT, SemiDiscreteSolution  # noqa: E402


def problems() -> dict:
    eight = (point_set("8gaussians", 1000)[0] + 1) / 2
    return {
        "8 Gaussians, N=1000, [0,1]^2": (eight, 0.0, 1.0),
        "same, targets x 255 (pixel scale)": (eight * 255, 0.0, 1.0),
        "same, targets x 1e-6 (a corner)": (eight * 1e-6, 0.0, 1.0),
        "Gaussian mixture, N=2000, d=16": (gmm(2000, 16, 10, 0), 0.0, 1.0),
        "MNIST codes, N=10000, d=16": (mnist_codes() * 2 - 1, -1.0, 1.0),
        "collinear, N=200, d=16": (torch.linspace(0, 1, 200)[:, None] * torch.ones(1, 16), 0.0, 1.0),
    }


def chi_square(ot: SemiDiscreteOT, heights: torch.Tensor) -> float:
    unit = ot.problem.unit
    if ot.problem.exact_measures_available():
        areas = ot.exact_cell_measures(heights)
        return float((areas ** 2 / unit.weights).sum()) - 1
    return unit.chi_square(heights, unit.uniform(1 << 16, torch.Generator().manual_seed(1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    for name, (targets, low, high) in problems().items():
        ot = SemiDiscreteOT(targets, low=low, high=high, seed=0)
        unit, user = ot.problem.unit.voronoi_heights(), ot.problem.nearest_neighbour_heights()
        picked = "unit" if torch.equal(ot.problem.warm_start(0), unit) else "user"
        print(f"{name}: chi2 user cells {chi_square(ot, user):.3g}, unit cells "
              f"{chi_square(ot, unit):.3g}; picked: {picked}", flush=True)
        if targets.shape[1] != 2:
            continue
        for _ in range(args.repeats):
            for start in ("user", "picked"):
                started = time.perf_counter()
                solver = SemiDiscreteOT(targets, low=low, high=high, seed=0)
                options = None
                if start == "user":
                    solver.solution = SemiDiscreteSolution(solver.problem, solver.problem.nearest_neighbour_heights())
                    options = {"warm_start": "current"}
                try:
                    report = solver.fit(tol=0.01, progress=False, options=options)
                    outcome = (f"{report.steps} steps, converged {report.converged}, exact error "
                               f"{solver.errors(exact=True)['mean_rel']:.2e}")
                except ValueError as err:
                    outcome = f"raised: {err}"
                print(f"  fit(tol=0.01) from the {start} start: {time.perf_counter() - started:.2f} s, {outcome}",
                      flush=True)


if __name__ == "__main__":
    main()
