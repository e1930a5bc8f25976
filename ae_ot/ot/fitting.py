"""The fit driver of :meth:`ae_ot.ot.SemiDiscreteOT.fit`: the loop around a method's steps.

It owns what every method shares: the clocks (solver time, evaluation time), the held-out
evaluation schedule and the stopping rule, checkpoints and exact resume, the progress bar, the
callback, the recovery from blow-ups (non-finite heights go back to the best iterate), and the
final verdict (``FitReport.converged`` and its ``message``).

Evaluation schedule with ``tol`` (default): each held-out evaluation of M samples costs about as
much as M / batch_size solver steps, and a precise one can cost more than the whole solve.

* The precise evaluation has a noise floor ~ ``PRECISE_FLOOR`` x tol (= tol): its noise-corrected
  error is then within ~2% of the truth (measured on a Gaussian mixture, N = 2,000, d = 16, tol 2%:
  1.785% in the fit against 1.783% from 2^25 samples), at a quarter of the samples of a floor
  tol / 2.
* Screening first: a cheap evaluation (floor ~ 2 tol, a quarter of the samples) decides whether
  the precise one is worth running, so an iterate far from tol costs a small evaluation only. The
  stages draw one growing stream of samples, so the precise evaluation reuses the screen's samples.
  The noise-corrected error underestimates the truth when the floor is not small (E|a + sigma Z|
  < sqrt(a^2 + sigma^2 2 / pi) for Gaussian noise), so a screen above tol is conclusive; its pass
  margin is 1.15 tol (screens and precise checks of one iterate differed by up to ~0.3% absolute
  at tol 2%). A margin of 1.5 tol paid for precise checks that were bound to fail.
* The first check comes once the solver has drawn 1 / ``EVAL_FRACTION`` times its samples (so it
  costs about ``EVAL_FRACTION`` of the solver time), not at a fixed step: on N = 10,000 cells a
  first screen at step 5 cost 22.8 s to report 65.7%.
* Then: once the evaluations, the next check's first stage included, cost ``EVAL_FRACTION`` of
  the solver time, or sooner, at the time the last check's error predicts for tol (error ~
  t^(-1 / ERROR_DECAY_EXPONENT), measured ~ t^(-0.4) on a Gaussian mixture; at least 10% lower
  than the last estimate, and never before that time, however cheap the checks), as long as the
  evaluations stay under ``EVAL_FRACTION_MAX``. Without the prediction, a check that failed by a
  hair (2.03% at tol 2%) put the next one 15 s later.

Measured side by side on that mixture (N = 2,000, d = 16, tol 2%, four seeds, one process): the
call took 27-37 s with the 1.5 margin and no prediction, 15-21 s with both changes and the top-1
steps of ``gap_every`` (docs/benchmarks.md). With the precise floor at tol / 2 (before 2026-12)
the same call took 144 s: a failed 18 s check pushed the next one past max_steps.

The stop is always decided by the precise evaluation (or by exact areas in 2-D).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ae_ot.checks import UserInputError, require_in_interval, require_positive
from ae_ot.io import read_torch_file
from ae_ot.ot.methods import EXACT2D_MAX_TARGETS, make_method, resolve_method
from ae_ot.ot.sources import derive_seed
from ae_ot.ot.unit_problem import noise_floor

__all__ = ["FitReport", "run_fit", "fit_signature", "problem_fingerprint", "check_resumable",
           "ConvergenceWarning", "SolverDivergedError", "EVAL_FRACTION", "EVAL_FRACTION_MAX",
           "ERROR_DECAY_EXPONENT", "EVAL_STREAM",
           "PRECISE_FLOOR", "SCREEN_LEVELS", "EVAL_RATE_MARGIN", "FINAL_EVAL_CHUNK"]

#: seed stream of the held-out evaluations in fit: derive_seed(seed, EVAL_STREAM, step)
EVAL_STREAM = 2
#: the adaptive schedule keeps evaluation time <= this fraction of solver time
EVAL_FRACTION = 0.25
#: ... and after a failed check close to tol, the next one may come sooner, at the predicted time of
#: tol, as long as evaluation time stays <= this fraction of solver time
EVAL_FRACTION_MAX = 0.5
#: the measured decay of the averaged iterate's error with solver time, error ~ t^(-1 / ERROR_DECAY_EXPONENT)
#: (Gaussian mixture, N = 2,000, d = 16: ~ t^(-0.4); the Monte Carlo rate would be t^(-0.5)); None: no prediction
ERROR_DECAY_EXPONENT = 2.5
#: the precise evaluation's noise floor, as a multiple of tol (see the module docstring)
PRECISE_FLOOR = 1.0
#: screening evaluations before a precise one: (noise floor / tol, pass if corrected error <= margin * tol).
#: A coarser first level (4 tol, 1/16 of the samples) was measured side by side and dropped: 47-54 s
#: against 51 s per call on the Gaussian mixture, and on MNIST codes it only brought the first
#: 16M-sample precise check (~100 s there) forward.
SCREEN_LEVELS = ((2.0, 1.15), (1.0, 1.3))
#: a held-out sample costs up to ~1.16x a top-1 training step's sample (measured 1.05-1.16 on AE-OT's
#: 55,000 demo codes: a call timed from the bare top-1 rate ended 1.4 s past its 120, one with 1.15
#: 0.2 s past); this margin keeps the call within its time_limit
EVAL_RATE_MARGIN = 1.2
#: ... and the reserved final evaluation is drawn in chunks of this many samples until the next chunk
#: would pass time_limit (or eval_samples are drawn): the prediction only decides when the solve
#: stops. It can be off: on the demo's codes, with 2 top-1 steps to time it from, an evaluation
#: sample cost 1.25x a step's and the call, which drew the predicted samples, ended 3.9 s past its 135
FINAL_EVAL_CHUNK = 1 << 16
#: blow-ups recovered from before a fit gives up
MAX_RESTARTS = 10
#: a fit that did not converge compares its last iterate with the heights it started from: first on
#: this fraction of the final evaluation's samples (at least FINAL_EVAL_CHUNK), and on all of them
#: only when that screen does not show the start to be worse (see _return_best)
START_SCREEN_FRACTION = 1 / 16


class ConvergenceWarning(UserWarning):
    """A fit ended without meeting its tolerance, or with an empty cell."""


class SolverDivergedError(RuntimeError):
    """The iterates became non-finite and going back to the best iterate did not help."""


@dataclass
class FitReport:
    """What a ``fit`` did: counts, times, the held-out error history and the verdict.

    ``history`` holds one dict per evaluation: step, time (solver seconds, evaluation excluded),
    wall (seconds including evaluation), samples (training samples drawn so far), kind ("screen",
    "precise", "exact", "final") and the error metrics (mean_rel, max_rel, l1, empty_cells,
    noise_floor, mean_rel_corrected, ...). ``converged`` is True only when the stopping rule fired
    and the final evaluation has no empty cell; ``message`` says why not otherwise. When a fit that
    did not converge returns heights other than its last iterate's (its start, or an earlier
    iterate that evaluated better), the last record is theirs, with ``returned`` saying which.
    """

    method: str = "default"
    steps: int = 0
    samples: int = 0
    wall_time: float = 0.0
    eval_time: float = 0.0
    converged: bool = False
    stop_reason: str = ""
    message: str = ""
    tol: float | None = None
    batch_size: int = 0
    restarts: int = 0  # returns to the best iterate after a blow-up (see SolverMethod.recover)
    kernel: str = ""  # the score kernel of the steps: "fused", "torch", "keops" ("none": exact2d)
    history: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FitReport":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    @property
    def final(self) -> dict:
        """The last evaluation record (empty dict when there was none)."""
        return self.history[-1] if self.history else {}

    @property
    def total_time(self) -> float:
        """Solver plus evaluation seconds: the wall time of the user's call, start-up aside."""
        return self.wall_time + self.eval_time


