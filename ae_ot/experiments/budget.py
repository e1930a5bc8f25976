"""Equal wall-clock budgets: one ``ae-ot fit`` per config for the same minutes, with timed checkpoints.

Every model gets the whole budget whatever ``max_epochs`` its config sets (``--trainer.max_epochs=-1``
and ``--trainer.max_time``). AE-OT's OT stage runs after the trainer stops, so its training time is
the budget less :func:`post_fit_seconds` (its ``ot.time_limit`` plus :data:`ENCODE_SECONDS`): its
autoencoder and its OT solve together get the same wall-clock as every other model. Timed
checkpoints (:class:`ae_ot.callbacks.WallClockCheckpoints`) are saved at :func:`checkpoint_marks`.
"""

from __future__ import annotations

import math
import shlex
import time
from pathlib import Path

from ae_ot.checks import UserInputError
from ae_ot.experiments.children import callback_arg, fit_command, fit_error, newest_checkpoint, run_logged

__all__ = ["ENCODE_SECONDS", "TIMED_DIR", "check_budget", "max_time_string", "checkpoint_marks", "post_fit_seconds",
           "training_seconds", "train_with_budget"]

#: seconds reserved for AE-OT's encoding of the training set after Lightning's loop, before its OT solve
ENCODE_SECONDS = 20.0
#: the folder of a budgeted fit's timed checkpoints, in its run folder
TIMED_DIR = "timed"


def check_budget(minutes: float) -> float:
    """``minutes`` as a float if it is a finite positive number, else UserInputError naming the fix.

    Examples
    --------
    >>> check_budget(20)
    20.0
    """
    if not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes > 0):
        raise UserInputError(f"--budget_minutes must be a positive number of minutes, got {minutes}; "
                             "give e.g. --budget_minutes 5")
    return float(minutes)


def max_time_string(minutes: float) -> str:
    """Minutes -> Lightning's ``DD:HH:MM:SS`` (at least one second).

    Examples
    --------
    >>> max_time_string(90)
    '00:01:30:00'
    """
    if not minutes > 0:
        raise UserInputError(f"budget_minutes must be positive, got {minutes}")
    seconds = max(1, round(minutes * 60))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    mins, secs = divmod(rest, 60)
    return f"{days:02d}:{hours:02d}:{mins:02d}:{secs:02d}"


def checkpoint_marks(budget_minutes: float, num_checkpoints: int, train_seconds: float) -> list[float]:
    """Training seconds at which a fit saves a timed checkpoint: i * budget / num_checkpoints for
    i = 1 .. num_checkpoints - 1, those before the end of its own training (``train_seconds``;
    less than the budget for AE-OT). The final checkpoint is the last point.

    Examples
    --------
    >>> checkpoint_marks(20, 5, 700)
    [240.0, 480.0]
    """
    step = budget_minutes * 60 / num_checkpoints
    return [round(i * step, 3) for i in range(1, num_checkpoints) if i * step < train_seconds]


def post_fit_seconds(config: str | Path, fit_args: list[str] | None = None) -> float:
    """Wall-clock a config's model spends after training ends (0 for all but AE-OT): AE-OT's
    ``ot.time_limit`` (from the config, or a ``--model.init_args.ot.time_limit=`` override) plus
    :data:`ENCODE_SECONDS`. UserInputError when that limit is null."""
    import yaml

    cfg = yaml.safe_load(Path(config).read_text()) or {}
    model = cfg.get("model") or {}
    if not str(model.get("class_path", "")).endswith("AEOT"):
        return 0.0
    limit = ((model.get("init_args") or {}).get("ot") or {}).get("time_limit", 150.0)
    for arg in fit_args or []:
        for prefix in ("--model.init_args.ot.time_limit=", "--model.ot.time_limit="):
            if arg.startswith(prefix):
                limit = arg[len(prefix):]
    if limit in (None, "null", "None"):
        raise UserInputError(f"{config}: an equal wall-clock budget needs a finite ot.time_limit for AE-OT")
    return float(limit) + ENCODE_SECONDS


