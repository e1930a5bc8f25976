"""scripts/bench_sdot.py compare: the harness that times ours against POT's semi-discrete solver.

The POT parts skip cleanly when POT (the `bench` extra, pot==0.9.7) is not installed.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "bench_sdot.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_sdot", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _pot_available() -> bool:
    try:
        from ot.semidiscrete import solve_semidiscrete  # noqa: F401
    except ImportError:
        return False
    return True


def test_time_to_threshold(bench):
    hist = [{"time": 1.0, "mean_rel_corrected": 0.3, "mean_rel": 0.31},
            {"time": 2.0, "mean_rel_corrected": None, "mean_rel": None},
            {"time": 3.0, "mean_rel_corrected": 0.04, "mean_rel": 0.06}]
    assert bench.time_to(hist, 0.05) == 3.0
    assert bench.time_to(hist, 0.05, key="mean_rel") is None
    assert bench.time_to(hist, 0.5) == 1.0


def test_pot_heights_convention(bench):
    """POT's hard assignment argmax_j g_j - |x - y_j|^2 = our argmax_i <x, y_i> + h_i with
    h = (g - |y|^2) / 2, on a box away from the origin."""
    pytest.importorskip("ot.semidiscrete")
    prob = bench.PeerProblem("gmm", 150, 3, shift=-0.6)
    ev = bench.HeldOut(prob, 1 << 12, seed=3)
    assert bench.check_pot_convention(prob, ev, seed=1, m=2048) == 1.0


def test_pot_snapshot_is_the_max_iter_result(bench):
    """The iterate read through the sampler at iteration t+1 equals solve_semidiscrete(max_iter=t)."""
    pytest.importorskip("ot.semidiscrete")
    from ot.semidiscrete import solve_semidiscrete

    prob = bench.PeerProblem("gmm", 80, 2)
    for backend in ("numpy", "torch32"):
        snaps = bench.run_pot(prob, 16, 5.0, backend, seed=4, snap_iters=[9], max_iter=15)
        assert [s[1] for s in snaps] == [9, 15]
        y, draw = bench._pot_inputs(prob, backend, 4)
        ref = torch.as_tensor(solve_semidiscrete(y, draw, batch_size=16, lr0=5.0, max_iter=9))
        assert torch.equal(snaps[0][2], ref)


@pytest.mark.slow   # the benchmark script end to end (11 s)
def test_compare_quick(tmp_path):
    """`compare --quick` on 8gaussians (exact areas) and a tiny gmm, in a subprocess, writing only
    into tmp_path: a record per method with a held-out history, a summary, a plot < 200 KB."""
    methods = "default-tol,default,exact2d,aeot" + (",pot" if _pot_available() else "")
    out = tmp_path / "bench.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(SCRIPT), "compare", "--quick", "--problem", "8gaussians,gmm",
                           "--methods", methods, "--out", str(out), "--plot-dir", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    for prob in ("8gaussians", "gmm"):
        mine = [r for r in recs if r.get("problem") == prob]
        runs = {r["kind"]: r for r in mine if r["bench"] == "peers" and r.get("kind") in ("tol", "timed", "pot")}
        assert {"tol", "timed"} <= set(runs)
        timed = [r for r in mine if r.get("kind") == "timed"]
        assert sorted(r["method"] for r in timed) == (["aeot", "default", "exact2d"] if prob == "8gaussians"
                                                       else ["aeot", "default"])
        for r in timed:
            assert r["history"] and r["peak_mem_mb"] is not None
            assert set(r["time_to"]) == {"0.1", "0.05", "0.02"}
        if "pot" in methods:
            pot = runs["pot"]
            assert pot["history"] and pot["history"][-1]["iterations"] > 0
            assert pot["final"]["mean_rel"] is not None
            conv = [r for r in mine if r.get("kind") == "pot-convention"]
            assert conv and conv[0]["same_cell_fraction"] == 1.0
            assert len([r for r in mine if r.get("kind") == "pot-tune"]) == 2
        assert [r for r in mine if r["bench"] == "peers_summary"]
        png = tmp_path / f"sdot_peers_{prob}.png"
        assert png.exists() and png.stat().st_size < 200_000


@pytest.mark.cli
def test_kernel_bench_times_every_cpu_kernel(tmp_path):
    out = tmp_path / "kernel.jsonl"
    proc = subprocess.run([sys.executable, str(SCRIPT), "kernel", "--n", "300", "--d", "16", "--m", "512",
                           "--repeats", "1", "--out", str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(out.read_text().splitlines()[-1])
    assert rec["bench"] == "kernel" and rec["assign_s"] > 0 and rec["torch_top2_s"] > 0
    from ae_ot.ot.fused import fused_available

    if fused_available():
        assert rec["fused_top1_s"] > 0 and rec["fused_top2_s"] > 0