def _samples_for_floor(floor: float, num_targets: int) -> int:
    """Samples M whose noise floor is about ``floor``: floor ~ 0.8 sqrt(N / M) for uniform weights."""
    m = num_targets * (math.sqrt(2 / math.pi) / floor) ** 2
    return int(min(1 << 24, max(1 << 18, m)))


class _Evaluator:
    """Held-out errors of a state's solution: exact areas (2-D) or fresh i.i.d. samples."""

    def __init__(self, ot, method, exact: bool, precise_samples: int, screen_levels: list):
        self.ot, self.method = ot, method
        self.exact = exact
        self.precise_samples = precise_samples
        self.screen_levels = screen_levels  # [(samples, pass threshold / tol), ...], cheapest first

    @property
    def first_stage_samples(self) -> int:
        """Samples of a check's first stage: the cheapest screen, else the precise evaluation."""
        return self.screen_levels[0][0] if self.screen_levels else self.precise_samples

    def __call__(self, state: dict, kind: str, samples: int | None = None) -> dict:
        heights = self.method.solution(state)
        if self.exact:
            result = self.ot.unit.errors_from_measures(self.ot.exact_cell_measures(heights), None)
        else:
            samples = samples or self.precise_samples
            generator = torch.Generator().manual_seed(derive_seed(self.ot.seed, EVAL_STREAM, state["step"], samples))
            result = self.ot.unit.errors(heights, samples, generator)
        result["kind"] = "exact" if self.exact else kind
        return result

    def staged(self, state: dict) -> "_StagedEvaluation":
        """A held-out evaluation of this iterate that can grow: the screens' samples count again in
        the precise evaluation (Monte Carlo only)."""
        return _StagedEvaluation(self, state)


