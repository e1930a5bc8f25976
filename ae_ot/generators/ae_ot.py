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

The checkpoint written by ``ae-ot fit`` holds the autoencoder, the normalised codes, their weights,
the heights, the normalisation and the solver's report, so it alone is enough to sample.

Identical codes are merged before the solve (one target per distinct code, its weight the number
of copies / N): the stored ``ot_targets`` and ``ot_weights`` are exactly the solver's targets and
weights, so every cell index the solver returns reads the code it was solved for.

Under Lightning's DDP (``--trainer.strategy=ddp --trainer.devices=W``) steps 2-3 run once, on all
processes together: each process encodes a contiguous share of whole encoding batches, the codes
are gathered in dataset order on every process (so the ``num_targets`` subsample is the one a
single process draws), the targets are sharded over the processes by contiguous ranges and solved
with the solver's ``torch.distributed`` mode, and the height shards are gathered so that every
process holds the full solution. Only rank 0 writes the checkpoint.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Literal

import torch
from tqdm.auto import tqdm

from ae_ot.checks import UserInputError, require_in_interval, require_positive_int
from ae_ot.generators.autoencoder import Autoencoder, read_autoencoder_state
from ae_ot.ot import SemiDiscreteOT
from ae_ot.ot.extension import extended_map

__all__ = ["AEOT", "OTSolutionMissingError"]


class OTSolutionMissingError(UserInputError):
    """Sampling was asked of an AE-OT model whose OT problem has not been solved."""


#: images per encoder call. Under DDP each process encodes whole batches of this size, the same
#: batches a single process encodes, so the codes (and everything after them) are bitwise the same.
ENCODE_BATCH = 512


def merge_duplicate_codes(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One row per distinct row of ``targets`` [N, d], in order of first occurrence, with its weight.

    The rule of :class:`~ae_ot.ot.SemiDiscreteOT`'s ``merge_duplicates``, applied before the targets
    are handed to the solver (and before they are sharded over processes, where the solver could
    only merge within a shard).

    Returns
    -------
    unique : tensor [M, d]
        The distinct rows (M = N when there is no duplicate; then ``targets`` itself).
    weights : tensor [M] float64
        Number of copies / N: the target masses, summing to 1.
    index : tensor [N] int64
        Row of ``unique`` that every input row was merged into.
    """
    n = targets.shape[0]
    unique, inverse, counts = torch.unique(targets, dim=0, return_inverse=True, return_counts=True)
    if unique.shape[0] == n:
        arange = torch.arange(n, device=targets.device)
        return targets, torch.full((n,), 1.0 / n, dtype=torch.float64, device=targets.device), arange
    # torch.unique sorts the rows; keep the order of first occurrence instead.
    first = torch.full((unique.shape[0],), n, dtype=torch.long, device=targets.device)
    first.scatter_reduce_(0, inverse, torch.arange(n, device=targets.device), reduce="amin")
    order = torch.argsort(first)
    position = torch.empty_like(order)
    position[order] = torch.arange(order.numel(), device=order.device)
    return targets[first[order]], counts[order].double() / n, position[inverse]


def _shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of rank ``rank``: contiguous ranges, sizes differing by at most one."""
    return n * rank // world, n * (rank + 1) // world


def _shard_sizes(n: int, world: int) -> list[int]:
    return [hi - lo for lo, hi in (_shard_bounds(n, rank, world) for rank in range(world))]


def _all_gather_rows(local: torch.Tensor, sizes: list[int], group) -> torch.Tensor:
    """Concatenation over the ranks, in rank order, of every rank's ``local`` [sizes[r], ...]."""
    import torch.distributed as dist

    longest = max(sizes)
    # all_gather needs equal shapes: pad every shard to the longest, then trim.
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous(), group=group)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


