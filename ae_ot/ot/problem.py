r"""The semi-discrete OT problem: uniform measure on a box to a weighted point cloud.

Source :math:`\mu`: uniform on the box :math:`B = [\mathrm{low}, \mathrm{high}]^d`. Targets
:math:`y_i \in \mathbb{R}^d` with weights :math:`\nu_i > 0`, :math:`\sum_i \nu_i = 1`. Heights
:math:`h \in \mathbb{R}^N` define the power cells

.. math:: W_i(h) = \{x \in B : \langle x, y_i\rangle + h_i \ge \langle x, y_j\rangle + h_j \ \forall j\}

and the Brenier potential :math:`u_h(x) = \max_i \langle x, y_i\rangle + h_i`, whose gradient
:math:`T(x) = y_{i(x)}` is the transport map. The convex energy

.. math:: E(h) = \int_B u_h \, d\mu - \sum_i h_i \nu_i, \qquad \partial_i E = \mu(W_i(h)) - \nu_i

is invariant under :math:`h \to h + c`; solving means every cell holds exactly its weight
(Aurenhammer, Hoffmann and Aronov, Algorithmica 1998; Gu, Luo, Sun and Yau, Asian J. Math. 2016;
An et al., ICLR 2020).

:class:`SemiDiscreteProblem` holds the problem, validated once and never changed: targets, weights,
box, the score kernel's settings, and the same problem on :math:`[-1, 1]^d` with centred
unit-scale targets (:class:`~ae_ot.ot.unit_problem.UnitBoxProblem`), which the solver works on, so
that a solution does not depend on where the box sits or on its scale.
"""

from __future__ import annotations

import hashlib
import warnings

import torch

from ae_ot.checks import UserInputError, require_int_at_least
from ae_ot.ot import kernels
from ae_ot.ot.distributed import ShardComm
from ae_ot.ot.duplicates import merge_duplicates
from ae_ot.ot.sources import as_box, derive_seed, uniform_box
from ae_ot.ot.unit_problem import UnitBoxProblem, per_row_float64, row_slices

__all__ = ["SemiDiscreteProblem", "PROBE_STREAM"]

#: seed stream of the samples that pick the warm start (:meth:`SemiDiscreteProblem.warm_start`)
PROBE_STREAM = 6