class _StagedEvaluation:
    """One stream of fresh held-out samples at one iterate, grown in stages.

    Cell counts of the stages add up, so screening at M_1 < M_2 < ... samples costs M_last samples
    in all, not M_1 + M_2 + ...: the precise evaluation reuses the screens' samples (with the
    screen at floor ~2 tol and the precise one at ~tol, a passing screen costs nothing extra).
    """

    def __init__(self, evaluator: _Evaluator, state: dict, heights: torch.Tensor | None = None):
        self.unit = evaluator.ot.unit
        self.heights = evaluator.method.solution(state) if heights is None else heights
        self.generator = torch.Generator().manual_seed(derive_seed(evaluator.ot.seed, EVAL_STREAM, state["step"]))
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

    def grow_within(self, samples: int, kind: str, seconds: float, comm) -> dict:
        """Grow towards ``samples`` in chunks of FINAL_EVAL_CHUNK, stopping before the next chunk
        would take the time past ``seconds`` (at least one chunk). The ranks of a distributed run
        stop together: they read the slowest rank's clock."""
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


def run_fit(ot, method: str, max_steps, tol, time_limit, batch_size, progress, callback, checkpoint_path,
            checkpoint_every, eval_every, eval_samples, lr, resume, eval_times, exact_eval, options,
            eval_share: float = 0.5):
    """The loop of :meth:`ae_ot.ot.SemiDiscreteOT.fit` (see there for the parameters)."""
    method = resolve_method(method, ot.unit)
    solver = make_method(method, ot.unit, ot.seed, dict(options))
    if tol is not None:
        require_positive(tol=tol)
    if time_limit is not None:
        require_positive(time_limit=time_limit)
    require_in_interval(0, 1, "; it is the largest fraction of time_limit the final held-out evaluation may take",
                        eval_share=eval_share)
    max_steps = solver.default_max_steps if max_steps is None else int(max_steps)
    if max_steps < 1:
        raise UserInputError(f"max_steps must be >= 1, got {max_steps}")
    batch_size = int(batch_size or solver.default_batch_size())
    if batch_size < 1:
        raise UserInputError(f"batch_size must be >= 1, got {batch_size}")
    n = ot.num_targets
    exact = ot.exact_measures_available() and n <= EXACT2D_MAX_TARGETS if exact_eval is None else bool(exact_eval)
    if exact and not ot.exact_measures_available():
        raise UserInputError(f"exact_eval=True needs a 2-D problem in one process; this one has d = {ot.dim}")
    adaptive = tol is not None and eval_every is None
    if eval_samples is None:
        eval_samples = _samples_for_floor(PRECISE_FLOOR * tol, n) if tol else 1 << 20
        eval_samples = max(eval_samples, 1 << 20)
    # Screening levels (SCREEN_LEVELS), those that cost less than half the precise evaluation: with the
    # default precise floor ~tol only the 2 tol screen (a quarter of the samples). A screen's
    # corrected estimate is imprecise (its floor is above tol), hence the pass margins.
    screen_levels = []
    if adaptive and not exact:
        for floor_factor, margin in SCREEN_LEVELS:
            samples = _samples_for_floor(floor_factor * tol, n)
            if samples < eval_samples / 2 and all(samples > s for s, _ in screen_levels):
                screen_levels.append((samples, margin))
    if tol is not None and not exact and noise_floor(ot.unit.weights, eval_samples) > tol:
        warnings.warn(f"eval_samples={eval_samples} gives a noise floor of "
                      f"{noise_floor(ot.unit.weights, eval_samples):.3g} > tol={tol}; stopping uses the "
                      f"noise-corrected error, which is then imprecise", stacklevel=3)
    evaluate = _Evaluator(ot, solver, exact, int(eval_samples), screen_levels)
    eval_every = int(eval_every or 0)

    checkpoint = _checkpoint_path(ot, checkpoint_path)
    state, report = None, None
    signature = None
    if checkpoint is not None:
        signature = fit_signature(ot, method, solver, batch_size)
    if checkpoint is not None and resume and checkpoint.exists():
        saved = read_checkpoint_for_resume(checkpoint)
        check_resumable(saved, signature, checkpoint, max_steps)
        ot.load_state_dict(saved)
        del saved
        state = ot.fit_state if ot.fit_state is not None and ot.fit_state.get("method") == method else None
        report = ot.report if state is not None else None
    ot.fit_signature = signature
    # What the solver held when the run began (the warm start, or the heights of an earlier fit):
    # a fit that does not converge never returns anything worse (_return_best). It is kept in the
    # state, with the best evaluated iterate, so that a resumed run compares what an uninterrupted
    # one would.
    if state is None:
        start = {"heights": ot.unit_heights.clone(), "step": 0}
        state = solver.init_state(ot.unit_heights, batch_size)
        state["fit_start"] = start
    else:  # a checkpoint without them: its heights are where this part of the run began
        start = state.setdefault("fit_start", {"heights": ot.unit_heights.clone(), "step": state["step"]})
    report = report or FitReport(method=method, batch_size=batch_size)
    report.tol = tol
    report.kernel = solver.kernel()
    ot.report, ot.fit_state = report, state
    if lr is None:
        lr = solver.default_lr()
    require_positive(lr=lr)

    bar = _progress_bar(ot, method, report, state, max_steps, time_limit) if progress else None
    solver_time, eval_time = report.wall_time, report.eval_time  # continue the clocks of a resumed run
    last_eval = None
    last_eval_samples = None  # held-out samples of last_eval (None: exact areas)
    last_eval_seconds = 0.0  # ... and the seconds it took
    best = state.get("fit_best")  # the evaluated iterate of lowest held-out error: {"key", "heights", "step", "record"}
    pending_times = sorted(t for t in (eval_times or []) if t > solver_time)
    next_adaptive_eval = 0.0  # solver time of the next adaptive evaluation
    # When a time-limited fit ends with one held-out evaluation and nothing else (no tol, no
    # evaluation schedule: AE-OT's call), the limit covers that evaluation too, so the call returns
    # within time_limit. Its cost is predicted from the steps' measured seconds per sample (scoring
    # dominates both; an evaluation scores the top 1, a step mostly too) to decide when the solve
    # stops; the evaluation may take at most eval_share of the limit (by default half: at least
    # half of the limit solves), and it stops at the limit whatever it costs (grow_within).
    # Measured before: AE-OT's 150 s solve over 55,000 MNIST codes was followed by a 2^20-sample
    # evaluation of ~40 s that its budget did not count.
    reserve_final = time_limit is not None and not adaptive and not eval_every and not eval_times and not exact

    # Steps that scored the top 1 only (info["top_k"] == 1), as an evaluation does: their seconds
    # per sample predict the final evaluation's, with EVAL_RATE_MARGIN. All the steps' rate
    # over-predicts it: on AE-OT's 55,000 demo codes (120-s budget, a slow day) the top-2 warm-up
    # made it 53.6 us per sample against the evaluation's 27-39, and the solve stopped at 66.7 s
    # with 26 s of the budget unused (docs/benchmarks.md).
    top1_seconds, top1_samples = 0.0, 0

    def seconds_per_sample() -> float:
        """Predicted seconds per held-out sample: the top-1 steps' measured rate x EVAL_RATE_MARGIN,
        else all the steps' rate (an over-estimate, so the reserve errs early; 0 before any step)."""
        if top1_samples:
            return EVAL_RATE_MARGIN * top1_seconds / top1_samples
        return solver_time / state["samples"] if state["samples"] else 0.0

    def final_eval_seconds() -> float:
        """The reserved final evaluation's predicted cost (0 when none is reserved, or before the
        solve has had its share of the limit, 1 - eval_share)."""
        if not reserve_final or solver_time < time_limit * (1 - eval_share):
            return 0.0
        return evaluate.precise_samples * seconds_per_sample()

    def first_check_due() -> bool:
        """Whether the first adaptive check may run: once the training samples drawn are at least
        1 / EVAL_FRACTION times the check's samples (always once the history holds an evaluation,
        a resumed run's included, and for exact areas).

        A check's sample costs about a training sample (both score every target; a check only the
        top 1, so this errs late), so the first check is held until it costs at most EVAL_FRACTION of
        the solver time, like the later ones. Counting samples, not seconds, keeps the schedule
        the same on every run of a seed. Before, it came at step 5: on MNIST codes (N = 10,000) a
        4M-sample screen took 22.8 s of a 180-s budget to report 65.7%.
        """
        if report.history or exact:
            return True
        return state["samples"] * EVAL_FRACTION >= evaluate.first_stage_samples

    def record(kind: str, samples: int | None = None, staged: _StagedEvaluation | None = None,
               seconds: float | None = None) -> dict:
        """Evaluate and append to the history: ``samples`` fresh ones (default eval_samples), or
        grow ``staged`` to them, within ``seconds`` when given (``grow_within``)."""
        nonlocal eval_time, last_eval, last_eval_samples, last_eval_seconds, best
        started = time.perf_counter()
        if staged is None:
            result = evaluate(state, kind, samples)
            last_eval_samples = None if exact else (samples or evaluate.precise_samples)
        elif seconds is None:
            result = staged.grow_to(samples, kind)
            last_eval_samples = staged.samples
        else:
            result = staged.grow_within(samples, kind, seconds, ot.comm)
            last_eval_samples = staged.samples
        last_eval_seconds = time.perf_counter() - started
        eval_time += last_eval_seconds
        if ot.comm.enabled:  # the adaptive schedule and start_affordable read them: the same values on every rank
            clocks = ot.comm.allreduce(torch.tensor([eval_time, last_eval_seconds], dtype=torch.float64,
                                                    device=ot.comm.device()), "max")
            eval_time, last_eval_seconds = float(clocks[0]), float(clocks[1])
        report.eval_time = eval_time
        entry = {"step": state["step"], "time": solver_time, "wall": solver_time + eval_time,
                 "samples": state["samples"], **result}
        report.history.append(entry)
        last_eval = result
        if best is None or _error_key(result) < tuple(best["key"]):
            best = {"key": _error_key(result), "heights": solver.solution(state).clone(), "step": state["step"],
                    "record": entry}
            state["fit_best"] = best
        return result

    def start_affordable(final_samples: int | None) -> bool:
        """Whether comparing the start fits in what is left of a time limit that counts the final
        evaluation (always without one). Past the limit the start is compared all the same when the
        last iterate has an empty cell: a late return rather than a broken solution."""
        if not reserve_final or final_samples is None or report.final.get("empty_cells", 0):
            return True
        # timed from the final evaluation's own seconds per sample
        return solver_time + eval_time + _start_screen_samples(final_samples) * last_eval_seconds / final_samples <= time_limit

    def evaluate_start(final_samples: int | None) -> dict:
        """Held-out errors of the starting heights on as many samples as the final evaluation drew
        (exact areas when it used them), screened first on a fraction of them: the start is
        evaluated in full (kind "start") only when the screen (kind "start-screen") does not show it
        to be worse than the best evaluated iterate."""
        nonlocal eval_time
        started = time.perf_counter()
        if final_samples is None:
            result = ot.unit.errors_from_measures(ot.exact_cell_measures(start["heights"]), None)
            result["kind"] = "exact"
        else:
            staged = _StagedEvaluation(evaluate, state, heights=start["heights"])
            screen = _start_screen_samples(final_samples)
            if screen < final_samples:
                # within what is left of a time limit that counts the final evaluation (one chunk at least)
                left = time_limit - solver_time - eval_time if reserve_final else math.inf
                result = staged.grow_within(screen, "start-screen", left, ot.comm)
            else:
                result = None
            if result is None or result["mean_rel_corrected"] <= SCREEN_LEVELS[0][1] * best["key"][0]:
                result = staged.grow_to(final_samples, "start")
        eval_time += time.perf_counter() - started
        report.eval_time = eval_time
        return result

    def record_final(kind: str) -> dict:
        """The fit's closing evaluation. When it is reserved in time_limit: eval_samples drawn in
        chunks until the limit (a noisier report rather than a late return, whatever it was
        predicted to cost)."""
        if not reserve_final:
            return record(kind)
        return record(kind, evaluate.precise_samples, evaluate.staged(state),
                      seconds=time_limit - solver_time - eval_time)

    try:
        while state["step"] < max_steps:
            started, samples_before = time.perf_counter(), state["samples"]
            info = solver.step(state, lr)
            state["step"] += 1
            _guard_finite(solver, state, info)
            elapsed = time.perf_counter() - started
            solver_time += elapsed
            if info.get("top_k") == 1:
                top1_seconds += elapsed
                top1_samples += state["samples"] - samples_before
            if ot.comm.enabled:
                # Every rank must stop and evaluate at the same step, or their collectives no
                # longer pair up: all ranks read the slowest rank's clocks.
                clocks = ot.comm.allreduce(torch.tensor([solver_time, top1_seconds], dtype=torch.float64,
                                                        device=ot.comm.device()), "max")
                solver_time, top1_seconds = float(clocks[0]), float(clocks[1])
            report.steps, report.samples = state["step"], state["samples"]
            report.restarts = state.get("restarts", 0)
            report.wall_time = solver_time
            rec = {"step": state["step"], "time": solver_time, "samples": state["samples"], **info}
            stop = info.get("stop_reason", "grad_tol") if info.get("converged") else None
            if time_limit is not None and solver_time + final_eval_seconds() >= time_limit:
                stop = stop or "time_limit"
            if state["step"] >= max_steps:
                stop = stop or "max_steps"
            due = bool(eval_every and state["step"] % eval_every == 0)
            if pending_times and solver_time >= pending_times[0]:
                due = True
                while pending_times and solver_time >= pending_times[0]:
                    pending_times.pop(0)
            if (adaptive and not stop and state["step"] >= 5 and solver_time >= next_adaptive_eval
                    and first_check_due()):
                result = None
                check_started = eval_time
                staged = None if exact else evaluate.staged(state)
                for samples, margin in evaluate.screen_levels:
                    result = record("screen", samples, staged)
                    if result["mean_rel_corrected"] > margin * tol:
                        break  # clearly above tol: no need to look closer yet
                else:
                    result = record("precise", evaluate.precise_samples, staged)
                rec.update(result)
                if result["kind"] != "screen" and result["mean_rel_corrected"] <= tol:
                    stop = "tol"
                # Keep the evaluations, the next check's included, under EVAL_FRACTION of the solver
                # time. The next check costs at least its first stage: this check's seconds per
                # sample times the first stage's samples. (Counting only the checks already made,
                # a first check that had cost a quarter of the solve allowed the next one at the
                # very next step: two 7-s screens back to back on MNIST codes, 2.41% then 2.49%.)
                next_cost = eval_time - check_started  # exact areas: every check costs the same
                if not exact:
                    next_cost *= evaluate.first_stage_samples / staged.samples
                next_adaptive_eval = max(solver_time, (eval_time + next_cost) / EVAL_FRACTION)
                error = result["mean_rel_corrected"]
                if stop is None and ERROR_DECAY_EXPONENT and math.isfinite(error) and error > tol:
                    # ... unless the error is predicted to reach tol sooner: error ~ t^(-1/exponent).
                    # (At least 10% lower: a check's own estimate is only that precise, and a check
                    # that failed by a hair and came again at once failed again, side by side.)
                    # Never before that 10% could have come: where checks are cheap next to the
                    # steps (fused kernel, N = 1,000), the budget alone allowed one at every step.
                    predicted = solver_time * max(error / tol, 1.1) ** ERROR_DECAY_EXPONENT
                    next_adaptive_eval = max(solver_time * 1.1 ** ERROR_DECAY_EXPONENT,
                                             (eval_time + next_cost) / EVAL_FRACTION_MAX,
                                             min(next_adaptive_eval, predicted))
            elif due or (stop and not adaptive):
                result = record("precise") if due else record_final("precise")
                rec.update(result)
                if tol is not None and result["mean_rel_corrected"] <= tol:
                    stop = stop or "tol"
            if bar is not None:
                _update_bar(bar, info, last_eval, state, solver_time, time_limit)
            if callback is not None:
                callback(rec)
            if checkpoint is not None and (stop or state["step"] % max(1, checkpoint_every) == 0):
                ot.unit_heights = solver.solution(state)
                ot.save(checkpoint)
            if stop:
                report.stop_reason = stop
                break
    finally:
        if bar is not None:
            bar.close()
    ot.unit_heights = solver.solution(state)
    if not last_eval or report.history[-1]["step"] != state["step"] or report.history[-1]["kind"] == "screen":
        record_final("final")
    note = ""
    if not _converged(report, tol):
        if start_affordable(last_eval_samples):
            note = _return_best(ot, report, start, best, evaluate_start(last_eval_samples))
        else:
            note = _return_best(ot, report, start, best, None)
    _verdict(report, tol, method, note)
    if checkpoint is not None:
        ot.save(checkpoint)
    return report


