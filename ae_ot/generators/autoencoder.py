"""The autoencoder whose latent space AE-OT transports noise into."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ae_ot.checks import UserInputError
from ae_ot.generators.base import GenerativeModel
from ae_ot.io import read_checkpoint
from ae_ot.nets import Decoder, Encoder
from ae_ot.ot.distributed import gather_rows, shard_bounds

__all__ = ["Autoencoder", "read_autoencoder_state", "gaussian_sampler", "gaussian_cholesky", "sample_gaussian",
           "ENCODE_BATCH"]

#: images per encoder call. Under DDP each process encodes whole batches of this size, the same
#: batches a single process encodes, so the codes (and everything after them) are bitwise the same.
ENCODE_BATCH = 512


def read_autoencoder_state(path) -> tuple[dict, dict]:
    """(encoder/decoder weights, hyper-parameters) of an Autoencoder, AE-OT or latent-flow checkpoint.

    A missing, corrupt or non-Lightning file gets :func:`ae_ot.io.read_checkpoint`'s clear error.
    """
    checkpoint = read_checkpoint(path)
    state = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith(("encoder.", "decoder."))}
    return state, dict(checkpoint.get("hyper_parameters") or {})


def gaussian_sampler(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The naive latent sampler's Gaussian fit of codes [N, d]: (mean [d], Cholesky factor [d, d]
    of the covariance + 1e-6 I, the jitter keeping a rank-deficient fit factorisable).

    Examples
    --------
    >>> import torch
    >>> codes = torch.randn(100, 3, generator=torch.Generator().manual_seed(0))
    >>> mean, chol = gaussian_sampler(codes)
    >>> mean.shape, chol.shape
    (torch.Size([3]), torch.Size([3, 3]))
    """
    return codes.mean(0), gaussian_cholesky(torch.cov(codes.T))


