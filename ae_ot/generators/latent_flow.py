"""Latent flow matching: a velocity field in the latent space of the autoencoder, trained by
conditional flow matching with minibatch OT couplings, beside AE-OT on the same autoencoder.

Pipeline (Lipman et al. 2023, "Flow matching for generative modeling"; Tong et al. 2023,
"Improving and generalizing flow-based generative models with minibatch optimal transport";
Pooladian et al. 2023, "Multisample flow matching"):

1. the autoencoder: loaded from ``autoencoder_ckpt`` (an Autoencoder, AE-OT or LatentFlowMatching
   checkpoint), or trained here for the first ``autoencoder_epochs`` epochs (exactly
   :class:`~ae_ot.generators.Autoencoder`'s training);
2. when the flow stage starts, the (now frozen) encoder encodes the training set once into codes
   z_1..z_N [N, d], normalised per dimension, c = (z - shift) / scale with the codes' mean and
   standard deviation, so that the source N(0, I_d) and the data have the same scale;
3. ``flow_epochs`` epochs of conditional flow matching on the normalised codes
   (:func:`ae_ot.flow_matching.conditional_flow_matching_loss`): each step pairs a batch of
   noise z0 ~ N(0, I) [B, d] with a batch of codes [B, d] by the exact minibatch OT assignment
   (``coupling="ot"``) or independently (``coupling="independent"``);
4. generate: z0 ~ N(0, I) -> integrate dz/dt = v(t, z) from 0 to 1 with ``num_steps`` fixed
   Euler or midpoint steps -> z = shift + scale * z(1) -> decoder -> image.

The checkpoint holds the autoencoder, the velocity field and the normalisation, so it alone is
enough to sample (its saved ``autoencoder_ckpt`` hyper-parameter is cleared: the weights are in it).
"""

from __future__ import annotations

import math
import time
from typing import Literal

import torch

from ae_ot.checks import UserInputError
from ae_ot.flow_matching import (
    VelocityField,
    check_coupling,
    check_num_steps,
    check_solver,
    conditional_flow_matching_loss,
    integrate,
)
from ae_ot.generators.autoencoder import Autoencoder

__all__ = ["LatentFlowMatching", "FlowNotTrainedError", "DEFAULT_AUTOENCODER_EPOCHS"]

#: autoencoder epochs when ``autoencoder_epochs`` is None and no ``autoencoder_ckpt`` is given
#: (the autoencoder training of models/ae_ot.yaml)
DEFAULT_AUTOENCODER_EPOCHS = 25


class FlowNotTrainedError(UserInputError):
    """Sampling was asked of a LatentFlowMatching model whose flow stage has not run yet.

    Examples
    --------
    >>> try:
    ...     LatentFlowMatching(latent_dim=8, hidden_dim=32).sample(4, seed=0)
    ... except FlowNotTrainedError:
    ...     print("fit the flow first")
    fit the flow first
    """


