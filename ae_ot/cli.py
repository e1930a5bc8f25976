"""The ``ae-ot`` command line.

``ae-ot fit|validate|test|predict`` is Lightning's CLI (``--config``, dotted overrides such as
``--trainer.max_epochs=1``, ``--print_config``) in subclass mode: ``--model`` picks any
:class:`~ae_ot.generators.GenerativeModel` of the zoo and ``--data`` any DataModule. Each run saves
its resolved config as ``lightning_logs/version_k/config.yaml``.

The other sub-commands (``sample``, ``umap``, ``evaluate``, ``compare``, ...) are plain functions
in :mod:`ae_ot.commands`, loaded only when called so that ``ae-ot fit`` starts fast.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["main", "AEOTLightningCLI", "EXTRA_COMMANDS"]

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

_USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, TypeError, KeyError)


def _lightning_cli_class():
    import pytorch_lightning as pl
    from pytorch_lightning.cli import LightningCLI

    import ae_ot.data  # noqa: F401  (registers the DataModules for subclass mode)
    import ae_ot.generators  # noqa: F401  (registers the zoo for subclass mode)
    from ae_ot.generators.base import GenerativeModel

    class AEOTLightningCLI(LightningCLI):
        """LightningCLI with ae-ot's defaults: any generator, any DataModule, MNIST by default."""

        def __init__(self, *args, **kwargs):
            kwargs.setdefault("model_class", GenerativeModel)
            kwargs.setdefault("subclass_mode_model", True)
            kwargs.setdefault("datamodule_class", pl.LightningDataModule)
            kwargs.setdefault("subclass_mode_data", True)
            kwargs.setdefault("seed_everything_default", 0)
            kwargs.setdefault("save_config_kwargs", {"overwrite": True})
            super().__init__(*args, **kwargs)

        def add_arguments_to_parser(self, parser) -> None:
            parser.set_defaults({"data": {"class_path": "ae_ot.data.MNISTDataModule"}})

    return AEOTLightningCLI


def __getattr__(name):  # lazy, so `import ae_ot.cli` does not import Lightning
    if name == "AEOTLightningCLI":
        return _lightning_cli_class()
    raise AttributeError(name)


def _usage() -> str:
    names = ", ".join(["fit", "validate", "test", "predict", *EXTRA_COMMANDS])
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
        else:
            _lightning_cli_class()(args=argv)
    except _USER_ERRORS as err:
        # Bad user input (a config value, a missing file, a dataset that is not there) gets one
        # clear line, not a traceback from deep inside torch.
        print(f"ae-ot {command}: error: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(2)
