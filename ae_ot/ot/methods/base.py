"""The step interface every solver method implements, and the options machinery.

A method is a stateful stochastic optimiser of the convex dual energy E(h) (see
:mod:`ae_ot.ot.semidiscrete`) on a :class:`~ae_ot.ot.unit_problem.UnitBoxProblem`. The fit driver
(:mod:`ae_ot.ot.fitting`) owns the loop, the clocks, the evaluations and the checkpoints; a method
owns only what one step does:

* ``init_state(heights, batch_size)``: a dict of tensors and numbers (saved in checkpoints, so a
  run resumes exactly);
* ``step(state, lr)``: one update, returns a dict of per-step diagnostics (``train_mean_rel``
  at least, ``converged`` when the method's own stopping rule fires, ``top_k`` = 1 when the
  step scored the top 1 only, as a held-out evaluation does: the driver times the final
  evaluation of a time-limited fit from those steps);
* ``solution(state)``: the heights the method reports (an average of iterates, or the iterate);
* ``recover(state)``: go back to the best iterate seen and halve the step size, after a blow-up.

Options are a dataclass per method: typed, documented, validated, and an unknown name is an
error (:func:`parse_options`), so a misspelt option is never silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib

import torch

from ae_ot.checks import UserInputError
from ae_ot.ot.kernels import kernel_name
from ae_ot.ot.unit_problem import UnitBoxProblem

__all__ = ["SolverMethod", "parse_options"]


def parse_options(options_class, method: str, options: dict):
    """``options_class(**options)``, with an error naming every unknown option and its closest match."""
    known = [f.name for f in dataclasses.fields(options_class)]
    unknown = [name for name in options if name not in known]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise UserInputError(f"unknown option(s) for method={method!r}: {', '.join(hints)}; "
                             f"its options are: {', '.join(known)}")
    return options_class(**options)


class SolverMethod:
    """Base class of the solver methods (see the module docstring)."""

    #: name used in ``SemiDiscreteOT.fit(method=...)``
    name = ""
    #: the options dataclass
    Options = None
    #: default number of steps
    default_max_steps = 2000

    def __init__(self, problem: UnitBoxProblem, options=None):
        self.problem = problem
        self.options = options if options is not None else self.Options()

    #: the most targets a step scores per sample (the k of its top-k calls); 0: steps use no score kernel
    step_top_k = 2

    def kernel(self) -> str:
        """The score kernel that runs the steps' top-k calls: "fused", "torch", "keops", or "none"
        when the steps score no samples (see :func:`ae_ot.ot.kernels.kernel_name`)."""
        if not self.step_top_k:
            return "none"
        problem = self.problem
        return kernel_name(problem.backend, problem.device, problem.targets.dtype, self.step_top_k, problem.dim)

    def default_lr(self) -> float:
        raise NotImplementedError

    def default_batch_size(self) -> int:
        raise NotImplementedError

    def init_state(self, heights: torch.Tensor | None, batch_size: int) -> dict:
        raise NotImplementedError

    def step(self, state: dict, lr: float) -> dict:
        raise NotImplementedError

    def solution(self, state: dict) -> torch.Tensor:
        return state["heights"]

    def remember_best(self, state: dict, train_error: float) -> None:
        """Keep a copy of the iterate whose training-batch error is the lowest so far."""
        if train_error < state.get("best_train_error", float("inf")):
            state["best_train_error"] = train_error
            state["best"] = {k: state[k].clone() for k in self.iterate_keys}

    #: state entries that make up the iterate (restored by :meth:`recover`)
    iterate_keys = ("heights",)

    def recover(self, state: dict) -> bool:
        """Back to the best iterate with half the step size; False when there is none to go back to."""
        best = state.get("best")
        if best is None:
            return False
        for key, value in best.items():
            state[key] = value.clone()
        state["lr_scale"] = 0.5 * state.get("lr_scale", 1.0)
        state["restarts"] = state.get("restarts", 0) + 1
        return True
