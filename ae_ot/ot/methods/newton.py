"""``method="default"``: stochastic diagonal (or sparse) Newton steps with iterate averaging.

Each step draws a *fresh* scrambled Sobol batch of M samples of the unit box (seed derived from
(seed, step), so a run resumes exactly), scores them against all targets keeping the top 2, and
forms

* the mass estimate  m_i = #{u in W_i} / M  (gradient g_i = m_i - nu_i),
* the mean score gap  G_i = mean_{u in W_i} (s_(1)(u) - s_(2)(u))  (exponential moving average;
  after a 20-step warm-up only every 8th step scores the top 2 for it, the others the cheaper
  top 1: the gaps set a slowly changing curvature estimate, see ``NewtonOptions.gap_every``).

The Hessian diagonal of E is the facet measure sum_j |F_ij| / |y_i - y_j|. For a cell of mass m_i
the score gap of a point grows linearly with its distance to the boundary, so
H_ii ~ kappa * m_i / G_i with kappa = d / (d + 1) (exact for a ball-shaped cell, and exact in 1-D
up to a factor 2). The step h_i -= lr * g_i / H_ii therefore reads

    h_i  <-  h_i - (lr / kappa) * (m_i / nu_i - 1) * G_i,

relative mass error times the cell's typical score gap: scale free, no tuning per problem. (The
implementation uses max(m_i, nu_i) in place of nu_i so oversized cells take bounded steps.)

In low dimension (d <= 3) a diagonal step is badly conditioned (a 1-D chain or 2-D mesh of
cells), so the step is a damped Newton step with an *estimated sparse Hessian* instead: the
samples whose top-2 gap is below delta (the 10% quantile of the batch) lie in slabs around the
facets, so #{gap < delta, top-2 = {i, j}} / (2 M delta) estimates the facet weight
|F_ij| / |y_i - y_j|; an EMA of these weights forms a graph Laplacian L and the step solves
(L + ridge D) s = g by Jacobi-preconditioned conjugate gradients (the estimated-Hessian analogue
of the damped Newton method of Kitagawa, Mérigot and Thibert, JEMS 2019). Cells that receive no
sample are lifted by exactly the height that makes them win at their best sample (empty-cell
rescue). The reported heights are a polynomial-decay average of the iterates
(hbar_t = hbar_{t-1} + (eta + 1) / (t + eta) * (h_t - hbar_{t-1}), Shamir and Zhang, ICML 2013),
which removes the noise plateau of a constant step while forgetting the warm-up. Warm start: the
Voronoi diagram h_i = -|y_i|^2 / 2 (power cells = nearest-neighbour cells).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from ae_ot.checks import UserInputError
from ae_ot.ot.methods.base import MethodState, SolverMethod, check_warm_start
from ae_ot.ot.sources import derive_seed

__all__ = ["NewtonOptions", "NewtonState", "NewtonMethod", "TRAIN_STREAM"]

#: seed stream of the training batches: derive_seed(seed, TRAIN_STREAM, step)
TRAIN_STREAM = 1

# Constants of the algorithm (compared in docs/benchmarks.md).
#: sparse Hessian: the samples whose top-2 gap is below this quantile of the batch estimate the facet weights
PAIR_QUANTILE = 0.1
#: sparse Hessian: at most this many conjugate-gradient iterations per step
CG_ITERS = 200
#: sparse Hessian: its diagonal is at least DEG_FLOOR x the diagonal estimate (a cell whose facets left
#: the estimate never takes a 1 / ridge times larger step)
DEG_FLOOR = 0.25
#: a cell with no sample this step is lifted into the box when its mass EMA is below RESCUE_FRAC x nu_i
RESCUE_FRAC = 0.25
#: diagonal step: the first LR_WARMUP steps take half the step size (the gap EMA holds few samples)
LR_WARMUP = 10
#: growing batches: the batch doubles every BATCH_DOUBLE steps, from max(2^13, batch_size / 4) to batch_size
BATCH_DOUBLE = 8


@dataclass(frozen=True)
class NewtonOptions:
    """Options of ``method="default"``.

    Attributes
    ----------
    warm_start : {"voronoi", "zeros", "current"}
        First iterate: the Voronoi diagram h_i = -|y_i|^2 / 2 (of the user's coordinates when
        every target lies in the box, else of the unit problem's; see
        :meth:`~ae_ot.ot.unit_problem.UnitBoxProblem.voronoi_heights`), zeros (as AE-OT), or the
        solver's present heights (continue a solve).
    hessian : {"auto", "diag", "sparse"}
        Newton step with the diagonal Hessian estimate or the estimated sparse facet Laplacian;
        "auto" picks "sparse" for d <= 3 in a single process, else "diag".
    eta : float or None
        Iterate averaging hbar_t = hbar_{t-1} + (eta + 1) / (t + eta) (h_t - hbar_{t-1}): iterate t
        gets a weight ~ t^eta. None: 1 with the diagonal step, 3 with the sparse Hessian. The
        average's effective sample size is (eta + 1)^2 / (2 eta + 1) x the steps taken (0.75 for
        eta = 1, 0.44 for eta = 3); the damped sparse-Newton step (d <= 3) moves its iterates less
        per step, so they stay correlated with the warm-up for longer, hence the larger eta there
        (choices compared in docs/benchmarks.md).
    beta : float
        EMA factor of the per-cell mass and gap statistics, in [0, 1).
    ridge : float
        Sparse Hessian: (L + ridge * D) s = g (damping towards the diagonal step).
    gap_every : int
        Diagonal step: after the first ``gap_warmup`` steps, score the top 2 (for the gap
        statistics) only every this many steps, the top 1 (masses only) on the others. The gaps
        set the curvature estimate, which settles after the warm-up; the masses set the step.
        1: every step.
    gap_warmup : int
        Steps that all score the top 2 (see ``gap_every``; the defaults are compared in
        docs/benchmarks.md).

    Examples
    --------
    >>> NewtonOptions(hessian="diag").hessian
    'diag'
    """

    warm_start: Literal["voronoi", "zeros", "current"] = "voronoi"
    hessian: Literal["auto", "diag", "sparse"] = "auto"
    eta: float | None = None
    beta: float = 0.9
    ridge: float = 0.05
    gap_every: int = 8
    gap_warmup: int = 20

    def __post_init__(self):
        check_warm_start(self.warm_start)
        if self.hessian not in ("auto", "diag", "sparse"):
            raise UserInputError(f"hessian must be 'auto', 'diag' or 'sparse', got {self.hessian!r}")
        if self.eta is not None and not self.eta >= 0:
            raise UserInputError(f"eta must be >= 0 or None, got {self.eta!r}")
        for name in ("ridge", "gap_warmup"):
            if not getattr(self, name) >= 0:
                raise UserInputError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 <= self.beta < 1:
            raise UserInputError(f"beta must be in [0, 1), got {self.beta!r}")
        if int(self.gap_every) < 1:
            raise UserInputError(f"gap_every must be a positive integer, got {self.gap_every!r}")


@dataclass
class NewtonState(MethodState):
    """State of ``method="default"`` (tensors float64 [N_r]).

    Attributes
    ----------
    averaged : tensor
        The averaged iterate hbar (the reported heights).
    mass_ema, gap_mass_ema, gap_ema : tensor
        EMAs of the per-sample cell masses (every step), and of the masses and score gaps on the
        steps that score the top 2; gap_ema / gap_mass_ema is the mean gap G_i.
    facet_keys : tensor int64 or None; facet_weights : tensor or None
        Sparse Hessian: EMA of the facet weights w_ij, keyed i * N + j (i < j).
    """

    method: ClassVar[str] = "default"
    averaged: torch.Tensor | None = None
    mass_ema: torch.Tensor | None = None
    gap_mass_ema: torch.Tensor | None = None
    gap_ema: torch.Tensor | None = None
    facet_keys: torch.Tensor | None = None
    facet_weights: torch.Tensor | None = None


class NewtonMethod(SolverMethod):
    """Stochastic diagonal / sparse Newton steps with iterate averaging (see the module docstring)."""

    name = "default"
    Options = NewtonOptions
    State = NewtonState
    default_max_steps = 2000
    iterate_keys = ("heights", "averaged")

    @property
    def sparse_hessian(self) -> bool:
        mode = self.options.hessian
        if mode == "auto":
            # The estimated sparse Hessian (facet graph Laplacian) matters where a diagonal step is
            # badly conditioned: low dimension (a 1-D chain or 2-D mesh of cells has condition
            # number ~N^(2/d)). In high dimension the slab estimator is noisy (many facets per
            # cell), while the diagonal step is well conditioned there.
            # Single process only (the CG solve is not sharded).
            return self.problem.dim <= 3 and not self.problem.comm.enabled
        return mode == "sparse"

    def default_lr(self) -> float:
        # A full diagonal Newton step (lr 1) in d > 3, where the facet graph is well connected;
        # the damped sparse-Newton step takes 0.5.
        return 0.5 if self.sparse_hessian else 1.0

    def default_batch_size(self) -> int:
        """A power of two ~ 8 N in [2^13, cap]: cap = 2^16 on CPU, 2^18 on CUDA.

        The relative noise of a cell count is sqrt(N / M) per step; with M ~ 8 N (noise ~ 35%)
        the diagonal step is stable.
        """
        cap = 1 << 18 if self.problem.device.type == "cuda" else 1 << 16
        return int(min(cap, max(1 << 13, 1 << math.ceil(math.log2(8 * self.problem.num_targets)))))

    def init_state(self, warm, current, batch_size):
        problem = self.problem
        zeros = torch.zeros(problem.num_local, dtype=torch.float64, device=problem.device)
        first = self.first_iterate(warm, current)
        return NewtonState(batch_size=batch_size, heights=first, averaged=first.clone(), mass_ema=zeros.clone(),
                           gap_mass_ema=zeros.clone(), gap_ema=zeros.clone())

    def solution(self, state):
        return state.averaged

    def batch_at(self, step: int, batch_size: int) -> int:
        """Growing batches: ``min(batch_size, start * 2^(step // BATCH_DOUBLE))`` with
        ``start = max(2^13, batch_size / 4)``: cheap steps while the error is far above the per-step
        noise, full batches once it is not (a function of the step only, so a resumed run draws the
        same batches)."""
        start = max(1 << 13, batch_size // 4)
        if start >= batch_size:
            return batch_size
        return int(min(batch_size, start << min(40, step // BATCH_DOUBLE)))

    def step(self, state, lr):
        problem, opts = self.problem, self.options
        t = state.step
        m = self.batch_at(t, state.batch_size)
        if t < LR_WARMUP and not self.sparse_hessian:
            lr = 0.5 * lr  # the gap EMA holds few samples yet
        u = problem.sobol(m, derive_seed(self.seed, TRAIN_STREAM, t))
        heights = state.heights
        state.samples += m
        if problem.num_targets == 1:
            return {"train_mean_rel": 0.0}
        # The top 2 only where the gap statistics are updated (see NewtonOptions.gap_every); the
        # other steps score the cheaper top 1.
        with_gaps = self.sparse_hessian or t < opts.gap_warmup or (t - opts.gap_warmup) % opts.gap_every == 0
        top_values, top_index = problem.topk(u, 2 if with_gaps else 1, heights)
        gaps = top_values[:, 0] - top_values[:, 1] if with_gaps else None
        counts, gap_sums = problem.local_counts(top_index[:, 0], gaps)
        # EMA of the per-sample mass and gap densities; the first step initialises them. The gap
        # density's own mass EMA ("gap_mass_ema") is updated on the same steps, so their ratio,
        # the mean gap per cell, is one window's.
        b = min(opts.beta, t / (t + 1.0))
        mass_ema_before = state.mass_ema.clone()
        state.mass_ema.mul_(b).add_(counts / m, alpha=1 - b)
        gap_mass_ema = state.gap_mass_ema
        if with_gaps:
            gap_mass_ema.mul_(b).add_(counts / m, alpha=1 - b)
            state.gap_ema.mul_(b).add_(gap_sums / m, alpha=1 - b)
        mass_ema, gap_ema = state.mass_ema, state.gap_ema
        mean_gap = torch.where(gap_mass_ema > 0, gap_ema / gap_mass_ema.clamp_min(1e-300), torch.zeros_like(gap_ema))
        # Cells never seen yet, or seen only at exact float ties (gap 0, which would make the
        # Hessian estimate infinite): borrow the median typical gap so they still move.
        valid = mean_gap > 0
        if not bool(valid.all()):
            fill = mean_gap[valid].median() if bool(valid.any()) else torch.ones((), dtype=gap_ema.dtype,
                                                                                 device=gap_ema.device)
            mean_gap = torch.where(valid, mean_gap, fill)
        nu = problem.weights
        train_error = problem.mean_abs_relative_error(counts, m)
        masses = counts / m
        # Blow-up guard: if the iterate's batch error jumps well above the best seen so far (or is
        # not a number), go back to the best step's iterate and halve the step size (a safety net).
        best = state.best_train_error
        if not math.isfinite(train_error) or train_error > 2.0 * best + 0.1:
            if self.recover(state):
                return {"train_mean_rel": train_error, "restarted": True, "top_k": 2 if with_gaps else 1}
        self.remember_best(state, train_error)
        lr = lr * state.lr_scale
        kappa = problem.dim / (problem.dim + 1.0)
        # Newton step g_i / H_ii with H_ii = kappa * max(mass_i, nu_i) / G_i: the curvature of an
        # oversized cell grows with its mass, so its step is (m - nu) / m * G / kappa (bounded),
        # not rel * G / kappa (which overshoots).
        gradient = masses - nu
        hessian_diag = kappa * torch.maximum(mass_ema, nu) / mean_gap
        if self.sparse_hessian:
            self.update_facet_weights(state, top_index, gaps, m, b)
            direction = self.sparse_newton_direction(state, gradient, hessian_diag)
        else:
            direction = gradient / hessian_diag
        heights = heights - lr * direction
        # Rescue empty cells: a cell without samples gets no curvature information, and with a
        # Voronoi warm start it may lie far outside the box. Raise h_i by exactly the amount that
        # makes it win at its best sample, min_u (s_(1)(u) - s_i(u)) -- cheap, O(M * #empty * d).
        # only cells that have been (nearly) empty for a while, not by chance
        starving = (counts == 0) & (mass_ema_before <= RESCUE_FRAC * nu)
        empty = starving.nonzero().flatten()
        if empty.numel():
            lift = self.rescue_lift(u, top_values[:, 0], state.heights, empty)
            heights = heights.index_add(0, empty, lift)
            # The average jumps with the iterate, or it would drag the cell back out for many steps.
            state.averaged = state.averaged.index_add(0, empty, lift)
        heights = problem.center(heights)
        state.heights = heights
        eta = opts.eta if opts.eta is not None else (3.0 if self.sparse_hessian else 1.0)
        weight = (eta + 1.0) / (t + 1.0 + eta)
        state.averaged = state.averaged + weight * (heights - state.averaged)
        # train_mean_rel: training-batch error at the iterate (not held out)
        return {"train_mean_rel": train_error, "top_k": 2 if with_gaps else 1}

    def rescue_lift(self, u, best_scores, heights, empty):
        """For each empty local cell e: min_u (s_(1)(u) - s_e(u)) >= 0, the lift that makes it win once."""
        problem = self.problem
        scoring_heights = heights.to(problem.targets.dtype)
        lift = torch.zeros(empty.numel(), dtype=torch.float64, device=heights.device)
        for start in range(0, empty.numel(), 256):
            cells = empty[start:start + 256]
            scores = torch.addmm(scoring_heights[cells], u.to(problem.targets.dtype), problem.targets[cells].T)
            lift[start:start + 256] = (best_scores[:, None] - scores).min(0).values.double().clamp_min(0)
        return lift

    def update_facet_weights(self, state, top_index, gaps, m: int, b: float) -> None:
        """EMA of facet weights w_ij ~ |F_ij| / |y_i - y_j| from the samples nearest to a facet.

        The samples whose top-2 gap is below delta lie in a slab of width delta / |y_i - y_j| on
        both sides of the facet between their best and second-best cells, so
        w_ij ~ #{gap < delta, top-2 = {i, j}} / (2 M delta). delta = q-quantile of the batch's gaps.
        Stored as ``facet_keys`` (i * N + j, i < j) and ``facet_weights``.
        """
        n = self.problem.num_targets
        kth = max(1, int(PAIR_QUANTILE * m))
        delta = float(gaps.kthvalue(kth).values.clamp_min(1e-12))
        near = gaps <= delta
        first, second = top_index[near, 0], top_index[near, 1]
        keys = torch.minimum(first, second) * n + torch.maximum(first, second)
        unique_keys, counts = torch.unique(keys, return_counts=True)
        weights = counts.double() / (2 * m * delta)
        if state.facet_keys is None or b == 0.0:
            state.facet_keys, state.facet_weights = unique_keys, weights
            return
        all_keys = torch.cat([state.facet_keys, unique_keys])
        all_weights = torch.cat([state.facet_weights * b, weights * (1 - b)])
        merged_keys, inverse = torch.unique(all_keys, return_inverse=True)
        merged = torch.zeros(merged_keys.numel(), dtype=torch.float64, device=all_weights.device)
        merged.index_add_(0, inverse, all_weights)
        keep = merged > merged.max() * 1e-6  # forget facets not seen for a long time
        state.facet_keys, state.facet_weights = merged_keys[keep], merged[keep]

    def sparse_newton_direction(self, state, gradient, hessian_diag):
        """Solve (L + ridge * D) s = g by Jacobi-preconditioned CG; L = estimated facet Laplacian."""
        opts = self.options
        n = self.problem.num_targets
        cell_a, cell_b = state.facet_keys // n, state.facet_keys % n
        weights = state.facet_weights
        degree = torch.zeros(n, dtype=torch.float64, device=gradient.device)
        degree.index_add_(0, cell_a, weights).index_add_(0, cell_b, weights)
        # degree_i and hessian_diag_i both estimate H_ii. A cell whose facets drop out of the
        # estimate (degree -> 0) would take the step g_i / (ridge * diag_i), 1 / ridge times the
        # diagonal Newton step: the degree is floored at DEG_FLOOR x the diagonal estimate.
        diagonal = torch.maximum(degree, DEG_FLOOR * hessian_diag) + opts.ridge * hessian_diag

        def matvec(p):
            out = diagonal * p
            out.index_add_(0, cell_a, -weights * p[cell_b]).index_add_(0, cell_b, -weights * p[cell_a])
            return out

        solution = torch.zeros_like(gradient)
        residual = gradient.clone()
        preconditioned = residual / diagonal
        search = preconditioned.clone()
        rz = float(residual @ preconditioned)
        gradient_norm = float(gradient.norm())
        for _ in range(CG_ITERS):
            applied = matvec(search)
            alpha = rz / max(float(search @ applied), 1e-300)
            solution.add_(search, alpha=alpha)
            residual.sub_(applied, alpha=alpha)
            if float(residual.norm()) < 1e-3 * gradient_norm:
                break
            preconditioned = residual / diagonal
            rz_new = float(residual @ preconditioned)
            search = preconditioned + (rz_new / max(rz, 1e-300)) * search
            rz = rz_new
        return solution
