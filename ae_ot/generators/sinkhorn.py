"""Generator trained on the debiased Sinkhorn divergence between generated and real minibatches
(Genevay, Peyre, Cuturi 2018; Feydy et al. 2019), computed with GeomLoss."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from ae_ot.checks import MODEL_HINT, UserInputError, require_positive, require_positive_int
from ae_ot.generators.base import NoiseGenerativeModel
from ae_ot.nets import make_generator
from ae_ot.ot.minibatch import sinkhorn_divergence

__all__ = ["SinkhornGenerator", "load_frozen_encoder"]

#: with backend="auto", batches of at least this many points on a GPU use KeOps' online backend
ONLINE_BACKEND_MIN_BATCH = 1024


def load_frozen_encoder(checkpoint: str):
    """The encoder of a trained :class:`~ae_ot.generators.Autoencoder` checkpoint, frozen (eval, no grad).

    Examples
    --------
    >>> encoder = load_frozen_encoder("autoencoder.ckpt")  # doctest: +SKIP
    >>> encoder(images).shape  # doctest: +SKIP
    """
    from ae_ot.generators.autoencoder import Autoencoder

    if not checkpoint or not Path(checkpoint).is_file():
        raise FileNotFoundError(
            f"encoder_checkpoint {checkpoint!r} is not a file; train one with "
            "`ae-ot fit --config models/autoencoder.yaml` and pass its .ckpt path"
        )
    encoder = Autoencoder.load_from_checkpoint(checkpoint, map_location="cpu").encoder
    encoder.eval()
    encoder.requires_grad_(False)
    return encoder


class SinkhornGenerator(NoiseGenerativeModel):
    """Generator G trained to minimise S_eps(G(z_1..B), x_1..B), the debiased Sinkhorn divergence
    S_eps(a, b) = OT_eps(a, b) - OT_eps(a, a)/2 - OT_eps(b, b)/2 between a generated and a real
    minibatch (uniform weights, cost |a - b|^p / p, eps = blur^p), via GeomLoss ``SamplesLoss``.

    The cost is measured either on pixels (784-dim vectors) or on the codes of a frozen encoder
    (``cost_space="codes"`` with ``encoder_checkpoint`` an Autoencoder checkpoint).

    Parameters
    ----------
    latent_dim : int, default 128
    width : int, default 32
        Base width of the shared :class:`~ae_ot.nets.Generator`.
    lr : float, default 1e-3
        Adam learning rate (betas (0.5, 0.999)).
    blur : float, default 1.0
        GeomLoss ``blur`` (= eps^(1/p)), in the units of the cost space (pixel distances on MNIST
        are ~ 5-10).
    p : int, default 2
    scaling : float, default 0.8
        GeomLoss' epsilon-scaling ratio (closer to 1: more accurate, slower).
    backend : {"auto", "tensorized", "online", "multiscale"}, default "auto"
        "auto": tensorized (dense matrices) for small batches or on CPU, KeOps "online" for
        batches of >= 1024 points on a GPU.
    cost_space : {"pixels", "codes"}, default "pixels"
    encoder_checkpoint : str or None
        Autoencoder checkpoint whose frozen encoder defines the code space (needed for "codes").
    channels : int, default 1
        Image channels (3 for Stacked MNIST).
    net : {"conv", "mlp"}, default "conv"
        "conv": the MNIST image generator; "mlp": :class:`~ae_ot.nets.MLPGenerator` for vector data
        (e.g. ``Points2DDataModule``) with ``width`` hidden units.
    data_dim : int, default 2
        Dimension of the vector data (``net="mlp"`` only).

    Examples
    --------
    >>> model = SinkhornGenerator(latent_dim=16, width=8)   # untrained: the interface, not the quality
    >>> model.sample(4, seed=0).shape
    torch.Size([4, 1, 28, 28])
    """

    def __init__(self, latent_dim: int = 128, width: int = 32, lr: float = 1e-3, blur: float = 1.0, p: int = 2,
                 scaling: float = 0.8, backend: Literal["auto", "tensorized", "online", "multiscale"] = "auto",
                 cost_space: Literal["pixels", "codes"] = "pixels", encoder_checkpoint: str | None = None,
                 grid_every_n_epochs: int = 1, grid_size: int = 64, channels: int = 1,
                 net: Literal["conv", "mlp"] = "conv", data_dim: int = 2):
        super().__init__(latent_dim, grid_every_n_epochs, grid_size)
        require_positive_int(MODEL_HINT, width=width, p=p, channels=channels, data_dim=data_dim)
        require_positive(MODEL_HINT, lr=lr, blur=blur)
        if isinstance(scaling, bool) or not isinstance(scaling, (int, float)) or not 0 < scaling < 1:
            raise UserInputError(f"scaling must be in (0, 1), got {scaling!r}")
        if backend not in ("auto", "tensorized", "online", "multiscale"):
            raise UserInputError(f"backend must be 'auto', 'tensorized', 'online' or 'multiscale', got {backend!r}")
        if cost_space not in ("pixels", "codes"):
            raise UserInputError(f"cost_space must be 'pixels' or 'codes', got {cost_space!r}")
        if cost_space == "codes" and not encoder_checkpoint:
            raise UserInputError("cost_space='codes' needs encoder_checkpoint (an Autoencoder .ckpt); "
                                 "pass --model.init_args.encoder_checkpoint=<path> or use cost_space='pixels'")
        self.save_hyperparameters()
        self.lr, self.blur, self.p, self.scaling = lr, float(blur), p, float(scaling)
        self.backend, self.cost_space = backend, cost_space
        self.generator = make_generator(net, latent_dim, width, channels, data_dim=data_dim)
        self.encoder = load_frozen_encoder(encoder_checkpoint) if cost_space == "codes" else None

    def train(self, mode: bool = True):
        super().train(mode)
        if self.encoder is not None:
            self.encoder.eval()  # frozen: always in eval mode
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Points the cost is measured between: flattened pixels or encoder codes."""
        return self.encoder(x) if self.encoder is not None else x.flatten(1)

    def resolved_backend(self, n: int) -> str:
        if self.backend != "auto":
            return self.backend
        return "online" if self.device.type == "cuda" and n >= ONLINE_BACKEND_MIN_BATCH else "tensorized"

    def divergence(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        a, b = self.features(fake), self.features(real)
        return sinkhorn_divergence(a, b, blur=self.blur, p=self.p, scaling=self.scaling,
                                   backend=self.resolved_backend(max(a.shape[0], b.shape[0])))

    def training_step(self, batch, batch_idx):
        real = batch[0] if isinstance(batch, (tuple, list)) else batch
        fake = self.generator(torch.randn(real.shape[0], self.latent_dim, device=self.device))
        loss = self.divergence(fake, real)
        b = real.shape[0]
        self.log("train/sinkhorn_divergence", loss.detach(), prog_bar=True, on_step=True, on_epoch=True, batch_size=b)
        self.count_generator_step(b)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.generator.parameters(), lr=self.lr, betas=(0.5, 0.999))
