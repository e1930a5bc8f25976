"""Held-out evaluation of a fit's iterate: exact cell areas (2-D) or fresh i.i.d. samples, drawn
from the stream (seed, :data:`EVAL_STREAM`, step), never the training samples."""

from __future__ import annotations

import time

import torch

from ae_ot.ot.problem import SemiDiscreteProblem
from ae_ot.ot.sources import derive_seed
from ae_ot.ot.unit_problem import UnitBoxProblem

__all__ = ["evaluate_heights", "StagedEvaluation", "EVAL_STREAM", "FINAL_EVAL_CHUNK"]

#: seed stream of the held-out evaluations in a fit: derive_seed(seed, EVAL_STREAM, step, ...)
EVAL_STREAM = 2
#: a time-bounded evaluation draws its samples in chunks of this many (see StagedEvaluation.grow_within)
FINAL_EVAL_CHUNK = 1 << 16


def evaluate_heights(problem: SemiDiscreteProblem, heights: torch.Tensor, kind: str, exact: bool, seed: int,
                     step: int, samples: int) -> dict:
    """Errors of unit ``heights`` [N_r] (:meth:`~ae_ot.ot.unit_problem.UnitBoxProblem.errors_from_measures`):
    exact areas when ``exact`` (``kind`` "exact"), else ``samples`` fresh samples of the stream
    (``seed``, :data:`EVAL_STREAM`, ``step``, ``samples``)."""
    if exact:
        result = problem.unit.errors_from_measures(problem.exact_cell_measures(heights), None)
    else:
        generator = torch.Generator().manual_seed(derive_seed(seed, EVAL_STREAM, step, samples))
        result = problem.unit.errors(heights, samples, generator)
    result["kind"] = "exact" if exact else kind
    return result


class StagedEvaluation:
    """One stream of fresh held-out samples at one iterate, grown in stages.

    The cell counts of the stages add up, so evaluating at :math:`M_1 < M_2 < \\dots` samples draws
    :math:`M_{last}` samples in all: a precise evaluation reuses its screens' samples.

    Parameters
    ----------
    unit : UnitBoxProblem
    heights : tensor [N_r]
        Unit heights evaluated.
    seed, step : int
        The stream is (``seed``, :data:`EVAL_STREAM`, ``step``).
    """

    def __init__(self, unit: UnitBoxProblem, heights: torch.Tensor, seed: int, step: int):
        self.unit, self.heights = unit, heights
        self.generator = torch.Generator().manual_seed(derive_seed(seed, EVAL_STREAM, step))
        self.counts, self.samples = None, 0

    def grow_to(self, samples: int, kind: str) -> dict:
        """Errors on the first ``samples`` samples of the stream (drawing only the new ones)."""
        if samples > self.samples:
            counts = self.unit.cell_counts(self.heights, samples - self.samples, self.generator)
            self.counts = counts if self.counts is None else self.counts + counts
            self.samples = samples
        result = self.unit.errors_from_measures(self.counts / self.samples, self.samples)
        result["kind"] = kind
        return result

    def grow_within(self, samples: int, kind: str, seconds: float) -> dict:
        """Grow towards ``samples`` in chunks of :data:`FINAL_EVAL_CHUNK`, stopping before the next
        chunk would take the time past ``seconds`` (at least one chunk). Sharded ranks stop
        together: they read the slowest rank's clock."""
        comm = self.unit.comm
        started = time.perf_counter()
        result = None
        while result is None or self.samples < samples:
            before = time.perf_counter()
            result = self.grow_to(min(samples, self.samples + FINAL_EVAL_CHUNK), kind)
            now = time.perf_counter()
            clocks = torch.tensor([now - started, now - before], dtype=torch.float64)
            if comm.enabled:
                clocks = comm.allreduce(clocks.to(comm.device()), "max").cpu()
            if float(clocks[0] + clocks[1]) > seconds:
                break
        return result