def _start_screen_samples(final_samples: int) -> int:
    """Samples of the screen that compares a fit's start before its full evaluation."""
    return max(FINAL_EVAL_CHUNK, int(final_samples * START_SCREEN_FRACTION))


def _tensor_digest(*tensors: torch.Tensor) -> str:
    """A 32-hex-digit digest of the dtypes, shapes and values of ``tensors``."""
    h = hashlib.blake2b(digest_size=16)
    for tensor in tensors:
        tensor = tensor.detach().cpu().contiguous()
        h.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        h.update(tensor.numpy().reshape(-1).view("uint8"))
    return h.hexdigest()


def problem_fingerprint(targets: torch.Tensor, weights: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> dict:
    """Digests of a problem's ``targets``, ``weights`` (as float64) and ``box`` (low and high): a
    checkpoint stores them so that a resume can tell, and name, what differs."""
    return {"targets": _tensor_digest(targets), "weights": _tensor_digest(weights.double()),
            "box": _tensor_digest(low, high)}


def fit_signature(ot, method: str, solver, batch_size: int) -> dict:
    """What a fit's checkpoint must agree on to be resumed: the problem's fingerprint
    (:func:`problem_fingerprint`), the seed, the method, its options and the batch size (each
    step's samples derive from the seed and the step, so these fix the run)."""
    options = solver.options
    options = dataclasses.asdict(options) if dataclasses.is_dataclass(options) else dict(options or {})
    return {"problem": problem_fingerprint(ot.targets, ot.unit.weights, ot.low, ot.high), "seed": int(ot.seed),
            "method": method, "options": options, "batch_size": int(batch_size)}


def read_checkpoint_for_resume(path: Path) -> dict:
    """The dict of a fit checkpoint, or :class:`UserInputError` for a garbage, empty, truncated or
    foreign file (as :meth:`SemiDiscreteOT.load` gives)."""
    return read_torch_file(path, ("targets", "weights", "low", "high", "heights"), "SemiDiscreteOT checkpoint",
                           "delete it or pass another checkpoint_path")


def check_resumable(saved: dict, signature: dict, path: Path, max_steps: int) -> None:
    """Raise :class:`UserInputError` naming what differs unless the checkpoint ``saved`` was written
    by a fit of the same problem, seed, method, options and batch size (``signature``, see
    :func:`fit_signature`), and holds no more than ``max_steps`` steps.

    A checkpoint without a stored signature (written by :meth:`SemiDiscreteOT.save`) is checked on
    what it holds: the problem's tensors, the seed and the method of its fit state.
    """
    fix = "delete it or pass another checkpoint_path"
    stored = saved.get("fit_signature") or {}
    problem = stored.get("problem") or problem_fingerprint(saved["targets"], saved["weights"], saved["low"],
                                                           saved["high"])
    for part in ("targets", "weights", "box"):
        if problem.get(part) != signature["problem"][part]:
            raise UserInputError(f"checkpoint {path} was written for other {part} (fingerprint "
                                 f"{str(problem.get(part))[:8]}.. vs {signature['problem'][part][:8]}.. here); {fix}")
    fit_state = saved.get("fit_state") if saved.get("version", 1) >= 2 else None
    seed = stored.get("seed", saved.get("seed"))
    if seed is not None and seed != signature["seed"]:
        raise UserInputError(f"checkpoint {path} was written with seed={seed}, this solver has seed={signature['seed']}; "
                             f"{fix}")
    method = stored.get("method", (fit_state or {}).get("method"))
    if method is not None and method != signature["method"]:
        raise UserInputError(f"checkpoint {path} was written by method={method!r}, this fit asks for "
                             f"method={signature['method']!r}; {fix}")
    options = stored.get("options")
    if options is not None and options != signature["options"]:
        names = sorted(set(options) | set(signature["options"]))
        differ = [f"{k}={options.get(k)!r} vs {signature['options'].get(k)!r}" for k in names
                  if options.get(k) != signature["options"].get(k)]
        raise UserInputError(f"checkpoint {path} was written with other options of method={method!r} "
                             f"({', '.join(differ)} here); {fix}")
    batch_size = stored.get("batch_size")
    if batch_size is not None and batch_size != signature["batch_size"]:
        raise UserInputError(f"checkpoint {path} was written with batch_size={batch_size}, this fit has "
                             f"batch_size={signature['batch_size']}; {fix}")
    steps = int((fit_state or {}).get("step", 0))
    if steps > max_steps:
        raise UserInputError(f"checkpoint {path} holds a run of {steps} steps, more than max_steps={max_steps}: "
                             f"resuming would return that longer run's heights; pass max_steps >= {steps} to "
                             f"continue it, or {fix} to start afresh")


def _checkpoint_path(ot, checkpoint_path) -> Path | None:
    if not checkpoint_path:
        return None
    suffix = f".rank{ot.comm.rank}" if ot.comm.enabled else ""
    return Path(str(checkpoint_path) + suffix)


def _guard_finite(solver, state: dict, info: dict) -> None:
    """Non-finite heights or training error count as a blow-up: back to the best iterate, or raise."""
    finite = math.isfinite(info.get("train_mean_rel", 0.0)) and all(
        bool(torch.isfinite(state[key]).all()) for key in solver.iterate_keys)
    if finite:
        return
    step = state["step"]
    if state.get("restarts", 0) >= MAX_RESTARTS or not solver.recover(state):
        raise SolverDivergedError(
            f"the heights became non-finite at step {step} and going back to the best iterate did not help "
            f"({state.get('restarts', 0)} restarts). Fix: pass a smaller lr (each restart halves it), a larger "
            f"batch_size, or check the targets for near-duplicates far outside the box")
    info["restarted"] = True


def _error_key(result: dict) -> tuple:
    """How an evaluation ranks iterates, lowest best: the noise-corrected mean relative error (an
    empty cell counts as a relative error of 1 in it), then the empty cells; NaN ranks last."""
    error = result.get("mean_rel_corrected", math.nan)
    return (error if math.isfinite(error) else math.inf, result.get("empty_cells", 0))


def _problems(report: FitReport, tol: float | None) -> list[str]:
    """What keeps the final evaluation from passing: an error above ``tol``, empty cells."""
    final = report.final
    error = final.get("mean_rel_corrected", float("nan"))
    empty = final.get("empty_cells", 0)
    kind = "exact" if final.get("exact") else "held-out, noise-corrected"
    problems = []
    if tol is not None and not error <= tol:
        problems.append(f"the final {kind} mean relative error {error:.4g} is above tol={tol:g}")
    if empty:
        problems.append(f"{empty} cell(s) received no held-out sample (empty cells)")
    return problems


def _converged(report: FitReport, tol: float | None) -> bool:
    """True when the stopping rule fired and the final evaluation passes (see :func:`_verdict`)."""
    return report.stop_reason in ("tol", "grad_tol", "precision") and not _problems(report, tol)


def _return_best(ot, report: FitReport, start: dict, best: dict | None, start_result: dict | None) -> str:
    """After a fit that did not converge: set the solver's heights to the best of the last iterate,
    the best evaluated iterate and the starting heights (``start_result``: evaluated on as many
    samples as the final evaluation; None when the time limit left no room to, and then the start
    is not a candidate), append the returned one's record to the history (so that
    ``report.final`` describes the heights returned), and return a note for the message ("" when
    the last iterate is returned)."""
    last = report.history[-1]
    last_key = _error_key(last)
    candidates = []
    if best is not None and best["step"] != last["step"] and tuple(best["key"]) < last_key:
        candidates.append((tuple(best["key"]), "the best evaluated iterate", best["heights"], best["step"], best["record"]))
    start_key = _error_key(start_result) if start_result is not None else None
    if start_key is not None and start_result["kind"] != "start-screen" and start_key < last_key:  # never a screen
        candidates.append((start_key, "the heights this fit started from", start["heights"], start["step"],
                           {"time": last["time"], "wall": last["wall"], "samples": last["samples"], **start_result}))
    if not candidates:
        return ""
    key, label, heights, step, record = min(candidates, key=lambda c: c[0])
    ot.unit_heights = heights
    report.history.append({**record, "step": step, "returned": label})

    def describe(k):
        return f"mean relative error {k[0]:.4g}, {k[1]} empty cell(s)"

    return (f"returned {label} (step {step}: {describe(key)}) instead of the last iterate (step {last['step']}: "
            f"{describe(last_key)})")


def _verdict(report: FitReport, tol: float | None, method: str, note: str = "") -> None:
    """``converged`` and ``message`` from the stop reason and the final evaluation; warn on failure.
    ``note`` (which heights were returned, when not the last iterate's) ends the message."""
    final = report.final
    error = final.get("mean_rel_corrected", float("nan"))
    kind = "exact" if final.get("exact") else "held-out, noise-corrected"
    problems = _problems(report, tol)
    report.converged = _converged(report, tol)
    ending = f"; {note}" if note else ""
    if report.converged:
        report.message = f"converged ({report.stop_reason}): final {kind} mean relative error {error:.4g}{ending}"
        return
    if problems and tol is not None:
        report.message = (f"not converged after {report.steps} steps ({report.stop_reason}): "
                          + "; ".join(problems) + f"{ending}. Fix: a larger time_limit / max_steps")
        warnings.warn(f"SemiDiscreteOT.fit(method={method!r}): {report.message}", ConvergenceWarning, stacklevel=4)
    else:
        # No tolerance asked for: the budget (time_limit / max_steps) ended the solve, and the
        # message is the whole verdict, empty cells included; it warns only when a tol was missed.
        shortfall = "; ".join(problems)
        report.message = (f"no tol given: stopped by {report.stop_reason} after {report.steps} steps; "
                          f"final {kind} mean relative error {error:.4g}"
                          + (f"; {shortfall} (a larger time_limit / max_steps fills them)" if shortfall else "")
                          + ending)


def _progress_bar(ot, method, report, state, max_steps, time_limit):
    from tqdm.auto import tqdm

    desc = f"sdot[{method}] N={ot.num_targets} d={ot.dim}"
    if time_limit is not None:  # the clock binds first in practice: a bar of solver seconds
        return tqdm(total=round(float(time_limit), 1), initial=round(min(report.wall_time, time_limit), 1),
                    desc=desc, unit="s", leave=False, dynamic_ncols=True,
                    bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}{postfix}]")
    return tqdm(total=max_steps, initial=state["step"], desc=desc, leave=False, dynamic_ncols=True)


def _update_bar(bar, info, last_eval, state, solver_time, time_limit) -> None:
    post = {"train_rel": f"{info.get('train_mean_rel', float('nan')):.3g}"}
    if last_eval:
        post["heldout"] = f"{last_eval['mean_rel_corrected']:.3g}"
        post["floor"] = f"{last_eval['noise_floor']:.2g}"
    if time_limit is not None:
        bar.set_postfix({"step": state["step"], **post}, refresh=False)
        bar.update(round(min(solver_time, time_limit) - bar.n, 3))
    else:
        bar.set_postfix(post, refresh=False)
        bar.update(1)
