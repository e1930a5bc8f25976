"""Tiled score kernels: exactness, backends (torch vs KeOps) and sharding over torch.distributed."""

import os
import socket
import warnings

import pytest
import torch
import torch.multiprocessing as mp

from ae_ot.checks import UserInputError
from ae_ot.ot import SemiDiscreteOT, kernels
from ae_ot.ot.distributed import sharded_topk
from ae_ot.ot.fused import fused_available, fused_preferred


def _problem(m=2000, n=700, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(m, d, generator=g), torch.rand(n, d, generator=g), 0.1 * torch.randn(n, generator=g)


@pytest.mark.heavy
@pytest.mark.parametrize("tile_bytes", [None, 1 << 15, 1 << 17])
@pytest.mark.parametrize("k", [1, 2, 7])
def test_tiled_topk_is_exact(tile_bytes, k):
    x, y, h = _problem()
    v, i = kernels.topk_scores(x, y, h, k, "torch", tile_bytes=tile_bytes)
    s = x @ y.T + h
    vr, ir = s.topk(k, dim=1)
    assert torch.allclose(v, vr, atol=1e-5)
    assert (i == ir).float().mean() > 0.999  # differences only at float ties
    assert torch.allclose(s.gather(1, i), vr, atol=1e-5)


@pytest.mark.parametrize("cols", [5, 200, 256, 300, 1000, 4096])
@pytest.mark.parametrize("k", [1, 2])
def test_two_stage_tile_reduction_equals_full_reduction(cols, k):
    # The CPU tile reduction takes group maxima first and searches indices only in the best
    # group(s); it must return exactly torch's max / topk, including the lowest index on ties.
    g = torch.Generator().manual_seed(cols)
    s = torch.randn(300, cols, generator=g)
    s[:50] = torch.round(s[:50])  # many exact ties, across and within groups
    s[50, :] = 1.0  # a constant row: every column ties
    v, i = kernels._tile_topk(s, k)
    vr, ir = (s.max(dim=1, keepdim=True) if k == 1 else s.topk(k, dim=1))
    assert torch.equal(v, vr)
    assert torch.equal(s.gather(1, i), vr)  # the indices point at the returned values
    if k == 1:
        assert torch.equal(i, ir)  # lowest index among equal maxima, as torch.max
    else:
        assert (i[:, 0] != i[:, 1]).all()


def test_tile_plan_fits_budget():
    rows, cols = kernels.tile_plan(10**6, 10**6, 1, torch.device("cpu"), torch.float32, tile_bytes=64 << 20)
    assert rows * cols * 4 <= 64 << 20 and cols < 10**6
    rows, cols = kernels.tile_plan(10**6, 2000, 1, torch.device("cpu"), torch.float32, tile_bytes=32 << 20)
    assert cols == 2000 and rows * cols * 4 <= 32 << 20


def test_auto_backend_on_cpu_is_fused_on_avx512_cpus_when_it_builds_else_torch(monkeypatch):
    expected = "fused" if fused_available() and fused_preferred() else "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kernels.KernelFallbackWarning)
        assert kernels.resolve_backend("auto", torch.device("cpu"), 32) == expected
        assert kernels.resolve_backend("auto", torch.device("cpu"), 2) == expected
    # the rule itself, whatever this machine's CPU: 512-bit vectors pick the fused kernel
    monkeypatch.setattr(kernels, "fused_available", lambda: True)
    for flags, chosen in (("fpu avx2 fma avx512f avx512bw", "fused"), ("fpu avx2 fma", "torch")):
        monkeypatch.setattr(kernels, "fused_preferred", lambda flags=flags: "avx512f" in flags.split())
        assert kernels.resolve_backend("auto", torch.device("cpu"), 16) == chosen


def test_auto_fallback_from_the_fused_kernel_warns_once_with_the_reason(monkeypatch):
    why = "no C++ compiler found (set $CXX, or install g++)"
    monkeypatch.setattr(kernels, "fused_available", lambda: False)
    monkeypatch.setattr(kernels, "fused_preferred", lambda: True)
    monkeypatch.setattr(kernels, "fused_build_error", lambda: why)
    monkeypatch.setattr(kernels, "_fallback_warned", False)
    with pytest.warns(kernels.KernelFallbackWarning) as record:
        assert kernels.resolve_backend("auto", torch.device("cpu"), 16) == "torch"
    assert len(record) == 1 and why in str(record[0].message)
    assert issubclass(kernels.KernelFallbackWarning, UserWarning)
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        assert kernels.resolve_backend("auto", torch.device("cpu"), 16) == "torch"
        assert kernels.kernel_name("auto", torch.device("cpu"), torch.float32, 2, 16) == "torch"
        assert kernels.resolve_backend("torch", torch.device("cpu"), 16) == "torch"
    assert not again  # once per process


def test_kernel_name_says_which_kernel_a_call_runs():
    cpu = torch.device("cpu")
    fused = "fused" if fused_available() and fused_preferred() else "torch"
    assert kernels.kernel_name("torch", cpu, torch.float32, 1) == "torch"
    assert kernels.kernel_name("fused", cpu, torch.float32, 1) == "fused"
    assert kernels.kernel_name("fused", cpu, torch.float32, 2) == "fused"
    assert kernels.kernel_name("fused", cpu, torch.float32, 3) == "torch"  # k > 2
    assert kernels.kernel_name("fused", cpu, torch.float64, 2) == "torch"  # not float32
    assert kernels.kernel_name("keops", cpu, torch.float32, 1) == "keops"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kernels.KernelFallbackWarning)
        assert kernels.kernel_name("auto", cpu, torch.float32, 2, 16) == fused
        assert kernels.kernel_name("auto", cpu, torch.float64, 2, 16) == "torch"
    with pytest.raises(UserInputError, match="backend must be one of"):
        kernels.kernel_name("gpu", cpu, torch.float32, 1)


