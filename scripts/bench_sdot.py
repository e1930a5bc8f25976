#!/usr/bin/env python
"""Benchmarks of ae_ot.ot (semi-discrete OT): kernel throughput, memory, time to held-out error.

Usage (each prints a JSON line and appends it to --out; `plot` draws error vs wall time):

    python scripts/bench_sdot.py kernel  [--n 60000 --d 32 --m 4096]
    python scripts/bench_sdot.py memory  [--n 1000000 --d 64 --m 2048]
    python scripts/bench_sdot.py solve --problem gmm   --budget 60  [--eval-samples 2097152]
    python scripts/bench_sdot.py solve --problem mnist --budget 120 [--eval-samples 4194304]
    python scripts/bench_sdot.py plot
    python scripts/bench_sdot.py compare --problem 8gaussians   # ours vs POT, see "compare" below
    python scripts/bench_sdot.py compare --problem 8gaussians,gmm --quick   # seconds-long smoke run
    python scripts/bench_sdot.py plot-peers                     # redraw docs/img/sdot_peers_*.png

GPU: every command takes --device cuda and optionally --precision tf32; scripts/gpu_check.sh runs
the issue's H100 item (kernel at N = 60,000, d = 32 and 64; a solve with --problem gmm --n 60000 --d 64).

"Time to error e" = the first solver time (evaluation excluded) at which the held-out error on
fresh i.i.d. samples is <= e. Held-out errors are measured at the solver times in --eval-times.
Both the raw mean relative error and the noise-corrected one sqrt(mean_rel^2 - floor^2) are
reported, since the Monte Carlo floor of the evaluation is not negligible on a 2-core CPU.

compare (issue 11): on one problem, one method after the other in the same process, all scored
by the same held-out evaluation: exact polygon areas in 2-D; else SemiDiscreteOT.errors with the
same number of i.i.d. samples (a fixed stream for POT and for returned heights; the in-fit
evaluations of our timed runs draw their own):
  default-tol  the user's call SemiDiscreteOT(...).fit(tol=...) (method "auto": exact2d in 2-D,
               else default), timed in wall seconds with its own held-out evaluations (aborted
               after --tol-wall-cap seconds);
  default      fit(method="default", time_limit=budget) with held-out errors at --eval-times
               (solver seconds; exact areas in 2-D);
  exact2d      the same for method="exact2d" (2-D only);
  aeot         the same for method="aeot" (the pyOMT reference);
  pot          POT 0.9.7 ot.semidiscrete.solve_semidiscrete (averaged SGD on the semi-dual with
               the DRAG decreasing-entropy schedule): a short run per (batch, lr0) setting, then
               the best setting for the budget, its Polyak iterate read at --eval-times through
               the source sampler (POT has no callback). Heights: h = (g - |y|^2) / 2.
Problems: 8gaussians (N = 1,000, [0, 1]^2, exact areas), gmm (N = 2,000, d = 16, [0, 1]^16),
mnist (autoencoder codes, N = 10,000, d = 16, [-1, 1]^16). Peak memory: RSS high-water mark
above the level at each run's start (see PeakRSS). POT: `pip install -e .[bench]`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import resource
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ae_ot.ot import SemiDiscreteOT, kernels, normalize_to_box  # noqa: E402
from ae_ot.ot.fused import fused_available  # noqa: E402

OUT = ROOT / "data" / "bench_sdot.jsonl"


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def emit(rec: dict, out: Path) -> None:
    rec = {"load": load_avg(), "threads": torch.get_num_threads(), "torch": torch.__version__,
           "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", **rec}
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps(rec), flush=True)


def gmm(n, d, k, seed):
    g = torch.Generator().manual_seed(seed)
    c = 0.25 + 0.5 * torch.rand(k, d, generator=g)
    lab = torch.randint(k, (n,), generator=g)
    return c[lab] + 0.08 * torch.randn(n, d, generator=g)


def mnist_codes(n=10000, d=16, seed=0) -> torch.Tensor:
    """Codes of n MNIST training images from a 2-epoch autoencoder, mapped into [0, 1]^d (cached)."""
    cache = ROOT / "data" / f"mnist_codes_n{n}_d{d}_s{seed}.pt"
    if cache.exists():
        return torch.load(cache)
    from ae_ot.datasets import load_mnist
    from ae_ot.generators import Autoencoder

    torch.manual_seed(seed)
    imgs = load_mnist(ROOT / "data").train_images
    model = Autoencoder(latent_dim=d)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    t0 = time.time()
    for _ in range(2):
        perm = torch.randperm(imgs.shape[0])
        for i in range(0, imgs.shape[0], 256):
            xb = imgs[perm[i:i + 256]]
            loss = torch.nn.functional.binary_cross_entropy(model.decode(model.encode(xb)), xb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        codes = torch.cat([model.encode(imgs[i:i + 1000]) for i in range(0, n, 1000)])[:n]
    print(f"AE trained in {time.time() - t0:.1f}s, final BCE {loss.item():.4f}", file=sys.stderr)
    codes, _, _ = normalize_to_box(codes, 0.0, 1.0, margin=0.0)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(codes, cache)
    return codes


# ------------------------------------------------------------------------------------------------
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_kernel(a):
    g = torch.Generator().manual_seed(0)
    dev = torch.device(a.device)
    y = torch.rand(a.n, a.d, generator=g).to(dev)
    h = 0.01 * torch.randn(a.n, generator=g).to(dev)
    x = torch.rand(a.m, a.d, generator=g).to(dev)
    out = torch.empty(a.m, a.n, device=dev)

    def t_mm():
        _sync(dev)
        t = time.perf_counter()
        with kernels._matmul_precision(dev, a.precision):
            torch.mm(x, y.T, out=out)
        _sync(dev)
        return time.perf_counter() - t

    def timer(backend, k):
        def run():
            _sync(dev)
            t = time.perf_counter()
            kernels.topk_scores(x, y, h, k, backend, precision=a.precision)
            _sync(dev)
            return time.perf_counter() - t
        return run

    # torch top-1 is "assign" (the tiled kernel); on CPU the fused kernel runs beside it when it builds
    timers = {"assign": timer("torch", 1), "torch_top2": timer("torch", 2)}
    if dev.type == "cpu" and fused_available():
        timers.update(fused_top1=timer("fused", 1), fused_top2=timer("fused", 2))
    t_mm()  # warm-up (page faults of `out`, BLAS init, the fused kernel's build)
    for run in timers.values():
        run()
    times = {name: [] for name in ["mm", *timers]}
    for _ in range(a.repeats):  # interleaved, so load changes hit every kernel alike
        times["mm"].append(t_mm())
        for name, run in timers.items():
            times[name].append(run())
    med = {name: sorted(ts)[len(ts) // 2] for name, ts in times.items()}
    mm_t, as_t = med["mm"], med["assign"]
    flops = 2 * a.m * a.n * a.d
    rec = {"bench": "kernel", "n": a.n, "d": a.d, "m": a.m, "mm_s": mm_t, "assign_s": as_t,
           "mm_gflops": flops / mm_t / 1e9, "assign_gflops": flops / as_t / 1e9,
           "assign_samples_per_s": a.m / as_t, "ratio_assign_vs_mm": mm_t / as_t,
           "precision": a.precision, "tile": kernels.tile_plan(a.m, a.n, 1, dev, torch.float32),
           "load": os.getloadavg()}
    for name in timers:
        if name != "assign":
            rec[f"{name}_s"] = med[name]
            rec[f"ratio_{name}_vs_mm"] = mm_t / med[name]
    if a.keops:
        try:
            kernels.argmax_scores(x[:256], y, h, "keops")  # compiles the formula on first use
            _sync(dev)
            t = time.perf_counter()
            kernels.argmax_scores(x, y, h, "keops")
            _sync(dev)
            rec["keops_s"] = time.perf_counter() - t
            rec["ratio_keops_vs_mm"] = mm_t / rec["keops_s"]
        except Exception as e:  # pragma: no cover
            rec["keops_error"] = str(e)[:200]
    emit(rec, a.out)


def bench_memory(a):
    g = torch.Generator().manual_seed(0)
    y = torch.rand(a.n, a.d, generator=g)
    ot = SemiDiscreteOT(y, merge_duplicates=False)
    x = ot.sample_source(a.m, g)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    t = time.perf_counter()
    idx = ot.assign(x)
    dt = time.perf_counter() - t
    v, i = ot.topk(x[:256], 10)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    emit({"bench": "memory", "n": a.n, "d": a.d, "m": a.m, "targets_mb": y.numel() * 4 / 2**20,
          "peak_beyond_setup_mb": (peak - base) / 1024, "peak_rss_mb": peak / 1024, "assign_s": dt,
          "assign_samples_per_s": a.m / dt, "idx_ok": bool(idx.max() < a.n)}, a.out)


def first_time(history, key, thr):
    for r in history:
        if r[key] <= thr:
            return r["time"]
    return None


def bench_solve(a):
    if a.problem == "gmm":
        n, d = a.n or 2000, a.d or 16
        y, name = gmm(n, d, 10, 0), f"gmm N={n} d={d}"
    else:
        n, d = a.n or 10000, a.d or 16
        y, name = mnist_codes(n, d), f"mnist-codes N={n} d={d}"
    if a.device != "cpu" or a.precision != "highest":
        name += f" ({a.device}, {a.precision})"
    y = y.to(a.device)
    times = [float(t) for t in a.eval_times.split(",")]
    for method in a.methods.split(","):
        ot = SemiDiscreteOT(y, seed=a.seed, precision=a.precision)
        options = {"grad_tol": 0.0} if method == "aeot" else None  # run the full budget
        t0 = time.time()
        rep = ot.fit(method=method, max_steps=10**7, time_limit=a.budget, eval_times=times,
                     eval_samples=a.eval_samples, progress=False, options=options)
        hist = [{k: v for k, v in r.items()} for r in rep.history]
        res = {"bench": "solve", "problem": name, "method": method, "budget_s": a.budget,
               "steps": rep.steps, "samples": rep.samples, "batch": rep.batch_size,
               "solver_s": rep.wall_time, "eval_s": rep.eval_time, "total_s": time.time() - t0,
               "eval_samples": a.eval_samples, "floor": hist[-1]["noise_floor"],
               "final": {k: hist[-1][k] for k in ("mean_rel", "mean_rel_corrected", "rms_rel_corrected",
                                                  "max_rel", "empty_cells")},
               "history": [{k: r[k] for k in ("step", "time", "mean_rel", "mean_rel_corrected",
                                              "rms_rel_corrected", "max_rel", "empty_cells")} for r in hist]}
        for thr in (0.05, 0.02):
            res[f"t_raw_{thr}"] = first_time(hist, "mean_rel", thr)
            res[f"t_corr_{thr}"] = first_time(hist, "mean_rel_corrected", thr)
        emit(res, a.out)


def plot(a):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(line) for line in open(a.out)]
    recs = [r for r in recs if r.get("bench") == "solve"]
    latest = {}
    for r in recs:
        latest[(r["problem"], r["method"], r["batch"])] = r  # every batch size tried is drawn
    problems = sorted({k[0] for k in latest})
    fig, axes = plt.subplots(1, len(problems), figsize=(6 * len(problems), 4.2), squeeze=False)
    for ax, prob in zip(axes[0], problems):
        for (p, m, b), r in sorted(latest.items()):
            if p != prob:
                continue
            t = [h["time"] for h in r["history"]]
            ln, = ax.plot(t, [h["mean_rel"] for h in r["history"]], "o-", label=f"{m} (M={b}): raw")
            ax.plot(t, [max(h["mean_rel_corrected"], 1e-3) for h in r["history"]], "s--", color=ln.get_color(),
                    label=f"{m} (M={b}): noise-corrected")
        # One dotted line per evaluation size used on this problem (runs may differ).
        floors = {r["eval_samples"]: r["floor"] for (p, _, _), r in latest.items() if p == prob}
        for ls, (ns, floor) in zip(itertools.cycle((":", "-.")), sorted(floors.items())):
            ax.axhline(floor, color="gray", lw=0.8, ls=ls,
                       label=f"MC floor of a {ns:.2g}-sample eval ({floor:.3f})")
        for thr in (0.05, 0.02):
            ax.axhline(thr, color="k", lw=0.5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("solver wall time [s] (2-core CPU, evaluation excluded)")
        ax.set_ylabel("held-out mean relative cell error")
        ax.set_title(prob)
        ax.legend(fontsize=7)
    fig.tight_layout()
    dst = ROOT / "docs" / "img" / "sdot_error_vs_time.png"
    dst.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dst, dpi=110)
    print(dst)


# ------------------------------------------------------------------------------------------------
# compare: ours against POT's semi-discrete solver, one invocation per problem (issue 11)
# ------------------------------------------------------------------------------------------------
THRESHOLDS = (0.10, 0.05, 0.02)
METRIC_KEYS = ("mean_rel", "mean_rel_corrected", "max_rel", "empty_cells", "noise_floor")
PEER_METHODS = ("default-tol", "default", "exact2d", "aeot", "pot")


def default_methods(prob) -> list[str]:
    """Every method of PEER_METHODS that applies to ``prob`` (exact2d: 2-D only)."""
    return [m for m in PEER_METHODS if m != "exact2d" or prob.d == 2]


# Full-run settings per problem (each one a command-line option of the same name overrides);
# --quick replaces them with QUICK_PROBLEMS. budget: seconds of solver time per method;
# eval_times: solver seconds of the held-out evaluations; eval_samples: Monte Carlo samples per
# held-out evaluation (None: exact areas, 2-D only); tol: the user's fit(tol); pot_*: the POT
# settings tried (batch sizes, lr0 as multiples of POT's default sqrt(N M)), seconds per tuning
# run, seconds per backend speed probe.
_POT_GRID = dict(pot_batches="32,256,1024", pot_lr_scales="0.3,1,3", pot_probe_s=0.4)
PEER_PROBLEMS = {
    "8gaussians": dict(n=1000, d=2, low=0.0, high=1.0, exact=True, budget=60.0, tol=0.01,
                       eval_times=(1, 2, 5, 10, 20, 30, 45, 60), eval_samples=None, pot_tune_budget=6.0,
                       **_POT_GRID),
    "gmm": dict(n=2000, d=16, low=0.0, high=1.0, exact=False, budget=60.0, tol=0.02,
                eval_times=(2, 5, 10, 20, 40, 60), eval_samples=1 << 22, pot_tune_budget=4.0, **_POT_GRID),
    "mnist": dict(n=10000, d=16, low=-1.0, high=1.0, exact=False, budget=180.0, tol=0.02,
                  eval_times=(10, 20, 30, 40, 60, 90, 120, 180), eval_samples=1 << 22, pot_tune_budget=8.0,
                  **{**_POT_GRID, "pot_lr_scales": "1,3"}),
}
_POT_QUICK = dict(pot_batches="32,256", pot_lr_scales="1", pot_probe_s=0.02)
QUICK_PROBLEMS = {
    "8gaussians": dict(n=150, budget=0.3, tol=0.05, tol_wall_cap=1.5, eval_times=(0.1, 0.2, 0.3),
                       pot_tune_budget=0.1, **_POT_QUICK),
    "gmm": dict(n=200, d=4, budget=0.3, tol=0.1, tol_wall_cap=1.0, eval_times=(0.1, 0.2, 0.3),
                eval_samples=1 << 15, pot_tune_budget=0.1, **_POT_QUICK),
    "mnist": dict(n=1000, budget=2.0, tol=0.1, tol_wall_cap=4.0, eval_times=(0.5, 1.0, 2.0),
                  eval_samples=1 << 16, pot_tune_budget=0.5, **_POT_QUICK),
}


class PeerProblem:
    """One benchmark problem: uniform source on [low, high]^d, uniform weights on ``targets``.

    Parameters
    ----------
    name : {"8gaussians", "gmm", "mnist"}
        (a) 1,000 2-D points of toy2d's 8 Gaussians mapped from [-1, 1]^2 into [0, 1]^2 (blobs
        inside [0.1, 0.9]^2); (b) :func:`gmm`, 10 components; (c) :func:`mnist_codes` mapped by
        ``2 c - 1`` into [-1, 1]^d, the box AE-OT uses.
    n, d : int
        Number of targets and dimension (``d`` is fixed to 2 for 8gaussians).
    seed : int
        Seed of the point set.
    shift : float
        Translate the box and the targets by ``shift`` in every coordinate (a moved box: the cells
        are the same, so the errors should be too).
    """

    def __init__(self, name: str, n: int, d: int, seed: int = 0, shift: float = 0.0):
        cfg = PEER_PROBLEMS[name]
        if name == "8gaussians":
            from ae_ot.commands.toy2d import point_set

            y = (point_set("8gaussians", n, seed)[0] + 1) / 2
        elif name == "gmm":
            y = gmm(n, d, 10, seed)
        else:
            if n > 10000:
                raise ValueError(f"mnist has at most 10,000 cached codes here, asked for n={n}")
            y = 2 * mnist_codes(10000, d, seed)[:n] - 1
        self.name, self.exact = name, bool(cfg["exact"])
        self.targets = (y + shift).float().contiguous()
        self.low, self.high = cfg["low"] + shift, cfg["high"] + shift
        self.n, self.d = self.targets.shape
        box = f"[{self.low:g}, {self.high:g}]^{self.d}"
        self.label = f"{name} N={self.n} d={self.d} box {box}"


class HeldOut:
    """The one held-out evaluation every method of a ``compare`` run is scored with.

    Exact polygon areas in 2-D (noise floor 0), else :meth:`SemiDiscreteOT.errors` with
    ``num_samples`` i.i.d. samples of the fixed stream ``seed``: the same samples for every method.

    Parameters
    ----------
    problem : PeerProblem
    num_samples : int or None
        Monte Carlo samples per evaluation; None (exact areas) is allowed only in 2-D.
    seed : int
        Seed of the evaluation samples.
    """

    def __init__(self, problem: PeerProblem, num_samples: int | None, seed: int):
        self.problem, self.seed = problem, seed
        self.exact = num_samples is None
        if self.exact and not problem.exact:
            raise ValueError(f"{problem.name}: exact areas exist only in 2-D; give --eval-samples")
        self.num_samples = num_samples
        self.ot = SemiDiscreteOT(problem.targets, low=problem.low, high=problem.high, seed=seed)
        if tuple(self.ot.targets.shape) != tuple(problem.targets.shape):
            raise ValueError(f"{problem.name}: the targets contain duplicates ({problem.n} rows, "
                             f"{self.ot.targets.shape[0]} after merging); the benchmark needs distinct targets")

    def __call__(self, heights, num_samples: int | None = None) -> dict:
        """Errors of ``heights`` (tensor or array [N], our convention) as a dict of METRIC_KEYS."""
        h = heights if isinstance(heights, torch.Tensor) else torch.as_tensor(heights)
        h = h.detach().double().cpu()
        t0 = time.perf_counter()
        if not torch.isfinite(h).all():
            return {"mean_rel": None, "mean_rel_corrected": None, "max_rel": None, "empty_cells": None,
                    "noise_floor": None, "nonfinite_heights": int((~torch.isfinite(h)).sum()), "eval_s": 0.0}
        self.ot.heights = h
        if self.exact:
            e = self.ot.errors(exact=True)
            out = {k: e[k] for k in METRIC_KEYS}
            out["eval"] = "exact areas"
        else:
            e = self.ot.errors(num_samples or self.num_samples, seed=self.seed)
            out = {k: e[k] for k in METRIC_KEYS}
            out["eval"] = f"{num_samples or self.num_samples} i.i.d. samples, seed {self.seed}"
        out["eval_s"] = time.perf_counter() - t0
        return out


class PeakRSS:
    """Peak resident memory of the process inside a ``with`` block, above its level at entry.

    A thread reads /proc/self/statm every 5 ms (torch's CPU allocations are invisible to
    tracemalloc, numpy's are not, so RSS treats both alike). Before the block, ``gc.collect`` and
    glibc's ``malloc_trim(0)`` hand freed memory back to the OS, so an earlier method's freed
    blocks do not hide this one's. Without /proc, ``ru_maxrss`` (the process high-water mark,
    blind to peaks below an earlier one) is used instead; ``how`` says which.
    """

    full_gc = True  # a full collection costs ~0.3 s here; --quick turns it off

    def __init__(self):
        import threading

        self._stop = threading.Event()
        self._thread = None
        self.base = self.peak = 0
        self.how = "rss"

    @staticmethod
    def _rss() -> int | None:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    def _watch(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss() or 0)

    def __enter__(self):
        import ctypes
        import gc
        import threading

        gc.collect(2 if self.full_gc else 0)
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        rss = self._rss()
        if rss is None:
            self.how = "ru_maxrss"
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        else:
            self.how = "sampled /proc/self/statm RSS (5 ms), above the level at start"
            self.base = self.peak = rss
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._rss() or 0)
        else:
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return False

    @property
    def extra_mb(self) -> float:
        return max(self.peak - self.base, 0) / 2**20


def _clean(v):
    """JSON-safe copy: NaN/inf -> None, tensors/numpy scalars -> Python numbers."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, torch.Tensor):
        v = v.item() if v.numel() == 1 else v.tolist()
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            v = v.item()
        except (TypeError, ValueError):
            pass
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def time_to(history, thr, key="mean_rel_corrected", time_key="time"):
    """First ``time_key`` in ``history`` at which ``key`` <= thr (None if never)."""
    for r in history:
        v = r.get(key)
        if v is not None and v <= thr:
            return r[time_key]
    return None


