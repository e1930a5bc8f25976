"""The fused CPU score kernel (ae_ot.ot.fused): the same top-1 / top-2 as the tiled torch kernel,
ties included, on every dimension it specialises, and a clear story when it cannot be built."""

import os
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ae_ot.checks import UserInputError
from ae_ot.ot import SemiDiscreteOT, kernels
from ae_ot.ot.fused import fused_available, fused_build_error, fused_topk, self_check

pytestmark = pytest.mark.skipif(not fused_available(), reason=f"fused kernel unavailable: {fused_build_error()}")


def _problem(m, n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(m, d, generator=g) * 2 - 1, torch.randn(n, d, generator=g), 0.3 * torch.randn(n, generator=g)


@pytest.mark.parametrize("d", [1, 2, 3, 7, 15, 16, 17, 33])
@pytest.mark.parametrize("k", [1, 2])
def test_fused_matches_the_torch_kernel(d, k):
    # m = 1,000 is not a multiple of the 16 lanes, n = 301 not of the 4 targets per step: both tails run.
    for n in (k, 5, 301):
        x, y, h = _problem(1000, n, d, seed=d * 10 + k)
        vf, i_f = kernels.topk_scores(x, y, h, k, "fused")
        vt, it = kernels.topk_scores(x, y, h, k, "torch")
        assert vf.shape == (1000, k) and i_f.dtype == torch.long
        assert torch.allclose(vf, vt, atol=1e-5)
        assert torch.equal(i_f, it)  # no near-ties at this scale; a wrong lane or index shows here
        assert torch.allclose((x @ y.T + h).gather(1, i_f), vf, atol=1e-5)  # indices point at the values


def test_fused_ties_keep_the_lowest_index_and_a_zero_gap():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(40, 4, generator=g)
    y = torch.cat([base, base, base])  # every target three times: indices j, j + 40, j + 80 tie
    h = torch.zeros(120)
    x = torch.rand(500, 4, generator=g)
    v1, i1 = kernels.topk_scores(x, y, h, 1, "fused")
    assert torch.equal(i1, kernels.topk_scores(x, y, h, 1, "torch")[1])
    assert (i1 < 40).all()  # the lowest of the tied copies, as torch.max
    v2, i2 = kernels.topk_scores(x, y, h, 2, "fused")
    assert torch.equal(i2[:, 0], i1[:, 0]) and torch.equal(i2[:, 1], i1[:, 0] + 40)
    assert torch.equal(v2[:, 0], v2[:, 1])  # gap 0 between tied copies


@st.composite
def _scoring_problems(draw):
    """(x [M, d], y [N, d], h [N], k, exact): random shapes over the kernel's paths (d <= 16 in
    registers, d > 16 from memory; M and N off the 16-lane and 4-target steps). ``exact``: small
    integers, so every score is an exact float32 integer in any summation order, with planted ties
    (duplicate targets with equal heights; zero targets with one height above every other score)."""
    m, n, d = draw(st.integers(1, 70)), draw(st.integers(1, 45)), draw(st.integers(1, 40))
    k = draw(st.integers(1, min(2, n)))
    exact = draw(st.booleans())
    g = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 31 - 1)))
    if not exact:
        x, y = torch.rand(m, d, generator=g) * 2 - 1, torch.randn(n, d, generator=g)
        return x, y, 0.3 * torch.randn(n, generator=g), k, False
    x = torch.randint(-3, 4, (m, d), generator=g).float()
    y = torch.randint(-2, 3, (n, d), generator=g).float()
    h = torch.randint(-4, 5, (n,), generator=g).float()
    for _ in range(draw(st.integers(0, n))):  # duplicates: target j copies target i, height included
        i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        y[j], h[j] = y[i], h[i]
    zeros = draw(st.lists(st.integers(0, n - 1), max_size=4))
    # zero targets of one height 6 d + 5 > |<x, y>| + |h| of any other: they tie, and win, everywhere
    y[zeros], h[zeros] = 0.0, float(6 * d + 5)
    return x, y, h, k, True


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scoring_problems())
def test_fused_and_torch_kernels_agree_on_random_problems_and_planted_ties(problem):
    x, y, h, k, exact = problem
    vf, i_f = kernels.topk_scores(x, y, h, k, "fused")
    vt, it = kernels.topk_scores(x, y, h, k, "torch")
    scores = x.double() @ y.double().T + h.double()
    ref_values, _ = scores.topk(k, dim=1)
    assert vf.shape == vt.shape == (x.shape[0], k) and i_f.dtype == torch.long
    assert torch.equal(scores.gather(1, i_f), vf.double()) if exact else torch.allclose(vf, vt, atol=1e-5)
    assert (i_f[:, 0] != i_f[:, -1]).all() or k == 1  # two distinct targets
    first = (scores == scores.max(1, keepdim=True).values).double().argmax(1)  # lowest index of the maximum
    if exact:
        assert torch.equal(vf, vt) and torch.equal(vf.double(), ref_values)  # ties: gap 0 for k = 2
        assert torch.equal(i_f[:, 0], first)  # the lowest index wins a tie
        if k == 1:
            assert torch.equal(i_f, it)
    else:
        # one right answer where the k best are separated by more than float32 noise
        ref3 = scores.topk(min(3, y.shape[0]), dim=1).values
        clear = (ref3[:, :k] - ref3[:, 1:k + 1]).min(1).values > 1e-4 if y.shape[0] > k else torch.ones(len(x), dtype=bool)
        assert torch.equal(i_f[clear], it[clear])
        assert torch.equal(i_f[clear, 0], first[clear])


