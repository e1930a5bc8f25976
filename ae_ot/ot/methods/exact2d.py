"""``method="exact2d"``: damped Newton with exact cell areas and the exact Hessian, in 2-D.

In 2-D the cells are convex polygons (:mod:`ae_ot.ot.geometry2d`), so the gradient
g_i = mu(W_i) - nu_i and the Hessian of the dual energy are known exactly:

    dmu_i / dh_j = -|F_ij| / |y_i - y_j|   (i != j, F_ij the facet between W_i and W_j),
    dmu_i / dh_i = sum_{j != i} |F_ij| / |y_i - y_j|,

a weighted graph Laplacian L of the facet graph (box area normalised to 1). Each step solves
L d = nu - mu (a sparse direct solve, one cell grounded since L 1 = 0) and takes the damped step
h <- h + alpha d with the largest alpha = 2^-l such that every cell keeps at least
eps_0 = min(min_i mu_i(h_0), min_i nu_i) / 2 and ||mu - nu|| decreases by a factor (1 - alpha / 2):
the damped Newton algorithm of Kitagawa, Mérigot and Thibert (J. Eur. Math. Soc. 2019), which
converges globally and quadratically near the solution. No Monte Carlo noise: the solve reaches
machine precision in a few dozen steps; each step costs a few O(N log N) diagram computations.

Empty cells (a target whose cell misses the box) are lifted first: the lift that makes cell i win
somewhere in the box is min_x (u(x) - s_i(x)), a convex piecewise linear function whose minimum
over the box lies at a vertex of the diagram.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch

from ae_ot.checks import UserInputError
from ae_ot.ot.geometry2d import power_diagram_2d
from ae_ot.ot.methods.base import MethodState, SolverMethod, check_warm_start

__all__ = ["Exact2DOptions", "Exact2DState", "Exact2DMethod"]

UNIT_BOX_AREA = 4.0  # the unit problem's box is [-1, 1]^2


@dataclass(frozen=True)
class Exact2DOptions:
    """Options of ``method="exact2d"``.

    Attributes
    ----------
    warm_start : {"voronoi", "zeros", "current"}
        First iterate (as for ``method="default"``).
    max_halvings : int
        Line search: at most this many halvings of the step per Newton step.
    precision : float
        The method stops by itself once max_i |mu_i - nu_i| / nu_i is below this (floating point
        noise; 0 turns the rule off).

    Examples
    --------
    >>> Exact2DOptions(max_halvings=10).max_halvings
    10
    """

    warm_start: Literal["voronoi", "zeros", "current"] = "voronoi"
    max_halvings: int = 30
    precision: float = 1e-9

    def __post_init__(self):
        check_warm_start(self.warm_start)
        if int(self.max_halvings) < 1:
            raise UserInputError(f"max_halvings must be a positive integer, got {self.max_halvings!r}")
        if not self.precision >= 0:
            raise UserInputError(f"precision must be >= 0, got {self.precision!r}")


@dataclass
class Exact2DState(MethodState):
    """State of ``method="exact2d"``: ``min_measure``, the least mass a line search lets a cell keep."""

    method: ClassVar[str] = "exact2d"
    min_measure: float = 0.0


class Exact2DMethod(SolverMethod):
    """Damped Newton with exact 2-D geometry (see the module docstring)."""

    name = "exact2d"
    Options = Exact2DOptions
    State = Exact2DState
    default_max_steps = 200
    step_top_k = 0  # the exact 2-D power diagram, no score kernel

    def __init__(self, problem, options=None, seed: int = 0):
        super().__init__(problem, options, seed)
        if problem.dim != 2 or problem.comm.enabled:
            raise UserInputError(f"method='exact2d' needs a 2-D problem in one process; this one has d = {problem.dim}"
                                 f"{' and is sharded' if problem.comm.enabled else ''}; use method='default'")
        self._diagram_of = None  # (heights tensor, diagram) cache of the last computation

    def default_lr(self) -> float:
        return 1.0

    def default_batch_size(self) -> int:
        return 1  # no samples: the geometry is exact

    def diagram(self, heights: torch.Tensor):
        if self._diagram_of is not None and torch.equal(self._diagram_of[0], heights):
            return self._diagram_of[1]
        diagram = power_diagram_2d(self.problem.targets, heights, -1.0, 1.0)
        self._diagram_of = (heights.clone(), diagram)
        return diagram

    def init_state(self, warm, current, batch_size):
        first = self.lift_empty_cells(self.first_iterate(warm, current))
        measures = self.diagram(first).areas / UNIT_BOX_AREA
        min_measure = min(float(measures.min()), float(self.problem.weights.min())) / 2
        return Exact2DState(batch_size=batch_size, heights=first, min_measure=min_measure)

    def lift_empty_cells(self, heights: torch.Tensor, rounds: int = 50) -> torch.Tensor:
        """Raise the heights of empty cells until every cell has a positive area."""
        y = self.problem.targets.double().cpu().numpy()
        h = heights.double().cpu().numpy().copy()
        for _ in range(rounds):
            diagram = self.diagram(torch.from_numpy(h))
            empty = np.flatnonzero(diagram.areas <= 0)
            if empty.size == 0:
                break
            vertices = diagram.vertices
            upper = (vertices @ y.T + h).max(1)  # u(x) at every vertex
            # Lift each empty cell to win at its best vertex, by a margin of 1% of the spread of
            # the scores there, so it gets a small positive area.
            margin = 0.01 * float(np.ptp(upper) + 1e-12)
            for i in empty:
                h[i] += float((upper - (vertices @ y[i] + h[i])).min()) + margin
        else:
            raise UserInputError("method='exact2d' could not give every cell a positive area; use method='default'")
        return self.problem.center(torch.from_numpy(h).to(heights.device))

    def errors(self, measures: np.ndarray) -> tuple[np.ndarray, float]:
        nu = self.problem.weights.cpu().numpy()
        gradient = measures - nu
        return gradient, float(np.linalg.norm(gradient))

    def step(self, state, lr):
        from scipy.sparse import coo_matrix
        from scipy.sparse.linalg import spsolve

        problem = self.problem
        heights = state.heights
        diagram = self.diagram(heights)
        measures = diagram.areas / UNIT_BOX_AREA
        gradient, norm = self.errors(measures)
        nu = problem.weights.cpu().numpy()
        y = problem.targets.double().cpu().numpy()
        a, b = diagram.facet_cells[:, 0], diagram.facet_cells[:, 1]
        weights = diagram.facet_lengths / (np.linalg.norm(y[a] - y[b], axis=1) * UNIT_BOX_AREA)
        n = problem.num_local
        rows = np.concatenate([a, b, a, b])
        cols = np.concatenate([b, a, a, b])
        vals = np.concatenate([-weights, -weights, weights, weights])
        laplacian = coo_matrix((vals, (rows, cols)), shape=(n, n)).tocsc()
        # L 1 = 0: ground cell 0 (d_0 = 0), a shift of all heights changes nothing.
        direction = np.zeros(n)
        direction[1:] = spsolve(laplacian[1:, 1:], -gradient[1:])
        direction = torch.from_numpy(direction).to(heights.device)
        alpha = lr * state.lr_scale
        for _ in range(self.options.max_halvings):
            trial = problem.center(heights + alpha * direction)
            trial_measures = self.diagram(trial).areas / UNIT_BOX_AREA
            _, trial_norm = self.errors(trial_measures)
            if trial_measures.min() >= state.min_measure and trial_norm <= (1 - alpha / 2) * norm:
                break
            alpha /= 2
        else:  # no acceptable step: keep the iterate (the driver's clock or max_steps ends the run)
            return {"train_mean_rel": float(np.mean(np.abs(gradient) / nu)), "step_size": 0.0}
        state.heights = trial
        max_rel = float(np.max(np.abs(trial_measures - nu) / nu))
        return {"train_mean_rel": float(np.mean(np.abs(trial_measures - nu) / nu)), "step_size": alpha,
                "converged": self.options.precision > 0 and max_rel < self.options.precision, "stop_reason": "precision"}
