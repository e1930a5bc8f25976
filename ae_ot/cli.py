"""The ``ae-ot`` command line.

``ae-ot fit|validate|test`` is Lightning's CLI (``--config``, dotted overrides such as
``--trainer.max_epochs=1``, ``--print_config``) in subclass mode: ``--model`` picks any
:class:`~ae_ot.generators.GenerativeModel` of the zoo and ``--data`` any DataModule. Each run saves
its resolved config as ``lightning_logs/version_k/config.yaml``. Checkpoints and that config are
written atomically (:mod:`ae_ot.lightning_io`), unless ``--trainer.plugins`` names a
``CheckpointIO`` of its own.

The other sub-commands (``sample``, ``umap``, ``evaluate``, ``compare``, ...) are plain functions
in :mod:`ae_ot.commands`, loaded only when called so that ``ae-ot fit`` starts fast. Their options
are built the way ``fit``'s are: jsonargparse reads the function's signature and docstring
(:func:`ae_ot.parsing.function_parser`), so each has ``--config``, ``--print_config`` and
``--help``, and ``ae-ot sample --num_samples 16`` is ``sample(..., num_samples=16)`` in Python.

Errors: bad input raises :class:`ae_ot.checks.UserInputError` (every input check of the package
does) or a file error (``OSError``: a missing checkpoint, a read-only folder); the CLI prints those
as one line and exits with status 2. Every other exception is a bug, and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys

from ae_ot.checks import UserInputError
from ae_ot.parsing import concise_parser_message

__all__ = ["main", "check_resume", "user_error_cause", "EXTRA_COMMANDS", "LIGHTNING_COMMANDS", "USER_ERRORS",
           "lightning_cli_class"]

#: sub-commands that are not Lightning trainer entry points: name -> "module:function"
EXTRA_COMMANDS = {
    "sample": "ae_ot.commands.sample:main",
    "umap": "ae_ot.commands.umap:main",
    "toy2d": "ae_ot.commands.toy2d:main",
    "evaluate": "ae_ot.commands.evaluate:main",
    "compare": "ae_ot.commands.compare:main",
    "train-classifier": "ae_ot.commands.train_classifier:main",
    "latent-compare": "ae_ot.commands.latent_compare:main",
}

#: what the CLI reports as one line; anything else is a bug and keeps its traceback
USER_ERRORS: tuple[type[BaseException], ...] = (UserInputError, OSError)

#: Lightning's trainer entry points (``predict`` is not offered: no generator defines a predict step;
#: ``ae-ot sample`` draws samples)
LIGHTNING_COMMANDS = ("fit", "validate", "test")


def lightning_cli_class():
    """The LightningCLI subclass of ``ae-ot fit|validate|test`` (imports Lightning and the zoo)."""
    import pytorch_lightning as pl
    from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

    import ae_ot.data  # noqa: F401  (registers the DataModules for subclass mode)
    import ae_ot.generators  # noqa: F401  (registers the zoo for subclass mode)
    from ae_ot.generators.base import GenerativeModel
    from ae_ot.lightning_io import AtomicSaveConfigCallback, with_atomic_checkpoint_io

    class ConciseErrorParser(LightningArgumentParser):
        """A parser whose errors are one line: ``model.latent_dim: Expected a <class 'int'>. Got
        value: abc`` instead of the usage and jsonargparse's tree of Union subtypes."""

        def error(self, message: str, ex: Exception | None = None):
            if not self.exit_on_error:  # parsing a Union member: jsonargparse catches this
                return super().error(message, ex)
            sys.stderr.write(f"ae-ot: error: {concise_parser_message(message)}\n"
                             f"(`ae-ot {{fit,validate,test}} --help` lists the options)\n")
            sys.exit(2)

    class AEOTLightningCLI(LightningCLI):
        """LightningCLI with ae-ot's defaults: any generator, any DataModule, MNIST by default."""

        def __init__(self, *args, **kwargs):
            kwargs.setdefault("model_class", GenerativeModel)
            kwargs.setdefault("subclass_mode_model", True)
            kwargs.setdefault("datamodule_class", pl.LightningDataModule)
            kwargs.setdefault("subclass_mode_data", True)
            kwargs.setdefault("seed_everything_default", 0)
            kwargs.setdefault("save_config_kwargs", {"overwrite": True})
            kwargs.setdefault("save_config_callback", AtomicSaveConfigCallback)
            kwargs.setdefault("parser_class", ConciseErrorParser)
            super().__init__(*args, **kwargs)

        def add_arguments_to_parser(self, parser) -> None:
            parser.set_defaults({"data": {"class_path": "ae_ot.data.MNISTDataModule"}})

        def instantiate_trainer(self, **kwargs):
            # Checkpoints are written atomically (ae_ot.lightning_io) unless the user's
            # --trainer.plugins name a CheckpointIO of their own.
            trainer_config = self.config_init.get(str(self.subcommand), self.config_init).get("trainer") or {}
            kwargs["plugins"] = with_atomic_checkpoint_io(kwargs.get("plugins", trainer_config.get("plugins")))
            return super().instantiate_trainer(**kwargs)

        def _parse_ckpt_path(self) -> None:
            # Lightning's own rule puts the checkpoint's hyperparameters over the command line and
            # the config (a resume silently ran with the stored values, or trained the stored
            # class): ae-ot checks the checkpoint against the config instead (check_resume).
            subcommand = self.config.get("subcommand")
            ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
            if ckpt_path:
                model = self.config[subcommand].get("model")
                check_resume(ckpt_path, model.as_dict() if hasattr(model, "as_dict") else dict(model or {}))

    return AEOTLightningCLI


