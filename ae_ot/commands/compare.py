"""``ae-ot compare``: one table, sample grids, bar charts and quality against training time for
several generators.

Evaluate existing checkpoints::

    ae-ot compare --ckpt_paths a.ckpt b.ckpt c.ckpt --num_samples 10000 --output_dir compare/

Or train the zoo first with the same wall-clock budget per model, then evaluate::

    ae-ot compare --train_configs models/ae_ot.yaml models/wgan.yaml models/wgan_gp.yaml \
        --budget_minutes 20 --num_checkpoints 5 --output_dir compare/

Each config is trained by ``ae-ot fit --config X --trainer.max_time=... --trainer.max_epochs=-1``
in a subprocess (so every model gets the whole budget, whatever ``max_epochs`` its config sets),
and its newest checkpoint is evaluated. AE-OT's OT stage, which runs after the trainer stops, is
taken out of its training time (``ot.time_limit`` + 20 s of encoding), so its autoencoder and its
OT solve together get the same wall-clock as every other model.

Quality against time: each fit also saves its model whenever its training wall-clock passes
i * B / K (i = 1 .. K - 1, B = ``--budget_minutes``, K = ``--num_checkpoints``, default 5; see
:class:`ae_ot.callbacks.WallClockCheckpoints`), and every one of these checkpoints is evaluated
besides the final one. A point's time is the training seconds at its checkpoint, plus, for AE-OT,
the seconds of an OT solve on the autoencoder of that moment (encoding + ``ot.time_limit``, as at
the end of its fit): AE-OT's first point comes later than the others'. ``quality_vs_time.png``
draws FID (classifier features), coverage and KL to uniform against these seconds, one line per
model. A fit whose loss turns NaN stops at once (:class:`ae_ot.callbacks.StopOnNonFiniteLoss`).

Resume and failures: results are written atomically into ``--output_dir``: ``compare_spec.json``
(what this compare is) and, per model, ``runs/<config>/`` with ``fit.log``, ``training.json``
(the fit ended), ``points/point-<k>.json`` (one per evaluated time point) and ``model.json`` (the
model is finished). The same command run again after Ctrl-C or ``kill -9`` continues where it
stopped: finished models and evaluated points are kept, and an interrupted fit starts again from
scratch (a wall-clock budget cannot be resumed). A model whose fit fails (NaN loss, an exception, a
non-zero exit) or whose evaluation fails is finished as *failed*, with its error in the table, and
the other models still run; delete its ``runs/<config>/`` to retry it. An output folder that holds
the results of a different compare (other configs, budget, checkpoints, samples, seed or fit
arguments) is refused before anything is trained.

Writes ``compare.md``, ``compare.json``, ``grids.png``, ``bars.png`` and, with
``--train_configs``, ``quality_vs_time.png`` into ``--output_dir``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from ae_ot.checks import UserInputError
from ae_ot.commands.parsing import CommandParser, command_line, function_parser, run_function

__all__ = ["main", "compare", "build_parser", "train_with_budget", "post_fit_seconds", "max_time_string", "checkpoint_marks",
           "check_arguments", "compare_spec", "check_output_folder", "run_model", "evaluate_point",
           "markdown_table", "points_table", "plot_grids", "plot_bars", "plot_quality_vs_time"]

TABLE_KEYS = ["fid_classifier", "precision_k3", "recall_k3", "density_k5", "coverage_k5",
              "w2_minibatch_classifier", "modes_covered", "kl_to_uniform", "mean_confidence"]
#: the metrics drawn against time
CURVE_KEYS = ["fid_classifier", "coverage_k5", "kl_to_uniform"]
#: the largest k of the k-NN metrics (density/coverage k=5): they need k + 1 samples
KNN_K = 5
SPEC_FILE = "compare_spec.json"
LOCK_FILE = ".compare.lock"
TIMED_DIR = "timed"
GRID_SIZE = 64


# --------------------------------------------------------------------------------------------
# Input checks (all of them run before anything is trained)
# --------------------------------------------------------------------------------------------
@dataclass
class TrainEntry:
    """One config to train: its display name, its run folder and its checkpoint marks."""

    name: str
    config: Path
    run_dir: Path
    post_fit_seconds: float
    marks: list[float]


def check_budget(minutes: float) -> float:
    """``minutes`` if it is a finite positive number, else a ValueError naming the fix."""
    if not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes > 0):
        raise UserInputError(f"--budget_minutes must be a positive number of minutes, got {minutes}; "
                             "give e.g. --budget_minutes 5")
    return float(minutes)


def check_num_samples(n: int) -> int:
    """``n`` if the k-NN metrics can use it (at least k + 1 = 6 samples), else a ValueError."""
    if n < KNN_K + 1:
        raise UserInputError(f"--num_samples must be at least {KNN_K + 1} (k + 1 for the k={KNN_K} density/coverage), "
                             f"got {n}; raise --num_samples (10000 for the published numbers)")
    return n


def check_num_checkpoints(k: int) -> int:
    """``k`` if it is at least 1 (the final model), else a ValueError."""
    if k < 1:
        raise UserInputError(f"--num_checkpoints must be at least 1 (1: evaluate only the final model), got {k}")
    return k


def _zoo_configs() -> list[str]:
    folder = Path(__file__).resolve().parents[2] / "models"
    return sorted(p.name for p in folder.glob("*.yaml")) if folder.is_dir() else []


def check_train_config(path: str | Path) -> str:
    """Check that ``path`` is a model config ``ae-ot fit --config`` can train; return its
    generator's class path. Raises ValueError (missing file, not YAML, no ``model.class_path``,
    or a class that is not a generator) naming the value and the fix."""
    import importlib

    import yaml

    from ae_ot.generators.base import GenerativeModel

    path = Path(path)
    zoo = _zoo_configs()
    hint = f" (the zoo in models/: {', '.join(zoo)})" if zoo else ""
    if not path.is_file():
        raise UserInputError(f"--train_configs: every entry must be an existing model config file, got {str(path)!r}, "
                             f"which does not exist; give a path such as models/ae_ot.yaml{hint}")
    try:
        cfg = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UserInputError(f"--train_configs: {path} is not a YAML model config ({type(err).__name__}: {err}); "
                             f"give a config written like models/ae_ot.yaml{hint}") from err
    class_path = ((cfg or {}).get("model") or {}).get("class_path") if isinstance(cfg, dict) else None
    if not isinstance(class_path, str):
        raise UserInputError(f"--train_configs: {path} names no generator (no model.class_path); a model config "
                             f"needs `model: class_path: ae_ot.generators.<Name>`, as models/ae_ot.yaml has{hint}")
    module_name, _, class_name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name or "ae_ot.generators"), class_name)
    except (ImportError, AttributeError) as err:
        raise UserInputError(f"--train_configs: {path} names the generator {class_path!r}, which cannot be imported "
                             f"({type(err).__name__}: {err}); use a generator of ae_ot.generators{hint}") from err
    if not (isinstance(cls, type) and issubclass(cls, GenerativeModel)):
        raise UserInputError(f"--train_configs: {path} names {class_path!r}, which is not a GenerativeModel; "
                             f"use a generator of ae_ot.generators{hint}")
    return class_path


def checkpoint_marks(budget_minutes: float, num_checkpoints: int, train_seconds: float) -> list[float]:
    """Training seconds at which a fit saves a timed checkpoint: i * budget / num_checkpoints for
    i = 1 .. num_checkpoints - 1, those before the end of its own training (``train_seconds``;
    less than the budget for AE-OT, whose OT stage is taken out). The final checkpoint is the last
    point."""
    step = budget_minutes * 60 / num_checkpoints
    return [round(i * step, 3) for i in range(1, num_checkpoints) if i * step < train_seconds]


def check_arguments(args) -> list[TrainEntry]:
    """Every check on the command line that needs no training: raises ValueError or
    FileNotFoundError naming the rule, the value and the fix; returns the configs to train."""
    if not args.ckpt_paths and not args.train_configs:
        raise UserInputError("nothing to compare: give --ckpt_paths and/or --train_configs")
    check_num_samples(args.num_samples)
    check_budget(args.budget_minutes)
    check_num_checkpoints(args.num_checkpoints)
    from ae_ot.checkpoint import check_generator_checkpoint

    for path in args.ckpt_paths:  # every one readable, of a known generator, before the first is evaluated
        check_generator_checkpoint(path)
    total = len(args.ckpt_paths) + len(args.train_configs)
    if args.names is not None and len(args.names) != total:
        raise UserInputError(f"--names gives {len(args.names)} names for {total} generators; give one per checkpoint "
                             "then one per config, or leave --names out")
    stems = [Path(c).stem for c in args.train_configs]
    for stem in set(stems):
        if stems.count(stem) > 1:
            clash = [c for c in args.train_configs if Path(c).stem == stem]
            raise UserInputError(f"--train_configs: {clash} share the file name {stem!r}, and each config's run folder "
                                 "is named after it; rename one of the files")
    fit_args = shlex.split(args.fit_args)
    out = Path(args.output_dir)
    entries = []
    for i, config in enumerate(args.train_configs):
        check_train_config(config)
        post_fit = post_fit_seconds(config, fit_args)
        train_seconds = args.budget_minutes * 60 - post_fit
        if train_seconds <= 0:
            raise UserInputError(f"budget_minutes={args.budget_minutes} leaves no training time for {config}: its OT "
                                 f"stage alone takes up to {post_fit:.0f} s; raise --budget_minutes or lower ot.time_limit")
        name = args.names[len(args.ckpt_paths) + i] if args.names is not None else Path(config).stem
        entries.append(TrainEntry(name, Path(config), out / "runs" / Path(config).stem, post_fit,
                                  checkpoint_marks(args.budget_minutes, args.num_checkpoints, train_seconds)))
    return entries


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compare_spec(args) -> dict:
    """What decides the stored results of a training compare: the configs (file names and
    contents), the budget, the time points, the fit arguments, the samples and the seed."""
    return {"train_configs": [{"name": Path(c).name, "sha256": _sha256(Path(c))} for c in args.train_configs],
            "budget_minutes": float(args.budget_minutes), "num_checkpoints": int(args.num_checkpoints),
            "fit_args": shlex.split(args.fit_args), "keep_max_epochs": bool(args.keep_max_epochs),
            "num_samples": int(args.num_samples), "seed": int(args.seed)}


def _read_json(path: Path) -> dict | None:
    """The JSON object in ``path``, or None when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_output_folder(out: Path, spec: dict | None) -> None:
    """Refuse an output folder that holds the results of a different compare.

    ``spec`` is this compare's :func:`compare_spec` (None for a compare of checkpoints only, which
    trains nothing and may overwrite the table of another checkpoint compare, as before).
    """
    fix = f"use another --output_dir, or delete {out} to start over"
    stored = _read_json(out / SPEC_FILE)
    if stored is not None:
        if spec is None:
            raise UserInputError(f"--output_dir {out} holds the results of a compare that trained "
                                 f"{[c['name'] for c in stored.get('train_configs', [])]}; this compare of checkpoints "
                                 f"only would overwrite them: {fix}")
        diffs = [f"{key}: {stored.get(key)!r} there, {value!r} now" for key, value in spec.items()
                 if stored.get(key) != value]
        if diffs:
            raise UserInputError(f"--output_dir {out} holds the results of a different compare ("
                                 + "; ".join(diffs) + f"); to continue that one, run its command again; otherwise {fix}")
    elif spec is not None and (out / "compare.json").is_file():
        previous = (_read_json(out / "compare.json") or {}).get("command", "an earlier command")
        raise UserInputError(f"--output_dir {out} holds the results of another compare ({previous}); {fix}")