def test_fused_is_the_same_on_one_thread_and_on_several():
    x, y, h = _problem(20000, 500, 16, seed=3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kernels.topk_scores(x, y, h, 2, "fused")
    finally:
        torch.set_num_threads(threads)
    torch.set_num_threads(max(2, threads))
    try:
        many = kernels.topk_scores(x, y, h, 2, "fused")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], many[0]) and torch.equal(one[1], many[1])


def test_fused_leaves_what_it_does_not_cover_to_torch():
    x, y, h = _problem(300, 50, 8, seed=4)
    # float64, k > 2 and non-finite heights take the torch path: same results as asking for it.
    for args in ((x.double(), y.double(), h.double(), 2), (x, y, h, 5)):
        a, b = kernels.topk_scores(*args, backend="fused"), kernels.topk_scores(*args, backend="torch")
        assert a[0].dtype == b[0].dtype and torch.equal(a[1], b[1])
    h_nan = h.clone()
    h_nan[7] = float("nan")
    v, _ = kernels.topk_scores(x, y, h_nan, 1, "fused")
    assert torch.isnan(v).any()  # NaN propagates as in torch, for the solver's blow-up guard to see


@pytest.mark.heavy
def test_solver_fits_alike_on_both_kernels():
    y = torch.rand(200, 3, generator=torch.Generator().manual_seed(5))
    errs = {}
    for backend in ("fused", "torch"):
        ot = SemiDiscreteOT(y, backend=backend, seed=0)
        assert ot.problem.backend == backend
        report = ot.fit(max_steps=60, batch_size=4096, tol=None, progress=False)
        assert report.kernel == backend
        errs[backend] = ot.errors(num_samples=1 << 18)["mean_rel"]
    assert abs(errs["fused"] - errs["torch"]) < 0.02, errs


@pytest.mark.cli
def test_without_a_compiler_auto_falls_back_and_fused_says_why(tmp_path):
    code = (
        "import warnings\n"
        "import torch\n"
        "from ae_ot.ot import SemiDiscreteOT, kernels\n"
        "from ae_ot.ot.fused import fused_available, fused_build_error\n"
        "from ae_ot.checks import UserInputError\n"
        "kernels.fused_preferred = lambda: True  # as on an AVX-512 CPU, where auto would pick it\n"
        "assert not fused_available()\n"
        "assert 'compiler' in fused_build_error()\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    assert kernels.resolve_backend('auto', torch.device('cpu'), 16) == 'torch'\n"
        "    ot = SemiDiscreteOT(torch.rand(20, 3), seed=0)\n"
        "    report = ot.fit(max_steps=2, batch_size=1024, tol=None, progress=False, eval_samples=4096)\n"
        "fallbacks = [w for w in caught if issubclass(w.category, kernels.KernelFallbackWarning)]\n"
        "assert len(fallbacks) == 1 and 'compiler' in str(fallbacks[0].message), [str(w.message) for w in caught]\n"
        "assert report.kernel == 'torch', report.kernel\n"
        "x = torch.rand(10, 3)\n"
        "try:\n"
        "    kernels.topk_scores(x, x, torch.zeros(10), 1, 'fused')\n"
        "except UserInputError as e:\n"
        "    assert \"backend='torch'\" in str(e), e\n"
        "else:\n"
        "    raise AssertionError('no error')\n"
    )
    env = {**os.environ, "PATH": str(tmp_path), "AE_OT_CACHE": str(tmp_path / "cache")}
    env.pop("CXX", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_fused_topk_refuses_inputs_outside_its_contract():
    x, y, h = _problem(40, 9, 5, seed=6)
    bad = [
        ((x.double(), y, h, 1), "x must be float32"),
        ((x, y.half(), h, 1), "y must be float32"),
        ((x, y, h.double(), 1), "h must be float32"),
        ((x[0], y, h, 1), r"x must be \[M, d\]"),
        ((x, y[:, :4], h, 1), "same d"),
        ((x, y, h[:8], 1), r"h must be \[N\] = \[9\]"),
        ((x, y, h[:, None], 1), r"h must be \[N\]"),
        ((x, y, h, 3), "k must be 1 or 2, got 3"),
        ((x, y, h, 0), "k must be 1 or 2, got 0"),
        ((x, y[:1], h[:1], 2), "k=2 exceeds the number of targets N=1"),
        ((x.numpy(), y, h, 1), "x must be a torch.Tensor"),
        ((x.to("meta"), y, h, 1), "x must be on the CPU"),  # a non-CPU device that needs no GPU
    ]
    for args, message in bad:
        with pytest.raises(UserInputError, match=message):
            fused_topk(*args)


def test_fused_topk_takes_non_contiguous_inputs():
    x, y, h = _problem(300, 40, 7, seed=7)
    want = fused_topk(x, y, h, 2)
    xt = x.T.contiguous().T  # column-major [M, d]
    ys = torch.stack([y, torch.zeros_like(y)], dim=1)[:, 0]  # row stride 2 d
    hs = torch.stack([h, h + 1], dim=1)[:, 0]  # stride 2
    assert not (xt.is_contiguous() or ys.is_contiguous() or hs.is_contiguous())
    got = fused_topk(xt, ys, hs, 2)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    empty = fused_topk(x[:0], y, h, 1)
    assert empty[0].shape == (0, 1) and empty[1].dtype == torch.long


def test_self_check_passes_the_kernel_and_catches_a_wrong_one():
    # Run once when the library loads: a miscompiled kernel must not be used silently.
    assert self_check(lambda x, y, h, k: kernels.topk_scores(x, y, h, k, "fused")) is None
    assert "indices" in self_check(lambda x, y, h, k: kernels.topk_scores(x, y, 0 * h, k, "torch"))  # heights ignored
    wrong_order = lambda x, y, h, k: tuple(t.flip(1) for t in kernels.topk_scores(x, y, h, k, "torch"))
    assert "k=2" in self_check(wrong_order)
