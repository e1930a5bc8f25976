"""Lightning's own files (checkpoints, a run's ``config.yaml``) through the atomic writer.

Lightning writes a local checkpoint into a temporary file of the system's temporary folder and
moves it onto the target: across file systems that move is a copy, so a ``kill -9`` or a full disk
during it leaves half a checkpoint under the target's name, and the run's ``config.yaml`` is
written in place. ``ae-ot fit|validate|test`` route both through :func:`ae_ot.io.atomic_write`
(a temporary file beside the target, then :func:`os.replace`): :class:`AtomicCheckpointIO` is the
default checkpoint plugin (:func:`with_atomic_checkpoint_io`) and :class:`AtomicSaveConfigCallback`
writes ``config.yaml``. A reader, or a resumed run, sees the previous file or the whole new one.
"""

from __future__ import annotations

import os
from typing import Any

from fsspec.utils import get_protocol
from pytorch_lightning.cli import SaveConfigCallback
from pytorch_lightning.plugins.io import CheckpointIO, TorchCheckpointIO

from ae_ot.io import atomic_torch_save, atomic_write

__all__ = ["AtomicCheckpointIO", "AtomicSaveConfigCallback", "with_atomic_checkpoint_io"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """:class:`~pytorch_lightning.plugins.io.TorchCheckpointIO` whose local writes are atomic.

    A checkpoint on the local file system is written with :func:`ae_ot.io.atomic_torch_save`: a
    failed or killed write leaves the previous file at ``path`` intact (and at worst a hidden
    ``.<name>.*.tmp.ckpt`` file beside it). Remote paths (``s3://...``) keep Lightning's own
    transactional write. Reading and removing are Lightning's.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or get_protocol(str(path)) != "file":
            super().save_checkpoint(checkpoint, path, storage_options)  # Lightning's errors and remote writes
            return
        atomic_torch_save(checkpoint, path)


def with_atomic_checkpoint_io(plugins) -> list:
    """The trainer's ``plugins`` argument (None, one plugin or a list) as a list that holds a
    :class:`AtomicCheckpointIO`, unless it names a :class:`CheckpointIO` of its own: the user's
    choice stands. Other plugins (precision, cluster environment, strings) are kept, in order."""
    if plugins is None:
        plugins = []
    elif not isinstance(plugins, (list, tuple)):
        plugins = [plugins]
    plugins = list(plugins)
    if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
        plugins.append(AtomicCheckpointIO())
    return plugins


class _AtomicSaver:
    """A parser whose ``save(cfg, path, ...)`` writes ``path`` through :func:`atomic_write`; every
    other attribute is the wrapped parser's."""

    def __init__(self, parser):
        self._parser = parser

    def __getattr__(self, name):
        return getattr(self._parser, name)

    def save(self, cfg, path, **kwargs) -> None:
        # The temporary file exists (created empty): the caller has already refused an existing
        # target when overwriting is off, so the inner save may overwrite.
        atomic_write(path, lambda tmp: self._parser.save(cfg, os.fspath(tmp), **{**kwargs, "overwrite": True}))


class AtomicSaveConfigCallback(SaveConfigCallback):
    """LightningCLI's :class:`~pytorch_lightning.cli.SaveConfigCallback`, writing the run's
    ``config.yaml`` through :func:`ae_ot.io.atomic_write` (Lightning's checks, rank handling and
    ``overwrite`` rule unchanged). A config split over several files (``multifile=True``) is
    written as Lightning writes it."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.multifile:
            super().setup(trainer, pl_module, stage)
            return
        parser = self.parser
        self.parser = _AtomicSaver(parser)
        try:
            super().setup(trainer, pl_module, stage)
        finally:
            self.parser = parser
