r"""When a fit evaluates its iterate on held-out samples, and how much of a time limit the final
evaluation may take.

A held-out evaluation of :math:`M` samples costs about as much as :math:`M / \text{batch}` solver
steps, so its timing is a budget decision. Two small objects hold the rules:

* :class:`StoppingSchedule`: the checks of a fit with ``tol``. A check is a cheap *screen*
  (noise floor :math:`\approx 2\,\mathrm{tol}`) and, only when the screen passes, a *precise*
  evaluation (floor :math:`\approx \mathrm{tol}`) on the same growing stream of samples; the stop
  is decided by the precise one. The schedule keeps the evaluations under a fixed share of the
  solver time and brings a check forward when the error's decay predicts ``tol`` sooner.
* :class:`FinalEvaluationBudget`: a time-limited fit without other evaluations counts its final
  evaluation in ``time_limit``; it predicts that evaluation's cost from the steps' seconds per
  sample and says when the solve must stop to leave room for it.

The constants' values are compared in docs/benchmarks.md.
"""

from __future__ import annotations

import math

from ae_ot.checks import UserInputError

__all__ = ["StoppingSchedule", "FinalEvaluationBudget", "samples_for_floor", "EVAL_FRACTION",
           "EVAL_FRACTION_MAX", "ERROR_DECAY_EXPONENT", "PRECISE_FLOOR", "SCREEN_LEVELS", "EVAL_RATE_MARGIN",
           "FIRST_CHECK_STEP"]

#: the checks keep evaluation time <= this fraction of solver time
EVAL_FRACTION = 0.25
#: ... or <= this fraction when the error's decay predicts tol before that
EVAL_FRACTION_MAX = 0.5
#: the error of the averaged iterate is modelled as decaying like t^(-1 / ERROR_DECAY_EXPONENT)
#: with the solver time t; None: no prediction
ERROR_DECAY_EXPONENT = 2.5
#: the precise evaluation's noise floor, as a multiple of tol
PRECISE_FLOOR = 1.0
#: screens before a precise evaluation: (noise floor / tol, pass if the corrected error <= margin x tol)
SCREEN_LEVELS = ((2.0, 1.15), (1.0, 1.3))
#: a held-out sample costs up to this many times a top-1 training step's sample
EVAL_RATE_MARGIN = 1.2
#: no check before this step
FIRST_CHECK_STEP = 5


def samples_for_floor(floor: float, num_targets: int) -> int:
    r"""Samples :math:`M \in [2^{18}, 2^{24}]` whose noise floor is about ``floor``: the floor of uniform
    weights is :math:`\sqrt{2/\pi}\sqrt{N / M}` (:func:`~ae_ot.ot.unit_problem.noise_floor`).

    Examples
    --------
    >>> import math
    >>> math.log2(samples_for_floor(1e-6, num_targets=100)), math.log2(samples_for_floor(10.0, num_targets=100))
    (24.0, 18.0)
    """
    m = num_targets * (math.sqrt(2 / math.pi) / floor) ** 2
    return int(min(1 << 24, max(1 << 18, m)))


