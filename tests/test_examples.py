"""The example gallery (examples/*.py): every script runs with --quick, and the facts each one
illustrates hold: colour transfer moves the colours towards the target's, S_eps reaches its OT
and MMD limits, the transport LP satisfies strong duality; bad input gets a clear error; the
2-D DataModule trains a baseline through the CLI."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SCRIPTS = ["plot_minibatch_gradient_flow", "plot_colour_transfer", "plot_sinkhorn_ot_to_mmd",
           "plot_wgan_critic_vs_dual", "plot_zoo_2d_modes"]


def load_example(name: str):
    """Import examples/<name>.py as a module (the examples are scripts, not a package)."""
    module_name = f"_gallery_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    dont_write, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in examples/
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = dont_write
    return module


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    """Each example's ``main(["--quick", ...])`` once, with its results and output folder."""
    runs = {}
    for name in SCRIPTS:
        out = tmp_path_factory.mktemp(name)
        runs[name] = (load_example(name).main(["--quick", "--output_dir", str(out)]), out)
    return runs


# ---- every example runs quickly and writes its figure ----------------------------------------------
@pytest.mark.parametrize("name", SCRIPTS)
@pytest.mark.cli
def test_example_quick_run_writes_figure(quick_runs, name):
    results, out = quick_runs[name]
    figures = sorted(out.glob("*.png"))
    assert figures, f"{name} wrote no figure into {out}"
    for fig in figures:
        assert fig.stat().st_size > 5_000  # a real picture, not an empty canvas
    listed = results.get("figures") or [results["figure"]]
    assert {Path(p).name for p in listed} == {p.name for p in figures}


@pytest.mark.cli
def test_gradient_flow_quick_results(quick_runs):
    results, _ = quick_runs["plot_minibatch_gradient_flow"]
    flows = results["2d"]
    full = next(v for k, v in flows.items() if "full OT" in k)
    minibatch = [v for k, v in flows.items() if "full OT" not in k and "debiased" not in k]
    assert all(v < results["2d_start"] for v in flows.values())  # every flow moves towards the target
    assert all(v > 2 * full for v in minibatch)  # the minibatch flow stops short of the exact W2 flow


@pytest.mark.cli
def test_colour_transfer_moves_colours_towards_target(quick_runs):
    results, _ = quick_runs["plot_colour_transfer"]
    assert len(results["runs"]) == 3
    for run in results["runs"]:
        assert run["sliced_w2"] < 0.5 * results["sliced_w2_source"], run
    # larger minibatches keep more colour diversity (the spread of the mapped colours)
    stds = [run["colour_std"] for run in results["runs"]]
    assert stds[0] < stds[-1]


@pytest.mark.cli
def test_sinkhorn_quick_run_reaches_both_limits(quick_runs):
    results, _ = quick_runs["plot_sinkhorn_ot_to_mmd"]
    assert results["rel_error_ot"] < 0.05 and results["rel_error_mmd"] < 0.05


@pytest.mark.cli
def test_zoo_quick_run_reports_every_generator(quick_runs):
    stats = quick_runs["plot_zoo_2d_modes"][0]["stats"]
    assert set(stats) == {"data", "WGAN (clipping)", "WGAN-GP", "Sinkhorn S_eps", "minibatch Wasserstein",
                          "semi-discrete OT (plain map)", "semi-discrete OT (extended map)"}
    assert stats["data"]["covered"] == 8 and stats["data"]["between"] < 0.05
    for s in stats.values():
        assert 0 <= s["covered"] <= 8 and 0.0 <= s["between"] <= 1.0


# ---- colour transfer ------------------------------------------------------------------------------
def test_colour_transfer_sliced_w2_decreases_for_every_m():
    ct = load_example("plot_colour_transfer")
    x = ct.load_image(ct.DEFAULT_SOURCE, 32).reshape(-1, 3)
    y = ct.load_image(ct.DEFAULT_TARGET, 32).reshape(-1, 3)
    before = ct.sliced_w2(x, y)
    for m in (10, 100, 300):
        mapped = ct.minibatch_barycentric_projection(x, y, m, epochs=3, seed=1)
        assert mapped.shape == x.shape
        assert ct.sliced_w2(mapped, y) < before


def test_colour_transfer_with_one_block_is_the_exact_assignment():
    """m = N: one minibatch holds every pixel, so the projection is the exact OT map."""
    from ae_ot.ot.minibatch import exact_ot_equal_size

    ct = load_example("plot_colour_transfer")
    rng = np.random.default_rng(0)
    x, y = rng.random((50, 3)), rng.random((50, 3))
    mapped = ct.minibatch_barycentric_projection(x, y, m=50, epochs=2)
    _, cols = exact_ot_equal_size(torch.from_numpy(x), torch.from_numpy(y))
    np.testing.assert_allclose(mapped, y[cols.numpy()], atol=1e-12)