def test_fit_report_names_the_kernel_that_scored_the_steps():
    g = torch.Generator().manual_seed(0)
    y = torch.rand(30, 3, generator=g)
    fused = "fused" if fused_available() and fused_preferred() else "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fallback and not-converged warnings: 2 steps prove nothing
        cases = [(y, "torch", "default", "torch"), (y, "auto", "default", fused), (y, "auto", "aeot", fused),
                 (y.double(), "auto", "default", "torch"), (y[:, :2], "torch", "exact2d", "none")]
        for targets, backend, method, kernel in cases:
            ot = SemiDiscreteOT(targets, backend=backend, seed=0)
            report = ot.fit(method=method, max_steps=2, batch_size=1024, tol=None, progress=False, eval_samples=1 << 12)
            assert report.kernel == kernel, (backend, method, targets.dtype)
            assert report.to_dict()["kernel"] == kernel


def _keops_or_skip():
    if not kernels.keops_available():
        pytest.skip("pykeops not importable")


@pytest.mark.heavy
def test_keops_matches_torch_except_ties():
    _keops_or_skip()
    x, y, h = _problem(1000, 300, 16, 1)
    try:
        vk, ik = kernels.topk_scores(x, y, h, 1, "keops")
    except Exception as e:  # compilation problems are an environment issue, not a wrong answer
        pytest.skip(f"KeOps failed to compile/run: {e}")
    vt, it = kernels.topk_scores(x, y, h, 1, "torch")
    same = ik[:, 0] == it[:, 0]
    # Where indices differ, the two scores must tie to float precision.
    s = x @ y.T + h
    diff = ~same
    assert same.float().mean() > 0.999
    if diff.any():
        gap = (s[diff, ik[diff, 0]] - s[diff, it[diff, 0]]).abs()
        assert gap.max() < 1e-5
    assert torch.allclose(vk[:, 0], vt[:, 0], atol=1e-5)
    ot_k = SemiDiscreteOT(y, backend="keops")
    ot_t = SemiDiscreteOT(y, backend="torch")
    assert (ot_k.assign(x) == ot_t.assign(x)).float().mean() > 0.999


# --------------------------------------------------------------------------------------------
# sharding over torch.distributed (gloo, 2 processes on CPU)
# --------------------------------------------------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        x, y, h = _problem(1500, 301, 6, 3)  # odd N: uneven shards (151 + 150)
        w = torch.rand(301, generator=torch.Generator().manual_seed(9)) + 0.5
        w = w / w.sum()
        bounds = [0, 151, 301]
        sl = slice(bounds[rank], bounds[rank + 1])
        # kernel level
        v1, i1 = sharded_topk(x, y[sl], h[sl], bounds[rank], 1)
        v4, i4 = sharded_topk(x, y[sl], h[sl], bounds[rank], 4)
        # solver level: same problem, targets sharded
        ot = SemiDiscreteOT(y[sl], w[sl], distributed=True, seed=4)
        assert ot.num_targets == 301
        rep = ot.fit(max_steps=8, batch_size=2048, progress=False)
        hs = [torch.empty(151, dtype=torch.float64), torch.empty(151, dtype=torch.float64)]
        hl = torch.zeros(151, dtype=torch.float64)
        hl[: ot.heights.numel()] = ot.heights.double()
        dist.all_gather(hs, hl)
        heights = torch.cat([hs[0][:151], hs[1][:150]])
        err = ot.errors(1 << 14, seed=2)
        assign = ot.assign(x)
        if rank == 0:
            torch.save({"v1": v1, "i1": i1, "v4": v4, "i4": i4, "heights": heights, "err": err,
                        "assign": assign, "steps": rep.steps}, os.path.join(out_dir, "res.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.cli
def test_sharded_equals_single_process(tmp_path):
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    res = torch.load(tmp_path / "res.pt")
    x, y, h = _problem(1500, 301, 6, 3)
    v1, i1 = kernels.topk_scores(x, y, h, 1)
    v4, i4 = kernels.topk_scores(x, y, h, 4)
    assert torch.equal(res["i1"], i1) and torch.allclose(res["v1"], v1)
    assert torch.equal(res["i4"], i4) and torch.allclose(res["v4"], v4)
    w = torch.rand(301, generator=torch.Generator().manual_seed(9)) + 0.5
    w = w / w.sum()
    ot = SemiDiscreteOT(y, w, seed=4)
    ot.fit(max_steps=8, batch_size=2048, progress=False)
    assert res["steps"] == 8
    # Per-shard GEMMs may round differently from the full one, so a rare near-tie sample can flip
    # and move heights slightly; the trajectories agree closely, assignments almost everywhere.
    dh = float((res["heights"] - ot.heights.double()).abs().max())
    assert dh < 2e-3, dh
    assert (res["assign"] == ot.assign(x)).float().mean() > 0.999
    e = ot.errors(1 << 14, seed=2)
    assert abs(res["err"]["mean_rel"] - e["mean_rel"]) < 1e-3
