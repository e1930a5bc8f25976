r"""AE-OT-GAN: the decoder of AE-OT sharpened as a GAN generator fed by AE-OT's latent sampler.

An, Guo, Zhang, Qi, Lei, Yau and Gu, "AE-OT-GAN: Training GANs from data specific latent
distribution", ECCV 2020. AE-OT's samples are exactly as sharp as its decoder. AE-OT-GAN keeps the
latent side (the extended semi-discrete OT map reaches every mode of the codes and never mixes two)
and trains the decoder adversarially:

1. epochs ``[0, autoencoder_epochs)`` train the autoencoder (:class:`~ae_ot.generators.Autoencoder`'s
   loss), unless ``autoencoder_ckpt`` gives one (then ``autoencoder_epochs`` defaults to 0);
2. when the GAN stage starts, the (now frozen) encoder encodes the training set and the latent
   sampler (:class:`ae_ot.ot.sampler.LatentOTSampler`) is fitted on the codes, unless the
   ``autoencoder_ckpt`` held a solved one for the same encoder;
3. each GAN step, with a real batch :math:`x` and sampler codes :math:`\hat z`:

   * the discriminator :math:`D` (:class:`~ae_ot.nets.Critic`, trained from scratch) minimises
     the non-saturating loss :math:`\mathrm{softplus}(-D(x)) + \mathrm{softplus}(D(G(\hat z)))`
     plus the R1 penalty :math:`\tfrac{\gamma}{2} \lVert \nabla_x D(x) \rVert^2` (Mescheder et al.,
     ICML 2018), or the WGAN-GP loss (``gan_loss="wgan_gp"``);
   * the generator :math:`G` (the decoder, initialised from the autoencoder) minimises the
     adversarial loss plus the *content* term on real images and their own codes,

     .. math:: \lambda \big( \lVert G(E(x)) - x \rVert_1 + \lVert \phi(G(E(x))) - \phi(x) \rVert_1 \big),

     with :math:`\phi` the discriminator's features (the paper's paired-data constraint): every
     training code keeps decoding to its own digit, so the modes that OT reaches survive.

Sampling is AE-OT's: sampler codes, then the (now adversarially trained) decoder.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F

from ae_ot.checks import MODEL_HINT, UserInputError, require_positive
from ae_ot.generators.ae_ot import AEOT
from ae_ot.generators.wgan import gradient_penalty
from ae_ot.io import read_checkpoint
from ae_ot.nets import Critic
from ae_ot.ot.sampler import LatentOTSettings, stored_sampler_solved

__all__ = ["AEOTGAN", "DEFAULT_AUTOENCODER_EPOCHS"]

#: autoencoder epochs when ``autoencoder_epochs`` is None and no ``autoencoder_ckpt`` is given
DEFAULT_AUTOENCODER_EPOCHS = 25


class AEOTGAN(AEOT):
    """AE-OT-GAN: AE-OT whose decoder is then trained as a GAN generator (module docstring).

    Parameters
    ----------
    latent_dim, width, lr, loss, channels
        The autoencoder's (see :class:`~ae_ot.generators.Autoencoder`).
    autoencoder_ckpt : str or None, default None
        Start from this checkpoint's encoder/decoder weights (an Autoencoder, AE-OT, ... run). When
        it is an AE-OT checkpoint with a solved latent sampler, that solution is used as well.
    autoencoder_epochs : int or None, default None
        Epochs [0, autoencoder_epochs) train the autoencoder; later epochs the GAN. None: 0 with
        ``autoencoder_ckpt``, 25 without.
    ot : LatentOTSettings or dict
        AE-OT's OT stage and extended map.
    critic_width : int, default 16
        Base width of the discriminator (:class:`~ae_ot.nets.Critic`).
    gan_lr : float, default 2e-4
        Adam learning rate (betas 0.5, 0.9) of the generator and the discriminator.
    gan_loss : {"nonsaturating", "wgan_gp"}, default "nonsaturating"
        The adversarial loss: non-saturating with the R1 penalty, or WGAN with gradient penalty.
    penalty_weight : float, default 1.0
        gamma of R1 (``nonsaturating``) or the gradient-penalty weight (``wgan_gp``, e.g. 10).
    content_weight : float, default 1.0
        lambda of the content term on real images and their own codes.

    Examples
    --------
    >>> from ae_ot.generators import AEOTGAN
    >>> model = AEOTGAN(latent_dim=8, autoencoder_epochs=2, ot={"time_limit": 20.0})
    >>> model.autoencoder_epochs, model.hparams.gan_loss
    (2, 'nonsaturating')
    """

    #: the OT stage runs inside Lightning's loop (when the GAN stage starts), so inside ``trainer.max_time``
    solves_ot_after_training: bool = False

    def __init__(self, latent_dim: int = 16, width: int = 16, lr: float = 2e-3,
                 loss: Literal["bce", "mse"] = "bce", channels: int = 1,
                 autoencoder_ckpt: str | None = None, autoencoder_epochs: int | None = None,
                 ot: LatentOTSettings = LatentOTSettings(), critic_width: int = 16, gan_lr: float = 2e-4,
                 gan_loss: Literal["nonsaturating", "wgan_gp"] = "nonsaturating", penalty_weight: float = 1.0,
                 content_weight: float = 1.0, grid_every_n_epochs: int = 1, grid_size: int = 64):
        super().__init__(latent_dim, width, lr, loss, channels, autoencoder_ckpt, ot, grid_every_n_epochs, grid_size)
        if autoencoder_epochs is not None and (isinstance(autoencoder_epochs, bool)
                                               or not isinstance(autoencoder_epochs, int) or autoencoder_epochs < 0):
            raise UserInputError(f"autoencoder_epochs must be an integer >= 0 or None, got {autoencoder_epochs!r}")
        if gan_loss not in ("nonsaturating", "wgan_gp"):
            raise UserInputError(f"gan_loss must be 'nonsaturating' or 'wgan_gp', got {gan_loss!r}")
        require_positive(MODEL_HINT, gan_lr=gan_lr, critic_width=critic_width)
        for name, value in (("penalty_weight", penalty_weight), ("content_weight", content_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise UserInputError(f"{name} must be a number >= 0, got {value!r}")
        self.save_hyperparameters()
        self.hparams["ot"] = dataclasses.asdict(self.sampler.settings)   # plain data, as AEOT keeps it
        if autoencoder_epochs is None:
            autoencoder_epochs = 0 if autoencoder_ckpt else DEFAULT_AUTOENCODER_EPOCHS
        self.autoencoder_epochs = autoencoder_epochs
        self.critic = Critic(int(critic_width), channels)
        self.automatic_optimization = False
        self.register_buffer("gan_steps", torch.zeros((), dtype=torch.long))
        if autoencoder_ckpt:
            self._take_solved_sampler(autoencoder_ckpt)

    def _take_solved_sampler(self, path: str) -> None:
        """Use the latent sampler's solution stored beside the autoencoder in ``path``, if any: it
        was solved on the codes of exactly the encoder just loaded."""
        state = read_checkpoint(path)["state_dict"]
        if stored_sampler_solved(state):
            self.sampler.load_state_dict({k[len("sampler."):]: v for k, v in state.items() if k.startswith("sampler.")})

    # ---- stages ----------------------------------------------------------------------------------
    def in_gan_stage(self) -> bool:
        return self.current_epoch >= self.autoencoder_epochs

    def on_fit_start(self) -> None:
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and max_epochs != -1 and 0 < max_epochs <= self.autoencoder_epochs:
            raise UserInputError(
                f"trainer.max_epochs must exceed autoencoder_epochs={self.autoencoder_epochs} (epochs "
                f"[0, {self.autoencoder_epochs}) train the autoencoder, later ones the GAN), got {max_epochs}")

    def on_train_epoch_start(self) -> None:
        if self.in_gan_stage():
            self.encoder.eval().requires_grad_(False)   # the codes the sampler was solved for stay fixed
            if not self.sampler.solved:
                self.solve_from_datamodule()

    # ---- training --------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        opt_ae, opt_g, opt_d = self.optimizers()
        real = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not self.in_gan_stage():
            loss = self._shared_step(batch, "train")
            opt_ae.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            opt_ae.step()
            return loss
        b = real.shape[0]
        generator = torch.Generator().manual_seed(self.sampler.settings.seed * 1_000_003 + int(self.gan_steps))
        with torch.no_grad():
            fake = self.decode(self.sampler.sample(b, generator).to(self.device))
            own_codes = self.encode(real)

        # discriminator step
        self.critic.requires_grad_(True)
        loss_d, penalty = self._discriminator_loss(real, fake)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d + penalty)
        opt_d.step()

        # generator step: adversarial loss on sampler codes + content on real images' own codes
        self.critic.requires_grad_(False)
        fake = self.decode(self.sampler.sample(b, generator).to(self.device))
        adversarial = self._generator_loss(fake)
        content = self._content_loss(real, self.decode(own_codes))
        loss_g = adversarial + self.hparams.content_weight * content
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        opt_g.step()
        self.critic.requires_grad_(True)
        self.gan_steps += 1
        self.log_dict({"train/d_loss": loss_d.detach(), "train/g_adversarial": adversarial.detach(),
                       "train/g_content": content.detach(), "train/penalty": penalty.detach()},
                      prog_bar=True, on_step=True, on_epoch=False, batch_size=b)
        return loss_g

    def _discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(adversarial loss of D, its penalty), scalars."""
        weight = self.hparams.penalty_weight
        if self.hparams.gan_loss == "wgan_gp":
            loss = self.critic(fake).mean() - self.critic(real).mean()
            penalty = gradient_penalty(self.critic, real, fake)[0] if weight else torch.zeros((), device=real.device)
            return loss, weight * penalty
        real = real.detach().requires_grad_(weight > 0)
        real_scores = self.critic(real)
        loss = F.softplus(-real_scores).mean() + F.softplus(self.critic(fake)).mean()
        if not weight:
            return loss, torch.zeros((), device=real.device)
        (grads,) = torch.autograd.grad(real_scores.sum(), real, create_graph=True)
        return loss, 0.5 * weight * grads.flatten(1).pow(2).sum(1).mean()

    def _generator_loss(self, fake: torch.Tensor) -> torch.Tensor:
        scores = self.critic(fake)
        return -scores.mean() if self.hparams.gan_loss == "wgan_gp" else F.softplus(-scores).mean()

    def _content_loss(self, real: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """|G(E(x)) - x|_1 + |phi(G(E(x))) - phi(x)|_1 (per-element means), phi the discriminator's
        features (all its layers but the last)."""
        features = self.critic.net[:-1]
        return (F.l1_loss(reconstruction, real)
                + F.l1_loss(features(reconstruction), features(real).detach()))

    def on_train_epoch_end(self) -> None:
        self.two_stage_epoch_end(self.in_gan_stage(), self.autoencoder_epochs)

    def on_fit_end(self) -> None:
        if self.sampler.solved:   # solved when the GAN stage started: checkpoints hold it already
            self.log_image_grid(self.sample(self.grid_size, seed=0), "samples")
        else:                     # the fit ended inside the autoencoder stage
            super().on_fit_end()

    def configure_optimizers(self):
        betas = (0.5, 0.9)
        autoencoder = list(self.encoder.parameters()) + list(self.decoder.parameters())
        return (torch.optim.Adam(autoencoder, lr=self.lr),
                torch.optim.Adam(self.decoder.parameters(), lr=self.hparams.gan_lr, betas=betas),
                torch.optim.Adam(self.critic.parameters(), lr=self.hparams.gan_lr, betas=betas))