def training_seconds(config: str | Path, budget_minutes: float, fit_args: list[str] | None = None) -> float:
    """The seconds of a budgeted fit's training: the budget less :func:`post_fit_seconds`;
    UserInputError when that leaves none."""
    post_fit = post_fit_seconds(config, fit_args)
    if budget_minutes * 60 - post_fit <= 0:
        raise UserInputError(f"budget_minutes={budget_minutes} leaves no training time for {config}: its OT stage "
                             f"alone takes up to {post_fit:.0f} s; raise --budget_minutes or lower ot.time_limit")
    return budget_minutes * 60 - post_fit


def train_with_budget(config: str | Path, budget_minutes: float, run_dir: Path, fit_args: list[str] | None = None,
                      keep_max_epochs: bool = False, timeout_factor: float = 3.0, marks: list[float] | None = None,
                      progress: bool = False) -> dict:
    """Run ``ae-ot fit --config config`` for ``budget_minutes`` of wall-clock in a child process.

    Parameters
    ----------
    config : path
        The model config.
    budget_minutes : float
        Wall-clock of training plus, for AE-OT, its post-fit OT stage (:func:`post_fit_seconds`).
    run_dir : path
        The fit's ``default_root_dir``; gets ``fit.log`` and, with ``marks``, ``timed/``.
    fit_args : list of str, optional
        Extra ``ae-ot fit`` arguments.
    keep_max_epochs : bool
        Keep the config's ``max_epochs`` instead of -1.
    timeout_factor : float
        The fit is killed after ``budget * timeout_factor + 300`` seconds.
    marks : list of float, optional
        Training seconds at which to save timed checkpoints.
    progress : bool
        Print the elapsed minutes every minute.

    Returns
    -------
    dict
        ``config``, ``command``, ``train_seconds`` (the child's wall-clock), ``post_fit_budget_seconds``,
        ``returncode``, ``log``, and ``checkpoint`` (the final one, relative to ``run_dir``; None with
        ``error`` when the fit failed or wrote none).
    """
    config, run_dir = Path(config), Path(run_dir)
    if not config.is_file():
        raise FileNotFoundError(f"training config {config} does not exist")
    run_dir.mkdir(parents=True, exist_ok=True)
    train_seconds, post_fit = training_seconds(config, budget_minutes, fit_args), post_fit_seconds(config, fit_args)
    cmd = fit_command(config, f"--trainer.max_time={max_time_string(train_seconds / 60)}",
                      f"--trainer.default_root_dir={run_dir}", callback_arg("StopOnNonFiniteLoss"))
    if marks:
        cmd.append(callback_arg("WallClockCheckpoints", marks=marks, dirpath=str(run_dir.resolve() / TIMED_DIR)))
    if not keep_max_epochs:
        cmd.append("--trainer.max_epochs=-1")
    cmd += list(fit_args or [])
    log_path = run_dir / "fit.log"
    started = time.perf_counter()
    # generous outer timeout: start-up, validation and checkpointing come on top of max_time
    returncode = run_logged(cmd, log_path, budget_minutes * 60 * timeout_factor + 300, config.stem,
                            60.0 if progress else None)
    result = {"config": str(config), "command": shlex.join(cmd), "train_seconds": round(time.perf_counter() - started, 1),
              "post_fit_budget_seconds": post_fit, "returncode": returncode, "log": str(log_path), "checkpoint": None}
    ckpt = newest_checkpoint(run_dir, exclude=run_dir / TIMED_DIR) if returncode == 0 else None
    if returncode != 0:
        result["error"] = fit_error(log_path, returncode)
    elif ckpt is None:
        result["error"] = f"`ae-ot fit` wrote no checkpoint (log: {log_path})"
    else:
        result["checkpoint"] = str(ckpt.relative_to(run_dir))
    return result
