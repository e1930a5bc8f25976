"""Generator trained on the exact minibatch Wasserstein loss (Fatras et al. 2020, "Learning with
minibatch Wasserstein"): the incomplete U-statistic over k pairs of size-m minibatches."""

from __future__ import annotations

import warnings
from typing import Literal

import torch

from ae_ot.checks import MODEL_HINT, UserInputError, require_positive, require_positive_int
from ae_ot.generators.base import NoiseGenerativeModel
from ae_ot.nets import make_generator
from ae_ot.ot.minibatch import debiased_minibatch_wasserstein, minibatch_wasserstein

__all__ = ["MinibatchWassersteinGenerator"]


class MinibatchWassersteinGenerator(NoiseGenerativeModel):
    """Generator G trained to minimise h_k(G(z_1..B), x_1..B): from a real batch of B images and B
    generated ones, ``k`` pairs of size-``m`` minibatches are drawn, each pair is matched by an
    exact assignment (scipy ``linear_sum_assignment``, squared Euclidean cost on pixels) and the
    matched costs are averaged; gradients flow through the matched pairs.

    Parameters
    ----------
    latent_dim : int, default 128
    width : int, default 32
        Base width of the shared :class:`~ae_ot.nets.Generator`.
    lr : float, default 1e-3
        Adam learning rate (betas (0.5, 0.999)).
    m : int, default 64
        Minibatch size of each OT problem; must be <= the data batch size.
    k : int, default 1
        Number of minibatch pairs averaged per step.
    debiased : bool, default False
        Minimise h(x, y) - h(x, x)/2 - h(y, y)/2 instead (three times the assignments).
    channels : int, default 1
        Image channels (3 for Stacked MNIST).
    net : {"conv", "mlp"}, default "conv"
        "conv": the MNIST image generator; "mlp": :class:`~ae_ot.nets.MLPGenerator` for vector data
        (e.g. ``Points2DDataModule``) with ``width`` hidden units.
    data_dim : int, default 2
        Dimension of the vector data (``net="mlp"`` only).

    Examples
    --------
    >>> model = MinibatchWassersteinGenerator(latent_dim=16, width=8, m=32)   # untrained
    >>> model.sample(4, seed=0).shape
    torch.Size([4, 1, 28, 28])
    """

    def __init__(self, latent_dim: int = 128, width: int = 32, lr: float = 1e-3, m: int = 64, k: int = 1,
                 debiased: bool = False, grid_every_n_epochs: int = 1, grid_size: int = 64, channels: int = 1,
                 net: Literal["conv", "mlp"] = "conv", data_dim: int = 2):
        super().__init__(latent_dim, grid_every_n_epochs, grid_size)
        require_positive_int(MODEL_HINT, width=width, m=m, k=k, channels=channels, data_dim=data_dim)
        require_positive(MODEL_HINT, lr=lr)
        self.save_hyperparameters()
        self.lr, self.m, self.k, self.debiased = lr, m, k, bool(debiased)
        self.generator = make_generator(net, latent_dim, width, channels, data_dim=data_dim)
        self._warned_small_batch = False

    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        batch_size = getattr(datamodule, "batch_size", None)
        if isinstance(batch_size, int) and self.m > batch_size:
            raise UserInputError(
                f"m={self.m} is larger than the batch size {batch_size}; set --model.init_args.m <= "
                f"{batch_size} or --data.init_args.batch_size >= {self.m}"
            )

    def loss(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        fn = debiased_minibatch_wasserstein if self.debiased else minibatch_wasserstein
        return fn(fake, real, self.m, self.k)

    def training_step(self, batch, batch_idx):
        real = batch[0] if isinstance(batch, (tuple, list)) else batch
        b = real.shape[0]
        if b < self.m:  # the last, incomplete batch of an epoch (use drop_last to avoid it)
            if not self._warned_small_batch:
                warnings.warn(f"skipping a batch of {b} < m={self.m} images; set data.drop_last=true",
                              stacklevel=2)
                self._warned_small_batch = True
            return None
        fake = self.generator(torch.randn(b, self.latent_dim, device=self.device))
        loss = self.loss(fake, real)
        self.log("train/minibatch_wasserstein", loss.detach(), prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=b)
        self.count_generator_step(b)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.generator.parameters(), lr=self.lr, betas=(0.5, 0.999))
