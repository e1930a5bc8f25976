"""Solver methods of :meth:`ae_ot.ot.SemiDiscreteOT.fit`, one module each behind one step interface
(:class:`~ae_ot.ot.methods.base.SolverMethod`):

* ``"default"``: :mod:`ae_ot.ot.methods.newton` (stochastic diagonal / sparse Newton, averaged);
* ``"aeot"``: :mod:`ae_ot.ot.methods.pyomt` (the AE-OT reference, Adam on a fixed sample set).
"""

from ae_ot.ot.methods.base import SolverMethod, parse_options
from ae_ot.ot.methods.newton import NewtonMethod, NewtonOptions
from ae_ot.ot.methods.pyomt import PyOMTMethod, PyOMTOptions

#: method name -> class
METHODS = {NewtonMethod.name: NewtonMethod, PyOMTMethod.name: PyOMTMethod}

__all__ = ["METHODS", "make_method", "SolverMethod", "NewtonMethod", "NewtonOptions", "PyOMTMethod",
           "PyOMTOptions"]


def make_method(name: str, problem, seed: int, options: dict) -> SolverMethod:
    """The method called ``name`` on ``problem``, its options parsed (unknown names are an error)."""
    if name not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {name!r}")
    cls = METHODS[name]
    return cls(problem, parse_options(cls.Options, name, options), seed=seed)