def _finish(rec: dict, thresholds) -> dict:
    """Adds the times to each threshold and the final errors from ``rec['history']``.

    Screening evaluations of ``fit(tol)`` (few samples, a noise-corrected error that runs low)
    are left out of the times to a threshold.
    """
    tk = rec["time_axis"]
    hist = [r for r in rec["history"] if r.get("kind") != "screen"]
    rec["time_to"] = {f"{t:g}": time_to(hist, t, "mean_rel_corrected", tk) for t in thresholds}
    rec["time_to_raw"] = {f"{t:g}": time_to(hist, t, "mean_rel", tk) for t in thresholds}
    rec.setdefault("final", {k: hist[-1].get(k) for k in METRIC_KEYS} if hist else {})
    return rec


# ---- ours ----------------------------------------------------------------------------------------
class _WallCap(Exception):
    pass


def run_ours_tol(prob: PeerProblem, ev: HeldOut, a) -> dict:
    """The user's call ``SemiDiscreteOT(...).fit(tol=a.tol)``, timed in wall seconds.

    Nothing else is passed (default method -- "auto" picks exact2d in 2-D -- unless
    ``a.tol_method`` names one; default evaluation size and schedule; ``progress=False``), except a
    callback that aborts the call once its wall time passes ``a.tol_wall_cap`` seconds. The curve
    is the call's own held-out evaluations against wall time (their cost included); the final
    error is the common evaluation ``ev`` of the returned heights, or, after an abort, the call's
    last in-fit evaluation.
    """
    ot = SemiDiscreteOT(prob.targets, low=prob.low, high=prob.high, seed=a.seed)
    t0 = time.perf_counter()

    def cap(_rec):
        if time.perf_counter() - t0 > a.tol_wall_cap:
            raise _WallCap

    aborted, err = False, None
    with PeakRSS() as mem, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            extra = {"method": a.tol_method} if a.tol_method else {}
            rep = ot.fit(tol=a.tol, progress=False, callback=cap, **extra)
        except _WallCap:
            rep, aborted = ot.report, True
        except Exception as e:  # a failing call is a result, not the end of the benchmark
            rep, err = ot.report, f"{type(e).__name__}: {e}"
    wall = time.perf_counter() - t0
    hist = [{"step": r["step"], "time": r["time"], "wall": r["wall"], "kind": r.get("kind"),
             **{k: r.get(k) for k in METRIC_KEYS}} for r in (rep.history if rep is not None else [])]
    method = getattr(rep, "method", "?") if rep is not None else "?"
    rec = {"label": f"ours fit(tol={a.tol:g}) [{method}]", "method": method, "kind": "tol",
           "settings": {"tol": a.tol, "wall_cap_s": a.tol_wall_cap, "method_arg": a.tol_method or "(not given)"},
           "time_axis": "wall",
           "history": hist, "wall_s": wall, "solver_s": rep.wall_time if rep else None,
           "eval_s": rep.eval_time if rep else None, "steps": rep.steps if rep else 0,
           "converged": bool(rep and rep.converged) and not aborted,
           "stop_reason": "wall_cap (benchmark abort)" if aborted else (rep.stop_reason if rep else None),
           "message": getattr(rep, "message", None), "warnings": sorted({str(w.message)[:300] for w in caught}),
           "peak_mem_mb": mem.extra_mb, "mem_how": mem.how + "; includes the call's held-out evaluations",
           "curve": "the call's own held-out evaluations (its default size and schedule) vs its wall time"}
    if err:
        rec["error"] = err
    if aborted or err:
        rec["final"] = {k: hist[-1].get(k) for k in METRIC_KEYS} if hist else {}
        rec["final_source"] = "last in-fit evaluation (the call did not return heights)"
    else:
        rec["final"] = {k: v for k, v in ev(ot.heights).items() if k in METRIC_KEYS or k == "nonfinite_heights"}
        rec["final_source"] = "common held-out evaluation of the returned heights"
    return rec


