"""Adversarial baselines: WGAN (weight clipping, Arjovsky et al. 2017) and WGAN-GP (gradient
penalty, Gulrajani et al. 2017), trained with manual optimisation.

Each training batch feeds one critic step; every ``n_critic``-th critic step is followed by one
generator step on fresh noise. Lightning's ``global_step`` counts every optimiser step (critic and
generator), so the modules count their own steps in the buffers ``generator_steps`` and
``critic_steps`` (saved in checkpoints) and log ``train/generator_steps``,
``train/wasserstein_estimate`` (mean critic score on real minus on generated images) and
``train/gp_grad_norm`` (mean gradient norm of the critic on random interpolates).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ae_ot.checks import MODEL_HINT, UserInputError, require_positive, require_positive_int
from ae_ot.generators.base import NoiseGenerativeModel
from ae_ot.nets import make_critic, make_generator

__all__ = ["WGAN", "WGANGP", "gradient_penalty"]


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """WGAN-GP's two-sided penalty E[(|grad_x f(x_hat)| - 1)^2] on random interpolates
    x_hat = t x_real + (1 - t) x_fake, t ~ U[0, 1] per sample.

    Returns ``(penalty, grad_norms)``: the penalty keeps its graph (create_graph) so it can be
    back-propagated into the critic's weights; ``grad_norms`` [B] are detached.

    Examples
    --------
    >>> import torch
    >>> from ae_ot.nets import MLPCritic
    >>> critic = MLPCritic(data_dim=2, width=8)
    >>> penalty = gradient_penalty(critic, torch.randn(4, 2), torch.randn(4, 2), generator=torch.Generator().manual_seed(0))[0]
    >>> penalty.dim(), bool(penalty >= 0)
    (0, True)
    """
    if real.shape != fake.shape:
        raise UserInputError(f"real and fake batches differ in shape: {tuple(real.shape)} vs {tuple(fake.shape)}")
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    t = torch.rand(shape, generator=generator, device=real.device if generator is None else "cpu").to(real)
    interpolates = (t * real.detach() + (1 - t) * fake.detach()).requires_grad_(True)
    scores = critic(interpolates)
    (grads,) = torch.autograd.grad(scores.sum(), interpolates, create_graph=True)
    norms = grads.flatten(1).norm(dim=1)
    return ((norms - 1.0) ** 2).mean(), norms.detach()


class _WassersteinGAN(NoiseGenerativeModel):
    """Shared machinery of WGAN and WGAN-GP: networks, noise, the critic/generator alternation."""

    def __init__(self, latent_dim: int, width: int, critic_width: int | None, n_critic: int,
                 grid_every_n_epochs: int, grid_size: int, channels: int = 1, batch_norm: bool = False,
                 net: str = "conv", data_dim: int = 2):
        super().__init__(latent_dim, grid_every_n_epochs, grid_size)
        require_positive_int(MODEL_HINT, width=width, n_critic=n_critic, channels=channels, data_dim=data_dim)
        critic_width = width if critic_width is None else critic_width
        require_positive_int(MODEL_HINT, critic_width=critic_width)
        self.automatic_optimization = False
        self.n_critic = n_critic
        # batch norm only ever in the generator: the critic's gradient penalty is per sample
        self.generator = make_generator(net, latent_dim, width, channels, batch_norm, data_dim)
        self.critic = make_critic(net, critic_width, channels, data_dim)
        self.register_buffer("critic_steps", torch.zeros((), dtype=torch.long))

    # ---- model ---------------------------------------------------------------------------------
    def noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, device=self.device)

    # ---- the critic's own terms (penalty or clipping) -----------------------------------------------
    def critic_regulariser(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(penalty added to the critic loss or None, gradient norms on interpolates or None)."""
        return None, None

    def after_critic_step(self) -> None:
        pass

    # ---- training ----------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        real = batch[0] if isinstance(batch, (tuple, list)) else batch
        opt_g, opt_c = self.optimizers()
        b = real.shape[0]

        # critic step: maximise E f(real) - E f(fake)
        self.critic.requires_grad_(True)
        with torch.no_grad():
            fake = self.generator(self.noise(b))
        wasserstein = self.critic(real).mean() - self.critic(fake).mean()
        penalty, norms = self.critic_regulariser(real, fake)
        loss_c = -wasserstein if penalty is None else -wasserstein + penalty
        opt_c.zero_grad(set_to_none=True)
        self.manual_backward(loss_c)
        opt_c.step()
        self.after_critic_step()
        self.critic_steps += 1

        # generator step every n_critic critic steps: minimise -E f(G(z))
        if int(self.critic_steps) % self.n_critic == 0:
            self.critic.requires_grad_(False)
            loss_g = -self.critic(self.generator(self.noise(b))).mean()
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(loss_g)
            opt_g.step()
            self.critic.requires_grad_(True)
            self.count_generator_step(b, prog_bar=True)
            self.log("train/generator_loss", loss_g.detach(), on_step=True, on_epoch=False, batch_size=b)

        self.log("train/wasserstein_estimate", wasserstein.detach(), prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=b)
        self.log("train/critic_loss", loss_c.detach(), on_step=True, on_epoch=False, batch_size=b)
        if norms is not None:
            self.log("train/gp_grad_norm", norms.mean(), on_step=True, on_epoch=True, batch_size=b)


