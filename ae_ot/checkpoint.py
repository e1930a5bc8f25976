"""Checkpoints of the zoo: which generator wrote a Lightning checkpoint, and loading it back.

:func:`load_generator` restores any :class:`~ae_ot.generators.GenerativeModel` from a checkpoint
written by ``ae-ot fit`` (or ``Trainer.save_checkpoint``). Reading the file itself, with clear
errors for a missing, corrupt or foreign file, is :func:`ae_ot.io.read_checkpoint`, which the
generators also use (AE-OT and the latent flow load a trained autoencoder); this module sits above
the generators and imports them.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import ae_ot.generators as zoo
from ae_ot.checks import UserInputError
from ae_ot.generators.base import GenerativeModel
from ae_ot.io import read_checkpoint
from ae_ot.ot.sampler import stored_sampler_solved

__all__ = ["load_generator", "check_generator_checkpoint", "generator_class_path", "known_generators"]


def known_generators() -> list[str]:
    """Class paths of the generators exported by :mod:`ae_ot.generators`.

    Examples
    --------
    >>> "ae_ot.generators.AEOT" in known_generators()
    True
    """
    names = []
    for name in getattr(zoo, "__all__", dir(zoo)):
        obj = getattr(zoo, name, None)
        if isinstance(obj, type) and issubclass(obj, GenerativeModel) and obj is not GenerativeModel:
            names.append(f"ae_ot.generators.{name}")
    return sorted(names)


def _class_path_from_config(path: Path) -> str | None:
    """``model.class_path`` of the run's ``config.yaml`` (``<run>/checkpoints/x.ckpt`` -> ``<run>``)."""
    for folder in (path.parent, path.parent.parent):
        config = folder / "config.yaml"
        if config.is_file():
            try:
                import yaml

                data = yaml.safe_load(config.read_text())
                class_path = data.get("model", {}).get("class_path")
            except Exception:
                continue
            if isinstance(class_path, str):
                return class_path
    return None


def generator_class_path(checkpoint: dict, path: Path) -> str:
    """The generator class a checkpoint was saved from: LightningCLI's ``_class_path`` in
    ``hyper_parameters`` (subclass mode; Lightning restores from it), else ``generator_class_path``
    (every :class:`GenerativeModel` writes it), else the run's ``config.yaml``."""
    hparams = checkpoint.get("hyper_parameters") or {}
    for key in ("_class_path", "class_path"):      # what Lightning itself restores from
        value = hparams.get(key) if hasattr(hparams, "get") else None
        if isinstance(value, str):
            return value
    if isinstance(checkpoint.get("generator_class_path"), str):   # written by GenerativeModel
        return checkpoint["generator_class_path"]
    from_config = _class_path_from_config(path)
    if from_config:
        return from_config
    raise UserInputError(
        f"checkpoint {path} does not say which generator saved it: no '_class_path' in its hyper_parameters "
        "and no config.yaml in its run folder (was it written by `ae-ot fit`?)")


def check_generator_checkpoint(ckpt_path: str | Path, expected: type | None = None, option: str = "checkpoint") -> str:
    """The class path of the generator a checkpoint holds, after the checks that need no model:
    the file is a readable Lightning checkpoint of a known generator class and, when ``expected``
    is given, of that class or a subclass (else :class:`UserInputError` naming ``option``, e.g.
    ``"--ckpt_path"``, what the file holds and what it must hold). An AE-OT checkpoint must hold a
    solved latent sampler. Raises as :func:`load_generator` does; commands call it on every
    checkpoint before the work starts.

    Examples
    --------
    >>> check_generator_checkpoint("last.ckpt")  # doctest: +SKIP
    'ae_ot.generators.AEOT'
    """
    path = Path(ckpt_path)
    checkpoint = read_checkpoint(path)
    class_path, cls = _generator_class(checkpoint, path)
    if expected is not None and not issubclass(cls, expected):
        raise UserInputError(f"{option} {path} holds a {cls.__name__} checkpoint; it must be a {expected.__name__} "
                             f"checkpoint (written by `ae-ot fit --config` of a {expected.__name__} model)")
    if stored_sampler_solved(checkpoint.get("state_dict") or {}) is False:   # a fit stopped before its OT stage
        raise UserInputError(f"{option} {path} holds a {cls.__name__} without an OT solution; give an AE-OT "
                             "checkpoint with an OT solution, or solve this one first: `ae-ot fit --config "
                             f"models/ae_ot.yaml --model.init_args.autoencoder_ckpt={path} --trainer.max_epochs=0`")
    return class_path


