"""The settings of a fit: its budget, tolerance and evaluation, one frozen dataclass.

A method's own settings are its options dataclass (:mod:`ae_ot.ot.methods`); the problem's
(kernel, precision, sharding) are :class:`~ae_ot.ot.problem.SemiDiscreteProblem`'s.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass

from ae_ot.checks import UserInputError, require_in_interval, require_positive

__all__ = ["FitSettings", "reject_unknown"]


@dataclass(frozen=True)
class FitSettings:
    r"""How long a fit runs, when it stops, and how it evaluates.

    Attributes
    ----------
    max_steps : int, optional
        Step budget (None: the method's default, 2,000 for ``default``, 20,000 for ``aeot``).
    tol : float, optional
        Stop once the held-out mean relative error (noise-corrected ``mean_rel_corrected``; exact
        in 2-D) is <= tol, checked on the schedule of
        :class:`~ae_ot.ot.schedule.StoppingSchedule`. Without it the solve runs to ``time_limit``
        / ``max_steps`` (``aeot``: or to its own rule).
    time_limit : float, optional
        Seconds of solver time. Evaluations during the fit are not counted; when the fit has none
        (no ``tol``, ``eval_every``, ``eval_times``), its final evaluation is, so that the call
        returns within ``time_limit`` (:class:`~ae_ot.ot.schedule.FinalEvaluationBudget`).
    batch_size : int, optional
        Training samples per step (None: the method's default; ``aeot``: its first fixed set).
    lr : float, optional
        Step size (None: the method's default).
    eval_every : int, optional
        Also evaluate every this many steps (replaces the ``tol`` schedule).
    eval_samples : int, optional
        Samples of a precise evaluation. None: with ``tol``, a noise floor ~ tol, in
        :math:`[2^{20}, 2^{24}]`; without, :math:`2^{20}`.
    eval_share : float in [0, 1]
        With ``time_limit`` counting the final evaluation: the largest fraction of the limit that
        evaluation may take (it draws samples until the limit, at most ``eval_samples``).
    eval_times : tuple of float
        Also evaluate when the solver time first passes each of these seconds.
    exact_eval : bool, optional
        Evaluate with exact cell areas (2-D, one process). None: whenever available (and N is
        at most :data:`~ae_ot.ot.methods.EXACT2D_MAX_TARGETS`).
    checkpoint_every : int
        With a checkpoint path: write it every this many steps (and at the end).

    Examples
    --------
    >>> FitSettings(tol=0.02, time_limit=60.0).tol
    0.02
    """

    max_steps: int | None = None
    tol: float | None = None
    time_limit: float | None = None
    batch_size: int | None = None
    lr: float | None = None
    eval_every: int | None = None
    eval_samples: int | None = None
    eval_share: float = 0.5
    eval_times: tuple = ()
    exact_eval: bool | None = None
    checkpoint_every: int = 100

    def __post_init__(self):
        for name in ("tol", "time_limit", "lr"):
            if getattr(self, name) is not None:
                require_positive(**{name: getattr(self, name)})
        require_in_interval(0, 1, "; it is the largest fraction of time_limit the final held-out evaluation may take",
                            eval_share=self.eval_share)
        for name in ("max_steps", "batch_size"):
            value = getattr(self, name)
            if value is not None and not int(value) >= 1:
                raise UserInputError(f"{name} must be >= 1, got {value}")
        object.__setattr__(self, "eval_times", tuple(self.eval_times or ()))

    @classmethod
    def from_keywords(cls, base: "FitSettings | None" = None, **fields) -> "FitSettings":
        """``base`` (default: the defaults) with ``fields`` replaced; an unknown name raises
        :class:`~ae_ot.checks.UserInputError` naming the closest field."""
        reject_unknown(fields, cls, "unknown fit setting(s)",
                       " (a method's own options go in options=, e.g. options=NewtonOptions(...))")
        return dataclasses.replace(base or cls(), **fields)


def reject_unknown(given, dataclass_type, what: str, extra: str = "") -> None:
    """:class:`~ae_ot.checks.UserInputError` naming every name of ``given`` that is not a field of
    ``dataclass_type``, with its closest match, after ``what`` (and ``extra`` at the end).

    Examples
    --------
    >>> from ae_ot.checks import UserInputError
    >>> reject_unknown({"tol": 0.01}, FitSettings, "fit settings")
    >>> try:
    ...     reject_unknown({"tolerance": 0.01}, FitSettings, "fit settings")
    ... except UserInputError:
    ...     print("rejected")
    rejected
    """
    known = [f.name for f in dataclasses.fields(dataclass_type)]
    unknown = [name for name in given if name not in known]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise UserInputError(f"{what} {', '.join(hints)}; the known ones are: {', '.join(known)}{extra}")
