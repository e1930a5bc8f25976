"""What a fit did and its verdict: :class:`FitReport`, the warnings and errors a fit raises, and the
rule that picks the heights a fit that did not converge returns."""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

__all__ = ["FitReport", "ConvergenceWarning", "SolverDivergedError", "error_key", "converged", "pick_returned",
           "write_verdict"]


class ConvergenceWarning(UserWarning):
    """A fit ended without meeting its tolerance, or with an empty cell.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warnings.warn("2 empty cells", ConvergenceWarning)
    >>> caught[0].category.__name__
    'ConvergenceWarning'
    """


class SolverDivergedError(RuntimeError):
    """The iterates became non-finite and going back to the best iterate did not help.

    Examples
    --------
    >>> issubclass(SolverDivergedError, Exception)
    True
    """


@dataclass
class FitReport:
    """What a fit did: counts, times, the held-out error history and the verdict.

    Attributes
    ----------
    method : str
    steps, samples : int
        Steps taken and training samples drawn.
    wall_time, eval_time : float
        Solver seconds (evaluations excluded) and evaluation seconds.
    converged : bool
        True only when the stopping rule fired (``stop_reason`` "tol", or the method's own rule
        "grad_tol" / "precision") and the final evaluation passes ``tol`` with no empty cell.
    stop_reason, message : str
        What ended the solve, and the verdict in words.
    tol : float or None; batch_size : int
    restarts : int
        Returns to the best iterate after a blow-up.
    kernel : str
        The score kernel of the steps: "fused", "torch", "keops" ("none": exact2d).
    history : list of dict
        One record per evaluation: step, time (solver seconds), wall (solver plus evaluation
        seconds), samples (training samples so far), kind ("screen", "precise", "exact", "final",
        "start") and the error metrics of
        :meth:`~ae_ot.ot.unit_problem.UnitBoxProblem.errors_from_measures`. When a fit returns
        heights other than its last iterate's, the last record is theirs, ``returned`` saying which.

    Examples
    --------
    >>> report = FitReport(steps=3, converged=True, stop_reason="tol")
    >>> report.converged, report.steps
    (True, 3)
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
    restarts: int = 0
    kernel: str = ""
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


def error_key(result: dict) -> tuple:
    """How an evaluation ranks iterates, lowest best: the noise-corrected mean relative error (NaN
    ranks last), then the empty cells.

    Examples
    --------
    >>> error_key({"mean_rel_corrected": 0.1}) < error_key({"mean_rel_corrected": 0.2})
    True
    """
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


def converged(report: FitReport, tol: float | None) -> bool:
    """True when the stopping rule fired and the final evaluation passes (``tol``, no empty cell)."""
    return report.stop_reason in ("tol", "grad_tol", "precision") and not _problems(report, tol)


def pick_returned(report: FitReport, start: dict, best: dict | None, start_result: dict | None):
    """After a fit that did not converge: the best of the last iterate, the best evaluated iterate
    ``best`` and the starting heights ``start`` (``start_result``: their evaluation on as many
    samples as the final one; None or a screen: not a candidate).

    Returns ``(heights, note)``: ``(None, "")`` when the last iterate stays; otherwise the heights
    to return, with their record appended to ``report.history`` and a note for the message.
    """
    last = report.history[-1]
    last_key = error_key(last)
    candidates = []
    if best is not None and best["step"] != last["step"] and tuple(best["key"]) < last_key:
        candidates.append((tuple(best["key"]), "the best evaluated iterate", best["heights"], best["step"], best["record"]))
    start_key = error_key(start_result) if start_result is not None else None
    if start_key is not None and start_result["kind"] != "start-screen" and start_key < last_key:
        candidates.append((start_key, "the heights this fit started from", start["heights"], start["step"],
                           {"time": last["time"], "wall": last["wall"], "samples": last["samples"], **start_result}))
    if not candidates:
        return None, ""
    key, label, heights, step, record = min(candidates, key=lambda c: c[0])
    report.history.append({**record, "step": step, "returned": label})

    def describe(k):
        return f"mean relative error {k[0]:.4g}, {k[1]} empty cell(s)"

    return heights, (f"returned {label} (step {step}: {describe(key)}) instead of the last iterate "
                     f"(step {last['step']}: {describe(last_key)})")


def write_verdict(report: FitReport, tol: float | None, method: str, note: str = "") -> None:
    """Set ``converged`` and ``message`` from the stop reason and the final evaluation; issue a
    :class:`ConvergenceWarning` when a ``tol`` was missed or a cell is empty (with a ``tol``).
    ``note`` (which heights were returned, when not the last iterate's) ends the message."""
    final = report.final
    error = final.get("mean_rel_corrected", float("nan"))
    kind = "exact" if final.get("exact") else "held-out, noise-corrected"
    problems = _problems(report, tol)
    report.converged = converged(report, tol)
    ending = f"; {note}" if note else ""
    if report.converged:
        report.message = f"converged ({report.stop_reason}): final {kind} mean relative error {error:.4g}{ending}"
        return
    if problems and tol is not None:
        report.message = (f"not converged after {report.steps} steps ({report.stop_reason}): "
                          + "; ".join(problems) + f"{ending}. Fix: a larger time_limit / max_steps")
        warnings.warn(f"SemiDiscreteOT.fit(method={method!r}): {report.message}", ConvergenceWarning, stacklevel=6)
    else:  # no tol: the budget ended the solve, and the message is the whole verdict
        shortfall = "; ".join(problems)
        report.message = (f"no tol given: stopped by {report.stop_reason} after {report.steps} steps; "
                          f"final {kind} mean relative error {error:.4g}"
                          + (f"; {shortfall} (a larger time_limit / max_steps fills them)" if shortfall else "")
                          + ending)
