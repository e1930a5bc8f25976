"""The fit driver: :func:`solve` runs a method's steps on a problem and returns a solution.

It owns what every method shares: the clocks (solver time, evaluation time), the held-out
evaluations and the stopping rule (:mod:`ae_ot.ot.schedule`), checkpoints and exact resume
(:mod:`ae_ot.ot.checkpoint`), the progress bar, the callback, the recovery from blow-ups
(non-finite heights go back to the best iterate), and the verdict (:mod:`ae_ot.ot.report`).

Guarantees: each step's samples derive from (seed, step), so a resumed run ends with the heights
of an uninterrupted one; non-finite heights are never returned; a fit that does not converge
returns the best of its last iterate, its best evaluated iterate and the heights it started from.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import torch

from ae_ot.checks import UserInputError
from ae_ot.ot.checkpoint import check_resumable, checkpoint_file, fit_signature, read_solver_checkpoint
from ae_ot.ot.evaluation import FINAL_EVAL_CHUNK, StagedEvaluation, evaluate_heights
from ae_ot.ot.methods import EXACT2D_MAX_TARGETS, MethodState, SolverMethod, make_method, resolve_method
from ae_ot.ot.problem import SemiDiscreteProblem
from ae_ot.ot.report import FitReport, SolverDivergedError, converged, error_key, pick_returned, write_verdict
from ae_ot.ot.schedule import PRECISE_FLOOR, SCREEN_LEVELS, FinalEvaluationBudget, StoppingSchedule, samples_for_floor
from ae_ot.ot.settings import FitSettings
from ae_ot.ot.solution import SemiDiscreteSolution
from ae_ot.ot.unit_problem import noise_floor

__all__ = ["solve", "FitState", "MAX_RESTARTS", "START_SCREEN_FRACTION"]

#: blow-ups recovered from before a fit gives up
MAX_RESTARTS = 10
#: a fit that did not converge screens its start on this fraction of the final evaluation's samples
#: (at least FINAL_EVAL_CHUNK) before evaluating it on all of them
START_SCREEN_FRACTION = 1 / 16


@dataclass
class FitState:
    """What a fit carries from step to step, and its checkpoint resumes: the method's state, the
    heights the fit started from (``start``: heights, step) and its best evaluated iterate
    (``best``: key, heights, step, record; None before the first evaluation)."""

    method: MethodState
    start: dict
    best: dict | None = None

    def to_dict(self) -> dict:
        return {**self.method.to_dict(), "fit_start": self.start, "fit_best": self.best}

    @classmethod
    def from_dict(cls, state_class, values: dict) -> "FitState":
        return cls(state_class.from_dict(values), values["fit_start"], values.get("fit_best"))


def solve(problem: SemiDiscreteProblem, start: SemiDiscreteSolution, method: str = "auto",
          settings: FitSettings | None = None, options=None, *, seed: int = 0, progress: bool = True,
          callback=None, checkpoint_path=None, resume: bool = True) -> SemiDiscreteSolution:
    """Solve ``problem`` from the solution ``start``; see :meth:`ae_ot.ot.SemiDiscreteOT.fit`.

    ``method``: a name of :data:`~ae_ot.ot.methods.METHODS` or "auto"; ``options``: its options
    (dataclass, dict or None); ``settings``: the budget, tolerance and evaluation; every random
    draw derives from ``seed``. Returns the solution, with its report.
    """
    return _Run(problem, start, method, settings or FitSettings(), options, seed, checkpoint_path,
                resume).run(progress, callback)


class _Run:
    """One call of :func:`solve`: its settings resolved against the method, its clocks and its state."""

    def __init__(self, problem, start, method, settings, options, seed, checkpoint_path, resume):
        name = resolve_method(method, problem.unit)
        self.method: SolverMethod = make_method(name, problem.unit, seed, options)
        self.problem, self.name, self.seed = problem, name, seed
        self.tol, self.time_limit = settings.tol, settings.time_limit
        self.max_steps = self.method.default_max_steps if settings.max_steps is None else int(settings.max_steps)
        self.batch_size = int(settings.batch_size or self.method.default_batch_size())
        self.lr = self.method.default_lr() if settings.lr is None else settings.lr
        self.eval_every, self.checkpoint_every = int(settings.eval_every or 0), settings.checkpoint_every
        self._resolve_evaluation(settings)
        self.checkpoint = checkpoint_file(problem, checkpoint_path)
        self.signature = (fit_signature(problem, seed, name, self.method.options, self.batch_size)
                          if self.checkpoint is not None else None)
        self.fit, report = self._restore(start, resume)
        self.report = report or FitReport(method=name, batch_size=self.batch_size)
        self.report.tol, self.report.kernel = self.tol, self.method.kernel()
        self.solver_time, self.eval_time = self.report.wall_time, self.report.eval_time  # a resumed run's clocks
        self.pending_times = sorted(t for t in settings.eval_times if t > self.solver_time)
        self.last_eval, self.last_eval_samples, self.last_eval_seconds = None, None, 0.0

    def _resolve_evaluation(self, settings: FitSettings) -> None:
        """Exact or sampled evaluation, the precise evaluation's samples, the tol schedule and the
        final evaluation's share of a time limit."""
        problem, tol, n = self.problem, self.tol, self.problem.num_targets
        available = problem.exact_measures_available()
        exact = available and n <= EXACT2D_MAX_TARGETS if settings.exact_eval is None else bool(settings.exact_eval)
        if exact and not available:
            raise UserInputError(f"exact_eval=True needs a 2-D problem in one process; this one has d = {problem.dim}")
        adaptive = tol is not None and settings.eval_every is None
        eval_samples = settings.eval_samples
        if eval_samples is None:
            eval_samples = max(samples_for_floor(PRECISE_FLOOR * tol, n) if tol else 1 << 20, 1 << 20)
        if tol is not None and not exact and noise_floor(problem.unit.weights, eval_samples) > tol:
            warnings.warn(f"eval_samples={eval_samples} gives a noise floor of "
                          f"{noise_floor(problem.unit.weights, eval_samples):.3g} > tol={tol}; stopping uses the "
                          f"noise-corrected error, which is then imprecise", stacklevel=5)
        self.exact, self.eval_samples = exact, int(eval_samples)
        self.schedule = StoppingSchedule(tol, eval_samples, n, exact) if adaptive else None
        reserve = not adaptive and not self.eval_every and not settings.eval_times and not exact
        self.budget = FinalEvaluationBudget(self.time_limit, self.eval_samples, settings.eval_share, reserve)

    def _restore(self, start: SemiDiscreteSolution, resume: bool):
        """The fit state and report to continue: a checkpoint's, if there is one to resume, else fresh."""
        fit = report = None
        if self.checkpoint is not None and resume and self.checkpoint.exists():
            saved = read_solver_checkpoint(self.checkpoint, "delete it or pass another checkpoint_path")
            check_resumable(saved, self.signature, self.checkpoint, self.max_steps)
            start = SemiDiscreteSolution.from_state_dict(self.problem, saved)
            if start.fit_state is not None and start.fit_state.get("method") == self.name:
                fit, report = FitState.from_dict(self.method.State, start.fit_state), start.report
        if fit is None:
            current = start.unit_heights
            fit = FitState(self.method.init_state(self.problem.warm_start(self.seed), current, self.batch_size),
                           {"heights": current.clone(), "step": 0})
        return fit, report

    # ---- the loop ----------------------------------------------------------------------------------
    def run(self, progress: bool, callback) -> SemiDiscreteSolution:
        state, report = self.fit.method, self.report
        bar = _progress_bar(self, state) if progress else None
        try:
            while state.step < self.max_steps:
                rec, stop = self._step()
                stop = self._evaluate_if_due(rec, stop)
                if bar is not None:
                    _update_bar(bar, rec, self.last_eval, state, self.solver_time, self.time_limit)
                if callback is not None:
                    callback(rec)
                if self.checkpoint is not None and (stop or state.step % max(1, self.checkpoint_every) == 0):
                    solution = self._solution(self.method.solution(state))
                    solution.save(self.checkpoint, self.seed)
                if stop:
                    report.stop_reason = stop
                    break
        finally:
            if bar is not None:
                bar.close()
        return self._finish()

    def _step(self) -> tuple[dict, str | None]:
        """One step, timed; returns its record and the stop reason it gives (None: go on)."""
        state, report, comm = self.fit.method, self.report, self.problem.comm
        started, samples_before = time.perf_counter(), state.samples
        info = self.method.step(state, self.lr)
        state.step += 1
        self._guard_finite(info)
        elapsed = time.perf_counter() - started
        self.solver_time += elapsed
        self.budget.record_step(elapsed, state.samples - samples_before, info.get("top_k"))
        if comm.enabled:  # every rank stops and evaluates at the same step: all read the slowest clocks
            clocks = comm.allreduce(torch.tensor([self.solver_time, self.budget.top1_seconds], dtype=torch.float64,
                                                 device=comm.device()), "max")
            self.solver_time, self.budget.top1_seconds = float(clocks[0]), float(clocks[1])
        report.steps, report.samples, report.restarts = state.step, state.samples, state.restarts
        report.wall_time = self.solver_time
        rec = {"step": state.step, "time": self.solver_time, "samples": state.samples, **info}
        stop = info.get("stop_reason", "grad_tol") if info.get("converged") else None
        if self.budget.stop(self.solver_time, state.samples):
            stop = stop or "time_limit"
        if state.step >= self.max_steps:
            stop = stop or "max_steps"
        return rec, stop

    def _guard_finite(self, info: dict) -> None:
        """Non-finite heights or training error count as a blow-up: back to the best iterate, or raise."""
        state = self.fit.method
        finite = math.isfinite(info.get("train_mean_rel", 0.0)) and all(
            bool(torch.isfinite(getattr(state, key)).all()) for key in self.method.iterate_keys)
        if finite:
            return
        if state.restarts >= MAX_RESTARTS or not self.method.recover(state):
            raise SolverDivergedError(
                f"the heights became non-finite at step {state.step} and going back to the best iterate did not "
                f"help ({state.restarts} restarts). Fix: pass a smaller lr (each restart halves it), a larger "
                f"batch_size, or check the targets for near-duplicates far outside the box")
        info["restarted"] = True

    def _evaluate_if_due(self, rec: dict, stop: str | None) -> str | None:
        """The evaluations this step calls for (``eval_every``, ``eval_times``, the tol schedule, the
        final one); returns the stop reason, "tol" when a precise evaluation passes."""
        state = self.fit.method
        due = bool(self.eval_every and state.step % self.eval_every == 0)
        if self.pending_times and self.solver_time >= self.pending_times[0]:
            due = True
            while self.pending_times and self.solver_time >= self.pending_times[0]:
                self.pending_times.pop(0)
        schedule = self.schedule
        if (schedule is not None and not stop
                and schedule.next_due(state.step, self.solver_time, state.samples, bool(self.report.history))):
            return self._check(rec)
        if due or (stop and schedule is None):
            result = self._record("precise") if due else self._record_final("precise")
            rec.update(result)
            if self.tol is not None and result["mean_rel_corrected"] <= self.tol:
                stop = stop or "tol"
        return stop

    def _check(self, rec: dict) -> str | None:
        """One check of the tol schedule: screens, then the precise evaluation if they pass."""
        schedule, state = self.schedule, self.fit.method
        check_started = self.eval_time
        staged = None if self.exact else StagedEvaluation(self.problem.unit, self.method.solution(state),
                                                          self.seed, state.step)
        result = None
        for samples, margin in schedule.levels:
            result = self._record("screen", samples, staged)
            if not schedule.screen_passes(result["mean_rel_corrected"], margin):
                break
        else:
            result = self._record("precise", schedule.precise_samples, staged)
        rec.update(result)
        stop = "tol" if result["kind"] != "screen" and result["mean_rel_corrected"] <= self.tol else None
        schedule.record(self.solver_time, self.eval_time, self.eval_time - check_started,
                        None if staged is None else staged.samples, result["mean_rel_corrected"], stop is not None)
        return stop

    # ---- evaluations -------------------------------------------------------------------------------
    def _record(self, kind: str, samples: int | None = None, staged: StagedEvaluation | None = None,
                seconds: float | None = None) -> dict:
        """Evaluate and append to the history: ``samples`` fresh ones (default eval_samples), or
        grow ``staged`` to them, within ``seconds`` when given."""
        state, comm = self.fit.method, self.problem.comm
        started = time.perf_counter()
        if staged is None:
            samples = samples or self.eval_samples
            result = evaluate_heights(self.problem, self.method.solution(state), kind, self.exact, self.seed,
                                      state.step, samples)
            self.last_eval_samples = None if self.exact else samples
        else:
            result = staged.grow_to(samples, kind) if seconds is None else staged.grow_within(samples, kind, seconds)
            self.last_eval_samples = staged.samples
        self.last_eval_seconds = time.perf_counter() - started
        self.eval_time += self.last_eval_seconds
        if comm.enabled:  # the schedule reads them: the same values on every rank
            clocks = comm.allreduce(torch.tensor([self.eval_time, self.last_eval_seconds], dtype=torch.float64,
                                                 device=comm.device()), "max")
            self.eval_time, self.last_eval_seconds = float(clocks[0]), float(clocks[1])
        self.report.eval_time = self.eval_time
        entry = {"step": state.step, "time": self.solver_time, "wall": self.solver_time + self.eval_time,
                 "samples": state.samples, **result}
        self.report.history.append(entry)
        self.last_eval = result
        best = self.fit.best
        if best is None or error_key(result) < tuple(best["key"]):
            self.fit.best = {"key": error_key(result), "heights": self.method.solution(state).clone(),
                             "step": state.step, "record": entry}
        return result

    def _record_final(self, kind: str) -> dict:
        """The closing evaluation; when the time limit counts it, drawn in chunks until the limit."""
        if not self.budget.reserve:
            return self._record(kind)
        state = self.fit.method
        staged = StagedEvaluation(self.problem.unit, self.method.solution(state), self.seed, state.step)
        return self._record(kind, self.eval_samples, staged, seconds=self.time_limit - self.solver_time - self.eval_time)

    def _start_affordable(self, final_samples: int | None) -> bool:
        """Whether comparing the start fits in what is left of a time limit that counts the final
        evaluation (always without one, and always when the last iterate has an empty cell)."""
        if not self.budget.reserve or final_samples is None or self.report.final.get("empty_cells", 0):
            return True
        screen_seconds = _start_screen_samples(final_samples) * self.last_eval_seconds / final_samples
        return self.solver_time + self.eval_time + screen_seconds <= self.time_limit

    def _evaluate_start(self, final_samples: int | None) -> dict:
        """The start's errors on as many samples as the final evaluation (exact areas when it used
        them), screened first on a fraction of them: evaluated in full (kind "start") only when the
        screen (kind "start-screen") does not show it to be worse than the best evaluated iterate."""
        start, state = self.fit.start, self.fit.method
        started = time.perf_counter()
        if final_samples is None:
            result = evaluate_heights(self.problem, start["heights"], "exact", True, self.seed, state.step, 0)
        else:
            staged = StagedEvaluation(self.problem.unit, start["heights"], self.seed, state.step)
            screen, result = _start_screen_samples(final_samples), None
            if screen < final_samples:
                left = self.time_limit - self.solver_time - self.eval_time if self.budget.reserve else math.inf
                result = staged.grow_within(screen, "start-screen", left)
            if result is None or result["mean_rel_corrected"] <= SCREEN_LEVELS[0][1] * self.fit.best["key"][0]:
                result = staged.grow_to(final_samples, "start")
        self.eval_time += time.perf_counter() - started
        self.report.eval_time = self.eval_time
        return result

    # ---- the end -----------------------------------------------------------------------------------
    def _finish(self) -> SemiDiscreteSolution:
        """The final evaluation, the heights returned and the verdict; the last checkpoint."""
        state, report = self.fit.method, self.report
        heights = self.method.solution(state)
        last = report.history[-1] if report.history else None
        if not self.last_eval or last["step"] != state.step or last["kind"] == "screen":
            self._record_final("final")
        note = ""
        if not converged(report, self.tol):
            final_samples = self.last_eval_samples
            start_result = self._evaluate_start(final_samples) if self._start_affordable(final_samples) else None
            returned, note = pick_returned(report, self.fit.start, self.fit.best, start_result)
            heights = heights if returned is None else returned
        write_verdict(report, self.tol, self.name, note)
        solution = self._solution(heights)
        if self.checkpoint is not None:
            solution.save(self.checkpoint, self.seed)
        return solution

    def _solution(self, unit_heights: torch.Tensor) -> SemiDiscreteSolution:
        centred = self.problem.unit.center(unit_heights.double().clone())
        return SemiDiscreteSolution(self.problem, centred, self.report, self.fit.to_dict(), self.signature)