@contextlib.contextmanager
def output_lock(out: Path):
    """Hold an exclusive lock on ``out`` while a compare writes into it (released by the kernel
    when the process dies, so a killed compare never blocks the next one)."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:        # not POSIX: no lock
        yield
        return
    with open(out / LOCK_FILE, "a+") as handle:       # "a+": the holder's pid stays until we hold the lock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            handle.seek(0)
            raise UserInputError(f"another `ae-ot compare` (pid {handle.read().strip() or '?'}) is writing into {out} "
                                 "right now; wait for it to finish or use another --output_dir") from err
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# Equal-budget training
# --------------------------------------------------------------------------------------------
def max_time_string(minutes: float) -> str:
    """Minutes -> Lightning's ``DD:HH:MM:SS``."""
    if not minutes > 0:
        raise UserInputError(f"budget_minutes must be positive, got {minutes}")
    seconds = max(1, round(minutes * 60))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    mins, secs = divmod(rest, 60)
    return f"{days:02d}:{hours:02d}:{mins:02d}:{secs:02d}"


def newest_checkpoint(folder: Path, exclude: Path | None = None) -> Path | None:
    """The most recently written ``*.ckpt`` under ``folder``, outside ``exclude``."""
    ckpts = [p for p in Path(folder).rglob("*.ckpt") if exclude is None or Path(exclude) not in p.parents]
    ckpts.sort(key=lambda p: p.stat().st_mtime)
    return ckpts[-1] if ckpts else None


