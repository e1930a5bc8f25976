"""The ``"fused"`` CPU score kernel: top-1 / top-2 of ``s_i(x) = <x, y_i> + h_i`` in one pass.

The C++ source (``fused_topk.cpp`` beside this file) keeps 16 samples in the lanes of one vector
and folds every target's score into a running best (and second best) without writing a score
tile, so the top 2 costs about what the top 1 costs (speed-ups over the tiled torch kernel:
docs/benchmarks.md).

Build: on first use the source is compiled with the system C++ compiler (``$CXX``, else ``c++`` /
``g++``; ``-O3 -march=native``, once per machine, no torch headers) into
``$AE_OT_CACHE/kernels/`` under a name keyed by the source, the compiler, the flags and the CPU,
loaded with :mod:`ctypes`, and checked once against float64 on small problems
(:func:`self_check`). Without a compiler, or when the check fails, :func:`fused_available` is
False, :func:`fused_build_error` says why, ``backend="auto"`` runs the torch kernel (warning once,
:class:`ae_ot.ot.kernels.KernelFallbackWarning`) and ``backend="fused"`` raises.

Threads: the samples are split in blocks over ``torch.get_num_threads()`` Python threads; ctypes
releases the GIL during each call.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ae_ot.checks import UserInputError
from ae_ot.io import cache_dir

__all__ = ["fused_available", "fused_preferred", "fused_topk", "fused_build_error", "fused_applies", "self_check", "SOURCE"]

SOURCE = Path(__file__).with_name("fused_topk.cpp")
#: compile flags tried in order (the first set that builds is used): -march=native is what makes
#: the vector type AVX-512 (or AVX2 / NEON) code; plain -O3 is the fallback for compilers without it
FLAG_SETS = (("-O3", "-march=native"), ("-O3",))
#: samples per thread task: at most this many, a multiple of the kernel's 16 lanes
TASK_ROWS = 2048
#: calls of fewer multiply-adds (M N d) run on the caller's thread: handing them to the pool costs
#: more than it saves (~1 ms of work at this size)
SERIAL_WORK = 1 << 22


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        path = shutil.which(name) if name else None
        if path:
            return path
    return None


def _cpu_key() -> str:
    """What the compiled code depends on besides the source: a binary built with -march=native on
    one CPU may not run on another that shares the cache (an illegal instruction, not an error)."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features", "model name")):
                    flags += line
    except OSError:
        pass
    return platform.machine() + platform.processor() + flags


def fused_preferred() -> bool:
    """Whether ``backend="auto"`` should pick this kernel on this CPU: one with 512-bit vectors
    (AVX-512F). The kernel keeps 16 float32 samples in the lanes of one vector register; with
    256-bit AVX2 each of them takes two registers and the kernel spills, slower than the torch
    kernel (see docs/benchmarks.md).

    Examples
    --------
    >>> isinstance(fused_preferred(), bool)
    True
    """
    return "avx512f" in _cpu_key().split()


class _CacheError(OSError):
    """The kernel cache folder cannot hold the compiled library."""


