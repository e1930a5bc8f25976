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

Examples
--------
The options are the parser's (``ae-ot compare --help``); ``main`` parses a list of them
and runs the command:

>>> from ae_ot.commands.compare import build_parser, main
>>> "--ckpt_paths" in build_parser().format_help()
True
>>> main(["--ckpt_paths", "a.ckpt", "b.ckpt", "--num_samples", "10000", "--output_dir", "compare"])  # doctest: +SKIP
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

from ae_ot.checks import UserInputError
from ae_ot.evaluation.scoring import check_sample_count
from ae_ot.experiments.budget import check_budget, checkpoint_marks, training_seconds
from ae_ot.experiments.comparison import run_comparison
from ae_ot.experiments.resume import TrainEntry
from ae_ot.parsing import CommandParser, command_line, function_parser, run_function

__all__ = ["main", "compare", "build_parser", "check_arguments", "check_train_config", "check_num_checkpoints"]


def _zoo_configs() -> list[str]:
    folder = Path(__file__).resolve().parents[2] / "models"
    return sorted(p.name for p in folder.glob("*.yaml")) if folder.is_dir() else []


def check_num_checkpoints(k: int) -> int:
    """``k`` if it is at least 1 (the final model), else a ValueError."""
    if k < 1:
        raise UserInputError(f"--num_checkpoints must be at least 1 (1: evaluate only the final model), got {k}")
    return k


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


def check_arguments(args) -> list[TrainEntry]:
    """Every check on the command line that needs no training: raises ValueError or
    FileNotFoundError naming the rule, the value and the fix; returns the configs to train."""
    if not args.ckpt_paths and not args.train_configs:
        raise UserInputError("nothing to compare: give --ckpt_paths and/or --train_configs")
    check_sample_count(args.num_samples)
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
        train_seconds = training_seconds(config, args.budget_minutes, fit_args)
        name = args.names[len(args.ckpt_paths) + i] if args.names is not None else Path(config).stem
        entries.append(TrainEntry(name, Path(config), out / "runs" / Path(config).stem,
                                  checkpoint_marks(args.budget_minutes, args.num_checkpoints, train_seconds)))
    return entries


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
    # the checks and the runs read the options as attributes, as compare_spec reads a parsed command line
    args = SimpleNamespace(ckpt_paths=list(ckpt_paths), names=None if names is None else list(names),
                           train_configs=list(train_configs), budget_minutes=budget_minutes,
                           num_checkpoints=num_checkpoints, fit_args=fit_args, keep_max_epochs=keep_max_epochs,
                           num_samples=num_samples, seed=seed, include_real=include_real, output_dir=output_dir,
                           no_progress=no_progress)
    command = command or command_line("ae-ot compare", vars(args))
    return run_comparison(args, check_arguments(args), command)


def build_parser() -> CommandParser:
    """``ae-ot compare``'s options: the parameters of :func:`compare` (all but ``command``)."""
    return function_parser("ae-ot compare", compare, description=__doc__.split("\n\n")[0])


def main(argv: list[str] | None = None) -> dict:
    command = "ae-ot compare " + shlex.join(argv if argv is not None else sys.argv[2:])
    return run_function(build_parser(), compare, argv, command=command)