def _generator_class(checkpoint: dict, path: Path) -> tuple[str, type]:
    """The class path and class of the generator that wrote ``checkpoint``, or UserInputError."""
    class_path = generator_class_path(checkpoint, path)
    module_name, _, class_name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name) if module_name else None
    except Exception as err:  # ModuleNotFoundError, AttributeError, errors inside the module
        cls = None
        why = f"{type(err).__name__}: {err}"
    else:
        why = "no such class"
    if cls is None:
        raise UserInputError(f"checkpoint {path} was saved by an unknown generator class {class_path!r} ({why}); "
                             f"known generators: {', '.join(known_generators())}")
    if not (isinstance(cls, type) and issubclass(cls, GenerativeModel)):
        raise UserInputError(f"checkpoint {path} holds a {class_path!r}, which is not a generator of the zoo "
                             f"(not a GenerativeModel subclass); known generators: {', '.join(known_generators())}")
    return class_path, cls


def load_generator(ckpt_path: str | Path):
    """Load the :class:`~ae_ot.generators.GenerativeModel` stored in a Lightning checkpoint, on the
    CPU and in eval mode.

    Raises FileNotFoundError for a missing file and :class:`~ae_ot.checks.UserInputError` (naming the path) for a corrupt file,
    a checkpoint that is not Lightning's, a class that is not a known generator, or a checkpoint
    that does not fit its class (weights missing or of another shape, hyper-parameters the class
    does not take). Any other exception of ``load_from_checkpoint`` is a bug and propagates
    unchanged.

    Examples
    --------
    >>> model = load_generator("lightning_logs/version_0/checkpoints/last.ckpt")  # doctest: +SKIP
    >>> images = model.sample(64, seed=0)  # doctest: +SKIP
    """
    path = Path(ckpt_path)
    checkpoint = read_checkpoint(path)
    class_path, cls = _generator_class(checkpoint, path)
    check = getattr(cls, "check_checkpoint", None)
    if check is not None:   # a class that refuses older layouts of its checkpoints, with the fix
        check(checkpoint, path)
    entries = set(checkpoint)
    del checkpoint
    try:
        model = cls.load_from_checkpoint(path, map_location="cpu")
    except Exception as err:
        if not _is_checkpoint_mismatch(err, entries):
            raise  # a bug: it keeps its traceback
        why = " ".join(str(err).split())  # one line: a state_dict error lists its keys on several
        raise UserInputError(f"cannot restore {class_path} from checkpoint {path}: {type(err).__name__}: "
                             f"{why[:300]}") from err
    return model.eval()


#: the top-level entries Lightning reads from a checkpoint
_LIGHTNING_ENTRIES = frozenset({"pytorch-lightning_version", "state_dict", "hyper_parameters", "epoch", "global_step",
                                "optimizer_states", "lr_schedulers", "loops", "callbacks", "hparams_name"})


def _is_checkpoint_mismatch(err: Exception, entries: set) -> bool:
    """Whether ``load_from_checkpoint`` failed on the checkpoint rather than on a bug: a check of
    the saved hyper-parameters (:class:`UserInputError`), a state_dict that does not fit the class
    (missing, unexpected or mis-shaped weights), hyper-parameters the constructor does not take
    or lacks, or an entry Lightning needs that the file does not hold."""
    message = str(err)
    if isinstance(err, UserInputError):
        return True
    if isinstance(err, RuntimeError) and message.startswith("Error(s) in loading state_dict"):
        return True
    if isinstance(err, TypeError) and re.search(r"__init__\(\) (got an unexpected keyword argument|missing \d+ "
                                                r"required)", message):
        return True
    if isinstance(err, KeyError) and err.args and err.args[0] in _LIGHTNING_ENTRIES and err.args[0] not in entries:
        return True
    return False