def run_ours_timed(prob: PeerProblem, ev: HeldOut, method: str, times, a) -> dict:
    """Our ``method`` for ``a.budget`` seconds of solver time, with held-out errors at ``times``.

    One ``fit(method, time_limit=budget, eval_times=times, eval_samples=M)`` (``exact_eval=True``
    in 2-D): its in-fit evaluations are exact areas in 2-D, else :meth:`SemiDiscreteOT.errors`
    with M fresh i.i.d. samples (the same size as ``ev``, other samples). The time axis is solver
    seconds (evaluation excluded).
    """
    opts = dict(json.loads(a.aeot_options)) if method == "aeot" else {}
    exact = {"exact_eval": True} if ev.exact else {}
    ot = SemiDiscreteOT(prob.targets, low=prob.low, high=prob.high, seed=a.seed)
    label = {"default": "ours default", "aeot": "ours aeot (pyOMT)"}.get(method, f"ours {method}")
    rec = {"label": f"{label}: fit(time_limit={a.budget:g})", "method": method, "kind": "timed",
           "settings": {"time_limit": a.budget, **opts, **exact}, "time_axis": "time",
           "curve": "fit(eval_times=...): held-out errors at those solver times"}
    t0 = time.perf_counter()
    err, rep = None, None
    with PeakRSS() as mem, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rep = ot.fit(method=method, time_limit=a.budget, max_steps=10**9, eval_times=list(times),
                         eval_samples=ev.num_samples, progress=False, options=opts or None, **exact)
        except Exception as e:  # a failing method is a result, not the end of the benchmark
            err, rep = f"{type(e).__name__}: {e}", ot.report
    rec["peak_mem_mb"] = mem.extra_mb
    rec["mem_how"] = mem.how + ("; includes the in-fit held-out evaluations"
                                + ("" if ev.exact else f" ({ev.num_samples} samples each)"))
    hist = [{"step": r["step"], "time": r["time"], "wall": r["wall"], **{k: r.get(k) for k in METRIC_KEYS}}
            for r in (rep.history if rep is not None else [])]
    rec.update(history=hist, wall_s=time.perf_counter() - t0, steps=rep.steps if rep else 0,
               solver_s=rep.wall_time if rep else None, stop_reason=rep.stop_reason if rep else None,
               message=getattr(rep, "message", None), final_source="last in-fit evaluation (at the time limit)",
               warnings=sorted({str(w.message)[:300] for w in caught}))
    if err:
        rec["error"] = err
    return rec