#: hyperparameters that shape the networks' weights: a resume that changes one cannot load them
ARCHITECTURE_KEYS = ("latent_dim", "width", "channels", "critic_width", "net", "data_dim", "batch_norm", "hidden_dim",
                     "num_layers", "time_embedding_dim")
#: hyperparameters a checkpoint stores differently from the config that wrote it, by design
RESUME_IGNORED_KEYS = ("autoencoder_ckpt", "autoencoder_epochs", "_instantiator")


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in (tree or {}).items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _resolve_class(class_path: str):
    """The class a dotted path names (``ae_ot.generators.AEOT`` and ``ae_ot.generators.ae_ot.AEOT``
    alike), or the path itself when it does not import."""
    module_name, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name or "ae_ot.generators"), name)
    except (ImportError, AttributeError):
        return class_path


def check_resume(ckpt_path, model_config: dict) -> dict:
    """Check a ``--ckpt_path`` resume against the model the config and command line build.

    The checkpoint must hold the same generator class, with the same network shapes
    (:data:`ARCHITECTURE_KEYS`), else :class:`UserInputError` names what differs and the fix. Other
    settings that differ (an OT time limit, a learning rate) apply as given on the command line and
    in the config, and one line on stderr lists them. Returns ``{setting: (checkpoint's, applied)}``.
    """
    from ae_ot.io import read_checkpoint

    checkpoint = read_checkpoint(ckpt_path)
    stored = dict(checkpoint.get("hyper_parameters") or {})
    theirs_class = stored.pop("_class_path", None) or checkpoint.get("generator_class_path")
    ours_class = model_config.get("class_path")
    if theirs_class and ours_class and _resolve_class(theirs_class) is not _resolve_class(ours_class):
        raise UserInputError(f"--ckpt_path {ckpt_path} was written by {theirs_class.rpartition('.')[2]}, but the config "
                             f"trains {ours_class.rpartition('.')[2]}; resume with the config of the run that wrote it "
                             "(its config.yaml), or leave --ckpt_path out")
    ours, theirs = _flatten(model_config.get("init_args") or {}), _flatten(stored)
    differ = {key: (theirs[key], value) for key, value in ours.items()
              if key in theirs and theirs[key] != value and key.split(".")[0] not in RESUME_IGNORED_KEYS}
    shapes = [key for key in differ if key.rpartition(".")[2] in ARCHITECTURE_KEYS]
    if shapes:
        raise UserInputError(f"--ckpt_path {ckpt_path} holds networks of another shape: "
                             + ", ".join(f"{key} {differ[key][0]!r} there, {differ[key][1]!r} here" for key in shapes)
                             + "; resume with the config of the run that wrote it, or leave --ckpt_path out")
    if differ:
        print(f"ae-ot: resuming from {ckpt_path} with settings of the config / command line that differ from the "
              "checkpoint's (they apply): " + ", ".join(f"{key}: {a!r} -> {b!r}" for key, (a, b) in differ.items()),
              file=sys.stderr)
    return differ