def _start_screen_samples(final_samples: int) -> int:
    """Samples of the screen that compares a fit's start before its full evaluation."""
    return max(FINAL_EVAL_CHUNK, int(final_samples * START_SCREEN_FRACTION))


def _progress_bar(run: _Run, state: MethodState):
    from tqdm.auto import tqdm

    desc = f"sdot[{run.name}] N={run.problem.num_targets} d={run.problem.dim}"
    if run.time_limit is not None:  # the clock binds first in practice: a bar of solver seconds
        return tqdm(total=round(float(run.time_limit), 1), initial=round(min(run.report.wall_time, run.time_limit), 1),
                    desc=desc, unit="s", leave=False, dynamic_ncols=True,
                    bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}{postfix}]")
    return tqdm(total=run.max_steps, initial=state.step, desc=desc, leave=False, dynamic_ncols=True)


def _update_bar(bar, info, last_eval, state, solver_time, time_limit) -> None:
    post = {"train_rel": f"{info.get('train_mean_rel', float('nan')):.3g}"}
    if last_eval:
        post["heldout"] = f"{last_eval['mean_rel_corrected']:.3g}"
        post["floor"] = f"{last_eval['noise_floor']:.2g}"
    if time_limit is not None:
        bar.set_postfix({"step": state.step, **post}, refresh=False)
        bar.update(round(min(solver_time, time_limit) - bar.n, 3))
    else:
        bar.set_postfix(post, refresh=False)
        bar.update(1)
