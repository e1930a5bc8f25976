"""The semi-discrete problem in the solver's own coordinates: the box [-1, 1]^d, unit-scale targets.

Why: the solution must not depend on where the user's box sits or on its scale. With the user's
box B = [low, high]^d, centre c and half-widths D = diag((high - low) / 2), every source point is
x = c + D u with u in [-1, 1]^d, and

    <x, y_i> + h_i = sigma * ( <u, yhat_i> + hhat_i ) + <u, b> + (terms that do not depend on i...)

exactly, with

    b       = mean_i D y_i                      (the target mean, after the box's scaling)
    sigma   = max_i |D y_i - b|                  (the target spread)
    yhat_i  = (D y_i - b) / sigma                (unit-scale targets, centred at 0)
    hhat_i  = (h_i + <c, y_i>) / sigma           (unit heights)

The term <u, b> is the same for every i, so argmax_i, the cells, their measures and the score
gaps (up to the factor sigma) are those of the unit problem. Translating box and targets, or
scaling both, gives the *same* unit problem: the solver runs identically, and the public heights
move exactly as the maths says (h_i -> h_i - <c, y_i> under a translation by c). The methods
(:mod:`ae_ot.ot.methods`) and the fit driver only ever see a :class:`UnitBoxProblem`.
"""

from __future__ import annotations

import math

import torch

from ae_ot.ot import kernels
from ae_ot.ot.distributed import ShardComm, sharded_topk
from ae_ot.ot.sources import sobol_box, uniform_box

__all__ = ["UnitBoxProblem", "noise_floor", "row_slices", "per_row_float64", "ROW_CHUNK"]

#: rows of targets converted to float64 at a time: per-target quantities are computed in float64
#: without a float64 copy of all the targets
ROW_CHUNK = 1 << 16


def row_slices(num_rows: int, rows: int = ROW_CHUNK):
    """Consecutive slices of at most ``rows`` rows covering ``range(num_rows)``.

    Examples
    --------
    >>> list(row_slices(5, rows=2))
    [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
    """
    return [slice(start, min(start + rows, num_rows)) for start in range(0, num_rows, rows)]


def per_row_float64(points: torch.Tensor, fn) -> torch.Tensor:
    """``fn(block)`` [r] of each block of ``points`` [N, d] in float64, as one [N] float64 tensor,
    without a float64 copy of all the points (:data:`ROW_CHUNK` rows at a time).

    Examples
    --------
    >>> import torch
    >>> per_row_float64(torch.ones(5, 2), lambda block: block.sum(1)).tolist()
    [2.0, 2.0, 2.0, 2.0, 2.0]
    """
    out = torch.empty(points.shape[0], dtype=torch.float64, device=points.device)
    for rows in row_slices(points.shape[0]):
        out[rows] = fn(points[rows].double())
    return out


def noise_floor(weights: torch.Tensor, num_samples: int) -> float:
    """Expected mean relative error of a *perfect* solution measured with ``num_samples`` i.i.d. samples.

    A cell count is Binomial(M, nu_i); for large M, E|c_i / M - nu_i| ~ sqrt(2 / pi) *
    sqrt(nu_i (1 - nu_i) / M). Dividing by nu_i and averaging over cells gives
    (1/N) sum_i sqrt(2/pi) sqrt((1 - nu_i) / (M nu_i)) = sqrt(2/pi) sqrt(N / M) for uniform weights.

    Examples
    --------
    >>> import torch
    >>> round(noise_floor(torch.full((100,), 0.01), num_samples=10000), 3)
    0.079
    """
    nu = weights.double()
    # clamp: a single target's weight may round to 1 + 1e-7 (merged duplicates), and sqrt(-x) is NaN
    return float((math.sqrt(2 / math.pi) * torch.sqrt((1 - nu).clamp_min(0) / (num_samples * nu))).mean())


