"""The step interface every solver method implements, its typed state, and the options machinery.

A method is a stochastic (or exact) optimiser of the convex dual energy E(h) (see
:mod:`ae_ot.ot.problem`) on a :class:`~ae_ot.ot.unit_problem.UnitBoxProblem`. The fit driver
(:mod:`ae_ot.ot.fitting`) owns the loop, the clocks, the evaluations and the checkpoints; a method
owns only what one step does:

* ``init_state(warm, current, batch_size)``: its typed state (a :class:`MethodState` subclass,
  saved in checkpoints so that a run resumes exactly), starting from the warm start ``warm``, the
  solver's present heights ``current`` or zeros, as its options say;
* ``step(state, lr)``: one update in place; returns a dict of per-step diagnostics
  (``train_mean_rel`` at least, ``converged`` when the method's own stopping rule fires, ``top_k``
  = 1 when the step scored the top 1 only, as a held-out evaluation does);
* ``solution(state)``: the heights the method reports (an average of iterates, or the iterate);
* ``recover(state)``: go back to the best iterate seen and halve the step size, after a blow-up.

Options are a frozen dataclass per method: typed, documented, validated; an unknown name is an
error (:func:`parse_options`), so a misspelt option is never silently ignored.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from ae_ot.checks import UserInputError
from ae_ot.ot.kernels import kernel_name
from ae_ot.ot.settings import reject_unknown
from ae_ot.ot.unit_problem import UnitBoxProblem

__all__ = ["SolverMethod", "MethodState", "parse_options", "WARM_STARTS"]

#: the first iterates a method may start from (its options' ``warm_start``)
WARM_STARTS = ("voronoi", "zeros", "current")


def parse_options(options_class, method: str, options):
    """``options`` as an ``options_class``: an instance, None (the defaults) or a dict of its
    fields, with an error naming every unknown field and its closest match.

    Examples
    --------
    >>> from ae_ot.ot.methods import NewtonOptions
    >>> parse_options(NewtonOptions, "default", {"hessian": "diag"}).hessian
    'diag'
    """
    if options is None:
        return options_class()
    if isinstance(options, options_class):
        return options
    if not isinstance(options, dict):
        raise UserInputError(f"options of method={method!r} must be a {options_class.__name__} or a dict, "
                             f"got {type(options).__name__}")
    reject_unknown(options, options_class, f"unknown option(s) for method={method!r}:")
    return options_class(**options)


def check_warm_start(value) -> None:
    """:class:`UserInputError` unless ``value`` is one of :data:`WARM_STARTS`."""
    if value not in WARM_STARTS:
        raise UserInputError(f"warm_start must be 'voronoi', 'zeros' or 'current', got {value!r}")


@dataclass
class MethodState:
    """What every method's iteration holds (tensors are float64, [N_r]).

    Attributes
    ----------
    step, samples : int
        Steps taken and training samples drawn.
    batch_size : int
        Training samples per step.
    heights : tensor
        The iterate.
    restarts : int
        Returns to the best iterate after a blow-up; ``lr_scale`` halves at each.
    best_train_error : float
        The lowest training-batch error so far; ``best`` holds copies of the iterate's entries
        (:attr:`SolverMethod.iterate_keys`) at that step.
    """

    method: ClassVar[str] = ""
    step: int = 0
    samples: int = 0
    batch_size: int = 0
    heights: torch.Tensor | None = None
    restarts: int = 0
    lr_scale: float = 1.0
    best_train_error: float = math.inf
    best: dict | None = None

    def to_dict(self) -> dict:
        """The fields (tensors shared, not copied) and the method's name."""
        return {"method": self.method, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}

    @classmethod
    def from_dict(cls, values: dict) -> "MethodState":
        """The inverse of :meth:`to_dict` (entries that are not fields are ignored)."""
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


class SolverMethod:
    """Base class of the solver methods (see the module docstring)."""

    #: name used in ``SemiDiscreteOT.fit(method=...)``
    name = ""
    #: the options dataclass
    Options = None
    #: the state dataclass
    State = MethodState
    #: default number of steps
    default_max_steps = 2000
    #: the most targets a step scores per sample (the k of its top-k calls); 0: steps use no score kernel
    step_top_k = 2
    #: state entries that make up the iterate (restored by :meth:`recover`)
    iterate_keys = ("heights",)

    def __init__(self, problem: UnitBoxProblem, options=None, seed: int = 0):
        self.problem = problem
        self.options = options if options is not None else self.Options()
        self.seed = seed

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

    def first_iterate(self, warm: torch.Tensor, current: torch.Tensor | None) -> torch.Tensor:
        """The first iterate its options' ``warm_start`` names: ``warm``, ``current`` or zeros (float64)."""
        choice = getattr(self.options, "warm_start", "zeros")
        if choice == "current" and current is not None:
            return current.double().clone()
        if choice == "zeros":
            return torch.zeros(self.problem.num_local, dtype=torch.float64, device=self.problem.device)
        return warm.double().clone()

    def init_state(self, warm: torch.Tensor, current: torch.Tensor | None, batch_size: int) -> MethodState:
        raise NotImplementedError

    def step(self, state: MethodState, lr: float) -> dict:
        raise NotImplementedError

    def solution(self, state: MethodState) -> torch.Tensor:
        return state.heights

    def remember_best(self, state: MethodState, train_error: float) -> None:
        """Keep a copy of the iterate whose training-batch error is the lowest so far."""
        if train_error < state.best_train_error:
            state.best_train_error = train_error
            state.best = {k: getattr(state, k).clone() for k in self.iterate_keys}

    def recover(self, state: MethodState) -> bool:
        """Back to the best iterate with half the step size; False when there is none to go back to."""
        if state.best is None:
            return False
        for key, value in state.best.items():
            setattr(state, key, value.clone())
        state.lr_scale = 0.5 * state.lr_scale
        state.restarts += 1
        return True
