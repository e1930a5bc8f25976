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
import warnings

import torch

from ae_ot.checks import UserInputError
from ae_ot.ot.fused import fused_applies, fused_available, fused_build_error, fused_preferred, fused_topk

__all__ = [
    "KernelFallbackWarning",
    "resolve_backend",
    "kernel_name",
    "topk_scores",
    "argmax_scores",
    "tile_plan",
    "keops_available",
]

BACKENDS = ("auto", "torch", "fused", "keops")


def keops_available() -> bool:
    """Whether pykeops imports (it may still fail to compile on first use).

    Examples
    --------
    >>> import contextlib, io
    >>> with contextlib.redirect_stdout(io.StringIO()):   # pykeops may print a note on import
    ...     available = keops_available()
    >>> isinstance(available, bool)
    True
    """
    try:
        import pykeops.torch  # noqa: F401
    except Exception:  # pragma: no cover - depends on the environment
        return False
    return True


class KernelFallbackWarning(UserWarning):
    """``backend="auto"`` on CPU runs the torch kernel because the fused one is not available here.

    Examples
    --------
    >>> issubclass(KernelFallbackWarning, UserWarning)
    True
    """


_fallback_warned = False


def _warn_fallback_once() -> None:
    """Warn once per process that ``"auto"`` falls back from the fused kernel, and why."""
    global _fallback_warned
    if _fallback_warned:
        return
    _fallback_warned = True
    warnings.warn(f"backend='auto' runs the torch CPU kernel, not the faster fused one: {fused_build_error()} "
                  "Pass backend='torch' to choose it explicitly (and silence this warning).",
                  KernelFallbackWarning, stacklevel=3)


def resolve_backend(backend: str, device: torch.device, dim: int) -> str:
    """The backend ``backend`` stands for on ``device`` in dimension ``dim``.

    ``"auto"``: on CPU ``"fused"`` when the CPU has 512-bit vectors (:func:`ae_ot.ot.fused.fused_preferred`;
    on others the torch kernel is faster) and the kernel builds and passes its self-check, else
    ``"torch"`` (a build that fails gives one :class:`KernelFallbackWarning` per process, with the
    reason); on CUDA
    ``"keops"`` for d <= 8 when pykeops imports (a memory-bound GEMM, where KeOps' fused
    reduction avoids writing the score tile), else ``"torch"``. Other values are returned as given.

    Examples
    --------
    >>> import torch
    >>> resolve_backend("torch", torch.device("cpu"), dim=3)
    'torch'
    """
    if backend not in BACKENDS:
        raise UserInputError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    device = torch.device(device)
    if device.type == "cuda" and dim <= 8 and keops_available():
        return "keops"
    if device.type == "cpu" and fused_preferred():
        if fused_available():
            return "fused"
        _warn_fallback_once()
    return "torch"


def kernel_name(backend: str, device: torch.device, dtype: torch.dtype, k: int, dim: int = 0) -> str:
    """The kernel that scores a top-``k`` call of ``dtype`` on ``device`` with ``backend``.

    Returns ``"fused"``, ``"torch"`` or ``"keops"``: ``"fused"`` runs CPU float32 calls with
    k <= 2 only (the others run on ``"torch"``, see :func:`topk_scores`). ``dim`` (d) matters for
    ``backend="auto"`` only (see :func:`resolve_backend`). Non-finite heights also go to
    ``"torch"``; that is a property of the call's values, not of its signature, and not covered here.

    Examples
    --------
    >>> import torch
    >>> kernel_name("torch", torch.device("cpu"), torch.float64, k=1)
    'torch'
    """
    backend = resolve_backend(backend, device, dim)
    if backend == "fused" and not (torch.device(device).type == "cpu" and dtype == torch.float32 and k <= 2):
        return "torch"
    return backend


# CPU tiles are sized for the cache, not for memory (see docs/benchmarks.md): the score tile stays
# in cache between the GEMM that writes it and the max that reads it; tall rows keep BLAS efficient.
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

    Returns ``(rows, cols)`` with ``1 <= rows <= m``, ``1 <= cols <= n``.

    Examples
    --------
    >>> import torch
    >>> rows, cols = tile_plan(1000, 5000, 1, torch.device("cpu"), torch.float32)
    >>> rows > 0 and cols > 0
    True
    """
    device = torch.device(device)
    if tile_bytes is None:
        if device.type == "cuda":
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

    Why two stages on CPU: torch's CPU ``max(dim)`` / ``topk`` with indices is a scalar loop,
    while ``amax`` is vectorised. So:

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

    Examples
    --------
    >>> import torch
    >>> y, h = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.zeros(2)
    >>> scores, indices = topk_scores(torch.tensor([[2.0, 1.0]]), y, h, k=2)
    >>> scores.tolist(), indices.tolist()
    ([[2.0, 1.0]], [[0, 1]])
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
    """``(max_i s_i(x), argmax_i s_i(x))``, shapes [M] and [M]; see :func:`topk_scores`.

    Examples
    --------
    >>> import torch
    >>> best, index = argmax_scores(torch.tensor([[2.0, 1.0]]), torch.eye(2), torch.zeros(2))
    >>> best.tolist(), index.tolist()
    ([2.0], [0])
    """
    v, i = topk_scores(x, y, h, 1, backend, tile_bytes, precision)
    return v[:, 0], i[:, 0]