# ---- POT -----------------------------------------------------------------------------------------
class _StopPOT(Exception):
    pass


def pot_heights(g, targets) -> torch.Tensor:
    """Our heights from POT's semi-dual potential g (cost |x - y|^2): h = (g - |y|^2) / 2.

    POT assigns x to argmax_j g_j - |x - y_j|^2 = argmax_j 2 <x, y_j> + g_j - |y_j|^2 (|x|^2 is
    common to all j), i.e. to argmax_j <x, y_j> + h_j: our cell, up to the factor 2.
    """
    y = torch.as_tensor(targets).double().cpu()
    g = torch.as_tensor(g.detach().cpu().numpy() if isinstance(g, torch.Tensor) else g).double()
    return (g - (y ** 2).sum(1)) / 2


POT_BACKENDS = {"numpy": "numpy float64", "torch32": "torch float32", "torch64": "torch float64"}


def _pot_inputs(prob: PeerProblem, backend: str, seed: int):
    """POT's targets in ``backend`` and a seeded uniform sampler on the problem's box."""
    import numpy as np

    lo, hi = float(prob.low), float(prob.high)
    d = prob.d
    if backend == "numpy":
        y = prob.targets.double().numpy()
        rng = np.random.default_rng(seed)
        return y, lambda b: lo + (hi - lo) * rng.random((b, d))
    dt = torch.float32 if backend == "torch32" else torch.float64
    gen = torch.Generator().manual_seed(seed)
    return prob.targets.to(dt), lambda b: lo + (hi - lo) * torch.rand(b, d, generator=gen, dtype=dt)


