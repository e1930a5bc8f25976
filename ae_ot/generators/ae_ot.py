"""AE-OT: an autoencoder whose latent codes are reached from uniform noise by semi-discrete OT.

Pipeline (An et al., "AE-OT: a new generative model based on extended semi-discrete optimal
transport", ICLR 2020):

1. train the autoencoder (exactly :class:`~ae_ot.generators.Autoencoder`'s training);
2. at the end of ``fit``, encode the training set into codes z_1..z_N (optionally a deterministic
   subsample of ``num_targets``), map them into the box [-1, 1]^d with a stored per-dimension
   affine normalisation y = (z - shift) / scale;
3. solve semi-discrete OT from Uniform([-1, 1]^d) to (1/N) sum_i delta_{y_i} with
   :class:`ae_ot.ot.SemiDiscreteOT`: heights h with cell of x = argmax_i <x, y_i> + h_i;
4. generate: x ~ Uniform(box) -> extended OT map (:func:`ae_ot.ot.extension.extended_map`) -> y
   -> z = shift + scale * y -> decoder -> image.

The checkpoint written by ``ae-ot fit`` holds the autoencoder, the normalised codes, the heights,
the normalisation and the solver's report, so it alone is enough to sample.
"""

from __future__ import annotations

import math
import time
from typing import Literal

import torch
from tqdm.auto import tqdm

from ae_ot.generators.autoencoder import Autoencoder
from ae_ot.ot import SemiDiscreteOT
from ae_ot.ot.extension import extended_map

__all__ = ["AEOT", "OTSolutionMissingError"]


class OTSolutionMissingError(ValueError):
    """Sampling was asked of an AE-OT model whose OT problem has not been solved."""


def _load_autoencoder_state(path: str) -> dict:
    """Encoder/decoder weights of an Autoencoder or AE-OT checkpoint (clear errors for a missing,
    corrupt or non-Lightning file come from the shared checkpoint reader)."""
    from pathlib import Path

    from ae_ot.evaluation.loading import _read_checkpoint

    state = _read_checkpoint(Path(path))["state_dict"]
    return {k: v for k, v in state.items() if k.startswith(("encoder.", "decoder."))}