def _build(compiler: str) -> Path:
    # What the binary depends on besides the flags: the source, the compiler and the CPU.
    depends = SOURCE.read_bytes() + subprocess.run([compiler, "--version"], capture_output=True,
                                                   text=True).stdout.encode() + _cpu_key().encode()
    folder = cache_dir() / "kernels"
    errors = []
    for flags in FLAG_SETS:
        key = hashlib.blake2b(depends + " ".join(flags).encode(), digest_size=10).hexdigest()
        target = folder / f"fused_topk-{key}.so"
        if target.exists():
            return target
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # Build into a temporary name, then rename: processes that build at once (DDP ranks) never
            # load a half-written library.
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
        except OSError as err:
            raise _CacheError(f"the kernel cache {folder} cannot hold files ({type(err).__name__}: "
                              f"{err.strerror or err}); point AE_OT_CACHE at a writable folder") from err
        os.close(fd)
        cmd = [compiler, *flags, "-shared", "-fPIC", "-o", tmp, str(SOURCE)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0:
            os.replace(tmp, target)
            return target
        os.unlink(tmp)
        errors.append(f"$ {' '.join(cmd)}\n{proc.stderr.strip()}")
    raise RuntimeError("\n".join(errors))


@functools.lru_cache(maxsize=None)
def _library():
    """(the loaded function, None) or (None, why it is not available)."""
    compiler = _compiler()
    if compiler is None:
        return None, "no C++ compiler found (set $CXX, or install g++)"
    try:
        path = _build(compiler)
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:
            # A cached library that does not load (truncated, or from another libc): build it again.
            path.unlink(missing_ok=True)
            lib = ctypes.CDLL(str(_build(compiler)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        why = f"building {SOURCE.name} failed:\n{err}"
        # Said once per process (this function is cached): without it "auto" would fall back to the
        # slower torch kernel without a word.
        summary = " ".join(str(err).split())[:300]
        if not isinstance(err, _CacheError):
            summary = f"building {SOURCE.name} failed ({summary})"
        warnings.warn(f"the fused CPU kernel is off, backend='auto' uses the slower torch kernel: {summary}",
                      RuntimeWarning, stacklevel=2)
        return None, why
    fn = lib.ae_ot_fused_topk
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                   ctypes.c_int64, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    # A miscompiled kernel (a compiler's vectoriser bug, a wrong -march) would be silently wrong:
    # check it once against float64 before any solve uses it.
    failure = self_check(lambda x, y, h, k: _run(fn, x, y, h, k))
    if failure:
        return None, f"the compiled kernel failed its self-check ({failure})"
    return fn, None


def self_check(topk) -> str | None:
    """Compare ``topk(x, y, h, k) -> (values [M, k], indices [M, k])`` with a float64 reference on
    small problems that cover the kernel's paths (d in registers and from memory, ragged sample and
    target tails, k = 1 and 2). Returns what differs, or None."""
    g = torch.Generator().manual_seed(0)
    for d in (3, 16, 21):
        x, y = torch.rand(50, d, generator=g) * 2 - 1, torch.randn(37, d, generator=g)
        h = 0.3 * torch.randn(37, generator=g)
        ref_values, ref_indices = (x.double() @ y.double().T + h.double()).topk(3, dim=1)
        for k in (1, 2):
            values, indices = topk(x, y, h, k)
            # rows whose k best are separated by more than float32 noise have one right answer
            clear = (ref_values[:, :k] - ref_values[:, 1:k + 1]).min(1).values > 1e-4
            if not torch.equal(indices[clear], ref_indices[clear, :k]):
                return f"d={d}, k={k}: wrong target indices"
            if not torch.allclose(values.double(), ref_values[:, :k], atol=1e-4):
                return f"d={d}, k={k}: wrong scores"
    return None


def fused_available() -> bool:
    """Whether the fused kernel builds, loads and passes its self-check here (compiles it on the
    first call of a machine).

    Examples
    --------
    >>> isinstance(fused_available(), bool)   # compiles the kernel on first use
    True
    """
    return _library()[0] is not None


def fused_build_error() -> str | None:
    """Why :func:`fused_available` is False (None when it is True).

    Examples
    --------
    >>> (fused_build_error() is None) == fused_available()
    True
    """
    return _library()[1]


def fused_applies(x: torch.Tensor, h: torch.Tensor, k: int) -> bool:
    """Whether a call can run on the fused kernel: CPU float32, k <= 2 and finite heights (non-finite
    heights go to the torch kernel, whose NaN propagation the solver's blow-up guard reads).

    Examples
    --------
    >>> import torch
    >>> fused_applies(torch.rand(4, 3), torch.zeros(5), k=1), fused_applies(torch.rand(4, 3).double(), torch.zeros(5), k=1)
    (True, False)
    """
    return (x.device.type == "cpu" and x.dtype == torch.float32 and k <= 2 and h.shape[0] < 2 ** 31
            and bool(torch.isfinite(h).all()))


_pool: tuple[int, int, ThreadPoolExecutor] | None = None


def _executor(threads: int) -> ThreadPoolExecutor:
    # One pool per process and thread count; a forked child (DataLoader workers) gets a new one,
    # since it inherits the pool object but not its threads.
    global _pool
    if _pool is None or _pool[:2] != (os.getpid(), threads):
        _pool = (os.getpid(), threads, ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ae-ot-fused"))
    return _pool[2]


def fused_topk(x: torch.Tensor, y: torch.Tensor, h: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (k = 1, 2) of ``s_i(x) = <x, y_i> + h_i`` over the targets i, for every sample x.

    Parameters
    ----------
    x : tensor [M, d], CPU float32
        Samples.
    y : tensor [N, d], CPU float32
        Targets, ``k <= N < 2^31``.
    h : tensor [N], CPU float32
        Heights.
    k : {1, 2}
        Number of best targets kept.

    Non-contiguous inputs are copied to contiguous memory.

    Returns
    -------
    values : tensor [M, k] float32
        The k best scores, descending.
    indices : tensor [M, k] int64
        Their targets; the lowest index wins among equal scores, as ``torch.max`` (for k = 2 two
        tied targets give ``values[:, 0] == values[:, 1]``).

    Raises
    ------
    UserInputError
        For inputs outside the above, or when the kernel is not available here
        (:func:`fused_build_error` says why).

    Examples
    --------
    >>> import torch
    >>> if fused_available():
    ...     values, indices = fused_topk(torch.tensor([[2.0, 1.0]]), torch.eye(2), torch.zeros(2), k=2)
    ...     print(indices.tolist())
    ... else:
    ...     print([[0, 1]])
    [[0, 1]]
    """
    _check_inputs(x, y, h, k)
    fn, why = _library()
    if fn is None:
        raise UserInputError(f"backend='fused' is not available: {why}. Use backend='torch' (or 'auto').")
    if x.shape[0] == 0:
        return torch.empty(0, k, dtype=torch.float32), torch.empty(0, k, dtype=torch.long)
    return _run(fn, x, y, h, k)


def _check_inputs(x, y, h, k) -> None:
    """Raise one UserInputError naming the first rule of :func:`fused_topk` that the inputs break."""
    for name, t in (("x", x), ("y", y), ("h", h)):
        if not isinstance(t, torch.Tensor):
            raise UserInputError(f"fused_topk: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.device.type != "cpu":
            raise UserInputError(f"fused_topk: {name} must be on the CPU, got device {t.device}; "
                                 "move it with .cpu() or use kernels.topk_scores(..., backend='auto')")
        if t.dtype != torch.float32:
            raise UserInputError(f"fused_topk: {name} must be float32, got {t.dtype}; convert it with .float() "
                                 "or use kernels.topk_scores, which runs other dtypes on the torch kernel")
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise UserInputError(f"fused_topk: x must be [M, d] and y [N, d] with the same d >= 1, got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[1] < 1:
        raise UserInputError(f"fused_topk: the dimension d must be >= 1, got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if h.shape != (y.shape[0],):
        raise UserInputError(f"fused_topk: h must be [N] = [{y.shape[0]}] (one height per target), got {tuple(h.shape)}")
    if isinstance(k, bool) or k not in (1, 2):
        raise UserInputError(f"fused_topk: k must be 1 or 2, got {k!r}; use kernels.topk_scores for larger k")
    if k > y.shape[0]:
        raise UserInputError(f"fused_topk: k={k} exceeds the number of targets N={y.shape[0]}; pass k <= N")
    if y.shape[0] >= 2 ** 31:
        raise UserInputError(f"fused_topk: at most 2^31 - 1 targets, got N={y.shape[0]}; use kernels.topk_scores")


def _run(fn, x: torch.Tensor, y: torch.Tensor, h: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Call the loaded kernel ``fn`` over blocks of samples on the thread pool."""
    x, y, h = x.contiguous(), y.contiguous(), h.contiguous()
    m, d = x.shape
    n = y.shape[0]
    vals = torch.empty(m, k, dtype=torch.float32)
    idxs = torch.empty(m, k, dtype=torch.long)
    threads = max(1, torch.get_num_threads())

    def call(r0: int, rows: int) -> int:
        return fn(x.data_ptr() + 4 * r0 * d, rows, d, y.data_ptr(), h.data_ptr(), n, k,
                  vals.data_ptr() + 4 * r0 * k, idxs.data_ptr() + 8 * r0 * k)

    if threads == 1 or m <= 16 or m * n * d < SERIAL_WORK:
        codes = [call(0, m)]
    else:
        # Up to 4 tasks per thread, so that a thread slowed by the VM does not hold the others up
        # (few samples against many targets still split: 2,048 samples x 1M targets is seconds).
        rows = max(16, min(TASK_ROWS, -(-m // (4 * threads)) // 16 * 16))
        codes = [f.result() for f in [_executor(threads).submit(call, r0, min(rows, m - r0)) for r0 in range(0, m, rows)]]
    if any(codes):
        raise RuntimeError(f"fused kernel failed with code {max(codes)} (M={m}, d={d}, N={n}, k={k})")
    return vals, idxs
