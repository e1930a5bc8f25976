r"""AE-OT's latent sampler: uniform noise on a box, the extended semi-discrete OT map, new codes.

Given the codes :math:`z_1, \dots, z_N \in \mathbb{R}^d` of an encoder (An et al., "AE-OT: a new
generative model based on extended semi-discrete optimal transport", ICLR 2020):

1. normalise them into the box :math:`[-1, 1]^d` with a per-dimension affine map
   :math:`y = (z - s) / c` (:math:`s` the codes' mean, :math:`c` their largest deviation);
2. merge identical codes into one target weighted by its number of copies
   (:func:`ae_ot.ot.duplicates.merge_duplicates`);
3. solve semi-discrete OT from :math:`\mathrm{Uniform}([-1, 1]^d)` to
   :math:`\sum_i \nu_i \delta_{y_i}` (:class:`ae_ot.ot.SemiDiscreteOT`): heights :math:`h` with
   cell of :math:`x` = :math:`\arg\max_i \langle x, y_i\rangle + h_i`;
4. generate: :math:`x \sim \mathrm{Uniform}([-1, 1]^d)`, the extended map
   (:func:`ae_ot.ot.extension.extended_map`) :math:`x \mapsto y`, then :math:`z = s + c\, y`.

:class:`LatentOTSampler` is a ``torch.nn.Module`` holding the solution in buffers (normalised
targets, weights, heights, shift, scale) and the solver's report in its extra state, so it moves
between devices with ``.to()`` and travels in any ``state_dict``. It needs no Lightning: the
:class:`~ae_ot.generators.AEOT` LightningModule and the AE-OT-GAN both hold one.

Examples
--------
>>> import torch
>>> codes = torch.randn(300, 4, generator=torch.Generator().manual_seed(0))
>>> sampler = LatentOTSampler(LatentOTSettings(time_limit=None, max_steps=20))
>>> report = sampler.fit(codes, progress=False)
>>> sampler.sample(5, torch.Generator().manual_seed(1)).shape
torch.Size([5, 4])
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Literal

import torch

from ae_ot.checks import UserInputError, require_in_interval, require_positive_int
from ae_ot.ot.distributed import gather_rows, shard_bounds
from ae_ot.ot.duplicates import merge_duplicates
from ae_ot.ot.extension import extended_map
from ae_ot.ot.semidiscrete import SemiDiscreteOT
from ae_ot.ot.settings import FitSettings

__all__ = ["LatentOTSettings", "LatentOTSampler", "OTSolutionMissingError", "stored_sampler_solved"]


class OTSolutionMissingError(UserInputError):
    """Sampling was asked of a latent sampler whose OT problem has not been solved.

    Examples
    --------
    >>> import torch
    >>> try:
    ...     LatentOTSampler(latent_dim=2).sample(4, torch.Generator())
    ... except OTSolutionMissingError:
    ...     print("solve first")
    solve first
    """


@dataclass(frozen=True)
class LatentOTSettings:
    """The OT stage of AE-OT and its extended map (``model.init_args.ot`` in a config).

    Attributes
    ----------
    method : {"default", "aeot"}
        Solver method of :meth:`ae_ot.ot.SemiDiscreteOT.fit`.
    time_limit : float or None
        Seconds given to the solve (None: until ``tol`` or ``max_steps``). Without ``tol`` they
        include the final held-out evaluation.
    max_steps : int
        Most solver steps.
    tol : float or None
        Stop once the held-out (noise-corrected) mean relative cell-measure error is below this.
    batch_size : int or None
        Source samples per solver step (None: the solver's default).
    eval_samples : int or None
        Most held-out samples of the final evaluation (None: the solver's default, 2^20).
    eval_share : float
        The largest fraction of ``time_limit`` the final evaluation may take: it draws samples
        until that share is spent (at most ``eval_samples``). Its headline error is the RMS relative
        cell error ``rms_rel_corrected``, unbiased at any sample count, with its standard error.
    backend : str
        Score kernel (:func:`ae_ot.ot.kernels.resolve_backend`).
    num_targets : int or None
        Keep this many codes (a seeded subsample) as targets; None keeps all.
    extension : {"extended", "none"}
        "none" gives the plain OT map (the training codes themselves).
    topk : int
        Cells looked at per noise point by the extended map.
    angle_threshold : float
        Degrees. A runner-up cell whose supporting-plane normal makes a larger angle with the
        winner's lies across a singular boundary and is never interpolated with.
    radius : float
        Width of the interpolation band beside a regular facet, as a fraction of the distance to
        the farthest of the ``topk - 1`` runner-up facets (:mod:`ae_ot.ot.extension`).
    seed : int
        Seeds the target subsample and the solver.

    Examples
    --------
    >>> LatentOTSettings(time_limit=30.0, topk=10).topk
    10
    """

    method: Literal["default", "aeot"] = "default"
    time_limit: float | None = 150.0
    max_steps: int = 20000
    tol: float | None = None
    batch_size: int | None = None
    eval_samples: int | None = None
    eval_share: float = 0.2
    backend: str = "auto"
    num_targets: int | None = None
    extension: Literal["extended", "none"] = "extended"
    topk: int = 20
    angle_threshold: float = 30.0
    radius: float = 0.8
    seed: int = 0

    def __post_init__(self):
        hint = "; pass e.g. --model.init_args.ot.{name}=<value>"
        if self.method not in ("default", "aeot"):
            raise UserInputError(f"ot.method must be 'default' or 'aeot', got {self.method!r}")
        if self.num_targets is not None and (isinstance(self.num_targets, bool) or not isinstance(self.num_targets, int)
                                             or self.num_targets <= 1):
            raise UserInputError(f"ot.num_targets must be an integer > 1 or None (all codes), got {self.num_targets!r}")
        if self.extension not in ("extended", "none"):
            raise UserInputError(f"ot.extension must be 'extended' or 'none', got {self.extension!r}")
        require_positive_int(hint, topk=self.topk, max_steps=self.max_steps)
        if not (isinstance(self.angle_threshold, (int, float)) and 0 < self.angle_threshold <= 180):
            raise UserInputError(f"ot.angle_threshold is in degrees and must be in (0, 180], got {self.angle_threshold!r}")
        if not (isinstance(self.radius, (int, float)) and math.isfinite(self.radius) and self.radius >= 0):
            raise UserInputError(f"ot.radius must be a finite number >= 0, got {self.radius!r}")
        if self.tol is not None and not self.tol > 0:
            raise UserInputError(f"ot.tol must be positive or None, got {self.tol!r}")
        if self.time_limit is not None and not self.time_limit > 0:
            raise UserInputError(f"ot.time_limit must be positive (seconds) or None, got {self.time_limit!r}")
        require_in_interval(0, 1, "; it is the largest fraction of ot.time_limit the final OT evaluation may take",
                            eval_share=self.eval_share)
        for name in ("eval_samples", "batch_size"):
            if getattr(self, name) is not None:
                require_positive_int(" (or null: the solver's default)", **{name: getattr(self, name)})

    @classmethod
    def coerce(cls, value) -> "LatentOTSettings":
        """``value`` as settings: a LatentOTSettings, a dict of its fields (a checkpoint's
        hyperparameters), or None (the defaults). An unknown field is an error naming the known ones."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise UserInputError(f"unknown ot setting(s) {unknown}; the OT settings are {sorted(known)}")
            return cls(**value)
        raise UserInputError(f"ot must be a LatentOTSettings or a dict of its fields, got {type(value).__name__}")

    def fit_settings(self) -> FitSettings:
        """The solver's :class:`~ae_ot.ot.settings.FitSettings` these settings give (the method is
        ``method``)."""
        return FitSettings(max_steps=self.max_steps, tol=self.tol, time_limit=self.time_limit,
                           batch_size=self.batch_size, eval_samples=self.eval_samples, eval_share=self.eval_share)


class LatentOTSampler(torch.nn.Module):
    """Codes from uniform noise through AE-OT's extended semi-discrete OT map (module docstring).

    Parameters
    ----------
    settings : LatentOTSettings or dict, optional

    Attributes
    ----------
    targets : tensor [M, d]
        The solver's targets: the distinct normalised codes (empty until :meth:`fit`).
    weights : tensor [M]
        Their masses (number of copies / N).
    heights : tensor [M]
        The solution: cell of x = argmax_i <x, y_i> + h_i.
    shift, scale : tensor [d]
        The normalisation: code z = shift + scale * y.
    report : dict or None
        The solver's report, with ``num_codes`` (N before merging), ``num_targets`` (after) and
        ``processes``.
    """

    def __init__(self, settings: LatentOTSettings | dict | None = None, latent_dim: int = 0):
        super().__init__()
        self.settings = LatentOTSettings.coerce(settings)
        self.register_buffer("targets", torch.empty(0, latent_dim))
        self.register_buffer("weights", torch.empty(0, dtype=torch.float64))
        self.register_buffer("heights", torch.empty(0, dtype=torch.float64))
        self.register_buffer("shift", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))
        self.report: dict | None = None
        self._solver: SemiDiscreteOT | None = None

    # ---- the solution --------------------------------------------------------------------------
    @property
    def solved(self) -> bool:
        return self.heights.numel() > 0   # as stored_sampler_solved reads a stored sampler

    @property
    def solver(self) -> SemiDiscreteOT:
        """The :class:`SemiDiscreteOT` of the stored targets, weights and heights (built once)."""
        if not self.solved:
            raise OTSolutionMissingError(
                "this AE-OT model has no OT solution: the checkpoint was saved before the OT solve finished. "
                "Solve it with `ae-ot fit --config models/ae_ot.yaml --model.init_args.autoencoder_ckpt=CKPT "
                "--trainer.max_epochs=0`.")
        n = self.targets.shape[0]
        if self.heights.shape[0] != n or self.weights.shape[0] != n:
            raise UserInputError(
                f"the stored OT solution is inconsistent: one height and one weight per target are needed, got {n} "
                f"targets, {self.heights.shape[0]} heights and {self.weights.shape[0]} weights. Solve it again with "
                "`ae-ot fit --config models/ae_ot.yaml --model.init_args.autoencoder_ckpt=CKPT --trainer.max_epochs=0`.")
        if self._solver is None or self._solver.targets.device != self.targets.device:
            # The stored targets are distinct already: merging again must not renumber the heights.
            self._solver = SemiDiscreteOT(self.targets, self.weights, low=-1.0, high=1.0,
                                          backend=self.settings.backend, seed=self.settings.seed,
                                          merge_duplicates=False)
            self._solver.heights = self.heights
        return self._solver

    def target_codes(self) -> torch.Tensor:
        """The distinct training codes the solution transports to, un-normalised, [M, d]."""
        return self.shift + self.scale * self.targets

    # ---- solve -----------------------------------------------------------------------------------
    def fit(self, codes: torch.Tensor, progress: bool = True, distributed=False, **fit_overrides) -> dict:
        """Normalise ``codes`` [N, d] into [-1, 1]^d, merge duplicates, solve, store the solution.

        Parameters
        ----------
        codes : tensor [N, d]
            All training codes, in dataset order (the ``num_targets`` subsample is drawn here).
        progress : bool
            The solver's progress bar.
        distributed : bool or ProcessGroup
            Collective over a ``torch.distributed`` group (True: the default group): every rank
            passes the same codes; the targets are sharded over the ranks by contiguous ranges and
            solved together; every rank then stores the full solution.
        **fit_overrides
            Passed on to :meth:`ae_ot.ot.SemiDiscreteOT.fit` over the settings' values: fields of
            :class:`~ae_ot.ot.settings.FitSettings`, ``callback``, ``options``.

        Returns
        -------
        dict
            The solver's report (also in :attr:`report`).
        """
        settings = self.settings
        if codes.dim() != 2 or codes.shape[0] < 2:
            raise UserInputError(f"codes must be [N, d] with N >= 2, got {tuple(codes.shape)}")
        group, rank, world = None, 0, 1
        if distributed is not False:
            import torch.distributed as dist

            group = None if distributed is True else distributed
            rank, world = dist.get_rank(group), dist.get_world_size(group)
            _check_same_codes_on_all_ranks(codes, group)
        if settings.num_targets is not None and settings.num_targets < codes.shape[0]:
            keep = torch.randperm(codes.shape[0], generator=torch.Generator().manual_seed(settings.seed))
            codes = codes[keep[: settings.num_targets].sort().values.to(codes.device)]
        shift = codes.mean(0)
        scale = (codes - shift).abs().amax(0).clamp_min(1e-8)
        targets, weights, _ = merge_duplicates((codes - shift) / scale)
        if targets.shape[0] < codes.shape[0] and rank == 0:
            warnings.warn(f"{codes.shape[0] - targets.shape[0]} duplicate code(s) merged ({codes.shape[0]} -> "
                          f"{targets.shape[0]} OT targets), each weighted by its number of copies", stacklevel=2)
        lo, hi = shard_bounds(targets.shape[0], rank, world)
        solver = SemiDiscreteOT(targets[lo:hi], weights[lo:hi], low=-1.0, high=1.0, backend=settings.backend,
                                seed=settings.seed, merge_duplicates=False,
                                distributed=False if distributed is False else (group or True))
        report = solver.fit(settings.fit_settings(), method=settings.method, progress=progress, **fit_overrides)
        heights = solver.heights.detach().double()
        if distributed is not False:
            sizes = [b - a for a, b in (shard_bounds(targets.shape[0], r, world) for r in range(world))]
            heights = gather_rows(heights, sizes, group)
        self.targets, self.weights, self.heights = targets.detach().clone(), weights, heights.clone()
        self.shift, self.scale = shift.detach().clone(), scale.detach().clone()
        # A sharded solver answers queries only collectively; sampling builds a local one.
        self._solver = solver if distributed is False else None
        self.report = report.to_dict() if hasattr(report, "to_dict") else dict(report)
        self.report.update(num_codes=codes.shape[0], num_targets=targets.shape[0], processes=world)
        return self.report

    # ---- generate --------------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator, extension: str | None = None,
               return_stats: bool = False):
        """Codes [n, d] from uniform noise (drawn on the CPU from ``generator``) by the (extended)
        OT map, un-normalised, on the buffers' device; with ``return_stats`` also the map's
        :class:`~ae_ot.ot.extension.ExtendedMapStats`."""
        settings = self.settings
        solver = self.solver
        mode = extension or settings.extension
        if mode not in ("extended", "none"):
            raise UserInputError(f"extension must be 'extended' or 'none', got {mode!r}")
        noise = (torch.rand(n, self.targets.shape[1], generator=generator) * 2.0 - 1.0).to(self.targets.device)
        if mode == "none":
            y, stats = solver.transport(noise), {"plain": 1.0}
        else:
            values, indices = solver.topk(noise, min(settings.topk, solver.num_targets))
            # The indices number the solver's targets: read them there, never in another copy.
            y, stats = extended_map(values, indices, solver.targets, angle_threshold=math.radians(settings.angle_threshold),
                                    radius=settings.radius, return_stats=True)
        z = self.shift + self.scale * y
        return (z, stats) if return_stats else z

    # ---- state -----------------------------------------------------------------------------------
    def get_extra_state(self) -> dict:
        return {"report": self.report}

    def set_extra_state(self, state) -> None:
        self.report = (state or {}).get("report")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The buffers are empty until solved: take the stored shapes before loading them.
        for name in ("targets", "weights", "heights", "shift", "scale"):
            stored = state_dict.get(prefix + name)
            if stored is not None:
                setattr(self, name, torch.empty_like(stored, device=getattr(self, name).device))
        self._solver = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def stored_sampler_solved(state_dict: dict, prefix: str = "sampler.") -> bool | None:
    """Whether the :class:`LatentOTSampler` stored under ``prefix`` in ``state_dict`` (a model's
    state dict, e.g. a checkpoint's ``"state_dict"``) holds a solution: its heights are not empty.
    None when ``state_dict`` holds no sampler.

    Examples
    --------
    >>> import torch
    >>> stored_sampler_solved({"sampler.heights": torch.zeros(0)}), stored_sampler_solved({})
    (False, None)
    """
    heights = state_dict.get(prefix + "heights")
    return None if heights is None else heights.numel() > 0


def _check_same_codes_on_all_ranks(codes: torch.Tensor, group) -> None:
    """A sharded solve needs one problem: the same N codes on every rank (cheap checksums)."""
    import torch.distributed as dist

    summary = torch.stack([torch.tensor(float(codes.shape[0]), dtype=torch.float64),
                           codes.detach().double().sum().cpu(), codes.detach().double().abs().sum().cpu()]).to(codes.device)
    low, high = summary.clone(), summary.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN, group=group)
    dist.all_reduce(high, op=dist.ReduceOp.MAX, group=group)
    if not torch.equal(low, high):
        raise UserInputError("a sharded OT solve needs the same codes on every rank (all N codes in dataset order, "
                             f"e.g. from encode_dataset(distributed=...)); the ranks' (N, sum, sum |z|) range from "
                             f"{low.tolist()} to {high.tolist()}")