class AEOT(Autoencoder):
    """AE-OT generator: autoencoder + semi-discrete OT in its latent space + extended map.

    Parameters
    ----------
    latent_dim, width, lr, loss, in_channels
        The autoencoder's (see :class:`~ae_ot.generators.Autoencoder`).
    autoencoder_ckpt : str or None, default None
        Start from this autoencoder (or AE-OT) checkpoint's encoder/decoder weights. With
        ``--trainer.max_epochs=0`` the OT problem is solved again without retraining.
    num_targets : int or None, default None
        Keep this many training codes (a seeded subsample) as OT targets; None keeps all.
    ot_method : {"default", "aeot"}, default "default"
        Solver method of :meth:`ae_ot.ot.SemiDiscreteOT.fit`.
    ot_max_steps : int, default 20000
    ot_time_limit : float or None, default 150
        Seconds given to the OT solver (None: until ``ot_tol`` or ``ot_max_steps``).
    ot_tol : float or None, default None
        Stop once the held-out (noise-corrected) mean relative cell-measure error is below this;
        the held-out evaluations this needs cost time, so by default the solver runs for
        ``ot_time_limit`` and evaluates once at the end (the error is in the report).
    ot_batch_size : int or None, default None
        Source samples per solver step (None: the solver's default).
    ot_backend : str, default "auto"
    extension : {"extended", "none"}, default "extended"
        "none" gives the plain OT map (decoded training codes).
    topk : int, default 20
        Cells looked at per noise point by the extended map.
    angle_threshold : float, default 30.0
        Degrees. A runner-up cell whose supporting-plane normal makes a larger angle with the
        winner's lies across a singular boundary and is never interpolated with.
    radius : float, default 0.8
        Width of the interpolation band beside a regular facet, as a fraction of the distance
        to the farthest of the ``topk - 1`` runner-up facets (see :mod:`ae_ot.ot.extension`).
    seed : int, default 0
        Seeds the target subsample and the OT solver.
    """

    def __init__(self, latent_dim: int = 16, width: int = 16, lr: float = 2e-3,
                 loss: Literal["bce", "mse"] = "bce", in_channels: int = 1,
                 autoencoder_ckpt: str | None = None, num_targets: int | None = None,
                 ot_method: Literal["default", "aeot"] = "default", ot_max_steps: int = 20000,
                 ot_time_limit: float | None = 150.0, ot_tol: float | None = None, ot_batch_size: int | None = None,
                 ot_backend: str = "auto", extension: Literal["extended", "none"] = "extended",
                 topk: int = 20, angle_threshold: float = 30.0, radius: float = 0.8, seed: int = 0,
                 grid_every_n_epochs: int = 1, grid_size: int = 64):
        super().__init__(latent_dim, width, lr, loss, in_channels, grid_every_n_epochs, grid_size)
        if num_targets is not None and num_targets <= 1:
            raise ValueError(f"num_targets must be > 1 or None (all codes), got {num_targets}")
        if extension not in ("extended", "none"):
            raise ValueError(f"extension must be 'extended' or 'none', got {extension!r}")
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        if not 0 < angle_threshold <= 180:
            raise ValueError(f"angle_threshold is in degrees and must be in (0, 180], got {angle_threshold}")
        if radius < 0:
            raise ValueError(f"radius must be >= 0, got {radius}")
        if ot_tol is not None and ot_tol <= 0:
            raise ValueError(f"ot_tol must be positive, got {ot_tol}")
        self.save_hyperparameters()
        if autoencoder_ckpt:
            state = _load_autoencoder_state(autoencoder_ckpt)
            try:
                self.load_state_dict(state, strict=False)
            except RuntimeError as err:
                raise ValueError(f"{autoencoder_ckpt} does not match this architecture "
                                 f"(latent_dim={latent_dim}, width={width}): {err}") from err
        # The OT solution; empty until solved (shapes are known only then).
        self.register_buffer("ot_targets", torch.empty(0, latent_dim))
        self.register_buffer("ot_heights", torch.empty(0))
        self.register_buffer("norm_shift", torch.zeros(latent_dim))
        self.register_buffer("norm_scale", torch.ones(latent_dim))
        self.ot_report: dict | None = None
        self._solver: SemiDiscreteOT | None = None

    # ---- the OT solution -----------------------------------------------------------------------
    @property
    def has_ot_solution(self) -> bool:
        return self.ot_heights.numel() > 0

    @property
    def solver(self) -> SemiDiscreteOT:
        """The :class:`SemiDiscreteOT` holding the stored codes and heights (built once)."""
        if not self.has_ot_solution:
            raise OTSolutionMissingError(
                "this AE-OT model has no OT solution: the checkpoint was saved before the OT solve "
                "finished. Solve it with `ae-ot fit --config models/ae_ot.yaml --model.autoencoder_ckpt=CKPT "
                "--trainer.max_epochs=0`."
            )
        if self._solver is None or self._solver.targets.device != self.ot_targets.device:
            self._solver = SemiDiscreteOT(self.ot_targets, low=-1.0, high=1.0, backend=self.hparams.ot_backend,
                                          seed=self.hparams.seed)
            self._solver.heights = self.ot_heights.clone()
        return self._solver

    @torch.no_grad()
    def encode_dataset(self, images: torch.Tensor, batch_size: int = 2048, progress: bool = True) -> torch.Tensor:
        """Codes [n, d] of images [n, C, 28, 28] (eval mode, batched, on the module's device)."""
        was_training = self.training
        self.eval()
        codes = []
        for start in tqdm(range(0, images.shape[0], batch_size), desc="encoding", disable=not progress,
                          leave=False):
            codes.append(self.encode(images[start:start + batch_size].to(self.device)).float())
        self.train(was_training)
        return torch.cat(codes)

    def solve_ot(self, codes: torch.Tensor, progress: bool = True, **fit_overrides) -> dict:
        """Normalise ``codes`` [N, d] into [-1, 1]^d, solve semi-discrete OT, store the solution.

        Returns the solver's report as a dict (also kept in ``self.ot_report``).
        """
        hp = self.hparams
        if codes.dim() != 2 or codes.shape[1] != self.latent_dim:
            raise ValueError(f"codes must be [N, {self.latent_dim}], got {tuple(codes.shape)}")
        if hp.num_targets is not None and hp.num_targets < codes.shape[0]:
            keep = torch.randperm(codes.shape[0], generator=torch.Generator().manual_seed(hp.seed))[: hp.num_targets]
            codes = codes[keep.sort().values.to(codes.device)]
        shift = codes.mean(0)
        scale = (codes - shift).abs().amax(0).clamp_min(1e-8)
        targets = (codes - shift) / scale
        solver = SemiDiscreteOT(targets, low=-1.0, high=1.0, backend=hp.ot_backend, seed=hp.seed)
        fit_kwargs = dict(method=hp.ot_method, max_steps=hp.ot_max_steps, tol=hp.ot_tol,
                          time_limit=hp.ot_time_limit, progress=progress)
        if hp.ot_batch_size is not None:
            fit_kwargs["batch_size"] = hp.ot_batch_size
        fit_kwargs.update(fit_overrides)
        report = solver.fit(**fit_kwargs)
        self.ot_targets = targets.detach().clone()
        self.ot_heights = solver.heights.detach().clone()
        self.norm_shift, self.norm_scale = shift.detach().clone(), scale.detach().clone()
        self._solver = solver
        self.ot_report = report.to_dict() if hasattr(report, "to_dict") else dict(report)
        return self.ot_report

    # ---- generation ------------------------------------------------------------------------------
    def latent_samples(self, n: int, generator: torch.Generator, extension: str | None = None,
                       return_stats: bool = False):
        """Codes [n, d] generated from uniform noise by the (extended) OT map, un-normalised."""
        hp = self.hparams
        solver = self.solver
        mode = extension or hp.extension
        noise = torch.rand(n, self.latent_dim, generator=generator) * 2.0 - 1.0     # Uniform([-1, 1]^d)
        noise = noise.to(self.ot_targets.device)
        if mode == "none":
            y = solver.transport(noise)
            stats = {"plain": 1.0}
        else:
            k = min(hp.topk, self.ot_targets.shape[0])
            values, indices = solver.topk(noise, k)
            y, stats = extended_map(values, indices, self.ot_targets, angle_threshold=math.radians(hp.angle_threshold),
                                    radius=hp.radius, return_stats=True)
        z = self.norm_shift + self.norm_scale * y
        return (z, stats) if return_stats else z

    def generate(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.decode(self.latent_samples(n, generator).to(self.device))

    # ---- Lightning hooks -------------------------------------------------------------------------
    def on_train_epoch_end(self) -> None:
        # The base class samples a grid each epoch; AE-OT can only sample once OT is solved, so
        # during training it logs reconstructions (validation) and the naive Gaussian stats only.
        self._update_code_stats()

    def on_fit_end(self) -> None:
        trainer = self.trainer
        datamodule = trainer.datamodule
        if datamodule is None or getattr(datamodule, "train_set", None) is None:
            raise ValueError("AE-OT needs a DataModule with a `train_set` (e.g. MNISTDataModule) to encode")
        start = time.perf_counter()
        codes = self.encode_dataset(datamodule.train_set.images, progress=trainer.is_global_zero)
        report = self.solve_ot(codes, progress=trainer.is_global_zero)
        report["encode_and_solve_seconds"] = time.perf_counter() - start
        if trainer.is_global_zero:
            self.log_image_grid(self.sample(self.grid_size, seed=0), "samples")
        # Checkpoints were written before fit ended; write the OT solution into them so that the
        # checkpoint of `ae-ot fit` alone is enough to sample.
        callback = trainer.checkpoint_callback
        paths = {p for p in (getattr(callback, "best_model_path", ""), getattr(callback, "last_model_path", "")) if p}
        for path in paths:
            trainer.save_checkpoint(path)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["ot_report"] = self.ot_report

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("state_dict", {})
        # Resize the empty solution buffers to the stored shapes before the state is loaded.
        # (A checkpoint from before the solve, or with the solution stripped, loads as "unsolved".)
        for name in ("ot_targets", "ot_heights"):
            if name in state:
                setattr(self, name, torch.empty_like(state[name]))
            else:
                state[name] = getattr(self, name)
        self.ot_report = checkpoint.get("ot_report")
        self._solver = None