class LatentFlowMatching(Autoencoder):
    """Flow matching in the autoencoder's latent space (OT-CFM or independent CFM).

    Parameters
    ----------
    latent_dim, width, lr, loss, channels
        The autoencoder's (see :class:`~ae_ot.generators.Autoencoder`); they must match
        ``autoencoder_ckpt`` when one is given.
    autoencoder_ckpt : str or None, default None
        Start from this checkpoint's encoder/decoder weights (Autoencoder, AE-OT, ...).
    autoencoder_epochs : int or None, default None
        Epochs [0, autoencoder_epochs) train the autoencoder; later epochs train the flow with
        the autoencoder frozen. None: 0 with ``autoencoder_ckpt``, 25 without.
    flow_epochs : int, default 60
        Epochs of flow training (passes over the training codes); training stops after
        ``autoencoder_epochs + flow_epochs`` epochs or at the trainer's own limit, if earlier.
    coupling : {"ot", "independent"}, default "ot"
        "ot": exact minibatch OT pairing of noise and codes (OT-CFM); "independent": plain CFM.
    sigma : float, default 0.0
        Std of the Gaussian noise around the straight conditional paths.
    hidden_dim, num_layers, time_embedding_dim
        The velocity MLP (:class:`ae_ot.flow_matching.VelocityField`).
    flow_lr : float, default 1e-3
        Adam learning rate of the velocity field (cosine-annealed to 0 over ``flow_epochs``).
    solver : {"midpoint", "euler"}, default "midpoint"
    num_steps : int, default 20
        Fixed ODE steps from t = 0 to 1 at sampling.
    seed : int, default 0
        Seeds the order in which codes are visited.

    Examples
    --------
    >>> model = LatentFlowMatching(latent_dim=8, hidden_dim=32)   # fit: autoencoder, then the flow
    >>> sum(p.numel() for p in model.velocity.parameters()) > 0
    True
    """

    def __init__(self, latent_dim: int = 16, width: int = 16, lr: float = 2e-3,
                 loss: Literal["bce", "mse"] = "bce", channels: int = 1,
                 autoencoder_ckpt: str | None = None, autoencoder_epochs: int | None = None,
                 flow_epochs: int = 60, coupling: Literal["ot", "independent"] = "ot", sigma: float = 0.0,
                 hidden_dim: int = 256, num_layers: int = 3, time_embedding_dim: int = 32,
                 flow_lr: float = 1e-3, solver: Literal["midpoint", "euler"] = "midpoint", num_steps: int = 20,
                 seed: int = 0, grid_every_n_epochs: int = 1, grid_size: int = 64):
        super().__init__(latent_dim, width, lr, loss, channels, grid_every_n_epochs, grid_size)
        check_coupling(coupling)
        check_solver(solver)
        check_num_steps(num_steps)
        if autoencoder_epochs is not None and (isinstance(autoencoder_epochs, bool)
                                               or not isinstance(autoencoder_epochs, int) or autoencoder_epochs < 0):
            raise UserInputError(f"autoencoder_epochs must be an integer >= 0 or None, got {autoencoder_epochs!r}")
        if isinstance(flow_epochs, bool) or not isinstance(flow_epochs, int) or flow_epochs < 1:
            raise UserInputError(f"flow_epochs must be an integer >= 1, got {flow_epochs!r}")
        if not flow_lr > 0:
            raise UserInputError(f"flow_lr must be positive, got {flow_lr!r}")
        if sigma < 0:
            raise UserInputError(f"sigma must be >= 0, got {sigma!r}")
        self.save_hyperparameters()
        if autoencoder_epochs is None:
            autoencoder_epochs = 0 if autoencoder_ckpt else DEFAULT_AUTOENCODER_EPOCHS
        self.autoencoder_epochs = autoencoder_epochs
        if autoencoder_ckpt:
            self.load_autoencoder_weights(autoencoder_ckpt)
        self.velocity = VelocityField(latent_dim, hidden_dim, num_layers, time_embedding_dim)
        # the normalisation of the codes, c = (z - shift) / scale, fixed when the flow stage starts
        self.register_buffer("flow_shift", torch.zeros(latent_dim))
        self.register_buffer("flow_scale", torch.ones(latent_dim))
        self.register_buffer("flow_trained_steps", torch.zeros((), dtype=torch.long))
        #: seconds of the latent stage so far: encoding the training set + flow training steps
        self.register_buffer("latent_stage_seconds", torch.zeros((), dtype=torch.float64))
        self._train_codes: torch.Tensor | None = None   # normalised codes [N, d] of the train split
        self._val_codes: torch.Tensor | None = None
        self._epoch_order: torch.Tensor | None = None   # this flow epoch's permutation of the codes
        self._seconds_before_epoch = 0.0
        self._epoch_started = 0.0

    # ---- the flow ---------------------------------------------------------------------------------
    @property
    def flow_is_trained(self) -> bool:
        return int(self.flow_trained_steps) > 0

    def _check_flow_trained(self) -> None:
        if not self.flow_is_trained:
            raise FlowNotTrainedError(
                "this LatentFlowMatching model has no trained flow: its checkpoint was written before the flow "
                f"stage (epochs >= autoencoder_epochs={self.autoencoder_epochs}). Train it with `ae-ot fit --config "
                "models/latent_flow.yaml --model.autoencoder_ckpt=CKPT`.")

    def latent_samples(self, n: int, generator: torch.Generator, num_steps: int | None = None,
                       solver: str | None = None, return_path: bool = False) -> torch.Tensor:
        """Codes [n, d] generated from z0 ~ N(0, I) (drawn on the CPU from ``generator``) by the
        flow, un-normalised; on the module's device. With ``return_path`` the normalised path
        [num_steps + 1, n, d] of :func:`ae_ot.flow_matching.integrate` instead."""
        self._check_flow_trained()
        num_steps = check_num_steps(self.hparams.num_steps if num_steps is None else num_steps)
        solver = check_solver(self.hparams.solver if solver is None else solver)
        z0 = torch.randn(n, self.latent_dim, generator=generator).to(self.device)
        was_training = self.velocity.training
        self.velocity.eval()
        try:
            result = integrate(self.velocity, z0, num_steps, solver, return_path=return_path)
        finally:
            self.velocity.train(was_training)
        return result if return_path else self.flow_shift + self.flow_scale * result

    def generate(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.decode(self.latent_samples(n, generator))

    # ---- Lightning hooks ----------------------------------------------------------------------------
    def in_flow_stage(self) -> bool:
        return self.current_epoch >= self.autoencoder_epochs

    def on_fit_start(self) -> None:
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and max_epochs != -1 and max_epochs <= self.autoencoder_epochs:
            raise UserInputError(
                f"trainer.max_epochs must exceed autoencoder_epochs={self.autoencoder_epochs} (epochs "
                f"[0, {self.autoencoder_epochs}) train the autoencoder, later ones the flow), got {max_epochs}")

    def _start_flow_stage(self) -> None:
        """Encode the train (and val) split once with the frozen encoder and fix the normalisation."""
        datamodule = self.trainer.datamodule
        if datamodule is None or getattr(datamodule, "train_set", None) is None:
            raise UserInputError("LatentFlowMatching needs a DataModule with a `train_set` (e.g. MNISTDataModule) "
                                 "to encode its training codes")
        started = time.perf_counter()
        codes = self.encode_dataset(datamodule.train_set.images)
        if not self.flow_is_trained:      # a resumed run keeps the stored normalisation
            self.flow_shift = codes.mean(0)
            self.flow_scale = codes.std(0).clamp_min(1e-6)
            # the naive Gaussian of Autoencoder.generate, fitted to the same codes
            self.code_mean.copy_(codes.mean(0))
            self.code_cov.copy_(torch.cov(codes.T).reshape(self.latent_dim, self.latent_dim))
        self._train_codes = (codes - self.flow_shift) / self.flow_scale
        val_set = getattr(datamodule, "val_set", None)
        if val_set is not None and len(val_set) > 0:
            self._val_codes = (self.encode_dataset(val_set.images) - self.flow_shift) / self.flow_scale
        self.latent_stage_seconds += time.perf_counter() - started

    def on_train_epoch_start(self) -> None:
        if self.in_flow_stage():
            if self._train_codes is None:
                self._start_flow_stage()
            generator = torch.Generator().manual_seed(self.hparams.seed * 100003 + self.current_epoch)
            self._epoch_order = torch.randperm(self._train_codes.shape[0], generator=generator)
            self._seconds_before_epoch = float(self.latent_stage_seconds)
            self._epoch_started = time.perf_counter()

    @staticmethod
    def _code_batch(codes: torch.Tensor, batch_idx: int, batch_size: int,
                    order: torch.Tensor | None = None) -> torch.Tensor:
        """The ``batch_idx``-th batch [<= batch_size, d] of ``codes`` [N, d] taken in ``order`` (a
        permutation of range(N); None: as stored): one flow epoch visits every code once."""
        start = (batch_idx * batch_size) % codes.shape[0]
        index = torch.arange(start, min(start + batch_size, codes.shape[0]))
        if order is not None:
            index = order[index]
        return codes[index.to(codes.device)]

    def training_step(self, batch, batch_idx):
        if not self.in_flow_stage():
            return self._shared_step(batch, "train")
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        z1 = self._code_batch(self._train_codes, batch_idx, images.shape[0], self._epoch_order)
        loss = conditional_flow_matching_loss(self.velocity, z1, self.hparams.coupling, self.hparams.sigma)
        self.log("train/flow_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=z1.shape[0])
        self.flow_trained_steps += 1
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.in_flow_stage():
            elapsed = time.perf_counter() - self._epoch_started
            self.latent_stage_seconds.fill_(self._seconds_before_epoch + elapsed)

    def validation_step(self, batch, batch_idx):
        if not self.in_flow_stage():
            return super().validation_step(batch, batch_idx)
        if self._val_codes is None:
            return None
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        z1 = self._code_batch(self._val_codes, batch_idx, images.shape[0])
        generator = torch.Generator(device=z1.device).manual_seed(batch_idx)   # the same draws every epoch
        loss = conditional_flow_matching_loss(self.velocity, z1, self.hparams.coupling, self.hparams.sigma,
                                              generator=generator)
        self.log("val/flow_loss", loss, prog_bar=True, on_epoch=True, batch_size=z1.shape[0])
        return loss

    def on_train_epoch_end(self) -> None:
        self.two_stage_epoch_end(self.in_flow_stage(), self.autoencoder_epochs)
        if self.in_flow_stage() and self.current_epoch + 1 >= self.autoencoder_epochs + self.hparams.flow_epochs:
            self.trainer.should_stop = True

    def configure_optimizers(self):
        """One Adam over two parameter groups: the autoencoder (``lr``) and the velocity field
        (``flow_lr``, cosine-annealed over the flow epochs). Each stage only produces gradients for
        its own group, and Adam skips parameters without gradients."""
        autoencoder = [p for name, p in self.named_parameters() if not name.startswith("velocity.")]
        optimizer = torch.optim.Adam([{"params": autoencoder, "lr": self.lr},
                                      {"params": self.velocity.parameters(), "lr": self.hparams.flow_lr}])
        flow_epochs, start = self.hparams.flow_epochs, self.autoencoder_epochs

        def flow_factor(epoch: int) -> float:
            progress = min(max(epoch - start, 0), flow_epochs) / flow_epochs
            return 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [lambda epoch: 1.0, flow_factor])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