# seconds reserved for what a model does after Lightning's loop: AE-OT encodes the training set
# (~10 s on the CPU) and then solves OT for at most ot.time_limit seconds, its final held-out
# evaluation included (the solver stops early for it; before, that evaluation, ~40 s over 55,000
# codes, came on top of the budget)
_ENCODE_SECONDS = 20.0


def post_fit_seconds(config: str | Path, fit_args: list[str] | None = None) -> float:
    """Wall-clock a config's model spends after training ends (0 for all but AE-OT): the AE-OT OT
    stage's ``ot.time_limit`` (from the config, or a ``--model.init_args.ot.time_limit=`` override)
    plus the encoding of the training set."""
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
    return float(limit) + _ENCODE_SECONDS


def _callback_arg(class_name: str, **init_args) -> str:
    """``--trainer.callbacks+=`` argument that appends an :mod:`ae_ot.callbacks` callback."""
    spec = {"class_path": f"ae_ot.callbacks.{class_name}"}
    if init_args:
        spec["init_args"] = init_args
    return "--trainer.callbacks+=" + json.dumps(spec)


def fit_command(config: Path, train_minutes: float, run_dir: Path, marks: list[float],
                fit_args: list[str] | None = None, keep_max_epochs: bool = False) -> list[str]:
    """The ``ae-ot fit`` command line of one budgeted fit, with the timed-checkpoint and NaN callbacks."""
    cmd = [sys.executable, "-m", "ae_ot", "fit", "--config", str(config),
           f"--trainer.max_time={max_time_string(train_minutes)}", f"--trainer.default_root_dir={run_dir}",
           _callback_arg("StopOnNonFiniteLoss")]
    if marks:
        cmd.append(_callback_arg("WallClockCheckpoints", marks=marks, dirpath=str(Path(run_dir).resolve() / TIMED_DIR)))
    if not keep_max_epochs:
        cmd.append("--trainer.max_epochs=-1")
    return cmd + list(fit_args or [])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGKILL this child when its parent dies (``kill -9`` of ``ae-ot compare``
    must not leave a fit training on, beside the resumed compare)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except Exception:
        pass


