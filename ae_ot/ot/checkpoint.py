"""The solver's checkpoint format: reading it back, and the rule that decides whether a fit may resume one.

A checkpoint is the dict of :meth:`ae_ot.ot.solution.SemiDiscreteSolution.state_dict`: the
problem's tensors (targets, weights, box), the public heights, the seed and kernel settings, the
last report, and, when written by a fit, the fit state and the fit's signature
(:func:`fit_signature`). Each step's samples derive from (seed, step), so a fit resumed from its
checkpoint ends with the heights of an uninterrupted one; a checkpoint of another run is refused
with the difference named, never silently resumed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ae_ot.checks import UserInputError
from ae_ot.io import read_torch_file
from ae_ot.ot.problem import SemiDiscreteProblem, tensor_digest

__all__ = ["FORMAT_VERSION", "REQUIRED_KEYS", "read_solver_checkpoint", "check_format", "fit_signature", "check_resumable",
           "checkpoint_file"]

#: the checkpoint format this code writes and reads (older formats are refused)
FORMAT_VERSION = 3
#: the entries every solver checkpoint holds (besides ``version``)
REQUIRED_KEYS = ("targets", "weights", "low", "high", "heights")


def read_solver_checkpoint(path, hint: str = "pass a file written by SemiDiscreteOT.save or fit(checkpoint_path=...)"
                           ) -> dict:
    """The dict of a solver checkpoint (on the CPU), or :class:`UserInputError` naming the path and
    ``hint`` for a garbage, empty, truncated or foreign file, or one of another format version."""
    state = read_torch_file(path, REQUIRED_KEYS, "SemiDiscreteOT checkpoint", hint)
    check_format(state, f"SemiDiscreteOT checkpoint {path}")
    return state


def check_format(state: dict, source: str) -> None:
    """:class:`UserInputError` unless ``state`` (described as ``source``) has format :data:`FORMAT_VERSION`."""
    version = state.get("version", 1)
    if version != FORMAT_VERSION:
        raise UserInputError(f"{source} has format version {version}; this ae-ot reads version {FORMAT_VERSION} "
                             f"only: solve again (and delete the old file)")


def fit_signature(problem: SemiDiscreteProblem, seed: int, method: str, options, batch_size: int) -> dict:
    """What a fit's checkpoint must agree on to be resumed: the problem's fingerprint
    (:meth:`~ae_ot.ot.problem.SemiDiscreteProblem.fingerprint`), the seed, the method, its options
    and the batch size (each step's samples derive from the seed and the step, so these fix the run)."""
    return {"problem": problem.fingerprint(), "seed": int(seed), "method": method,
            "options": dataclasses.asdict(options), "batch_size": int(batch_size)}


def check_resumable(saved: dict, signature: dict, path: Path, max_steps: int) -> None:
    """Raise :class:`UserInputError` naming what differs unless the checkpoint ``saved`` was written
    by a fit of the same problem, seed, method, options and batch size (``signature``, see
    :func:`fit_signature`), and holds no more than ``max_steps`` steps.

    A checkpoint without a stored signature (written by ``save`` outside a fit) is checked on what
    it holds: the problem's tensors, the seed and the method of its fit state.
    """
    fix = "delete it or pass another checkpoint_path"
    stored = saved.get("fit_signature") or {}
    problem = stored.get("problem") or {"targets": tensor_digest(saved["targets"]),
                                        "weights": tensor_digest(saved["weights"].double()),
                                        "box": tensor_digest(saved["low"], saved["high"])}
    for part in ("targets", "weights", "box"):
        if problem.get(part) != signature["problem"][part]:
            raise UserInputError(f"checkpoint {path} was written for other {part} (fingerprint "
                                 f"{str(problem.get(part))[:8]}.. vs {signature['problem'][part][:8]}.. here); {fix}")
    fit_state = saved.get("fit_state") or {}
    seed = stored.get("seed", saved.get("seed"))
    if seed is not None and seed != signature["seed"]:
        raise UserInputError(f"checkpoint {path} was written with seed={seed}, this solver has "
                             f"seed={signature['seed']}; {fix}")
    method = stored.get("method", fit_state.get("method"))
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
    steps = int(fit_state.get("step", 0))
    if steps > max_steps:
        raise UserInputError(f"checkpoint {path} holds a run of {steps} steps, more than max_steps={max_steps}: "
                             f"resuming would return that longer run's heights; pass max_steps >= {steps} to "
                             f"continue it, or {fix} to start afresh")


def checkpoint_file(problem: SemiDiscreteProblem, checkpoint_path) -> Path | None:
    """The file a fit checkpoints to: ``checkpoint_path``, with ``.rank{r}`` appended when sharded."""
    if not checkpoint_path:
        return None
    suffix = f".rank{problem.comm.rank}" if problem.comm.enabled else ""
    return Path(str(checkpoint_path) + suffix)