def test_colour_transfer_pads_the_last_block_and_averages_matches():
    """N not a multiple of m: every pixel is still matched; each output is a mean of target colours."""
    ct = load_example("plot_colour_transfer")
    rng = np.random.default_rng(0)
    x, y = rng.random((103, 3)), rng.random((103, 3))
    mapped = ct.minibatch_barycentric_projection(x, y, m=10, epochs=3)
    assert np.isfinite(mapped).all()
    assert (mapped >= y.min(0) - 1e-12).all() and (mapped <= y.max(0) + 1e-12).all()


# ---- Sinkhorn: the two limits ----------------------------------------------------------------------
@pytest.mark.heavy
def test_sinkhorn_divergence_limits_on_other_clouds():
    sk = load_example("plot_sinkhorn_ot_to_mmd")
    x, y = sk.two_clouds(80, seed=3)
    small, large = sk.sinkhorn_curve(x, y, [1e-3, 1e3])
    ot, mmd = sk.exact_ot_cost(x, y), sk.mmd_limit(x, y)
    assert abs(small - ot) / ot < 0.05
    assert abs(large - mmd) / mmd < 0.05
    assert mmd < ot  # the two limits differ, so the test above can fail


# ---- LP: strong duality -----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lp_strong_duality_and_lipschitz_potential(seed):
    wd = load_example("plot_wgan_critic_vs_dual")
    rng = np.random.default_rng(seed)
    n, m = 7 + seed, 11 - seed
    x, y = rng.normal(size=(n, 2)), rng.normal(size=(m, 2)) + 0.5
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    a, b = a / a.sum(), b / b.sum()
    lp = wd.exact_w1_lp(x, y, a, b)
    assert abs(lp["dual"] - lp["cost"]) < 1e-6                       # LP duals: a.u + b.v
    f_x, f_y = wd.dual_potential(x, y, lp["v"]), wd.dual_potential(y, y, lp["v"])
    assert abs(a @ f_x - b @ f_y - lp["cost"]) < 1e-6                 # the potential's dual objective
    z, fz = np.concatenate([x, y]), np.concatenate([f_x, f_y])
    dist = np.linalg.norm(z[:, None] - z[None], axis=-1)
    assert (fz[:, None] - fz[None] <= dist + 1e-12).all()             # f(z) - f(w) <= |z - w|
    np.testing.assert_allclose(lp["plan"].sum(1), a, atol=1e-9)
    np.testing.assert_allclose(lp["plan"].sum(0), b, atol=1e-9)


def test_lp_cost_equals_assignment_cost_for_equal_uniform_sets():
    wd = load_example("plot_wgan_critic_vs_dual")
    rng = np.random.default_rng(5)
    for n in (5, 12, 30):
        x, y = rng.normal(size=(n, 2)), rng.normal(size=(n, 2)) * 2
        assert abs(wd.exact_w1_lp(x, y)["cost"] - wd.assignment_cost(x, y)) < 1e-6


@pytest.mark.cli
def test_wgan_quick_run_duality_numbers(quick_runs):
    r, _ = quick_runs["plot_wgan_critic_vs_dual"]
    assert abs(r["w1_potential"] - r["w1_lp"]) < 1e-6
    assert r["lipschitz_excess"] <= 1e-9
    assert abs(r["w1_assignment"] - r["w1_lp"]) < 1e-6
    # a clipped critic's raw estimate is far below W1 (its Lipschitz constant is tiny)
    assert r["critics"]["clip"]["estimate"] < 0.1 * r["w1_lp"]


# ---- bad input -----------------------------------------------------------------------------------------
def test_missing_image_is_a_file_not_found_error(tmp_path):
    ct = load_example("plot_colour_transfer")
    missing = tmp_path / "no_such_picture.png"
    with pytest.raises(FileNotFoundError, match="no_such_picture.png"):
        ct.load_image(missing, 32)
    with pytest.raises(FileNotFoundError, match="no_such_picture.png"):
        ct.main(["--quick", "--source", str(missing), "--output_dir", str(tmp_path)])


def test_unreadable_image_is_a_value_error(tmp_path):
    ct = load_example("plot_colour_transfer")
    bad = tmp_path / "not_an_image.png"
    bad.write_text("this is text, not a PNG")
    with pytest.raises(ValueError, match=r"cannot read .*not_an_image\.png.* as an image"):
        ct.load_image(bad, 32)


