r"""A solution of a semi-discrete OT problem: heights, the report of the fit that found them, and
the queries they answer.

**Contract: the cell of x is** :math:`\arg\max_i \langle x, y_i\rangle + h_i`. The solution
stores the unit problem's heights :math:`\hat h` (:mod:`ae_ot.ot.unit_problem`) and answers every
query there, so the answers do not depend on the box's position or scale.
"""

from __future__ import annotations

import torch

from ae_ot.checks import UserInputError
from ae_ot.io import atomic_torch_save
from ae_ot.ot.checkpoint import FORMAT_VERSION
from ae_ot.ot.problem import SemiDiscreteProblem
from ae_ot.ot.report import FitReport
from ae_ot.ot.sources import derive_seed

__all__ = ["SemiDiscreteSolution", "PUBLIC_STREAM", "check_heights", "to_device"]

#: seed stream of the samples of the public cell_measures() / errors()
PUBLIC_STREAM = 4


class SemiDiscreteSolution:
    r"""Heights of a :class:`~ae_ot.ot.problem.SemiDiscreteProblem` and the queries they answer.

    Parameters
    ----------
    problem : SemiDiscreteProblem
    unit_heights : tensor [N_r] float64
        Heights :math:`\hat h` of the unit problem, centred to mean 0.
    report : FitReport, optional
        The report of the fit that found them.
    fit_state : dict, optional
        The fit's state (what a checkpoint needs to resume it; see :mod:`ae_ot.ot.checkpoint`).
    fit_signature : dict, optional
        What a checkpoint of that fit must agree on to be resumed
        (:func:`~ae_ot.ot.checkpoint.fit_signature`).

    Examples
    --------
    >>> import torch
    >>> problem = SemiDiscreteProblem(torch.tensor([[0.25, 0.5], [0.75, 0.5]]))
    >>> solution = SemiDiscreteSolution(problem, problem.warm_start(seed=0))
    >>> solution.assign(torch.tensor([[0.1, 0.5], [0.9, 0.5]])).tolist()
    [0, 1]
    """

    def __init__(self, problem: SemiDiscreteProblem, unit_heights: torch.Tensor, report: FitReport | None = None,
                 fit_state: dict | None = None, fit_signature: dict | None = None):
        if not torch.isfinite(unit_heights).all():
            raise UserInputError("heights contain NaN or Inf")
        self.problem = problem
        self.unit_heights = unit_heights
        self.report = report
        self.fit_state = fit_state
        self.fit_signature = fit_signature

    @property
    def heights(self) -> torch.Tensor:
        r"""Public heights :math:`h` [N_r] (the targets' dtype; this rank's shard when sharded), mean 0."""
        return self.problem.heights_from_unit(self.unit_heights).to(self.problem.targets.dtype)

    # ---- queries ---------------------------------------------------------------------------------
    def topk(self, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Exact top-k of :math:`\langle x, y_i\rangle + h_i` over all targets (tiled).

        Parameters
        ----------
        x : tensor [M, d] on the targets' device
        k : int, 1 <= k <= N

        Returns
        -------
        values : tensor [M, k], sorted descending (public scores)
        indices : tensor [M, k] int64, global target indices
        """
        problem = self.problem
        x = problem.check_samples(x)
        if not 1 <= k <= problem.num_targets:
            raise UserInputError(f"k must be in [1, N={problem.num_targets}], got {k}")
        u = problem.to_unit_box(x)
        values, indices = problem.unit.topk(u, k, self.unit_heights)
        # s_i(x) = sigma * (<u, yhat_i> + hhat_i) + <u, b> + (the per-row constant of the centring)
        row_constant = u.double() @ problem.target_mean + problem.score_offset(self.unit_heights)
        public = problem.target_spread * values.double() + row_constant[:, None]
        return public.to(problem.targets.dtype), indices

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        r"""Cell index :math:`\arg\max_i \langle x, y_i\rangle + h_i` of every sample: x [M, d] -> [M] int64."""
        problem = self.problem
        x = problem.check_samples(x)
        return problem.unit.topk(problem.to_unit_box(x), 1, self.unit_heights)[1][:, 0]

    def transport(self, x: torch.Tensor) -> torch.Tensor:
        r"""The OT map :math:`T(x) = y_{\mathrm{assign}(x)}`: [M, d] -> [M, d] (not when sharded)."""
        if self.problem.comm.enabled:
            raise NotImplementedError("transport() needs all targets on one rank; use assign() and gather")
        return self.problem.targets[self.assign(x)]

    def exact_cell_measures(self) -> torch.Tensor:
        r""":math:`\mu(W_i)` exactly, [N] float64 (2-D, one process)."""
        return self.problem.exact_cell_measures(self.unit_heights)

    def cell_measures(self, num_samples: int = 1 << 20, seed: int = 0) -> torch.Tensor:
        r"""Monte Carlo estimate of :math:`\mu(W_i)`, [N_r] float64, from ``num_samples`` fresh i.i.d.
        samples of the stream (``seed``, :data:`PUBLIC_STREAM`), never a fit's training samples."""
        num_samples = _sample_count(num_samples)
        generator = torch.Generator().manual_seed(derive_seed(seed, PUBLIC_STREAM))
        return self.problem.unit.cell_counts(self.unit_heights, num_samples, generator) / num_samples

    def errors(self, num_samples: int = 1 << 20, seed: int = 0, exact: bool = False) -> dict:
        """Held-out errors of the heights on ``num_samples`` fresh i.i.d. samples (stream as
        :meth:`cell_measures`): ``mean_rel``, ``max_rel``, ``l1``, ``empty_cells``, ``noise_floor``,
        ``mean_rel_corrected``, ``rms_rel``, ``rms_rel_corrected`` and its standard error (see
        :meth:`ae_ot.ot.unit_problem.UnitBoxProblem.errors_from_measures`). ``exact=True`` (2-D,
        one process) uses the exact cell areas: no noise floor."""
        unit = self.problem.unit
        if exact:
            return unit.errors_from_measures(self.exact_cell_measures(), None)
        num_samples = _sample_count(num_samples)
        generator = torch.Generator().manual_seed(derive_seed(seed, PUBLIC_STREAM))
        return unit.errors(self.unit_heights, num_samples, generator)

    # ---- state -------------------------------------------------------------------------------------
    def state_dict(self, seed: int = 0) -> dict:
        """The checkpoint dict (tensors on the CPU; format :data:`~ae_ot.ot.checkpoint.FORMAT_VERSION`):
        the problem, the public heights, ``seed``, the report and the fit state."""
        problem = self.problem
        return {
            "version": FORMAT_VERSION,
            "targets": problem.targets.detach().cpu(),
            "weights": problem.unit.weights.detach().cpu(),
            "low": problem.low.cpu(), "high": problem.high.cpu(),
            "heights": problem.heights_from_unit(self.unit_heights).detach().cpu(),
            "seed": int(seed), "backend": problem.backend_arg, "precision": problem.precision,
            "report": self.report.to_dict() if self.report else None,
            "fit_state": to_device(self.fit_state, "cpu"),
            "fit_signature": self.fit_signature,
        }

    def save(self, path, seed: int = 0) -> None:
        """Atomic save (temporary file + ``os.replace``) of :meth:`state_dict`."""
        atomic_torch_save(self.state_dict(seed), path)

    @classmethod
    def from_state_dict(cls, problem: SemiDiscreteProblem, state: dict) -> "SemiDiscreteSolution":
        """The solution stored in ``state`` (a :meth:`state_dict`) of the same ``problem``."""
        stored = state["targets"]
        if tuple(stored.shape) != tuple(problem.targets.shape):
            raise UserInputError(f"state_dict is for targets of shape {tuple(stored.shape)}, this solver has "
                                 f"{tuple(problem.targets.shape)}")
        if not torch.equal(stored.to(problem.targets.dtype), problem.targets.cpu()):
            raise UserInputError("state_dict targets differ from this solver's targets")
        report = FitReport.from_dict(state["report"]) if state.get("report") else None
        return cls(problem, problem.heights_to_unit(check_heights(problem, state["heights"])), report,
                   to_device(state.get("fit_state"), problem.device), state.get("fit_signature"))

    def __repr__(self) -> str:
        verdict = self.report.message if self.report else "not fitted"
        return f"SemiDiscreteSolution({self.problem!r}: {verdict})"


def check_heights(problem: SemiDiscreteProblem, heights) -> torch.Tensor:
    """``heights`` as a finite float64 [N_r] tensor on the problem's device, or :class:`UserInputError`."""
    heights = torch.as_tensor(heights, device=problem.device).double()
    if heights.shape != (problem.targets.shape[0],):
        raise UserInputError(f"heights must have shape [{problem.targets.shape[0]}], got {tuple(heights.shape)}")
    if not torch.isfinite(heights).all():
        raise UserInputError("heights contain NaN or Inf")
    return heights


def to_device(obj, device):
    """Tensors of a (nested) dict moved to ``device``; other values unchanged.

    Examples
    --------
    >>> import torch
    >>> moved = to_device({"h": torch.zeros(2), "meta": {"step": 3, "x": torch.ones(1)}}, "cpu")
    >>> moved["meta"]["step"], moved["h"].device.type
    (3, 'cpu')
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach().to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


def _sample_count(num_samples) -> int:
    """``num_samples`` as an int >= 1 (2**20 and 1e6 alike), or a clear error."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, float)) or not num_samples >= 1:
        raise UserInputError(f"num_samples must be a number >= 1, got {num_samples!r}")
    return int(num_samples)