class UnitBoxProblem:
    """Uniform([-1, 1]^d) to ``sum_i weights_i delta_{targets_i}``, targets centred in the unit ball.

    Parameters
    ----------
    targets : tensor [N_r, d]
        Unit-scale targets yhat (this rank's shard when distributed), float32 or float64.
    weights : tensor [N_r] float64
        Target masses (global sum 1).
    comm : ShardComm
        The ranks sharing the targets (a no-op one in a single process).
    backend, tile_bytes, precision
        Score kernel settings (:func:`ae_ot.ot.kernels.topk_scores`).

    Attributes
    ----------
    num_targets : int
        Global N. ``offset`` is the global index of this rank's first target.
    """

    def __init__(self, targets: torch.Tensor, weights: torch.Tensor, comm: ShardComm, backend: str = "torch",
                 tile_bytes: int | None = None, precision: str = "highest"):
        self.targets = targets
        self.weights = weights.double()
        self.comm = comm
        self.backend = backend
        self.tile_bytes = tile_bytes
        self.precision = precision
        self.offset, self.num_targets = comm.shard_layout(targets.shape[0])
        dim = targets.shape[1]
        self.low = torch.full((dim,), -1.0, dtype=targets.dtype, device=targets.device)
        self.high = torch.full((dim,), 1.0, dtype=targets.dtype, device=targets.device)

    @property
    def dim(self) -> int:
        return self.targets.shape[1]

    @property
    def num_local(self) -> int:
        return self.targets.shape[0]

    @property
    def device(self) -> torch.device:
        return self.targets.device

    # ---- samples -------------------------------------------------------------------------------
    def sobol(self, num_samples: int, seed: int) -> torch.Tensor:
        """A freshly scrambled Sobol set of the unit box, [M, d] (training batches)."""
        return sobol_box(num_samples, self.low, self.high, seed)

    def uniform(self, num_samples: int, generator: torch.Generator) -> torch.Tensor:
        """I.i.d. uniform samples of the unit box, [M, d] (held-out evaluation)."""
        return uniform_box(num_samples, self.low, self.high, generator)

    # ---- scores --------------------------------------------------------------------------------
    def topk(self, u: torch.Tensor, k: int, heights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k of ``<u, yhat_i> + hhat_i`` over all (global) targets: values [M, k], indices [M, k]."""
        heights = heights.to(self.targets.dtype)
        u = u.to(self.targets.dtype)
        if self.comm.enabled:
            return sharded_topk(u, self.targets, heights, self.offset, k, self.comm.group, self.backend,
                                self.tile_bytes, self.precision)
        return kernels.topk_scores(u, self.targets, heights, k, self.backend, self.tile_bytes, self.precision)

    def local_counts(self, cell_index: torch.Tensor, values: torch.Tensor | None = None):
        """Per-local-target sample counts (and sums of ``values``) from global cell indices [M].

        Returns ``(counts [N_r] float64, sums [N_r] float64 or None)``.
        """
        if self.comm.enabled:  # keep the samples whose cell lives on this rank
            local = cell_index - self.offset
            keep = (local >= 0) & (local < self.num_local)
            cell_index = local[keep]
            values = values[keep] if values is not None else None
        counts = torch.bincount(cell_index, minlength=self.num_local).double()
        if values is None:
            return counts, None
        return counts, torch.bincount(cell_index, weights=values.double(), minlength=self.num_local)

    # ---- heights -------------------------------------------------------------------------------
    def center(self, heights: torch.Tensor) -> torch.Tensor:
        """Heights shifted to global mean 0 (the problem is invariant under h -> h + const)."""
        return heights - self.comm.allreduce(heights.sum().reshape(1))[0] / self.num_targets

    def voronoi_heights(self) -> torch.Tensor:
        r"""Heights :math:`\hat h_i = -|\hat y_i|^2 / 2` (centred), whose power cells are the
        nearest-neighbour cells of the unit targets, each inside the box and non-empty
        (:meth:`ae_ot.ot.problem.SemiDiscreteProblem.warm_start` may prefer the user's)."""
        return self.center(-0.5 * per_row_float64(self.targets, lambda y: (y ** 2).sum(1)))

    def chi_square(self, heights: torch.Tensor, u: torch.Tensor) -> float:
        """Unbiased Monte Carlo estimate of the chi-square divergence of the cell masses,

            chi2(m || nu) = sum_i m_i^2 / nu_i - 1 ~ sum_i c_i (c_i - 1) / (M (M - 1) nu_i) - 1,

        from the cell counts c_i of the samples ``u [M, d]`` of the unit box (the pairs of samples
        sharing a cell). 0 at the solution; a few thousand samples rank two height vectors even
        when N is larger, since it counts collisions rather than per-cell errors.
        """
        counts = self.local_counts(self.topk(u, 1, heights)[1][:, 0])[0]
        pairs = self.comm.allreduce((counts * (counts - 1) / self.weights).sum().reshape(1))[0]
        m = u.shape[0]
        return float(pairs) / (m * (m - 1)) - 1.0

    def mean_abs_relative_error(self, counts: torch.Tensor, num_samples: int) -> float:
        """(1/N) sum_i |counts_i / M - nu_i| / nu_i over all ranks."""
        rel = (counts / (num_samples * self.weights) - 1.0).abs().sum().reshape(1)
        return float(self.comm.allreduce(rel)[0]) / self.num_targets

    # ---- held-out errors -----------------------------------------------------------------------
    def cell_counts(self, heights: torch.Tensor, num_samples: int, generator: torch.Generator,
                    chunk: int | None = None) -> torch.Tensor:
        """Counts [N_r] float64 of ``num_samples`` fresh i.i.d. samples per cell, in chunks."""
        counts = torch.zeros(self.num_local, dtype=torch.float64, device=self.device)
        chunk = chunk or max(4096, (64 << 20) // (4 * self.dim))
        done = 0
        while done < num_samples:
            m = min(chunk, num_samples - done)
            cell = self.topk(self.uniform(m, generator), 1, heights)[1][:, 0]
            counts += self.local_counts(cell)[0]
            done += m
        return counts

    def errors_from_measures(self, measures: torch.Tensor, num_samples: int | None) -> dict:
        """The error report of measured cell masses [N_r] float64 (``num_samples`` None: exact masses).

        * ``mean_rel`` = (1/N) sum_i |m_i - nu_i| / nu_i,  ``max_rel`` = max_i |m_i - nu_i| / nu_i,
        * ``l1`` = sum_i |m_i - nu_i|,  ``empty_cells`` = #{i : m_i = 0},
        * ``noise_floor``: the mean_rel a perfect solution would show with these samples
          (:func:`noise_floor`; 0 for exact masses),
        * ``mean_rel_corrected`` = sqrt(max(mean_rel^2 - noise_floor^2, 0)) (approximate: treats
          noise and error as adding in quadrature),
        * ``rms_rel`` = sqrt(mean_i rel_i^2) and ``rms_rel_corrected`` = sqrt(max(mean_i e_i, 0)) with
          e_i = rel_i^2 - m_i (1 - m_i) / ((M - 1) nu_i^2): E[e_i] = (mu_i - nu_i)^2 / nu_i^2
          exactly, since E[m_i (1 - m_i)] = (1 - 1/M) mu_i (1 - mu_i) for a Binomial(M, mu_i) / M
          mass. So the squared RMS error is estimated without bias at *any* sample count: no
          noise floor to sit below, only a spread, ``rms_rel_corrected_se``: its Monte Carlo
          standard error (NaN for exact masses). With m_i = mu_i + eps_i and w_i = 2 (mu_i - nu_i)
          / nu_i^2, e_i - E[e_i] ~ w_i eps_i + (eps_i^2 - E eps_i^2) / nu_i^2, so
          Var(mean_i e_i) ~ [(sum_i w_i^2 mu_i - (sum_i w_i mu_i)^2) / M + sum_i 2 s_i^4] / N^2
          (multinomial eps, whose sum is 0; s_i^2 the cell's relative variance; mu_i estimated by
          m_i), carried through the square root.
        """
        nu = self.weights
        rel = (measures - nu).abs() / nu
        if num_samples is None:
            var_rel = cell_var = torch.zeros_like(nu)
        else:
            var_rel = (1 - nu).clamp_min(0) / (num_samples * nu)  # at the solution: the floor
            cell_var = measures * (1 - measures) / (max(num_samples - 1, 1) * nu ** 2)  # s_i^2, unbiased
        excess = rel ** 2 - cell_var  # e_i
        slope = 2 * (measures - nu) / nu ** 2  # w_i
        sums = self.comm.allreduce(torch.stack([
            rel.sum(), (measures - nu).abs().sum(), (measures == 0).sum().double(), (rel ** 2).sum(),
            excess.sum(), (math.sqrt(2 / math.pi) * var_rel.sqrt()).sum(),
            (~torch.isfinite(measures)).sum().double(), (slope ** 2 * measures).sum(), (slope * measures).sum(),
            (2 * cell_var ** 2).sum()]))
        max_rel = self.comm.allreduce(rel.max().reshape(1), "max")[0]
        n = self.num_targets
        mean_rel, floor = float(sums[0]) / n, float(sums[5]) / n
        mean_excess = float(sums[4]) / n
        rms_corrected = math.sqrt(max(mean_excess, 0.0))
        rms_se = float("nan")
        if num_samples is not None and rms_corrected > 0:
            linear = max(float(sums[7]) - float(sums[8]) ** 2, 0.0) / num_samples
            rms_se = math.sqrt(linear + float(sums[9])) / n / (2 * rms_corrected)  # d sqrt(v) = dv / (2 sqrt(v))
        return {
            "mean_rel": mean_rel,
            "max_rel": float(max_rel),
            "l1": float(sums[1]),
            "empty_cells": int(sums[2]),
            "noise_floor": floor,
            "mean_rel_corrected": math.sqrt(max(mean_rel ** 2 - floor ** 2, 0.0)) if math.isfinite(mean_rel)
            else float("nan"),
            "rms_rel": math.sqrt(float(sums[3]) / n),
            "rms_rel_corrected": rms_corrected,
            "rms_rel_corrected_se": rms_se,
            "eval_samples": num_samples if num_samples is not None else 0,
            "exact": num_samples is None,
        }

    def errors(self, heights: torch.Tensor, num_samples: int, generator: torch.Generator) -> dict:
        """Held-out errors of ``heights`` on ``num_samples`` fresh i.i.d. samples (see
        :meth:`errors_from_measures`)."""
        counts = self.cell_counts(heights, num_samples, generator)
        return self.errors_from_measures(counts / num_samples, num_samples)