def _run_logged(cmd: list[str], log_path: Path, timeout: float, label: str, progress_every: float | None) -> int:
    """Run ``cmd`` with its output in ``log_path``; print a line every ``progress_every`` seconds.
    Returns its exit code (-9 when it ran past ``timeout`` and was killed). Ctrl-C kills it too."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    started = time.perf_counter()
    with open(log_path, "w") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec)
        try:
            while True:
                left = timeout - (time.perf_counter() - started)
                if left <= 0:
                    proc.kill()
                    proc.wait()
                    return -9
                try:
                    return proc.wait(timeout=min(left, progress_every or left))
                except subprocess.TimeoutExpired:
                    print(f"  {label}: {(time.perf_counter() - started) / 60:.1f} min", flush=True)
        except BaseException:
            proc.kill()
            proc.wait()
            raise


def fit_error(log_path: Path, returncode: int) -> str:
    """One line saying why a fit failed: its exit code and the last error line of its log."""
    lines = [line.strip() for line in Path(log_path).read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error:" in line or "Exception:" in line or line.startswith("ae-ot fit: error")]
    why = errors[-1] if errors else (lines[-1] if lines else "no output")
    head = "killed after running past its timeout" if returncode == -9 else f"`ae-ot fit` exited with {returncode}"
    return f"{head}: {why} (log: {log_path})"


def train_with_budget(config: str | Path, budget_minutes: float, run_dir: Path, fit_args: list[str] | None = None,
                      keep_max_epochs: bool = False, timeout_factor: float = 3.0, marks: list[float] | None = None,
                      progress: bool = False) -> dict:
    """Run ``ae-ot fit --config config`` for ``budget_minutes`` of wall-clock in a subprocess.

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
        Training seconds at which to save timed checkpoints (:class:`ae_ot.callbacks.WallClockCheckpoints`).
    progress : bool
        Print the elapsed minutes every minute.

    Returns
    -------
    dict
        ``config``, ``command``, ``train_seconds`` (the subprocess' wall-clock), ``returncode``,
        ``log``, and ``checkpoint`` (the final one, relative to ``run_dir``; None with ``error``
        when the fit failed or wrote none).
    """
    config = Path(config)
    if not config.is_file():
        raise FileNotFoundError(f"training config {config} does not exist")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # AE-OT's OT solve runs after the trainer stops (on_fit_end), outside Lightning's max_time: take
    # it out of the budget so that its autoencoder + OT together get the same wall-clock as the others.
    post_fit = post_fit_seconds(config, fit_args)
    train_minutes = budget_minutes - post_fit / 60
    if train_minutes <= 0:
        raise UserInputError(f"budget_minutes={budget_minutes} leaves no training time for {config}: its OT stage "
                             f"alone takes up to {post_fit:.0f} s; raise --budget_minutes or lower ot.time_limit")
    cmd = fit_command(config, train_minutes, run_dir, marks or [], fit_args, keep_max_epochs)
    log_path = run_dir / "fit.log"
    started = time.perf_counter()
    # generous outer timeout: start-up, validation and checkpointing come on top of max_time
    timeout = budget_minutes * 60 * timeout_factor + 300
    returncode = _run_logged(cmd, log_path, timeout, config.stem, 60.0 if progress else None)
    seconds = time.perf_counter() - started
    result = {"config": str(config), "command": shlex.join(cmd), "train_seconds": round(seconds, 1),
              "post_fit_budget_seconds": post_fit, "returncode": returncode, "log": str(log_path), "checkpoint": None}
    ckpt = newest_checkpoint(run_dir, exclude=run_dir / TIMED_DIR) if returncode == 0 else None
    if returncode != 0:
        result["error"] = fit_error(log_path, returncode)
    elif ckpt is None:
        result["error"] = f"`ae-ot fit` wrote no checkpoint (log: {log_path})"
    else:
        result["checkpoint"] = str(ckpt.relative_to(run_dir))
    return result


# --------------------------------------------------------------------------------------------
# Evaluation of the time points
# --------------------------------------------------------------------------------------------
def time_points(run_dir: Path, training: dict) -> list[dict]:
    """The checkpoints of a budgeted fit to evaluate, in time order: the timed ones listed in
    ``timed/timeline.json``, then the final one (when the fit succeeded)."""
    from ae_ot.callbacks import MANIFEST_NAME

    timeline = _read_json(run_dir / TIMED_DIR / MANIFEST_NAME) or {}
    points = [{"index": i, "checkpoint": str(Path(TIMED_DIR) / c["file"]), "train_seconds": c["seconds"],
               "global_step": c.get("global_step"), "final": False}
              for i, c in enumerate(timeline.get("checkpoints", []))]
    if training.get("checkpoint"):
        seconds = timeline.get("train_seconds") or training["train_seconds"]
        points.append({"index": len(points), "checkpoint": training["checkpoint"], "train_seconds": seconds,
                       "global_step": None, "final": True})
    return points


def _run_config(run_dir: Path) -> dict:
    """The resolved config that ``ae-ot fit`` saved for the run in ``run_dir``."""
    import yaml

    configs = sorted(p for p in run_dir.rglob("config.yaml") if Path(run_dir, TIMED_DIR) not in p.parents)
    if not configs:
        raise FileNotFoundError(f"no config.yaml under {run_dir}: the fit saved none, so its training data is unknown")
    return yaml.safe_load(configs[-1].read_text()) or {}


def training_images(run_dir: Path):
    """The training images the fit in ``run_dir`` used (its DataModule, rebuilt from its config)."""
    import importlib

    data = _run_config(run_dir).get("data") or {}
    module_name, _, class_name = str(data.get("class_path", "ae_ot.data.MNISTDataModule")).rpartition(".")
    datamodule_class = getattr(importlib.import_module(module_name or "ae_ot.data"), class_name)
    datamodule = datamodule_class(**(data.get("init_args") or {}))
    datamodule.setup("fit")
    return datamodule.train_set.images


def _fit_device(run_dir: Path) -> str:
    """The device the fit trained on: the CPU when its config asked for it or there is no GPU."""
    import torch

    accelerator = str((_run_config(run_dir).get("trainer") or {}).get("accelerator", "auto"))
    return "cuda" if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "cpu"


def solve_ot_now(model, run_dir: Path, progress: bool) -> float:
    """Give an AE-OT model of a timed checkpoint its OT solution, as its fit does at the end
    (encode the training set, :meth:`~ae_ot.generators.AEOT.solve_ot` with the config's
    ``ot.time_limit``); returns the seconds of encoding + solving."""
    images = training_images(run_dir)
    model.to(_fit_device(run_dir))
    start = time.perf_counter()
    codes = model.encode_dataset(images, progress=progress)
    model.solve_ot(codes, progress=progress)
    return time.perf_counter() - start


def score_model(model, num_samples: int, seed: int, progress: bool):
    """Draw ``num_samples`` samples of ``model`` and score them on the classifier's features.
    Returns the result dict of :func:`ae_ot.commands.evaluate.evaluate_checkpoint` and the samples."""
    from ae_ot.commands.evaluate import finish_result
    from ae_ot.evaluation import evaluate_samples, get_classifier

    started = time.perf_counter()
    classifier = get_classifier(progress=progress)
    samples = model.sample(num_samples, seed=seed)
    sample_seconds = time.perf_counter() - started
    metrics = evaluate_samples(samples, classifier=classifier, seed=seed)
    result = {"generator": f"{type(model).__module__}.{type(model).__qualname__}", "num_samples": num_samples,
              "seed": seed, "sample_seconds": round(sample_seconds, 3), "metrics": metrics}
    return finish_result(result, samples, classifier, started), samples


def evaluate_point(point: dict, run_dir: Path, num_samples: int, seed: int, progress: bool):
    """Evaluate one time point of a budgeted fit.

    A timed AE-OT checkpoint has no OT solution yet: it is solved now (:func:`solve_ot_now`) and
    the seconds go on its time axis; the final AE-OT checkpoint brings the seconds its fit spent.
    Any error is caught and recorded. Returns the point's record (``seconds`` = training seconds +
    those of the OT stage, ``metrics`` or ``error``) and the samples (None on error).
    """
    from ae_ot.checkpoint import load_generator

    record = dict(point, post_fit_seconds=0.0, seconds=point["train_seconds"])
    try:
        model = load_generator(run_dir / point["checkpoint"])
        if hasattr(model, "solve_ot"):       # AE-OT: its OT stage is part of its time
            if model.has_ot_solution:
                report = model.sampler.report or {}
                record["post_fit_seconds"] = report.get("encode_and_solve_seconds", 0.0)
            else:
                record["post_fit_seconds"] = solve_ot_now(model, run_dir, progress)
        record["seconds"] = round(point["train_seconds"] + record["post_fit_seconds"], 3)
        result, samples = score_model(model, num_samples, seed, progress)
    except Exception as err:     # one bad point (or model) must not stop the compare
        record["error"] = f"{type(err).__name__}: {err}"
        return record, None
    record.update({k: result[k] for k in ("generator", "num_samples", "seed", "metrics", "classifier")})
    record["evaluation_seconds"] = result["seconds"]
    return record, samples


def _point_label(point: dict, count: int) -> str:
    what = "final" if point["final"] else f"{point['train_seconds']:.0f} s of training"
    return f"point {point['index'] + 1}/{count} ({what})"


def run_model(entry: TrainEntry, args) -> dict:
    """Train one config with the budget, evaluate its time points and return its table row,
    resuming from what ``entry.run_dir`` already holds.

    ``model.json`` there means the model is finished (its row is read back); ``training.json``
    means the fit ended (only missing points are evaluated); otherwise the folder is an interrupted
    fit and is trained again from scratch.
    """
    import torch

    from ae_ot.io import atomic_write, write_json_atomic

    run_dir, progress = entry.run_dir, not args.no_progress
    finished = _read_json(run_dir / "model.json")
    if finished is not None:
        print(f"{entry.name}: finished in an earlier run ({finished['status']}), kept", flush=True)
        # paths as seen from this run (the same folder may be reached by another relative path)
        ckpt = (finished.get("training") or {}).get("checkpoint")
        return dict(finished, name=entry.name, run_dir=str(run_dir), checkpoint=str(run_dir / ckpt) if ckpt else None)
    training = _read_json(run_dir / "training.json")
    if training is None:
        if run_dir.exists():
            print(f"{entry.name}: discarding the interrupted fit in {run_dir}", flush=True)
            shutil.rmtree(run_dir)
        print(f"{entry.name}: training {entry.config} for {args.budget_minutes} min -> {run_dir} "
              f"(log: {run_dir / 'fit.log'})", flush=True)
        training = train_with_budget(entry.config, args.budget_minutes, run_dir, shlex.split(args.fit_args),
                                     args.keep_max_epochs, marks=entry.marks, progress=progress)
        write_json_atomic(training, run_dir / "training.json")
        failed = f"  FAILED: {training['error']}" if training.get("error") else ""
        print(f"  {training['train_seconds']:.0f} s{failed}", flush=True)
    points = time_points(run_dir, training)
    records = []
    for point in points:
        path = run_dir / "points" / f"point-{point['index']}.json"
        record = _read_json(path)
        if record is None:
            print(f"  {entry.name}: evaluating {_point_label(point, len(points))}", flush=True)
            record, samples = evaluate_point(point, run_dir, args.num_samples, args.seed, progress)
            if samples is not None and point["final"]:
                atomic_write(run_dir / "grid.pt", lambda p, s=samples: torch.save(s[:GRID_SIZE].clone(), p))
            write_json_atomic(record, path)
            print(f"    {_point_summary(record)}", flush=True)
        records.append(record)
    row = _model_row(entry, training, records)
    write_json_atomic(row, run_dir / "model.json")
    return row


def _point_summary(record: dict) -> str:
    if record.get("error"):
        return f"at {record['seconds']:.0f} s: FAILED: {record['error']}"
    m = record["metrics"]
    return (f"at {record['seconds']:.0f} s: FID {m['fid_classifier']:.3g}, coverage {m['coverage_k5']:.3f}, "
            f"KL {m['kl_to_uniform']:.3f}")


def _model_row(entry: TrainEntry, training: dict, records: list[dict]) -> dict:
    """The table row of a trained model: its final point's metrics, or failed with the first error."""
    row = {"name": entry.name, "config": str(entry.config), "training": training,
           "train_seconds": training["train_seconds"], "points": records, "run_dir": str(entry.run_dir),
           "checkpoint": str(entry.run_dir / training["checkpoint"]) if training.get("checkpoint") else None}
    final = records[-1] if records and records[-1]["final"] else None
    if final is None or final.get("error"):
        row["status"] = "failed"
        row["error"] = training.get("error") or (final or {}).get("error") or "no checkpoint"
        return row
    row["status"] = "ok"
    row.update({k: final[k] for k in ("generator", "num_samples", "seed", "metrics", "classifier")})
    row["seconds"] = final["evaluation_seconds"]
    row["time_to_sample_seconds"] = final["seconds"]
    return row


