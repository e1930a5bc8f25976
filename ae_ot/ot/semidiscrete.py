r"""Semi-discrete optimal transport in three lines: :class:`SemiDiscreteOT`.

The solver is four objects, in the spirit of OTT-JAX:

* the problem, :class:`~ae_ot.ot.problem.SemiDiscreteProblem` (targets, weights, box, kernel),
  validated once and immutable;
* the settings: :class:`~ae_ot.ot.settings.FitSettings` (budget, tolerance, evaluation) and one
  options dataclass per method (:mod:`ae_ot.ot.methods`);
* the method's typed state (:class:`~ae_ot.ot.methods.MethodState`), driven by
  :func:`ae_ot.ot.fitting.solve`;
* the solution, :class:`~ae_ot.ot.solution.SemiDiscreteSolution` (heights and report), which
  answers the queries.

:class:`SemiDiscreteOT` holds a problem and its current solution, and :meth:`~SemiDiscreteOT.fit`
replaces the solution with a better one. **Contract: the cell of x is**
:math:`\arg\max_i \langle x, y_i\rangle + h_i`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ae_ot.ot.checkpoint import FORMAT_VERSION, check_format, read_solver_checkpoint
from ae_ot.ot.fitting import solve
from ae_ot.ot.problem import SemiDiscreteProblem
from ae_ot.ot.report import FitReport
from ae_ot.ot.settings import FitSettings
from ae_ot.ot.solution import SemiDiscreteSolution, check_heights

__all__ = ["SemiDiscreteOT", "FORMAT_VERSION"]


class SemiDiscreteOT:
    r"""Semi-discrete OT from Uniform([low, high]^d) to :math:`\sum_i \nu_i \delta_{y_i}`: a problem
    and its current solution.

    Parameters
    ----------
    targets, weights, low, high, backend
        The problem (see :class:`~ae_ot.ot.problem.SemiDiscreteProblem`).
    seed : int
        Every random draw of :meth:`fit` (and the warm start's probe) derives from (seed, stream, step).
    tile_bytes, precision, merge_duplicates, distributed
        See :class:`~ae_ot.ot.problem.SemiDiscreteProblem`. Sharded (``distributed``), every
        method must be called collectively by all ranks with the same samples.

    Attributes
    ----------
    problem : SemiDiscreteProblem
    solution : SemiDiscreteSolution
        The current heights (the warm start until :meth:`fit`) and the last fit's report.

    Examples
    --------
    >>> import torch
    >>> targets = torch.rand(200, 3, generator=torch.Generator().manual_seed(0))
    >>> ot = SemiDiscreteOT(targets, seed=0)
    >>> report = ot.fit(max_steps=20, progress=False)
    >>> ot.assign(torch.rand(5, 3)).shape
    torch.Size([5])

    References
    ----------
    An, Guo, Lei, Luo, Yau and Gu, "AE-OT: a new generative model based on extended semi-discrete
    optimal transport", ICLR 2020.
    """

    def __init__(self, targets: torch.Tensor, weights: torch.Tensor | None = None, low=0.0, high=1.0,
                 backend: str = "auto", seed: int = 0, *, tile_bytes: int | None = None,
                 precision: str = "highest", merge_duplicates: bool = True, distributed=False):
        self.problem = SemiDiscreteProblem(targets, weights, low, high, backend, tile_bytes=tile_bytes,
                                           precision=precision, merge_duplicates=merge_duplicates,
                                           distributed=distributed)
        self.seed = int(seed)
        self.solution = SemiDiscreteSolution(self.problem, self.problem.warm_start(self.seed))

    # ---- the problem -------------------------------------------------------------------------------
    @property
    def targets(self) -> torch.Tensor:
        """Targets y [N_r, d] (after merging duplicates; this rank's shard when sharded)."""
        return self.problem.targets

    @property
    def weights(self) -> torch.Tensor:
        """Weights nu [N_r] (the targets' dtype)."""
        return self.problem.weights

    @property
    def num_targets(self) -> int:
        """Global number of targets N."""
        return self.problem.num_targets

    @property
    def dim(self) -> int:
        return self.problem.dim

    @property
    def device(self) -> torch.device:
        return self.problem.device

    @property
    def merged_index(self) -> torch.Tensor | None:
        """[N_in] int64: the row of ``targets`` each input row was merged into (None: no duplicates)."""
        return self.problem.merged_index

    def sample_source(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` i.i.d. uniform samples of the box, [n, d] on the targets' device."""
        return self.problem.sample_source(n, generator)

    # ---- the solution ------------------------------------------------------------------------------
    @property
    def heights(self) -> torch.Tensor:
        """Heights h [N_r]: cell of x = argmax_i <x, y_i> + h_i, mean 0. Settable."""
        return self.solution.heights

    @heights.setter
    def heights(self, heights: torch.Tensor) -> None:
        unit_heights = self.problem.heights_to_unit(check_heights(self.problem, heights))
        self.solution = SemiDiscreteSolution(self.problem, unit_heights)

    @property
    def unit_heights(self) -> torch.Tensor:
        """The unit problem's heights [N_r] float64 (what the methods work on)."""
        return self.solution.unit_heights

    @property
    def report(self) -> FitReport | None:
        """The last fit's report (None before any)."""
        return self.solution.report

    @property
    def fit_state(self) -> dict | None:
        """The last fit's state (the method's state, as a dict), or None."""
        return self.solution.fit_state

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """Cell index of every sample: x [M, d] -> [M] int64 (:meth:`SemiDiscreteSolution.assign`)."""
        return self.solution.assign(x)

    def transport(self, x: torch.Tensor) -> torch.Tensor:
        """The OT map T(x) = y_{assign(x)}: [M, d] -> [M, d]."""
        return self.solution.transport(x)

    def topk(self, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k scores [M, k] and target indices [M, k] (:meth:`SemiDiscreteSolution.topk`)."""
        return self.solution.topk(x, k)

    def cell_measures(self, num_samples: int = 1 << 20, seed: int = 0) -> torch.Tensor:
        """Monte Carlo cell masses [N_r] float64 (:meth:`SemiDiscreteSolution.cell_measures`)."""
        return self.solution.cell_measures(num_samples, seed)

    def errors(self, num_samples: int = 1 << 20, seed: int = 0, exact: bool = False) -> dict:
        """Held-out errors of the heights (:meth:`SemiDiscreteSolution.errors`)."""
        return self.solution.errors(num_samples, seed, exact)

    def exact_cell_measures(self, unit_heights: torch.Tensor | None = None) -> torch.Tensor:
        """Exact cell masses [N] float64 of the current (or the given unit) heights; 2-D, one process."""
        return self.problem.exact_cell_measures(self.unit_heights if unit_heights is None else unit_heights)

    # ---- solve ---------------------------------------------------------------------------------------
    def fit(self, settings: FitSettings | None = None, *, method: str = "auto", options=None, progress: bool = True,
            callback: Callable[[dict], Any] | None = None, checkpoint_path=None, resume: bool = True,
            **fields) -> FitReport:
        """Solve for the heights from the current solution; returns the report (also ``self.report``).

        Parameters
        ----------
        settings : FitSettings, optional
            Budget, tolerance and evaluation; ``**fields`` replace its fields
            (``fit(tol=0.02)`` is ``fit(FitSettings(tol=0.02))``). An unknown name raises.
        method : {"auto", "default", "aeot", "exact2d"}
            ``"default"``: :mod:`~ae_ot.ot.methods.newton` (stochastic Newton, averaged, any d);
            ``"aeot"``: :mod:`~ae_ot.ot.methods.pyomt` (the AE-OT reference); ``"exact2d"``:
            :mod:`~ae_ot.ot.methods.exact2d` (damped Newton, exact 2-D geometry); ``"auto"``:
            ``"exact2d"`` for 2-D problems in one process, else ``"default"``.
        options : dataclass or dict, optional
            The method's options (:class:`~ae_ot.ot.methods.NewtonOptions`,
            :class:`~ae_ot.ot.methods.PyOMTOptions`, :class:`~ae_ot.ot.methods.Exact2DOptions`),
            or a dict of their fields; an unknown name raises.
        progress : bool
            A tqdm bar.
        callback : callable(dict), optional
            Called after every step with step, time, samples, train_mean_rel (and the held-out
            metrics on evaluation steps).
        checkpoint_path : path, optional
            Written atomically every ``settings.checkpoint_every`` steps and at the end. If it
            exists (and ``resume``), the run continues from it and ends with the heights of an
            uninterrupted run; a checkpoint of another problem, seed, method, options or batch
            size, of more than ``max_steps`` steps, or not a checkpoint, raises
            :class:`~ae_ot.checks.UserInputError` naming what differs.

        Returns
        -------
        FitReport
            ``converged`` only when the stopping rule fired and the final evaluation has no empty
            cell; otherwise ``message`` says why, with a :class:`~ae_ot.ot.report.ConvergenceWarning`
            when a ``tol`` was missed. Non-finite heights are never returned (back to the best
            iterate, or :class:`~ae_ot.ot.report.SolverDivergedError`); a fit that does not
            converge returns the best of its last iterate, its best evaluated iterate and its start.
        """
        settings = FitSettings.from_keywords(settings, **fields)
        self.solution = solve(self.problem, self.solution, method, settings, options, seed=self.seed,
                              progress=progress, callback=callback, checkpoint_path=checkpoint_path, resume=resume)
        return self.solution.report

    # ---- state ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The checkpoint dict of the problem and the current solution (tensors on the CPU)."""
        return self.solution.state_dict(self.seed)

    def load_state_dict(self, state: dict) -> None:
        """Load heights, report and fit state from a :meth:`state_dict` of the same problem."""
        check_format(state, "state_dict")
        self.solution = SemiDiscreteSolution.from_state_dict(self.problem, state)

    def save(self, path) -> None:
        """Atomic save (temporary file + ``os.replace``) of :meth:`state_dict`."""
        self.solution.save(path, self.seed)

    @classmethod
    def load(cls, path, map_location=None, **kwargs) -> "SemiDiscreteOT":
        """Rebuild a solver saved with :meth:`save` (or by ``fit(checkpoint_path=...)``); ``kwargs``
        override the stored constructor arguments (``backend``, ``precision``, ...)."""
        state = read_solver_checkpoint(path)
        device = map_location or "cpu"
        kwargs.setdefault("backend", state.get("backend", "auto"))
        kwargs.setdefault("precision", state.get("precision", "highest"))
        ot = cls(state["targets"].to(device), state["weights"].to(device), state["low"].to(device),
                 state["high"].to(device), seed=state.get("seed", 0), merge_duplicates=False, **kwargs)
        ot.load_state_dict(state)
        return ot

    def __repr__(self) -> str:
        problem = self.problem
        return (f"SemiDiscreteOT(N={problem.num_targets}, d={problem.dim}, device={problem.device}, "
                f"backend={problem.backend!r}, dtype={problem.targets.dtype})")
