"""Semi-discrete optimal transport from the uniform measure on a box to a weighted point cloud.

Problem
-------
Source mu: uniform on the box B = [low, high]^d. Targets y_i in R^d with weights nu_i > 0,
sum_i nu_i = 1. Heights h in R^N define the power cells

    W_i(h) = { x in B : <x, y_i> + h_i >= <x, y_j> + h_j  for all j }

and the Brenier potential u_h(x) = max_i <x, y_i> + h_i whose gradient T(x) = y_{i(x)} is the
transport map. **Contract: the cell of x is argmax_i <x, y_i> + h_i.** The convex energy

    E(h) = int_B u_h dmu - sum_i h_i nu_i,      grad_i E = mu(W_i(h)) - nu_i,

is invariant under h -> h + c (heights are reported with mean 0). Solving means every cell holds
exactly its weight (Aurenhammer, Hoffmann and Aronov, Algorithmica 1998; Gu, Luo, Sun and Yau,
Asian J. Math. 2016; An et al., ICLR 2020).

This module is the problem and its queries: targets, weights, box, heights, ``assign``,
``transport``, ``topk``, ``cell_measures``, ``errors``, state and I/O. Internally everything runs
on the equivalent problem on [-1, 1]^d with centred unit-scale targets
(:mod:`ae_ot.ot.unit_problem`), so the solution does not depend on where the box sits or on its
scale. Solving is :meth:`SemiDiscreteOT.fit`: the driver in :mod:`ae_ot.ot.fitting` with a method
of :mod:`ae_ot.ot.methods`.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch

from ae_ot.checks import UserInputError, require_int_at_least
from ae_ot.io import atomic_torch_save, read_torch_file
from ae_ot.ot import kernels
from ae_ot.ot.distributed import ShardComm
from ae_ot.ot.duplicates import merge_duplicates
from ae_ot.ot.fitting import FitReport, run_fit
from ae_ot.ot.sources import as_box, derive_seed, uniform_box
from ae_ot.ot.unit_problem import UnitBoxProblem, per_row_float64, row_slices

__all__ = ["SemiDiscreteOT", "FORMAT_VERSION", "PUBLIC_STREAM"]

#: checkpoint format: 2 stores the fit state in unit-box coordinates (1 stored it in the user's)
FORMAT_VERSION = 2
#: seed stream of the samples of the public cell_measures() / errors()
PUBLIC_STREAM = 4
#: seed stream of the samples that pick the warm start (_choose_warm_start)
PROBE_STREAM = 6


class SemiDiscreteOT:
    """Semi-discrete OT from Uniform([low, high]^d) to ``sum_i weights_i delta_{targets_i}``.

    Parameters
    ----------
    targets : tensor [N, d]
        Target points (CPU or CUDA). Integer tensors are converted to float32; float64 is kept.
    weights : tensor [N], optional
        Target masses, positive and summing to 1 (uniform if omitted).
    low, high : float or tensor [d]
        Box corners of the uniform source measure.
    backend : {"auto", "torch", "fused", "keops"}
        Score kernel (see :func:`ae_ot.ot.kernels.resolve_backend`).
    seed : int
        Every random draw of ``fit`` derives from (seed, stream, step).
    tile_bytes : int, optional
        Memory budget of one score tile.
    precision : {"highest", "tf32"}
        CUDA matmul precision (TF32 inputs, float32 accumulation) for the torch backend.
    merge_duplicates : bool
        Merge identical targets (summing their weights, with a warning); ``merged_index`` [N_in]
        maps every input row to its row in ``targets``.
    distributed : bool or ProcessGroup
        Targets sharded over ``torch.distributed`` ranks: ``targets``/``weights`` are this rank's
        shard, ``heights`` is this rank's shard, ``num_targets`` the global N. All ranks must call
        every method collectively with the same samples.

    Attributes
    ----------
    heights : tensor [N]
        The solution: cell of x = argmax_i <x, y_i> + h_i. Mean 0.
    report : FitReport or None
        The last fit's report.
    unit : UnitBoxProblem
        The same problem on [-1, 1]^d with unit-scale targets, which the solver works on.

    References
    ----------
    An, Guo, Lei, Luo, Yau and Gu, "AE-OT: a new generative model based on extended semi-discrete
    optimal transport", ICLR 2020.
    """

    def __init__(self, targets: torch.Tensor, weights: torch.Tensor | None = None, low=0.0, high=1.0,
                 backend: str = "auto", seed: int = 0, *, tile_bytes: int | None = None,
                 precision: str = "highest", merge_duplicates: bool = True, distributed=False):
        if not isinstance(targets, torch.Tensor):
            targets = torch.as_tensor(targets)
        targets = targets.detach()  # the solver never differentiates through its targets
        if targets.dim() != 2:
            raise UserInputError(f"targets must be a 2-D tensor [N, d], got shape {tuple(targets.shape)}")
        if targets.dtype not in (torch.float32, torch.float64):
            targets = targets.float()
        self.comm = ShardComm(distributed)
        n_local, d = targets.shape
        if d == 0:
            raise UserInputError("targets have dimension d = 0")
        if not self.comm.enabled and n_local == 0:
            raise UserInputError("targets are empty (N = 0): need at least one target point")
        if not torch.isfinite(targets).all():
            bad = (~torch.isfinite(targets)).any(1).nonzero().flatten()
            raise UserInputError(f"targets contain NaN or Inf in {bad.numel()} row(s), first at row {int(bad[0])}")
        if precision not in ("highest", "tf32"):
            raise UserInputError(f"precision must be 'highest' or 'tf32', got {precision!r}")
        weights = self._check_weights(weights, n_local, targets.device)
        self.merged_index = None
        if merge_duplicates and n_local > 1:
            targets, weights = self._merge_duplicates(targets, weights)
        self.targets = targets
        self.weights = weights.to(targets.dtype)
        self.low, self.high = as_box(low, high, d, device=targets.device, dtype=targets.dtype)
        self.dim = d
        self.seed = int(seed)
        self.backend = kernels.resolve_backend(backend, targets.device, d)
        self._backend_arg = backend
        self.tile_bytes = tile_bytes
        self.precision = precision
        self._build_unit_problem(weights)
        self._unit_heights = self.unit.voronoi_heights()  # warm start: nearest-neighbour cells
        self.report: FitReport | None = None
        self.fit_state: dict | None = None
        #: what a checkpoint of the current fit must agree on to be resumed (see ae_ot.ot.fitting.fit_signature)
        self.fit_signature: dict | None = None

    # ---- construction ----------------------------------------------------------------------------
    def _check_weights(self, weights, n_local: int, device) -> torch.Tensor:
        if weights is None:
            n_total = self.comm.sum_int(n_local)
            if n_total == 0:
                raise UserInputError("targets are empty (N = 0): need at least one target point")
            return torch.full((n_local,), 1.0 / n_total, dtype=torch.float64, device=device)
        weights = torch.as_tensor(weights).detach().to(device)
        if weights.shape != (n_local,):
            raise UserInputError(f"weights must have shape [{n_local}], got {tuple(weights.shape)}")
        weights = weights.double()
        if not torch.isfinite(weights).all():
            raise UserInputError("weights contain NaN or Inf")
        if (weights < 0).any():
            i = int((weights < 0).nonzero()[0])
            raise UserInputError(f"weights must be non-negative; weight {i} is {float(weights[i])}")
        if (weights == 0).any():
            i = int((weights == 0).nonzero()[0])
            raise UserInputError(f"weights must be positive (a zero-weight target has no cell; drop it); "
                                 f"weight {i} is 0")
        total = self.comm.sum_float(float(weights.sum()))
        if abs(total - 1.0) > 1e-4:
            raise UserInputError(f"weights must sum to 1, they sum to {total:.9g}; pass weights / weights.sum()")
        return weights / total

    def _merge_duplicates(self, targets, weights):
        unique, merged_weights, index = merge_duplicates(targets, weights)
        if unique.shape[0] == targets.shape[0]:
            return targets, weights
        self.merged_index = index
        warnings.warn(f"{targets.shape[0] - unique.shape[0]} duplicate target(s) merged ({targets.shape[0]} -> "
                      f"{unique.shape[0]} targets), their weights summed; see `merged_index`", stacklevel=3)
        return unique, merged_weights

    def _build_unit_problem(self, weights: torch.Tensor) -> None:
        """x = c + D u with u in [-1, 1]^d; yhat_i = (D y_i - b) / sigma (see :mod:`ae_ot.ot.unit_problem`)."""
        # In float64, a block of rows at a time (row_slices): no float64 copy of all the targets.
        targets, n_local = self.targets, self.targets.shape[0]
        self.box_centre = (self.low.double() + self.high.double()) / 2          # c [d]
        self.box_half_width = (self.high.double() - self.low.double()) / 2      # diag(D) [d]
        scaled_sum = torch.zeros(self.dim, dtype=torch.float64, device=targets.device)
        for rows in row_slices(n_local):
            scaled_sum += (targets[rows].double() * self.box_half_width).sum(0)
        num_targets = self.comm.sum_int(n_local)
        self.target_mean = self.comm.allreduce(scaled_sum) / num_targets        # b [d]
        spread = torch.zeros((), dtype=torch.float64, device=targets.device)
        for rows in row_slices(n_local):
            spread = torch.maximum(spread, (targets[rows].double() * self.box_half_width - self.target_mean)
                                   .norm(dim=1).max())
        spread = float(self.comm.allreduce(spread.reshape(1), "max")[0])
        self.target_spread = spread if spread > 0 else 1.0                      # sigma (1 when N = 1)
        unit_targets = torch.empty_like(targets)
        for rows in row_slices(n_local):
            scaled = targets[rows].double() * self.box_half_width
            unit_targets[rows] = ((scaled - self.target_mean) / self.target_spread).to(targets.dtype)
        self.centre_dot_targets = per_row_float64(targets, lambda y: y @ self.box_centre)  # <c, y_i> [N_r]
        self.unit = UnitBoxProblem(unit_targets, weights, self.comm, self.backend, self.tile_bytes,
                                   self.precision)
        self.unit.voronoi = self._choose_warm_start()

    def nearest_neighbour_heights(self) -> torch.Tensor:
        """Unit heights [N] whose cells are the nearest-neighbour cells of the user's targets.

        argmax_i <x, y_i> - |y_i|^2 / 2 = argmin_i |x - y_i|, and <x, y_i> - |y_i|^2 / 2 =
        -|y_i - c|^2 / 2 + (terms without i) + (a multiple of the unit score): hhat_i =
        -|y_i - c|^2 / (2 sigma) gives these cells without cancellation far from 0.
        """
        squared_distances = per_row_float64(self.targets, lambda y: ((y - self.box_centre) ** 2).sum(1))
        return self.unit.center(-0.5 * squared_distances / self.target_spread)

    def _choose_warm_start(self) -> torch.Tensor | None:
        """The Voronoi warm start: the user's nearest-neighbour cells
        (:meth:`nearest_neighbour_heights`), or None for the unit ones.

        The optimal cells do not change when the targets alone are moved or scaled (moving adds the
        same <x, a> to every score; scaling by s > 0 multiplies every score by s once the heights
        follow), but the user's nearest-neighbour cells do: targets outside
        the box (pixel values 0..255 against the default [0, 1]^d) or in a tiny corner of it leave
        most of those cells empty or nearly so, and the 2-D method could not repair that (it
        raised on 1e6- and 1e-6-scaled targets). The unit problem's own Voronoi diagram
        (:meth:`UnitBoxProblem.voronoi_heights`) is invariant: its targets fill the unit ball
        inside [-1, 1]^d, each in its own cell. So the user's cells are kept only when every
        target lies in the box and they are no worse as a start: a chi-square divergence of the
        cell masses from the weights no larger than the unit cells' (estimated on 2^13 common
        samples). Measured (``scripts/bench_warm_start.py``, docs/benchmarks.md): the user's cells
        are kept on MNIST codes (chi2 3.3 against 4.6) and on the Gaussian mixture (1.14 against
        1.48); the unit ones win on the 2-D 8 Gaussians (14.1 against 15.3, fit(tol=0.01) in 6
        steps and ~3 s against 8 steps and ~5 s), on the same targets x 255 or x 1e-6 (where the
        user's start raised) and on collinear targets in d = 16 (0.68 against 2.91).
        """
        slack = 1e-6 * (self.high.double() - self.low.double())
        low, high = self.low.double() - slack, self.high.double() + slack
        outside = per_row_float64(self.targets, lambda y: ((y < low) | (y > high)).any(1)).sum().reshape(1)
        if int(self.comm.allreduce(outside)[0]) > 0:
            return None
        user = self.nearest_neighbour_heights()
        probe = self.unit.uniform(1 << 13, torch.Generator().manual_seed(derive_seed(self.seed, PROBE_STREAM)))
        return user if self.unit.chi_square(user, probe) <= self.unit.chi_square(self.unit.voronoi_heights(), probe) else None

    # ---- coordinates -----------------------------------------------------------------------------
    def to_unit_box(self, x: torch.Tensor) -> torch.Tensor:
        """u = D^{-1} (x - c): source points of the box -> the unit box [-1, 1]^d (same dtype)."""
        return ((x.double() - self.box_centre) / self.box_half_width).to(self.targets.dtype)

    def heights_from_unit(self, unit_heights: torch.Tensor) -> torch.Tensor:
        """Public heights h_i = sigma * hhat_i - <c, y_i>, centred to mean 0 (float64)."""
        return self.unit.center(self.target_spread * unit_heights.double() - self.centre_dot_targets)

    def heights_to_unit(self, heights: torch.Tensor) -> torch.Tensor:
        """Unit heights hhat_i = (h_i + <c, y_i>) / sigma, centred to mean 0 (float64)."""
        return self.unit.center((heights.double() + self.centre_dot_targets) / self.target_spread)

    # ---- properties ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.targets.device

    @property
    def num_targets(self) -> int:
        """Global number of targets N (after merging duplicates)."""
        return self.unit.num_targets

    @property
    def heights(self) -> torch.Tensor:
        """Heights h [N] (this rank's shard when distributed): cell of x = argmax_i <x, y_i> + h_i."""
        return self.heights_from_unit(self._unit_heights).to(self.targets.dtype)

    @heights.setter
    def heights(self, heights: torch.Tensor) -> None:
        heights = torch.as_tensor(heights, device=self.device).double()
        if heights.shape != (self.targets.shape[0],):
            raise UserInputError(f"heights must have shape [{self.targets.shape[0]}], got {tuple(heights.shape)}")
        if not torch.isfinite(heights).all():
            raise UserInputError("heights contain NaN or Inf")
        self._unit_heights = self.heights_to_unit(heights)

    @property
    def unit_heights(self) -> torch.Tensor:
        """The heights of the unit problem, hhat [N] float64 (what the methods work on)."""
        return self._unit_heights

    @unit_heights.setter
    def unit_heights(self, unit_heights: torch.Tensor) -> None:
        if not torch.isfinite(unit_heights).all():
            raise UserInputError("heights contain NaN or Inf")
        self._unit_heights = self.unit.center(unit_heights.double().clone())

    # ---- queries ---------------------------------------------------------------------------------
    def _check_samples(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise UserInputError(f"samples must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise UserInputError(f"samples must have shape [M, {self.dim}] (the targets' dimension), got "
                                 f"{tuple(x.shape)}")
        if x.device != self.device:
            raise UserInputError(f"samples are on {x.device} but the targets are on {self.device}; "
                                 f"move them with x.to({str(self.device)!r})")
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            # argmax over NaN scores returns some index: a silently wrong cell, not an answer
            bad = (~torch.isfinite(x)).any(1).nonzero().flatten()
            raise UserInputError(f"samples contain NaN or Inf in {bad.numel()} row(s), first at row {int(bad[0])}")
        return x

    def topk(self, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-k of ``<x, y_i> + h_i`` over *all* targets (tiled).

        Parameters
        ----------
        x : tensor [M, d] on the targets' device
        k : int, 1 <= k <= N

        Returns
        -------
        values : tensor [M, k], sorted descending (public scores <x, y_i> + h_i)
        indices : tensor [M, k] int64, global target indices
        """
        x = self._check_samples(x)
        if not 1 <= k <= self.num_targets:
            raise UserInputError(f"k must be in [1, N={self.num_targets}], got {k}")
        u = self.to_unit_box(x)
        values, indices = self.unit.topk(u, k, self._unit_heights)
        # s_i(x) = sigma * (<u, yhat_i> + hhat_i) + <u, b> + (the per-row constant of the centring)
        row_constant = u.double() @ self.target_mean + self._score_offset()
        public = self.target_spread * values.double() + row_constant[:, None]
        return public.to(self.targets.dtype), indices

    def _score_offset(self) -> float:
        """The constant that centring the public heights adds: s_i(x) - public score, the same for all i."""
        # public h_i = sigma hhat_i - <c, y_i> - mean_j(sigma hhat_j - <c, y_j>); the score also has <c, y_i>.
        mean = self.comm.allreduce((self.target_spread * self._unit_heights - self.centre_dot_targets).sum()
                                   .reshape(1))[0] / self.num_targets
        return -float(mean)

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """Cell index ``argmax_i <x, y_i> + h_i`` of every sample: x [M, d] -> [M] int64."""
        x = self._check_samples(x)
        return self.unit.topk(self.to_unit_box(x), 1, self._unit_heights)[1][:, 0]

    def transport(self, x: torch.Tensor) -> torch.Tensor:
        """The OT map T(x) = y_{assign(x)}: [M, d] -> [M, d] (not available when sharded)."""
        if self.comm.enabled:
            raise NotImplementedError("transport() needs all targets on one rank; use assign() and gather")
        return self.targets[self.assign(x)]

    def sample_source(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` i.i.d. uniform samples on the box [low, high]^d, [n, d] on the targets' device."""
        require_int_at_least(0, n=n)
        return uniform_box(n, self.low, self.high, generator)

    # ---- measures and errors -----------------------------------------------------------------------
    def exact_measures_available(self) -> bool:
        """Whether :meth:`errors` can use exact cell areas (2-D, one process)."""
        return self.dim == 2 and not self.comm.enabled

    def exact_cell_measures(self, unit_heights: torch.Tensor | None = None) -> torch.Tensor:
        """mu(W_i) exactly, [N] float64 (2-D only: polygons of :mod:`ae_ot.ot.geometry2d`)."""
        if not self.exact_measures_available():
            raise UserInputError(f"exact cell measures exist for d = 2 in one process only; this problem has "
                                 f"d = {self.dim}{' and is sharded' if self.comm.enabled else ''}")
        from ae_ot.ot.geometry2d import exact_cell_measures_2d

        h = self._unit_heights if unit_heights is None else unit_heights
        return exact_cell_measures_2d(self.unit.targets, h, -1.0, 1.0).to(self.device)

    def cell_measures(self, num_samples: int = 1 << 20, seed: int = 0) -> torch.Tensor:
        """Monte Carlo estimate of mu(W_i), [N] float64, from ``num_samples`` fresh i.i.d. samples.

        The samples come from a pseudo-random stream keyed by (``seed``, a stream id); the
        training batches are scrambled Sobol points, so they are never reused here.
        """
        num_samples = _sample_count(num_samples)
        generator = torch.Generator().manual_seed(derive_seed(seed, PUBLIC_STREAM))
        return self.unit.cell_counts(self._unit_heights, num_samples, generator) / num_samples

    def errors(self, num_samples: int = 1 << 20, seed: int = 0, exact: bool = False) -> dict:
        """Held-out errors of the current heights on ``num_samples`` fresh i.i.d. samples.

        With m_i the measured mass of cell i: ``mean_rel``, ``max_rel``, ``l1``, ``empty_cells``,
        ``noise_floor``, ``mean_rel_corrected``, ``rms_rel``, ``rms_rel_corrected`` (see
        :meth:`ae_ot.ot.unit_problem.UnitBoxProblem.errors_from_measures`). ``exact=True`` (2-D
        only) uses the exact polygon areas instead of samples: no noise floor.
        """
        if exact:
            return self.unit.errors_from_measures(self.exact_cell_measures(), None)
        num_samples = _sample_count(num_samples)
        generator = torch.Generator().manual_seed(derive_seed(seed, PUBLIC_STREAM))
        return self.unit.errors(self._unit_heights, num_samples, generator)

    # ---- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to rebuild the solver (tensors on CPU) plus the last report."""
        return {
            "version": FORMAT_VERSION,
            "targets": self.targets.detach().cpu(),
            "weights": self.unit.weights.detach().cpu(),
            "low": self.low.cpu(), "high": self.high.cpu(),
            "heights": self.heights_from_unit(self._unit_heights).detach().cpu(),
            "seed": self.seed, "backend": self._backend_arg, "precision": self.precision,
            "report": self.report.to_dict() if self.report else None,
            "fit_state": _to_device(self.fit_state, "cpu"),
            "fit_signature": self.fit_signature,
        }

    def load_state_dict(self, state: dict) -> None:
        """Load heights (and the fit state/report) from a ``state_dict`` of the same problem.

        Checkpoints of format 1 (fit state in the user's coordinates) load their heights and report;
        their fit state cannot be continued, so a later ``fit`` starts afresh (with a warning).
        """
        version = state.get("version", 1)
        if version > FORMAT_VERSION:
            raise UserInputError(f"state_dict version {version} is newer than this code ({FORMAT_VERSION}); "
                                 f"upgrade ae-ot to read it")
        stored = state["targets"]
        if tuple(stored.shape) != tuple(self.targets.shape):
            raise UserInputError(f"state_dict is for targets of shape {tuple(stored.shape)}, this solver has "
                                 f"{tuple(self.targets.shape)}")
        if not torch.equal(stored.to(self.targets.dtype), self.targets.cpu()):
            raise UserInputError("state_dict targets differ from this solver's targets")
        self.heights = state["heights"]
        self.report = FitReport.from_dict(state["report"]) if state.get("report") else None
        self.fit_state = _to_device(state.get("fit_state"), self.device)
        self.fit_signature = state.get("fit_signature")
        if version < 2 and self.fit_state is not None:
            warnings.warn("this checkpoint was written by ae-ot's format-1 solver: its heights are loaded, "
                          "but its fit state cannot be resumed; the next fit starts a new run",
                          stacklevel=2)
            self.fit_state = None

    def save(self, path) -> None:
        """Atomic save (temporary file + ``os.replace``) of :meth:`state_dict`."""
        atomic_torch_save(self.state_dict(), path)

    @classmethod
    def load(cls, path, map_location=None, **kwargs) -> "SemiDiscreteOT":
        """Rebuild a solver saved with :meth:`save` (also reads ``fit`` checkpoints)."""
        state = read_torch_file(path, ("targets", "weights", "low", "high", "heights"), "SemiDiscreteOT checkpoint",
                                "pass a file written by SemiDiscreteOT.save or fit(checkpoint_path=...)")
        device = map_location or "cpu"
        kwargs.setdefault("backend", state.get("backend", "auto"))
        kwargs.setdefault("precision", state.get("precision", "highest"))
        ot = cls(state["targets"].to(device), state["weights"].to(device), state["low"].to(device),
                 state["high"].to(device), seed=state.get("seed", 0), merge_duplicates=False, **kwargs)
        ot.load_state_dict(state)
        return ot

    # ---- fit ---------------------------------------------------------------------------------------
    def default_batch_size(self, method: str = "default") -> int:
        """Training samples per step of ``method`` (see its module in :mod:`ae_ot.ot.methods`)."""
        from ae_ot.ot.methods import make_method

        return make_method(method, self.unit, self.seed, {}).default_batch_size()

    def fit(self, method: str = "auto", max_steps: int | None = None, tol: float | None = None,
            time_limit: float | None = None, batch_size: int | None = None, progress: bool = True,
            callback: Callable[[dict], Any] | None = None, checkpoint_path=None, checkpoint_every: int = 100,
            eval_every: int | None = None, eval_samples: int | None = None, lr: float | None = None,
            resume: bool = True, eval_times=None, exact_eval: bool | None = None, eval_share: float = 0.5,
            **options) -> FitReport:
        """Solve for the heights; returns a :class:`~ae_ot.ot.fitting.FitReport` (also in ``self.report``).

        Parameters
        ----------
        method : {"auto", "default", "aeot", "exact2d"}
            ``"default"``: :mod:`ae_ot.ot.methods.newton` (stochastic Newton, averaged, any d);
            ``"aeot"``: :mod:`ae_ot.ot.methods.pyomt` (the AE-OT reference); ``"exact2d"``:
            :mod:`ae_ot.ot.methods.exact2d` (damped Newton with exact geometry, 2-D only);
            ``"auto"``: ``"exact2d"`` for 2-D problems in one process, else ``"default"``.
        max_steps : int, optional
            Step budget (default 2,000 for ``default``, 20,000 for ``aeot``).
        tol : float, optional
            Stop once the held-out mean relative error (noise-corrected, ``mean_rel_corrected`` of
            :meth:`errors`; exact in 2-D) is <= tol. Without ``tol`` the solve runs to
            ``time_limit`` / ``max_steps`` (``aeot``: or to its own rule, ``grad_tol``).
        time_limit : float, optional
            Budget in seconds of solver time. Evaluations during the fit (``tol``'s checks,
            ``eval_every``, ``eval_times``) are not counted; when the fit has none of them, the
            final held-out evaluation is, so that the call returns within ``time_limit`` (its cost
            is predicted from the steps' seconds per sample; at most ``eval_share`` of the budget
            evaluates).
        batch_size : int, optional
            Training samples per step (the method's default); for ``aeot`` the initial size of its
            fixed set.
        progress : bool
            tqdm bar with the training and the latest held-out error.
        callback : callable(dict), optional
            Called after every step with step, time, samples, train_mean_rel (and the held-out
            metrics on evaluation steps): a hook for loggers.
        checkpoint_path : path, optional
            Checkpoint written atomically every ``checkpoint_every`` steps and at the end. If it
            exists when ``fit`` starts (and ``resume``), the run continues from it: each step's
            samples derive from (seed, step), so an interrupted and resumed run ends with the same
            heights as an uninterrupted one. A checkpoint of another problem (targets, weights or
            box), seed, method, options or batch size, one that holds more steps than
            ``max_steps``, or a file that is not a checkpoint raises
            :class:`~ae_ot.checks.UserInputError` naming what differs: it is never silently resumed.
        eval_every : int, optional
            Evaluate every this many steps. Default: with ``tol``, an adaptive schedule that keeps
            the evaluations under a quarter of the solver time (a cheap screening evaluation, and a
            precise one only when the screening says the error may be below ``tol``;
            :mod:`ae_ot.ot.fitting`); without ``tol``, only at the end.
        eval_samples : int, optional
            Samples of a precise evaluation (default: a noise floor ~ tol, in [2^20, 2^24]; 2^20
            without tol).
        eval_share : float, default 0.5
            With ``time_limit`` and the final evaluation counted in it: the largest fraction of the
            limit that evaluation may take. The solve stops at the latest time that leaves the
            predicted cost of ``eval_samples``, but not before ``(1 - eval_share) * time_limit``;
            the evaluation then draws what the rest affords, at most ``eval_samples``. Its noise
            floor falls as 1 / sqrt(samples) while the solve's error falls about as fast with the
            solver's samples, so the floor sits well below the error (a third of it on AE-OT's
            55,000 demo codes, docs/benchmarks.md) only when the evaluation gets more time than the
            solve: ``eval_share`` ~ 0.6 with a large ``eval_samples``.
        eval_times : sequence of float, optional
            Also evaluate when the solver time first passes each of these seconds (benchmarks).
        exact_eval : bool, optional
            Evaluate with exact cell areas (2-D, one process). Default: whenever available.
        lr : float, optional
            Step size (method default: 1 for the diagonal Newton step, 0.5 for the sparse one in
            d <= 3, 5e-2 for ``aeot``).
        **options
            The method's options, typed and documented in
            :class:`~ae_ot.ot.methods.NewtonOptions` and :class:`~ae_ot.ot.methods.PyOMTOptions`;
            an unknown name raises ``ValueError``.

        Returns
        -------
        FitReport
            ``converged`` is True only when the stopping rule fired and the final held-out
            evaluation has no empty cell; otherwise ``message`` says why, and a
            :class:`~ae_ot.ot.fitting.ConvergenceWarning` is issued when a ``tol`` was missed or
            a cell is empty. Non-finite heights are never returned: the driver goes back to the
            best iterate, or raises :class:`~ae_ot.ot.fitting.SolverDivergedError`. A fit that
            does not converge returns the best of its last iterate, its best evaluated iterate and
            the heights it started from (the start evaluated on as many held-out samples as the
            last iterate); when that is not the last iterate, ``report.final`` is the returned
            heights' evaluation, its ``returned`` entry and ``message`` say which.
        """
        return run_fit(self, method=method, max_steps=max_steps, tol=tol, time_limit=time_limit,
                       batch_size=batch_size, progress=progress, callback=callback,
                       checkpoint_path=checkpoint_path, checkpoint_every=checkpoint_every, eval_every=eval_every,
                       eval_samples=eval_samples, lr=lr, resume=resume, eval_times=eval_times,
                       exact_eval=exact_eval, options=options, eval_share=eval_share)

    def __repr__(self) -> str:
        return (f"SemiDiscreteOT(N={self.num_targets}, d={self.dim}, device={self.device}, "
                f"backend={self.backend!r}, dtype={self.targets.dtype})")


def _to_device(obj, device):
    """Tensors of a (nested) dict moved to ``device``; other values unchanged."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


def _sample_count(num_samples) -> int:
    """``num_samples`` as an int >= 1 (2**20 and 1e6 alike), or a clear error."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, float)) or not num_samples >= 1:
        raise UserInputError(f"num_samples must be a number >= 1, got {num_samples!r}")
    return int(num_samples)