class WGAN(_WassersteinGAN):
    """WGAN with weight clipping: RMSProp (lr 5e-5), every critic weight clipped to
    [-clip_value, clip_value] after each critic step, ``n_critic`` critic steps per generator step.

    The gradient norm on interpolates (``train/gp_grad_norm``) is only a diagnostic here, computed
    every ``diagnostic_every`` critic steps (it costs a double backward pass).

    Parameters
    ----------
    latent_dim : int, default 128
    width : int, default 32
        Base width w of the generator (paper code: 64).
    critic_width : int or None, default None (= width)
    lr : float, default 5e-5
    clip_value : float, default 0.01
    n_critic : int, default 5
    diagnostic_every : int, default 50
        Critic steps between two measurements of the gradient norm on interpolates (0: never).
    channels : int, default 1
        Image channels (3 for Stacked MNIST).
    batch_norm : bool, default False
        Batch norm in the generator (the WGAN paper's DCGAN generator has it; the WGAN-GP paper's
        MNIST code does not).
    net : {"conv", "mlp"}, default "conv"
        "conv": the MNIST image networks; "mlp": :class:`~ae_ot.nets.MLPGenerator` and
        :class:`~ae_ot.nets.MLPCritic` for vector data (e.g. ``Points2DDataModule``), with
        ``width`` / ``critic_width`` hidden units.
    data_dim : int, default 2
        Dimension of the vector data (``net="mlp"`` only).

    Examples
    --------
    >>> model = WGAN(latent_dim=16, width=8)   # untrained: the interface, not the quality
    >>> model.sample(4, seed=0).shape
    torch.Size([4, 1, 28, 28])
    """

    def __init__(self, latent_dim: int = 128, width: int = 32, critic_width: int | None = None,
                 lr: float = 5e-5, clip_value: float = 0.01, n_critic: int = 5, diagnostic_every: int = 50,
                 grid_every_n_epochs: int = 1, grid_size: int = 64, channels: int = 1, batch_norm: bool = False,
                 net: Literal["conv", "mlp"] = "conv", data_dim: int = 2):
        super().__init__(latent_dim, width, critic_width, n_critic, grid_every_n_epochs, grid_size, channels,
                         batch_norm, net, data_dim)
        require_positive(MODEL_HINT, lr=lr, clip_value=clip_value)
        if isinstance(diagnostic_every, bool) or not isinstance(diagnostic_every, int) or diagnostic_every < 0:
            raise UserInputError(f"diagnostic_every must be an integer >= 0 (0 disables), got {diagnostic_every!r}")
        self.save_hyperparameters()
        self.lr, self.clip_value, self.diagnostic_every = lr, clip_value, diagnostic_every
        self.after_critic_step()  # start inside the clipping box

    def critic_regulariser(self, real, fake):
        if self.diagnostic_every and int(self.critic_steps) % self.diagnostic_every == 0:
            with torch.enable_grad():
                _, norms = gradient_penalty(self.critic, real, fake)
            return None, norms
        return None, None

    @torch.no_grad()
    def after_critic_step(self) -> None:
        for p in self.critic.parameters():
            p.clamp_(-self.clip_value, self.clip_value)

    def configure_optimizers(self):
        return (torch.optim.RMSprop(self.generator.parameters(), lr=self.lr),
                torch.optim.RMSprop(self.critic.parameters(), lr=self.lr))


class WGANGP(_WassersteinGAN):
    """WGAN-GP: gradient penalty ``gp_weight`` * E[(|grad f(x_hat)| - 1)^2] on random interpolates,
    Adam (lr 1e-4, betas (0.5, 0.9)) for both networks, ``n_critic`` critic steps per generator step.

    Parameters
    ----------
    latent_dim : int, default 128
    width : int, default 32
        Base width w (the paper's MNIST code uses DIM = 64; 32 is the CPU default).
    critic_width : int or None, default None (= width)
    lr : float, default 1e-4
    beta1, beta2 : float, default 0.5, 0.9
    gp_weight : float, default 10
    n_critic : int, default 5
    channels : int, default 1
        Image channels (3 for Stacked MNIST).
    batch_norm : bool, default False
        Batch norm in the generator (never in the critic).
    net : {"conv", "mlp"}, default "conv"
        Image networks or MLPs for vector data (see :class:`WGAN`).
    data_dim : int, default 2
        Dimension of the vector data (``net="mlp"`` only).

    Examples
    --------
    >>> model = WGANGP(latent_dim=16, width=8)   # untrained: the interface, not the quality
    >>> model.sample(4, seed=0).shape
    torch.Size([4, 1, 28, 28])
    """

    def __init__(self, latent_dim: int = 128, width: int = 32, critic_width: int | None = None,
                 lr: float = 1e-4, beta1: float = 0.5, beta2: float = 0.9, gp_weight: float = 10.0,
                 n_critic: int = 5, grid_every_n_epochs: int = 1, grid_size: int = 64, channels: int = 1,
                 batch_norm: bool = False, net: Literal["conv", "mlp"] = "conv", data_dim: int = 2):
        super().__init__(latent_dim, width, critic_width, n_critic, grid_every_n_epochs, grid_size, channels,
                         batch_norm, net, data_dim)
        require_positive(MODEL_HINT, lr=lr, gp_weight=gp_weight)
        for name, beta in (("beta1", beta1), ("beta2", beta2)):
            if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < 1:
                raise UserInputError(f"{name} must be in [0, 1), got {beta!r}")
        self.save_hyperparameters()
        self.lr, self.betas, self.gp_weight = lr, (beta1, beta2), gp_weight

    def critic_regulariser(self, real, fake):
        penalty, norms = gradient_penalty(self.critic, real, fake)
        self.log("train/gradient_penalty", penalty.detach(), on_step=True, on_epoch=False, batch_size=real.shape[0])
        return self.gp_weight * penalty, norms

    def configure_optimizers(self):
        return (torch.optim.Adam(self.generator.parameters(), lr=self.lr, betas=self.betas),
                torch.optim.Adam(self.critic.parameters(), lr=self.lr, betas=self.betas))
