"""The ``ae-ot`` command line.

``ae-ot fit|validate|test`` is Lightning's CLI (``--config``, dotted overrides such as
``--trainer.max_epochs=1``, ``--print_config``) in subclass mode: ``--model`` picks any
:class:`~ae_ot.generators.GenerativeModel` of the zoo and ``--data`` any DataModule. Each run saves
its resolved config as ``lightning_logs/version_k/config.yaml``.

The other sub-commands (``sample``, ``umap``, ``evaluate``, ``compare``, ...) are plain functions
in :mod:`ae_ot.commands`, loaded only when called so that ``ae-ot fit`` starts fast. Their options
are built the way ``fit``'s are: jsonargparse reads the function's signature and docstring
(:func:`ae_ot.commands.parsing.function_parser`), so each has ``--config``, ``--print_config`` and
``--help``, and ``ae-ot sample --num_samples 16`` is ``sample(..., num_samples=16)`` in Python.

Errors: bad input raises :class:`ae_ot.checks.UserInputError` (every input check of the package
does) or a file error (``OSError``: a missing checkpoint, a read-only folder); the CLI prints those
as one line and exits with status 2. Every other exception is a bug, and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys

from ae_ot.checks import UserInputError
from ae_ot.commands.parsing import concise_parser_message

__all__ = ["main", "user_error_cause", "EXTRA_COMMANDS", "LIGHTNING_COMMANDS", "USER_ERRORS", "lightning_cli_class"]

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
            kwargs.setdefault("parser_class", ConciseErrorParser)
            super().__init__(*args, **kwargs)

        def add_arguments_to_parser(self, parser) -> None:
            parser.set_defaults({"data": {"class_path": "ae_ot.data.MNISTDataModule"}})

    return AEOTLightningCLI


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
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as err:
                if err.name == module_name:
                    sys.exit(f"ae-ot: error: the '{command}' command is not available in this version")
                raise
            getattr(module, function_name)(argv[1:])
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