class SemiDiscreteProblem:
    r"""Uniform([low, high]^d) to :math:`\sum_i \nu_i \delta_{y_i}`, validated and immutable.

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
    tile_bytes : int, optional
        Memory budget of one score tile.
    precision : {"highest", "tf32"}
        CUDA matmul precision (TF32 inputs, float32 accumulation) for the torch backend.
    merge_duplicates : bool
        Merge identical targets (summing their weights, with a warning); ``merged_index`` [N_in]
        maps every input row to its row in ``targets``.
    distributed : bool or ProcessGroup
        Targets sharded over ``torch.distributed`` ranks: ``targets`` and ``weights`` are this
        rank's shard, ``num_targets`` the global N.

    Attributes
    ----------
    targets : tensor [N_r, d]; weights : tensor [N_r] (the targets' dtype); low, high : tensor [d]
    unit : UnitBoxProblem
        The same problem on [-1, 1]^d: :math:`x = c + D u`, :math:`\hat y_i = (D y_i - b) / \sigma`
        with box centre ``box_centre`` (c), half-widths ``box_half_width`` (diag D), target mean
        ``target_mean`` (b) and spread ``target_spread`` (sigma); see :mod:`ae_ot.ot.unit_problem`.

    Examples
    --------
    >>> import torch
    >>> problem = SemiDiscreteProblem(torch.tensor([[0.25, 0.5], [0.75, 0.5]]))
    >>> problem.num_targets if hasattr(problem, "num_targets") else problem.targets.shape[0]
    2
    """

    def __init__(self, targets: torch.Tensor, weights: torch.Tensor | None = None, low=0.0, high=1.0,
                 backend: str = "auto", *, tile_bytes: int | None = None, precision: str = "highest",
                 merge_duplicates: bool = True, distributed=False):
        targets = _check_targets(targets)
        self.comm = ShardComm(distributed)
        n_local, d = targets.shape
        if not self.comm.enabled and n_local == 0:
            raise UserInputError("targets are empty (N = 0): need at least one target point")
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
        self.backend_arg, self.precision, self.tile_bytes = backend, precision, tile_bytes
        self.backend = kernels.resolve_backend(backend, targets.device, d)
        self._build_unit_problem(weights)
        self._warm_starts: dict[int, torch.Tensor] = {}

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
                      f"{unique.shape[0]} targets), their weights summed; see `merged_index`", stacklevel=4)
        return unique, merged_weights

    def _build_unit_problem(self, weights: torch.Tensor) -> None:
        """x = c + D u with u in [-1, 1]^d; yhat_i = (D y_i - b) / sigma, in float64 a block of rows
        at a time (:func:`~ae_ot.ot.unit_problem.row_slices`: no float64 copy of all the targets)."""
        targets, n_local = self.targets, self.targets.shape[0]
        self.box_centre = (self.low.double() + self.high.double()) / 2          # c [d]
        self.box_half_width = (self.high.double() - self.low.double()) / 2      # diag(D) [d]
        scaled_sum = torch.zeros(self.dim, dtype=torch.float64, device=targets.device)
        for rows in row_slices(n_local):
            scaled_sum += (targets[rows].double() * self.box_half_width).sum(0)
        self.target_mean = self.comm.allreduce(scaled_sum) / self.comm.sum_int(n_local)  # b [d]
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

    # ---- properties ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.targets.device

    @property
    def num_targets(self) -> int:
        """Global number of targets N (after merging duplicates)."""
        return self.unit.num_targets

    def sample_source(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` i.i.d. uniform samples of the box [low, high]^d, [n, d] on the targets' device."""
        require_int_at_least(0, n=n)
        return uniform_box(n, self.low, self.high, generator)

    def fingerprint(self) -> dict:
        """Digests of ``targets``, ``weights`` (float64) and ``box`` (low and high): a checkpoint
        stores them so that a resume can tell, and name, what differs."""
        return {"targets": tensor_digest(self.targets), "weights": tensor_digest(self.unit.weights),
                "box": tensor_digest(self.low, self.high)}

    # ---- warm start ------------------------------------------------------------------------------
    def nearest_neighbour_heights(self) -> torch.Tensor:
        r"""Unit heights [N] whose cells are the nearest-neighbour cells of the user's targets:
        :math:`\hat h_i = -|y_i - c|^2 / (2\sigma)` (centred), since
        :math:`\arg\max_i \langle x, y_i\rangle - |y_i|^2/2 = \arg\min_i |x - y_i|`."""
        squared_distances = per_row_float64(self.targets, lambda y: ((y - self.box_centre) ** 2).sum(1))
        return self.unit.center(-0.5 * squared_distances / self.target_spread)

    def warm_start(self, seed: int) -> torch.Tensor:
        r"""The Voronoi warm start, unit heights [N] float64: the user's nearest-neighbour cells
        (:meth:`nearest_neighbour_heights`) or the unit problem's
        (:meth:`~ae_ot.ot.unit_problem.UnitBoxProblem.voronoi_heights`).

        Rule: the user's cells are kept only when every target lies in the box and their
        chi-square divergence of cell masses from the weights
        (:meth:`~ae_ot.ot.unit_problem.UnitBoxProblem.chi_square`), estimated on :math:`2^{13}`
        samples of the stream (``seed``, :data:`PROBE_STREAM`), is no larger than the unit cells'.
        The optimal cells do not move when the targets alone are moved or scaled, but the user's
        nearest-neighbour cells do (targets outside the box leave most of them empty); the unit
        cells are invariant. The choice is compared in docs/benchmarks.md
        (``scripts/bench_warm_start.py``).
        """
        if seed not in self._warm_starts:
            self._warm_starts[seed] = self._choose_warm_start(seed)
        return self._warm_starts[seed].clone()

    def _choose_warm_start(self, seed: int) -> torch.Tensor:
        unit = self.unit.voronoi_heights()
        slack = 1e-6 * (self.high.double() - self.low.double())
        low, high = self.low.double() - slack, self.high.double() + slack
        outside = per_row_float64(self.targets, lambda y: ((y < low) | (y > high)).any(1)).sum().reshape(1)
        if int(self.comm.allreduce(outside)[0]) > 0:
            return unit
        user = self.nearest_neighbour_heights()
        probe = self.unit.uniform(1 << 13, torch.Generator().manual_seed(derive_seed(seed, PROBE_STREAM)))
        return user if self.unit.chi_square(user, probe) <= self.unit.chi_square(unit, probe) else unit

    # ---- coordinates -----------------------------------------------------------------------------
    def to_unit_box(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`u = D^{-1}(x - c)`: points of the box [M, d] -> the unit box (same dtype as the targets)."""
        return ((x.double() - self.box_centre) / self.box_half_width).to(self.targets.dtype)

    def heights_from_unit(self, unit_heights: torch.Tensor) -> torch.Tensor:
        r"""Public heights :math:`h_i = \sigma \hat h_i - \langle c, y_i\rangle`, centred, [N_r] float64."""
        return self.unit.center(self.target_spread * unit_heights.double() - self.centre_dot_targets)

    def heights_to_unit(self, heights: torch.Tensor) -> torch.Tensor:
        r"""Unit heights :math:`\hat h_i = (h_i + \langle c, y_i\rangle) / \sigma`, centred, [N_r] float64."""
        return self.unit.center((heights.double() + self.centre_dot_targets) / self.target_spread)

    def score_offset(self, unit_heights: torch.Tensor) -> float:
        r"""The per-sample constant between the unit and the public scores beyond
        :math:`\langle u, b\rangle`: :math:`s_i(x) = \sigma(\langle u, \hat y_i\rangle + \hat h_i)
        + \langle u, b\rangle + \text{offset}`, the same for all i."""
        mean = self.comm.allreduce((self.target_spread * unit_heights - self.centre_dot_targets).sum()
                                   .reshape(1))[0] / self.num_targets
        return -float(mean)

    def check_samples(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` if it is a finite [M, d] tensor on the targets' device, else :class:`UserInputError`."""
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

    # ---- exact measures ----------------------------------------------------------------------------
    def exact_measures_available(self) -> bool:
        """Whether exact cell areas exist (2-D, one process)."""
        return self.dim == 2 and not self.comm.enabled

    def exact_cell_measures(self, unit_heights: torch.Tensor) -> torch.Tensor:
        r""":math:`\mu(W_i)` exactly, [N] float64 (2-D only: polygons of :mod:`ae_ot.ot.geometry2d`)."""
        if not self.exact_measures_available():
            raise UserInputError(f"exact cell measures exist for d = 2 in one process only; this problem has "
                                 f"d = {self.dim}{' and is sharded' if self.comm.enabled else ''}")
        from ae_ot.ot.geometry2d import exact_cell_measures_2d

        return exact_cell_measures_2d(self.unit.targets, unit_heights, -1.0, 1.0).to(self.device)

    def __repr__(self) -> str:
        return (f"SemiDiscreteProblem(N={self.num_targets}, d={self.dim}, device={self.device}, "
                f"backend={self.backend!r}, dtype={self.targets.dtype})")


def _check_targets(targets) -> torch.Tensor:
    """``targets`` as a detached float [N, d] tensor of finite values, or :class:`UserInputError`."""
    if not isinstance(targets, torch.Tensor):
        targets = torch.as_tensor(targets)
    targets = targets.detach()  # the solver never differentiates through its targets
    if targets.dim() != 2:
        raise UserInputError(f"targets must be a 2-D tensor [N, d], got shape {tuple(targets.shape)}")
    if targets.dtype not in (torch.float32, torch.float64):
        targets = targets.float()
    if targets.shape[1] == 0:
        raise UserInputError("targets have dimension d = 0")
    if not torch.isfinite(targets).all():
        bad = (~torch.isfinite(targets)).any(1).nonzero().flatten()
        raise UserInputError(f"targets contain NaN or Inf in {bad.numel()} row(s), first at row {int(bad[0])}")
    return targets


def tensor_digest(*tensors: torch.Tensor) -> str:
    """A 32-hex-digit digest of the dtypes, shapes and values of ``tensors``."""
    h = hashlib.blake2b(digest_size=16)
    for tensor in tensors:
        tensor = tensor.detach().cpu().contiguous()
        h.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        h.update(tensor.numpy().reshape(-1).view("uint8"))
    return h.hexdigest()
