"""``torch.distributed`` plumbing of the solver: targets sharded over the ranks of a process group.

With ``SemiDiscreteOT(..., distributed=True)`` every rank holds a contiguous shard of the targets
(global indices ``offset .. offset + N_r - 1``) and its heights; all ranks draw the *same* source
samples, score them against their own shard, and reduce:

* :class:`ShardComm`: the all-reduces the solver needs (sums, maxima, shard layout), and no-ops
  in a single process, so the rest of the solver is written once for both cases;
* :func:`sharded_topk`: the global top-k from the per-rank top-k.

N can then exceed one device's memory, and the work per step is split N / world ways.
"""

from __future__ import annotations

import torch

from ae_ot.checks import UserInputError
from ae_ot.ot.kernels import topk_scores

__all__ = ["ShardComm", "sharded_topk", "shard_bounds", "gather_rows"]


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of rank ``rank`` when ``n`` rows are split over ``world`` ranks:
    contiguous ranges in rank order, sizes differing by at most one.

    Examples
    --------
    >>> [shard_bounds(10, rank, 3) for rank in range(3)]
    [(0, 3), (3, 6), (6, 10)]
    """
    return n * rank // world, n * (rank + 1) // world


def gather_rows(local: torch.Tensor, sizes: list[int], group=None) -> torch.Tensor:
    """Concatenation in rank order of every rank's ``local`` [sizes[r], ...] (a collective).

    ``all_gather`` needs equal shapes, so each shard is padded to the longest and trimmed after.
    """
    import torch.distributed as dist

    padded = local.new_zeros((max(sizes), *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous(), group=group)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


class ShardComm:
    """Collective operations over the ranks that share the targets (no-ops in a single process).

    Parameters
    ----------
    distributed : bool or ProcessGroup
        False: one process. True: the default ``torch.distributed`` group. A ProcessGroup: that group.

    Examples
    --------
    >>> comm = ShardComm()   # one process: every collective is a no-op
    >>> comm.enabled
    False
    """

    def __init__(self, distributed=False):
        self.enabled = distributed is not False and distributed is not None
        self.group = None if isinstance(distributed, bool) or distributed is None else distributed
        if self.enabled:
            import torch.distributed as dist

            if not dist.is_available() or not dist.is_initialized():
                raise UserInputError("distributed=True needs an initialised torch.distributed process group; "
                                     "call torch.distributed.init_process_group(...) first, or pass distributed=False")

    @property
    def rank(self) -> int:
        if not self.enabled:
            return 0
        import torch.distributed as dist

        return dist.get_rank(self.group)

    @property
    def world_size(self) -> int:
        if not self.enabled:
            return 1
        import torch.distributed as dist

        return dist.get_world_size(self.group)

    def device(self) -> torch.device:
        """The device collectives run on: CUDA for NCCL, CPU for gloo."""
        import torch.distributed as dist

        if dist.get_backend(self.group) == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def allreduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Sum (``op="sum"``) or maximum (``op="max"``) of ``t`` over the ranks (a new tensor)."""
        if not self.enabled:
            return t
        import torch.distributed as dist

        out = t.clone()
        dist.all_reduce(out, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op], group=self.group)
        return out

    def sum_int(self, value: int) -> int:
        if not self.enabled:
            return value
        return int(self.allreduce(torch.tensor([value], dtype=torch.long, device=self.device()))[0])

    def sum_float(self, value: float) -> float:
        if not self.enabled:
            return value
        return float(self.allreduce(torch.tensor([value], dtype=torch.float64, device=self.device()))[0])

    def shard_layout(self, n_local: int) -> tuple[int, int]:
        """``(offset, N)``: the global index of this rank's first target and the global count."""
        if not self.enabled:
            return 0, n_local
        import torch.distributed as dist

        sizes = [torch.zeros(1, dtype=torch.long, device=self.device()) for _ in range(self.world_size)]
        dist.all_gather(sizes, torch.tensor([n_local], dtype=torch.long, device=self.device()), group=self.group)
        sizes = [int(s) for s in sizes]
        return sum(sizes[: self.rank]), sum(sizes)


def sharded_topk(x: torch.Tensor, y_local: torch.Tensor, h_local: torch.Tensor, offset: int, k: int = 1,
                 group=None, backend: str = "torch", tile_bytes: int | None = None,
                 precision: str = "highest") -> tuple[torch.Tensor, torch.Tensor]:
    """Global top-k when the targets are sharded over the ranks of a ``torch.distributed`` group.

    Every rank passes the *same* samples ``x [M, d]`` and its shard ``y_local [N_r, d]``,
    ``h_local [N_r]`` whose first target has global index ``offset``.

    * k = 1: all-reduce(MAX) of the per-rank maxima, then all-reduce(MIN) of the global index on
      the ranks attaining it (lowest index wins ties, as in the single-process kernel).
    * k > 1: all-gather of the per-rank top-k ([world, M, k]) and a top-k of the union.

    Returns the global ``values [M, k]`` and global ``indices [M, k]`` on every rank.
    """
    import torch.distributed as dist

    kl = min(k, y_local.shape[0])
    if kl > 0:
        v, i = topk_scores(x, y_local, h_local, kl, backend, tile_bytes, precision)
        i = i + offset
    else:
        v = torch.empty(x.shape[0], 0, dtype=x.dtype, device=x.device)
        i = torch.empty(x.shape[0], 0, dtype=torch.long, device=x.device)
    if kl < k:  # a shard smaller than k: pad with -inf so every rank contributes [M, k]
        pad = k - kl
        v = torch.cat([v, torch.full((x.shape[0], pad), float("-inf"), dtype=v.dtype, device=v.device)], 1)
        i = torch.cat([i, torch.full((x.shape[0], pad), torch.iinfo(torch.long).max, dtype=torch.long,
                                     device=i.device)], 1)
    if k == 1:
        vmax = v.clone()
        dist.all_reduce(vmax, op=dist.ReduceOp.MAX, group=group)
        cand = torch.where(v == vmax, i, torch.full_like(i, torch.iinfo(torch.long).max))
        dist.all_reduce(cand, op=dist.ReduceOp.MIN, group=group)
        return vmax, cand
    world = dist.get_world_size(group)
    vs = [torch.empty_like(v) for _ in range(world)]
    is_ = [torch.empty_like(i) for _ in range(world)]
    dist.all_gather(vs, v.contiguous(), group=group)
    dist.all_gather(is_, i.contiguous(), group=group)
    va, ia = torch.cat(vs, 1), torch.cat(is_, 1)
    # Sort by (value desc, index asc) so ties resolve to the lowest global index deterministically.
    order = torch.argsort(ia, dim=1)
    va, ia = va.gather(1, order), ia.gather(1, order)
    vt, pos = torch.sort(va, dim=1, descending=True, stable=True)
    return vt[:, :k], ia.gather(1, pos[:, :k])