def gaussian_cholesky(cov: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factor [d, d] of cov + 1e-6 I.

    Examples
    --------
    >>> import torch
    >>> gaussian_cholesky(4.0 * torch.eye(2)).diagonal().round(decimals=3).tolist()
    [2.0, 2.0]
    """
    return torch.linalg.cholesky(cov + 1e-6 * torch.eye(cov.shape[0], dtype=cov.dtype))


def sample_gaussian(mean: torch.Tensor, chol: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n codes [n, d] = mean + eps @ chol.T, eps ~ N(0, I) drawn from ``generator`` (CPU).

    Examples
    --------
    >>> import torch
    >>> sample_gaussian(torch.zeros(3), torch.eye(3), 5, torch.Generator().manual_seed(0)).shape
    torch.Size([5, 3])
    """
    return mean + torch.randn(n, mean.shape[0], generator=generator) @ chol.T


class Autoencoder(GenerativeModel):
    """Convolutional autoencoder x -> z = E(x) in R^d -> D(z) ~ x.

    Trained on the reconstruction loss (binary cross-entropy by default, or MSE); always logs
    ``train/mse``, ``val/mse`` and ``test/mse`` (mean squared error per pixel) and writes a grid of
    inputs (odd rows) above their reconstructions (even rows) into ``<run>/images`` each epoch.

    As a generator on its own it is the *naive* latent model: it keeps the mean and covariance of
    the training codes seen in the last epoch and decodes z ~ N(mean, cov). That is exactly the
    baseline whose samples fall into the gaps of the latent distribution, which AE-OT removes.

    Parameters
    ----------
    latent_dim : int, default 16
    width : int, default 16
        Channels of the first conv layer (doubling twice after).
    lr : float, default 2e-3
        Adam learning rate.
    loss : {"bce", "mse"}, default "bce"
    channels : int, default 1

    Examples
    --------
    >>> import torch
    >>> model = Autoencoder(latent_dim=8)   # untrained: the shapes, not the quality
    >>> model.encoder(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 8])
    >>> model.sample(4, seed=0).shape
    torch.Size([4, 1, 28, 28])
    """

    def __init__(self, latent_dim: int = 16, width: int = 16, lr: float = 2e-3,
                 loss: Literal["bce", "mse"] = "bce", channels: int = 1,
                 grid_every_n_epochs: int = 1, grid_size: int = 64):
        super().__init__(latent_dim, grid_every_n_epochs, grid_size)
        if lr <= 0:
            raise UserInputError(f"lr must be positive, got {lr}")
        if loss not in ("bce", "mse"):
            raise UserInputError(f"loss must be 'bce' or 'mse', got {loss!r}")
        self.save_hyperparameters()
        self.image_shape = (channels, 28, 28)
        self.encoder = Encoder(latent_dim, width, channels)
        self.decoder = Decoder(latent_dim, width, channels)
        self.lr, self.loss_name = lr, loss
        # Gaussian fitted to the training codes (naive latent sampling), refreshed every epoch.
        self.register_buffer("code_mean", torch.zeros(latent_dim))
        self.register_buffer("code_cov", torch.eye(latent_dim))
        self._code_sums = None

    # ---- model ---------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, C, 28, 28] -> codes [B, latent_dim]."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes [B, latent_dim] -> images [B, C, 28, 28] in [0, 1]."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def encode_dataset(self, images: torch.Tensor, batch_size: int = ENCODE_BATCH, progress: bool = False,
                       distributed=False) -> torch.Tensor:
        """Codes [n, d] of images [n, C, 28, 28] (eval mode, batched, on the module's device).

        Parameters
        ----------
        images : tensor [n, C, 28, 28]
        batch_size : int
            Images per encoder call.
        progress : bool
            tqdm bar.
        distributed : bool or ProcessGroup, default False
            Collective over a ``torch.distributed`` group (True: the default group); every rank
            passes the same ``images``. Each rank encodes a contiguous range of whole batches (the
            batches one process would encode, so the codes are bitwise the same) and the codes are
            gathered: every rank returns all n codes, in dataset order.
        """
        lo, hi, sizes, group = 0, images.shape[0], None, None
        if distributed is not False:
            import torch.distributed as dist

            group = None if distributed is True else distributed
            rank, world = dist.get_rank(group), dist.get_world_size(group)
            num_batches = -(-images.shape[0] // batch_size)
            bounds = [min(images.shape[0], batch_size * shard_bounds(num_batches, r, world)[0])
                      for r in range(world)] + [images.shape[0]]
            sizes = [bounds[r + 1] - bounds[r] for r in range(world)]
            lo, hi = bounds[rank], bounds[rank + 1]
        was_training = self.training
        self.eval()
        try:
            codes = [torch.empty(0, self.latent_dim, device=self.device)]
            for start in tqdm(range(lo, hi, batch_size), desc="encoding", disable=not progress, leave=False):
                codes.append(self.encode(images[start:min(start + batch_size, hi)].to(self.device)).float())
        finally:
            self.train(was_training)
        codes = torch.cat(codes)
        return codes if sizes is None else gather_rows(codes, sizes, group)

    def load_autoencoder_weights(self, path: str) -> None:
        """Copy the encoder and decoder weights of the autoencoder checkpoint ``path`` (an
        Autoencoder, AE-OT, latent-flow or AE-OT-GAN one) into this model.

        Raises :class:`UserInputError` for a missing file, a checkpoint without encoder/decoder
        weights (a WGAN's), or one of another architecture, naming the path and the fix.
        """
        try:
            state, hparams = read_autoencoder_state(path)
        except FileNotFoundError as err:
            raise UserInputError(f"autoencoder_ckpt must be an existing checkpoint file, got {path!r} "
                                 "(no such file)") from err
        expected = [k for k in self.state_dict() if k.startswith(("encoder.", "decoder."))]
        if not state:
            raise UserInputError(f"autoencoder_ckpt must hold an autoencoder's encoder and decoder weights "
                                 f"(encoder.*, decoder.*), got {path} with none (it holds a "
                                 f"{hparams.get('_class_path', 'checkpoint without them')}); pass the checkpoint "
                                 "of an Autoencoder or AE-OT run")
        theirs = {k: hparams.get(k) for k in ("latent_dim", "width", "channels") if k in hparams}
        ours = {"latent_dim": self.hparams.latent_dim, "width": self.hparams.width,
                "channels": self.hparams.channels}
        missing = sorted(set(expected) - set(state))
        try:
            if missing:
                raise RuntimeError(f"missing keys {missing[:4]}")
            self.load_state_dict(state, strict=False)
        except RuntimeError as err:
            raise UserInputError(f"autoencoder_ckpt must match this model's autoencoder ({ours}), got {path} "
                                 f"with {theirs or 'another architecture'}: {str(err)[:300]}") from err

    def reconstruction_loss(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "bce":
            return F.binary_cross_entropy(x_hat, x)
        return F.mse_loss(x_hat, x)

    # ---- naive generator -------------------------------------------------------------------------
    def generate(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = sample_gaussian(self.code_mean.cpu(), gaussian_cholesky(self.code_cov.cpu()), n, generator)
        return self.decode(z.to(self.device))

    # ---- Lightning hooks -----------------------------------------------------------------------
    def _shared_step(self, batch, stage: str) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        z = self.encode(x)
        x_hat = self.decode(z)
        loss = self.reconstruction_loss(x_hat, x)
        self.log(f"{stage}/loss", loss, prog_bar=stage != "test", on_epoch=True, on_step=stage == "train",
                 batch_size=x.shape[0])
        self.log(f"{stage}/mse", F.mse_loss(x_hat.detach(), x), prog_bar=stage == "val", on_epoch=True,
                 on_step=False, batch_size=x.shape[0])
        if stage == "train":
            zd = z.detach().double()
            sums = (zd.shape[0], zd.sum(0), zd.T @ zd)
            self._code_sums = sums if self._code_sums is None else tuple(a + b for a, b in zip(self._code_sums, sums))
        return loss

    def training_step(self, batch, batch_idx):
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx):
        loss = self._shared_step(batch, "val")
        if batch_idx == 0 and not self.trainer.sanity_checking:
            self._log_reconstructions(batch[0])
        return loss

    def test_step(self, batch, batch_idx):
        return self._shared_step(batch, "test")

    def _log_reconstructions(self, x: torch.Tensor, n: int = 32) -> None:
        x = x[:n]
        with torch.no_grad():
            x_hat = self(x)
        # rows of 8: inputs, then their reconstructions underneath
        rows = []
        for start in range(0, x.shape[0], 8):
            rows += [x[start:start + 8], x_hat[start:start + 8]]
        self.log_image_grid(torch.cat(rows), "reconstructions", nrow=8)

    def on_train_epoch_end(self) -> None:
        self._update_code_stats()
        super().on_train_epoch_end()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        # A model that started from `autoencoder_ckpt` (AE-OT, AE-OT-GAN, the latent flow) holds
        # those weights now: restoring it must not need that file, nor train a two-stage model's
        # autoencoder again (its `autoencoder_epochs` as resolved at construction).
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        if "autoencoder_ckpt" in hparams:
            checkpoint["autoencoder_source"] = hparams["autoencoder_ckpt"]
            hparams["autoencoder_ckpt"] = None
        if "autoencoder_epochs" in hparams:
            hparams["autoencoder_epochs"] = self.autoencoder_epochs
        if hparams:
            checkpoint["hyper_parameters"] = hparams

    def two_stage_epoch_end(self, second_stage: bool, stage_start: int) -> None:
        """The epoch end of a model that trains this autoencoder for its first ``stage_start`` epochs
        and a latent model after them (AE-OT-GAN, the latent flow): the code statistics during the
        first stage, a sample grid every ``grid_every_n_epochs`` epochs of the second."""
        if not second_stage:
            self._update_code_stats()
            return
        every = self.grid_every_n_epochs
        if every and (self.current_epoch + 1 - stage_start) % every == 0:
            self.log_image_grid(self.sample(self.grid_size, seed=0), "samples")

    def _update_code_stats(self) -> None:
        """Refresh the Gaussian fit (mean, covariance) of the codes seen in this epoch."""
        if self._code_sums is not None:
            count, total, outer = self._code_sums
            mean = total / count
            cov = outer / count - torch.outer(mean, mean)
            self.code_mean.copy_(mean.float())
            self.code_cov.copy_(cov.float())
            self._code_sums = None

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)