def test_m_larger_than_the_pixel_count_is_rejected(tmp_path):
    ct = load_example("plot_colour_transfer")
    with pytest.raises(ValueError, match=r"at most the number of pixels \(4096\), got m=5000"):
        ct.main(["--quick", "--m", "10", "5000", "--output_dir", str(tmp_path)])
    x = np.zeros((20, 3))
    with pytest.raises(ValueError, match=r"between 1 and the number of pixels \(20\), got m=21"):
        ct.minibatch_barycentric_projection(x, x, 21)
    assert not list(tmp_path.glob("*.png"))  # rejected before any work


@pytest.mark.parametrize("eps", [0.0, -1.0, float("nan")])
def test_non_positive_eps_is_rejected(tmp_path, eps):
    sk = load_example("plot_sinkhorn_ot_to_mmd")
    x, y = sk.two_clouds(10)
    with pytest.raises(ValueError, match=r"eps .* must be a finite number > 0, got eps="):
        sk.sinkhorn_curve(x, y, [0.1, eps])
    with pytest.raises(ValueError, match=r"must be a finite number > 0, got eps=-?0\.0|got eps=-1\.0|got eps=nan"):
        sk.main(["--quick", "--eps_min", str(eps), "--output_dir", str(tmp_path)])


# ---- the 2-D DataModule and the MLP nets ---------------------------------------------------------------
def test_points2d_datamodule():
    from ae_ot.data import Points2DDataModule

    dm = Points2DDataModule(batch_size=100, seed=3)
    dm.setup()
    assert dm.points.shape == (8000, 2) and dm.centres.shape == (8, 2)
    dist = torch.cdist(dm.points, dm.centres)
    assert torch.equal(dist.argmin(1), dm.labels)               # each point is nearest its own mode
    assert (torch.bincount(dm.labels, minlength=8) > 800).all()
    points, labels = next(iter(dm.train_dataloader()))
    assert points.shape == (100, 2) and labels.shape == (100,)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        Points2DDataModule(batch_size=0)
    with pytest.raises(ValueError, match="std must be a positive number, got -0.1"):
        Points2DDataModule(std=-0.1)


def test_mlp_option_of_the_baselines():
    from ae_ot.generators import WGAN, WGANGP, MinibatchWassersteinGenerator, SinkhornGenerator
    from ae_ot.nets import Critic, Generator, MLPCritic, MLPGenerator

    for cls in (WGAN, WGANGP, SinkhornGenerator, MinibatchWassersteinGenerator):
        torch.manual_seed(0)                                       # the networks' initial weights
        model = cls(latent_dim=2, width=16, net="mlp", data_dim=3)
        assert isinstance(model.generator, MLPGenerator)
        samples = model.sample(200, seed=0)
        assert samples.shape == (200, 3) and (samples < 0).any()  # vectors are not clamped to [0, 1]
        assert torch.equal(samples, model.sample(200, seed=0))
        image_model = cls(latent_dim=4, width=4)                  # the default is unchanged
        assert isinstance(image_model.generator, Generator)
        assert image_model.sample(2).shape == (2, 1, 28, 28)
    assert isinstance(WGAN(width=8, net="mlp").critic, MLPCritic)
    assert isinstance(WGANGP(width=8).critic, Critic)
    with pytest.raises(ValueError, match="net must be 'conv' .* or 'mlp' .*, got 'transformer'"):
        WGAN(net="transformer")
    with pytest.raises(ValueError, match="batch_norm is only available with net='conv'"):
        WGAN(net="mlp", batch_norm=True)


@pytest.mark.slow   # a subprocess fit (7 s); the 2-D datasets have fast tests
def test_points2d_trains_a_baseline_through_the_cli(cli, tmp_path):
    from ae_ot.generators import WGANGP

    proc = cli("fit", "--model", "WGANGP", "--model.net=mlp", "--model.latent_dim=2", "--model.width=16",
               "--data", "Points2DDataModule", "--data.batch_size=64", "--trainer.max_steps=6",
               f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false",
               "--trainer.enable_model_summary=false", timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = next((tmp_path / "lightning_logs" / "version_0" / "checkpoints").glob("*.ckpt"))
    model = WGANGP.load_from_checkpoint(ckpt, map_location="cpu")
    assert model.hparams.net == "mlp" and int(model.generator_steps) == 1 and int(model.critic_steps) == 5
    assert model.sample(7, seed=0).shape == (7, 2)
