"""Score kernels: top-k over targets of ``s_i(x) = <x, y_i> + h_i``, tiled, never the full M x N matrix.

The solver's whole cost is here: one step scores M samples against N targets (an M x N x d GEMM)
and keeps, per sample, the best one or two targets. The kernels

* tile the samples (rows) and the targets (column blocks) so that one score tile fits a memory
  budget (a cache-sized 8 MB on CPU, a fraction of the free memory on CUDA) and merge running top-k
  across column blocks: memory is O(tile + M k), whatever N is;
* run on three backends: ``"torch"`` (``addmm`` into a reused buffer, then a row reduction: on
  CPU a two-stage one, vectorised group maxima then an index search in the best groups, see
  :func:`_tile_topk`; ``max``/``topk`` on CUDA), ``"fused"`` (CPU, float32, k <= 2: a C++ kernel
  compiled on first use that never writes a score tile, :mod:`ae_ot.ot.fused`; other calls go to
  ``"torch"``) and ``"keops"`` (pykeops ``LazyTensor`` reductions ``max_argmax`` /
  ``Kmin_argKmin``);
* are the building block of :func:`ae_ot.ot.distributed.sharded_topk`, which shards the targets
  over ``torch.distributed`` ranks.

Ties: the torch backend returns the lowest index among equal maxima within a block (torch's
``max`` convention) and the sharded reduction keeps the lowest global index, so a sharded run
agrees with a single-process run bit for bit when the per-rank scores are computed identically.
"""

from __future__ import annotations

import contextlib
import os

import torch

from ae_ot.checks import UserInputError
from ae_ot.ot.fused import fused_applies, fused_available, fused_topk

__all__ = [
    "resolve_backend",
    "topk_scores",
    "argmax_scores",
    "tile_plan",
    "keops_available",
]

BACKENDS = ("auto", "torch", "fused", "keops")


def keops_available() -> bool:
    """Whether pykeops imports (it may still fail to compile on first use)."""
    try:
        import pykeops.torch  # noqa: F401
    except Exception:  # pragma: no cover - depends on the environment
        return False
    return True


def resolve_backend(backend: str, device: torch.device, dim: int) -> str:
    """Pick the kernel backend.

    ``"auto"`` picks ``"fused"`` on CPU when it builds (and ``AE_OT_FUSED`` is not ``0``), else
    ``"torch"``: measured on the 2-core CPU (docs/benchmarks.md) the fused kernel is 4.8x faster
    than ``addmm`` + ``max`` for the top 1 at d = 16, N = 10,000 (6.4x for the top 2) and 2.2x at
    d = 64, and KeOps is several times slower than either. On CUDA it picks KeOps only for very
    small d (<= 8), where a GEMM is memory bound and KeOps' fused reduction avoids writing the
    score tile; for d > 8 the tensor-core GEMM wins. The CUDA rule is not measured in this
    project yet (no GPU in CI).
    """
    if backend not in BACKENDS:
        raise UserInputError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    if torch.device(device).type == "cuda" and dim <= 8 and keops_available():
        return "keops"
    if torch.device(device).type == "cpu" and os.environ.get("AE_OT_FUSED", "1") != "0" and fused_available():
        return "fused"
    return "torch"


# CPU tiles are sized for the cache, not for memory: measured on this 2-core EPYC (N = 60,000,
# d = 32, docs/benchmarks.md) a 512 x 2048 .. 512 x 4096 score tile (4-8 MB) runs addmm + max at
# 1.0-1.08x the speed of a bare tiled GEMM that skips the max, where 512-row tiles spanning all
# 60,000 columns (123 MB) ran at 0.61x: the max then re-reads the tile from DRAM. Rows below ~256
# starve the BLAS kernel (128 x 4096: 0.54x), so the rows stay tall and the columns are blocked.
CPU_TILE_BYTES = 8 << 20
CPU_MAX_COLS = 4096


