"""Lightning callbacks that ``ae-ot compare`` adds to the fits it runs (usable with any ``ae-ot fit``).

:class:`WallClockCheckpoints` saves the model each time the training wall-clock passes a mark, so
that quality can be measured against training time::

    ae-ot fit --config models/wgan.yaml --trainer.max_time=00:00:20:00 \
        --trainer.callbacks+='{"class_path": "ae_ot.callbacks.WallClockCheckpoints",
                               "init_args": {"marks": [240, 480, 720, 960], "dirpath": "timed"}}'

:class:`StopOnNonFiniteLoss` ends a fit with :class:`FloatingPointError` as soon as the training
loss (or any logged scalar) is NaN or infinite, instead of training a broken model to the end of
its budget.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from ae_ot.checks import UserInputError
from ae_ot.io import write_json_atomic

__all__ = ["WallClockCheckpoints", "StopOnNonFiniteLoss", "MANIFEST_NAME"]

#: file written beside the timed checkpoints
MANIFEST_NAME = "timeline.json"


class WallClockCheckpoints(pl.Callback):
    """Save a checkpoint each time the training wall-clock passes one of ``marks``.

    The clock starts at ``on_train_start`` (as Lightning's ``max_time`` does) and is read after
    every training batch; marks passed during one batch give one checkpoint. Each checkpoint is
    ``<dirpath>/time-<k>-<seconds>s.ckpt`` and is listed, with the seconds actually elapsed and the
    global step, in ``<dirpath>/timeline.json`` (rewritten atomically), which also gets the total
    training seconds when training ends.

    Parameters
    ----------
    marks : list of float
        Training seconds at which to save, ascending, each > 0.
    dirpath : str
        Folder for the checkpoints and ``timeline.json`` (created if missing).

    Examples
    --------
    >>> callback = WallClockCheckpoints(marks=[60.0, 300.0], dirpath="checkpoints")
    >>> callback.marks
    [60.0, 300.0]
    """

    def __init__(self, marks: list[float], dirpath: str):
        super().__init__()
        marks = [float(m) for m in marks]
        if any(not math.isfinite(m) or m <= 0 for m in marks) or marks != sorted(marks):
            raise UserInputError(f"marks must be ascending positive seconds, got {marks}")
        self.marks = marks
        self.dirpath = Path(dirpath)
        self.checkpoints: list[dict] = []
        self._start: float | None = None
        self._next = 0

    @property
    def manifest_path(self) -> Path:
        return self.dirpath / MANIFEST_NAME

    def elapsed(self) -> float:
        """Training seconds since ``on_train_start`` (0 before it)."""
        return 0.0 if self._start is None else time.perf_counter() - self._start

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()
        self._next = 0
        self.checkpoints = []
        self._write_manifest(trainer, train_seconds=None)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        elapsed = self.elapsed()
        if self._next >= len(self.marks) or elapsed < self.marks[self._next]:
            return
        mark = self.marks[self._next]
        while self._next < len(self.marks) and elapsed >= self.marks[self._next]:
            self._next += 1
        self._save(trainer, mark, elapsed)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write_manifest(trainer, train_seconds=round(self.elapsed(), 3))

    def _save(self, trainer: pl.Trainer, mark: float, elapsed: float) -> None:
        """Save the checkpoint of mark ``mark`` and list it in the manifest."""
        index = len(self.checkpoints)
        path = self.dirpath / f"time-{index}-{elapsed:.0f}s.ckpt"
        trainer.save_checkpoint(path)    # collective: every rank calls it
        self.checkpoints.append({"index": index, "mark_seconds": mark, "seconds": round(elapsed, 3),
                                 "global_step": int(trainer.global_step), "epoch": int(trainer.current_epoch),
                                 "file": path.name, "path": str(path)})
        self._write_manifest(trainer, train_seconds=None)

    def _write_manifest(self, trainer: pl.Trainer, train_seconds: float | None) -> None:
        """Rewrite ``timeline.json`` (rank zero only)."""
        if not trainer.is_global_zero:
            return
        write_json_atomic({"marks": self.marks, "checkpoints": self.checkpoints, "train_seconds": train_seconds},
                          self.manifest_path)


class StopOnNonFiniteLoss(pl.Callback):
    """Raise :class:`FloatingPointError` when the training loss or a logged scalar is NaN or inf.

    Checked after every training batch: the ``loss`` the step returned (automatic optimisation)
    and every scalar of ``trainer.callback_metrics`` (what the model logged, e.g. the GANs'
    ``train/critic_loss``). The fit then ends with a non-zero exit and the message names the
    metric, its value and the step.

    Examples
    --------
    >>> import pytorch_lightning as pl
    >>> isinstance(StopOnNonFiniteLoss(), pl.Callback)   # pass it in ``Trainer(callbacks=[...])``
    True
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        values = {}
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            values["loss"] = loss
        for name, value in trainer.callback_metrics.items():
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                values[name] = value
        for name, value in values.items():
            number = float(value.detach())
            if not math.isfinite(number):
                raise FloatingPointError(
                    f"training diverged: {name} is {number} at batch {batch_idx} of epoch {trainer.current_epoch} "
                    f"(after {trainer.global_step} optimizer steps); lower the learning rate or check the data")
