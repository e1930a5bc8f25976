"""``method="aeot"``: the AE-OT reference solver (An et al., ICLR 2020, code "pyOMT").

Kept for reproducible comparison: heights start at 0, one fixed Sobol set of ``batch_size`` points
is reused every step, Adam (lr 5e-2, no bias correction) on the gradient g_i = m_i - nu_i,
re-centring, the sample set doubled when ||g||_2 has not improved for ``stall`` steps, and the
method's own stop when ||g||_2 < ``grad_tol``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from ae_ot.checks import UserInputError
from ae_ot.ot.methods.base import MethodState, SolverMethod
from ae_ot.ot.sources import derive_seed

__all__ = ["PyOMTOptions", "PyOMTState", "PyOMTMethod", "FIXED_SET_STREAM"]

#: seed stream of the fixed Sobol set: derive_seed(seed, FIXED_SET_STREAM)
FIXED_SET_STREAM = 3


@dataclass(frozen=True)
class PyOMTOptions:
    """Options of ``method="aeot"``.

    Attributes
    ----------
    grad_tol : float
        Stop when ||g||_2 < grad_tol (0 turns the rule off).
    stall : int
        Double the fixed sample set when ||g||_2 has not improved for this many steps.
    max_samples : int
        The fixed set never grows beyond this many points.

    Examples
    --------
    >>> PyOMTOptions(stall=10).stall
    10
    """

    grad_tol: float = 2e-3
    stall: int = 30
    max_samples: int = 1 << 20

    def __post_init__(self):
        if not self.grad_tol >= 0:
            raise UserInputError(f"grad_tol must be >= 0, got {self.grad_tol!r}")
        if int(self.stall) < 1 or int(self.max_samples) < 1:
            raise UserInputError(f"stall and max_samples must be positive integers, got {self.stall!r} and "
                                 f"{self.max_samples!r}")


@dataclass
class PyOMTState(MethodState):
    """State of ``method="aeot"``: Adam's moments ``adam_m``, ``adam_v`` (float64 [N_r]), the fixed
    set's size ``fixed_size``, the best gradient norm ``best_grad_norm`` and the steps since it
    improved, ``stall``."""

    method: ClassVar[str] = "aeot"
    adam_m: torch.Tensor | None = None
    adam_v: torch.Tensor | None = None
    fixed_size: int = 0
    best_grad_norm: float = math.inf
    stall: int = 0


class PyOMTMethod(SolverMethod):
    """Adam on a fixed Sobol set (see the module docstring)."""

    name = "aeot"
    Options = PyOMTOptions
    State = PyOMTState
    default_max_steps = 20000
    iterate_keys = ("heights", "adam_m", "adam_v")
    step_top_k = 1

    def __init__(self, problem, options=None, seed: int = 0):
        super().__init__(problem, options, seed)
        self._fixed_size = None
        self._fixed_set = None

    def default_lr(self) -> float:
        return 5e-2

    def default_batch_size(self) -> int:
        return 20000

    def init_state(self, warm, current, batch_size):
        zeros = torch.zeros(self.problem.num_local, dtype=torch.float64, device=self.problem.device)
        return PyOMTState(batch_size=batch_size, heights=zeros.clone(), adam_m=zeros.clone(), adam_v=zeros.clone(),
                          fixed_size=batch_size)

    def fixed_set(self, size: int) -> torch.Tensor:
        if self._fixed_size != size:  # the same points every step, regenerated only when the size doubles
            self._fixed_set = self.problem.sobol(size, derive_seed(self.seed, FIXED_SET_STREAM))
            self._fixed_size = size
        return self._fixed_set

    def step(self, state, lr):
        problem, opts = self.problem, self.options
        u = self.fixed_set(state.fixed_size)
        m = u.shape[0]
        cell = problem.topk(u, 1, state.heights)[1][:, 0]
        counts, _ = problem.local_counts(cell)
        gradient = counts / m - problem.weights
        b1, b2, eps = 0.9, 0.999, 1e-8
        lr = lr * state.lr_scale
        state.adam_m = b1 * state.adam_m + (1 - b1) * gradient
        state.adam_v = b2 * state.adam_v + (1 - b2) * gradient * gradient
        state.heights = problem.center(state.heights - lr * state.adam_m / (state.adam_v.sqrt() + eps))
        state.samples += m
        grad_norm = float(problem.comm.allreduce((gradient * gradient).sum().reshape(1))[0]) ** 0.5
        train_error = problem.mean_abs_relative_error(counts, m)
        self.remember_best(state, train_error)
        if grad_norm < state.best_grad_norm:
            state.best_grad_norm, state.stall = grad_norm, 0
        else:
            state.stall += 1
            if state.stall >= opts.stall and state.fixed_size < opts.max_samples:
                state.fixed_size = min(2 * state.fixed_size, opts.max_samples)
                state.stall = 0
        return {"train_mean_rel": train_error, "grad_norm": grad_norm,
                "converged": opts.grad_tol > 0 and grad_norm < opts.grad_tol}