def _usage() -> str:
    names = ", ".join([*LIGHTNING_COMMANDS, *EXTRA_COMMANDS])
    return (f"usage: ae-ot {{{names}}} [options]\n"
            "  ae-ot fit --config models/ae_ot.yaml      train a generator of the zoo (Lightning CLI)\n"
            "  ae-ot <command> --help                    options of one command\n")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        if not argv:
            sys.exit(2)
        return
    command = argv[0]
    try:
        if command in EXTRA_COMMANDS:
            module_name, function_name = EXTRA_COMMANDS[command].split(":")
            getattr(importlib.import_module(module_name), function_name)(argv[1:])
        elif command in LIGHTNING_COMMANDS:
            run_lightning_cli(argv)
        else:
            sys.exit(f"ae-ot: error: unknown command {command!r}; choose one of "
                     f"{', '.join([*LIGHTNING_COMMANDS, *EXTRA_COMMANDS])}")
    except USER_ERRORS as err:
        # Bad user input (a config value, a missing file, a dataset that is not there) gets one
        # clear line, not a traceback from deep inside torch.
        print(f"ae-ot {command}: error: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(2)


def run_lightning_cli(argv: list[str]) -> None:
    """``ae-ot fit|validate|test ARGS``. LightningCLI reads ``sys.argv`` itself; passing ``args``
    while ``sys.argv`` holds other arguments (as under pytest) makes it warn that the two may
    disagree, so the arguments go through ``sys.argv`` and ``args`` stays unset."""
    _check_ckpt_path(argv)
    saved = sys.argv
    sys.argv = [saved[0] if saved else "ae-ot", *argv]
    try:
        lightning_cli_class()()
    except ValueError as err:
        # jsonargparse instantiates ``--model``/``--data`` as a Union member and re-raises a
        # constructor's UserInputError as a plain ValueError listing every Union subtype; the
        # user's problem is the original error, so that is what the CLI reports.
        cause = user_error_cause(err)
        if cause is None:
            raise
        raise cause from None
    finally:
        sys.argv = saved


def _check_ckpt_path(argv: list[str]) -> None:
    """Read the ``--ckpt_path`` file (if a file is named) with :func:`ae_ot.io.read_checkpoint`
    before Lightning starts: a truncated or foreign file is one clear error, not a traceback from
    inside Lightning's restore. Lightning's own values (``last``, ``best``, ``hpc``, ``null``) pass."""
    from ae_ot.io import read_checkpoint

    for i, arg in enumerate(argv):
        if arg == "--ckpt_path" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--ckpt_path="):
            value = arg.split("=", 1)[1]
        else:
            continue
        if value not in ("last", "best", "hpc", "null", "None", ""):
            read_checkpoint(value)


def user_error_cause(err: BaseException) -> UserInputError | None:
    """The first :class:`UserInputError` in the ``__cause__``/``__context__`` chain of ``err``
    (``err`` itself included), or ``None``."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UserInputError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
