"""Neural networks shared by every generator: encoder, decoder (and the baselines' generators and
critics), so that two models can use exactly the same architecture for a fair comparison.

All image networks work on MNIST-shaped tensors [B, C, 28, 28] with values in [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn

from ae_ot.checks import UserInputError, require_positive_int

__all__ = ["Encoder", "Decoder", "to_channels_last"]


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """Images or activations [B, C, H, W] in the channels-last (NHWC) memory layout, same values.

    Why: on the CPU, oneDNN's convolutions are faster in NHWC (timings of the autoencoder's and
    the classifier's training steps: docs/benchmarks.md). Networks that use it keep their weights in
    the same layout (``module.to(memory_format=torch.channels_last)``) and return contiguous NCHW
    outputs, so no caller sees the layout.

    Examples
    --------
    >>> import torch
    >>> to_channels_last(torch.rand(2, 3, 4, 4)).is_contiguous(memory_format=torch.channels_last)
    True
    """
    return x.contiguous(memory_format=torch.channels_last)


class Encoder(nn.Module):
    """Convolutional encoder x [B, C, 28, 28] -> z [B, latent_dim].

    conv(C->w, 4, s2) 28->14, conv(w->2w, 4, s2) 14->7, conv(2w->4w, 3, s2) 7->4, linear -> latent.
    Small on purpose: one epoch over 60k images takes seconds on a 2-core CPU.

    Examples
    --------
    >>> import torch
    >>> Encoder(latent_dim=8)(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 8])
    """

    def __init__(self, latent_dim: int = 16, width: int = 16, in_channels: int = 1):
        super().__init__()
        require_positive_int(latent_dim=latent_dim, width=width, in_channels=in_channels)
        self.latent_dim = latent_dim
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 4, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 4 * width, 3, 2, 1), nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(4 * width * 4 * 4, latent_dim),
        )
        self.to(memory_format=torch.channels_last)  # see to_channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(to_channels_last(x))


class Decoder(nn.Module):
    """Convolutional decoder z [B, latent_dim] -> x [B, C, 28, 28] in [0, 1] (sigmoid output).

    Mirror of :class:`Encoder`: linear -> 4w x 4 x 4, transposed convs 4->7->14->28.

    Examples
    --------
    >>> import torch
    >>> Decoder(latent_dim=8)(torch.randn(2, 8)).shape
    torch.Size([2, 1, 28, 28])
    """

    def __init__(self, latent_dim: int = 16, width: int = 16, out_channels: int = 1):
        super().__init__()
        require_positive_int(latent_dim=latent_dim, width=width, out_channels=out_channels)
        self.latent_dim, self.width = latent_dim, width
        self.fc = nn.Sequential(nn.Linear(latent_dim, 4 * width * 4 * 4), nn.ReLU(inplace=True))
        self.net = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 3, 2, 1), nn.ReLU(inplace=True),   # 4 -> 7
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(inplace=True),       # 7 -> 14
            nn.ConvTranspose2d(width, out_channels, 4, 2, 1),                           # 14 -> 28
            nn.Sigmoid(),
        )
        self.to(memory_format=torch.channels_last)  # see to_channels_last

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(to_channels_last(self.fc(z).view(-1, 4 * self.width, 4, 4))).contiguous()


# ------------------------------------------------------------------------------------------------
# Baseline generator and critic (WGAN, WGAN-GP, Sinkhorn, minibatch Wasserstein share them)
# ------------------------------------------------------------------------------------------------
__all__ += ["Generator", "Critic"]


class Generator(nn.Module):
    """Noise z [B, latent_dim] -> images [B, C, 28, 28] in [0, 1].

    The MNIST generator of the WGAN-GP paper's released code (``gan_mnist.py``): Linear ->
    4w x 4 x 4, ReLU; three 5x5 transposed convolutions 4 -> 8 (cropped to 7) -> 14 -> 28 with
    ReLU between them and a sigmoid output; no normalisation (``batch_norm`` optional). The paper
    uses w = 64 (DIM) and latent_dim = 128; the CPU configs of this repo use w = 32.

    Examples
    --------
    >>> import torch
    >>> Generator(latent_dim=16, width=8)(torch.randn(2, 16)).shape
    torch.Size([2, 1, 28, 28])
    """

    def __init__(self, latent_dim: int = 128, width: int = 64, out_channels: int = 1, batch_norm: bool = False):
        super().__init__()
        require_positive_int(latent_dim=latent_dim, width=width, out_channels=out_channels)
        self.latent_dim, self.width = latent_dim, width

        def norm(channels: int) -> nn.Module:
            return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()

        self.fc = nn.Sequential(nn.Linear(latent_dim, 4 * width * 4 * 4), nn.ReLU(inplace=True))
        self.up1 = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 5, 2, 2, output_padding=1), norm(2 * width),
            nn.ReLU(inplace=True),
        )  # 4 -> 8, cropped to 7
        self.up2 = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 5, 2, 2, output_padding=1), norm(width), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width, out_channels, 5, 2, 2, output_padding=1), nn.Sigmoid(),
        )  # 7 -> 14 -> 28

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.up1(self.fc(z).view(-1, 4 * self.width, 4, 4))
        return self.up2(h[:, :, :7, :7])


class Critic(nn.Module):
    """Images [B, C, 28, 28] -> one real score per image [B].

    The MNIST critic of the WGAN-GP paper's released code: three 5x5 stride-2 convolutions
    (28 -> 14 -> 7 -> 4, channels w, 2w, 4w) with LeakyReLU 0.2, no normalisation (the gradient
    penalty is per sample, so batch norm would be wrong), then a linear layer.

    Examples
    --------
    >>> import torch
    >>> Critic(width=8)(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2])
    """

    def __init__(self, width: int = 64, in_channels: int = 1):
        super().__init__()
        require_positive_int(width=width, in_channels=in_channels)
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 5, 2, 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, 2 * width, 5, 2, 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * width, 4 * width, 5, 2, 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Flatten(),
            nn.Linear(4 * width * 4 * 4, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


# ------------------------------------------------------------------------------------------------
# MLP generator and critic for vector data (2-D toy sets); chosen by the baselines' net="mlp"
# ------------------------------------------------------------------------------------------------
__all__ += ["MLPGenerator", "MLPCritic", "make_generator", "make_critic", "NETS"]

#: the network families a baseline can be built with: "conv" for MNIST-shaped images, "mlp" for vectors
NETS = ("conv", "mlp")


def _mlp(in_dim: int, out_dim: int, width: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(in_dim if i == 0 else width, width), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class MLPGenerator(nn.Module):
    """Noise z [B, latent_dim] -> points [B, data_dim]: ``depth`` hidden layers of ``width`` units
    with ReLU and a linear output (no squashing: vector data lives anywhere in R^data_dim).

    The toy-data generator of the WGAN-GP paper (three hidden ReLU layers; the paper uses 512
    units).

    Examples
    --------
    >>> import torch
    >>> MLPGenerator(latent_dim=2, data_dim=2, width=16)(torch.randn(5, 2)).shape
    torch.Size([5, 2])
    """

    def __init__(self, latent_dim: int = 2, data_dim: int = 2, width: int = 128, depth: int = 3):
        super().__init__()
        require_positive_int(latent_dim=latent_dim, data_dim=data_dim, width=width, depth=depth)
        self.latent_dim, self.data_dim = latent_dim, data_dim
        self.net = _mlp(latent_dim, data_dim, width, depth)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class MLPCritic(nn.Module):
    """Points [B, data_dim] -> one real score per point [B]: ``depth`` hidden ReLU layers of
    ``width`` units, no normalisation (the gradient penalty is per sample).

    Examples
    --------
    >>> import torch
    >>> MLPCritic(data_dim=2, width=16)(torch.randn(5, 2)).shape
    torch.Size([5])
    """

    def __init__(self, data_dim: int = 2, width: int = 128, depth: int = 3):
        super().__init__()
        require_positive_int(data_dim=data_dim, width=width, depth=depth)
        self.data_dim = data_dim
        self.net = _mlp(data_dim, 1, width, depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1)).squeeze(1)


def _check_net(net: str, batch_norm: bool = False) -> None:
    if net not in NETS:
        raise UserInputError(f"net must be 'conv' (MNIST-shaped images) or 'mlp' (vector data), got {net!r}")
    if net == "mlp" and batch_norm:
        raise UserInputError("batch_norm is only available with net='conv', got batch_norm=True with net='mlp'")


def make_generator(net: str, latent_dim: int, width: int, channels: int = 1, batch_norm: bool = False,
                   data_dim: int = 2) -> nn.Module:
    """The baselines' generator: :class:`Generator` (images [B, channels, 28, 28]) for ``net="conv"``,
    :class:`MLPGenerator` (vectors [B, data_dim], ``width`` hidden units) for ``net="mlp"``.

    Examples
    --------
    >>> type(make_generator("mlp", latent_dim=2, width=16)).__name__
    'MLPGenerator'
    """
    _check_net(net, batch_norm)
    if net == "conv":
        return Generator(latent_dim, width, out_channels=channels, batch_norm=batch_norm)
    return MLPGenerator(latent_dim, data_dim, width)


def make_critic(net: str, width: int, channels: int = 1, data_dim: int = 2) -> nn.Module:
    """The baselines' critic: :class:`Critic` for ``net="conv"``, :class:`MLPCritic` for ``net="mlp"``.

    Examples
    --------
    >>> type(make_critic("conv", width=8)).__name__
    'Critic'
    """
    _check_net(net)
    if net == "conv":
        return Critic(width, in_channels=channels)
    return MLPCritic(data_dim, width)
