"""The base of every generator: one ``sample(n, seed)`` API, a ``latent_dim``, and the shared
logging of sample grids at the end of each training epoch."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch

from ae_ot.checks import UserInputError, require_positive_int
from ae_ot.viz import make_grid, save_image_grid

__all__ = ["GenerativeModel", "NoiseGenerativeModel"]


class GenerativeModel(pl.LightningModule):
    """Base LightningModule of the model zoo.

    Subclasses implement :meth:`generate` (``n`` images [n, C, 28, 28] in [0, 1] from a
    ``torch.Generator``); :meth:`sample` adds seeding, eval mode, no-grad and batching.

    Parameters
    ----------
    latent_dim : int
        Dimension of the latent space the generator reads.
    grid_every_n_epochs : int, default 1
        Write a grid of ``grid_size`` samples every this many epochs (0 disables).
    grid_size : int, default 64

    Examples
    --------
    >>> from ae_ot.generators import WGAN
    >>> model = WGAN(latent_dim=16, width=8)
    >>> isinstance(model, GenerativeModel), model.sample(2, seed=0).shape
    (True, torch.Size([2, 1, 28, 28]))
    """

    #: image shape the model produces
    image_shape: tuple[int, int, int] = (1, 28, 28)

    def __init__(self, latent_dim: int, grid_every_n_epochs: int = 1, grid_size: int = 64):
        super().__init__()
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim <= 0:
            raise UserInputError(f"latent_dim must be a positive integer, got {latent_dim!r}")
        self.latent_dim = latent_dim
        self.grid_every_n_epochs = grid_every_n_epochs
        self.grid_size = grid_size

    # ---- the shared API --------------------------------------------------------------------
    def generate(self, n: int, generator: torch.Generator) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n: int, seed: int | None = 0, batch_size: int = 1000) -> torch.Tensor:
        """``n`` generated images [n, C, 28, 28], float32 in [0, 1], on the CPU (vector data, such
        as the points of an MLP generator, comes back [n, D] and unclamped).

        The same ``seed`` gives the same images (noise is drawn on the CPU, then moved).
        """
        require_positive_int(num_samples=n)
        generator = torch.Generator()
        generator.manual_seed(int(seed) if seed is not None else torch.seed())
        was_training = self.training
        self.eval()
        try:
            chunks = []
            for start in range(0, n, batch_size):
                chunks.append(self.generate(min(batch_size, n - start), generator).float().cpu())
        finally:
            self.train(was_training)
        out = torch.cat(chunks)
        return out.clamp(0, 1) if out.dim() == 4 else out

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Every checkpoint names the generator that wrote it, so `ae-ot sample/evaluate` can
        # restore it whether it was trained by the CLI or by a plain Trainer.
        checkpoint["generator_class_path"] = f"{type(self).__module__}.{type(self).__qualname__}"

    # ---- shared logging ----------------------------------------------------------------------
    def run_dir(self) -> Path | None:
        """The run's folder (``lightning_logs/version_k``) when a trainer with a logger is attached.

        None without a logger: Lightning's ``log_dir`` would then fall back to the current
        directory, and grids would land wherever the user (or a test) happens to be.
        """
        trainer = getattr(self, "_trainer", None)
        if trainer is None or trainer.logger is None:
            return None
        log_dir = trainer.log_dir
        return Path(log_dir) if log_dir else None

    def log_image_grid(self, images: torch.Tensor, name: str, nrow: int = 8) -> Path | None:
        """Write ``images`` as ``<run>/images/<name>_epoch<k>.png`` and, when the logger is
        TensorBoard, as an image summary too."""
        run = self.run_dir()
        if run is None or (self._trainer is not None and not self.trainer.is_global_zero):
            return None
        path = save_image_grid(images, run / "images" / f"{name}_epoch{self.current_epoch:03d}.png", nrow=nrow)
        experiment = getattr(self.logger, "experiment", None)
        if experiment is not None and hasattr(experiment, "add_image"):
            experiment.add_image(name, make_grid(images, nrow=nrow), self.current_epoch)
        return path

    def on_train_epoch_end(self) -> None:
        every = self.grid_every_n_epochs
        if every and (self.current_epoch + 1) % every == 0 and not self.trainer.sanity_checking:
            samples = self.sample(self.grid_size, seed=0)
            if samples.dim() == 4:  # image grids only; vector data (MLP nets) has no grid
                self.log_image_grid(samples, "samples")


class NoiseGenerativeModel(GenerativeModel):
    """A generator network ``self.generator`` pushing Gaussian noise z ~ N(0, I_latent_dim) to
    images: the shared ``forward`` / ``generate`` of the baselines (WGAN, WGAN-GP, Sinkhorn,
    minibatch Wasserstein). Subclasses build ``self.generator`` in ``__init__``.

    Examples
    --------
    >>> import torch
    >>> from ae_ot.generators import WGAN
    >>> model = WGAN(latent_dim=16, width=8)
    >>> torch.equal(model.sample(3, seed=1), model.sample(3, seed=1))
    True
    """

    generator: torch.nn.Module

    def __init__(self, latent_dim: int, grid_every_n_epochs: int = 1, grid_size: int = 64):
        super().__init__(latent_dim, grid_every_n_epochs, grid_size)
        # Lightning's global_step counts every optimiser step (an adversarial model's critic steps
        # too), so the generator's own updates are counted here, in a buffer saved in checkpoints.
        self.register_buffer("generator_steps", torch.zeros((), dtype=torch.long))

    def count_generator_step(self, batch_size: int, prog_bar: bool = False) -> None:
        """One generator update: ``generator_steps += 1``, logged as ``train/generator_steps``."""
        self.generator_steps += 1
        self.log("train/generator_steps", self.generator_steps.float(), prog_bar=prog_bar, on_step=True,
                 on_epoch=False, batch_size=batch_size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def generate(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn(n, self.latent_dim, generator=generator)  # drawn on the CPU: seeded samples
        return self.generator(z.to(self.device))