def run_pot(prob: PeerProblem, batch: int, lr0: float, backend: str, seed: int, budget: float | None = None,
            snap_times=(), snap_iters=(), max_iter: int = 10**9, **pot_kwargs):
    """``ot.semidiscrete.solve_semidiscrete`` with snapshots of its averaged iterate.

    POT's API has no callback and returns only the final potential, so the snapshots come from
    the source sampler, which POT calls at the start of every iteration t: it reads the
    caller's (``solve_semidiscrete``'s) local ``g_avg``, the Polyak average of iterations
    1..t-1 -- exactly what ``solve_semidiscrete(max_iter=t-1)`` would return with the same
    random stream (tests/test_bench_sdot.py checks this). The copy's cost is taken off the clock.
    The run stops (by an exception raised from the sampler) once its time reaches ``budget``.

    Returns
    -------
    snaps : list of (seconds, iterations, potential g as a CPU tensor)
    """
    from ot.semidiscrete import solve_semidiscrete

    y, draw = _pot_inputs(prob, backend, seed)
    snaps, paused = [], 0.0
    pending_t, pending_i = sorted(float(t) for t in snap_times), set(int(i) for i in snap_iters)
    t0 = time.perf_counter()

    def loop_locals(frame) -> dict:
        loc = frame.f_locals
        if frame.f_code.co_name != "solve_semidiscrete" or "g_avg" not in loc or "t" not in loc:
            raise RuntimeError("POT's solve_semidiscrete no longer keeps `g_avg` and `t` as loop locals "
                               "(the snapshots were written for POT 0.9.7); use --pot-curve restarts")
        return loc

    def sampler(b):
        nonlocal paused
        now = time.perf_counter()
        el = now - t0 - paused
        over = budget is not None and el >= budget
        hit = over or (bool(pending_t) and el >= pending_t[0])
        loc = None
        if pending_i:  # iteration-triggered snapshots (tests): the loop counter is needed every time
            loc = loop_locals(sys._getframe(1))
            hit = hit or (loc["t"] - 1) in pending_i
        if hit:
            loc = loc or loop_locals(sys._getframe(1))
            g = loc["g_avg"] if loc["g_avg"] is not None else loc["g"]  # g_avg: Polyak average of 1..t-1
            it = loc["t"] - 1
            if it >= 1:
                g = g.detach().clone().cpu() if isinstance(g, torch.Tensor) else torch.from_numpy(g.copy())
                snaps.append((el, it, g))
            while pending_t and el >= pending_t[0]:
                pending_t.pop(0)
            if over:
                raise _StopPOT
        if hit or loc is not None:
            paused += time.perf_counter() - now
        return draw(b)

    try:
        out = solve_semidiscrete(y, sampler, batch_size=batch, lr0=lr0, max_iter=max_iter, **pot_kwargs)
        el = time.perf_counter() - t0 - paused
        g = out.detach().clone().cpu() if isinstance(out, torch.Tensor) else torch.from_numpy(out.copy())
        snaps.append((el, max_iter, g))
    except _StopPOT:
        pass
    return snaps


def pot_iter_time(prob: PeerProblem, batch: int, backend: str, seed: int, probe_s: float) -> float:
    """Seconds per POT iteration: one run of k iterations (about ``probe_s`` seconds) after a
    2-iteration run that sets k."""
    from ot.semidiscrete import solve_semidiscrete

    y, draw = _pot_inputs(prob, backend, seed)
    t = time.perf_counter()
    solve_semidiscrete(y, draw, batch_size=batch, max_iter=2)
    per = (time.perf_counter() - t) / 2
    k = int(min(200, max(2, probe_s / max(per, 1e-6))))
    t = time.perf_counter()
    solve_semidiscrete(y, draw, batch_size=batch, max_iter=k)
    return (time.perf_counter() - t) / k


