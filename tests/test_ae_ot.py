"""AE-OT end to end: fit -> checkpoint -> sample; the extended map; the commands and their errors."""

import json
import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from ae_ot.commands import sample as sample_cmd
from ae_ot.data import MNISTDataModule
from ae_ot.evaluation.latent import gap_score, nearest_neighbour_distances
from ae_ot.generators import AEOT
from ae_ot.ot import SemiDiscreteOT
from ae_ot.ot.extension import extended_map, normal_angles
from ae_ot.ot.sampler import OTSolutionMissingError


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One epoch on 2,000 images, OT on 500 codes: the checkpoint of `fit` alone."""
    root = tmp_path_factory.mktemp("aeot")
    pl.seed_everything(0)
    model = AEOT(latent_dim=8, ot=dict(num_targets=500, time_limit=6.0, max_steps=300))
    trainer = pl.Trainer(max_epochs=1, default_root_dir=root, enable_progress_bar=False)
    trainer.fit(model, MNISTDataModule(subset=2000, batch_size=128))
    ckpt = trainer.checkpoint_callback.best_model_path
    return model, ckpt, root


@pytest.mark.cli
def test_fit_stores_the_solution_in_the_checkpoint(fitted):
    model, ckpt, _ = fitted
    assert model.has_ot_solution and model.sampler.targets.shape == (500, 8)
    report = model.sampler.report
    assert report["steps"] > 0 and report["wall_time"] > 0
    restored = AEOT.load_from_checkpoint(ckpt, map_location="cpu")
    assert torch.equal(restored.sampler.heights, model.sampler.heights)
    assert torch.equal(restored.sampler.scale, model.sampler.scale)
    assert restored.sampler.report["steps"] == report["steps"]
    # the same samples from the module in memory and from the reloaded checkpoint
    a, b = model.sample(16, seed=3), restored.sample(16, seed=3)
    assert a.shape == (16, 1, 28, 28) and 0 <= a.min() and a.max() <= 1
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.equal(restored.sample(16, seed=3), b)
    assert not torch.equal(restored.sample(16, seed=4), b)


@pytest.mark.heavy
def test_ot_eval_samples_sets_the_final_evaluation():
    """The final held-out evaluation uses ot.eval_samples (the demo's floor well below its error)."""
    codes = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    for samples in (12_345, None):
        fresh = AEOT(latent_dim=8, ot=dict(time_limit=None, max_steps=15, eval_samples=samples))
        final = fresh.solve_ot(codes, progress=False)["history"][-1]
        assert final["eval_samples"] == (samples or 1 << 20)
        assert final["noise_floor"] == pytest.approx(math.sqrt(2 / math.pi * 300 / final["eval_samples"]), rel=0.01)
    with pytest.raises(ValueError, match="eval_samples must be a positive"):
        AEOT(latent_dim=8, ot=dict(eval_samples=0))


@pytest.mark.cli
def test_codes_are_normalised_into_the_box(fitted):
    model, _, _ = fitted
    assert model.sampler.targets.abs().max() <= 1.0 + 1e-5
    g = torch.Generator().manual_seed(0)
    plain = model.latent_samples(200, g, extension="none")
    # the plain map returns (un-normalised) training codes exactly
    train_codes = model.sampler.shift + model.sampler.scale * model.sampler.targets
    assert nearest_neighbour_distances(train_codes, plain).max() < 1e-4


@pytest.mark.cli
def test_sample_command_grid_and_array(fitted, tmp_path):
    _, ckpt, _ = fitted
    png = sample_cmd.main(["--ckpt_path", ckpt, "--num_samples", "12", "--output", str(tmp_path / "s.png")])
    assert png.is_file() and png.stat().st_size > 0
    sample_cmd.main(["--ckpt_path", ckpt, "--num_samples", "10", "--output", str(tmp_path / "a.npy"), "--seed", "5"])
    sample_cmd.main(["--ckpt_path", ckpt, "--num_samples", "10", "--output", str(tmp_path / "b.npy"), "--seed", "5"])
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert a.shape == (10, 1, 28, 28) and a.dtype == np.float32
    assert 0 <= a.min() and a.max() <= 1 and np.array_equal(a, b)


@pytest.mark.cli
def test_sample_command_bad_input(fitted, tmp_path):
    _, ckpt, _ = fitted
    with pytest.raises(ValueError, match="num_samples"):
        sample_cmd.main(["--ckpt_path", ckpt, "--num_samples", "0", "--output", str(tmp_path / "s.png")])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sample_cmd.main(["--ckpt_path", ckpt, "--output", str(tmp_path / "missing" / "s.png")])
    with pytest.raises(ValueError, match="suffix"):
        sample_cmd.main(["--ckpt_path", ckpt, "--output", str(tmp_path / "s.gif")])
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(open(ckpt, "rb").read()[:1000])
    with pytest.raises(ValueError, match="corrupt"):
        sample_cmd.main(["--ckpt_path", str(corrupt), "--output", str(tmp_path / "s.png")])


@pytest.mark.cli
def test_checkpoint_without_solution_gives_a_clear_error(fitted, tmp_path):
    _, ckpt, _ = fitted
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    # as saved during training, before the OT solve: empty solution buffers
    checkpoint["state_dict"]["sampler.targets"] = torch.empty(0, 8)
    checkpoint["state_dict"]["sampler.heights"] = torch.empty(0)
    unsolved = tmp_path / "unsolved.ckpt"
    torch.save(checkpoint, unsolved)
    with pytest.raises(OTSolutionMissingError, match="no OT solution"):
        sample_cmd.main(["--ckpt_path", str(unsolved), "--output", str(tmp_path / "s.png")])
    for name in ("sampler.targets", "sampler.heights"):          # stripped altogether
        checkpoint["state_dict"].pop(name)
    torch.save(checkpoint, unsolved)
    with pytest.raises(OTSolutionMissingError, match="no OT solution"):
        sample_cmd.main(["--ckpt_path", str(unsolved), "--output", str(tmp_path / "s.png")])


@pytest.mark.cli
def test_resolve_from_autoencoder_checkpoint_without_retraining(fitted, tmp_path):
    model, ckpt, _ = fitted
    again = AEOT(latent_dim=8, autoencoder_ckpt=ckpt, ot=dict(num_targets=300, time_limit=2.0, max_steps=50))
    for name in ("encoder", "decoder"):
        for p, q in zip(getattr(again, name).parameters(), getattr(model, name).parameters()):
            assert torch.equal(p, q)
    trainer = pl.Trainer(max_epochs=0, default_root_dir=tmp_path, enable_progress_bar=False, logger=False)
    trainer.fit(again, MNISTDataModule(subset=2000, batch_size=128))
    assert again.sampler.targets.shape == (300, 8)
    with pytest.raises(ValueError, match="existing checkpoint file"):
        AEOT(autoencoder_ckpt=str(tmp_path / "nope.ckpt"))
    # a generator without an autoencoder (a WGAN's weights) is refused, not silently left untrained
    wgan = tmp_path / "wgan.ckpt"
    torch.save({"state_dict": {"generator.net.0.weight": torch.zeros(2, 2), "critic.net.0.weight": torch.zeros(2)},
                "hyper_parameters": {"_class_path": "ae_ot.generators.WGAN"}}, wgan)
    with pytest.raises(ValueError, match="encoder and decoder weights"):
        AEOT(latent_dim=8, autoencoder_ckpt=str(wgan))


def _two_clusters(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    left = torch.tensor([-0.5, 0.0]) + 0.05 * torch.randn(n // 2, 2, generator=g)
    right = torch.tensor([0.5, 0.0]) + 0.05 * torch.randn(n // 2, 2, generator=g)
    return torch.cat([left, right])


def test_extension_never_lands_between_clusters_and_creates_new_points():
    targets = _two_clusters()
    solver = SemiDiscreteOT(targets, low=-1.0, high=1.0, seed=0)
    solver.fit(time_limit=8.0, max_steps=300, progress=False)
    noise = torch.rand(5000, 2, generator=torch.Generator().manual_seed(1)) * 2 - 1
    values, indices = solver.topk(noise, 8)
    out, stats = extended_map(values, indices, solver.targets, angle_threshold=math.radians(8.0),
                              radius=0.6, return_stats=True)
    # between the clusters: |x| < 0.3 holds no target; no extended sample may land there
    assert (out[:, 0].abs() < 0.3).sum().item() == 0
    assert gap_score(out, targets) < 0.01
    # inside a cluster the extended samples are new points, not copies of targets
    not_copies = (nearest_neighbour_distances(targets, out) > 1e-6).float().mean().item()
    assert not_copies > 0.5 and stats["plain"] < 0.5
    # and without the singularity test it *would* cross: a threshold of 180 degrees mixes clusters
    mixed = extended_map(values, indices, solver.targets, angle_threshold=math.pi, radius=1.0)
    assert (mixed[:, 0].abs() < 0.3).sum().item() > 0


def test_normal_angles_formula():
    targets = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    angles = normal_angles(targets, torch.tensor([0]), torch.tensor([[1, 2]]))
    assert angles[0, 0].item() == pytest.approx(math.pi / 4, abs=1e-6)   # (0,0,-1) vs (1,0,-1)
    assert angles[0, 1].item() == pytest.approx(0.0, abs=1e-3)


def test_extended_map_bad_arguments():
    values, indices = torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="radius"):
        extended_map(values, indices, torch.zeros(1, 2), angle_threshold=0.1, radius=-1.0)
    with pytest.raises(ValueError, match="same"):
        extended_map(values, indices[:, :1], torch.zeros(1, 2), angle_threshold=0.1, radius=1.0)
    with pytest.raises(ValueError, match="angle_threshold"):
        AEOT(ot=dict(angle_threshold=0))


@pytest.mark.heavy
def test_toy2d_command(tmp_path):
    from ae_ot.commands import toy2d

    results = toy2d.run(["8gaussians"], tmp_path, num_points=300, num_samples=1000, time_limit=4.0)
    assert (tmp_path / "8gaussians.png").is_file() and (tmp_path / "toy2d.json").is_file()
    r = results["8gaussians"]
    assert r["between_modes_extended"] < 0.02
    assert r["extended_not_a_target"] > 0.3


@pytest.mark.slow   # UMAP's fit (12 s)
def test_umap_command_writes_figure_and_scores(fitted, tmp_path):
    from ae_ot.commands import umap as umap_cmd

    _, ckpt, _ = fitted
    out = tmp_path / "umap.png"
    result = umap_cmd.main(["--ckpt_path", ckpt, "--output", str(out), "--num_codes", "600", "--num_samples", "300"])
    assert out.is_file() and out.with_suffix(".json").is_file()
    assert 0 <= result["gap_score_ot"] <= 1 and 0 <= result["gap_score_naive"] <= 1
    # The claim the figure illustrates: a Gaussian fitted to the codes puts samples in the gaps
    # between the modes, the OT map (which interpolates only inside a mode) far fewer.
    assert result["gap_score_ot"] < 0.5 * result["gap_score_naive"], result
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["gap_score_ot"] == result["gap_score_ot"] and saved["gap_score_naive"] == result["gap_score_naive"]


@pytest.mark.cli
def test_resume_writes_only_into_its_own_run_and_checks_the_checkpoint(fitted, tmp_path):
    """A fit resumed from another run's checkpoint leaves that file and that run untouched and
    writes its solved checkpoint into its own folder; the resume is checked against the config."""
    import shutil

    from ae_ot.cli import check_resume

    _, ckpt, _ = fitted
    precious = tmp_path / "precious" / "solved.ckpt"
    precious.parent.mkdir()
    shutil.copy(ckpt, precious)
    before = {path: open(path, "rb").read() for path in (ckpt, precious)}
    model = AEOT(latent_dim=8, ot=dict(num_targets=300, time_limit=None, max_steps=20))
    trainer = pl.Trainer(max_epochs=1, default_root_dir=tmp_path / "r_prec", enable_progress_bar=False, logger=False)
    trainer.fit(model, MNISTDataModule(subset=2000, batch_size=128), ckpt_path=str(precious))
    for path, data in before.items():
        assert open(path, "rb").read() == data, f"{path} was rewritten"
    written = list((tmp_path / "r_prec").rglob("*.ckpt"))
    assert len(written) == 1 and AEOT.load_from_checkpoint(written[0]).has_ot_solution
    # the checkpoint against the config: another class or another shape is refused, other settings apply
    config = {"class_path": "ae_ot.generators.AEOT", "init_args": {"latent_dim": 8, "ot": {"time_limit": 5.0}}}
    assert check_resume(ckpt, config)["ot.time_limit"] == (6.0, 5.0)
    with pytest.raises(ValueError, match="written by AEOT, but the config trains WGAN"):
        check_resume(ckpt, {"class_path": "ae_ot.generators.WGAN", "init_args": {}})
    with pytest.raises(ValueError, match="latent_dim 8 there, 16 here"):
        check_resume(ckpt, {"class_path": "ae_ot.generators.AEOT", "init_args": {"latent_dim": 16}})