def _grid_samples(row: dict):
    """The stored grid samples of a trained model's final point (None if there are none)."""
    import torch

    path = Path(row["run_dir"]) / "grid.pt"
    return torch.load(path, weights_only=True) if path.is_file() else None


def evaluate_checkpoints(args, used: set[str]) -> tuple[list[dict], list[tuple]]:
    """Rows and grid samples of the ``--ckpt_paths`` (evaluated on every run; not stored)."""
    from ae_ot.commands.evaluate import evaluate_checkpoint

    rows, named_samples = [], []
    for i, ckpt in enumerate(args.ckpt_paths):
        name = args.names[i] if args.names is not None else None
        row = {"name": name, "checkpoint": ckpt, "training": None, "train_seconds": None}
        print(f"evaluating {ckpt}", flush=True)
        try:
            result, samples = evaluate_checkpoint(ckpt, args.num_samples, args.seed, progress=not args.no_progress,
                                                  return_samples=True)
        except (ValueError, FileNotFoundError) as err:
            if not args.train_configs:
                raise
            rows.append(dict(row, name=name or Path(ckpt).stem, status="failed", error=f"{type(err).__name__}: {err}"))
            continue
        row["name"] = name or _default_name(result, used)
        used.add(row["name"])
        row.update({k: result[k] for k in ("generator", "num_samples", "seed", "metrics", "classifier", "seconds")})
        rows.append(dict(row, status="ok"))
        named_samples.append((row["name"], samples))
    return rows, named_samples


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------
def _fmt(key: str, metrics: dict) -> str:
    value = metrics[key]
    if key == "modes_covered":
        return f"{value}/{metrics['num_modes']}"
    if key == "fid_classifier" or key == "w2_minibatch_classifier":
        return f"{value:.3f}" if value < 100 else f"{value:.1f}"
    return f"{value:.3f}"