def run_pot_peer(prob: PeerProblem, ev: HeldOut, times, a, emit_rec) -> list[dict]:
    """POT: backend probe, a short tuning run per (batch, lr0 scale), then the best one's curve."""
    import ot as pot

    out = []
    batches = [int(b) for b in a.pot_batches.split(",")]
    scales = [float(s) for s in a.pot_lr_scales.split(",")]
    backends = list(POT_BACKENDS) if a.pot_backend == "auto" else [a.pot_backend]
    n = prob.n
    chosen, probe = {}, {}
    for b in batches:  # same iterates on every backend (up to rounding): pick the fastest
        if len(backends) == 1:
            chosen[b] = backends[0]
            continue
        probe[b] = {be: pot_iter_time(prob, b, be, a.seed, a.pot_probe_s) for be in backends}
        chosen[b] = min(probe[b], key=probe[b].get)
    configs = [(b, s) for b in batches for s in scales]
    tune_samples = None if ev.exact else max(ev.num_samples // 4, 1 << 14)
    best = configs[0]
    if len(configs) > 1:
        scores = {}
        for b, s in configs:
            lr0 = s * math.sqrt(n * b)
            with PeakRSS() as mem:
                snaps = run_pot(prob, b, lr0, chosen[b], a.seed, budget=a.pot_tune_budget)
            t, it, g = snaps[-1] if snaps else (None, 0, None)
            e = ev(pot_heights(g, prob.targets), tune_samples) if g is not None else {}
            key = e.get("mean_rel_corrected")
            scores[(b, s)] = (math.inf if key is None else key, e.get("mean_rel") or math.inf)
            rec = {"label": f"POT tune M={b} lr0={s:g}x", "method": "pot", "kind": "pot-tune",
                   "settings": {"batch_size": b, "lr0": lr0, "lr0_scale": s, "backend": POT_BACKENDS[chosen[b]]},
                   "time_axis": "time", "budget_s": a.pot_tune_budget, "iterations": it,
                   "history": ([{"time": t, "iterations": it, **{k: e.get(k) for k in METRIC_KEYS}}]
                               if g is not None else []),
                   "tune_eval": e.get("eval"), "peak_mem_mb": mem.extra_mb, "mem_how": mem.how}
            out.append(emit_rec(_finish(rec, a.thresholds)))
        best = min(scores, key=scores.get)
    b, s = best
    lr0 = s * math.sqrt(n * b)
    settings = {"batch_size": b, "lr0": lr0, "lr0_scale": s, "backend": POT_BACKENDS[chosen[b]],
                "other": "POT defaults: reg=0, DRAG decreasing_reg=True (eps0=0.1, exponent 0.5), "
                         "lr_exponent=2/3, Polyak average, zero init"}
    if probe:
        settings["backend_probe_s_per_iter"] = {str(k): v for k, v in probe.items()}
    rec = {"label": f"POT DRAG (M={b}, lr0={s:g}x sqrt(NM))", "method": "pot", "kind": "pot",
           "settings": settings, "time_axis": "time", "budget_s": a.budget, "curve": a.pot_curve,
           "chosen_by": (f"lowest held-out error after {a.pot_tune_budget:g} s among "
                         f"{len(configs)} (batch, lr0) settings") if len(configs) > 1 else "only setting given"}
    t0 = time.perf_counter()
    if a.pot_curve == "hook":
        with PeakRSS() as mem:
            snaps = run_pot(prob, b, lr0, chosen[b], a.seed, budget=a.budget, snap_times=times)
        rec["curve"] = "one run; Polyak iterate read at each time through the sampler hook (see run_pot)"
    else:
        per = pot_iter_time(prob, b, chosen[b], a.seed, a.pot_probe_s)
        snaps = []
        with PeakRSS() as mem:
            for t in sorted(set(float(x) for x in times if x < a.budget) | {float(a.budget)}):
                k = max(1, round(t / per))
                s_ = run_pot(prob, b, lr0, chosen[b], a.seed, max_iter=k)
                snaps.append(s_[-1])
        rec["curve"] = (f"independent runs with max_iter = t / {per:.3g} s (measured s/iteration); "
                        "time = each run's own")
    rec["peak_mem_mb"], rec["mem_how"] = mem.extra_mb, mem.how + "; the solve only"
    rec["history"] = [{"time": t, "iterations": it,
                       **{k: v for k, v in ev(pot_heights(g, prob.targets)).items() if k != "eval"}}
                      for t, it, g in snaps]
    rec["wall_s"] = time.perf_counter() - t0
    rec["iterations"] = snaps[-1][1] if snaps else 0
    rec["pot_version"] = pot.__version__
    out.append(rec)
    return out


def check_pot_convention(prob: PeerProblem, ev: HeldOut, seed: int, m: int | None = None) -> float:
    """Fraction of samples that POT (hard assignment, reg=0) and ``assign`` put in the same cell
    for a random potential g converted by :func:`pot_heights` (1.0 when the conversion is right)."""
    from ot.semidiscrete import semidiscrete_atom_weights

    m = m or int(min(4096, max(256, (1 << 24) // prob.n)))  # POT returns a dense [m, N] one-hot
    g = torch.Generator().manual_seed(seed)
    y = ev.ot.targets.double()
    diam = float((torch.as_tensor(prob.high) - torch.as_tensor(prob.low)).abs().max()) ** 2 * prob.d
    pot_g = 0.05 * diam * torch.randn(prob.n, generator=g, dtype=torch.float64)
    x = ev.ot.sample_source(m, g)
    w = semidiscrete_atom_weights(y.numpy(), x.double().numpy(), pot_g.numpy(), reg=0.0)
    ev.ot.heights = pot_heights(pot_g, y)
    return float((torch.from_numpy(w.argmax(1)) == ev.ot.assign(x).cpu()).double().mean())


# ---- the command ---------------------------------------------------------------------------------
def _problem_settings(name: str, a) -> dict:
    cfg = dict(PEER_PROBLEMS[name])
    if a.quick:
        cfg.update(QUICK_PROBLEMS[name])
    for k in ("n", "d", "budget", "tol", "eval_samples", "pot_tune_budget", "pot_batches", "pot_lr_scales",
              "pot_probe_s"):
        v = getattr(a, k, None)
        if v is not None:
            cfg[k] = v
    if a.eval_times:
        cfg["eval_times"] = tuple(float(t) for t in a.eval_times.split(","))
    if name == "8gaussians":
        cfg["d"] = 2
    return cfg


def compare(a) -> list[dict]:
    """``compare``: every method of ``--methods`` on each problem of ``--problem``, one after the other.

    Writes one JSON line per run (and per POT tuning run) plus a ``peers_summary`` line per
    problem to ``--out``, draws ``<plot-dir>/sdot_peers_<problem>.png`` and prints a table.
    """
    methods = [m.strip() for m in (a.methods or ",".join(PEER_METHODS)).split(",") if m.strip()]
    bad = [m for m in methods if m not in PEER_METHODS]
    if bad:
        raise SystemExit(f"unknown method(s) {bad}; choose from {', '.join(PEER_METHODS)}")
    if "pot" in methods:
        try:
            import ot  # noqa: F401
            from ot.semidiscrete import solve_semidiscrete  # noqa: F401
        except ImportError as e:
            raise SystemExit(f"--methods includes pot but POT is not importable ({e}); install it with "
                             "`pip install -e .[bench]` (pot==0.9.7) or leave pot out of --methods") from e
    run_id = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    PeakRSS.full_gc = not a.quick
    all_recs = []
    cli = a
    for name in [p.strip() for p in cli.problem.split(",")]:
        if name not in PEER_PROBLEMS:
            raise SystemExit(f"unknown problem {name!r}; choose from {', '.join(PEER_PROBLEMS)}")
        cfg = _problem_settings(name, cli)
        a = argparse.Namespace(**vars(cli))  # this problem's settings; the CLI's stay untouched
        for k in ("budget", "tol", "pot_tune_budget", "pot_batches", "pot_lr_scales", "pot_probe_s"):
            setattr(a, k, cfg[k])
        a.tol_wall_cap = a.tol_wall_cap_arg if a.tol_wall_cap_arg is not None else cfg.get("tol_wall_cap", a.budget)
        times = sorted(t for t in cfg["eval_times"] if t <= a.budget)
        prob = PeerProblem(name, cfg["n"], cfg["d"], seed=a.seed, shift=a.box_shift)  # mnist: may train the AE
        t_start = time.perf_counter()
        ev = HeldOut(prob, None if prob.exact else cfg["eval_samples"], seed=a.seed + 1000)
        common = {"bench": "peers", "run": run_id, "problem": name, "problem_label": prob.label,
                  "quick": bool(a.quick), "eval": "exact polygon areas" if ev.exact else
                  f"SemiDiscreteOT.errors, {ev.num_samples} i.i.d. samples",
                  "error_key": "mean_rel (exact)" if ev.exact else "mean_rel_corrected (noise-corrected)",
                  # mean_rel of a perfect solution under this evaluation (uniform weights)
                  "noise_floor": 0.0 if ev.exact else math.sqrt(2 / math.pi * (prob.n - 1) / ev.num_samples)}
        recs = []

        def emit_rec(r):
            r = {**common, **r}
            emit(_clean(r), a.out)
            return r

        plan = methods if cli.methods else default_methods(prob)
        print(f"# {prob.label}: methods {plan}, budget {a.budget:g} s, evaluation {common['eval']}",
              file=sys.stderr, flush=True)
        if "pot" in plan:
            agree = check_pot_convention(prob, ev, a.seed)
            recs.append(emit_rec({"kind": "pot-convention", "label": "POT h = (g - |y|^2)/2 check",
                                  "same_cell_fraction": agree, "history": []}))
            if agree < 0.999:
                raise RuntimeError(f"POT's cells and ours disagree on {1 - agree:.2%} of samples with "
                                   "h = (g - |y|^2)/2: the conversion is wrong for this POT version")
        for m in plan:
            print(f"# {name}: {m} ...", file=sys.stderr, flush=True)
            if m == "exact2d" and prob.d != 2:
                print(f"# {name}: exact2d skipped (2-D only)", file=sys.stderr)
                continue
            if m == "default-tol":
                runs = [run_ours_tol(prob, ev, a)]
            elif m == "pot":
                runs = run_pot_peer(prob, ev, times, a, emit_rec)
            else:
                runs = [run_ours_timed(prob, ev, m, times, a)]
            for r in runs:
                if r.get("kind") == "pot-tune":
                    recs.append(r)  # already written
                    continue
                recs.append(emit_rec(_finish(r, a.thresholds)))
        total = time.perf_counter() - t_start
        rows = [r for r in recs if r.get("kind") in ("tol", "timed", "pot")]
        summary = {"bench": "peers_summary", "run": run_id, "problem": name, "problem_label": prob.label,
                   "total_s": total, "rows": [{"label": r["label"], "time_axis": r["time_axis"],
                                               "time_to": r.get("time_to"), "final": r.get("final"),
                                               "peak_mem_mb": r.get("peak_mem_mb"), "error": r.get("error")}
                                              for r in rows]}
        emit(_clean(summary), a.out)
        print(summary_table(rows, prob, ev, total, a.thresholds), file=sys.stderr, flush=True)
        if a.plot_dir is not None:
            path = plot_peers([_clean(r) for r in rows], prob.label, Path(a.plot_dir) / f"sdot_peers_{name}.png",
                              floor=common["noise_floor"] or None,
                              thresholds=a.thresholds, tune=[_clean(r) for r in recs if r.get("kind") == "pot-tune"])
            print(path, file=sys.stderr)
        all_recs += recs
    return all_recs


def _fmt(v, pct=False):
    if v is None:
        return "-"
    return f"{100 * v:.3g}%" if pct else (f"{v:.1f}" if isinstance(v, float) else str(v))


def summary_table(rows, prob, ev, total, thresholds) -> str:
    """A plain-text table of the runs of one problem."""
    head = (["method", "time axis"] + [f"t<={100 * t:g}%" for t in thresholds]
            + ["final err", "final raw", "empty", "peak MB"])
    how = "exact areas" if ev.exact else f"noise-corrected, {ev.num_samples} samples"
    lines = [f"## {prob.label} ({how}; {total:.0f} s for the whole problem)", " | ".join(head)]
    for r in rows:
        f = r.get("final") or {}
        cells = [r["label"], {"wall": "wall incl. eval", "time": "solver/loop s"}[r["time_axis"]]]
        cells += [_fmt(r["time_to"].get(f"{t:g}")) for t in thresholds]
        cells += [_fmt(f.get("mean_rel_corrected"), True), _fmt(f.get("mean_rel"), True),
                  _fmt(f.get("empty_cells")), _fmt(r.get("peak_mem_mb"))]
        if r.get("error"):
            cells.append(f"FAILED: {r['error'][:80]}")
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def plot_peers(rows, title, path: Path, floor=None, thresholds=THRESHOLDS, tune=()) -> Path:
    """Held-out error against time for every run of one problem (PNG, ~100 KB at 100 dpi)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for r in rows:
        pts = [(h[r["time_axis"]], h["mean_rel_corrected"], h["mean_rel"]) for h in r["history"]
               if h.get("mean_rel_corrected") is not None and h.get(r["time_axis"]) is not None]
        if not pts:
            continue
        t, yc, yr = zip(*pts)
        axis = "wall, evaluations incl." if r["time_axis"] == "wall" else "solver time"
        ln, = ax.plot(t, [max(v, 1e-6) for v in yc], "o-", ms=3.5, label=f"{r['label']} [{axis}]")
        if floor:
            ax.plot(t, yr, ":", color=ln.get_color(), lw=0.9)
    if tune:
        pts = [(h["time"], h["mean_rel_corrected"]) for r in tune for h in r["history"]
               if h.get("mean_rel_corrected") is not None]
        if pts:
            ax.plot(*zip(*pts), "x", color="gray", ms=5,
                    label="POT tuning runs (every batch / lr0 tried, at the tuning budget)")
    for thr in thresholds:
        ax.axhline(thr, color="k", lw=0.5)
        ax.annotate(f"{100 * thr:g}%", (1.0, thr), xycoords=("axes fraction", "data"), fontsize=7,
                    xytext=(2, 0), textcoords="offset points", va="center")
    if floor:
        ax.axhline(floor, color="gray", lw=0.8, ls="--", label=f"MC noise floor ({floor:.3f}); dotted: raw errors")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("seconds (solver or POT loop time; fit(tol): wall incl. its evaluations)")
    ax.set_ylabel("held-out mean relative cell error" + ("" if floor is None else " (noise-corrected)"))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_peers_from_file(a) -> None:
    """``plot-peers``: redraw ``sdot_peers_<problem>.png`` from the ``compare`` records in ``--out``.

    Per problem, the latest record of each run label is drawn, so separate invocations (say
    ``--methods aeot`` run on its own) end up in one figure; each record keeps its ``run`` id.
    """
    recs = [json.loads(line) for line in open(a.out)]
    recs = [r for r in recs if r.get("bench") == "peers"]
    latest = {}
    for r in recs:
        if r.get("kind") in ("tol", "timed", "pot"):
            latest[(r["problem"], r["label"])] = r
    for prob in sorted({p for p, _ in latest}):
        rows = [r for (p, _), r in latest.items() if p == prob]
        pot_runs = {r["run"] for r in rows if r["kind"] == "pot"}
        tune = [r for r in recs if r["problem"] == prob and r.get("kind") == "pot-tune" and r["run"] in pot_runs]
        path = plot_peers(rows, rows[0]["problem_label"], Path(a.plot_dir) / f"sdot_peers_{prob}.png",
                          floor=rows[0].get("noise_floor") or None, thresholds=THRESHOLDS, tune=tune)
        print(path, f"({len(rows)} runs from {len({r['run'] for r in rows})} invocation(s))")

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["kernel", "memory", "solve", "plot", "compare", "plot-peers"])
    p.add_argument("--n", type=int)
    p.add_argument("--d", type=int)
    p.add_argument("--m", type=int)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--keops", action="store_true")
    p.add_argument("--problem", default=None,
                   help="solve: gmm or mnist (default gmm); compare: comma list of "
                        f"{', '.join(PEER_PROBLEMS)} (default 8gaussians)")
    p.add_argument("--methods", default=None,
                   help="solve: default,aeot; compare: comma list of " + ",".join(PEER_METHODS)
                        + " (default: all that apply)")
    p.add_argument("--budget", type=float, help="seconds of solver time per method (solve: 60; compare: "
                   "per problem, see PEER_PROBLEMS)")
    p.add_argument("--eval-times", default=None, help="comma list of solver seconds of the held-out evaluations")
    p.add_argument("--eval-samples", type=int, help="samples per held-out evaluation (solve: 2^21)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--precision", default="highest", choices=["highest", "tf32"],
                   help="matmul precision of the score GEMM (tf32: CUDA only)")
    p.add_argument("--out", type=Path, default=OUT)
    g = p.add_argument_group("compare")
    g.add_argument("--quick", action="store_true", help="seconds-long smoke run: small N, ~1 s budgets")
    g.add_argument("--tol", type=float, help="tol of the user's call fit(tol=...) (per problem by default)")
    g.add_argument("--tol-wall-cap", dest="tol_wall_cap_arg", type=float,
                   help="abort fit(tol) after this many wall seconds (default: the budget)")
    g.add_argument("--tol-method", help="method= for the fit(tol) run (default: not given, as a user calls it)")
    g.add_argument("--thresholds", default="0.1,0.05,0.02", help="errors for the time-to-error columns")
    g.add_argument("--aeot-options", default='{"grad_tol": 0}',
                   help="JSON of extra fit options for method aeot (default: run the whole budget)")
    g.add_argument("--box-shift", type=float, default=0.0, help="translate box and targets (moved-box run)")
    g.add_argument("--pot-batches", help="POT batch sizes tried (default 32,256,1024)")
    g.add_argument("--pot-lr-scales", help="POT lr0 as multiples of its default sqrt(N M) (default 0.3,1,3)")
    g.add_argument("--pot-tune-budget", type=float, help="seconds per POT tuning run (per problem by default)")
    g.add_argument("--pot-backend", default="auto", choices=["auto", *POT_BACKENDS],
                   help="arrays POT runs on; auto: the fastest per batch size in a short probe")
    g.add_argument("--pot-probe-s", type=float, help="seconds per backend speed probe (default 0.4)")
    g.add_argument("--pot-curve", default="hook", choices=["hook", "restarts"],
                   help="hook: one run, iterate read through the sampler; restarts: one run per time")
    g.add_argument("--plot-dir", type=Path, default=ROOT / "docs" / "img",
                   help="where sdot_peers_<problem>.png goes")
    a = p.parse_args()
    if a.what == "kernel":
        a.n, a.d, a.m = a.n or 60000, a.d or 32, a.m or 4096
        bench_kernel(a)
    elif a.what == "memory":
        a.n, a.d, a.m = a.n or 1_000_000, a.d or 64, a.m or 2048
        bench_memory(a)
    elif a.what == "solve":
        a.problem, a.methods = a.problem or "gmm", a.methods or "default,aeot"
        if a.problem not in ("gmm", "mnist"):
            p.error(f"solve: --problem must be gmm or mnist, got {a.problem!r}")
        a.budget = 60.0 if a.budget is None else a.budget
        a.eval_times = a.eval_times or "2,5,10,20,40,60,90,120,180"
        a.eval_samples = a.eval_samples or 1 << 21
        bench_solve(a)
    elif a.what == "compare":
        a.problem = a.problem or "8gaussians"
        a.thresholds = tuple(float(t) for t in a.thresholds.split(","))
        compare(a)
    elif a.what == "plot-peers":
        plot_peers_from_file(a)
    else:
        plot(a)

if __name__ == "__main__":
    main()
