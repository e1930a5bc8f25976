"""Solver methods of :meth:`ae_ot.ot.SemiDiscreteOT.fit`, one module each behind one step interface
(:class:`~ae_ot.ot.methods.base.SolverMethod`):

* ``"default"``: :mod:`ae_ot.ot.methods.newton` (stochastic diagonal / sparse Newton, averaged);
* ``"aeot"``: :mod:`ae_ot.ot.methods.pyomt` (the AE-OT reference, Adam on a fixed sample set);
* ``"exact2d"``: :mod:`ae_ot.ot.methods.exact2d` (damped Newton with exact 2-D geometry);
* ``"auto"`` (what ``fit`` uses by default): ``"exact2d"`` for 2-D problems in one process with
  at most ``EXACT2D_MAX_TARGETS`` targets, else ``"default"``.
"""

from ae_ot.checks import UserInputError
from ae_ot.ot.methods.base import MethodState, SolverMethod, parse_options
from ae_ot.ot.methods.exact2d import Exact2DMethod, Exact2DOptions, Exact2DState
from ae_ot.ot.methods.newton import NewtonMethod, NewtonOptions, NewtonState
from ae_ot.ot.methods.pyomt import PyOMTMethod, PyOMTOptions, PyOMTState

#: method name -> class
METHODS = {NewtonMethod.name: NewtonMethod, PyOMTMethod.name: PyOMTMethod, Exact2DMethod.name: Exact2DMethod}
#: "auto" uses the exact 2-D method up to this many targets (its diagram costs O(N) Python clips)
EXACT2D_MAX_TARGETS = 20000

__all__ = ["METHODS", "EXACT2D_MAX_TARGETS", "make_method", "resolve_method", "SolverMethod", "MethodState",
           "NewtonMethod", "NewtonOptions", "NewtonState", "PyOMTMethod", "PyOMTOptions", "PyOMTState",
           "Exact2DMethod", "Exact2DOptions", "Exact2DState"]


def resolve_method(name: str, problem) -> str:
    """``"auto"`` -> the method it stands for on ``problem``; other names unchanged.

    Examples
    --------
    >>> import torch
    >>> from ae_ot.ot import SemiDiscreteOT
    >>> ot = SemiDiscreteOT(torch.rand(10, 2, generator=torch.Generator().manual_seed(0)))
    >>> resolve_method("aeot", ot.problem)
    'aeot'
    """
    if name == "auto":
        small_2d = problem.dim == 2 and not problem.comm.enabled and problem.num_targets <= EXACT2D_MAX_TARGETS
        return Exact2DMethod.name if small_2d else NewtonMethod.name
    return name


def make_method(name: str, problem, seed: int, options=None) -> SolverMethod:
    """The method called ``name`` on ``problem``; ``options``: its options dataclass, a dict of its
    fields or None (the defaults; see :func:`~ae_ot.ot.methods.base.parse_options`)."""
    name = resolve_method(name, problem)
    if name not in METHODS:
        raise UserInputError(f"method must be one of {sorted(METHODS) + ['auto']}, "
                             f"got {name!r}")
    cls = METHODS[name]
    return cls(problem, parse_options(cls.Options, name, options), seed=seed)
