"""AE-OT as a LightningModule: an autoencoder, then AE-OT's latent sampler on its codes.

Pipeline (An et al., "AE-OT: a new generative model based on extended semi-discrete optimal
transport", ICLR 2020):

1. train the autoencoder (exactly :class:`~ae_ot.generators.Autoencoder`'s training);
2. at the end of ``fit``, encode the training set and fit the latent sampler
   (:class:`ae_ot.ot.sampler.LatentOTSampler`: normalisation, semi-discrete OT, extended map) on the
   codes, with the settings of the ``ot`` group (:class:`~ae_ot.ot.sampler.LatentOTSettings`);
3. generate: the sampler's codes -> decoder -> images.

The checkpoint written by ``ae-ot fit`` holds the autoencoder and the sampler's solution, so it
alone is enough to sample. Under Lightning's DDP (``--trainer.strategy=ddp --trainer.devices=W``)
step 2 runs on all processes together: each encodes a contiguous share of whole encoding batches,
the codes are gathered in dataset order, the targets are sharded over the processes and solved
with the solver's ``torch.distributed`` mode, and every process ends with the full solution. Only
rank 0 writes the checkpoint.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Literal

import torch
from pytorch_lightning.utilities import rank_zero_info

from ae_ot.checks import UserInputError
from ae_ot.generators.autoencoder import Autoencoder
from ae_ot.ot.sampler import LatentOTSampler, LatentOTSettings, OTSolutionMissingError

__all__ = ["AEOT", "OTSolutionMissingError", "CHECKPOINT_FORMAT"]

#: the layout of an AE-OT checkpoint: 2 keeps the OT stage's settings in one ``ot`` group and its
#: solution in the ``sampler`` submodule
CHECKPOINT_FORMAT = 2


class AEOT(Autoencoder):
    """AE-OT generator: autoencoder + AE-OT's latent sampler (semi-discrete OT + extended map).

    Parameters
    ----------
    latent_dim, width, lr, loss, channels
        The autoencoder's (see :class:`~ae_ot.generators.Autoencoder`).
    autoencoder_ckpt : str or None, default None
        Start from this autoencoder (or AE-OT) checkpoint's encoder/decoder weights. With
        ``--trainer.max_epochs=0`` the OT problem is solved again without retraining.
    ot : LatentOTSettings or dict, default LatentOTSettings()
        The OT stage and the extended map (``--model.init_args.ot.time_limit=60``, ...).

    Examples
    --------
    >>> from ae_ot.generators import AEOT
    >>> model = AEOT(latent_dim=8, ot={"time_limit": 30.0, "radius": 0.4})
    >>> model.sampler.settings.radius
    0.4
    """

    #: the OT stage runs after Lightning's loop (``on_fit_end``), outside ``trainer.max_time``: an
    #: equal wall-clock comparison adds its seconds to the training time
    solves_ot_after_training: bool = True

    def __init__(self, latent_dim: int = 16, width: int = 16, lr: float = 2e-3,
                 loss: Literal["bce", "mse"] = "bce", channels: int = 1,
                 autoencoder_ckpt: str | None = None, ot: LatentOTSettings = LatentOTSettings(),
                 grid_every_n_epochs: int = 1, grid_size: int = 64):
        super().__init__(latent_dim, width, lr, loss, channels, grid_every_n_epochs, grid_size)
        settings = LatentOTSettings.coerce(ot)
        self.save_hyperparameters()
        # hyperparameters stay plain data (a checkpoint's YAML and its reload read dicts)
        self.hparams["ot"] = dataclasses.asdict(settings)
        if autoencoder_ckpt:
            self.load_autoencoder_weights(autoencoder_ckpt)
        self.sampler = LatentOTSampler(settings, latent_dim)

    @classmethod
    def check_checkpoint(cls, checkpoint: dict, path) -> None:
        """Refuse a checkpoint of an older layout with one line naming the fix."""
        hparams = checkpoint.get("hyper_parameters") or {}
        old = [k for k in hparams if k.startswith("ot_")] or [k for k in checkpoint.get("state_dict", {})
                                                              if k.startswith("ot_")]
        if old:
            raise UserInputError(
                f"{path} is an AE-OT checkpoint of an older layout (it has {old[0]!r}; the OT settings are now one "
                f"`ot` group). Solve it again from its autoencoder: `ae-ot fit --config models/ae_ot.yaml "
                f"--model.init_args.autoencoder_ckpt={path} --trainer.max_epochs=0`")

    # ---- the OT solution -----------------------------------------------------------------------
    @property
    def has_ot_solution(self) -> bool:
        return self.sampler.solved

    def solve_ot(self, codes: torch.Tensor, progress: bool = True, distributed=False, **fit_overrides) -> dict:
        """Fit the latent sampler on ``codes`` [N, d] (:meth:`~ae_ot.ot.sampler.LatentOTSampler.fit`)."""
        if codes.dim() != 2 or codes.shape[1] != self.latent_dim:
            raise UserInputError(f"codes must be [N, {self.latent_dim}], got {tuple(codes.shape)}")
        return self.sampler.fit(codes, progress=progress, distributed=distributed, **fit_overrides)

    def latent_samples(self, n: int, generator: torch.Generator, extension: str | None = None,
                       return_stats: bool = False):
        """Codes [n, d] from the latent sampler (:meth:`~ae_ot.ot.sampler.LatentOTSampler.sample`)."""
        return self.sampler.sample(n, generator, extension, return_stats)

    def generate(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.decode(self.latent_samples(n, generator).to(self.device))

    # ---- Lightning hooks -------------------------------------------------------------------------
    def on_train_epoch_end(self) -> None:
        # The base class samples a grid each epoch; AE-OT can only sample once OT is solved, so
        # during training it logs reconstructions (validation) and the naive Gaussian stats only.
        self._update_code_stats()

    def on_fit_end(self) -> None:
        self.solve_from_datamodule()
        self.log_image_grid(self.sample(self.grid_size, seed=0), "samples")
        self._write_solution_into_checkpoints(self.trainer)

    def solve_from_datamodule(self) -> dict:
        """Encode the trainer's training set and fit the latent sampler on the codes.

        Runs on every process: under DDP it is collective, in the same order on every rank (each
        process encodes its share, the solve is sharded, every rank ends with the full solution).
        """
        trainer = self.trainer
        datamodule = trainer.datamodule
        if datamodule is None or getattr(datamodule, "train_set", None) is None:
            raise UserInputError(f"{type(self).__name__} needs a DataModule with a `train_set` (e.g. MNISTDataModule) "
                                 "to encode")
        distributed = _process_group(trainer)
        start = time.perf_counter()
        codes = self.encode_dataset(datamodule.train_set.images, progress=trainer.is_global_zero,
                                    distributed=distributed)
        report = self.solve_ot(codes, progress=trainer.is_global_zero, distributed=distributed)
        report["encode_and_solve_seconds"] = time.perf_counter() - start
        final = report["history"][-1] if report.get("history") else {}
        nan = float("nan")
        rank_zero_info(f"{type(self).__name__} OT stage: {report.get('message', '')}; held-out RMS relative cell error "
                       f"{final.get('rms_rel_corrected', nan):.2%} +- {final.get('rms_rel_corrected_se', nan):.2%} "
                       f"({report.get('num_targets')} targets, kernel {report.get('kernel')})")
        return report

    def _write_solution_into_checkpoints(self, trainer) -> None:
        """Rewrite this run's checkpoints with the OT solution, so a checkpoint alone can sample.

        Only files inside this run's checkpoint folder are written: a run resumed from another
        run's checkpoint (``--ckpt_path``) inherits that run's ``best_model_path``, and rewriting it
        would overwrite the other run's (or the input) file. ``trainer.save_checkpoint`` is
        collective (rank 0 writes, then all ranks meet in a barrier), so every rank calls it for
        the same paths: rank 0's list.
        """
        callback = trainer.checkpoint_callback
        if callback is None or not getattr(callback, "dirpath", None):
            return
        folder = Path(callback.dirpath).resolve()
        resumed = Path(trainer.ckpt_path).resolve() if trainer.ckpt_path else None
        paths = sorted({p for p in (getattr(callback, "best_model_path", ""), getattr(callback, "last_model_path", ""))
                        if p and Path(p).resolve().parent == folder and Path(p).resolve() != resumed})
        paths = trainer.strategy.broadcast(paths, src=0)
        if not paths:
            # Nothing of this run's own was written (`--trainer.max_epochs=0`, a re-solve from
            # `autoencoder_ckpt`, a resume that trained no further epoch): write one checkpoint
            # here, or the solution would be lost.
            metrics = {"epoch": torch.tensor(trainer.current_epoch), "step": torch.tensor(trainer.global_step)}
            path = callback.format_checkpoint_name(metrics)
            if resumed is not None and Path(path).resolve() == resumed:   # never the file resumed from
                path = str(Path(path).with_name(Path(path).stem + "-solved.ckpt"))
            paths = [path]
            callback.best_model_path = path
        for path in paths:
            trainer.save_checkpoint(path)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["ae_ot_format"] = CHECKPOINT_FORMAT

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        type(self).check_checkpoint(checkpoint, "this checkpoint")
        # A checkpoint with the solution stripped loads as "unsolved".
        state = checkpoint.get("state_dict", {})
        for name, value in self.sampler.state_dict(prefix="sampler.").items():
            state.setdefault(name, value)


def _process_group(trainer):
    """True (the default ``torch.distributed`` group) when the trainer runs several processes, else False."""
    if trainer.world_size <= 1:
        return False
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise UserInputError(f"AE-OT's OT stage under a {trainer.world_size}-process strategy needs an initialised "
                             f"torch.distributed process group; strategy {type(trainer.strategy).__name__} has none")
    return True