def _md_cell(text: str, limit: int = 160) -> str:
    """``text`` made safe for one markdown table cell (no pipes, no newlines), cut at ``limit``."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def markdown_table(rows: list[dict]) -> str:
    """Markdown table, one row per evaluated generator, best value of each column in bold
    (rows marked ``is_real`` take no part in "best"); a failed row says "failed" and its error."""
    from ae_ot.evaluation.metrics import HIGHER_IS_BETTER, METRIC_NAMES

    ok = [r for r in rows if r.get("metrics")]
    contenders = [r for r in ok if not r.get("is_real")]
    best = {}
    for key in TABLE_KEYS:
        values = [r["metrics"][key] for r in contenders]
        if values:
            best[key] = max(values) if HIGHER_IS_BETTER[key] else min(values)
    header = ["Generator"] + [METRIC_NAMES[k] + (" ↑" if HIGHER_IS_BETTER[k] else " ↓") for k in TABLE_KEYS]
    header += ["train s", "samples"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        if not r.get("metrics"):
            failed = "**failed**: " + _md_cell(r.get("error") or "unknown error")
            lines.append(f"| {r['name']} | " + " | ".join([failed] + [""] * (len(header) - 2)) + " |")
            continue
        cells = [r["name"]]
        for key in TABLE_KEYS:
            text = _fmt(key, r["metrics"])
            tied = len({c["metrics"][key] for c in contenders}) == 1
            if not r.get("is_real") and len(contenders) > 1 and not tied and r["metrics"][key] == best.get(key):
                text = f"**{text}**"
            cells.append(text)
        cells.append(f"{r['train_seconds']:.0f}" if r.get("train_seconds") is not None else "-")
        cells.append(str(r["num_samples"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def points_table(rows: list[dict]) -> str:
    """Markdown table of every evaluated time point: model, seconds (training + OT stage),
    training seconds, and the metrics of the quality-against-time figure."""
    from ae_ot.evaluation.metrics import HIGHER_IS_BETTER, METRIC_NAMES

    header = ["Generator", "point", "wall s (to sample)", "train s"]
    header += [METRIC_NAMES[k] + (" ↑" if HIGHER_IS_BETTER[k] else " ↓") for k in CURVE_KEYS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        for p in r.get("points") or []:
            cells = [r["name"], "final" if p["final"] else str(p["index"] + 1), f"{p['seconds']:.0f}",
                     f"{p['train_seconds']:.0f}"]
            if p.get("metrics"):
                cells += [_fmt(k, p["metrics"]) for k in CURVE_KEYS]
            else:
                cells += ["**failed**: " + _md_cell(p.get("error", ""))] + [""] * (len(CURVE_KEYS) - 1)
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _save_figure(fig, path: Path, dpi: int) -> Path:
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    from ae_ot.viz import save_figure

    try:
        save_figure(fig, path, dpi)
    finally:
        plt.close(fig)
    return path


def plot_grids(named_samples: list[tuple[str, "object"]], path: Path, n: int = GRID_SIZE) -> Path:
    """Sample grids side by side, one titled panel per generator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ae_ot.viz import make_grid

    k = len(named_samples)
    fig, axes = plt.subplots(1, k, figsize=(3.2 * k, 3.6), squeeze=False)
    for ax, (name, samples) in zip(axes[0], named_samples):
        grid = make_grid(samples[:n], nrow=8).numpy()
        if grid.shape[0] == 1:
            ax.imshow(grid[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(grid[:3].transpose(1, 2, 0), interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    return _save_figure(fig, path, dpi=110)


def plot_bars(rows: list[dict], path: Path) -> Path:
    """One bar chart per metric, one bar per generator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ae_ot.evaluation.metrics import HIGHER_IS_BETTER, METRIC_NAMES

    ok = [r for r in rows if r.get("metrics")]
    names = [r["name"] for r in ok]
    colors = [f"C{i % 10}" for i in range(len(ok))]
    fig, axes = plt.subplots(3, 3, figsize=(13, 9.5))
    for ax, key in zip(axes.flat, TABLE_KEYS):
        values = [r["metrics"][key] for r in ok]
        ax.bar(range(len(ok)), values, color=colors)
        title = METRIC_NAMES[key] + (" (higher is better)" if HIGHER_IS_BETTER[key] else " (lower is better)")
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(len(ok)))
        ax.set_xticklabels(names, rotation=25, ha="right", fontsize=8)
        if key in ("fid_classifier", "kl_to_uniform") and values and min(values) > 0 and \
                max(values) / max(min(values), 1e-12) > 100:
            ax.set_yscale("log")
        for i, v in enumerate(values):
            ax.annotate(f"{v:.3g}", (i, v), ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    return _save_figure(fig, path, dpi=100)


def plot_quality_vs_time(rows: list[dict], path: Path, budget_minutes: float | None = None) -> Path:
    """FID (classifier features), coverage and KL to uniform against wall-clock seconds (training,
    plus AE-OT's OT stage), one line per trained model; a real-data row is a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ae_ot.evaluation.metrics import HIGHER_IS_BETTER, METRIC_NAMES

    fig, axes = plt.subplots(1, len(CURVE_KEYS), figsize=(5.2 * len(CURVE_KEYS), 4.2), squeeze=False)
    for ax, key in zip(axes[0], CURVE_KEYS):
        values = []
        for i, row in enumerate(r for r in rows if r.get("points") is not None):
            points = [p for p in row["points"] if p.get("metrics")]
            xs, ys = [p["seconds"] for p in points], [p["metrics"][key] for p in points]
            values += ys
            label = row["name"] + (" (failed)" if row.get("status") == "failed" else "")
            ax.plot(xs, ys, marker="o", color=f"C{i % 10}", label=label)
        for row in rows:
            if row.get("is_real") and row.get("metrics"):
                ax.axhline(row["metrics"][key], color="gray", linestyle="--", label=row["name"])
                values.append(row["metrics"][key])
        if budget_minutes:
            ax.axvline(budget_minutes * 60, color="black", linewidth=0.6, linestyle=":")
        if key in ("fid_classifier", "kl_to_uniform") and values and min(values) > 0 and \
                max(values) / min(values) > 100:
            ax.set_yscale("log")
        ax.set_title(METRIC_NAMES[key] + (" ↑" if HIGHER_IS_BETTER[key] else " ↓"), fontsize=9)
        ax.set_xlabel("wall-clock seconds (training; AE-OT: + encoding and OT solve)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return _save_figure(fig, path, dpi=100)


def _default_name(result: dict, used: set[str]) -> str:
    base = result["generator"].rsplit(".", 1)[-1]
    name, i = base, 2
    while name in used:
        name, i = f"{base} ({i})", i + 1
    return name


def write_reports(out: Path, summary: dict, named_samples: list[tuple], budget_minutes: float | None) -> list[Path]:
    """Write compare.md, compare.json and the figures into ``out``, each atomically."""
    from ae_ot.io import atomic_write, write_json_atomic

    rows = summary["rows"]
    trained = any(r.get("points") is not None for r in rows)
    budget = f"{budget_minutes} min of training per model; " if trained else ""
    md = ["# Generator comparison\n", f"Command: `{summary['command']}`\n",
          f"{budget}{summary['num_samples']} samples per generator (seed {summary['seed']}). Features: the project's "
          "MNIST classifier (penultimate layer), not Inception; best value per column in bold.\n",
          markdown_table(rows), ""]
    md += [f"- {r['name']}: failed: {r.get('error')}" for r in rows if not r.get("metrics")]
    if trained:
        md += ["", "## Quality against time\n",
               "Seconds: the model's training wall-clock at each checkpoint, plus, for AE-OT, the encoding and OT "
               "solve that make its autoencoder of that moment a generator.\n", points_table(rows), "",
               "![quality against time](quality_vs_time.png)"]
    md += ["", "![samples](grids.png)", "", "![metrics](bars.png)", ""]
    written = [atomic_write(out / "compare.md", lambda p: p.write_text("\n".join(md))),
               write_json_atomic(summary, out / "compare.json")]
    if named_samples:
        written += [plot_grids(named_samples, out / "grids.png"), plot_bars(rows, out / "bars.png")]
    if trained:
        written.append(plot_quality_vs_time(rows, out / "quality_vs_time.png", budget_minutes))
    return written


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------
def compare(ckpt_paths: Sequence[str] = (), names: Sequence[str] | None = None, train_configs: Sequence[str] = (),
            budget_minutes: float = 5.0, num_checkpoints: int = 5, fit_args: str = "", keep_max_epochs: bool = False,
            num_samples: int = 10000, seed: int = 0, include_real: bool = False, output_dir: str = "compare",
            no_progress: bool = False, *, command: str | None = None) -> dict:
    """Evaluate checkpoints and/or train configs with an equal wall-clock budget and evaluate them
    (module docstring); write the table and figures into ``output_dir``. Every input check runs
    before anything is trained.

    Parameters
    ----------
    ckpt_paths : sequence of str
        checkpoints to evaluate
    names : sequence of str, optional
        display names, one per checkpoint then one per config (default: derived)
    train_configs : sequence of str
        configs to train with an equal wall-clock budget first (`ae-ot fit --config X`)
    budget_minutes : float
        training wall-clock budget per config, in minutes (fractions allowed)
    num_checkpoints : int
        time points per trained model: a checkpoint every budget/K minutes, the last one at the end of the
        budget (1: only the final model)
    fit_args : str
        extra arguments for every `ae-ot fit`, e.g. "--data.subset=20000"
    keep_max_epochs : bool
        keep the configs' max_epochs (default: -1, so each model trains for the whole budget)
    num_samples : int
        samples per generator
    seed : int
        sampling and evaluation seed
    include_real : bool
        add a row for real MNIST test images (Stacked MNIST if the generators are 3-channel)
    output_dir : str
        folder for compare.md/json, grids.png, bars.png, quality_vs_time.png and the runs; run the same
        command again to continue an interrupted compare
    no_progress : bool
        no progress lines and bars
    command : str, optional
        the command recorded in compare.md, compare.json and compare_spec.json (not an option; ``main``
        gives what was typed; default: a command line with these options)

    Returns
    -------
    dict
        The summary written to compare.json: the options and one row per generator.
    """
    from ae_ot.io import check_writable_path, write_json_atomic

    # the checks and the runs read the options as attributes, as compare_spec reads a parsed command line
    args = SimpleNamespace(ckpt_paths=list(ckpt_paths), names=None if names is None else list(names),
                           train_configs=list(train_configs), budget_minutes=budget_minutes,
                           num_checkpoints=num_checkpoints, fit_args=fit_args, keep_max_epochs=keep_max_epochs,
                           num_samples=num_samples, seed=seed, include_real=include_real, output_dir=output_dir,
                           no_progress=no_progress)
    command = command or command_line("ae-ot compare", vars(args))
    entries = check_arguments(args)
    out = Path(args.output_dir)
    check_writable_path(out / "compare.md", "--output_dir")
    spec = compare_spec(args) if entries else None
    with output_lock(out):
        check_output_folder(out, spec)
        from ae_ot.evaluation import get_classifier

        get_classifier(progress=not args.no_progress)  # before any training: a cache that cannot hold it is refused
        if spec is not None and not (out / SPEC_FILE).is_file():
            # the command is stored for the reader; check_output_folder compares the spec's keys only
            write_json_atomic(dict(spec, command=command), out / SPEC_FILE)
        try:
            trained = [run_model(entry, args) for entry in entries]
        except KeyboardInterrupt:
            print(f"\ninterrupted: run the same command again (same --output_dir {out}) to continue", file=sys.stderr)
            raise
        used = {e.name for e in entries}
        rows, named_samples = evaluate_checkpoints(args, used)
        rows += trained
        named_samples += [(r["name"], s) for r in trained if r.get("metrics") and (s := _grid_samples(r)) is not None]
        if args.include_real and named_samples:
            rows.append(_real_row(args, named_samples))
            named_samples.append((rows[-1]["name"], rows[-1].pop("samples")))

        from ae_ot.evaluation.metrics import METRIC_NAMES

        summary = {"command": command, "budget_minutes": args.budget_minutes if entries else None,
                   "num_checkpoints": args.num_checkpoints if entries else None, "num_samples": args.num_samples,
                   "seed": args.seed, "metric_names": METRIC_NAMES, "spec": spec, "rows": rows}
        written = write_reports(out, summary, named_samples, args.budget_minutes if entries else None)
    print(markdown_table(rows))
    print("wrote " + ", ".join(str(p) for p in written))
    if not any(r.get("metrics") for r in rows):
        raise UserInputError("no generator could be evaluated: " + "; ".join(f"{r['name']}: {r.get('error')}" for r in rows)
                             + f" (see {out / 'compare.md'})")
    return summary


def build_parser() -> CommandParser:
    """``ae-ot compare``'s options: the parameters of :func:`compare` (all but ``command``)."""
    return function_parser("ae-ot compare", compare, description=__doc__.split("\n\n")[0])


def main(argv: list[str] | None = None) -> dict:
    command = "ae-ot compare " + shlex.join(argv if argv is not None else sys.argv[2:])
    return run_function(build_parser(), compare, argv, command=command)


def _real_row(args, named_samples: list[tuple]) -> dict:
    """The row of real test images (Stacked MNIST when the generators are 3-channel), with its
    grid samples under ``samples``."""
    from ae_ot.commands.evaluate import evaluate_real

    channels = named_samples[0][1].shape[1]
    result, samples = evaluate_real("test", min(args.num_samples, 10000) if channels == 1 else args.num_samples,
                                    args.seed, stacked=channels == 3, progress=not args.no_progress,
                                    return_samples=True)
    return {"name": "real (test split)", "is_real": True, "checkpoint": None, "training": None, "train_seconds": None,
            "status": "ok", "samples": samples[:GRID_SIZE],
            **{k: result[k] for k in ("generator", "num_samples", "seed", "metrics")}}