class AEOT(Autoencoder):
    """AE-OT generator: autoencoder + semi-discrete OT in its latent space + extended map.

    Parameters
    ----------
    latent_dim, width, lr, loss, channels
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
        Seconds given to the OT solver (None: until ``ot_tol`` or ``ot_max_steps``). Without
        ``ot_tol`` they include the final held-out evaluation (see ``SemiDiscreteOT.fit``).
    ot_tol : float or None, default None
        Stop once the held-out (noise-corrected) mean relative cell-measure error is below this;
        the held-out evaluations this needs cost time, so by default the solver runs for
        ``ot_time_limit`` and evaluates once at the end (the error is in the report).
    ot_batch_size : int or None, default None
        Source samples per solver step (None: the solver's default).
    ot_eval_samples : int or None, default None
        Most fresh held-out samples of the final evaluation of the OT error (None: the solver's
        default, 2^20). Its noise floor is about 0.8 sqrt(N / ot_eval_samples) for N targets (18%
        at N = 55,000 and 2^20), so a floor well below the error of a short solve needs a few
        million. Under ``ot_time_limit`` the evaluation is counted in the limit and gets at most
        ``ot_eval_share`` of it (fewer samples if that share cannot afford them).
    ot_eval_share : float, default 0.5
        The largest fraction of ``ot_time_limit`` the final evaluation may take (``eval_share`` of
        :meth:`ae_ot.ot.SemiDiscreteOT.fit`). ``scripts/demo.sh`` gives it 0.6, so that the
        floor sits at about a third of the error it reports.
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
                 loss: Literal["bce", "mse"] = "bce", channels: int = 1,
                 autoencoder_ckpt: str | None = None, num_targets: int | None = None,
                 ot_method: Literal["default", "aeot"] = "default", ot_max_steps: int = 20000,
                 ot_time_limit: float | None = 150.0, ot_tol: float | None = None, ot_batch_size: int | None = None,
                 ot_eval_samples: int | None = None, ot_eval_share: float = 0.5,
                 ot_backend: str = "auto", extension: Literal["extended", "none"] = "extended",
                 topk: int = 20, angle_threshold: float = 30.0, radius: float = 0.8, seed: int = 0,
                 grid_every_n_epochs: int = 1, grid_size: int = 64):
        super().__init__(latent_dim, width, lr, loss, channels, grid_every_n_epochs, grid_size)
        if num_targets is not None and num_targets <= 1:
            raise UserInputError(f"num_targets must be > 1 or None (all codes), got {num_targets}")
        if extension not in ("extended", "none"):
            raise UserInputError(f"extension must be 'extended' or 'none', got {extension!r}")
        if topk < 1:
            raise UserInputError(f"topk must be >= 1, got {topk}")
        if not 0 < angle_threshold <= 180:
            raise UserInputError(f"angle_threshold is in degrees and must be in (0, 180], got {angle_threshold}")
        if radius < 0:
            raise UserInputError(f"radius must be >= 0, got {radius}")
        if ot_tol is not None and ot_tol <= 0:
            raise UserInputError(f"ot_tol must be positive, got {ot_tol}")
        require_in_interval(0, 1, "; it is the largest fraction of ot_time_limit the final OT evaluation may take",
                            ot_eval_share=ot_eval_share)
        if ot_eval_samples is not None:
            require_positive_int(" (or null: the solver's default)", ot_eval_samples=ot_eval_samples)
        self.save_hyperparameters()
        if autoencoder_ckpt:
            state, _ = read_autoencoder_state(autoencoder_ckpt)
            try:
                self.load_state_dict(state, strict=False)
            except RuntimeError as err:
                raise UserInputError(f"{autoencoder_ckpt} does not match this architecture "
                                     f"(latent_dim={latent_dim}, width={width}): {err}") from err
        # The OT solution; empty until solved (shapes are known only then). ot_targets [M, d] and
        # ot_weights [M] are the solver's own (merged, distinct) targets and masses; ot_weights is
        # empty in checkpoints written before it existed (uniform masses then).
        self.register_buffer("ot_targets", torch.empty(0, latent_dim))
        self.register_buffer("ot_weights", torch.empty(0))
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
        """The :class:`SemiDiscreteOT` holding the stored codes, weights and heights (built once)."""
        if not self.has_ot_solution:
            raise OTSolutionMissingError(
                "this AE-OT model has no OT solution: the checkpoint was saved before the OT solve "
                "finished. Solve it with `ae-ot fit --config models/ae_ot.yaml --model.autoencoder_ckpt=CKPT "
                "--trainer.max_epochs=0`."
            )
        n_targets, n_heights = self.ot_targets.shape[0], self.ot_heights.shape[0]
        if n_targets != n_heights or self.ot_weights.numel() not in (0, n_targets):
            raise UserInputError(
                f"the stored OT solution is inconsistent: one height and one weight per target are needed, got "
                f"{n_targets} targets, {n_heights} heights and {self.ot_weights.numel()} weights. Solve it again "
                "with `ae-ot fit --config models/ae_ot.yaml --model.autoencoder_ckpt=CKPT --trainer.max_epochs=0`.")
        if self._solver is None or self._solver.targets.device != self.ot_targets.device:
            weights = self.ot_weights if self.ot_weights.numel() else None
            # The stored targets are already distinct (merged at solve time): merging again would
            # renumber nothing, and must not, since the heights are indexed like them.
            self._solver = SemiDiscreteOT(self.ot_targets, weights, low=-1.0, high=1.0,
                                          backend=self.hparams.ot_backend, seed=self.hparams.seed,
                                          merge_duplicates=False)
            self._solver.heights = self.ot_heights.clone()
        return self._solver

    @torch.no_grad()
    def encode_dataset(self, images: torch.Tensor, batch_size: int = ENCODE_BATCH, progress: bool = True,
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
            bounds = [min(images.shape[0], batch_size * _shard_bounds(num_batches, r, world)[0])
                      for r in range(world)] + [images.shape[0]]
            sizes = [bounds[r + 1] - bounds[r] for r in range(world)]
            lo, hi = bounds[rank], bounds[rank + 1]
        was_training = self.training
        self.eval()
        codes = [torch.empty(0, self.latent_dim, device=self.device)]
        for start in tqdm(range(lo, hi, batch_size), desc="encoding", disable=not progress, leave=False):
            codes.append(self.encode(images[start:min(start + batch_size, hi)].to(self.device)).float())
        self.train(was_training)
        codes = torch.cat(codes)
        return codes if sizes is None else _all_gather_rows(codes, sizes, group)

    def solve_ot(self, codes: torch.Tensor, progress: bool = True, distributed=False, **fit_overrides) -> dict:
        """Normalise ``codes`` [N, d] into [-1, 1]^d, solve semi-discrete OT, store the solution.

        Identical codes become one target whose weight is its number of copies / N. The stored
        ``ot_targets``, ``ot_weights`` and ``ot_heights`` are the solver's targets, weights and heights.

        Parameters
        ----------
        codes : tensor [N, d]
            All training codes, in dataset order (the ``num_targets`` subsample is drawn here).
        progress : bool
            The solver's progress bar.
        distributed : bool or ProcessGroup, default False
            Collective over a ``torch.distributed`` group (True: the default group): every rank
            passes the same ``codes``; the targets are sharded over the ranks by contiguous ranges
            and solved once, together (:class:`SemiDiscreteOT`'s ``distributed`` mode); every rank
            then stores the full solution.
        **fit_overrides
            Passed on to :meth:`SemiDiscreteOT.fit` over the hyperparameters' values.

        Returns
        -------
        dict
            The solver's report (also kept in ``self.ot_report``), with ``num_codes`` (N before
            merging), ``num_targets`` (after) and ``processes``.
        """
        hp = self.hparams
        if codes.dim() != 2 or codes.shape[1] != self.latent_dim:
            raise UserInputError(f"codes must be [N, {self.latent_dim}], got {tuple(codes.shape)}")
        group, rank, world = None, 0, 1
        if distributed is not False:
            import torch.distributed as dist

            group = None if distributed is True else distributed
            rank, world = dist.get_rank(group), dist.get_world_size(group)
            self._check_same_codes_on_all_ranks(codes, group)
        if hp.num_targets is not None and hp.num_targets < codes.shape[0]:
            keep = torch.randperm(codes.shape[0], generator=torch.Generator().manual_seed(hp.seed))[: hp.num_targets]
            codes = codes[keep.sort().values.to(codes.device)]
        shift = codes.mean(0)
        scale = (codes - shift).abs().amax(0).clamp_min(1e-8)
        targets, weights, _ = merge_duplicate_codes((codes - shift) / scale)
        if targets.shape[0] < codes.shape[0] and rank == 0:
            warnings.warn(f"{codes.shape[0] - targets.shape[0]} duplicate code(s) merged ({codes.shape[0]} -> "
                          f"{targets.shape[0]} OT targets), each weighted by its number of copies", stacklevel=2)
        lo, hi = _shard_bounds(targets.shape[0], rank, world)
        solver = SemiDiscreteOT(targets[lo:hi], weights[lo:hi], low=-1.0, high=1.0, backend=hp.ot_backend,
                                seed=hp.seed, merge_duplicates=False,
                                distributed=False if distributed is False else (True if group is None else group))
        fit_kwargs = dict(method=hp.ot_method, max_steps=hp.ot_max_steps, tol=hp.ot_tol,
                          time_limit=hp.ot_time_limit, eval_share=hp.ot_eval_share, progress=progress)
        if hp.ot_batch_size is not None:
            fit_kwargs["batch_size"] = hp.ot_batch_size
        if hp.ot_eval_samples is not None:
            fit_kwargs["eval_samples"] = hp.ot_eval_samples
        fit_kwargs.update(fit_overrides)
        # Sharded or not, one collective fit: the driver keeps the ranks on one clock.
        report = solver.fit(**fit_kwargs)
        if distributed is False:
            heights = solver.heights.detach()
        else:
            heights = _all_gather_rows(solver.heights.detach(), _shard_sizes(targets.shape[0], world), group)
        self.ot_targets = targets.detach().clone()
        self.ot_weights = weights.to(targets.dtype)
        self.ot_heights = heights.clone()
        self.norm_shift, self.norm_scale = shift.detach().clone(), scale.detach().clone()
        # A sharded solver answers queries only collectively; sampling builds a local one (see `solver`).
        self._solver = solver if distributed is False else None
        self.ot_report = report.to_dict() if hasattr(report, "to_dict") else dict(report)
        self.ot_report.update(num_codes=codes.shape[0], num_targets=targets.shape[0], processes=world)
        return self.ot_report

    @staticmethod
    def _check_same_codes_on_all_ranks(codes: torch.Tensor, group) -> None:
        """A sharded solve needs one problem: the same N codes on every rank (cheap checksums)."""
        import torch.distributed as dist

        summary = torch.stack([torch.tensor(float(codes.shape[0]), dtype=torch.float64),
                               codes.detach().double().sum().cpu(), codes.detach().double().abs().sum().cpu()])
        summary = summary.to(codes.device)
        low, high = summary.clone(), summary.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN, group=group)
        dist.all_reduce(high, op=dist.ReduceOp.MAX, group=group)
        if not torch.equal(low, high):
            raise UserInputError("solve_ot(distributed=...) needs the same codes on every rank (all N codes in dataset "
                                 f"order, e.g. from encode_dataset(distributed=...)); the ranks' (N, sum, sum |z|) range "
                                 f"from {low.tolist()} to {high.tolist()}")

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
            k = min(hp.topk, solver.num_targets)
            values, indices = solver.topk(noise, k)
            # The indices number the solver's targets: read them there, never in another copy.
            y, stats = extended_map(values, indices, solver.targets, angle_threshold=math.radians(hp.angle_threshold),
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
        # Runs on every process. Under DDP everything below is collective, in the same order on
        # every rank: each process encodes its share, the solve is sharded, and the checkpoint
        # writes end in a barrier. (Before, rank 0 alone logged the sample grid, and
        # `trainer.log_dir` inside it is a broadcast: rank 0 waited in that broadcast while the
        # other ranks waited in the barrier of `trainer.save_checkpoint`, forever.)
        trainer = self.trainer
        datamodule = trainer.datamodule
        if datamodule is None or getattr(datamodule, "train_set", None) is None:
            raise UserInputError("AE-OT needs a DataModule with a `train_set` (e.g. MNISTDataModule) to encode")
        distributed = _process_group(trainer)
        start = time.perf_counter()
        codes = self.encode_dataset(datamodule.train_set.images, progress=trainer.is_global_zero,
                                    distributed=distributed)
        report = self.solve_ot(codes, progress=trainer.is_global_zero, distributed=distributed)
        report["encode_and_solve_seconds"] = time.perf_counter() - start
        # Every rank holds the full solution, so every rank can sample; log_image_grid must be
        # called on all ranks (it reads trainer.log_dir, a collective) and writes on rank 0 only.
        self.log_image_grid(self.sample(self.grid_size, seed=0), "samples")
        self._write_solution_into_checkpoints(trainer)

    def _write_solution_into_checkpoints(self, trainer) -> None:
        """Rewrite this fit's checkpoints with the OT solution, so a checkpoint alone can sample.

        ``trainer.save_checkpoint`` is collective (the strategy writes on rank 0, then all ranks
        meet in a barrier), so every rank calls it for the same paths: rank 0's list.
        """
        callback = trainer.checkpoint_callback
        if callback is None:
            return
        paths = sorted({p for p in (getattr(callback, "best_model_path", ""),
                                    getattr(callback, "last_model_path", "")) if p})
        paths = trainer.strategy.broadcast(paths, src=0)
        if not paths and getattr(callback, "dirpath", None):
            # Nothing was written during fit (`--trainer.max_epochs=0`, a re-solve from
            # `autoencoder_ckpt`): write one checkpoint, or the solution would be lost.
            metrics = {"epoch": torch.tensor(trainer.current_epoch), "step": torch.tensor(trainer.global_step)}
            paths = [callback.format_checkpoint_name(metrics)]
            callback.best_model_path = paths[0]
        for path in paths:
            trainer.save_checkpoint(path)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["ot_report"] = self.ot_report

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("state_dict", {})
        if "ot_weights" not in state:
            _migrate_unmerged_solution(state)
        # A checkpoint from before the solve, or with the solution stripped, loads as "unsolved".
        for name in ("ot_targets", "ot_weights", "ot_heights"):
            if name not in state:
                state[name] = getattr(self, name)
        self.ot_report = checkpoint.get("ot_report")
        self._solver = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The solution buffers are empty until solved: take the stored shapes, whichever way the
        # state arrives (a checkpoint, a plain load_state_dict, or ddp_spawn handing rank 0's
        # weights back to the main process).
        for name in ("ot_targets", "ot_weights", "ot_heights"):
            stored = state_dict.get(prefix + name)
            if stored is not None:
                setattr(self, name, torch.empty_like(stored, device=getattr(self, name).device))
        self._solver = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _process_group(trainer):
    """True (the default ``torch.distributed`` group) when the trainer runs several processes, else False."""
    if trainer.world_size <= 1:
        return False
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise UserInputError(f"AE-OT's OT stage under a {trainer.world_size}-process strategy needs an initialised "
                             f"torch.distributed process group; strategy {type(trainer.strategy).__name__} has none")
    return True


def _migrate_unmerged_solution(state: dict) -> None:
    """Checkpoints written before ``ot_weights`` existed: store the merged targets the heights belong to.

    Until then ``solve_ot`` stored the *unmerged* codes beside the heights of the solver's merged
    targets; merging the stored codes with the same rule recovers the solver's targets exactly.
    """
    targets, heights = state.get("ot_targets"), state.get("ot_heights")
    state["ot_weights"] = torch.empty(0)  # uniform masses, as these checkpoints were solved with
    if targets is None or heights is None or heights.numel() == 0 or targets.shape[0] == heights.shape[0]:
        return
    merged, weights, _ = merge_duplicate_codes(targets)
    if merged.shape[0] != heights.shape[0]:
        raise UserInputError(f"this AE-OT checkpoint holds {targets.shape[0]} codes ({merged.shape[0]} distinct) but "
                             f"{heights.shape[0]} heights, so its OT solution cannot be used. Solve it again with "
                             "`ae-ot fit --config models/ae_ot.yaml --model.autoencoder_ckpt=CKPT --trainer.max_epochs=0`.")
    warnings.warn(f"this AE-OT checkpoint was written before duplicate codes were stored merged: its "
                  f"{targets.shape[0]} codes were merged into the {merged.shape[0]} targets its heights belong to "
                  "(the checkpoint file is unchanged)", stacklevel=3)
    state["ot_targets"], state["ot_weights"] = merged, weights.to(targets.dtype)