def tile_plan(m: int, n: int, k: int, device: torch.device, dtype: torch.dtype,
              tile_bytes: int | None = None) -> tuple[int, int]:
    """Row-tile and column-block sizes for scoring ``m`` samples against ``n`` targets.

    One score tile ``[rows, cols]`` of ``dtype`` must fit ``tile_bytes``.

    * CPU (default 8 MB): column blocks of at most 4,096 targets and rows filling the budget
      (512 rows in float32), so that the tile stays in cache between the GEMM that writes it and
      the max that reads it; running maxima are merged across column blocks.
    * CUDA (default a quarter of the free memory, at most 2 GB): one column block whenever 1,024
      rows of scores fit, so the reduction runs over whole rows in one pass.

    The environment variable ``AE_OT_TILE_BYTES`` overrides the default budget.
    """
    device = torch.device(device)
    if tile_bytes is None:
        env = os.environ.get("AE_OT_TILE_BYTES")
        if env:
            tile_bytes = int(float(env))
        elif device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            tile_bytes = int(min(free // 4, 2 << 30))
        else:
            tile_bytes = CPU_TILE_BYTES
    elt = torch.finfo(dtype).bits // 8
    if device.type == "cpu":
        min_rows = 64
        cols = min(n, CPU_MAX_COLS, max(k, tile_bytes // (min_rows * elt)))
    else:
        min_rows = 1024
        cols = n if n * min_rows * elt <= tile_bytes else max(k, tile_bytes // (min_rows * elt))
    cols = max(1, min(cols, n))
    rows = max(1, min(m, tile_bytes // max(1, cols * elt)))
    return rows, cols


@contextlib.contextmanager
def _matmul_precision(device: torch.device, precision: str):
    """``"highest"``: full float32. ``"tf32"`` (CUDA only): TF32 tensor-core inputs, float32 accumulation."""
    if precision not in ("highest", "tf32"):
        raise UserInputError(f"precision must be 'highest' or 'tf32', got {precision!r}")
    if precision == "tf32" and torch.device(device).type == "cuda":
        old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old
    else:
        yield


def _merge_topk(v_run, i_run, v_new, i_new, k):
    """Top-k of two candidate lists [M, k_run] and [M, k_new]; ``i_new`` come after ``i_run``."""
    if k == 1:
        # strict '>' keeps the earlier (lower) index on ties, like torch.max.
        upd = v_new > v_run
        return torch.where(upd, v_new, v_run), torch.where(upd, i_new, i_run)
    v = torch.cat([v_run, v_new], dim=1)
    i = torch.cat([i_run, i_new], dim=1)
    v, pos = v.topk(min(k, v.shape[1]), dim=1)
    return v, i.gather(1, pos)


# Columns per group in the CPU two-stage reduction of a score tile (:func:`_tile_topk`).
CPU_GROUP_COLS = 128


def _tile_topk(s: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (k = 1 or 2 fast, larger k plain) of each row of one score tile ``s [r, c]``.

    Returns ``values [r, k]`` (descending) and column ``indices [r, k]``; for k = 1 the lowest
    index among equal maxima, as ``torch.max``.

    Why two stages on CPU: torch's CPU ``max(dim)`` / ``topk`` with indices is a scalar loop
    (measured ~0.9 ns per score here, as much time as the d = 32 GEMM that wrote the tile, and
    ``topk(2)`` 1.5x that), while ``amax`` is vectorised (~0.05 ns per score). So:

    1. ``g_j = max_{c in group j} s[:, c]`` over contiguous groups of 128 columns (``amax``);
    2. the best group (k = 1) or the two best groups (k = 2) by ``g_j``;
    3. the index search only inside those 128 or 256 columns.

    The top-2 scores lie in the two groups with the largest maxima: the best lies in the best
    group; a second-best outside it is its own group's maximum, at most the runner-up group's
    maximum, which is itself a candidate. Values are the tile's own floats, so the result is
    exactly what a full ``max`` / ``topk`` returns (up to the order of equal values for k = 2).
    """
    r, c = s.shape
    group = CPU_GROUP_COLS
    full = (c // group) * group
    if s.device.type != "cpu" or k > 2 or full < k * group:
        # CUDA reductions are already vectorised; tiny tiles gain nothing.
        return s.max(dim=1, keepdim=True) if k == 1 else s.topk(min(k, c), dim=1)
    groups = s[:, :full].unflatten(1, (full // group, group))  # [r, G, 128] view, no copy
    group_max = groups.amax(dim=2)  # [r, G]
    rows = torch.arange(r, device=s.device)
    if k == 1:
        v, g = group_max.max(dim=1, keepdim=True)  # first group attaining the max
        i = g * group + groups[rows, g[:, 0]].argmax(dim=1, keepdim=True)
    else:
        _, g = group_max.topk(2, dim=1)  # [r, 2]
        cand = groups[rows[:, None], g].reshape(r, 2 * group)  # the 256 candidate scores
        v, pos = cand.topk(2, dim=1)
        i = g.gather(1, pos // group) * group + pos % group
    if full < c:  # the last partial group: plain reduction over < 128 columns, then merge
        tail = s[:, full:]
        tv, ti = tail.max(dim=1, keepdim=True) if k == 1 else tail.topk(min(k, c - full), dim=1)
        v, i = _merge_topk(v, i, tv, ti + full, k)
    return v, i


def _topk_torch(x, y, h, k, tile_bytes, precision):
    m, n = x.shape[0], y.shape[0]
    rows, cols = tile_plan(m, n, k, x.device, x.dtype, tile_bytes)
    vals = torch.empty(m, k, dtype=x.dtype, device=x.device)
    idxs = torch.empty(m, k, dtype=torch.long, device=x.device)
    buf = torch.empty(rows * cols, dtype=x.dtype, device=x.device)
    with _matmul_precision(x.device, precision):
        for r0 in range(0, m, rows):
            xb = x[r0:r0 + rows]
            vr = ir = None
            for c0 in range(0, n, cols):
                yb, hb = y[c0:c0 + cols], h[c0:c0 + cols]
                s = buf[: xb.shape[0] * yb.shape[0]].view(xb.shape[0], yb.shape[0])
                # s = h + x y^T written into the reused buffer: no allocation per tile.
                torch.addmm(hb, xb, yb.T, out=s)
                v, i = _tile_topk(s, k)
                if c0:
                    i = i + c0
                vr, ir = (v, i) if vr is None else _merge_topk(vr, ir, v, i, k)
            vals[r0:r0 + rows] = vr
            idxs[r0:r0 + rows] = ir
    return vals, idxs


def _topk_keops(x, y, h, k):
    from pykeops.torch import LazyTensor

    xi = LazyTensor(x[:, None, :].contiguous())
    yj = LazyTensor(y[None, :, :].contiguous())
    hj = LazyTensor(h[:, None].contiguous(), axis=1)
    s = (xi | yj) + hj  # symbolic [M, N] scores, reduced on the fly
    if k == 1:
        v, i = s.max_argmax(dim=1)
    else:
        v, i = (-s).Kmin_argKmin(k, dim=1)
        v = -v
    return v.reshape(-1, k), i.reshape(-1, k).long()


def topk_scores(x: torch.Tensor, y: torch.Tensor, h: torch.Tensor, k: int = 1, backend: str = "torch",
                tile_bytes: int | None = None, precision: str = "highest") -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of ``s_i(x) = <x, y_i> + h_i`` over all targets, tiled.

    Parameters
    ----------
    x : tensor [M, d]
        Samples.
    y : tensor [N, d]
        Targets (same device and dtype as ``x``).
    h : tensor [N]
        Heights.
    k : int
        Number of best targets kept (``1 <= k <= N``).
    backend : {"torch", "fused", "keops", "auto"}
        ``"fused"`` runs CPU float32 calls with k <= 2 and finite heights on the fused kernel and the
        others on ``"torch"``.
    tile_bytes : int, optional
        Memory budget of one score tile (see :func:`tile_plan`).
    precision : {"highest", "tf32"}
        Matmul precision of the torch backend on CUDA.

    Returns
    -------
    values : tensor [M, k]
        Scores sorted in descending order.
    indices : tensor [M, k] (int64)
        Target indices of those scores.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise UserInputError(f"x must be [M, d] and y [N, d] with the same d, got {tuple(x.shape)} and {tuple(y.shape)}")
    if not 1 <= k <= y.shape[0]:
        raise UserInputError(f"k must be in [1, N={y.shape[0]}], got {k}")
    if x.device != y.device:
        raise UserInputError(f"samples are on {x.device} but targets on {y.device}; move them to one device")
    h = h.to(y.dtype)
    x = x.to(y.dtype)
    if x.shape[0] == 0:
        return (torch.empty(0, k, dtype=y.dtype, device=y.device), torch.empty(0, k, dtype=torch.long, device=y.device))
    backend = resolve_backend(backend, x.device, x.shape[1])
    if backend == "keops":
        return _topk_keops(x, y, h, k)
    if backend == "fused" and fused_applies(x, h, k):
        return fused_topk(x, y, h, k)
    return _topk_torch(x, y, h, k, tile_bytes, precision)


def argmax_scores(x, y, h, backend="torch", tile_bytes=None, precision="highest"):
    """``(max_i s_i(x), argmax_i s_i(x))``, shapes [M] and [M]; see :func:`topk_scores`."""
    v, i = topk_scores(x, y, h, 1, backend, tile_bytes, precision)
    return v[:, 0], i[:, 0]