class StoppingSchedule:
    r"""When the held-out checks of a fit with ``tol`` run, and what each one draws.

    Rule:

    * A check draws the screens of :data:`SCREEN_LEVELS` that cost less than half the precise
      evaluation (``levels``, cheapest first; none with exact areas), then the precise
      evaluation of ``precise_samples``; it stops early at the first screen whose
      noise-corrected error is above ``margin * tol`` (:meth:`screen_passes`). Only a precise
      (or exact) evaluation may stop the fit.
    * The first check comes at step :data:`FIRST_CHECK_STEP` or later, once the training samples
      drawn are at least ``1 / EVAL_FRACTION`` times its first stage's samples (at once with exact
      areas or when the fit already holds an evaluation).
    * After a check that did not stop the fit, with :math:`t` the solver time, :math:`E` the
      evaluation time so far and :math:`c` the next check's predicted first-stage cost (this
      check's seconds per sample times the first stage's samples), the next check comes at

      .. math:: t_{next} = \max\left(t, \frac{E + c}{f}\right), \qquad f = \text{EVAL\_FRACTION},

      or, when the check's error :math:`e` is above ``tol`` and the error is modelled as
      :math:`e \propto t^{-1/p}` (:math:`p` = :data:`ERROR_DECAY_EXPONENT`), at the predicted time
      of tol, bounded below by a 10% improvement and by :data:`EVAL_FRACTION_MAX`:

      .. math:: t_{next} = \max\Big(1.1^p\, t,\ \frac{E + c}{f_{max}},\
                \min\big(t_{next},\ t \max(e / \mathrm{tol}, 1.1)^p\big)\Big).

    Parameters
    ----------
    tol : float
    precise_samples : int
        Samples of the precise evaluation.
    num_targets : int
        N, which sets each screen's samples (:func:`samples_for_floor`).
    exact : bool
        Checks use exact cell areas: no screens, no sample counts.
    """

    def __init__(self, tol: float, precise_samples: int, num_targets: int, exact: bool = False):
        if not tol > 0:
            raise UserInputError(f"tol must be positive, got {tol!r}")
        self.tol, self.precise_samples, self.exact = tol, int(precise_samples), exact
        self.levels: list[tuple[int, float]] = []
        if not exact:
            for floor_factor, margin in SCREEN_LEVELS:
                samples = samples_for_floor(floor_factor * tol, num_targets)
                if samples < precise_samples / 2 and all(samples > s for s, _ in self.levels):
                    self.levels.append((samples, margin))
        self.next_time = 0.0

    @property
    def first_stage_samples(self) -> int:
        """Samples of a check's first stage: the cheapest screen, else the precise evaluation."""
        return self.levels[0][0] if self.levels else self.precise_samples

    def next_due(self, step: int, solver_time: float, samples: int, evaluated_before: bool) -> bool:
        """Whether a check is due after ``step`` steps, ``solver_time`` seconds and ``samples``
        training samples (``evaluated_before``: the fit already holds an evaluation)."""
        if step < FIRST_CHECK_STEP or solver_time < self.next_time:
            return False
        return evaluated_before or self.exact or samples * EVAL_FRACTION >= self.first_stage_samples

    def screen_passes(self, error: float, margin: float) -> bool:
        """Whether a screen's noise-corrected ``error`` calls for the next stage."""
        return not error > margin * self.tol

    def record(self, solver_time: float, eval_time: float, check_seconds: float, check_samples: int | None,
               error: float, stopped: bool) -> float:
        """Set and return the solver time of the next check after one that took ``check_seconds``
        on ``check_samples`` held-out samples (None: exact areas) and found ``error``;
        ``eval_time`` counts every evaluation so far, this one included (see the class docstring)."""
        next_cost = check_seconds
        if check_samples is not None:
            next_cost *= self.first_stage_samples / check_samples
        next_time = max(solver_time, (eval_time + next_cost) / EVAL_FRACTION)
        if not stopped and ERROR_DECAY_EXPONENT and math.isfinite(error) and error > self.tol:
            predicted = solver_time * max(error / self.tol, 1.1) ** ERROR_DECAY_EXPONENT
            next_time = max(solver_time * 1.1 ** ERROR_DECAY_EXPONENT, (eval_time + next_cost) / EVAL_FRACTION_MAX,
                            min(next_time, predicted))
        self.next_time = next_time
        return next_time


class FinalEvaluationBudget:
    r"""The share of ``time_limit`` a fit's final held-out evaluation may take, and its predicted cost.

    Rule: the solve stops at the first step where :math:`t + \hat c \ge T`, with :math:`t` the
    solver time, :math:`T` the time limit and :math:`\hat c` the predicted cost of
    ``eval_samples`` held-out samples. :math:`\hat c = 0` until :math:`t \ge (1 - s) T`
    (:math:`s` = ``eval_share``): the solve always gets that part of the limit. The cost per
    sample is the top-1 steps' seconds per sample times :data:`EVAL_RATE_MARGIN` (an evaluation
    scores the top 1), else all the steps' (an over-estimate), and 0 before any step.

    Parameters
    ----------
    time_limit : float or None
        The solver's time limit (None: none).
    eval_samples : int
    eval_share : float in [0, 1]
    reserve : bool
        Whether the final evaluation counts in the limit (else :meth:`seconds` is 0).
    """

    def __init__(self, time_limit: float | None, eval_samples: int, eval_share: float, reserve: bool = True):
        self.time_limit, self.eval_samples, self.eval_share = time_limit, eval_samples, eval_share
        self.reserve = reserve and time_limit is not None
        self.top1_seconds, self.top1_samples = 0.0, 0

    def record_step(self, seconds: float, samples: int, top_k: int | None) -> None:
        """Count a step's ``seconds`` and training ``samples`` when it scored the top 1 only."""
        if top_k == 1:
            self.top1_seconds += seconds
            self.top1_samples += samples

    def seconds_per_sample(self, solver_time: float, samples: int) -> float:
        """Predicted seconds per held-out sample after ``samples`` training samples in ``solver_time``."""
        if self.top1_samples:
            return EVAL_RATE_MARGIN * self.top1_seconds / self.top1_samples
        return solver_time / samples if samples else 0.0

    def seconds(self, solver_time: float, samples: int) -> float:
        """The reserved final evaluation's predicted cost at this point of the solve (see the rule)."""
        if not self.reserve or solver_time < self.time_limit * (1 - self.eval_share):
            return 0.0
        return self.eval_samples * self.seconds_per_sample(solver_time, samples)

    def stop(self, solver_time: float, samples: int) -> bool:
        """Whether the solve must stop now to leave the final evaluation its time."""
        return self.time_limit is not None and solver_time + self.seconds(solver_time, samples) >= self.time_limit
